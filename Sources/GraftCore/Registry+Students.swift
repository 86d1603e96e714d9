import Foundation
public import SafeTensors

/// A student's manifest with its lineage edge, as `show` and the API return it.
public struct ManifestSummary: Sendable, Codable, Equatable {
    /// The parent checkpoint, `NAME@N`.
    public var parent: String
    public var relation: Relation
    public var mode: TransferMode
    public var entries: [ManifestEntry]

    /// Tensors and parameters per state.
    public func count(_ state: TensorState) -> (tensors: Int, parameters: Int) {
        let matching = entries.filter { $0.state == state }
        return (matching.count, matching.reduce(0) { $0 + $1.parameters })
    }

    package init(parent: String, relation: Relation, mode: TransferMode, entries: [ManifestEntry]) {
        self.parent = parent
        self.relation = relation
        self.mode = mode
        self.entries = entries
    }
}

/// What `createStudent` made.
public struct StudentResult: Sendable, Codable, Equatable {
    public var model: ModelName
    public var manifest: ManifestSummary
}

extension Registry {
    /// Creates a student of the parent checkpoint `parent` (a base's or another student's).
    ///
    /// The manifest is resolved against the parent's tensors and stored per tensor; it is
    /// enforced on every checkpoint the student commits.
    ///
    /// ```swift
    /// try await registry.createStudent(
    ///     name: try ModelName("cnn-fe"), from: try Reference(parsing: "cnn@1"),
    ///     manifest: .rules([ManifestRule(.freeze, "features")], freezeThrough: nil))
    /// ```
    /// - Throws: ``GraftError/modelExists(_:)``, ``GraftError/patternMatchesNothing(_:)``,
    ///   ``GraftError/invalidManifest(_:)``, and the errors of resolving `parent`.
    public func createStudent(
        name: ModelName, from parent: Reference, relation: Relation = .finetune, manifest declaration: ManifestDeclaration,
        description: String? = nil
    ) async throws(GraftError) -> StudentResult {
        try FreeText.check(description, what: "description")
        if try await modelID(name) != nil { throw .modelExists(name) }
        let (parentID, parentSummary) = try await resolve(parent)
        if try await metadata.manifest(of: parentSummary.model)??.mode == .adapter {
            throw .invalidManifest(
                "\(parentSummary.ref) is an adapter checkpoint, which holds only its adapter: derive students from a full model "
                    + "(the adapter's parent, or the adapter merged and registered as a base)")
        }
        let (entries, declaration) = try ManifestResolver.resolveInferringPrefix(
            declaration, parent: try await tensors(checkpointID: parentID))
        let isAdapter = declaration == .adapter
        let mode = isAdapter ? .adapter : ManifestResolver.mode(of: entries)
        let relation = isAdapter ? .adapter : relation
        let rules: String? = {
            guard case .rules(let rules, let through) = declaration else { return nil }
            var object: [[String: String]] = rules.map { ["action": $0.action.rawValue, "pattern": $0.pattern] }
            if let through { object.append(["action": "freeze-through", "pattern": through]) }
            return (try? JSONEncoder().encode(object)).map { String(decoding: $0, as: UTF8.self) }
        }()
        try await metadata.insertStudent(
            NewStudent(
                name: name, parent: ResolvedCheckpoint(id: parentID, summary: parentSummary), relation: relation, mode: mode, rules: rules,
                entries: entries, description: description, createdAt: timestamp()))
        return StudentResult(
            model: name, manifest: ManifestSummary(parent: parentSummary.ref, relation: relation, mode: mode, entries: entries))
    }

    /// The manifest of a student, or `nil` for a base.
    public func manifest(of name: ModelName) async throws(GraftError) -> ManifestSummary? {
        guard let found = try await metadata.manifest(of: name) else { throw try await notFound(name) }
        return found
    }

    /// Commits a checkpoint to a model (`NAME@N`, N one past the newest).
    ///
    /// For a student, the manifest is enforced before anything is written: every `frozen`
    /// tensor must be bit-identical to the parent's (same digest, dtype and shape), every
    /// `dropped` one absent, every `trainable` one present. Tensors the parent lacks are
    /// recorded as `new`. Unchanged tensors are the parent's blobs and cost nothing.
    ///
    /// - Throws: ``GraftError/manifestViolation(model:violations:)`` naming each offending tensor
    ///   and what changed; ``GraftError/invalidFile(path:_:)``; ``GraftError/modelNotFound(_:suggestions:)``.
    public func addCheckpoint(
        model name: ModelName, file path: String, step: Int? = nil, epoch: Int? = nil,
        metrics: [MetricAssignment] = [], split: String? = nil,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) async throws(GraftError) -> ImportResult {
        try await retryingVanishedBlobs { () async throws(GraftError) in
            try await addCheckpointOnce(
                model: name, input: { () throws(GraftError) in try Self.openInput(path) }, step: step, epoch: epoch, metrics: metrics,
                split: split,
                progress: progress)
        }
    }

    /// Commits the next checkpoint from any safetensors input: a file, or tensors in memory
    /// (``SafeTensorsMemory``: what a training loop holds, committed without a temporary file).
    /// The manifest is enforced exactly as for a file.
    public func addCheckpoint(
        model name: ModelName, input: some SafeTensorsInput, step: Int? = nil, epoch: Int? = nil,
        metrics: [MetricAssignment] = [], split: String? = nil,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) async throws(GraftError) -> ImportResult {
        try await retryingVanishedBlobs(retry: !input.isSequential) { () async throws(GraftError) in
            try await addCheckpointOnce(
                model: name, input: { () throws(GraftError) in input }, step: step, epoch: epoch, metrics: metrics, split: split,
                progress: progress)
        }
    }

    /// Commits the next checkpoint from a model directory (`DirectoryInput`): the manifest is
    /// enforced on the shards' tensors exactly as on one file's (names are global across
    /// shards, so a student saved with another shard size still shares every frozen blob), and
    /// every other file of the directory is kept as a blob.
    public func addCheckpoint(
        model name: ModelName, directory: DirectoryInput, step: Int? = nil, epoch: Int? = nil,
        metrics: [MetricAssignment] = [], split: String? = nil,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) async throws(GraftError) -> ImportResult {
        try await retryingVanishedBlobs { () async throws(GraftError) in
            try await addCheckpointOnce(
                model: name, weights: directory.weights, directory: directory, step: step, epoch: epoch, metrics: metrics, split: split,
                progress: progress)
        }
    }

    /// Opens the directory's weights (an existential) as the generic input the commit takes.
    private func addCheckpointOnce<Input: SafeTensorsInput>(
        model name: ModelName, weights: Input, directory: DirectoryInput, step: Int?, epoch: Int?, metrics: [MetricAssignment],
        split: String?, progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        try await addCheckpointOnce(
            model: name, input: { () throws(GraftError) in weights }, directory: directory, step: step, epoch: epoch, metrics: metrics,
            split: split, progress: progress)
    }

    /// One attempt; `input` is opened after the cheap checks, so an unknown model is refused first.
    func addCheckpointOnce<Input: SafeTensorsInput>(
        model name: ModelName, input open: () throws(GraftError) -> Input, directory: DirectoryInput? = nil, step: Int?, epoch: Int?,
        metrics: [MetricAssignment], split: String?,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        guard try await modelID(name) != nil else { throw try await notFound(name) }
        if let split { try MetricAssignment.checkName(split) }
        let manifest = try await self.manifest(of: name)
        let reader = try open()
        let tensors = reader.header.tensors
        // The manifest from the header alone: nothing is read or written on a violation.
        var adapterConfig = AdapterConfigBytes.missing
        if manifest?.mode == .adapter, let bytes = try directory?.smallFile(AdapterConfig.fileName) { adapterConfig = .bytes(bytes) }
        let plan = ManifestEnforcement.plan(manifest, tensors: tensors, adapterConfig: adapterConfig)
        if !plan.violations.isEmpty { throw Self.refusal(name, manifest, tensors: tensors, plan.violations) }
        let signature = try await Self.checkedSignature(of: directory)
        let total = reader.header.dataLength
        var report: (@Sendable (Int) -> Void)? = nil
        if let progress { report = { done in progress(done, total) } }
        let ingested: [IngestedTensor]
        if reader.isSequential {
            ingested = try await ingestStream(reader, model: name, manifest: manifest, frozen: plan.frozen, progress: report)
        } else {
            ingested = try await ingestAtRandom(reader, model: name, manifest: manifest, frozen: plan.frozen, progress: report)
        }
        try blobs.flush(ingested)
        var commit = try await Self.newCheckpoint(reader, tensors: ingested, directory: directory, blobs: blobs, step: step, epoch: epoch)
        commit.signature = signature
        let store = blobs.store
        let (number, inlineStored) = try await metadata.insertCheckpoint(
            model: name, commit, metrics: metrics, split: split, newTensors: manifest == nil ? nil : plan.newTensors,
            stillStored: { store.contains($0, claim: false) })
        let stored = Self.bytesWritten(commit) + inlineStored
        return ImportResult(
            model: name, checkpoint: "\(name)@\(number)", digest: commit.digest, tensors: ingested.count, parameters: commit.parameterCount,
            logicalBytes: directory?.byteCount ?? reader.fileSize, bytesStored: stored,
            bytesAlreadyPresent: total + (directory?.files.header.dataLength ?? 0) - stored,
            newTensors: manifest == nil ? [] : plan.newTensors, files: directory == nil ? nil : commit.files.count,
            signature: signature?.info)
    }

    /// The refusal of a checkpoint that breaks its manifest: the violations, or, when they are
    /// all "missing" because the checkpoint names the parent's tensors under another prefix,
    /// that (one line a user acts on instead of every tensor).
    static func refusal(_ name: ModelName, _ manifest: ManifestSummary?, tensors: [TensorInfo], _ violations: [ManifestViolation])
        -> GraftError
    {
        if let manifest,
            let (prefix, checkpointHasIt) = ManifestEnforcement.prefixMismatch(manifest, tensors: tensors, violations: violations)
        {
            return .prefixMismatch(model: name, prefix: prefix, checkpointHasIt: checkpointHasIt, missing: violations.count)
        }
        return .manifestViolation(model: name, violations: violations)
    }

    /// A file or memory: frozen tensors first, hashing only — a drifted one refuses the commit
    /// before any write — then the rest in two lanes.
    private func ingestAtRandom(
        _ reader: some SafeTensorsInput, model name: ModelName, manifest: ManifestSummary?, frozen frozenIndices: [Int],
        progress: (@Sendable (Int) -> Void)?
    ) async throws(GraftError) -> [IngestedTensor] {
        let tensors = reader.header.tensors
        let byName = Dictionary(tensors.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
        var frozen: [IngestedTensor] = []
        if let manifest, !frozenIndices.isEmpty {
            frozen = try await blobs.ingest(reader, indices: frozenIndices, mode: .hashOnly, progress: nil)
            let drift = ManifestEnforcement.frozenDrift(manifest, hashed: frozen.map { ($0.info.name, $0.digest) })
            if !drift.isEmpty { throw .manifestViolation(model: name, violations: drift) }
        }
        let frozenSet = Set(frozenIndices)
        let frozenPresent = Set(frozen.filter(\.present).map(\.info.name))
        let rest = tensors.indices.filter { !frozenSet.contains($0) || !frozenPresent.contains(tensors[$0].name) }
        let written = try await blobs.ingest(reader, indices: rest, mode: .writeThrough, progress: progress)
        var all = [IngestedTensor?](repeating: nil, count: tensors.count)
        for tensor in frozen where frozenPresent.contains(tensor.info.name) { all[byName[tensor.info.name]!] = tensor }
        for (position, index) in rest.enumerated() { all[index] = written[position] }
        return all.compactMap { $0 }
    }

    /// A stream, read once in data order: frozen tensors are hashed as they pass and checked at
    /// once — a drifted one stops the import there (blobs of trainable tensors written before it
    /// have no metadata and go with the next `gc`); a frozen tensor must be a stored blob.
    private func ingestStream(
        _ reader: some SafeTensorsInput, model name: ModelName, manifest: ManifestSummary?, frozen: [Int],
        progress: (@Sendable (Int) -> Void)?
    ) async throws(GraftError) -> [IngestedTensor] {
        let frozenNames = Set(frozen.map { reader.header.tensors[$0].name })
        return try await blobs.ingestInOrder(
            reader, hashOnly: Set(frozen),
            each: { tensor throws(GraftError) in
                guard let manifest, frozenNames.contains(tensor.info.name) else { return }
                let drift = ManifestEnforcement.frozenDrift(manifest, hashed: [(tensor.info.name, tensor.digest)])
                if !drift.isEmpty { throw .manifestViolation(model: name, violations: drift) }
                if !tensor.present { throw .blobVanished(tensor.digest) }
            }, progress: progress)
    }
}
