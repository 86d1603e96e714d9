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

    var changed: Bool { !checkpoints.isEmpty || metrics + curvePoints + aliases + advisories > 0 }
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
}

extension Registry {
    /// Copies models with their whole history — checkpoints with their numbers, steps, epochs,
    /// creation times, tensors, files and signatures; metrics, curves, aliases, manifests,
    /// parent edges and advisories, open and resolved — to `destination`, parents before
    /// children, sending only the blobs the destination lacks.
    ///
    /// A model already at the destination with the same history so far is brought up to date
    /// (new checkpoints, metrics, curve points, aliases moved, advisories added or resolved);
    /// one with another history is refused whole, as are its descendants. Every step is one
    /// commit of the destination's (blobs stored and flushed before the checkpoint naming
    /// them), so a copy killed anywhere and run again completes with nothing duplicated.
    /// - Throws: ``GraftError/modelNotFound(_:suggestions:)`` for a model named that the source
    ///   lacks, ``GraftError/badRequest(_:)`` for a bad `--rename` or a copy onto itself — all
    ///   before anything is written; the errors of either registry.
    /// `open` gives the destination once the request is found sound (so that a bad one creates nothing).
    public func copy(
        to open: () async throws(GraftError) -> Registry, _ request: CopyRequest, progress: (@Sendable (CopyProgress) -> Void)? = nil
    ) async throws(GraftError) -> CopyResult {
        let graph = try await CopyGraph.read(self)
        for name in request.models where graph.summaries[name.value] == nil { throw try await notFound(name) }
        let order = graph.selection(request)
        for (old, new) in request.renames {
            guard order.contains(old) else {
                throw .badRequest("--rename \(old)=\(new): `\(old)` is not among the models copied")
            }
        }
        let targets = order.map { request.renames[$0]?.value ?? $0 }
        if let clash = Dictionary(grouping: targets, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw .badRequest("two models would be copied to `\(clash)`; choose other names with --rename")
        }
        let destination = try await open()
        if destination === self || destination.metadata.location == metadata.location {
            throw .badRequest("the destination is the source registry (\(metadata.location)); copy to another registry")
        }
        var copier = Copier(source: self, destination: destination, graph: graph, request: request, progress: progress)
        try await copier.plan(order)
        for name in order { try await copier.copyModel(name) }
        try await copier.copyAdvisories()
        let models = order.compactMap { copier.results[$0] }
        return CopyResult(
            dryRun: request.dryRun, models: models, checkpoints: models.reduce(0) { $0 + $1.checkpoints.count },
            blobs: models.reduce(0) { $0 + $1.blobs }, bytes: models.reduce(0) { $0 + $1.bytes },
            refused: models.filter { $0.action == "refused" }.count)
    }
}

/// The source's models and parent edges.
struct CopyGraph {
    var summaries: [String: ModelSummary] = [:]
    /// Student → its parent model and checkpoint number.
    var parents: [String: (model: String, number: Int)] = [:]
    var manifests: [String: ManifestSummary] = [:]

    static func read(_ registry: Registry) async throws(GraftError) -> CopyGraph {
        var graph = CopyGraph()
        for summary in try await registry.metadata.models() {
            graph.summaries[summary.name.value] = summary
            guard summary.kind != "base", case .some(.some(let manifest)) = try await registry.metadata.manifest(of: summary.name)
            else { continue }
            graph.manifests[summary.name.value] = manifest
            if let at = manifest.parent.lastIndex(of: "@"), let number = Int(manifest.parent[manifest.parent.index(after: at)...]) {
                graph.parents[summary.name.value] = (String(manifest.parent[..<at]), number)
            }
        }
        return graph
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
    func selection(_ request: CopyRequest) -> [String] {
        var chosen = Set<String>()
        if request.models.isEmpty {
            chosen = Set(summaries.keys)
        } else {
            chosen = Set(request.models.map(\.value))
            if request.withAncestors {
                for name in Array(chosen) {
                    var current = name
                    while let parent = parents[current]?.model {
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
    let source: Registry
    let destination: Registry
    let graph: CopyGraph
    let request: CopyRequest
    let progress: (@Sendable (CopyProgress) -> Void)?
    var results: [String: CopiedModel] = [:]
    /// Blobs sent (or, in a dry run, that would be) during this copy.
    var sent = Set<Digest>()
    var done = CopyProgress(checkpoints: 0, checkpointsTotal: 0, bytes: 0, bytesTotal: 0)

    init(source: Registry, destination: Registry, graph: CopyGraph, request: CopyRequest, progress: (@Sendable (CopyProgress) -> Void)?) {
        (self.source, self.destination, self.graph, self.request, self.progress) = (source, destination, graph, request, progress)
    }

    func target(_ name: String) -> String { request.renames[name]?.value ?? name }

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
        // What will be sent: the blobs of the checkpoints to copy that the destination lacks.
        var counted = Set<Digest>()
        for name in order {
            guard let result = results[name], result.action != "refused",
                let model = try await source.metadata.model(named: ModelName(name))
            else { continue }
            for checkpoint in model.checkpoints where result.checkpoints.contains(checkpoint.number) {
                guard let resolved = try await source.metadata.checkpoint(model: checkpoint.model, number: checkpoint.number) else {
                    continue
                }
                for blob in try await storedBlobs(of: resolved.id) where counted.insert(blob.digest).inserted {
                    if !destination.blobs.store.contains(blob.digest, claim: false) { done.bytesTotal += blob.length }
                }
                done.checkpointsTotal += 1
            }
        }
    }

    /// The checkpoint numbers to copy, and whether the model is new at the destination.
    /// - Throws: ``GraftError/historyDiffers(_:reason:)`` when the model cannot be copied.
    func check(_ name: String, planned: Set<String>) async throws(GraftError) -> (missing: [Int], created: Bool) {
        let to = target(name)
        let destinationName = try ModelName(to)
        guard let model = try await source.metadata.model(named: ModelName(name)) else {
            throw .historyDiffers(to, reason: "`\(name)` was removed from the source during the copy")
        }
        let numbers = model.checkpoints.map(\.number)
        if let parent = graph.parents[name] {
            if results[parent.model] != nil, !planned.contains(parent.model) {
                throw .historyDiffers(to, reason: "its parent `\(parent.model)` was refused")
            }
            if !planned.contains(parent.model) {
                let here = try await source.metadata.checkpoint(model: ModelName(parent.model), number: parent.number)
                let there = try await destination.metadata.checkpoint(model: ModelName(target(parent.model)), number: parent.number)
                guard let there, there.summary.digest == here?.summary.digest, there.summary.createdAt == here?.summary.createdAt else {
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
    func difference(_ name: String, _ model: StoredModel, _ existing: StoredModel) async throws(GraftError) -> String? {
        let (here, there) = (model.summary, existing.summary)
        if here.kind != there.kind { return "it is a \(there.kind) there, a \(here.kind) here" }
        if here.createdAt != there.createdAt { return "created at \(there.createdAt) there, \(here.createdAt) here" }
        if here.provenance != there.provenance { return "its provenance differs" }
        if let manifest = graph.manifests[name] {
            guard case .some(.some(let theirs)) = try await destination.metadata.manifest(of: existing.summary.name) else {
                return "it has no manifest there"
            }
            let parent = graph.parents[name].map { "\(target($0.model))@\($0.number)" } ?? manifest.parent
            if theirs.parent != parent { return "its parent is \(theirs.parent) there, \(parent) here" }
            if theirs.relation != manifest.relation || theirs.mode != manifest.mode { return "its relation or transfer mode differs" }
            // `new` entries gain their dtype and shape from the first checkpoint that has them.
            if theirs.entries.map(\.name) != manifest.entries.map(\.name) || theirs.entries.map(\.state) != manifest.entries.map(\.state) {
                return "its manifest differs"
            }
        }
        let ours = Dictionary(model.checkpoints.map { ($0.number, $0) }, uniquingKeysWith: { a, _ in a })
        for checkpoint in existing.checkpoints {
            guard let mine = ours[checkpoint.number] else {
                return "it has checkpoint \(checkpoint.number), which the source does not"
            }
            if mine.digest != checkpoint.digest || mine.createdAt != checkpoint.createdAt || mine.step != checkpoint.step
                || mine.epoch != checkpoint.epoch || mine.metadata != checkpoint.metadata
            {
                return "its checkpoint \(checkpoint.number) differs"
            }
        }
        return nil
    }

    /// The file-stored blobs of a checkpoint (tensors, then plain files), each once.
    func storedBlobs(of checkpoint: Int64) async throws(GraftError) -> [(digest: Digest, length: Int)] {
        let parts = try await source.metadata.parts(checkpoint: checkpoint)
        var seen = Set<Digest>()
        var blobs: [(digest: Digest, length: Int)] = []
        for tensor in parts.tensors where tensor.inline == nil && seen.insert(tensor.digest).inserted {
            blobs.append((tensor.digest, tensor.length))
        }
        for file in parts.files {
            if case .file(let digest, let length, let inline) = file.content, inline == nil, seen.insert(digest).inserted {
                blobs.append((digest, length))
            }
        }
        return blobs
    }

    mutating func copyModel(_ name: String) async throws(GraftError) {
        guard var result = results[name], result.action != "refused" else { return }
        let sourceName = try ModelName(name)
        let to = try ModelName(result.to)
        guard let model = try await source.metadata.model(named: sourceName) else { return }
        let copied = Set(result.checkpoints)
        result.checkpoints = []
        var first = true
        if result.action == "created", graph.parents[name] != nil, !request.dryRun {
            try await createStudent(name, model, as: to)
        }
        for checkpoint in model.checkpoints where copied.contains(checkpoint.number) {
            guard let resolved = try await source.metadata.checkpoint(model: sourceName, number: checkpoint.number) else {
                throw .checkpointNotFound(checkpoint.reference, available: "it was removed from the source during the copy")
            }
            let base = result.action == "created" && first && model.summary.kind == "base"
            try await copyCheckpoint(resolved, of: model, as: to, base: base, into: &result)
            first = false
        }
        try await syncMetrics(model, as: to, into: &result)
        try await syncAliases(sourceName, as: to, into: &result)
        if result.action == "unchanged", result.changed { result.action = "updated" }
        results[name] = result
    }

    func createStudent(_ name: String, _ model: StoredModel, as to: ModelName) async throws(GraftError) {
        guard let manifest = graph.manifests[name], let parent = graph.parents[name],
            let parentCheckpoint = try await destination.metadata.checkpoint(model: ModelName(target(parent.model)), number: parent.number)
        else { throw .historyDiffers(target(name), reason: "its parent left the destination during the copy") }
        try await destination.metadata.insertStudent(
            NewStudent(
                name: to, parent: parentCheckpoint, relation: manifest.relation, mode: manifest.mode, rules: nil,
                entries: manifest.entries, description: model.summary.provenance.description, createdAt: model.summary.createdAt))
    }

    /// Sends the blobs a checkpoint's destination lacks, then records it there under its number
    /// and time (with its signature) in one commit.
    mutating func copyCheckpoint(
        _ checkpoint: ResolvedCheckpoint, of model: StoredModel, as to: ModelName, base: Bool, into result: inout CopiedModel
    ) async throws(GraftError) {
        let parts = try await source.metadata.parts(checkpoint: checkpoint.id)
        let entries = try await source.metadata.tensors(checkpoint: checkpoint.id)
        guard entries.count == parts.tensors.count else { throw .busy }
        var tensors: [IngestedTensor] = []
        var offset = 0
        for (entry, part) in zip(entries, parts.tensors) {
            let info = TensorInfo(name: entry.name, dtype: entry.dtype, shape: entry.shape, dataOffsets: offset..<(offset + part.length))
            tensors.append(IngestedTensor(info: info, digest: part.digest, inline: part.inline, wroteFile: false))
            offset += part.length
        }
        var files: [CheckpointFile] = []
        var fileBlobs: [IngestedTensor] = []
        for file in parts.files {
            guard case .file(let digest, let length, let inline) = file.content else {
                files.append(file)
                continue
            }
            files.append(CheckpointFile(path: file.path, content: .file(digest: digest, length: length, inline: nil)))
            let info = TensorInfo(name: file.path, dtype: .u8, shape: [length], dataOffsets: 0..<length)
            fileBlobs.append(IngestedTensor(info: info, digest: digest, inline: inline, wroteFile: false))
        }
        let summary = checkpoint.summary
        guard Registry.checkpointDigest(header: parts.header, tensors: tensors, files: files) == summary.digest else {
            throw .damagedBlob(summary.digest, reason: "\(summary.ref)'s stored parts no longer make its digest")
        }
        for blob in tensors + fileBlobs where blob.inline == nil && !sent.contains(blob.digest) {
            if destination.blobs.store.contains(blob.digest, claim: !request.dryRun) { continue }
            sent.insert(blob.digest)
            if !request.dryRun { try await send(blob.digest, length: blob.info.byteCount) }
            (result.blobs, result.bytes) = (result.blobs + 1, result.bytes + blob.info.byteCount)
            done.bytes += blob.info.byteCount
        }
        var new = NewCheckpoint(
            headerBytes: parts.header, headerDigest: Digest.of(parts.header), digest: summary.digest, metadata: summary.metadata,
            dataLength: offset, fileBytes: summary.fileBytes, tensors: tensors, step: summary.step, epoch: summary.epoch)
        (new.files, new.fileBlobs) = (files, fileBlobs)
        new.signature = try await source.metadata.signature(checkpoint: checkpoint.id)
        new.copied = CopiedHistory(number: summary.number, createdAt: summary.createdAt, modelCreatedAt: model.summary.createdAt)
        if !request.dryRun {
            let store = destination.blobs.store
            let stillStored: @Sendable (Digest) -> Bool = { store.contains($0, claim: false) }
            if base {
                _ = try await destination.metadata.insertBase(
                    name: to, provenance: model.summary.provenance, checkpoint: new, stillStored: stillStored)
            } else {
                _ = try await destination.metadata.insertCheckpoint(
                    model: to, new, metrics: [], split: nil, newTensors: nil, stillStored: stillStored)
            }
        }
        result.checkpoints.append(summary.number)
        done.checkpoints += 1
        progress?(done)
    }

    /// Streams one blob from the source into the destination's store, checked against its
    /// digest as it is written and durable on return.
    func send(_ digest: Digest, length: Int) async throws(GraftError) {
        let (from, to) = (source.blobs, destination.blobs)
        try await offload { () throws(GraftError) in
            let upload = try BlobUpload(transfer: to, expected: digest, length: length)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: BlobTransfer.chunkSize, alignment: 64)
            defer { buffer.deallocate() }
            do throws(GraftError) {
                try from.stream(digest, length: length, buffer: buffer, verify: false) { chunk throws(GraftError) in
                    try upload.append(chunk)
                }
                _ = try upload.finish()
            } catch .blobMismatch {
                upload.abort()
                throw .damagedBlob(digest, reason: "its bytes in the source registry no longer match the digest")
            } catch {
                upload.abort()
                throw error
            }
        }
    }

    /// Writes the metric values and curve points the destination lacks or holds other values of.
    mutating func syncMetrics(_ model: StoredModel, as to: ModelName, into result: inout CopiedModel) async throws(GraftError) {
        let theirs = try await destination.metadata.model(named: to)
        let report = try await source.metadata.metricsReport(model: model.id, name: model.summary.name)
        let existing = try await theirs.asyncMap { (model) async throws(GraftError) in
            try await destination.metadata.metricsReport(model: model.id, name: to)
        }
        func number(_ ref: String) -> Int? { ref.lastIndex(of: "@").flatMap { Int(ref[ref.index(after: $0)...]) } }
        var held: [Int: [MetricValue]] = [:]
        for entry in existing?.checkpoints ?? [] { if let n = number(entry.checkpoint) { held[n] = entry.metrics } }
        for entry in report.checkpoints {
            guard let n = number(entry.checkpoint) else { continue }
            let missing = entry.metrics.filter { !(held[n] ?? []).contains($0) }
            guard !missing.isEmpty else { continue }
            result.metrics += missing.count
            guard !request.dryRun, let checkpoint = try await destination.metadata.checkpoint(model: to, number: n) else { continue }
            for (split, values) in Dictionary(grouping: missing, by: \.split) {
                let assignments = try values.map { (value) throws(GraftError) in try MetricAssignment(name: value.name, value: value.value)
                }
                try await destination.metadata.logMetrics(checkpoint: checkpoint.id, assignments, split: split)
            }
        }
        let curves = try await source.metadata.curvePoints(model: model.id)
        guard !curves.isEmpty else { return }
        var known: [String: [Int: Double]] = [:]
        if let theirs {
            for series in try await destination.metadata.curvePoints(model: theirs.id) {
                known[series.name] = Dictionary(zip(series.steps, series.values), uniquingKeysWith: { _, b in b })
            }
        }
        var batch = CurveBatch()
        for series in curves {
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
    mutating func syncAliases(_ name: ModelName, as to: ModelName, into result: inout CopiedModel) async throws(GraftError) {
        let ours = try await source.metadata.aliases(of: name)
        let theirs = request.dryRun && results[name.value]?.action == "created" ? [:] : try await destination.metadata.aliases(of: to)
        func number(_ ref: String) -> Int? { ref.lastIndex(of: "@").flatMap { Int(ref[ref.index(after: $0)...]) } }
        for (alias, ref) in ours.sorted(by: { $0.key < $1.key }) where theirs[alias].flatMap(number) != number(ref) {
            result.aliases += 1
            guard !request.dryRun, let n = number(ref), let checkpoint = try await destination.metadata.checkpoint(model: to, number: n)
            else { continue }
            _ = try await destination.metadata.tag(checkpoint: checkpoint.id, alias: alias)
        }
        for alias in theirs.keys.sorted() where ours[alias] == nil {
            result.aliases += 1
            guard !request.dryRun, let model = try await destination.metadata.modelID(named: to) else { continue }
            _ = try await destination.metadata.untag(model: model, alias: alias)
        }
    }

    /// Copies the advisories on copied models (with their ids and times) and resolves at the
    /// destination those the source has resolved since.
    mutating func copyAdvisories() async throws(GraftError) {
        let copied = results.filter { $0.value.action != "refused" }
        guard !copied.isEmpty else { return }
        let theirs = Dictionary(
            try await destination.metadata.advisories(includeResolved: true).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for advisory in try await source.metadata.advisories(includeResolved: true).reversed() {
            guard var result = copied[advisory.model] else { continue }
            let to = result.to
            let checkpoint = advisory.checkpoint.map { ref in to + ref[ref.lastIndex(of: "@")!...] }
            if let existing = theirs[advisory.id] {
                guard existing.model == to, existing.checkpoint == checkpoint, existing.createdAt == advisory.createdAt else {
                    throw .advisoryExists(advisory.id)
                }
                guard existing.resolvedAt == nil, let resolved = advisory.resolvedAt else { continue }
                if !request.dryRun { _ = try await destination.metadata.resolveAdvisory(advisory.id, at: resolved) }
            } else if !request.dryRun {
                let name = try ModelName(to)
                guard let model = try await destination.metadata.modelID(named: name) else { continue }
                let number = advisory.checkpoint.flatMap { ref in Int(ref[ref.index(after: ref.lastIndex(of: "@")!)...]) }
                let id = try await number.asyncMap { (n) async throws(GraftError) in
                    try await destination.metadata.checkpoint(model: name, number: n)?.id
                }
                try await destination.metadata.insertAdvisory(
                    NewAdvisory(
                        id: advisory.id, model: model, checkpoint: id ?? nil, severity: advisory.severity, note: advisory.note,
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
