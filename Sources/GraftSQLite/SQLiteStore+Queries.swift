import Foundation
import GRDB
package import GraftCore
import GraftLocal
import SafeTensors

// Reads of models, checkpoints, manifests, aliases, metrics and advisories.
extension SQLiteMetadataStore {
    package func modelID(named name: ModelName) async throws(GraftError) -> Int64? {
        try await read { db in try db.cachedOne(Int64.self, sql: "SELECT id FROM models WHERE name = ?", arguments: [name.value]) }
    }

    package func modelNames() async throws(GraftError) -> [String] {
        try await read { db in try String.fetchAll(db, sql: "SELECT name FROM models") }
    }

    package func models() async throws(GraftError) -> [ModelSummary] {
        try await read { db in
            try Row.fetchAll(db, sql: Self.modelSelect + " ORDER BY m.name").map(Self.modelSummary)
        }
    }

    package func model(named name: ModelName) async throws(GraftError) -> StoredModel? {
        try await read { db -> StoredModel? in
            guard let row = try Row.fetchOne(db, sql: Self.modelSelect + " WHERE m.name = ?", arguments: [name.value]) else { return nil }
            let checkpoints = try Row.fetchAll(
                db, sql: Self.checkpointSelect + " WHERE m.name = ? ORDER BY c.number", arguments: [name.value])
            return StoredModel(
                id: row["id"], summary: Self.modelSummary(row), checkpoints: checkpoints.map(Self.checkpointSummary),
                latestCheckpointID: checkpoints.last?["id"])
        }
    }

    package func checkpoints(digestPrefix prefix: String, limit: Int) async throws(GraftError) -> [ResolvedCheckpoint] {
        try await read { db in
            try Row.fetchAll(
                db, sql: Self.checkpointSelect + " WHERE c.digest >= ? AND c.digest < ? ORDER BY m.name, c.number LIMIT ?",
                arguments: [prefix, prefix + "g", limit]
            ).map(Self.resolved)
        }
    }

    package func checkpoint(model name: ModelName, alias: String) async throws(GraftError) -> ResolvedCheckpoint? {
        try await read { db in
            try Row.fetchOne(
                db,
                sql: Self.checkpointSelect
                    + " JOIN aliases a ON a.checkpoint_id = c.id AND a.model_id = m.id WHERE m.name = ? AND a.alias = ?",
                arguments: [name.value, alias]
            ).map(Self.resolved)
        }
    }

    package func checkpoint(model name: ModelName, idempotencyKey: String) async throws(GraftError) -> ResolvedCheckpoint? {
        try await read { db in
            try Row.fetchOne(
                db, sql: Self.checkpointSelect + " WHERE m.name = ? AND c.idempotency_key = ?", arguments: [name.value, idempotencyKey]
            ).map(Self.resolved)
        }
    }

    package func checkpoint(model name: ModelName, number: Int?) async throws(GraftError) -> ResolvedCheckpoint? {
        try await read { db in
            let row: Row?
            if let number {
                row = try Row.fetchOne(
                    db, sql: Self.checkpointSelect + " WHERE m.name = ? AND c.number = ?", arguments: [name.value, number])
            } else {
                row = try Row.fetchOne(
                    db, sql: Self.checkpointSelect + " WHERE m.name = ? ORDER BY c.number DESC LIMIT 1", arguments: [name.value])
            }
            return row.map(Self.resolved)
        }
    }

    package func tensors(checkpoint: Int64) async throws(GraftError) -> [TensorEntry] {
        try await read { db in
            try Row.fetchAll(
                db,
                sql:
                    """
                    SELECT name, dtype, shape, element_count, byte_length, blob_digest FROM checkpoint_tensors WHERE checkpoint_id =\
                     ? ORDER BY position
                    """,
                arguments: [checkpoint]
            ).map { row in
                TensorEntry(
                    name: row["name"], dtype: DType(rawValue: row["dtype"]) ?? .u8, shape: decodeShape(row["shape"]),
                    parameters: row["element_count"], bytes: row["byte_length"], digest: try Digest(parsing: row["blob_digest"] as String))
            }
        }
    }

    package func parts(checkpoint id: Int64) async throws(GraftError) -> CheckpointParts {
        try await read { db in
            let header = try Data.fetchOne(db, sql: "SELECT header FROM checkpoints WHERE id = ?", arguments: [id]) ?? Data()
            let parts = try Row.fetchAll(
                db,
                sql: """
                    SELECT t.blob_digest, t.byte_length, b.inline_data FROM checkpoint_tensors t
                    JOIN blobs b ON b.digest = t.blob_digest WHERE t.checkpoint_id = ? ORDER BY t.position
                    """, arguments: [id]
            ).map { row -> (digest: Digest, length: Int, inline: [UInt8]?) in
                (try Digest(parsing: row["blob_digest"] as String), row["byte_length"], (row["inline_data"] as Data?).map { Array($0) })
            }
            return CheckpointParts(header: Array(header), tensors: parts, files: try Self.files(db, checkpoint: id, inline: true))
        }
    }

    package func files(checkpoint id: Int64) async throws(GraftError) -> [CheckpointFile] {
        try await read { db in try Self.files(db, checkpoint: id, inline: false) }
    }

    /// A checkpoint's files by path; plain files with their inline bytes when `inline`.
    static func files(_ db: Database, checkpoint id: Int64, inline: Bool) throws -> [CheckpointFile] {
        try Row.fetchAll(
            db,
            sql: """
                SELECT f.path, f.kind, f.header, f.first_tensor, f.tensor_count, f.blob_digest, f.byte_length,
                    \(inline ? "b.inline_data" : "NULL") AS inline_data
                FROM checkpoint_files f LEFT JOIN blobs b ON b.digest = f.blob_digest WHERE f.checkpoint_id = ?
                """, arguments: [id]
        ).map { row in
            let content: CheckpointFile.Content
            if let digest = row["blob_digest"] as String? {
                content = .file(
                    digest: try Digest(parsing: digest), length: row["byte_length"], inline: (row["inline_data"] as Data?).map { Array($0) }
                )
            } else {
                content = .shard(header: Array(row["header"] as Data? ?? Data()), first: row["first_tensor"], count: row["tensor_count"])
            }
            return CheckpointFile(path: row["path"], content: content)
        }.sorted { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
    }

    package func hasHeader(digest: Digest) async throws(GraftError) -> Bool {
        try await read { db in
            try Bool.fetchOne(db, sql: "SELECT 1 FROM checkpoints WHERE header_digest = ? LIMIT 1", arguments: [digest.hex]) ?? false
        }
    }

    package func signature(checkpoint id: Int64) async throws(GraftError) -> StoredSignature? {
        try await read { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT bundle, key_hint, root_digest, file_count, signed_at, verified, origin
                    FROM checkpoint_signatures WHERE checkpoint_id = ?
                    """, arguments: [id]
            ).map { row in
                StoredSignature(
                    bundle: Array(row["bundle"] as Data), keyHint: row["key_hint"], rootDigest: try Digest(parsing: row["root_digest"]),
                    fileCount: row["file_count"], signedAt: row["signed_at"], verified: row["verified"], origin: row["origin"])
            }
        }
    }

    package func manifest(of name: ModelName) async throws(GraftError) -> ManifestSummary?? {
        try await read { db -> ManifestSummary?? in
            guard let model = try Row.fetchOne(db, sql: "SELECT id, transfer_mode FROM models WHERE name = ?", arguments: [name.value])
            else {
                return nil
            }
            let id: Int64 = model["id"]
            guard
                let edge = try Row.fetchOne(
                    db,
                    sql: """
                        SELECT p.relation, m.name, c.number FROM model_parents p JOIN checkpoints c ON c.id = p.parent_checkpoint_id
                        JOIN models m ON m.id = c.model_id WHERE p.model_id = ? ORDER BY p.created_at LIMIT 1
                        """, arguments: [id])
            else { return .some(nil) }
            let entries = try Row.fetchAll(
                db, sql: "SELECT tensor_name, state, dtype, shape, element_count, parent_digest FROM manifest_entries WHERE model_id = ?",
                arguments: [id]
            ).map { row in
                ManifestEntry(
                    name: row["tensor_name"], state: TensorState(rawValue: row["state"]) ?? .trainable,
                    dtype: (row["dtype"] as String?).flatMap(DType.init(rawValue:)), shape: (row["shape"] as String?).map(decodeShape),
                    parameters: row["element_count"], parentDigest: try (row["parent_digest"] as String?).map { try Digest(parsing: $0) })
            }.sorted { numericAwareLess($0.name, $1.name) }
            return ManifestSummary(
                parent: "\(edge["name"] as String)@\(edge["number"] as Int)", relation: Relation(rawValue: edge["relation"]) ?? .finetune,
                mode: TransferMode(rawValue: model["transfer_mode"] ?? "") ?? ManifestResolver.mode(of: entries), entries: entries)
        }
    }

    package func aliases(of name: ModelName) async throws(GraftError) -> [String: String] {
        try await read { db in
            var result: [String: String] = [:]
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT a.alias, c.number FROM aliases a JOIN models m ON m.id = a.model_id
                    JOIN checkpoints c ON c.id = a.checkpoint_id WHERE m.name = ?
                    """, arguments: [name.value])
            {
                result[row["alias"]] = "\(name)@\(row["number"] as Int)"
            }
            return result
        }
    }

    package func metricsReport(model modelID: Int64, name: ModelName) async throws(GraftError) -> MetricsReport {
        try await read { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT c.number, mt.name, mt.split, mt.value FROM checkpoints c JOIN metrics mt ON mt.checkpoint_id = c.id
                    WHERE c.model_id = ? ORDER BY c.number, mt.name, mt.split
                    """, arguments: [modelID])
            var entries: [MetricsReport.Entry] = []
            for row in rows {
                let ref = "\(name)@\(row["number"] as Int)"
                let value = MetricValue(name: row["name"], split: (row["split"] as String).nilIfEmpty, value: row["value"])
                if entries.last?.checkpoint == ref {
                    entries[entries.count - 1].metrics.append(value)
                } else {
                    entries.append(.init(checkpoint: ref, metrics: [value]))
                }
            }
            let curves = try Row.fetchAll(
                db,
                sql: """
                    SELECT k.name, count(*) AS points, min(p.step) AS first, max(p.step) AS last, min(p.value) AS lo, max(p.value) AS hi,
                           (SELECT value FROM curve_points q WHERE q.curve_id = k.id ORDER BY step DESC LIMIT 1) AS latest
                    FROM curves k JOIN curve_points p ON p.curve_id = k.id WHERE k.model_id = ? GROUP BY k.id ORDER BY k.name
                    """, arguments: [modelID]
            ).map { row in
                CurveSummary(
                    name: row["name"], points: row["points"], firstStep: row["first"], lastStep: row["last"], lastValue: row["latest"],
                    minimum: row["lo"], maximum: row["hi"])
            }
            return MetricsReport(checkpoints: entries, curves: curves)
        }
    }

    package func metrics(checkpoint id: Int64) async throws(GraftError) -> [MetricValue] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT name, split, value FROM metrics WHERE checkpoint_id = ? ORDER BY name, split", arguments: [id]
            )
            .map { MetricValue(name: $0["name"], split: ($0["split"] as String).nilIfEmpty, value: $0["value"]) }
        }
    }

    package func advisories(includeResolved: Bool) async throws(GraftError) -> [Advisory] {
        try await read { db in
            try db.cachedRows(
                sql: """
                    SELECT a.*, m.name AS model_name, c.number AS checkpoint_number FROM advisories a JOIN models m ON m.id = a.model_id
                    LEFT JOIN checkpoints c ON c.id = a.checkpoint_id
                    \(includeResolved ? "" : "WHERE a.resolved_at IS NULL") ORDER BY a.created_at DESC, a.id
                    """
            ).map { row in
                let name: String = row["model_name"]
                return Advisory(
                    id: row["id"], model: name, checkpoint: (row["checkpoint_number"] as Int?).map { "\(name)@\($0)" },
                    severity: Severity(rawValue: row["severity"]) ?? .high, note: row["note"], url: row["url"],
                    createdAt: row["created_at"],
                    resolvedAt: row["resolved_at"])
            }
        }
    }

    package func openAdvisories() async throws(GraftError) -> [OpenAdvisory] {
        try await read { db in try Self.openAdvisories(db) }
    }

    package func checkpointAdvisoryLabels() async throws(GraftError) -> [Int64: [String]] {
        try await read { db in try Self.checkpointAdvisoryLabels(db) }
    }

    /// Every open advisory. They are few (a registry records known weaknesses, not events), so
    /// the flag computations work from this list rather than from a walk of the tree.
    static func openAdvisories(_ db: Database) throws -> [OpenAdvisory] {
        try db.cachedRows(
            sql: """
                SELECT a.id, a.model_id, a.checkpoint_id, m.lineage_path FROM advisories a JOIN models m ON m.id = a.model_id
                WHERE a.resolved_at IS NULL ORDER BY a.id
                """
        ).map { OpenAdvisory(id: $0[0], model: $0[1], checkpoint: $0[2], ancestry: pathIDs($0[3])) }
    }

    /// Open checkpoint-level advisories by model, as `ID@N`.
    static func checkpointAdvisoryLabels(_ db: Database) throws -> [Int64: [String]] {
        var result: [Int64: [String]] = [:]
        for row in try db.cachedRows(
            sql:
                """
                SELECT a.id, c.model_id, c.number FROM advisories a JOIN checkpoints c ON c.id = a.checkpoint_id WHERE a.resolved_at\
                 IS NULL
                """
        ) {
            result[row["model_id"], default: []].append("\(row["id"] as String)@\(row["number"] as Int)")
        }
        return result
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

    static func resolved(_ row: Row) -> ResolvedCheckpoint {
        ResolvedCheckpoint(id: row["id"], summary: checkpointSummary(row))
    }
}
