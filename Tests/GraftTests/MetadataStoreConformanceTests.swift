import Foundation
import GraftS3
import GraftTestSupport
import SafeTensors
import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal
@testable import GraftPostgres
@testable import GraftSQLite

/// The metadata stores a registry may run on. The tests below are written against the
/// `MetadataStore` protocol and take each kind, and run unchanged on each.
enum MetadataStoreKind: String, CaseIterable, CustomStringConvertible {
    /// `MemoryMetadataStore`: dictionaries, no I/O (GraftTestSupport).
    case memory
    case sqlite
    /// `PostgresMetadataStore` on a throwaway cluster (one per store, stopped with it).
    case postgres
    var description: String { rawValue }

    /// A fresh, empty store (schema applied), and what keeps it alive.
    func make() async throws -> (any MetadataStore, MetadataHandle) {
        let directory = TemporaryDirectory()
        switch self {
        case .memory:
            return (MemoryMetadataStore(), MetadataHandle(directory: directory, cluster: nil))
        case .sqlite:
            let layout = RegistryLayout(root: directory.file("registry"))
            for path in [layout.root, layout.blobs, layout.sha256, layout.tmp] {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            }
            _ = try SQLiteMetadataStore.publishNew(layout, busyTimeout: 5)
            return (
                try SQLiteMetadataStore.open(layout, durability: .relaxed, busyTimeout: 5),
                MetadataHandle(directory: directory, cluster: nil)
            )
        case .postgres:
            // initdb and pg_ctl block: off Swift's cooperative pool, which the tests share.
            let cluster = try await withCheckedThrowingContinuation { continuation in
                DispatchQueue.global().async { continuation.resume(with: Result { try PostgresCluster() }) }
            }
            // A test process's cooperative pool can be busy for long (other tests wait on
            // processes): a generous lease timeout keeps a slow start from reading as a dead database.
            let (store, created) = try await PostgresMetadataStore.create(url: cluster.url(), leaseTimeout: .seconds(120))
            #expect(created)
            return (store, MetadataHandle(directory: directory, cluster: cluster))
        }
    }
}

/// Keeps a metadata store's directory and database server alive while a test uses it.
final class MetadataHandle: Sendable {
    let directory: TemporaryDirectory
    let cluster: PostgresCluster?
    init(directory: TemporaryDirectory, cluster: PostgresCluster?) { (self.directory, self.cluster) = (directory, cluster) }
    func file(_ name: String) -> String { directory.file(name) }
    deinit { cluster?.stop() }
}

/// A checkpoint of inline tensors (no blob store involved): names with their bytes.
private func commit(_ tensors: [(String, [UInt8])], header: String = "h", step: Int? = nil) -> NewCheckpoint {
    var offset = 0
    let ingested = tensors.map { name, bytes in
        defer { offset += bytes.count }
        return IngestedTensor(
            info: TensorInfo(name: name, dtype: .u8, shape: [bytes.count], dataOffsets: offset..<(offset + bytes.count)),
            digest: Digest.of(bytes),
            inline: bytes, wroteFile: false)
    }
    let headerBytes = Array((header + String(repeating: " ", count: 8)).utf8)
    return NewCheckpoint(
        headerBytes: headerBytes, headerDigest: Digest.of(headerBytes),
        digest: Registry.checkpointDigest(header: headerBytes, tensors: ingested),
        metadata: ["k": header], dataLength: offset, fileBytes: headerBytes.count + offset, tensors: ingested, step: step, epoch: nil)
}

private let always: @Sendable (Digest) -> Bool = { _ in true }

private func name(_ text: String) -> ModelName { ModelName(trusted: text) }

@Suite("Metadata store conformance")
struct MetadataStoreConformanceTests {
    @Test(
        "a base's commit reads back whole: model, checkpoint, tensors in order, header and inline bytes",
        arguments: MetadataStoreKind.allCases)
    func baseRoundTrip(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        let checkpoint = commit([("b", [1, 2, 3]), ("a", [4])], header: "base-header", step: 7)
        let inline = try await store.insertBase(
            name: name("base"), provenance: Provenance(license: "mit", metadata: ["x": "y"]), checkpoint: checkpoint, stillStored: always)
        #expect(inline == 4, "both tensors' bytes were stored anew")
        let model = try #require(try await store.model(named: name("base")))
        #expect(
            model.summary.kind == "base" && model.summary.provenance.license == "mit" && model.summary.provenance.metadata == ["x": "y"])
        #expect(
            model.checkpoints.map(\.ref) == ["base@1"] && model.checkpoints[0].digest == checkpoint.digest && model.checkpoints[0].step == 7
        )
        let latest = try #require(try await store.checkpoint(model: name("base"), number: nil))
        #expect(latest.id == model.latestCheckpointID)
        #expect(try await store.tensors(checkpoint: latest.id).map(\.name) == ["b", "a"], "file order, not name order")
        let parts = try await store.parts(checkpoint: latest.id)
        #expect(parts.header == checkpoint.headerBytes && parts.tensors.map(\.inline) == [[1, 2, 3], [4]])
        #expect(try await store.hasHeader(digest: checkpoint.headerDigest))
        #expect(!(try await store.hasHeader(digest: Digest.of([0]))))
        #expect(
            try await store.checkpoints(digestPrefix: String(checkpoint.digest.hex.prefix(6)), limit: 10).map(\.summary.ref) == ["base@1"])
        #expect(try await store.modelNames() == ["base"])
        #expect(try await store.manifest(of: name("base")) == .some(nil), "a base has no manifest")
        #expect(try await store.manifest(of: name("nobody")) == nil, "an unknown model is nil, not an empty manifest")
        // The same bytes again store nothing new.
        let again = try await store.insertBase(
            name: name("twin"), provenance: Provenance(), checkpoint: commit([("b", [1, 2, 3])]), stillStored: always)
        #expect(again == 0)
        await expectGraftError("modelExists") {
            _ = try await store.insertBase(name: name("base"), provenance: Provenance(), checkpoint: checkpoint, stillStored: always)
        }
    }

    @Test(
        "a commit whose blob vanished under the lock fails whole: no model, no checkpoint, no blob row",
        arguments: MetadataStoreKind.allCases)
    func vanishedBlob(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        var checkpoint = commit([("t", [9])])
        let fileStored = IngestedTensor(
            info: TensorInfo(name: "big", dtype: .u8, shape: [1], dataOffsets: 1..<2), digest: Digest.of([7]), inline: nil, wroteFile: true)
        checkpoint.tensors.append(fileStored)
        await expectGraftError("blobVanished") {
            _ = try await store.insertBase(name: name("m"), provenance: Provenance(), checkpoint: checkpoint, stillStored: { _ in false })
        }
        #expect(try await store.model(named: name("m")) == nil)
        #expect(try await store.knownBlobDigests().isEmpty)
    }

    @Test(
        "students: numbering without gaps, manifests, chains, descendants with their parent edges, the lineage snapshot",
        arguments: MetadataStoreKind.allCases)
    func lineage(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        _ = try await store.insertBase(name: name("base"), provenance: Provenance(), checkpoint: commit([("w", [1])]), stillStored: always)
        let baseCheckpoint = try #require(try await store.checkpoint(model: name("base"), number: 1))
        func student(_ child: String, of parent: ResolvedCheckpoint) async throws {
            try await store.insertStudent(
                NewStudent(
                    name: name(child), parent: parent, relation: .finetune, mode: .partialFinetune, rules: nil,
                    entries: [
                        ManifestEntry(name: "w", state: .frozen, dtype: .u8, shape: [1], parameters: 1, parentDigest: Digest.of([1]))
                    ],
                    description: nil, createdAt: timestamp()))
        }
        try await student("a", of: baseCheckpoint)
        try await student("b", of: baseCheckpoint)
        await expectGraftError("modelExists") { try await student("b", of: baseCheckpoint) }
        for step in 1...3 {
            let (number, _) = try await store.insertCheckpoint(
                model: name("a"), commit([("w", [1]), ("head", [UInt8(step)])], step: step),
                metrics: [try MetricAssignment(name: "acc", value: Double(step))],
                split: nil, newTensors: ["head"], stillStored: always)
            #expect(number == step)
        }
        let a2 = try #require(try await store.checkpoint(model: name("a"), number: 2))
        try await student("a2kid", of: a2)
        let manifest = try #require(try await store.manifest(of: name("a")) ?? nil)
        #expect(manifest.parent == "base@1" && Set(manifest.entries.map(\.name)) == ["w", "head"])
        #expect(manifest.entries.first { $0.name == "head" }?.state == .new, "the new tensor is recorded in the manifest")
        let ids = try await (store.modelID(named: name("base")), store.modelID(named: name("a")), store.modelID(named: name("a2kid")))
        let (base, a, kid) = (try #require(ids.0), try #require(ids.1), try #require(ids.2))
        let chain = try await store.chain(model: kid, full: true)
        #expect(chain.map(\.name) == ["a2kid", "a", "base"] && chain[0].via == a2.id && chain[0].parentNumber == 2 && chain[0].link == a)
        #expect(try await store.chain(model: kid, full: false).map(\.name) == ["a2kid", "a"])
        let below = try await store.lineage(model: base, parts: .descendants, metric: nil, direction: nil).down
        #expect(Set(below.map(\.name)) == ["a", "b", "a2kid"])
        #expect(below.firstIndex { $0.name == "a" }! < below.firstIndex { $0.name == "a2kid" }!, "parents before children")
        #expect(
            below.first { $0.name == "a2kid" }?.via == a2.id && below.first { $0.name == "a2kid" }?.link == a,
            "each row with its parent edge")
        #expect(below.filter { $0.via == baseCheckpoint.id }.count == 2)
        let underA = try await store.lineage(model: a, parts: .both, metric: "acc", direction: .max)
        #expect(underA.down.map(\.name) == ["a2kid"] && underA.up.map(\.name) == ["a", "base"] && underA.best == [a: 3])
        #expect(try await store.checkpointNumbers(models: [a, kid]) == [a: [1, 2, 3]])
        #expect(try await store.modelOf(checkpoint: a2.id) == a)
        #expect(try await store.derivedDataProblems() == [])
        await expectGraftError("modelNotFound") {
            _ = try await store.insertCheckpoint(
                model: name("ghost"), commit([]), metrics: [], split: nil, newTensors: nil, stillStored: always)
        }
    }

    @Test(
        "browsing: the model index with modes, parent edges and inherited flags; curves point by point; a family's metric keys, bounded",
        arguments: MetadataStoreKind.allCases)
    func browsing(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        _ = try await store.insertBase(
            name: name("base"), provenance: Provenance(description: "the <teacher>"), checkpoint: commit([("w", [1])]), stillStored: always)
        _ = try await store.insertBase(
            name: name("other"), provenance: Provenance(), checkpoint: commit([("w", [2])], header: "o"), stillStored: always)
        let baseCheckpoint = try #require(try await store.checkpoint(model: name("base"), number: 1))
        func student(_ child: String, of parent: ResolvedCheckpoint, mode: TransferMode) async throws {
            try await store.insertStudent(
                NewStudent(
                    name: name(child), parent: parent, relation: .distillation, mode: mode, rules: nil,
                    entries: [
                        ManifestEntry(name: "w", state: .frozen, dtype: .u8, shape: [1], parameters: 1, parentDigest: Digest.of([1]))
                    ],
                    description: "student \(child)", createdAt: timestamp()))
        }
        try await student("a", of: baseCheckpoint, mode: .featureExtraction)
        _ = try await store.insertCheckpoint(
            model: name("a"), commit([("w", [1]), ("head", [9])], header: "a1"), metrics: [try MetricAssignment(name: "acc", value: 0.5)],
            split: "val",
            newTensors: ["head"], stillStored: always)
        let a1 = try #require(try await store.checkpoint(model: name("a"), number: 1))
        try await student("kid", of: a1, mode: .fullFinetune)
        _ = try await store.insertCheckpoint(
            model: name("kid"), commit([("w", [3]), ("head", [9])], header: "k1"), metrics: [try MetricAssignment(name: "loss", value: 2)],
            split: nil,
            newTensors: nil, stillStored: always)

        var index = try await store.modelIndex()
        #expect(index.map(\.name) == ["a", "base", "kid", "other"], "by name")
        let a = try #require(index.first { $0.name == "a" })
        #expect(
            a.kind == "student" && a.mode == .featureExtraction && a.relation == .distillation && a.parent == "base@1" && a.checkpoints == 1
        )
        #expect(a.description == "student a" && !a.flagged)
        let base = try #require(index.first { $0.name == "base" })
        #expect(base.kind == "base" && base.mode == nil && base.parent == nil && base.description == "the <teacher>")
        #expect(index.first { $0.name == "kid" }?.parent == "a@1")
        // An advisory on `a` flags it and, inherited, its student; not its parent or the other base.
        let aID = try #require(try await store.modelID(named: name("a")))
        try await store.insertAdvisory(
            NewAdvisory(id: "ADV-1", model: aID, checkpoint: nil, severity: .high, note: nil, url: nil, createdAt: timestamp()))
        index = try await store.modelIndex()
        #expect(
            Dictionary(uniqueKeysWithValues: index.map { ($0.name, $0.advisories) }) == [
                "a": ["ADV-1"], "kid": ["ADV-1"], "base": [], "other": [],
            ])
        _ = try await store.resolveAdvisory("ADV-1", at: timestamp())
        #expect(try await store.modelIndex().allSatisfy { !$0.flagged }, "a resolved advisory flags nothing")

        // Curves: every point, by name then step (inserted out of order).
        var batch = CurveBatch()
        for (curve, step, value) in [("loss", 20, 0.5), ("acc", 10, 0.1), ("loss", 10, 0.9), ("acc", 20, 0.3)] {
            batch.append(name: curve, step: step, value: value)
        }
        try await store.insertCurvePoints(model: aID, batch)
        let curves = try await store.curvePoints(model: aID)
        #expect(
            curves == [
                CurveSeries(name: "acc", steps: [10, 20], values: [0.1, 0.3]),
                CurveSeries(name: "loss", steps: [10, 20], values: [0.9, 0.5]),
            ])
        #expect(try await store.curvePoints(model: try #require(try await store.modelID(named: name("kid")))) == [])

        // Metric keys of a family: the model and its descendants, each split apart.
        let baseID = try #require(try await store.modelID(named: name("base")))
        #expect(
            try await store.metricKeys(subtree: baseID, limit: 100, visibility: .all) == [
                MetricKey(name: "acc", split: "val"), MetricKey(name: "loss", split: nil),
            ])
        #expect(
            try await store.metricKeys(subtree: aID, limit: 1, visibility: .all) == [MetricKey(name: "acc", split: "val")],
            "the model first; the limit bounds the models read")
        #expect(
            try await store.metricKeys(subtree: try #require(try await store.modelID(named: name("other"))), limit: 100, visibility: .all)
                == [])
        // A reader who sees some models learns only their metrics (`kid` logs `loss`).
        #expect(
            try await store.metricKeys(subtree: baseID, limit: 100, visibility: ModelVisibility(pattern: "[!k]*")) == [
                MetricKey(name: "acc", split: "val")
            ])
        #expect(
            try await store.metricKeys(subtree: baseID, limit: 100, visibility: ModelVisibility(pattern: "kid")) == [
                MetricKey(name: "loss", split: nil)
            ])
    }

    @Test(
        "best follows BestSelection's rank order and AdvisoryInheritance's flags in every scope, direction and path",
        arguments: MetadataStoreKind.allCases)
    func best(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        _ = try await store.insertBase(name: name("root"), provenance: Provenance(), checkpoint: commit([("w", [1])]), stillStored: always)
        let root = try #require(try await store.checkpoint(model: name("root"), number: 1))
        var generator = SeededGenerator(seed: 42)
        // Models named so that binary and case-blind order differ; values with many ties.
        let models = ["b", "B", "a", "c"]
        for model in models {
            try await store.insertStudent(
                NewStudent(
                    name: name(model), parent: root, relation: .finetune, mode: .fullFinetune, rules: nil, entries: [], description: nil,
                    createdAt: timestamp()))
            for _ in 0..<5 {
                let value = Double(Int.random(in: 0..<4, using: &generator)) / 4
                _ = try await store.insertCheckpoint(
                    model: name(model), commit([("w", [UInt8.random(in: 0...255, using: &generator)])]),
                    metrics: [try MetricAssignment(name: "acc", value: value)],
                    split: "val", newTensors: nil, stillStored: always)
            }
        }
        // Every candidate, read one by one, to rank with the reference policy.
        var all: [(model: Int64, id: Int64, candidate: RankedCandidate)] = []
        for model in models {
            let modelID = try #require(try await store.modelID(named: name(model)))
            for number in 1...5 {
                let checkpoint = try #require(try await store.checkpoint(model: name(model), number: number))
                let value = try #require(try await store.metrics(checkpoint: checkpoint.id).first { $0.split == "val" }?.value)
                all.append((modelID, checkpoint.id, RankedCandidate(checkpoint: checkpoint.summary, value: value)))
            }
        }
        let b = try #require(try await store.modelID(named: name("b")))
        let a3 = all[12].id  // a@3
        var flaggedModels: Set<Int64> = [], flaggedCheckpoints: Set<Int64> = []
        func check(_ stage: String) async throws {
            // Everything, and a confined token's view (`[ab]*` hides B and c): hidden models are
            // as if absent, not candidates and not counted.
            for visibility in [ModelVisibility.all, ModelVisibility(pattern: "[ab]*")] {
                for direction in [Direction.max, .min] {
                    for includeFlagged in [false, true] {
                        for scope in [BestScope.all, .under(name("root")), .model(name("b")), .model(name("a"))] {
                            let members = all.filter { member in
                                guard visibility.shows(member.candidate.checkpoint.model.value) else { return false }
                                if case .model(let model) = scope { return member.candidate.checkpoint.model == model }
                                return true
                            }
                            let reference = BestSelection.choose(members.map(\.candidate), direction: direction) { index in
                                !includeFlagged
                                    && (flaggedModels.contains(members[index].model) || flaggedCheckpoints.contains(members[index].id))
                            }
                            let label = "\(stage) \(scope) \(direction) includeFlagged: \(includeFlagged) \(visibility)"
                            let query = BestQuery(
                                metric: "acc", split: "val", scope: scope, direction: direction, includeFlagged: includeFlagged,
                                visibility: visibility)
                            switch try await store.best(query) {
                            case .found(let winner, let candidates, let excluded)?:
                                #expect(
                                    winner.checkpoint.ref == reference.winner?.checkpoint.ref && winner.value == reference.winner?.value,
                                    "\(label)")
                                #expect(candidates == members.count && excluded == reference.excluded, "\(label)")
                            case .allFlagged(let candidates)?:
                                #expect(reference.winner == nil && candidates == members.count, "\(label)")
                            default:
                                Issue.record("no outcome: \(label)")
                            }
                        }
                    }
                }
            }
        }
        try await check("no advisory")
        // A model-level advisory: whole models flagged (best --under keeps its per-model path).
        try await store.insertAdvisory(
            NewAdvisory(id: "ON-b", model: b, checkpoint: nil, severity: .high, note: nil, url: nil, createdAt: timestamp()))
        flaggedModels = [b]
        try await check("model flagged")
        // A checkpoint-level one: candidates walked one by one.
        try await store.insertAdvisory(
            NewAdvisory(id: "ON-a3", model: all[12].model, checkpoint: a3, severity: .high, note: nil, url: nil, createdAt: timestamp()))
        flaggedCheckpoints = [a3]
        try await check("checkpoint flagged")
        // Unknown scopes and metrics.
        #expect(
            try await store.best(
                BestQuery(metric: "acc", split: "val", scope: .model(name("nobody")), direction: .max, includeFlagged: false)) == nil)
        guard
            case .noCandidates(let known)? = try await store.best(
                BestQuery(metric: "acc", split: nil, scope: .all, direction: .max, includeFlagged: false))
        else {
            Issue.record("no split is its own split: no candidates expected")
            return
        }
        #expect(known == ["acc"])
    }

    @Test(
        "signatures: kept with the commit, replaced by a later one, read back byte for byte, gone with their checkpoint",
        arguments: MetadataStoreKind.allCases)
    func signatures(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        let (blobs, keepBlobs) = try BlobStoreKind.local.make()
        defer { withExtendedLifetime(keepBlobs) {} }
        let bundle: [UInt8] = Array("{\"mediaType\": \"x\"}\n".utf8) + [0, 255]
        let imported = StoredSignature(
            bundle: bundle, keyHint: String(repeating: "ab", count: 32), rootDigest: Digest.of([1]), fileCount: 3,
            signedAt: "2026-12-07T00:00:00.000Z", verified: false, origin: "imported")
        var signedCommit = commit([("w", [1])])
        signedCommit.signature = imported
        _ = try await store.insertBase(name: name("signed"), provenance: Provenance(), checkpoint: signedCommit, stillStored: always)
        _ = try await store.insertBase(name: name("plain"), provenance: Provenance(), checkpoint: commit([("w", [2])]), stillStored: always)
        let signed = try #require(try await store.checkpoint(model: name("signed"), number: 1))
        let plain = try #require(try await store.checkpoint(model: name("plain"), number: 1))
        #expect(try await store.signature(checkpoint: signed.id) == imported)
        #expect(try await store.signature(checkpoint: plain.id) == nil)
        let resigned = StoredSignature(
            bundle: [7], keyHint: nil, rootDigest: Digest.of([2]), fileCount: 1, signedAt: "2026-12-07T01:00:00.000Z", verified: true,
            origin: "graft")
        try await store.recordSignature(checkpoint: signed.id, resigned)
        #expect(try await store.signature(checkpoint: signed.id) == resigned, "signing again replaces it")
        #expect(try await store.signature(checkpoint: plain.id) == nil, "and only its own checkpoint's")
        _ = try #require(try await store.removeModel(name("signed"), cascade: true, blobs: blobs, dryRun: false))
        #expect(try await store.signature(checkpoint: signed.id) == nil)
        do {
            try await store.recordSignature(checkpoint: signed.id, resigned)
            Issue.record("a removed checkpoint was signed")
        } catch {
            #expect("\(error)".contains("busy"), "a checkpoint removed meanwhile reads as busy (retry resolves the reference anew)")
        }
    }

    @Test("removals: protections refuse, blobs nothing uses go, derived data stays consistent", arguments: MetadataStoreKind.allCases)
    func removals(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        let (blobs, keepBlobs) = try BlobStoreKind.local.make()
        defer { withExtendedLifetime(keepBlobs) {} }
        _ = try await store.insertBase(name: name("base"), provenance: Provenance(), checkpoint: commit([("w", [1])]), stillStored: always)
        let base = try #require(try await store.checkpoint(model: name("base"), number: 1))
        try await store.insertStudent(
            NewStudent(
                name: name("s"), parent: base, relation: .finetune, mode: .fullFinetune, rules: nil, entries: [], description: nil,
                createdAt: timestamp()))
        for value in [1, 2, 3] {
            _ = try await store.insertCheckpoint(
                model: name("s"), commit([("w", [UInt8(value), 0])]), metrics: [try MetricAssignment(name: "loss", value: Double(value))],
                split: nil,
                newTensors: nil, stillStored: always)
        }
        let refused = await expectGraftError("protected") { try await store.removeCheckpoint(base, blobs: blobs, dryRun: false) }
        #expect("\(refused.map { "\($0)" } ?? "")".contains("students derive from it (s)"))
        let policy = RetentionPolicy(keepLast: 1, keepBest: 1, metric: "loss", direction: .min)
        let dry = try #require(try await store.prune(model: name("s"), policy: policy, split: nil, blobs: blobs, dryRun: true))
        #expect(dry.checkpoints == ["s@2"] && dry.bytesFreed == 2)
        #expect(
            try await store.checkpointNumbers(models: [try #require(try await store.modelID(named: name("s")))]).values.first == [1, 2, 3],
            "a dry run removes nothing")
        let pruned = try #require(try await store.prune(model: name("s"), policy: policy, split: nil, blobs: blobs, dryRun: false))
        #expect(pruned.checkpoints == ["s@2"] && pruned.kept.map(\.checkpoint) == ["s@1", "s@3"])
        await expectGraftError("unknownMetric") {
            _ = try await store.prune(
                model: name("s"), policy: RetentionPolicy(keepLast: 0, keepBest: 1, metric: "acc"), split: nil, blobs: blobs, dryRun: false)
        }
        await expectGraftError("protected") {
            _ = try await store.removeModel(name("base"), cascade: false, blobs: blobs, dryRun: false)
        }
        let removed = try #require(try await store.removeModel(name("base"), cascade: true, blobs: blobs, dryRun: false))
        #expect(removed.models == ["s", "base"], "deepest first")
        #expect(try await store.models().isEmpty)
        #expect(try await store.knownBlobDigests().isEmpty)
        #expect(try await store.derivedDataProblems() == [])
        #expect(try await store.removeModel(name("base"), cascade: true, blobs: blobs, dryRun: false) == nil)
    }

    @Test(
        "prune keeps a checkpoint a student derives from, by the checkpoint's own id (not its model's)",
        arguments: MetadataStoreKind.allCases)
    func pruneKeepsParents(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        let (blobs, keepBlobs) = try BlobStoreKind.local.make()
        defer { withExtendedLifetime(keepBlobs) {} }
        // Two bases first, so that no checkpoint of `s` has its model's id.
        for base in ["other", "base"] {
            _ = try await store.insertBase(
                name: name(base), provenance: Provenance(), checkpoint: commit([("w", [1])], header: base), stillStored: always)
        }
        let base = try #require(try await store.checkpoint(model: name("base"), number: 1))
        try await store.insertStudent(
            NewStudent(
                name: name("s"), parent: base, relation: .finetune, mode: .fullFinetune, rules: nil, entries: [], description: nil,
                createdAt: timestamp()))
        for value in [1, 2, 3, 4] {
            _ = try await store.insertCheckpoint(
                model: name("s"), commit([("w", [UInt8(value), 9])]), metrics: [], split: nil, newTensors: nil, stillStored: always)
        }
        let s2 = try #require(try await store.checkpoint(model: name("s"), number: 2))
        let sID = try #require(try await store.modelID(named: name("s")))
        #expect(s2.id != sID, "the case this test is about")
        try await store.insertStudent(
            NewStudent(
                name: name("t"), parent: s2, relation: .finetune, mode: .fullFinetune, rules: nil, entries: [], description: nil,
                createdAt: timestamp()))
        let policy = RetentionPolicy(keepLast: 1)
        for dryRun in [true, false] {
            let report = try #require(try await store.prune(model: name("s"), policy: policy, split: nil, blobs: blobs, dryRun: dryRun))
            #expect(report.checkpoints == ["s@1", "s@3"], "dry run: \(dryRun)")
            #expect(report.kept.map(\.checkpoint) == ["s@2", "s@4"], "dry run: \(dryRun)")
            #expect(report.kept.first { $0.checkpoint == "s@2" }?.reasons.contains { $0.contains("students derive from it (t)") } == true)
        }
        #expect(try await store.checkpointNumbers(models: [sID]) == [sID: [2, 4]])
        #expect(try await store.chain(model: try #require(try await store.modelID(named: name("t"))), full: false).first?.via == s2.id)
        await expectGraftError("protected") { try await store.removeCheckpoint(s2, blobs: blobs, dryRun: false) }
        #expect(try await store.derivedDataProblems() == [])
    }

    @Test(
        "upload announcements: a blob may be sent at its announced length until the window ends, then not",
        arguments: MetadataStoreKind.allCases)
    func uploadAnnouncements(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        let digest = Digest.of([1, 2, 3]), other = Digest.of([4])
        #expect(try await store.announcedLength(of: digest) == nil)
        // Long windows first (no test of time can be late for them), then a 1 ms one to expire.
        try await store.announceUploads([ProposedTensor(name: "w", digest: digest, length: 3)], window: .seconds(3600))
        try await store.announceUploads([ProposedTensor(name: "b", digest: other, length: 1)], window: .seconds(3600))
        #expect(try await store.announcedLength(of: digest) == 3)
        try await store.announceUploads([ProposedTensor(name: "w", digest: digest, length: 3)], window: .milliseconds(1))
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await store.announcedLength(of: digest) == nil, "expired")
        #expect(try await store.announcedLength(of: other) == 1, "another announcement's window is its own")
        // A new proposal renews an announcement, with the length it gives.
        try await store.announceUploads([ProposedTensor(name: "w", digest: digest, length: 5)], window: .seconds(60))
        #expect(try await store.announcedLength(of: digest) == 5)
    }

    @Test(
        "web sessions: live while used and young, ended by sign-out or by their token's revocation; a session is not a token",
        arguments: MetadataStoreKind.allCases)
    func sessions(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        let (tokenHash, otherHash) = ([UInt8](repeating: 1, count: 32), [UInt8](repeating: 2, count: 32))
        try await store.insertToken(
            TokenInfo(name: "t", scope: .read, models: "a*", createdAt: "2026-01-01T00:00:00.000Z"), hash: tokenHash)
        let expiry = SessionExpiry(idle: 100, lifetime: 1000)
        let (s1, s2, s3) = ([UInt8](repeating: 11, count: 32), [UInt8](repeating: 12, count: 32), [UInt8](repeating: 13, count: 32))
        #expect(try await store.insertSession(hash: s1, tokenHash: tokenHash, now: 0, expiry: expiry))
        #expect(try await !store.insertSession(hash: s2, tokenHash: otherHash, now: 0, expiry: expiry), "no such token")
        #expect(try await store.session(hash: s2, now: 1, expiry: expiry) == nil)
        #expect(try await store.session(hash: s1, now: 50, expiry: expiry)?.models == "a*")
        #expect(try await store.token(hash: s1) == nil, "a session id is not a token")
        // Used every 90 s it stays live past the idle time (a use under a minute after the last one
        // is not recorded), until its lifetime ends.
        var now = 0.0
        while now < 990 {
            now += 90
            #expect(try await store.session(hash: s1, now: now, expiry: expiry) != nil, "at \(now)")
        }
        #expect(try await store.session(hash: s1, now: 1000, expiry: expiry) == nil, "past its lifetime")
        // Idle too long: gone.
        #expect(try await store.insertSession(hash: s2, tokenHash: tokenHash, now: 2000, expiry: expiry))
        #expect(try await store.session(hash: s2, now: 2099, expiry: expiry) != nil)
        #expect(try await store.session(hash: s2, now: 2200, expiry: expiry) == nil, "idle 101 s")
        // Signed out, or its token revoked: gone.
        #expect(try await store.insertSession(hash: s3, tokenHash: tokenHash, now: 3000, expiry: expiry))
        try await store.deleteSession(hash: s3)
        #expect(try await store.session(hash: s3, now: 3001, expiry: expiry) == nil)
        #expect(try await store.insertSession(hash: s3, tokenHash: tokenHash, now: 3000, expiry: expiry))
        #expect(try await store.revokeToken(named: "t", at: "2026-01-02T00:00:00.000Z"))
        #expect(try await store.session(hash: s3, now: 3001, expiry: expiry) == nil)
        #expect(try await !store.insertSession(hash: s1, tokenHash: tokenHash, now: 3002, expiry: expiry), "a revoked token opens none")
    }

    @Test(
        "upload proofs: each token's own, for the digests it sent, until the window ends",
        arguments: MetadataStoreKind.allCases)
    func uploadProofs(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        let (a, b, c) = (Digest.of([1]), Digest.of([2]), Digest.of([3]))
        #expect(try await store.uploadProofs([a, b], token: "t").isEmpty)
        try await store.recordUploadProof(a, token: "t", window: .seconds(3600))
        try await store.recordUploadProof(b, token: "t", window: .seconds(3600))
        try await store.recordUploadProof(c, token: "u", window: .seconds(3600))
        #expect(try await store.uploadProofs([a, b, c], token: "t") == [a, b])
        #expect(try await store.uploadProofs([a, b, c], token: "u") == [c], "another token's proofs are not this one's")
        #expect(try await store.uploadProofs([], token: "t").isEmpty)
        try await store.recordUploadProof(a, token: "t", window: .milliseconds(1))
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await store.uploadProofs([a, b], token: "t") == [b], "a renewed proof's window is the new one, and it ended")
    }

    @Test(
        "copied history: a base's and its checkpoints' numbers and times as given, gaps kept, only appended past the newest",
        arguments: MetadataStoreKind.allCases)
    func copiedHistory(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        var first = commit([("w", [1])], header: "c3")
        first.copied = CopiedHistory(number: 3, createdAt: "2025-01-02T03:04:05.006Z", modelCreatedAt: "2025-01-01T00:00:00.000Z")
        _ = try await store.insertBase(name: name("moved"), provenance: Provenance(), checkpoint: first, stillStored: always)
        var later = commit([("w", [2])], header: "c7")
        later.copied = CopiedHistory(number: 7, createdAt: "2025-02-01T00:00:00.000Z", modelCreatedAt: "2025-01-01T00:00:00.000Z")
        let (number, _) = try await store.insertCheckpoint(
            model: name("moved"), later, metrics: [], split: nil, newTensors: nil, stillStored: always)
        #expect(number == 7)
        let model = try #require(try await store.model(named: name("moved")))
        #expect(model.summary.createdAt == "2025-01-01T00:00:00.000Z")
        #expect(model.checkpoints.map(\.number) == [3, 7])
        #expect(model.checkpoints.map(\.createdAt) == ["2025-01-02T03:04:05.006Z", "2025-02-01T00:00:00.000Z"])
        // A copied number at or below the newest is refused (a copy appends, never fills a gap).
        var behind = commit([("w", [3])], header: "c5")
        behind.copied = CopiedHistory(number: 5, createdAt: "2025-03-01T00:00:00.000Z", modelCreatedAt: "2025-01-01T00:00:00.000Z")
        await expectGraftError("historyDiffers") {
            _ = try await store.insertCheckpoint(
                model: name("moved"), behind, metrics: [], split: nil, newTensors: nil, stillStored: always)
        }
        // An ordinary commit goes on past the newest.
        let (next, _) = try await store.insertCheckpoint(
            model: name("moved"), commit([("w", [4])], header: "c8"), metrics: [], split: nil, newTensors: nil, stillStored: always)
        #expect(next == 8)
    }

    @Test("aliases and advisories: moves, removal, open and resolved", arguments: MetadataStoreKind.allCases)
    func aliasesAndAdvisories(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        _ = try await store.insertBase(name: name("base"), provenance: Provenance(), checkpoint: commit([("w", [1])]), stillStored: always)
        let base = try #require(try await store.checkpoint(model: name("base"), number: 1))
        let modelID = try #require(try await store.modelID(named: name("base")))
        #expect(try await store.tag(checkpoint: base.id, alias: "prod") == .some(nil), "new: no previous checkpoint")
        #expect(try await store.tag(checkpoint: base.id, alias: "prod") == .some(1))
        #expect(try await store.aliases(of: name("base")) == ["prod": "base@1"])
        #expect(try await store.checkpoint(model: name("base"), alias: "prod")?.id == base.id)
        #expect(try await store.untag(model: modelID, alias: "prod"))
        #expect(!(try await store.untag(model: modelID, alias: "prod")))
        #expect(try await store.tag(checkpoint: 987_654, alias: "x") == nil, "a checkpoint that is gone")
        try await store.insertAdvisory(
            NewAdvisory(id: "ADV-1", model: modelID, checkpoint: base.id, severity: .high, note: nil, url: nil, createdAt: timestamp()))
        await expectGraftError("advisoryExists") {
            try await store.insertAdvisory(
                NewAdvisory(id: "ADV-1", model: modelID, checkpoint: nil, severity: .low, note: nil, url: nil, createdAt: timestamp()))
        }
        #expect(try await store.openAdvisories() == [OpenAdvisory(id: "ADV-1", model: modelID, checkpoint: base.id, ancestry: [modelID])])
        #expect(try await store.checkpointAdvisoryLabels() == [modelID: ["ADV-1@1"]])
        #expect(try await store.resolveAdvisory("ADV-1", at: timestamp()) == true)
        #expect(try await store.resolveAdvisory("ADV-1", at: timestamp()) == false, "already resolved")
        #expect(try await store.resolveAdvisory("ADV-9", at: timestamp()) == nil)
        #expect(try await store.openAdvisories().isEmpty)
        #expect(try await store.advisories(includeResolved: true).map(\.id) == ["ADV-1"])
    }
}

/// Every metadata/blob store pair behind one registry: the behaviours users rely on, end to end.
@Suite("Backend pairs")
struct BackendPairTests {
    static let pairs = MetadataStoreKind.allCases.flatMap { metadata in BlobStoreKind.allCases.map { (metadata, $0) } }

    /// A registry over the pair's stores (inline threshold 64 bytes), its blob store, and the
    /// handles that keep the stores (and their servers and folders) alive while the test runs.
    static func registry(_ pair: (MetadataStoreKind, BlobStoreKind)) async throws -> (
        Registry, any BlobStore, (MetadataHandle, StoreHandle)
    ) {
        let (metadata, keepMetadata) = try await pair.0.make()
        let (blobs, keepBlobs) = try pair.1.make()
        let registry = Registry(
            layout: RegistryLayout(root: keepBlobs.file("store")), metadata: metadata, blobs: blobs, inlineThreshold: 64)
        return (registry, blobs, (keepMetadata, keepBlobs))
    }

    @Test("import, enforce, rank, inherit, stream byte-exact, verify, remove, gc", arguments: pairs)
    func endToEnd(pair: (MetadataStoreKind, BlobStoreKind)) async throws {
        let (registry, blobs, kept) = try await Self.registry(pair)
        defer { withExtendedLifetime(kept) {} }
        let tensors = randomTensors(dtypes: [.f32, .f32, .i64, .u8], seed: 7, prefix: "layer")
        let input = try SafeTensorsMemory(tensors)
        _ = try await registry.addBase(name: name("base"), input: input)
        _ = try await registry.createStudent(
            name: name("kid"), from: .number(name("base"), 1),
            manifest: .rules([ManifestRule(.freeze, tensors[0].name)], freezeThrough: nil))
        // A frozen tensor changed: refused, nothing committed.
        var changed = tensors
        changed[0].bytes = tensors[0].bytes.map { $0 ^ 1 }
        await #expect(throws: GraftError.self) {
            try await registry.addCheckpoint(model: name("kid"), input: try SafeTensorsMemory(changed))
        }
        #expect(try await registry.checkpoints(of: name("kid")).isEmpty)
        var trained = tensors
        trained[1].bytes = tensors[1].bytes.map { $0 ^ 2 }
        let result = try await registry.addCheckpoint(
            model: name("kid"), input: try SafeTensorsMemory(trained), metrics: [try MetricAssignment(name: "acc", value: 0.9)])
        #expect(result.checkpoint == "kid@1" && result.bytesStored < result.logicalBytes, "unchanged tensors are the parent's blobs")
        #expect(try await registry.best(metric: "acc", scope: .under(name("base"))).checkpoint.ref == "kid@1")
        _ = try await registry.addAdvisory(on: .model(name("base")), id: "ADV-X", severity: .high)
        #expect(try await registry.affected(.model(name("base"))).map(\.model) == ["kid"])
        await expectGraftError("allCandidatesFlagged") { try await registry.best(metric: "acc") }
        let kid = try await registry.lineage(name("kid")).model
        #expect(kid.advisories == ["ADV-X"] && kid.parentReference == .number(name("base"), 1), "typed: pass it back as is")
        let reached = try await registry.affected(.model(name("base")))
        #expect(try await registry.checkpoint(try #require(reached.first?.checkpointReferences.first)).checkpoint.ref == "kid@1")
        let streamed = Streamed()
        _ = try await registry.stream(.number(name("kid"), 1)) { chunk in streamed.append(chunk) }
        let memory = try SafeTensorsMemory(trained)
        #expect(
            streamed.bytes == memory.headerBytes + (try memory.header.tensors.flatMap { try memory.data(of: $0) }),
            "byte-identical to what was committed")
        #expect(try await registry.verify(readData: true).ok)
        _ = try await registry.removeModel(name("base"), cascade: true)
        let report = try await registry.gc(grace: 0)
        let stats = try await registry.stats()
        #expect(report.orphanFilesRemoved == 0 && stats.blobs == 0)
        #expect(blobs.inventory().blobs.isEmpty, "every blob went with the models")
    }
}

extension BackendPairTests {
    @Test("a model directory: shards and files recorded, exported byte for byte, kept by gc, removed with the model", arguments: pairs)
    func directory(pair: (MetadataStoreKind, BlobStoreKind)) async throws {
        let (registry, blobs, kept) = try await Self.registry(pair)
        defer { withExtendedLifetime(kept) {} }
        let source = TemporaryDirectory()
        let tensors = randomTensors(dtypes: [.f32, .f32, .i64, .u8, .bf16], seed: 9, prefix: "layer")
        try SafeTensorsWriter.write(Array(tensors[..<3]), metadata: ["format": "pt"], to: source.file("model-00001-of-00002.safetensors"))
        try SafeTensorsWriter.write(Array(tensors[3...]), metadata: ["format": "pt"], to: source.file("model-00002-of-00002.safetensors"))
        let map = Dictionary(
            uniqueKeysWithValues: tensors.enumerated().map { ($1.name, "model-0000\($0 < 3 ? 1 : 2)-of-00002.safetensors") })
        try JSONSerialization.data(withJSONObject: ["weight_map": map], options: .sortedKeys)
            .write(to: URL(fileURLWithPath: source.file("model.safetensors.index.json")))
        try writeFile(source.file("config.json"), Array("{}".utf8))  // inline (under 64 bytes)
        try FileManager.default.createDirectory(atPath: source.file("sub"), withIntermediateDirectories: true)
        var generator = SeededGenerator(seed: 1)
        try writeFile(source.file("sub/vocab.bin.txt"), randomBytes(300, using: &generator))  // a blob file
        let result = try await registry.addBase(name: name("dir"), directory: try DirectoryInput.open(source.path))
        #expect(result.files == 5)
        let files = try await registry.checkpoint(.number(name("dir"), 1)).files
        #expect(files.map(\.path) == filesUnder(source.path))
        #expect(files.map(\.kind) == ["file", "shard", "shard", "file", "file"])
        _ = try await registry.gc(grace: 0)
        #expect(try await registry.verify(readData: true).ok)
        let out = TemporaryDirectory()
        let exported = try await registry.export(.number(name("dir"), 1), to: out.file("model"))
        #expect(exported.files == 5)
        for path in filesUnder(source.path) {
            #expect(
                FileManager.default.contents(atPath: source.file(path)) == FileManager.default.contents(atPath: out.file("model/" + path)),
                "\(path)")
        }
        #expect(filesUnder(out.file("model")) == filesUnder(source.path))
        _ = try await registry.removeModel(name("dir"), cascade: false)
        _ = try await registry.gc(grace: 0)
        #expect(try await registry.stats().blobs == 0)
        #expect(blobs.inventory().blobs.isEmpty, "the files' blobs went with the model")
    }
}

private final class Streamed: @unchecked Sendable {
    private let lock = NSLock()
    private var collected: [UInt8] = []
    func append(_ chunk: UnsafeRawBufferPointer) { lock.withLock { collected.append(contentsOf: chunk) } }
    var bytes: [UInt8] { lock.withLock { collected } }
}

extension BackendPairTests {
    @Test(
        "an adapter student: its mode stored and read back, only its adapter stored, counted by stats, merged on export", arguments: pairs)
    func adapter(pair: (MetadataStoreKind, BlobStoreKind)) async throws {
        let (registry, _, kept) = try await Self.registry(pair)
        defer { withExtendedLifetime(kept) {} }
        let source = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: source.file("parent"), withIntermediateDirectories: true)
        try SafeTensorsWriter.write(AdapterTests.parentTensors, metadata: ["format": "pt"], to: source.file("parent/model.safetensors"))
        _ = try await registry.addBase(name: name("base"), directory: try DirectoryInput.open(source.file("parent")))
        _ = try await registry.createStudent(name: name("lora"), from: .number(name("base"), 1), manifest: .adapter)
        let adapter = try AdapterTests.writeAdapter(source.file("adapter"))
        let result = try await registry.addCheckpoint(model: name("lora"), directory: try DirectoryInput.open(adapter))
        #expect(result.tensors == AdapterTests.loraTensors().count)
        #expect(try await registry.manifest(of: name("lora"))?.mode == .adapter)
        let lineage = try await registry.lineage(name("base"), metric: nil, direction: nil, parts: .both)
        #expect(lineage.descendants.map(\.mode) == [.adapter])
        let stats = try await registry.stats()
        let own = try await registry.checkpoint(.number(name("lora"), 1)).checkpoint.fileBytes
        let parent = try await registry.checkpoint(.number(name("base"), 1)).checkpoint.fileBytes
        #expect(
            stats.adapterModels == 1 && stats.adapterCheckpoints == 1 && stats.adapterBytes == own && stats.adapterParentBytes == parent)
        let out = TemporaryDirectory()
        try await registry.exportMerged(.number(name("lora"), 1), to: out.file("merged"))
        let merged = try SafeTensorsReader(path: out.file("merged/model.safetensors"))
        #expect(merged.headerBytes == (try SafeTensorsReader(path: source.file("parent/model.safetensors"))).headerBytes)
        #expect(try await registry.verify(readData: true).ok)
    }
}

extension BackendPairTests {
    @Test(
        "exposure: the same shares, frozen depths and drifts on every store; drift cached, and dropped by gc with its blobs",
        arguments: pairs)
    func exposure(pair: (MetadataStoreKind, BlobStoreKind)) async throws {
        let (registry, _, kept) = try await Self.registry(pair)
        defer { withExtendedLifetime(kept) {} }
        let source = TemporaryDirectory()
        let (_, grand, _) = try await ExposureTests.build(registry, in: source)
        let (descendant, ancestor) = (Reference.model(name("grand")), Reference.model(name("base")))
        let quick = try await registry.exposure(of: descendant, to: ancestor, detail: .digests)
        #expect(quick.layers.map(\.drift) == [0, nil, 0, nil] && quick.frozenDepth == 1)
        let measured = try await registry.exposure(of: descendant, to: ancestor, detail: .drift)
        let base = Dictionary(uniqueKeysWithValues: ExposureTests.base.map { ($0.name, $0) })
        let expected = ExposureTests.relative(grand.map { (base[$0.name]!, $0) })
        #expect(abs(try #require(measured.drift) - expected) < 1e-9)
        #expect(try await registry.exposure(of: descendant, to: ancestor, detail: .digests) == measured, "cached in this store")
        try await registry.addAdvisory(on: ancestor, id: "ADV-1", severity: .high)
        let affected = try await registry.affected(ancestor, exposure: .digests)
        #expect(affected.first { $0.model == "grand" }?.drift == measured.drift)
        // gc drops the cache rows of the blobs it removes.
        let changed = DriftPair(
            ancestor: Digest.of(base["head.weight"]!.bytes), descendant: Digest.of(grand.last!.bytes), dtype: .f32)
        #expect(try await registry.metadata.driftSums([changed]).count == 1)
        _ = try await registry.removeModel(name("grand"))
        _ = try await registry.gc(grace: 0)
        #expect(try await registry.metadata.driftSums([changed]).isEmpty)
    }
}

/// A commit of stored (not inline) F32 tensors, as the blob store would hold them.
private func storedCommit(_ tensors: [(String, [UInt8])], header: String) -> NewCheckpoint {
    var offset = 0
    let ingested = tensors.map { name, bytes in
        defer { offset += bytes.count }
        return IngestedTensor(
            info: TensorInfo(name: name, dtype: .f32, shape: [bytes.count / 4], dataOffsets: offset..<(offset + bytes.count)),
            digest: Digest.of(bytes), inline: nil, wroteFile: true)
    }
    let headerBytes = Array((header + String(repeating: " ", count: 8)).utf8)
    return NewCheckpoint(
        headerBytes: headerBytes, headerDigest: Digest.of(headerBytes),
        digest: Registry.checkpointDigest(header: headerBytes, tensors: ingested),
        metadata: [:], dataLength: offset, fileBytes: headerBytes.count + offset, tensors: ingested, step: nil, epoch: nil)
}

@Suite("Metadata store conformance: stored encodings")
struct EncodingConformanceTests {
    @Test(
        "compaction reads every stored blob with its parent edge; encodings are recorded, counted by stats, and keep a delta's base alive",
        arguments: MetadataStoreKind.allCases)
    func encodings(kind: MetadataStoreKind) async throws {
        let (store, keep) = try await kind.make()
        defer { withExtendedLifetime(keep) {} }
        let (blobs, keepBlobs) = try BlobStoreKind.local.make()
        defer { withExtendedLifetime(keepBlobs) {} }
        let (w, v, tunedW) = ([UInt8](repeating: 1, count: 8000), [UInt8](repeating: 2, count: 6000), [UInt8](repeating: 3, count: 8000))
        let (wDigest, vDigest, tunedDigest) = (Digest.of(w), Digest.of(v), Digest.of(tunedW))
        _ = try await store.insertBase(
            name: name("b"), provenance: Provenance(), checkpoint: storedCommit([("w", w), ("v", v)], header: "b"), stillStored: always)
        let base = try #require(try await store.checkpoint(model: name("b"), number: 1))
        try await store.insertStudent(
            NewStudent(
                name: name("s"), parent: base, relation: .finetune, mode: .fullFinetune, rules: nil, entries: [], description: nil,
                createdAt: timestamp()))
        _ = try await store.insertCheckpoint(
            model: name("s"), storedCommit([("w", tunedW), ("v", v)], header: "s"), metrics: [], split: nil, newTensors: nil,
            stillStored: always)
        // The tuned bytes are also a base of their own: a second user of the delta.
        _ = try await store.insertBase(
            name: name("twin"), provenance: Provenance(), checkpoint: storedCommit([("w", tunedW)], header: "t"), stillStored: always)

        let inventory = try await store.compactionInventory()
        let student = try #require(try await store.checkpoint(model: name("s"), number: 1))
        #expect(inventory.rows.map(\.checkpoint) == inventory.rows.map(\.checkpoint).sorted(), "parents first")
        #expect(inventory.rows.count == 5 && inventory.encodings.isEmpty)
        let tunedRow = try #require(inventory.rows.first { $0.checkpoint == student.id && $0.name == "w" })
        #expect(
            tunedRow.parentCheckpoint == base.id && tunedRow.dtype == "F32" && tunedRow.digest == tunedDigest && tunedRow.length == 8000)
        #expect(inventory.rows.filter { $0.checkpoint == base.id }.allSatisfy { $0.parentCheckpoint == nil })

        // A delta's base is recorded first (still raw), then the encodings.
        #expect(try await store.setEncoding(tunedDigest, BlobEncoding(codec: .raw, storedLength: nil, base: wDigest)))
        #expect(try await store.setEncoding(tunedDigest, BlobEncoding(codec: .xorBgZstd, storedLength: 1000, base: wDigest)))
        #expect(try await store.setEncoding(wDigest, BlobEncoding(codec: .bgZstd, storedLength: 5000, base: nil)))
        #expect(try await store.setEncoding(vDigest, BlobEncoding(codec: .raw, storedLength: 6000, base: nil)), "tried, kept raw")
        #expect(!(try await store.setEncoding(Digest.of([9]), .raw)), "no such blob")
        let recorded = try await store.compactionInventory().encodings
        #expect(recorded[tunedDigest] == BlobEncoding(codec: .xorBgZstd, storedLength: 1000, base: wDigest))
        #expect(recorded[wDigest] == BlobEncoding(codec: .bgZstd, storedLength: 5000, base: nil))
        #expect(recorded[vDigest]?.storedLength == 6000)
        let stats = try await store.stats()
        #expect(stats.codecs.map(\.codec) == [.raw, .bgZstd, .xorBgZstd])
        #expect(stats.codecs[0] == CodecUsage(codec: .raw, blobs: 1, rawBytes: 6000, storedBytes: 6000))
        #expect(stats.codecs[1] == CodecUsage(codec: .bgZstd, blobs: 1, rawBytes: 8000, storedBytes: 5000))
        #expect(stats.codecs[2] == CodecUsage(codec: .xorBgZstd, blobs: 1, rawBytes: 8000, storedBytes: 1000))

        // b and s go: w is no checkpoint's any more, but twin's delta needs it.
        _ = try await store.removeModel(name("b"), cascade: true, blobs: blobs, dryRun: false)
        _ = try await store.collectGarbage(blobs: blobs, grace: 0, dryRun: false)
        #expect(try await store.knownBlobDigests() == [wDigest.hex, tunedDigest.hex])
        #expect(try await store.referencedBlobs().blobs.map(\.digest).contains(wDigest), "verify checks a base too")
        // twin goes: its delta, then the base with it, in the same removal.
        let removed = try #require(try await store.removeModel(name("twin"), cascade: false, blobs: blobs, dryRun: false))
        #expect(removed.bytesFreed == 1000 + 5000, "stored bytes freed")
        #expect(try await store.knownBlobDigests().isEmpty)
    }
}
