package import GraftCore
import SafeTensors
import Synchronization

/// A `MetadataStore` in dictionaries: no file, no database, no I/O. It answers every query
/// shape of the protocol the way the SQLite and PostgreSQL stores do, and decides with the same
/// core policies (``BestSelection``, ``CandidateFilter``, ``AdvisoryInheritance``,
/// ``RetentionPolicy``), so the conformance suite runs unchanged on it and the façade can be
/// tested with no database. Each method is one critical section: a write works on a copy of the
/// state and publishes it only when it succeeds, so a refused write changes nothing.
///
/// ```swift
/// let registry = Registry(layout: layout, metadata: MemoryMetadataStore(), blobs: blobs)
/// ```
package final class MemoryMetadataStore: MetadataStore {
    package let location = "memory"
    private let state = Mutex(State())
    private let announcements = UploadAnnouncements()

    package init() {}

    // MARK: The state

    struct Model {
        var id: Int64
        var name: String
        var kind: String
        var provenance: Provenance
        var mode: TransferMode?
        var rules: String?
        var relation: Relation?
        var parentCheckpoint: Int64?
        var parentNumber: Int?
        var parentModel: Int64?
        var createdAt: String
        /// The ids from the root base down to this model.
        var lineage: [Int64]
        var manifest: [String: ManifestEntry] = [:]
        var aliases: [String: Int64] = [:]
        var curves: [String: [Int: Double]] = [:]
        /// The lineage path as the SQL stores order it: `/root/…/self/`.
        var path: String { "/" + lineage.map(String.init).joined(separator: "/") + "/" }
    }

    struct Tensor {
        var name: String
        var dtype: DType
        var shape: [Int]
        var elements: Int
        var bytes: Int
        var digest: Digest
    }

    struct Checkpoint {
        var id: Int64
        var model: Int64
        var number: Int
        var digest: Digest
        var header: [UInt8]
        var headerDigest: Digest
        var metadata: [String: String]
        var parameters: Int
        var fileBytes: Int
        var step: Int?
        var epoch: Int?
        var createdAt: String
        var tensors: [Tensor]
        /// A directory checkpoint's files by path (plain files without their bytes).
        var files: [CheckpointFile] = []
        var idempotencyKey: String? = nil
        var signature: StoredSignature? = nil
        /// Values by (name, split); no split is "".
        var metrics: [MetricSlot: Double] = [:]
        /// Every blob it refers to: its tensors' and its plain files'.
        var blobDigests: [Digest] {
            tensors.map(\.digest)
                + files.compactMap { file in
                    if case .file(let digest, _, _) = file.content { return digest }
                    return nil
                }
        }
    }

    struct MetricSlot: Hashable {
        var name: String
        var split: String
    }

    struct Blob {
        var length: Int
        var inline: [UInt8]?
        var encoding: BlobEncoding = .raw
    }

    struct AdvisoryRow {
        var id: String
        var model: Int64
        var checkpoint: Int64?
        var severity: Severity
        var note: String?
        var url: String?
        var createdAt: String
        var resolvedAt: String?
    }

    struct TokenRow {
        var info: TokenInfo
        var hash: [UInt8]
        var revokedAt: String?
    }

    struct State {
        var nextID: Int64 = 1
        var models: [Int64: Model] = [:]
        var byName: [String: Int64] = [:]
        var checkpoints: [Int64: Checkpoint] = [:]
        var drift: [DriftPair: DriftSums] = [:]
        var blobs: [Digest: Blob] = [:]
        var advisories: [String: AdvisoryRow] = [:]
        var tokens: [TokenRow] = []
        /// Sessions by id hash: the index of their token row, when opened, when last used.
        var sessions: [[UInt8]: (token: Int, created: Double, lastSeen: Double)] = [:]

        mutating func newID() -> Int64 {
            defer { nextID += 1 }
            return nextID
        }

        func checkpoints(of model: Int64) -> [Checkpoint] {
            checkpoints.values.filter { $0.model == model }.sorted { $0.number < $1.number }
        }

        func name(of model: Int64) -> String { models[model]?.name ?? "" }

        func summary(_ checkpoint: Checkpoint) -> CheckpointSummary {
            let name = ModelName(trusted: name(of: checkpoint.model))
            return CheckpointSummary(
                model: name, number: checkpoint.number, ref: "\(name)@\(checkpoint.number)", digest: checkpoint.digest,
                tensorCount: checkpoint.tensors.count, parameterCount: checkpoint.parameters, fileBytes: checkpoint.fileBytes,
                step: checkpoint.step,
                epoch: checkpoint.epoch, metadata: checkpoint.metadata, createdAt: checkpoint.createdAt)
        }

        func resolved(_ checkpoint: Checkpoint) -> ResolvedCheckpoint {
            ResolvedCheckpoint(id: checkpoint.id, summary: summary(checkpoint))
        }

        func modelSummary(_ model: Model) -> ModelSummary {
            let numbers = checkpoints(of: model.id).map(\.number)
            return ModelSummary(
                name: ModelName(trusted: model.name), kind: model.kind, provenance: model.provenance, checkpointCount: numbers.count,
                latestCheckpoint: numbers.last, createdAt: model.createdAt)
        }

        /// A model and every descendant, any depth, in lineage-path order (parents first).
        func subtree(_ root: Int64) -> [Model] {
            models.values.filter { $0.lineage.contains(root) }.sorted { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
        }

        func row(_ model: Model) -> LineageRow {
            LineageRow(
                link: model.parentModel, via: model.parentCheckpoint, id: model.id, name: model.name, kind: model.kind,
                mode: model.mode?.rawValue,
                relation: model.relation?.rawValue, parentNumber: model.parentNumber, checkpoints: checkpoints(of: model.id).count)
        }

        /// The model and its ancestors, nearest first (only its parent without `full`); each
        /// row's parent is the next row, as the SQL stores read them.
        func chain(_ model: Int64, full: Bool) -> [LineageRow] {
            guard let lineage = models[model]?.lineage else { return [] }
            let ids = full ? lineage : Array(lineage.suffix(2))
            var up = ids.reversed().compactMap { models[$0] }.map(row)
            for index in up.indices {
                up[index].link = nil
                if index < up.count - 1, up[index].relation != nil {
                    (up[index].link, up[index].parentName) = (up[index + 1].id, up[index + 1].name)
                }
            }
            return up
        }

        /// Descendants (not the model), parents first, each with its parent edge.
        func descendants(_ model: Int64) -> [LineageRow] {
            subtree(model).filter { $0.id != model }.map(row)
        }

        var open: [OpenAdvisory] {
            advisories.values.filter { $0.resolvedAt == nil }.sorted { $0.id.utf8.lexicographicallyPrecedes($1.id.utf8) }.map { advisory in
                OpenAdvisory(
                    id: advisory.id, model: advisory.model, checkpoint: advisory.checkpoint, ancestry: models[advisory.model]?.lineage ?? []
                )
            }
        }

        var checkpointLabels: [Int64: [String]] {
            var result: [Int64: [String]] = [:]
            for advisory in advisories.values where advisory.resolvedAt == nil {
                guard let id = advisory.checkpoint, let checkpoint = checkpoints[id] else { continue }
                result[checkpoint.model, default: []].append("\(advisory.id)@\(checkpoint.number)")
            }
            return result
        }

        /// Models flagged as a whole with what they carry or inherit (see ``AdvisoryInheritance``);
        /// with `root`, only the models of its subtree.
        func flaggedModels(_ open: [OpenAdvisory], within root: Int64?) -> [Int64: Set<String>] {
            let plan = AdvisoryInheritance.FlagPlan(open, within: root)
            guard !plan.isEmpty else { return [:] }
            var students: [Int64: [Int64]] = [:]
            for checkpoint in plan.seedCheckpoints {
                students[checkpoint] = models.values.filter { $0.parentCheckpoint == checkpoint }.map(\.id)
            }
            let rootChain = root.map { chain($0, full: true) } ?? []
            var subtrees: [Int64: [Int64]] = [:]
            for model in plan.subtreeRoots(students: students, rootChain: rootChain) { subtrees[model] = subtree(model).map(\.id) }
            return plan.flags(students: students, rootChain: rootChain, subtrees: subtrees)
        }

        /// Records blobs, checking that every stored one is still there; returns the inline bytes stored anew.
        mutating func insertBlobs(_ tensors: [IngestedTensor], stillStored: (Digest) -> Bool) throws(GraftError) -> Int {
            var stored = 0
            for tensor in tensors where blobs[tensor.digest] == nil || tensor.inline == nil {
                if tensor.inline == nil, !stillStored(tensor.digest) { throw .blobVanished(tensor.digest) }
                guard blobs[tensor.digest] == nil else { continue }
                blobs[tensor.digest] = Blob(length: tensor.info.byteCount, inline: tensor.inline)
                if tensor.inline != nil { stored += tensor.info.byteCount }
            }
            return stored
        }

        mutating func insertCheckpoint(model: Int64, number: Int, _ checkpoint: NewCheckpoint) -> Int64 {
            let id = newID()
            checkpoints[id] = Checkpoint(
                id: id, model: model, number: number, digest: checkpoint.digest, header: checkpoint.headerBytes,
                headerDigest: checkpoint.headerDigest,
                metadata: checkpoint.metadata, parameters: checkpoint.parameterCount, fileBytes: checkpoint.fileBytes,
                step: checkpoint.step,
                epoch: checkpoint.epoch, createdAt: checkpoint.copied?.createdAt ?? timestamp(),
                tensors: checkpoint.tensors.map {
                    Tensor(
                        name: $0.info.name, dtype: $0.info.dtype, shape: $0.info.shape, elements: $0.info.elementCount,
                        bytes: $0.info.byteCount, digest: $0.digest)
                }, files: checkpoint.files, idempotencyKey: checkpoint.idempotencyKey, signature: checkpoint.signature)
            return id
        }

        func protections(_ checkpoint: Checkpoint) -> [Protection] {
            let model = models[checkpoint.model]
            let students = models.values.filter { $0.parentCheckpoint == checkpoint.id }.map(\.name).sorted {
                $0.utf8.lexicographicallyPrecedes($1.utf8)
            }
            let aliases = (model?.aliases ?? [:]).filter { $0.value == checkpoint.id }.map(\.key).sorted {
                $0.utf8.lexicographicallyPrecedes($1.utf8)
            }
            return RetentionPolicy.protections(
                students: students, aliases: aliases, model: model?.name ?? "", kind: model?.kind ?? "", number: checkpoint.number)
        }

        /// The blobs deltas are taken against (kept alive while a delta needs them).
        var deltaBases: Set<Digest> { Set(blobs.values.compactMap(\.encoding.base)) }
        /// Every blob something refers to: checkpoints' tensors and files, deltas' bases.
        var blobReferences: Set<Digest> { Set(checkpoints.values.flatMap { $0.blobDigests }).union(deltaBases) }

        /// Removes checkpoints (their metrics, aliases and advisories go with them) and the blobs
        /// nothing else uses; returns the bytes freed. A dry run changes nothing.
        mutating func removeCheckpoints(_ ids: Set<Int64>, store: any BlobStore, dryRun: Bool) -> Int {
            let digests = Set(ids.compactMap { checkpoints[$0] }.flatMap { $0.blobDigests })
            let stillUsed = Set(checkpoints.values.filter { !ids.contains($0.id) }.flatMap { $0.blobDigests }).union(deltaBases)
            var freed = 0
            var bases: Set<Digest> = []
            for digest in digests where !stillUsed.contains(digest) {
                guard let blob = blobs[digest] else { continue }
                freed += blob.encoding.storedLength ?? blob.length
                if dryRun { continue }
                blobs[digest] = nil
                if let base = blob.encoding.base { bases.insert(base) }
                if blob.inline == nil { store.remove(digest) }
            }
            // The bases of the deltas just removed, where nothing else needs them.
            let used = blobReferences
            for base in bases where !used.contains(base) {
                guard let blob = blobs.removeValue(forKey: base) else { continue }
                freed += blob.encoding.storedLength ?? blob.length
                store.remove(base)
            }
            if !dryRun {
                for id in ids {
                    if let model = checkpoints[id]?.model, let aliases = models[model]?.aliases {
                        models[model]?.aliases = aliases.filter { $0.value != id }
                    }
                    checkpoints[id] = nil
                }
                advisories = advisories.filter { $0.value.checkpoint.map { !ids.contains($0) } ?? true }
            }
            return freed
        }
    }

    /// One critical section over the state (a read, or a write published whole).
    private func access<T: Sendable>(_ body: (inout State) throws(GraftError) -> T) throws(GraftError) -> T {
        try state.withLock { (current: inout State) throws(GraftError) -> T in
            var copy = current
            let result = try body(&copy)
            current = copy
            return result
        }
    }

    private static func bytewise(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }

    // MARK: Models and checkpoints

    package func modelID(named name: ModelName) async throws(GraftError) -> Int64? { try access { $0.byName[name.value] } }

    package func modelNames() async throws(GraftError) -> [String] { try access { $0.byName.keys.sorted(by: Self.bytewise) } }

    package func models() async throws(GraftError) -> [ModelSummary] {
        try access { state in state.models.values.sorted { Self.bytewise($0.name, $1.name) }.map(state.modelSummary) }
    }

    package func model(named name: ModelName) async throws(GraftError) -> StoredModel? {
        try access { state in
            guard let id = state.byName[name.value], let model = state.models[id] else { return nil }
            let checkpoints = state.checkpoints(of: id)
            return StoredModel(
                id: id, summary: state.modelSummary(model), checkpoints: checkpoints.map(state.summary),
                latestCheckpointID: checkpoints.last?.id)
        }
    }

    package func checkpoints(digestPrefix prefix: String, limit: Int) async throws(GraftError) -> [ResolvedCheckpoint] {
        try access { state in
            Array(
                state.checkpoints.values.filter { $0.digest.hex.hasPrefix(prefix) }.sorted { a, b in
                    let (x, y) = (state.name(of: a.model), state.name(of: b.model))
                    return x != y ? Self.bytewise(x, y) : a.number < b.number
                }.prefix(limit).map(state.resolved))
        }
    }

    package func checkpoint(model: ModelName, alias: String) async throws(GraftError) -> ResolvedCheckpoint? {
        try access { state in
            guard let id = state.byName[model.value], let target = state.models[id]?.aliases[alias],
                let checkpoint = state.checkpoints[target]
            else { return nil }
            return state.resolved(checkpoint)
        }
    }

    package func checkpoint(model: ModelName, idempotencyKey: String) async throws(GraftError) -> ResolvedCheckpoint? {
        try access { state in
            guard let id = state.byName[model.value] else { return nil }
            return state.checkpoints(of: id).first { $0.idempotencyKey == idempotencyKey }.map(state.resolved)
        }
    }

    package func checkpoint(model: ModelName, number: Int?) async throws(GraftError) -> ResolvedCheckpoint? {
        try access { state in
            guard let id = state.byName[model.value] else { return nil }
            let all = state.checkpoints(of: id)
            return (number.map { number in all.first { $0.number == number } } ?? all.last).map(state.resolved)
        }
    }

    package func tensors(checkpoint: Int64) async throws(GraftError) -> [TensorEntry] {
        try access { state in
            (state.checkpoints[checkpoint]?.tensors ?? []).map {
                TensorEntry(name: $0.name, dtype: $0.dtype, shape: $0.shape, parameters: $0.elements, bytes: $0.bytes, digest: $0.digest)
            }
        }
    }

    package func parts(checkpoint: Int64) async throws(GraftError) -> CheckpointParts {
        try access { state in
            guard let found = state.checkpoints[checkpoint] else { return CheckpointParts(header: [], tensors: []) }
            let files = found.files.map { file in
                guard case .file(let digest, let length, _) = file.content else { return file }
                return CheckpointFile(path: file.path, content: .file(digest: digest, length: length, inline: state.blobs[digest]?.inline))
            }
            return CheckpointParts(
                header: found.header, tensors: found.tensors.map { ($0.digest, $0.bytes, state.blobs[$0.digest]?.inline) }, files: files)
        }
    }

    package func files(checkpoint: Int64) async throws(GraftError) -> [CheckpointFile] {
        try access { state in state.checkpoints[checkpoint]?.files ?? [] }
    }

    package func hasHeader(digest: Digest) async throws(GraftError) -> Bool {
        try access { state in state.checkpoints.values.contains { $0.headerDigest == digest } }
    }

    // MARK: Tokens

    package func insertToken(_ token: TokenInfo, hash: [UInt8]) async throws(GraftError) {
        try access { (state: inout State) throws(GraftError) in
            if state.tokens.contains(where: { $0.info.name == token.name && $0.revokedAt == nil }) { throw .tokenExists(token.name) }
            state.tokens.append(TokenRow(info: token, hash: hash, revokedAt: nil))
        }
    }

    package func tokens() async throws(GraftError) -> [TokenInfo] {
        try access { state in state.tokens.filter { $0.revokedAt == nil }.map(\.info).sorted { Self.bytewise($0.name, $1.name) } }
    }

    package func revokeToken(named name: String, at time: String) async throws(GraftError) -> Bool {
        try access { state in
            guard let index = state.tokens.firstIndex(where: { $0.info.name == name && $0.revokedAt == nil }) else { return false }
            state.tokens[index].revokedAt = time
            state.sessions = state.sessions.filter { $0.value.token != index }
            return true
        }
    }

    package func token(hash: [UInt8]) async throws(GraftError) -> TokenInfo? {
        try access { state in state.tokens.first { $0.hash == hash && $0.revokedAt == nil }?.info }
    }

    package func insertSession(hash: [UInt8], tokenHash: [UInt8], now: Double, expiry: SessionExpiry) async throws(GraftError) -> Bool {
        try access { state in
            state.sessions = state.sessions.filter { expiry.isLive(created: $0.value.created, lastSeen: $0.value.lastSeen, now: now) }
            guard let index = state.tokens.firstIndex(where: { $0.hash == tokenHash && $0.revokedAt == nil }) else { return false }
            state.sessions[hash] = (index, now, now)
            return true
        }
    }

    package func session(hash: [UInt8], now: Double, expiry: SessionExpiry) async throws(GraftError) -> TokenInfo? {
        try access { state in
            guard let session = state.sessions[hash], state.tokens[session.token].revokedAt == nil,
                expiry.isLive(created: session.created, lastSeen: session.lastSeen, now: now)
            else { return nil }
            if now - session.lastSeen >= 60 { state.sessions[hash]?.lastSeen = now }
            return state.tokens[session.token].info
        }
    }

    package func deleteSession(hash: [UInt8]) async throws(GraftError) {
        try access { state in state.sessions[hash] = nil }
    }

    package func inlineBytes(_ digests: [Digest]) async throws(GraftError) -> [Digest: [UInt8]] {
        try access { state in
            var found: [Digest: [UInt8]] = [:]
            for digest in digests { if let inline = state.blobs[digest]?.inline { found[digest] = inline } }
            return found
        }
    }

    package func digests(_ digests: [Digest], referencedByModelsMatching models: String) async throws(GraftError) -> Set<Digest> {
        let visibility = ModelVisibility(pattern: models)
        let wanted = Set(digests)
        return try access { state in
            var visible = Set<Digest>()
            for checkpoint in state.checkpoints.values where visibility.shows(state.name(of: checkpoint.model)) {
                for digest in checkpoint.blobDigests where wanted.contains(digest) { visible.insert(digest) }
            }
            return visible
        }
    }

    // MARK: Uploads

    package func announceUploads(_ blobs: [ProposedTensor], window: Duration) async throws(GraftError) {
        try await announcements.announce(blobs, window: window)
    }

    package func announcedLength(of digest: Digest) async throws(GraftError) -> Int? { await announcements.length(of: digest) }

    package func recordUploadProof(_ digest: Digest, token: String, window: Duration) async throws(GraftError) {
        try await announcements.prove(digest, token: token, window: window)
    }

    package func uploadProofs(_ digests: [Digest], token: String) async throws(GraftError) -> Set<Digest> {
        await announcements.proven(digests, token: token)
    }

    // MARK: Commits

    package func insertBase(
        name: ModelName, provenance: Provenance, checkpoint: NewCheckpoint, stillStored: @escaping @Sendable (Digest) -> Bool
    ) async throws(GraftError) -> Int {
        try access { (state: inout State) throws(GraftError) -> Int in
            if state.byName[name.value] != nil { throw .modelExists(name) }
            let id = state.newID()
            state.models[id] = Model(
                id: id, name: name.value, kind: "base", provenance: provenance, createdAt: checkpoint.copied?.modelCreatedAt ?? timestamp(),
                lineage: [id])
            state.byName[name.value] = id
            let stored = try state.insertBlobs(checkpoint.blobs, stillStored: stillStored)
            _ = state.insertCheckpoint(model: id, number: checkpoint.copied?.number ?? 1, checkpoint)
            return stored
        }
    }

    package func insertStudent(_ student: NewStudent) async throws(GraftError) {
        try access { (state: inout State) throws(GraftError) in
            if state.byName[student.name.value] != nil { throw .modelExists(student.name) }
            guard let parent = state.checkpoints[student.parent.id], let parentModel = state.models[parent.model] else {
                throw .checkpointNotFound(student.parent.summary.reference, available: "it was removed meanwhile")
            }
            let id = state.newID()
            var model = Model(
                id: id, name: student.name.value, kind: "student", provenance: Provenance(description: student.description),
                mode: student.mode,
                rules: student.rules, relation: student.relation, parentCheckpoint: parent.id, parentNumber: parent.number,
                parentModel: parentModel.id,
                createdAt: student.createdAt, lineage: parentModel.lineage + [id])
            for entry in student.entries { model.manifest[entry.name] = entry }
            state.models[id] = model
            state.byName[student.name.value] = id
        }
    }

    package func insertCheckpoint(
        model name: ModelName, _ checkpoint: NewCheckpoint, metrics: [MetricAssignment], split: String?, newTensors: [String]?,
        stillStored: @escaping @Sendable (Digest) -> Bool
    ) async throws(GraftError) -> (number: Int, inlineStored: Int) {
        try access { (state: inout State) throws(GraftError) -> (number: Int, inlineStored: Int) in
            guard let id = state.byName[name.value] else { throw .modelNotFound(name, suggestions: []) }
            // As the SQL stores' unique index: a key is used once per model.
            if let key = checkpoint.idempotencyKey, state.checkpoints(of: id).contains(where: { $0.idempotencyKey == key }) {
                throw .busy
            }
            let stored = try state.insertBlobs(checkpoint.blobs, stillStored: stillStored)
            let newest = state.checkpoints(of: id).last?.number ?? 0
            let number = try copiedNumber(checkpoint, model: name, newest: newest) ?? newest + 1
            let checkpointID = state.insertCheckpoint(model: id, number: number, checkpoint)
            for metric in metrics {
                state.checkpoints[checkpointID]?.metrics[MetricSlot(name: metric.name, split: split ?? "")] = metric.value
            }
            if let newTensors {
                let names = Set(newTensors)
                for tensor in checkpoint.tensors where names.contains(tensor.info.name) {
                    if let existing = state.models[id]?.manifest[tensor.info.name], existing.state != .new { continue }
                    state.models[id]?.manifest[tensor.info.name] = ManifestEntry(
                        name: tensor.info.name, state: .new, dtype: tensor.info.dtype, shape: tensor.info.shape,
                        parameters: tensor.info.elementCount)
                }
            }
            return (number, stored)
        }
    }

    package func recordSignature(checkpoint: Int64, _ signature: StoredSignature) async throws(GraftError) {
        try access { (state: inout State) throws(GraftError) in
            guard state.checkpoints[checkpoint] != nil else { throw GraftError.busy }
            state.checkpoints[checkpoint]?.signature = signature
        }
    }

    package func signature(checkpoint: Int64) async throws(GraftError) -> StoredSignature? {
        try access { state in state.checkpoints[checkpoint]?.signature }
    }

    package func manifest(of name: ModelName) async throws(GraftError) -> ManifestSummary?? {
        try access { state -> ManifestSummary?? in
            guard let id = state.byName[name.value], let model = state.models[id] else { return nil }
            guard let via = model.parentCheckpoint, let parent = state.checkpoints[via] else { return .some(nil) }
            let entries = model.manifest.values.sorted { numericAwareLess($0.name, $1.name) }
            return ManifestSummary(
                parent: "\(state.name(of: parent.model))@\(parent.number)", relation: model.relation ?? .finetune,
                mode: model.mode ?? ManifestResolver.mode(of: entries), entries: entries)
        }
    }

    // MARK: Aliases

    package func tag(checkpoint: Int64, alias: String) async throws(GraftError) -> Int?? {
        try access { state -> Int?? in
            guard let found = state.checkpoints[checkpoint] else { return nil }
            let previous = state.models[found.model]?.aliases[alias].flatMap { state.checkpoints[$0]?.number }
            state.models[found.model]?.aliases[alias] = checkpoint
            return .some(previous)
        }
    }

    package func untag(model: Int64, alias: String) async throws(GraftError) -> Bool {
        try access { state in state.models[model]?.aliases.removeValue(forKey: alias) != nil }
    }

    package func aliases(of name: ModelName) async throws(GraftError) -> [String: String] {
        try access { state in
            guard let id = state.byName[name.value], let model = state.models[id] else { return [:] }
            return model.aliases.compactMapValues { state.checkpoints[$0].map { "\(name)@\($0.number)" } }
        }
    }

    // MARK: Metrics and curves

    package func logMetrics(checkpoint: Int64, _ values: [MetricAssignment], split: String?) async throws(GraftError) {
        try access { state in
            for value in values { state.checkpoints[checkpoint]?.metrics[MetricSlot(name: value.name, split: split ?? "")] = value.value }
        }
    }

    package func insertCurvePoints(model: Int64, _ batch: CurveBatch) async throws(GraftError) {
        try access { state in
            for index in 0..<batch.count {
                state.models[model]?.curves[batch.names[Int(batch.nameIndex[index])], default: [:]][batch.steps[index]] =
                    batch.values[index]
            }
        }
    }

    private static func values(_ checkpoint: Checkpoint) -> [MetricValue] {
        checkpoint.metrics.sorted { a, b in a.key.name != b.key.name ? bytewise(a.key.name, b.key.name) : bytewise(a.key.split, b.key.split)
        }
        .map { MetricValue(name: $0.key.name, split: $0.key.split.isEmpty ? nil : $0.key.split, value: $0.value) }
    }

    package func metricsReport(model: Int64, name: ModelName) async throws(GraftError) -> MetricsReport {
        try access { state in
            let entries = state.checkpoints(of: model).filter { !$0.metrics.isEmpty }.map {
                MetricsReport.Entry(checkpoint: "\(name)@\($0.number)", metrics: Self.values($0))
            }
            let curves = (state.models[model]?.curves ?? [:]).filter { !$0.value.isEmpty }.sorted { Self.bytewise($0.key, $1.key) }.map {
                curve, points in
                let steps = points.keys.sorted()
                return CurveSummary(
                    name: curve, points: points.count, firstStep: steps[0], lastStep: steps[steps.count - 1],
                    lastValue: points[steps[steps.count - 1]]!,
                    minimum: points.values.min()!, maximum: points.values.max()!)
            }
            return MetricsReport(checkpoints: entries, curves: curves)
        }
    }

    package func metrics(checkpoint: Int64) async throws(GraftError) -> [MetricValue] {
        try access { state in state.checkpoints[checkpoint].map(Self.values) ?? [] }
    }

    // MARK: Advisories

    package func insertAdvisory(_ advisory: NewAdvisory) async throws(GraftError) {
        try access { (state: inout State) throws(GraftError) in
            if state.advisories[advisory.id] != nil { throw .advisoryExists(advisory.id) }
            state.advisories[advisory.id] = AdvisoryRow(
                id: advisory.id, model: advisory.model, checkpoint: advisory.checkpoint, severity: advisory.severity, note: advisory.note,
                url: advisory.url,
                createdAt: advisory.createdAt)
        }
    }

    package func advisories(includeResolved: Bool) async throws(GraftError) -> [Advisory] {
        try access { state in
            state.advisories.values.filter { includeResolved || $0.resolvedAt == nil }
                .sorted { a, b in a.createdAt != b.createdAt ? Self.bytewise(b.createdAt, a.createdAt) : Self.bytewise(a.id, b.id) }
                .map { row in
                    let name = state.name(of: row.model)
                    return Advisory(
                        id: row.id, model: name,
                        checkpoint: row.checkpoint.flatMap { state.checkpoints[$0] }.map { "\(name)@\($0.number)" },
                        severity: row.severity, note: row.note, url: row.url, createdAt: row.createdAt, resolvedAt: row.resolvedAt)
                }
        }
    }

    package func resolveAdvisory(_ id: String, at time: String) async throws(GraftError) -> Bool? {
        try access { state -> Bool? in
            guard let row = state.advisories[id] else { return nil }
            guard row.resolvedAt == nil else { return false }
            state.advisories[id]?.resolvedAt = time
            return true
        }
    }

    package func openAdvisories() async throws(GraftError) -> [OpenAdvisory] { try access { $0.open } }

    package func checkpointAdvisoryLabels() async throws(GraftError) -> [Int64: [String]] { try access { $0.checkpointLabels } }

    // MARK: Lineage

    package func chain(model: Int64, full: Bool) async throws(GraftError) -> [LineageRow] { try access { $0.chain(model, full: full) } }

    package func lineage(model: Int64, parts: Registry.LineageParts, metric: String?, direction: Direction?) async throws(GraftError)
        -> LineageSnapshot
    {
        try access { state in
            let open = state.open
            let up = state.chain(model, full: parts != .descendants || !open.isEmpty)
            let down = parts == .ancestors ? [] : state.descendants(model)
            var best: [Int64: Double] = [:]
            if let metric, let direction {
                for id in (up + down).map(\.id) {
                    let values = state.checkpoints(of: id).flatMap { $0.metrics.filter { $0.key.name == metric }.map(\.value) }
                    if let value = direction == .max ? values.max() : values.min() { best[id] = value }
                }
            }
            return LineageSnapshot(up: up, down: down, open: open, checkpointLabels: state.checkpointLabels, best: best)
        }
    }

    package func affectedRows(model: Int64) async throws(GraftError) -> (
        open: [OpenAdvisory], chain: [LineageRow], descendants: [LineageRow]
    ) {
        try access { state in
            let open = state.open
            guard !open.isEmpty else { return ([], [], []) }
            let chain = state.chain(model, full: true)
            guard !AdvisoryInheritance.inherited(chain: chain, open: open).isEmpty || AdvisoryInheritance.anyWithin(open, model: model)
            else {
                return (open, chain, [])
            }
            return (open, chain, state.descendants(model))
        }
    }

    package func checkpointNumbers(models: [Int64]) async throws(GraftError) -> [Int64: [Int]] {
        try access { state in
            var result: [Int64: [Int]] = [:]
            for model in Set(models) {
                let numbers = state.checkpoints(of: model).map(\.number)
                if !numbers.isEmpty { result[model] = numbers }
            }
            return result
        }
    }

    package func modelOf(checkpoint: Int64) async throws(GraftError) -> Int64? { try access { $0.checkpoints[checkpoint]?.model } }

    package func exposureRows(models: [Int64], checkpoints: [Int64]) async throws(GraftError) -> ExposureRows {
        let newest = try access { state in
            var newest: [Int64: (id: Int64, number: Int)] = [:]
            for model in Set(models) { if let last = state.checkpoints(of: model).last { newest[model] = (last.id, last.number) } }
            return newest
        }
        var rows = ExposureRows(newest: newest)
        for id in Set(checkpoints).union(newest.values.map(\.id)) { rows.tensors[id] = try await tensors(checkpoint: id) }
        return rows
    }

    package func driftSums(_ pairs: [DriftPair]) async throws(GraftError) -> [DriftPair: DriftSums] {
        try access { state in pairs.reduce(into: [:]) { found, pair in found[pair] = state.drift[pair] } }
    }

    package func recordDriftSums(_ sums: [DriftPair: DriftSums]) async throws(GraftError) {
        try access { state in state.drift.merge(sums) { old, _ in old } }
    }

    // MARK: Browsing

    package func modelIndex() async throws(GraftError) -> [ModelIndexEntry] {
        try access { state in
            let flagged = state.flaggedModels(state.open, within: nil)
            return state.models.values.sorted { Self.bytewise($0.name, $1.name) }.map { model in
                ModelIndexEntry(
                    name: model.name, kind: model.kind, mode: model.mode, relation: model.relation,
                    parent: model.parentModel.map { "\(state.name(of: $0))@\(model.parentNumber ?? 0)" },
                    checkpoints: state.checkpoints(of: model.id).count,
                    description: model.provenance.description, createdAt: model.createdAt,
                    advisories: flagged[model.id].map { $0.sorted() } ?? [])
            }
        }
    }

    package func curvePoints(model: Int64) async throws(GraftError) -> [CurveSeries] {
        try access { state in
            (state.models[model]?.curves ?? [:]).sorted { Self.bytewise($0.key, $1.key) }.map { name, points in
                let steps = points.keys.sorted()
                return CurveSeries(name: name, steps: steps, values: steps.map { points[$0]! })
            }
        }
    }

    package func metricKeys(subtree: Int64, limit: Int, visibility: ModelVisibility) async throws(GraftError) -> [MetricKey] {
        try access { state in
            var keys = Set<MetricKey>()
            for model in state.subtree(subtree).prefix(limit) where visibility.shows(model.name) {
                for checkpoint in state.checkpoints(of: model.id) {
                    for slot in checkpoint.metrics.keys {
                        keys.insert(MetricKey(name: slot.name, split: slot.split.isEmpty ? nil : slot.split))
                    }
                }
            }
            return keys.sorted()
        }
    }

    // MARK: Best

    package func best(_ query: BestQuery) async throws(GraftError) -> BestOutcome? {
        try access { state -> BestOutcome? in
            var members: Set<Int64>? = nil
            var scopeModel: Int64? = nil
            switch query.scope {
            case .all: break
            case .model(let name), .under(let name):
                guard let id = state.byName[name.value] else { return nil }
                scopeModel = id
                if case .model = query.scope { members = [id] } else { members = Set(state.subtree(id).map(\.id)) }
            }
            let open = query.includeFlagged ? [] : state.open
            var flaggedModels: Set<Int64> = []
            if !open.isEmpty {
                switch query.scope {
                case .model:
                    if let id = scopeModel, !AdvisoryInheritance.inherited(chain: state.chain(id, full: true), open: open).isEmpty {
                        flaggedModels = [id]
                    }
                case .under: flaggedModels = Set(state.flaggedModels(open, within: scopeModel).keys)
                case .all: flaggedModels = Set(state.flaggedModels(open, within: nil).keys)
                }
            }
            let filter = CandidateFilter(
                flaggedModels: flaggedModels, flaggedCheckpoints: AdvisoryInheritance.flaggedCheckpoints(open), visibility: query.visibility
            )
            let slot = MetricSlot(name: query.metric, split: query.split ?? "")
            var candidates: [(candidate: RankedCandidate, standing: CandidateFilter.Standing)] = []
            for checkpoint in state.checkpoints.values where members?.contains(checkpoint.model) ?? true {
                guard let value = checkpoint.metrics[slot] else { continue }
                let standing = filter.standing(model: checkpoint.model, checkpoint: checkpoint.id, name: state.name(of: checkpoint.model))
                if standing != .hidden {
                    candidates.append((RankedCandidate(checkpoint: state.summary(checkpoint), value: value), standing))
                }
            }
            guard !candidates.isEmpty else {
                let known = Set(state.checkpoints.values.flatMap { $0.metrics.keys.map(\.name) }).sorted(by: Self.bytewise)
                return .noCandidates(known: Array(known.prefix(20)))
            }
            let chosen = BestSelection.choose(candidates.map(\.candidate), direction: query.direction) {
                candidates[$0].standing == .flagged
            }
            guard let winner = chosen.winner else { return .allFlagged(candidates: candidates.count) }
            return .found(winner, candidates: candidates.count, excluded: chosen.excluded)
        }
    }

    // MARK: Removal

    package func collectGarbage(blobs store: any BlobStore, grace: Double, dryRun: Bool) async throws(GraftError) -> GCReport {
        let candidates = store.inventory().blobs
        let temporaryItems = store.temporaryItems()
        return try access { state in
            var report = GCReport(
                dryRun: dryRun, blobsRemoved: 0, orphanFilesRemoved: 0, temporaryFilesRemoved: 0, bytesFreed: 0, keptForGrace: 0)
            // Twice at most: a delta's base (never itself a delta) is free once the delta is gone.
            for pass in 0..<2 {
                let used = state.blobReferences
                var removedDelta = false
                for (digest, blob) in state.blobs where !used.contains(digest) {
                    if blob.inline == nil, store.age(of: digest).map({ $0 >= grace }) == false {
                        if pass == 0 { report.keptForGrace += 1 }
                        continue
                    }
                    report.blobsRemoved += 1
                    report.bytesFreed += blob.encoding.storedLength ?? blob.length
                    if dryRun { continue }
                    state.blobs[digest] = nil
                    removedDelta = removedDelta || blob.encoding.base != nil
                    if blob.inline == nil { store.remove(digest) }
                }
                if dryRun || !removedDelta { break }
            }
            let known = state.blobs
            if !dryRun { state.drift = state.drift.filter { known[$0.key.ancestor] != nil && known[$0.key.descendant] != nil } }
            report.sweep(candidates: candidates, isKnown: { known[$0] != nil }, temporaryItems: temporaryItems, store: store, grace: grace)
            return report
        }
    }

    package func removeCheckpoint(_ checkpoint: ResolvedCheckpoint, blobs store: any BlobStore, dryRun: Bool) async throws(GraftError)
        -> RemovalReport?
    {
        try access { (state: inout State) throws(GraftError) -> RemovalReport? in
            guard let found = state.checkpoints[checkpoint.id] else { return nil }
            let reasons = state.protections(found)
            guard reasons.isEmpty else { throw .protected(checkpoint.summary.ref, reasons: reasons) }
            let freed = state.removeCheckpoints([found.id], store: store, dryRun: dryRun)
            return RemovalReport(dryRun: dryRun, checkpoints: [checkpoint.summary.ref], bytesFreed: freed)
        }
    }

    package func prune(model name: ModelName, policy: RetentionPolicy, split: String?, blobs store: any BlobStore, dryRun: Bool)
        async throws(GraftError)
        -> RemovalReport?
    {
        try access { (state: inout State) throws(GraftError) -> RemovalReport? in
            guard let id = state.byName[name.value] else { return nil }
            let checkpoints = state.checkpoints(of: id)
            var values: [Int64: Double] = [:]
            if policy.keepBest > 0, let metric = policy.metric {
                for checkpoint in checkpoints { values[checkpoint.id] = checkpoint.metrics[MetricSlot(name: metric, split: split ?? "")] }
                guard !values.isEmpty else {
                    throw .unknownMetric(metric, known: Set(checkpoints.flatMap { $0.metrics.keys.map(\.name) }).sorted(by: Self.bytewise))
                }
            }
            let candidates = checkpoints.map {
                RetentionPolicy.Candidate(number: $0.number, value: values[$0.id], protections: state.protections($0))
            }
            let plan = policy.plan(candidates, model: name)
            let remove = Set(plan.remove)
            let freed = state.removeCheckpoints(
                Set(checkpoints.filter { remove.contains($0.number) }.map(\.id)), store: store, dryRun: dryRun)
            return RemovalReport(dryRun: dryRun, checkpoints: plan.removed, kept: plan.kept, bytesFreed: freed)
        }
    }

    package func removeModel(_ name: ModelName, cascade: Bool, blobs store: any BlobStore, dryRun: Bool) async throws(GraftError)
        -> RemovalReport?
    {
        try access { (state: inout State) throws(GraftError) -> RemovalReport? in
            guard let root = state.byName[name.value] else { return nil }
            let subtree = try ModelRemoval.order(
                state.subtree(root).map { ModelRemoval.Member(id: $0.id, name: $0.name, depth: $0.lineage.count) }, root: root,
                name: name.value, cascade: cascade)
            let ids = Set(subtree.map(\.id))
            let checkpoints = state.checkpoints.values.filter { ids.contains($0.model) }.sorted { a, b in
                let (x, y) = (state.name(of: a.model), state.name(of: b.model))
                return x != y ? Self.bytewise(x, y) : a.number < b.number
            }
            let references = checkpoints.map { "\(state.name(of: $0.model))@\($0.number)" }
            let freed = state.removeCheckpoints(Set(checkpoints.map(\.id)), store: store, dryRun: dryRun)
            if !dryRun {
                for model in subtree {
                    state.models[model.id] = nil
                    state.byName[model.name] = nil
                }
                state.advisories = state.advisories.filter { !ids.contains($0.value.model) }
            }
            return RemovalReport(dryRun: dryRun, models: subtree.map(\.name), checkpoints: references, bytesFreed: freed)
        }
    }

    // MARK: Verification and totals

    package func checkpointCount() async throws(GraftError) -> Int { try access { $0.checkpoints.count } }

    package func referencedBlobs() async throws(GraftError) -> (blobs: [StoredBlob], dangling: [String]) {
        try access { state in
            let used = state.blobReferences
            let blobs = used.compactMap { digest in
                state.blobs[digest].map { StoredBlob(digest: digest, length: $0.length, inline: $0.inline) }
            }
            .sorted { $0.digest.hex < $1.digest.hex }
            return (blobs, used.filter { state.blobs[$0] == nil }.map(\.hex).sorted())
        }
    }

    package func knownBlobDigests() async throws(GraftError) -> Set<String> { try access { Set($0.blobs.keys.map(\.hex)) } }

    package func users(of digest: Digest) async throws(GraftError) -> [String] {
        try access { state in
            state.checkpoints.values.filter { $0.blobDigests.contains(digest) }
                .map { (state.name(of: $0.model), $0.number) }
                .sorted { a, b in a.0 != b.0 ? Self.bytewise(a.0, b.0) : a.1 < b.1 }
                .map { "\($0.0)@\($0.1)" }
        }
    }

    package func derivedDataProblems() async throws(GraftError) -> [String] {
        // The one derived value kept here: each model's line of descent, its parent's plus itself.
        try access { state in
            state.models.values.compactMap { model -> String? in
                let expected = (model.parentModel.flatMap { state.models[$0]?.lineage } ?? []) + [model.id]
                return model.lineage == expected ? nil : "\(model.name): lineage \(model.lineage), expected \(expected)"
            }.sorted(by: numericAwareLess)
        }
    }

    package func stats() async throws(GraftError) -> RegistryStats {
        try access { state in
            let logical = state.checkpoints.values.reduce(0) { $0 + $1.fileBytes }
            let physical =
                state.blobs.values.reduce(0) { $0 + ($1.encoding.storedLength ?? $1.length) }
                + state.checkpoints.values.reduce(0) { $0 + $1.header.count }
            var codecs: [BlobCodec: CodecUsage] = [:]
            for blob in state.blobs.values where blob.inline == nil {
                var usage = codecs[blob.encoding.codec] ?? CodecUsage(codec: blob.encoding.codec, blobs: 0, rawBytes: 0, storedBytes: 0)
                usage.blobs += 1
                usage.rawBytes += blob.length
                usage.storedBytes += blob.encoding.storedLength ?? blob.length
                codecs[blob.encoding.codec] = usage
            }
            let adapters = state.models.values.filter { $0.mode == .adapter }
            let adapterCheckpoints = adapters.flatMap { model in
                state.checkpoints(of: model.id).map {
                    ($0.fileBytes, model.parentCheckpoint.flatMap { state.checkpoints[$0] }?.fileBytes ?? 0)
                }
            }
            return RegistryStats(
                models: state.models.count, bases: state.models.values.filter { $0.kind == "base" }.count,
                checkpoints: state.checkpoints.count,
                tensors: state.checkpoints.values.reduce(0) { $0 + $1.tensors.count }, blobs: state.blobs.count,
                inlineBlobs: state.blobs.values.filter { $0.inline != nil }.count, logicalBytes: logical, physicalBytes: physical,
                dedupRatio: physical == 0 ? 1 : Double(logical) / Double(physical), databaseBytes: 0, adapterModels: adapters.count,
                adapterCheckpoints: adapterCheckpoints.count, adapterBytes: adapterCheckpoints.reduce(0) { $0 + $1.0 },
                adapterParentBytes: adapterCheckpoints.reduce(0) { $0 + $1.1 }, codecs: Array(codecs.values))
        }
    }

    // MARK: Stored encodings

    package func compactionInventory() async throws(GraftError) -> CompactionInventory {
        try access { state in
            var rows: [CompactionRow] = []
            for checkpoint in state.checkpoints.values.sorted(by: { $0.id < $1.id }) {
                let parent = state.models[checkpoint.model]?.parentCheckpoint
                func row(_ name: String, _ dtype: String?, _ digest: Digest) {
                    guard let blob = state.blobs[digest], blob.inline == nil else { return }
                    rows.append(
                        CompactionRow(
                            checkpoint: checkpoint.id, parentCheckpoint: parent, model: checkpoint.model, name: name, dtype: dtype,
                            digest: digest, length: blob.length))
                }
                for tensor in checkpoint.tensors { row(tensor.name, tensor.dtype.rawValue, tensor.digest) }
                for file in checkpoint.files {
                    if case .file(let digest, _, _) = file.content { row(file.path, nil, digest) }
                }
            }
            var encodings: [Digest: BlobEncoding] = [:]
            for (digest, blob) in state.blobs where blob.encoding != .raw { encodings[digest] = blob.encoding }
            return CompactionInventory(rows: rows, encodings: encodings)
        }
    }

    package func setEncoding(_ digest: Digest, _ encoding: BlobEncoding) async throws(GraftError) -> Bool {
        try access { state in
            guard state.blobs[digest] != nil, state.blobs[digest]?.inline == nil else { return false }
            state.blobs[digest]?.encoding = encoding
            return true
        }
    }
}
