package import GraftCore
import NIOCore
import PostgresNIO
import SafeTensors

// Reads of models, checkpoints, manifests, aliases, metrics, advisories and tokens.
extension PostgresMetadataStore {
    package func modelID(named name: ModelName) async throws(GraftError) -> Int64? {
        try await withConnection { connection in
            try await connection.one("SELECT id FROM models WHERE name = \(name.value)", logger: self.logger).map { row throws in
                try row[0] as Int64
            }
        }
    }

    package func modelNames() async throws(GraftError) -> [String] {
        try await withConnection { connection in
            try await connection.all("SELECT name FROM models", logger: self.logger).map { row throws in try row[0] as String }
        }
    }

    package func models() async throws(GraftError) -> [ModelSummary] {
        try await withConnection { connection in
            try await connection.all(PostgresQuery(unsafeSQL: Self.modelSelect + " ORDER BY m.name"), logger: self.logger).map(
                Self.modelSummary)
        }
    }

    package func model(named name: ModelName) async throws(GraftError) -> StoredModel? {
        try await read { connection -> StoredModel? in
            guard let row = try await connection.one("\(unescaped: Self.modelSelect) WHERE m.name = \(name.value)", logger: self.logger)
            else { return nil }
            let checkpoints = try await connection.all(
                "\(unescaped: Self.checkpointSelect) WHERE m.name = \(name.value) ORDER BY c.number", logger: self.logger)
            return StoredModel(
                id: try row["id"], summary: try Self.modelSummary(row), checkpoints: try checkpoints.map(Self.checkpointSummary),
                latestCheckpointID: try checkpoints.last.map { row throws in try row["id"] as Int64 })
        }
    }

    package func checkpoints(digestPrefix prefix: String, limit: Int) async throws(GraftError) -> [ResolvedCheckpoint] {
        try await withConnection { connection in
            try await connection.all(
                """
                \(unescaped: Self.checkpointSelect) WHERE c.digest >= \(prefix) AND c.digest < \(prefix + "g")
                ORDER BY m.name, c.number LIMIT \(limit)
                """, logger: self.logger
            ).map(Self.resolved)
        }
    }

    package func checkpoint(model name: ModelName, alias: String) async throws(GraftError) -> ResolvedCheckpoint? {
        try await withConnection { connection in
            try await connection.one(
                """
                \(unescaped: Self.checkpointSelect) JOIN aliases a ON a.checkpoint_id = c.id AND a.model_id = m.id
                WHERE m.name = \(name.value) AND a.alias = \(alias)
                """, logger: self.logger
            ).map(Self.resolved)
        }
    }

    package func checkpoint(model name: ModelName, idempotencyKey: String) async throws(GraftError) -> ResolvedCheckpoint? {
        try await withConnection { connection in
            try await connection.one(
                "\(unescaped: Self.checkpointSelect) WHERE m.name = \(name.value) AND c.idempotency_key = \(idempotencyKey)",
                logger: self.logger
            ).map(Self.resolved)
        }
    }

    package func checkpoint(model name: ModelName, number: Int?) async throws(GraftError) -> ResolvedCheckpoint? {
        try await withConnection { connection in
            let query: PostgresQuery =
                if let number {
                    "\(unescaped: Self.checkpointSelect) WHERE m.name = \(name.value) AND c.number = \(number)"
                } else {
                    "\(unescaped: Self.checkpointSelect) WHERE m.name = \(name.value) ORDER BY c.number DESC LIMIT 1"
                }
            return try await connection.one(query, logger: self.logger).map(Self.resolved)
        }
    }

    package func tensors(checkpoint: Int64) async throws(GraftError) -> [TensorEntry] {
        try await withConnection { connection in
            try await connection.all(
                """
                SELECT name, dtype, shape::text AS shape, element_count, byte_length, blob_digest FROM checkpoint_tensors
                WHERE checkpoint_id = \(checkpoint) ORDER BY position
                """, logger: self.logger
            ).map { row throws in
                TensorEntry(
                    name: try row["name"], dtype: DType(rawValue: try row["dtype"]) ?? .u8, shape: decodeShape(try row["shape"]),
                    parameters: try row["element_count"], bytes: try row["byte_length"],
                    digest: try Digest(parsing: try row["blob_digest"] as String))
            }
        }
    }

    package func parts(checkpoint id: Int64) async throws(GraftError) -> CheckpointParts {
        try await read { connection in
            let header =
                try await connection.one("SELECT header FROM checkpoints WHERE id = \(id)", logger: self.logger).map { row throws in
                    try row.bytes("header") ?? []
                } ?? []
            let parts = try await connection.all(
                """
                SELECT t.blob_digest, t.byte_length, b.inline_data FROM checkpoint_tensors t
                JOIN blobs b ON b.digest = t.blob_digest WHERE t.checkpoint_id = \(id) ORDER BY t.position
                """, logger: self.logger
            ).map { row throws -> (digest: Digest, length: Int, inline: [UInt8]?) in
                (try Digest(parsing: try row["blob_digest"] as String), try row["byte_length"], try row.bytes("inline_data"))
            }
            return CheckpointParts(header: header, tensors: parts, files: try await self.files(connection, checkpoint: id, inline: true))
        }
    }

    package func files(checkpoint id: Int64) async throws(GraftError) -> [CheckpointFile] {
        try await read { connection in try await self.files(connection, checkpoint: id, inline: false) }
    }

    /// A checkpoint's files by path; plain files with their inline bytes when `inline`.
    func files(_ connection: PostgresConnection, checkpoint id: Int64, inline: Bool) async throws -> [CheckpointFile] {
        try await connection.all(
            """
            SELECT f.path, f.header, f.first_tensor::bigint AS first_tensor, f.tensor_count::bigint AS tensor_count, f.blob_digest,
                f.byte_length, CASE WHEN \(inline) THEN b.inline_data END AS inline_data
            FROM checkpoint_files f LEFT JOIN blobs b ON b.digest = f.blob_digest WHERE f.checkpoint_id = \(id) ORDER BY f.path
            """, logger: logger
        ).map { row throws -> CheckpointFile in
            let content: CheckpointFile.Content
            if let digest = try row["blob_digest"] as String? {
                content = .file(digest: try Digest(parsing: digest), length: try row["byte_length"], inline: try row.bytes("inline_data"))
            } else {
                let first: Int64 = try row["first_tensor"]
                let count: Int64 = try row["tensor_count"]
                content = .shard(header: try row.bytes("header") ?? [], first: Int(first), count: Int(count))
            }
            return CheckpointFile(path: try row["path"], content: content)
        }
    }

    package func hasHeader(digest: Digest) async throws(GraftError) -> Bool {
        try await withConnection { connection in
            try await connection.one("SELECT 1 FROM checkpoints WHERE header_digest = \(digest.hex) LIMIT 1", logger: self.logger) != nil
        }
    }

    package func signature(checkpoint id: Int64) async throws(GraftError) -> StoredSignature? {
        try await withConnection { connection in
            try await connection.one(
                """
                SELECT bundle, key_hint, root_digest, file_count, signed_at, verified, origin
                FROM checkpoint_signatures WHERE checkpoint_id = \(id)
                """, logger: self.logger
            ).map { row throws in
                StoredSignature(
                    bundle: try row.bytes("bundle") ?? [], keyHint: try row["key_hint"],
                    rootDigest: try Digest(parsing: try row["root_digest"]),
                    fileCount: try row["file_count"] as Int, signedAt: try row["signed_at"], verified: try row["verified"],
                    origin: try row["origin"])
            }
        }
    }

    package func manifest(of name: ModelName) async throws(GraftError) -> ManifestSummary?? {
        try await read { connection -> ManifestSummary?? in
            guard
                let model = try await connection.one("SELECT id, transfer_mode FROM models WHERE name = \(name.value)", logger: self.logger)
            else {
                return nil
            }
            let id: Int64 = try model["id"]
            guard
                let edge = try await connection.one(
                    """
                    SELECT p.relation, m.name, c.number FROM model_parents p JOIN checkpoints c ON c.id = p.parent_checkpoint_id
                    JOIN models m ON m.id = c.model_id WHERE p.model_id = \(id) ORDER BY p.created_at LIMIT 1
                    """, logger: self.logger)
            else { return .some(nil) }
            let entries = try await connection.all(
                """
                SELECT tensor_name, state, dtype, shape::text AS shape, element_count, parent_digest FROM manifest_entries WHERE model_id\
                 = \(id)
                """, logger: self.logger
            ).map { row throws in
                ManifestEntry(
                    name: try row["tensor_name"], state: TensorState(rawValue: try row["state"]) ?? .trainable,
                    dtype: (try row["dtype"] as String?).flatMap(DType.init(rawValue:)),
                    shape: (try row["shape"] as String?).map(decodeShape),
                    parameters: try row["element_count"],
                    parentDigest: try (try row["parent_digest"] as String?).map { text throws in try Digest(parsing: text) })
            }.sorted { numericAwareLess($0.name, $1.name) }
            return ManifestSummary(
                parent: "\(try edge["name"] as String)@\(try edge["number"] as Int)",
                relation: Relation(rawValue: try edge["relation"]) ?? .finetune,
                mode: TransferMode(rawValue: try model["transfer_mode"] as String? ?? "") ?? ManifestResolver.mode(of: entries),
                entries: entries)
        }
    }

    package func aliases(of name: ModelName) async throws(GraftError) -> [String: String] {
        try await withConnection { connection in
            var result: [String: String] = [:]
            for row in try await connection.all(
                """
                SELECT a.alias, c.number FROM aliases a JOIN models m ON m.id = a.model_id
                JOIN checkpoints c ON c.id = a.checkpoint_id WHERE m.name = \(name.value)
                """, logger: self.logger)
            {
                result[try row["alias"]] = "\(name)@\(try row["number"] as Int)"
            }
            return result
        }
    }

    package func metricsReport(model modelID: Int64, name: ModelName) async throws(GraftError) -> MetricsReport {
        try await read { connection in
            var entries: [MetricsReport.Entry] = []
            for row in try await connection.all(
                """
                SELECT c.number, mt.name, mt.split, mt.value FROM checkpoints c JOIN metrics mt ON mt.checkpoint_id = c.id
                WHERE c.model_id = \(modelID) ORDER BY c.number, mt.name, mt.split
                """, logger: self.logger)
            {
                let ref = "\(name)@\(try row["number"] as Int)"
                let value = MetricValue(name: try row["name"], split: (try row["split"] as String).nilIfEmpty, value: try row["value"])
                if entries.last?.checkpoint == ref {
                    entries[entries.count - 1].metrics.append(value)
                } else {
                    entries.append(.init(checkpoint: ref, metrics: [value]))
                }
            }
            let curves = try await connection.all(
                """
                SELECT k.name, count(*) AS points, min(p.step) AS first, max(p.step) AS last, min(p.value) AS lo, max(p.value) AS hi,
                       (SELECT value FROM curve_points q WHERE q.curve_id = k.id ORDER BY step DESC LIMIT 1) AS latest
                FROM curves k JOIN curve_points p ON p.curve_id = k.id WHERE k.model_id = \(modelID) GROUP BY k.id ORDER BY k.name
                """, logger: self.logger
            ).map { row throws in
                CurveSummary(
                    name: try row["name"], points: try row["points"], firstStep: try row["first"], lastStep: try row["last"],
                    lastValue: try row["latest"],
                    minimum: try row["lo"], maximum: try row["hi"])
            }
            return MetricsReport(checkpoints: entries, curves: curves)
        }
    }

    package func metrics(checkpoint id: Int64) async throws(GraftError) -> [MetricValue] {
        try await withConnection { connection in
            try await connection.all(
                "SELECT name, split, value FROM metrics WHERE checkpoint_id = \(id) ORDER BY name, split", logger: self.logger
            ).map { row throws in
                MetricValue(name: try row["name"], split: (try row["split"] as String).nilIfEmpty, value: try row["value"])
            }
        }
    }

    package func advisories(includeResolved: Bool) async throws(GraftError) -> [Advisory] {
        try await withConnection { connection in
            try await connection.all(
                """
                SELECT a.id, a.severity, a.note, a.url, a.created_at, a.resolved_at, m.name AS model_name, c.number AS checkpoint_number
                FROM advisories a JOIN models m ON m.id = a.model_id LEFT JOIN checkpoints c ON c.id = a.checkpoint_id
                \(unescaped: includeResolved ? "" : "WHERE a.resolved_at IS NULL") ORDER BY a.created_at DESC, a.id
                """, logger: self.logger
            ).map { row throws in
                let name: String = try row["model_name"]
                return Advisory(
                    id: try row["id"], model: name, checkpoint: (try row["checkpoint_number"] as Int?).map { "\(name)@\($0)" },
                    severity: Severity(rawValue: try row["severity"]) ?? .high, note: try row["note"], url: try row["url"],
                    createdAt: try row["created_at"],
                    resolvedAt: try row["resolved_at"])
            }
        }
    }

    package func openAdvisories() async throws(GraftError) -> [OpenAdvisory] {
        try await withConnection { connection in try await self.openAdvisories(connection) }
    }

    package func checkpointAdvisoryLabels() async throws(GraftError) -> [Int64: [String]] {
        try await withConnection { connection in try await self.checkpointAdvisoryLabels(connection) }
    }

    /// Every open advisory with its model's ancestry (the lineage array: root first).
    func openAdvisories(_ connection: PostgresConnection) async throws -> [OpenAdvisory] {
        try await connection.all(
            """
            SELECT a.id, a.model_id, a.checkpoint_id, m.lineage FROM advisories a JOIN models m ON m.id = a.model_id
            WHERE a.resolved_at IS NULL ORDER BY a.id
            """, logger: logger
        ).map { row throws in OpenAdvisory(id: try row[0], model: try row[1], checkpoint: try row[2], ancestry: try row[3]) }
    }

    /// Open checkpoint-level advisories by model, as `ID@N`.
    func checkpointAdvisoryLabels(_ connection: PostgresConnection) async throws -> [Int64: [String]] {
        var result: [Int64: [String]] = [:]
        for row in try await connection.all(
            "SELECT a.id, c.model_id, c.number FROM advisories a JOIN checkpoints c ON c.id = a.checkpoint_id WHERE a.resolved_at IS NULL",
            logger: logger)
        {
            result[try row["model_id"], default: []].append("\(try row["id"] as String)@\(try row["number"] as Int)")
        }
        return result
    }

    // MARK: Tokens

    package func insertToken(_ token: TokenInfo, hash: [UInt8]) async throws(GraftError) {
        try await write { connection in
            // The partial unique index allows one active token per name.
            let inserted = try await connection.changes(
                """
                INSERT INTO tokens (name, secret_hash, scope, models, created_at)
                VALUES (\(token.name), \(ByteBuffer(bytes: hash)), \(token.scope.rawValue), \(token.models), \(token.createdAt))
                ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING RETURNING 1
                """, logger: self.logger)
            if inserted == 0 { throw GraftError.tokenExists(token.name) }
        }
    }

    package func tokens() async throws(GraftError) -> [TokenInfo] {
        try await withConnection { connection in
            try await connection.all(
                "SELECT name, scope, models, created_at FROM tokens WHERE revoked_at IS NULL ORDER BY name", logger: self.logger
            ).map(Self.token)
        }
    }

    package func revokeToken(named name: String, at time: String) async throws(GraftError) -> Bool {
        try await write { connection in
            let revoked =
                try await connection.changes(
                    "UPDATE tokens SET revoked_at = \(time) WHERE name = \(name) AND revoked_at IS NULL RETURNING 1", logger: self.logger)
                > 0
            // Its sessions end with it (a lookup also requires an active token).
            try await connection.run(
                "DELETE FROM sessions WHERE token_id IN (SELECT id FROM tokens WHERE name = \(name) AND revoked_at = \(time))",
                logger: self.logger)
            return revoked
        }
    }

    package func token(hash: [UInt8]) async throws(GraftError) -> TokenInfo? {
        try await withConnection { connection in
            try await connection.one(
                "SELECT name, scope, models, created_at FROM tokens WHERE secret_hash = \(ByteBuffer(bytes: hash)) AND revoked_at IS NULL",
                logger: self.logger
            ).map(Self.token)
        }
    }

    package func insertSession(hash: [UInt8], tokenHash: [UInt8], now: Double, expiry: SessionExpiry) async throws(GraftError) -> Bool {
        try await write { connection in
            try await connection.run(
                "DELETE FROM sessions WHERE last_seen <= \(now - expiry.idle) OR created_at <= \(now - expiry.lifetime)",
                logger: self.logger)
            return try await connection.changes(
                """
                INSERT INTO sessions (id_hash, token_id, created_at, last_seen)
                SELECT \(ByteBuffer(bytes: hash)), id, \(now), \(now) FROM tokens
                WHERE secret_hash = \(ByteBuffer(bytes: tokenHash)) AND revoked_at IS NULL RETURNING 1
                """, logger: self.logger) > 0
        }
    }

    package func session(hash: [UInt8], now: Double, expiry: SessionExpiry) async throws(GraftError) -> TokenInfo? {
        let found = try await withConnection { connection in
            try await connection.one(
                """
                SELECT t.name, t.scope, t.models, t.created_at, s.created_at AS opened, s.last_seen
                FROM sessions s JOIN tokens t ON t.id = s.token_id WHERE s.id_hash = \(ByteBuffer(bytes: hash)) AND t.revoked_at IS NULL
                """, logger: self.logger
            ).map { row throws in
                (token: try Self.token(row), opened: try row["opened"] as Double, lastSeen: try row["last_seen"] as Double)
            }
        }
        guard let found, expiry.isLive(created: found.opened, lastSeen: found.lastSeen, now: now) else { return nil }
        // The last use moves at most once a minute: a page view is not a write each time.
        if now - found.lastSeen >= 60 {
            try await write { connection in
                try await connection.run(
                    "UPDATE sessions SET last_seen = \(now) WHERE id_hash = \(ByteBuffer(bytes: hash))", logger: self.logger)
            }
        }
        return found.token
    }

    package func deleteSession(hash: [UInt8]) async throws(GraftError) {
        try await write { connection in
            try await connection.run("DELETE FROM sessions WHERE id_hash = \(ByteBuffer(bytes: hash))", logger: self.logger)
        }
    }

    package func inlineBytes(_ digests: [Digest]) async throws(GraftError) -> [Digest: [UInt8]] {
        guard !digests.isEmpty else { return [:] }
        return try await withConnection { connection in
            var found: [Digest: [UInt8]] = [:]
            for row in try await connection.all(
                "SELECT digest, inline_data FROM blobs WHERE inline_data IS NOT NULL AND digest = ANY(\(digests.map(\.hex)))",
                logger: self.logger)
            {
                if let digest = try? Digest(parsing: try row["digest"] as String), let data = try row.bytes("inline_data") {
                    found[digest] = data
                }
            }
            return found
        }
    }

    package func digests(_ digests: [Digest], referencedByModelsMatching models: String) async throws(GraftError) -> Set<Digest> {
        guard !digests.isEmpty else { return [] }
        let pattern = Array(models.unicodeScalars)
        return try await withConnection { connection in
            var visible = Set<Digest>()
            // Every digest in one array parameter; each is one index probe.
            for row in try await connection.all(
                """
                SELECT DISTINCT ct.blob_digest, m.name
                FROM blob_references ct JOIN checkpoints c ON c.id = ct.checkpoint_id JOIN models m ON m.id = c.model_id
                WHERE ct.blob_digest = ANY(\(digests.map(\.hex)))
                """, logger: self.logger)
            where Glob.matches(pattern, Array((try row[1] as String).unicodeScalars)) {
                if let digest = try? Digest(parsing: try row[0] as String) { visible.insert(digest) }
            }
            return visible
        }
    }

    static func token(_ row: Row) throws -> TokenInfo {
        TokenInfo(
            name: try row["name"], scope: TokenScope(rawValue: try row["scope"]) ?? .read, models: try row["models"],
            createdAt: try row["created_at"])
    }

    // MARK: Rows

    static let modelSelect = """
        SELECT m.id, m.name, m.kind, m.description, m.source, m.license, m.dataset, m.architecture, m.task, m.metadata::text AS metadata,
               m.created_at, m.checkpoint_count, (SELECT max(number) FROM checkpoints c WHERE c.model_id = m.id) AS latest
        FROM models m
        """

    /// The columns `checkpointSummary` reads, from checkpoints `c` joined with models `m`.
    static let checkpointColumns = """
        c.id, m.name, c.number, c.digest, c.tensor_count, c.parameter_count, c.file_bytes, c.step, c.epoch, c.metadata::text AS metadata,\
         c.created_at
        """

    static let checkpointSelect = "SELECT \(checkpointColumns) FROM checkpoints c JOIN models m ON m.id = c.model_id"

    static func modelSummary(_ row: Row) throws -> ModelSummary {
        ModelSummary(
            name: ModelName(trusted: try row["name"]),
            kind: try row["kind"],
            provenance: Provenance(
                source: try row["source"], license: try row["license"], dataset: try row["dataset"], architecture: try row["architecture"],
                task: try row["task"], description: try row["description"], metadata: decodeJSON(try row["metadata"])),
            checkpointCount: try row["checkpoint_count"], latestCheckpoint: try row["latest"], createdAt: try row["created_at"])
    }

    static func checkpointSummary(_ row: Row) throws -> CheckpointSummary {
        let name = ModelName(trusted: try row["name"])
        let number: Int = try row["number"]
        return CheckpointSummary(
            model: name, number: number, ref: "\(name)@\(number)",
            digest: (try? Digest(parsing: try row["digest"] as String)) ?? Digest(bytes: [UInt8](repeating: 0, count: 32)),
            tensorCount: try row["tensor_count"], parameterCount: try row["parameter_count"], fileBytes: try row["file_bytes"],
            step: try row["step"], epoch: try row["epoch"], metadata: decodeJSON(try row["metadata"]), createdAt: try row["created_at"])
    }

    static func resolved(_ row: Row) throws -> ResolvedCheckpoint {
        ResolvedCheckpoint(id: try row["id"], summary: try checkpointSummary(row))
    }
}
