import Foundation
import GRDB
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
        if try await modelID(name) != nil { throw .modelExists(name) }
        let (parentID, parentSummary) = try await resolve(parent)
        let entries = try ManifestResolver.resolve(declaration, parent: try await tensors(checkpointID: parentID))
        let mode = ManifestResolver.mode(of: entries)
        let rules: String? = {
            guard case .rules(let rules, let through) = declaration else { return nil }
            var object: [[String: String]] = rules.map { ["action": $0.action.rawValue, "pattern": $0.pattern] }
            if let through { object.append(["action": "freeze-through", "pattern": through]) }
            return (try? JSONEncoder().encode(object)).map { String(decoding: $0, as: UTF8.self) }
        }()
        try await write { db in
            if try Int.fetchOne(db, sql: "SELECT id FROM models WHERE name = ?", arguments: [name.value]) != nil {
                throw GraftError.modelExists(name)
            }
            let parentModel = try Int64.fetchOne(db, sql: "SELECT model_id FROM checkpoints WHERE id = ?", arguments: [parentID])
            guard let parentModel else { throw GraftError.checkpointNotFound(parent, available: "it was removed meanwhile") }
            let now = timestamp()
            // The model row carries a copy of its parent edge, and its line of descent: the
            // parent's, then its own id (see migration 0004).
            try db.execute(
                sql: """
                    INSERT INTO models (name, kind, description, transfer_mode, manifest_rules, relation, parent_checkpoint_id,
                        parent_checkpoint_number, created_at)
                    VALUES (?, 'student', ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [name.value, description, mode.rawValue, rules, relation.rawValue, parentID, parentSummary.number, now])
            let modelID = db.lastInsertedRowID
            try db.execute(
                sql: "UPDATE models SET lineage_path = (SELECT lineage_path FROM models WHERE id = ?) || id || '/' WHERE id = ?",
                arguments: [parentModel, modelID])
            try db.execute(
                sql: "INSERT INTO model_parents (model_id, parent_checkpoint_id, parent_model_id, relation, created_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [modelID, parentID, parentModel, relation.rawValue, now])
            let statement = try db.cachedStatement(
                sql: """
                    INSERT INTO manifest_entries (model_id, tensor_name, state, dtype, shape, element_count, parent_digest)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """)
            for entry in entries {
                try statement.execute(arguments: [
                    modelID, entry.name, entry.state.rawValue, entry.dtype?.rawValue, entry.shape.map(shapeJSON), entry.parameters,
                    entry.parentDigest?.hex,
                ])
            }
        }
        return StudentResult(model: name, manifest: ManifestSummary(parent: parentSummary.ref, relation: relation, mode: mode, entries: entries))
    }

    /// The manifest of a student, or `nil` for a base.
    public func manifest(of name: ModelName) async throws(GraftError) -> ManifestSummary? {
        let found = try await read { db -> (ManifestSummary?, Bool) in
            guard let model = try Row.fetchOne(db, sql: "SELECT id, transfer_mode FROM models WHERE name = ?", arguments: [name.value]) else {
                return (nil, false)
            }
            let id: Int64 = model["id"]
            guard let edge = try Row.fetchOne(
                db, sql: """
                    SELECT p.relation, m.name, c.number FROM model_parents p JOIN checkpoints c ON c.id = p.parent_checkpoint_id
                    JOIN models m ON m.id = c.model_id WHERE p.model_id = ? ORDER BY p.created_at LIMIT 1
                    """, arguments: [id])
            else { return (nil, true) }
            let entries = try Row.fetchAll(
                db, sql: "SELECT tensor_name, state, dtype, shape, element_count, parent_digest FROM manifest_entries WHERE model_id = ?",
                arguments: [id]
            ).map { row in
                ManifestEntry(
                    name: row["tensor_name"], state: TensorState(rawValue: row["state"]) ?? .trainable,
                    dtype: (row["dtype"] as String?).flatMap(DType.init(rawValue:)), shape: (row["shape"] as String?).map(Self.decodeShape),
                    parameters: row["element_count"], parentDigest: try (row["parent_digest"] as String?).map { try Digest(parsing: $0) })
            }.sorted { numericAwareLess($0.name, $1.name) }
            let summary = ManifestSummary(
                parent: "\(edge["name"] as String)@\(edge["number"] as Int)", relation: Relation(rawValue: edge["relation"]) ?? .finetune,
                mode: TransferMode(rawValue: model["transfer_mode"] ?? "") ?? ManifestResolver.mode(of: entries), entries: entries)
            return (summary, true)
        }
        guard found.1 else { throw try await notFound(name) }
        return found.0
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
                model: name, input: { () throws(GraftError) in try Self.openInput(path) }, step: step, epoch: epoch, metrics: metrics, split: split,
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
        try await retryingVanishedBlobs { () async throws(GraftError) in
            try await addCheckpointOnce(
                model: name, input: { () throws(GraftError) in input }, step: step, epoch: epoch, metrics: metrics, split: split, progress: progress)
        }
    }

    /// One attempt; `input` is opened after the cheap checks, so an unknown model is refused first.
    func addCheckpointOnce<Input: SafeTensorsInput>(
        model name: ModelName, input open: () throws(GraftError) -> Input, step: Int?, epoch: Int?, metrics: [MetricAssignment], split: String?,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        guard try await modelID(name) != nil else { throw try await notFound(name) }
        if let split { try MetricAssignment.checkName(split) }
        let manifest = try await self.manifest(of: name)
        let reader = try open()
        let tensors = reader.header.tensors
        let byName = Dictionary(tensors.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
        var violations: [String] = []
        var frozenIndices: [Int] = []
        var newTensors: [String] = []
        if let manifest {
            let entries = Dictionary(manifest.entries.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
            for entry in manifest.entries {
                let index = byName[entry.name]
                switch entry.state {
                case .dropped where index != nil:
                    violations.append("\(entry.name): dropped, but present")
                case .frozen, .trainable:
                    guard let index else {
                        violations.append("\(entry.name): \(entry.state.rawValue), but missing")
                        continue
                    }
                    let tensor = tensors[index]
                    if entry.state == .frozen {
                        if tensor.dtype != entry.dtype || tensor.shape != entry.shape {
                            violations.append("\(entry.name): frozen, but its type changed (\(entry.dtype?.rawValue ?? "?") \(entry.shape ?? []) → \(tensor.dtype.rawValue) \(tensor.shape))")
                        } else {
                            frozenIndices.append(index)
                        }
                    }
                default:
                    break
                }
            }
            newTensors = tensors.map(\.name).filter { name in entries[name].map { $0.state == .new } ?? true }
        }
        if !violations.isEmpty { throw .manifestViolation(model: name, violations: violations) }
        // Frozen tensors first, hashing only: a drifted one refuses the commit before any write.
        let total = reader.header.dataLength
        var frozen: [IngestedTensor] = []
        if let manifest, !frozenIndices.isEmpty {
            frozen = try await blobs.ingest(reader, indices: frozenIndices, mode: .hashOnly, progress: nil)
            let entries = Dictionary(manifest.entries.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
            for tensor in frozen {
                if let expected = entries[tensor.info.name]?.parentDigest, expected != tensor.digest {
                    violations.append("\(tensor.info.name): frozen, but changed (\(expected.short)… → \(tensor.digest.short)…)")
                }
            }
            if !violations.isEmpty { throw .manifestViolation(model: name, violations: violations) }
        }
        let frozenSet = Set(frozenIndices)
        let frozenPresent = Set(frozen.filter(\.present).map(\.info.name))
        let rest = tensors.indices.filter { !frozenSet.contains($0) || !frozenPresent.contains(tensors[$0].name) }
        var report: (@Sendable (Int) -> Void)? = nil
        if let progress { report = { done in progress(done, total) } }
        let written = try await blobs.ingest(reader, indices: rest, mode: .writeThrough, progress: report)
        var all = [IngestedTensor?](repeating: nil, count: tensors.count)
        for tensor in frozen where frozenPresent.contains(tensor.info.name) { all[byName[tensor.info.name]!] = tensor }
        for (position, index) in rest.enumerated() { all[index] = written[position] }
        let ingested = all.compactMap { $0 }
        try blobs.flush(ingested)
        let digest = Self.checkpointDigest(header: reader.headerBytes, tensors: ingested)
        let headerDigest = Digest.of(reader.headerBytes)
        let store = blobs.store
        let fileBytes = reader.fileSize
        let parameters = ingested.reduce(0) { $0 + $1.info.elementCount }
        let newNames = newTensors
        let (number, inlineStored) = try await write { db -> (Int, Int) in
            guard let modelID = try Int64.fetchOne(db, sql: "SELECT id FROM models WHERE name = ?", arguments: [name.value]) else {
                throw GraftError.modelNotFound(name, suggestions: [])
            }
            let now = timestamp()
            let stored = try Self.insertBlobs(db, ingested, store: store, now: now)
            let number = (try Int.fetchOne(db, sql: "SELECT max(number) FROM checkpoints WHERE model_id = ?", arguments: [modelID]) ?? 0) + 1
            let checkpointID = try Self.insertCheckpoint(
                db, modelID: modelID, number: number, reader: reader, digest: digest, headerDigest: headerDigest, tensors: ingested,
                step: step, epoch: epoch, now: now)
            try Self.insertMetrics(db, checkpointID: checkpointID, metrics, split: split)
            if manifest != nil {
                let statement = try db.cachedStatement(
                    sql: """
                        INSERT INTO manifest_entries (model_id, tensor_name, state, dtype, shape, element_count, parent_digest)
                        VALUES (?, ?, 'new', ?, ?, ?, NULL)
                        ON CONFLICT (model_id, tensor_name) DO UPDATE SET dtype = excluded.dtype, shape = excluded.shape,
                            element_count = excluded.element_count WHERE manifest_entries.state = 'new'
                        """)
                for tensor in ingested where newNames.contains(tensor.info.name) {
                    try statement.execute(arguments: [modelID, tensor.info.name, tensor.info.dtype.rawValue, shapeJSON(tensor.info.shape), tensor.info.elementCount])
                }
            }
            return (number, stored)
        }
        var seen = Set<Digest>()
        let stored = ingested.filter { $0.wroteFile && seen.insert($0.digest).inserted }.reduce(0) { $0 + $1.info.byteCount } + inlineStored
        return ImportResult(
            model: name, checkpoint: "\(name)@\(number)", digest: digest, tensors: ingested.count, parameters: parameters,
            logicalBytes: fileBytes, bytesStored: stored, bytesAlreadyPresent: total - stored, newTensors: newTensors)
    }
}

func shapeJSON(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ",") + "]" }
