import Foundation
import SafeTensors

/// What `graft copy` should copy.
public struct CopyRequest: Sendable {
    /// The models named; empty: every model.
    public var models: [ModelName]
    /// Also every ancestor of the models named (a student needs its parent at the destination).
    public var withAncestors: Bool
    /// Also every descendant of the models named.
    public var withDescendants: Bool
    /// Report what would be copied; write nothing.
    public var dryRun: Bool
    /// Source name → destination name.
    public var renames: [String: ModelName]

    public init(
        models: [ModelName] = [], withAncestors: Bool = false, withDescendants: Bool = false, dryRun: Bool = false,
        renames: [String: ModelName] = [:]
    ) {
        (self.models, self.withAncestors, self.withDescendants, self.dryRun, self.renames) = (
            models, withAncestors, withDescendants, dryRun, renames
        )
    }
}

/// What `graft copy` did (or, with `--dry-run`, would do) to one model.
public struct CopiedModel: Sendable, Codable, Equatable {
    /// Its name at the source, and at the destination.
    public var model: String
    public var to: String
    /// `created`, `updated`, `unchanged`, or `refused` (then `reason` says why; nothing of it was written).
    public var action: String
    /// The checkpoint numbers copied.
    public var checkpoints: [Int]
    /// Metric values, curve points, aliases and advisories written (new or changed).
    public var metrics: Int
    public var curvePoints: Int
    public var aliases: Int
    public var advisories: Int
    /// Blobs sent (the destination lacked them) and their bytes.
    public var blobs: Int
    public var bytes: Int
    public var reason: String?

    init(model: String, to: String) {
        (self.model, self.to, self.action, self.checkpoints) = (model, to, "unchanged", [])
        (metrics, curvePoints, aliases, advisories, blobs, bytes) = (0, 0, 0, 0, 0, 0)
    }

    package var changed: Bool { !checkpoints.isEmpty || metrics + curvePoints + aliases + advisories > 0 }
}

/// What `graft copy` did.
public struct CopyResult: Sendable, Codable, Equatable {
    public var dryRun: Bool
    /// Every model considered, parents before children.
    public var models: [CopiedModel]
    /// Totals over the models.
    public var checkpoints: Int
    public var blobs: Int
    public var bytes: Int
    public var refused: Int
}

/// How far a copy has gone, for progress lines.
public struct CopyProgress: Sendable {
    public var checkpoints: Int
    public var checkpointsTotal: Int
    public var bytes: Int
    public var bytesTotal: Int

    package init(checkpoints: Int, checkpointsTotal: Int, bytes: Int, bytesTotal: Int) {
        (self.checkpoints, self.checkpointsTotal, self.bytes, self.bytesTotal) = (checkpoints, checkpointsTotal, bytes, bytesTotal)
    }
}

/// One model's history as `graft copy` moves it: what a registry records of it, and the
/// contents of the checkpoints a copy asked for. Also the body of the server's copy routes.
public struct ModelHistory: Sendable, Codable, Equatable {
    public var model: ModelSummary
    /// A student's manifest and parent edge.
    public var manifest: ManifestSummary?
    /// Every checkpoint, oldest first.
    public var checkpoints: [CheckpointSummary]
    /// Metric values by checkpoint (`NAME@N`).
    public var metrics: [MetricsReport.Entry]
    public var curves: [CurveSeries]
    public var aliases: [String: String]
    /// The advisories on the model or its checkpoints, open and resolved.
    public var advisories: [Advisory]
    /// The contents of the checkpoints asked for (none in a summary).
    public var contents: [CopiedCheckpoint]

    package init(
        model: ModelSummary, manifest: ManifestSummary?, checkpoints: [CheckpointSummary], metrics: [MetricsReport.Entry],
        curves: [CurveSeries], aliases: [String: String], advisories: [Advisory], contents: [CopiedCheckpoint] = []
    ) {
        (self.model, self.manifest, self.checkpoints, self.metrics) = (model, manifest, checkpoints, metrics)
        (self.curves, self.aliases, self.advisories, self.contents) = (curves, aliases, advisories, contents)
    }
}

/// A checkpoint's contents as a copy carries them: its header, tensors and files as an upload
/// proposal (small tensors and files with their data; the rest named by digest, their blobs sent
/// apart), and its signature.
public struct CopiedCheckpoint: Sendable, Codable, Equatable {
    public var number: Int
    public var proposal: UploadProposal
    public var signature: CopiedSignature?

    package init(number: Int, proposal: UploadProposal, signature: CopiedSignature?) {
        (self.number, self.proposal, self.signature) = (number, proposal, signature)
    }
}

/// A checkpoint's signature as a copy carries it (``StoredSignature`` with its bundle in base64).
public struct CopiedSignature: Sendable, Codable, Equatable {
    public var bundle: String
    public var keyHint: String?
    public var rootDigest: Digest
    public var fileCount: Int
    public var signedAt: String
    public var verified: Bool
    public var origin: String

    package init(_ stored: StoredSignature) {
        (bundle, keyHint, rootDigest, fileCount) = (
            Data(stored.bundle).base64EncodedString(), stored.keyHint, stored.rootDigest, stored.fileCount
        )
        (signedAt, verified, origin) = (stored.signedAt, stored.verified, stored.origin)
    }

    package func stored() throws(GraftError) -> StoredSignature {
        guard let bytes = Data(base64Encoded: bundle), bytes.count <= 1 << 20, ["graft", "imported"].contains(origin) else {
            throw .invalidUpload("a copied signature is not a base64 bundle of at most 1 MiB from graft or imported")
        }
        return StoredSignature(
            bundle: Array(bytes), keyHint: keyHint, rootDigest: rootDigest, fileCount: fileCount, signedAt: signedAt, verified: verified,
            origin: origin)
    }
}

/// A model of a copy's source, with a student's manifest: what orders a copy.
public struct CopyGraphEntry: Sendable, Codable, Equatable {
    public var model: ModelSummary
    public var manifest: ManifestSummary?

    package init(model: ModelSummary, manifest: ManifestSummary?) {
        (self.model, self.manifest) = (model, manifest)
    }
}

/// Where a copy reads: a registry this process opens, a `graft serve` (`GraftRemote`), or the
/// histories a client sent to a server's copy route.
package protocol CopySource: Sendable {
    /// Every model (or those the source holds), with the students' manifests.
    func copyGraph() async throws(GraftError) -> [CopyGraphEntry]
    /// A model's history without contents; `nil` when it has none.
    func history(of name: ModelName) async throws(GraftError) -> ModelHistory?
    /// The contents of a model's checkpoints of these numbers (those the source has).
    func contents(of name: ModelName, numbers: [Int]) async throws(GraftError) -> [CopiedCheckpoint]
    /// Streams a stored blob into an upload (which checks it against its digest).
    func streamBlob(_ digest: Digest, length: Int, into upload: BlobUpload) async throws(GraftError)
}

extension Registry: CopySource {
    package func copyGraph() async throws(GraftError) -> [CopyGraphEntry] {
        var entries: [CopyGraphEntry] = []
        for summary in try await metadata.models() {
            var manifest: ManifestSummary? = nil
            if summary.kind != "base", case .some(.some(let found)) = try await metadata.manifest(of: summary.name) { manifest = found }
            entries.append(CopyGraphEntry(model: summary, manifest: manifest))
        }
        return entries
    }

    package func history(of name: ModelName) async throws(GraftError) -> ModelHistory? {
        guard let model = try await metadata.model(named: name) else { return nil }
        var manifest: ManifestSummary? = nil
        if model.summary.kind != "base", case .some(.some(let found)) = try await metadata.manifest(of: name) { manifest = found }
        return ModelHistory(
            model: model.summary, manifest: manifest, checkpoints: model.checkpoints,
            metrics: try await metadata.metricsReport(model: model.id, name: name).checkpoints,
            curves: try await metadata.curvePoints(model: model.id),
            aliases: try await metadata.aliases(of: name),
            advisories: try await metadata.advisories(includeResolved: true).filter { $0.model == name.value })
    }

    package func contents(of name: ModelName, numbers: [Int]) async throws(GraftError) -> [CopiedCheckpoint] {
        var contents: [CopiedCheckpoint] = []
        for number in numbers {
            guard let checkpoint = try await metadata.checkpoint(model: name, number: number) else { continue }
            let parts = try await metadata.parts(checkpoint: checkpoint.id)
            let entries = try await metadata.tensors(checkpoint: checkpoint.id)
            guard entries.count == parts.tensors.count else { throw .busy }
            func base64(_ bytes: [UInt8]?) -> String? { bytes.map { Data($0).base64EncodedString() } }
            let tensors = zip(entries, parts.tensors).map { entry, part in
                ProposedTensor(name: entry.name, digest: part.digest, length: part.length, data: base64(part.inline))
            }
            var proposal = UploadProposal(header: Data(parts.header).base64EncodedString(), tensors: tensors)
            if !parts.files.isEmpty {
                proposal.header = ""
                proposal.files = parts.files.map { file in
                    switch file.content {
                    case .shard(let header, _, _): ProposedFile(path: file.path, shardHeader: base64(header))
                    case .file(let digest, let length, let inline):
                        ProposedFile(path: file.path, digest: digest, length: length, data: base64(inline))
                    }
                }
            }
            let signature = try await metadata.signature(checkpoint: checkpoint.id).map(CopiedSignature.init)
            contents.append(CopiedCheckpoint(number: number, proposal: proposal, signature: signature))
        }
        return contents
    }

    package func streamBlob(_ digest: Digest, length: Int, into upload: BlobUpload) async throws(GraftError) {
        let transfer = blobs
        try await offload { () throws(GraftError) in
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: BlobTransfer.chunkSize, alignment: 64)
            defer { buffer.deallocate() }
            try transfer.stream(digest, length: length, buffer: buffer, verify: false) { chunk throws(GraftError) in
                try upload.append(chunk)
            }
        }
    }
}

/// The histories a client sent (a server's copy route): the contents they carry, and no blobs —
/// the client sent those first.
package struct SentHistories: CopySource {
    package var histories: [String: ModelHistory]

    package init(_ histories: [ModelHistory]) {
        self.histories = Dictionary(histories.map { ($0.model.name.value, $0) }, uniquingKeysWith: { a, _ in a })
    }

    package func copyGraph() -> [CopyGraphEntry] {
        histories.values.map { CopyGraphEntry(model: $0.model, manifest: $0.manifest) }
    }

    package func history(of name: ModelName) -> ModelHistory? {
        histories[name.value].map { history in
            var light = history
            light.contents = []
            return light
        }
    }

    package func contents(of name: ModelName, numbers: [Int]) -> [CopiedCheckpoint] {
        let wanted = Set(numbers)
        return (histories[name.value]?.contents ?? []).filter { wanted.contains($0.number) }
    }

    package func streamBlob(_ digest: Digest, length: Int, into upload: BlobUpload) throws(GraftError) {
        throw .blobsMissing([digest])
    }
}

extension Registry {
    /// Copies models with their whole history — checkpoints with their numbers, steps, epochs,
    /// creation times, tensors, files and signatures; metrics, curves, aliases, manifests,
    /// parent edges and advisories, open and resolved — to a destination, parents before
    /// children, sending only the blobs the destination lacks.
    ///
    /// A model already at the destination with the same history so far is brought up to date
    /// (new checkpoints, metrics, curve points, aliases moved, advisories added or resolved);
    /// one with another history is refused whole, as are its descendants. Every step is one
    /// commit of the destination's (blobs stored and flushed before the checkpoint naming
    /// them), so a copy killed anywhere and run again completes with nothing duplicated.
    /// `open` gives the destination once the request is found sound (so that a bad one creates nothing).
    /// - Throws: ``GraftError/modelNotFound(_:suggestions:)`` for a model named that the source
    ///   lacks, ``GraftError/badRequest(_:)`` for a bad `--rename` or a copy onto itself — all
    ///   before anything is written; the errors of either registry.
    public func copy(
        to open: () async throws(GraftError) -> Registry, _ request: CopyRequest, progress: (@Sendable (CopyProgress) -> Void)? = nil
    ) async throws(GraftError) -> CopyResult {
        try await Self.copy(from: self, to: open, request, progress: progress) { (destination) throws(GraftError) in
            if destination === self || destination.metadata.location == self.metadata.location {
                throw .badRequest("the destination is the source registry (\(self.metadata.location)); copy to another registry")
            }
        }
    }

    /// The models a request selects from a source, parents before children, checked (every model
    /// named exists, every `--rename` names one of them, no two land on one name).
    package static func copyOrder(_ graph: CopyGraph, _ request: CopyRequest) throws(GraftError) -> [String] {
        for name in request.models where graph.summaries[name.value] == nil {
            let target = name.value.lowercased()
            let close = graph.summaries.keys.map { ($0, editDistance($0.lowercased(), target)) }.filter { $0.1 <= max(2, target.count / 3) }
            throw .modelNotFound(name, suggestions: close.sorted { ($0.1, $0.0) < ($1.1, $1.0) }.prefix(3).map(\.0))
        }
        let order = graph.selection(request)
        for (old, new) in request.renames.sorted(by: { $0.key < $1.key }) where !order.contains(old) {
            throw .badRequest("--rename \(old)=\(new): `\(old)` is not among the models copied")
        }
        let targets = order.map { request.renames[$0]?.value ?? $0 }
        if let clash = Dictionary(grouping: targets, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw .badRequest("two models would be copied to `\(clash)`; choose other names with --rename")
        }
        return order
    }

    /// A copy from any source into a registry this process opens (see ``copy(to:_:progress:)``).
    package static func copy(
        from source: any CopySource, to open: () async throws(GraftError) -> Registry, _ request: CopyRequest,
        progress: (@Sendable (CopyProgress) -> Void)? = nil, check: (Registry) throws(GraftError) -> Void = { _ throws(GraftError) in }
    ) async throws(GraftError) -> CopyResult {
        let graph = CopyGraph(try await source.copyGraph())
        let order = try copyOrder(graph, request)
        let destination = try await open()
        try check(destination)
        var copier = Copier(source: source, destination: destination, graph: graph, request: request, progress: progress)
        try await copier.plan(order)
        for name in order { try await copier.copyModel(name) }
        try await copier.copyAdvisories(order)
        let models = order.compactMap { copier.results[$0] }
        return CopyResult(models: models, dryRun: request.dryRun)
    }
}

extension CopyResult {
    /// The totals over `models`.
    package init(models: [CopiedModel], dryRun: Bool) {
        self.init(
            dryRun: dryRun, models: models, checkpoints: models.reduce(0) { $0 + $1.checkpoints.count },
            blobs: models.reduce(0) { $0 + $1.blobs }, bytes: models.reduce(0) { $0 + $1.bytes },
            refused: models.filter { $0.action == "refused" }.count)
    }
}

/// The source's models and parent edges.
package struct CopyGraph: Sendable {
    package var summaries: [String: ModelSummary] = [:]
    /// Student → its parent model and checkpoint number.
    package var parents: [String: (model: String, number: Int)] = [:]

    package init(_ entries: [CopyGraphEntry]) {
        for entry in entries {
            summaries[entry.model.name.value] = entry.model
            if let (model, number) = entry.manifest.flatMap({ Self.split($0.parent) }) { parents[entry.model.name.value] = (model, number) }
        }
    }

    /// `NAME@N` as its name and number.
    static func split(_ ref: String) -> (String, Int)? {
        guard let at = ref.lastIndex(of: "@"), let number = Int(ref[ref.index(after: at)...]) else { return nil }
        return (String(ref[..<at]), number)
    }

    /// How many ancestors a model has.
    func depth(_ name: String) -> Int {
        var (depth, current) = (0, name)
        while let parent = parents[current]?.model, depth <= summaries.count {
            (depth, current) = (depth + 1, parent)
        }
        return depth
    }

    /// The models a request names, widened as it asks, parents before children.
    package func selection(_ request: CopyRequest) -> [String] {
        var chosen = Set<String>()
        if request.models.isEmpty {
            chosen = Set(summaries.keys)
        } else {
            chosen = Set(request.models.map(\.value))
            if request.withAncestors {
                for name in Array(chosen) {
                    var current = name
                    while let parent = parents[current]?.model, summaries[parent] != nil {
                        chosen.insert(parent)
                        current = parent
                    }
                }
            }
            if request.withDescendants {
                let named = chosen
                for name in summaries.keys where !chosen.contains(name) {
                    var current = name
                    while let parent = parents[current]?.model {
                        if named.contains(parent) {
                            chosen.insert(name)
                            break
                        }
                        current = parent
                    }
                }
            }
        }
        return chosen.map { ($0, depth($0)) }.sorted { ($0.1, $0.0) < ($1.1, $1.0) }.map(\.0)
    }
}

/// One copy's state: what was planned, refused and done.
private struct Copier {
    let source: any CopySource
    let destination: Registry
    let graph: CopyGraph
    let request: CopyRequest
    let progress: (@Sendable (CopyProgress) -> Void)?
    var results: [String: CopiedModel] = [:]
    /// The source's histories read by the plan, by name.
    var histories: [String: ModelHistory] = [:]
    /// Blobs sent (or, in a dry run, that would be) during this copy.
    var sent = Set<Digest>()
    var done = CopyProgress(checkpoints: 0, checkpointsTotal: 0, bytes: 0, bytesTotal: 0)

    init(
        source: any CopySource, destination: Registry, graph: CopyGraph, request: CopyRequest, progress: (@Sendable (CopyProgress) -> Void)?
    ) {
        (self.source, self.destination, self.graph, self.request, self.progress) = (source, destination, graph, request, progress)
    }

    func target(_ name: String) -> String { request.renames[name]?.value ?? name }

    /// A source history, read once.
    mutating func history(_ name: String) async throws(GraftError) -> ModelHistory? {
        if let known = histories[name] { return known }
        let read = try await source.history(of: ModelName(name))
        // What a server sent is checked as what a client sends is.
        try read?.check()
        histories[name] = read
        return read
    }

    /// Decides for every model, parents first, whether it can be copied (refusing it and its
    /// descendants when not), and counts what will be sent, before anything is written.
    mutating func plan(_ order: [String]) async throws(GraftError) {
        var planned = Set<String>()
        for name in order {
            var result = CopiedModel(model: name, to: target(name))
            do throws(GraftError) {
                let numbers = try await check(name, planned: planned)
                result.action = numbers.created ? "created" : "unchanged"
                result.checkpoints = numbers.missing
                planned.insert(name)
            } catch .historyDiffers(_, let reason) {
                (result.action, result.reason) = ("refused", reason)
            }
            results[name] = result
        }
        done.checkpointsTotal = results.values.reduce(0) { $0 + $1.checkpoints.count }
    }

    /// The checkpoint numbers to copy, and whether the model is new at the destination.
    /// - Throws: ``GraftError/historyDiffers(_:reason:)`` when the model cannot be copied.
    mutating func check(_ name: String, planned: Set<String>) async throws(GraftError) -> (missing: [Int], created: Bool) {
        let to = target(name)
        let destinationName = try ModelName(to)
        guard let model = try await history(name) else {
            throw .historyDiffers(to, reason: "`\(name)` was removed from the source during the copy")
        }
        let numbers = model.checkpoints.map(\.number)
        if let parent = graph.parents[name] {
            if results[parent.model] != nil, !planned.contains(parent.model) {
                throw .historyDiffers(to, reason: "its parent `\(parent.model)` was refused")
            }
            if !planned.contains(parent.model) {
                let here = try await history(parent.model)?.checkpoints.first { $0.number == parent.number }
                let there = try await destination.metadata.checkpoint(model: ModelName(target(parent.model)), number: parent.number)
                guard let there, let here, there.summary.digest == here.digest, there.summary.createdAt == here.createdAt else {
                    throw .historyDiffers(
                        to, reason: "its parent \(target(parent.model))@\(parent.number) is not at the destination; add --with-ancestors")
                }
            }
        }
        guard let existing = try await destination.metadata.model(named: destinationName) else { return (numbers, true) }
        if let reason = try await difference(name, model, existing) { throw .historyDiffers(to, reason: reason) }
        let present = Set(existing.checkpoints.map(\.number))
        let newest = existing.checkpoints.map(\.number).max() ?? 0
        let missing = numbers.filter { !present.contains($0) }
        if let gap = missing.first(where: { $0 < newest }) {
            throw .historyDiffers(to, reason: "checkpoint \(gap) is not there, and \(to)@\(newest) is")
        }
        return (missing, false)
    }

    /// Why a model at the destination is not (an earlier state of) the source's; `nil` when it is.
    func difference(_ name: String, _ model: ModelHistory, _ existing: StoredModel) async throws(GraftError) -> String? {
        let (here, there) = (model.model, existing.summary)
        if here.kind != there.kind { return "it is a \(there.kind) there, a \(here.kind) here" }
        if here.createdAt != there.createdAt { return "created at \(there.createdAt) there, \(here.createdAt) here" }
        if here.provenance != there.provenance { return "its provenance differs" }
        if let manifest = model.manifest {
            guard case .some(.some(let theirs)) = try await destination.metadata.manifest(of: existing.summary.name) else {
                return "it has no manifest there"
            }
            let parent = graph.parents[name].map { "\(target($0.model))@\($0.number)" } ?? manifest.parent
            if theirs.parent != parent { return "its parent is \(theirs.parent) there, \(parent) here" }
            if theirs.relation != manifest.relation || theirs.mode != manifest.mode { return "its relation or transfer mode differs" }
            if theirs.entries.map(\.name) != manifest.entries.map(\.name) || theirs.entries.map(\.state) != manifest.entries.map(\.state) {
                return "its manifest differs"
            }
        }
        let ours = Dictionary(model.checkpoints.map { ($0.number, $0) }, uniquingKeysWith: { a, _ in a })
        for checkpoint in existing.checkpoints {
            guard let mine = ours[checkpoint.number] else {
                return "it has checkpoint \(checkpoint.number), which the source does not (removed there since?)"
            }
            if mine.digest != checkpoint.digest || mine.createdAt != checkpoint.createdAt || mine.step != checkpoint.step
                || mine.epoch != checkpoint.epoch || mine.metadata != checkpoint.metadata
            {
                return "its checkpoint \(checkpoint.number) differs"
            }
        }
        return nil
    }

    mutating func copyModel(_ name: String) async throws(GraftError) {
        guard var result = results[name], result.action != "refused", let model = try await history(name) else { return }
        let to = try ModelName(result.to)
        let wanted = result.checkpoints
        result.checkpoints = []
        let summaries = Dictionary(model.checkpoints.map { ($0.number, $0) }, uniquingKeysWith: { a, _ in a })
        // A batch at a time, so that a source far away is asked once per batch, not per checkpoint.
        var first = true
        for start in stride(from: 0, to: max(wanted.count, 1), by: 16) {
            let batch = Array(wanted[start..<min(start + 16, wanted.count)])
            let contents = try await source.contents(of: ModelName(name), numbers: batch).sorted { $0.number < $1.number }
                .compactMap { content in summaries[content.number].map { (content, $0) } }
            let prepared = try contents.map { (content, summary) throws(GraftError) in try Prepared(content, summary) }
            // A new student is recorded once its first batch is found sound: bad contents leave nothing of it.
            if start == 0, result.action == "created", let manifest = model.manifest, !request.dryRun {
                try await createStudent(name, model, manifest, as: to)
            }
            for (checkpoint, (content, summary)) in zip(prepared, contents) {
                let base = result.action == "created" && first && model.model.kind == "base"
                try await copyCheckpoint(checkpoint, content, summary, of: model, as: to, base: base, into: &result)
                first = false
            }
        }
        // A dry run of histories sent without contents (a server planning a client's copy) still names what it would copy.
        if request.dryRun { result.checkpoints = wanted }
        try await syncMetrics(model, as: to, into: &result)
        try await syncAliases(model, as: to, into: &result)
        if result.action == "unchanged", result.changed { result.action = "updated" }
        results[name] = result
    }

    func createStudent(_ name: String, _ model: ModelHistory, _ manifest: ManifestSummary, as to: ModelName) async throws(GraftError) {
        guard let parent = graph.parents[name],
            let parentCheckpoint = try await destination.metadata.checkpoint(model: ModelName(target(parent.model)), number: parent.number)
        else { throw .historyDiffers(target(name), reason: "its parent left the destination during the copy") }
        try await destination.metadata.insertStudent(
            NewStudent(
                name: to, parent: parentCheckpoint, relation: manifest.relation, mode: manifest.mode, rules: nil,
                entries: manifest.entries, description: model.model.provenance.description, createdAt: model.model.createdAt))
    }

    /// Checks a checkpoint's contents (header, tensors and files agree, small ones' data hash to
    /// their digests, the whole to the recorded digest; a student's manifest holds), sends the
    /// blobs the destination lacks, then records it there under its number and time (with its
    /// signature) in one commit.
    /// A checkpoint's contents checked (header, tensors and files agree, small ones' data hash
    /// to their digests, the whole to the recorded digest) and ready to commit.
    struct Prepared {
        let checked: CheckedProposal
        let tensors: [IngestedTensor]
        let fileBlobs: [IngestedTensor]

        init(_ content: CopiedCheckpoint, _ summary: CheckpointSummary) throws(GraftError) {
            let checked = try CheckedProposal(content.proposal)
            let tensors = checked.header.tensors.enumerated().map { index, info in
                IngestedTensor(info: info, digest: checked.digests[index], inline: checked.data[index], wroteFile: false)
            }
            let fileBlobs = checked.fileBlobs.map { file in
                IngestedTensor(
                    info: TensorInfo(name: file.path, dtype: .u8, shape: [file.length], dataOffsets: 0..<file.length), digest: file.digest,
                    inline: file.data, wroteFile: false)
            }
            guard Registry.checkpointDigest(header: checked.headerBytes, tensors: tensors, files: checked.layout) == summary.digest else {
                throw .invalidUpload("\(summary.ref)'s contents do not make its recorded digest \(summary.digest.short)…")
            }
            (self.checked, self.tensors, self.fileBlobs) = (checked, tensors, fileBlobs)
        }
    }

    mutating func copyCheckpoint(
        _ prepared: Prepared, _ content: CopiedCheckpoint, _ summary: CheckpointSummary, of model: ModelHistory, as to: ModelName,
        base: Bool, into result: inout CopiedModel
    ) async throws(GraftError) {
        let (checked, tensors, fileBlobs) = (prepared.checked, prepared.tensors, prepared.fileBlobs)
        for blob in tensors + fileBlobs where blob.inline == nil && !sent.contains(blob.digest) {
            if destination.blobs.store.contains(blob.digest, claim: !request.dryRun) { continue }
            sent.insert(blob.digest)
            if !request.dryRun { try await send(blob.digest, length: blob.info.byteCount) }
            (result.blobs, result.bytes) = (result.blobs + 1, result.bytes + blob.info.byteCount)
            done.bytes += blob.info.byteCount
        }
        var new = NewCheckpoint(
            headerBytes: checked.headerBytes, headerDigest: Digest.of(checked.headerBytes), digest: summary.digest,
            metadata: checked.header.metadataDictionary, dataLength: checked.header.dataLength, fileBytes: summary.fileBytes,
            tensors: tensors, step: summary.step, epoch: summary.epoch)
        (new.files, new.fileBlobs) = (checked.layout, fileBlobs)
        new.signature = try content.signature?.stored()
        new.copied = CopiedHistory(number: summary.number, createdAt: summary.createdAt, modelCreatedAt: model.model.createdAt)
        if !request.dryRun {
            // A student's manifest holds for the copy as it did at the source (checked once its blobs are here).
            if !base { _ = try await destination.check(content.proposal, to: to, base: false, parsed: checked) }
            let store = destination.blobs.store
            let stillStored: @Sendable (Digest) -> Bool = { store.contains($0, claim: false) }
            if base {
                _ = try await destination.metadata.insertBase(
                    name: to, provenance: model.model.provenance, checkpoint: new, stillStored: stillStored)
            } else {
                // Its metric values in the same commit when they share one split (the usual case); else synced after.
                let values = model.metrics.first { CopyGraph.split($0.checkpoint)?.1 == summary.number }?.metrics ?? []
                let split = Set(values.map(\.split)).count == 1 ? values.first?.split : nil
                let metrics =
                    values.isEmpty || values.contains(where: { $0.split != split })
                    ? [] : try values.map { (value) throws(GraftError) in try MetricAssignment(name: value.name, value: value.value) }
                _ = try await destination.metadata.insertCheckpoint(
                    model: to, new, metrics: metrics, split: split, newTensors: nil, stillStored: stillStored)
                result.metrics += metrics.count
            }
        }
        result.checkpoints.append(summary.number)
        done.checkpoints += 1
        progress?(done)
    }

    /// Streams one blob from the source into the destination's store, checked against its
    /// digest as it is written and durable on return.
    func send(_ digest: Digest, length: Int) async throws(GraftError) {
        // Two registries on one disk share the blob's file (a hard link), its bytes still checked.
        // Only a raw blob: an encoding (`graft compact`) is the source's storage choice, and a
        // delta's base need not be at the destination; those travel decoded and stay raw there.
        if let local = source as? Registry, case .raw? = try? local.blobs.form(digest, length: length),
            try destination.blobs.store.adopt(digest, from: local.blobs.store)
        {
            let (destinationBlobs, transfer) = (destination.blobs, local.blobs)
            let linked = try await offload { () throws(GraftError) -> Bool in
                let store = destinationBlobs.store
                // Re-encoded at the source between the look and the link: send it decoded instead.
                guard case .raw = try destinationBlobs.form(digest, length: length) else {
                    store.remove(digest)
                    return false
                }
                let buffer = UnsafeMutableRawPointer.allocate(byteCount: BlobTransfer.chunkSize, alignment: 64)
                defer { buffer.deallocate() }
                if let problem = transfer.check(digest, length: length, inline: nil, readData: true, buffer: buffer) {
                    store.remove(digest)
                    throw .damagedBlob(digest, reason: "in the source registry: \(problem.detail)")
                }
                try store.flush([digest])
                return true
            }
            if linked { return }
        }
        let upload = try BlobUpload(transfer: destination.blobs, expected: digest, length: length)
        do throws(GraftError) {
            try await source.streamBlob(digest, length: length, into: upload)
            _ = try await offload { () throws(GraftError) in try upload.finish() }
        } catch .blobMismatch {
            upload.abort()
            throw .damagedBlob(digest, reason: "its bytes in the source registry no longer match the digest")
        } catch {
            upload.abort()
            throw error
        }
    }

    /// Writes the metric values and curve points the destination lacks or holds other values of.
    mutating func syncMetrics(_ model: ModelHistory, as to: ModelName, into result: inout CopiedModel) async throws(GraftError) {
        let theirs = try await destination.metadata.model(named: to)
        let existing = try await theirs.asyncMap { (model) async throws(GraftError) in
            try await destination.metadata.metricsReport(model: model.id, name: to)
        }
        var held: [Int: [MetricValue]] = [:]
        for entry in existing?.checkpoints ?? [] { if let (_, n) = CopyGraph.split(entry.checkpoint) { held[n] = entry.metrics } }
        for entry in model.metrics {
            guard let (_, n) = CopyGraph.split(entry.checkpoint) else { continue }
            let missing = entry.metrics.filter { !(held[n] ?? []).contains($0) }
            guard !missing.isEmpty else { continue }
            if request.dryRun {
                result.metrics += missing.count
                continue
            }
            // A checkpoint not copied yet (a later batch brings it) gets its metrics then.
            guard let checkpoint = try await destination.metadata.checkpoint(model: to, number: n) else { continue }
            result.metrics += missing.count
            for (split, values) in Dictionary(grouping: missing, by: \.split) {
                let assignments = try values.map { (value) throws(GraftError) in try MetricAssignment(name: value.name, value: value.value)
                }
                try await destination.metadata.logMetrics(checkpoint: checkpoint.id, assignments, split: split)
            }
        }
        guard !model.curves.isEmpty else { return }
        var known: [String: [Int: Double]] = [:]
        if let theirs {
            for series in try await destination.metadata.curvePoints(model: theirs.id) {
                known[series.name] = Dictionary(zip(series.steps, series.values), uniquingKeysWith: { _, b in b })
            }
        }
        var batch = CurveBatch()
        for series in model.curves {
            for (step, value) in zip(series.steps, series.values) where known[series.name]?[step] != value {
                batch.append(name: series.name, step: step, value: value)
            }
        }
        result.curvePoints += batch.count
        if !request.dryRun, batch.count > 0, let theirs = try await destination.metadata.model(named: to) {
            try await destination.metadata.insertCurvePoints(model: theirs.id, batch)
        }
    }

    /// Points the destination's aliases where the source's point; removes the ones the source no longer has.
    mutating func syncAliases(_ model: ModelHistory, as to: ModelName, into result: inout CopiedModel) async throws(GraftError) {
        let ours = model.aliases
        let theirs = request.dryRun && result.action == "created" ? [:] : try await destination.metadata.aliases(of: to)
        func number(_ ref: String) -> Int? { CopyGraph.split(ref)?.1 }
        for (alias, ref) in ours.sorted(by: { $0.key < $1.key }) where theirs[alias].flatMap(number) != number(ref) {
            if request.dryRun {
                result.aliases += 1
                continue
            }
            guard let n = number(ref), let checkpoint = try await destination.metadata.checkpoint(model: to, number: n) else { continue }
            _ = try await destination.metadata.tag(checkpoint: checkpoint.id, alias: alias)
            result.aliases += 1
        }
        for alias in theirs.keys.sorted() where ours[alias] == nil {
            result.aliases += 1
            guard !request.dryRun, let model = try await destination.metadata.modelID(named: to) else { continue }
            _ = try await destination.metadata.untag(model: model, alias: alias)
        }
    }

    /// Copies the advisories on copied models (with their ids and times) and resolves at the
    /// destination those the source has resolved since.
    mutating func copyAdvisories(_ order: [String]) async throws(GraftError) {
        let copied = order.filter { results[$0]?.action != "refused" }
        guard !copied.isEmpty else { return }
        let theirs = Dictionary(
            try await destination.metadata.advisories(includeResolved: true).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let advisories = copied.flatMap { histories[$0]?.advisories ?? [] }.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
        for advisory in advisories {
            guard var result = results[advisory.model] else { continue }
            let to = try ModelName(result.to)
            let number = advisory.checkpoint.flatMap { CopyGraph.split($0)?.1 }
            if let existing = theirs[advisory.id] {
                guard existing.model == to.value, existing.checkpoint == number.map({ "\(to)@\($0)" }),
                    existing.createdAt == advisory.createdAt
                else { throw .advisoryExists(advisory.id) }
                guard existing.resolvedAt == nil, let resolved = advisory.resolvedAt else { continue }
                if !request.dryRun { _ = try await destination.metadata.resolveAdvisory(advisory.id, at: resolved) }
            } else if !request.dryRun {
                guard let model = try await destination.metadata.modelID(named: to) else { continue }
                var checkpoint: Int64? = nil
                if let number {
                    guard let found = try await destination.metadata.checkpoint(model: to, number: number) else { continue }
                    checkpoint = found.id
                }
                try await destination.metadata.insertAdvisory(
                    NewAdvisory(
                        id: advisory.id, model: model, checkpoint: checkpoint, severity: advisory.severity, note: advisory.note,
                        url: advisory.url, createdAt: advisory.createdAt))
                if let resolved = advisory.resolvedAt { _ = try await destination.metadata.resolveAdvisory(advisory.id, at: resolved) }
            }
            result.advisories += 1
            if result.action == "unchanged" { result.action = "updated" }
            results[advisory.model] = result
        }
    }
}

extension Optional {
    fileprivate func asyncMap<T>(_ body: (Wrapped) async throws(GraftError) -> T) async throws(GraftError) -> T? {
        guard let value = self else { return nil }
        return try await body(value)
    }
}

/// The body of `POST /v1/copy`: models to copy into the server's registry (`models`, parents
/// first), with their histories and the contents of the checkpoints this batch brings; other
/// histories given are context (the parents a student's edge names). Blobs go first, by
/// `POST /v1/copy/blobs` and `PUT /v1/blobs/DIGEST`.
public struct CopyBatch: Sendable, Codable, Equatable {
    public var models: [String]
    public var histories: [ModelHistory]
    /// Source name → name at the server.
    public var renames: [String: String]
    public var dryRun: Bool

    public init(models: [String], histories: [ModelHistory], renames: [String: String], dryRun: Bool) {
        (self.models, self.histories, self.renames, self.dryRun) = (models, histories, renames, dryRun)
    }
}

extension Registry {
    /// Copies a batch a client sent (`POST /v1/copy`) into this registry: the same checks and
    /// commits as ``copy(to:_:progress:)`` (every history read is checked, ``ModelHistory/check()``,
    /// before anything is written), reading the histories the batch carries; a blob the batch
    /// names that this registry lacks is ``GraftError/blobsMissing(_:)``.
    public func receiveCopy(_ batch: CopyBatch) async throws(GraftError) -> CopyResult {
        let models = try batch.models.map { (name) throws(GraftError) in try ModelName(name) }
        var renames: [String: ModelName] = [:]
        for (old, new) in batch.renames { renames[old] = try ModelName(new) }
        let request = CopyRequest(models: models, dryRun: batch.dryRun, renames: renames)
        return try await Self.copy(from: SentHistories(batch.histories), to: { () throws(GraftError) in self }, request)
    }

    /// Of these blobs, the ones this registry's store lacks (`POST /v1/copy/blobs`), announced
    /// for upload for `window`.
    /// With `announce` false (a dry run), only answers.
    public func missingBlobs(_ blobs: [ProposedTensor], window: Duration, announce: Bool = true) async throws(GraftError)
        -> [ProposedTensor]
    {
        var seen = Set<Digest>()
        let missing = blobs.filter {
            seen.insert($0.digest).inserted && $0.length >= 0 && !self.blobs.store.contains($0.digest, claim: announce)
        }
        if announce, !missing.isEmpty { try await metadata.announceUploads(missing, window: window) }
        return missing
    }
}

extension ModelHistory {
    /// Checks what a client sent as it would be checked typed at the CLI: names, free text,
    /// times as the registry writes them, finite metric values, numbers in order. (Checkpoint
    /// contents are checked as upload proposals when they are committed.)
    /// - Throws: ``GraftError/invalidUpload(_:)`` and the name and text errors.
    package func check() throws(GraftError) {
        let name = model.name.value
        func time(_ text: String?, _ what: String) throws(GraftError) {
            guard let text else { return }
            guard text.utf8.count <= 30, text.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z/) != nil else {
                throw .invalidUpload(
                    "\(name): \(what) \(text.debugDescription) is not a time as a registry writes one (2026-12-07T10:21:22.123Z)")
            }
        }
        guard ["base", "student"].contains(model.kind), (model.kind == "student") == (manifest != nil) else {
            throw .invalidUpload("\(name): a base has no manifest, a student has one")
        }
        try model.provenance.check()
        try time(model.createdAt, "its creation time")
        if let manifest {
            guard CopyGraph.split(manifest.parent) != nil else {
                throw .invalidUpload("\(name): its parent \(manifest.parent) is not NAME@N")
            }
            _ = try ModelName(CopyGraph.split(manifest.parent)!.0)
            for entry in manifest.entries { try FreeText.check(entry.name, what: "a tensor name") }
        }
        var previous = 0
        for checkpoint in checkpoints {
            guard checkpoint.model == model.name, checkpoint.number > previous else {
                throw .invalidUpload("\(name): its checkpoints are not its own in increasing number")
            }
            previous = checkpoint.number
            try time(checkpoint.createdAt, "the creation time of checkpoint \(checkpoint.number)")
        }
        for entry in metrics {
            for value in entry.metrics {
                _ = try MetricAssignment(name: value.name, value: value.value)
                if let split = value.split { try MetricAssignment.checkName(split) }
            }
        }
        for series in curves {
            try MetricAssignment.checkName(series.name)
            guard series.steps.count == series.values.count, series.values.allSatisfy(\.isFinite), series.steps.allSatisfy({ $0 >= 0 })
            else {
                throw .invalidUpload("\(name): curve \(series.name) needs a finite value for each step (0 or more)")
            }
        }
        for (alias, ref) in aliases {
            try Registry.checkAlias(alias)
            guard CopyGraph.split(ref)?.0 == name else { throw .invalidUpload("\(name): alias \(alias) points at \(ref)") }
        }
        for advisory in advisories {
            try ModelName.check(advisory.id, what: "advisory id")
            try FreeText.check(advisory.note, what: "advisory note")
            try FreeText.check(advisory.url, what: "advisory url")
            try time(advisory.createdAt, "the time of advisory \(advisory.id)")
            try time(advisory.resolvedAt, "the resolution time of advisory \(advisory.id)")
            guard advisory.model == name, advisory.checkpoint.map({ CopyGraph.split($0)?.0 == name }) ?? true else {
                throw .invalidUpload("\(name): advisory \(advisory.id) is on another model")
            }
        }
        for content in contents {
            try time(content.signature?.signedAt, "the signing time of checkpoint \(content.number)")
            _ = try content.signature?.stored()
        }
    }
}
