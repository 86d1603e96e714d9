import Foundation
import GRDB
import SafeTensors

extension Registry {
    /// Every model, by name.
    public func models() async throws(GraftError) -> [ModelSummary] {
        try await read { db in
            try Row.fetchAll(db, sql: Self.modelSelect + " ORDER BY m.name").map(Self.modelSummary)
        }
    }

    /// A model with its checkpoints and the tensors of its newest checkpoint.
    ///
    /// - Throws: ``GraftError/modelNotFound(_:suggestions:)`` with close names.
    public func model(_ name: ModelName) async throws(GraftError) -> ModelDetail {
        let found = try await read { db -> (ModelSummary, [CheckpointSummary], Int64?)? in
            guard let row = try Row.fetchOne(db, sql: Self.modelSelect + " WHERE m.name = ?", arguments: [name.value]) else { return nil }
            let checkpoints = try Row.fetchAll(db, sql: Self.checkpointSelect + " WHERE m.name = ? ORDER BY c.number", arguments: [name.value])
            return (Self.modelSummary(row), checkpoints.map(Self.checkpointSummary), checkpoints.last?["id"])
        }
        guard let (summary, checkpoints, latestID) = found else { throw try await notFound(name) }
        var latest: CheckpointDetail? = nil
        if let latestID, let last = checkpoints.last {
            latest = CheckpointDetail(checkpoint: last, layers: LayerGroup.group(try await tensors(checkpointID: latestID)))
        }
        let advisories = try await read { db -> [String] in
            guard let id = try Int64.fetchOne(db, sql: "SELECT id FROM models WHERE name = ?", arguments: [name.value]) else { return [] }
            return (try Self.inheritedAdvisories(db, model: id)).sorted() + (try Self.checkpointAdvisoriesByModel(db)[id] ?? []).sorted()
        }
        return ModelDetail(
            model: summary, checkpoints: checkpoints, latest: latest, manifest: try await manifest(of: name), aliases: try await aliases(of: name),
            advisories: advisories)
    }

    /// The checkpoints of a model, oldest first.
    public func checkpoints(of name: ModelName) async throws(GraftError) -> [CheckpointSummary] {
        try await model(name).checkpoints
    }

    /// A checkpoint with its tensors grouped by layer. A bare model name means its newest checkpoint.
    public func checkpoint(_ reference: Reference) async throws(GraftError) -> CheckpointDetail {
        let (id, summary) = try await resolve(reference)
        return CheckpointDetail(checkpoint: summary, layers: LayerGroup.group(try await tensors(checkpointID: id)))
    }

    /// Finds the checkpoint a reference names.
    ///
    /// - Throws: ``GraftError/modelNotFound(_:suggestions:)``, ``GraftError/checkpointNotFound(_:available:)``,
    ///   ``GraftError/digestNotFound(prefix:)``, ``GraftError/ambiguousDigest(prefix:candidates:)``,
    ///   ``GraftError/aliasNotFound(model:alias:)``.
    func resolve(_ reference: Reference) async throws(GraftError) -> (id: Int64, summary: CheckpointSummary) {
        if case .digest(let prefix) = reference {
            let rows = try await read { db in
                try Row.fetchAll(
                    db, sql: Self.checkpointSelect + " WHERE c.digest >= ? AND c.digest < ? ORDER BY m.name, c.number LIMIT 10",
                    arguments: [prefix, prefix + "g"]
                ).map { (id: $0["id"] as Int64, summary: Self.checkpointSummary($0)) }
            }
            guard let first = rows.first else { throw .digestNotFound(prefix: prefix) }
            // Identical files registered twice share a digest; that is no ambiguity.
            guard Set(rows.map(\.summary.digest)).count == 1 else {
                throw .ambiguousDigest(prefix: prefix, candidates: rows.map(\.summary.ref))
            }
            return first
        }
        guard let name = reference.modelName else { throw .invalidReference(reference.description, reason: "names no model") }
        if case .alias(_, let alias) = reference {
            guard try await modelID(name) != nil else { throw try await notFound(name) }
            let found = try await read { db -> (id: Int64, summary: CheckpointSummary)? in
                try Row.fetchOne(
                    db, sql: Self.checkpointSelect + " JOIN aliases a ON a.checkpoint_id = c.id AND a.model_id = m.id WHERE m.name = ? AND a.alias = ?",
                    arguments: [name.value, alias]
                ).map { (id: $0["id"] as Int64, summary: Self.checkpointSummary($0)) }
            }
            guard let found else { throw .aliasNotFound(model: name, alias: alias) }
            return found
        }
        let found = try await read { db -> (id: Int64, summary: CheckpointSummary)? in
            let row: Row?
            switch reference {
            case .number(_, let number):
                row = try Row.fetchOne(db, sql: Self.checkpointSelect + " WHERE m.name = ? AND c.number = ?", arguments: [name.value, number])
            default:
                row = try Row.fetchOne(db, sql: Self.checkpointSelect + " WHERE m.name = ? ORDER BY c.number DESC LIMIT 1", arguments: [name.value])
            }
            return row.map { (id: $0["id"] as Int64, summary: Self.checkpointSummary($0)) }
        }
        if let found { return found }
        let checkpoints = try await model(name).checkpoints
        let available = checkpoints.isEmpty ? "the model has no checkpoints" : "\(name) has checkpoints 1–\(checkpoints.last!.number)"
        throw .checkpointNotFound(reference, available: available)
    }

    func tensors(checkpointID: Int64) async throws(GraftError) -> [TensorEntry] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT name, dtype, shape, element_count, byte_length, blob_digest FROM checkpoint_tensors WHERE checkpoint_id = ? ORDER BY position",
                arguments: [checkpointID]
            ).map { row in
                TensorEntry(
                    name: row["name"], dtype: DType(rawValue: row["dtype"]) ?? .u8, shape: Self.decodeShape(row["shape"]),
                    parameters: row["element_count"], bytes: row["byte_length"], digest: try Digest(parsing: row["blob_digest"] as String))
            }
        }
    }

    /// The error for a missing model, with up to three close names.
    func notFound(_ name: ModelName) async throws(GraftError) -> GraftError {
        let names = try await read { db in try String.fetchAll(db, sql: "SELECT name FROM models") }
        let target = name.value.lowercased()
        let close = names
            .map { ($0, editDistance($0.lowercased(), target)) }
            .filter { $0.1 <= max(2, target.count / 3) || $0.0.lowercased().contains(target) || target.contains($0.0.lowercased()) }
            .sorted { ($0.1, $0.0) < ($1.1, $1.0) }
            .prefix(3)
            .map(\.0)
        return .modelNotFound(name, suggestions: Array(close))
    }

    static let modelSelect = """
        SELECT m.*, (SELECT count(*) FROM checkpoints c WHERE c.model_id = m.id) AS checkpoint_count,
               (SELECT max(number) FROM checkpoints c WHERE c.model_id = m.id) AS latest
        FROM models m
        """

    /// The columns `checkpointSummary` reads, from checkpoints `c` joined with models `m`.
    static let checkpointColumns = """
        c.id, m.name, c.number, c.digest, c.tensor_count, c.parameter_count, c.file_bytes, c.step, c.epoch, c.metadata, c.created_at
        """

    static let checkpointSelect = "SELECT \(checkpointColumns) FROM checkpoints c JOIN models m ON m.id = c.model_id"

    static func modelSummary(_ row: Row) -> ModelSummary {
        ModelSummary(
            name: ModelName(trusted: row["name"]),
            kind: row["kind"],
            provenance: Provenance(
                source: row["source"], license: row["license"], dataset: row["dataset"], architecture: row["architecture"],
                task: row["task"], description: row["description"], metadata: decodeJSON(row["metadata"])),
            checkpointCount: row["checkpoint_count"], latestCheckpoint: row["latest"], createdAt: row["created_at"])
    }

    static func checkpointSummary(_ row: Row) -> CheckpointSummary {
        let name = ModelName(trusted: row["name"])
        let number: Int = row["number"]
        return CheckpointSummary(
            model: name, number: number, ref: "\(name)@\(number)",
            digest: (try? Digest(parsing: row["digest"] as String)) ?? Digest(bytes: [UInt8](repeating: 0, count: 32)),
            tensorCount: row["tensor_count"], parameterCount: row["parameter_count"], fileBytes: row["file_bytes"],
            step: row["step"], epoch: row["epoch"], metadata: decodeJSON(row["metadata"]), createdAt: row["created_at"])
    }

    static func decodeShape(_ text: String) -> [Int] {
        text.dropFirst().dropLast().split(separator: ",").compactMap { Int($0) }
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
func editDistance(_ a: String, _ b: String) -> Int {
    let x = Array(a.utf8), y = Array(b.utf8)
    if x.isEmpty { return y.count }
    var previous = Array(0...y.count)
    for i in 1...x.count {
        var current = [i] + [Int](repeating: 0, count: y.count)
        for j in stride(from: 1, through: y.count, by: 1) {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[y.count]
}
