import Foundation
package import GraftCore
import NIOCore
import PostgresNIO

// Removal, gc, verification and totals. Removals and gc hold the exclusive blob lock (see
// PostgresMetadataStore): no commit is between checking a blob and referencing it while they
// decide which blobs nothing references.
extension PostgresMetadataStore {
    /// Takes the exclusive blob lock for the rest of the transaction.
    func lockBlobs(_ connection: PostgresConnection) async throws {
        try await connection.run("SELECT pg_advisory_xact_lock(\(Self.blobLock))", logger: logger)
    }

    package func collectGarbage(blobs store: any BlobStore, grace: Double, dryRun: Bool) async throws(GraftError) -> GCReport {
        // Candidates are listed outside the lock (a walk of a bucket can be long) and re-checked under it.
        let candidates = store.inventory().blobs
        let temporaryItems = store.temporaryItems()
        return try await write { connection -> GCReport in
            try await self.lockBlobs(connection)
            func old(_ digest: Digest) -> Bool? { store.age(of: digest).map { $0 >= grace } }
            var report = GCReport(
                dryRun: dryRun, blobsRemoved: 0, orphanFilesRemoved: 0, temporaryFilesRemoved: 0, bytesFreed: 0, keptForGrace: 0)
            // Twice at most: a delta's base (never itself a delta) is free once the delta is gone.
            for pass in 0..<2 {
                let unreferenced = try await connection.all(
                    """
                    SELECT digest, byte_length, inline_data IS NOT NULL AS inline, coalesce(stored_length, byte_length) AS stored,
                     base_digest FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM blob_references t WHERE t.blob_digest = b.digest)
                    """, logger: self.logger)
                let freed = try await self.dropBlobs(connection, unreferenced, store: store, dryRun: dryRun, isOld: old)
                report.blobsRemoved += freed.count
                report.bytesFreed += freed.bytes
                if pass == 0 { report.keptForGrace = freed.kept }
                if dryRun || freed.bases.isEmpty { break }
            }
            // Exposure's drift cache: rows of blobs now gone would never be read again.
            if !dryRun {
                try await connection.run(
                    """
                    DELETE FROM tensor_drift d WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE digest = d.ancestor_digest)
                     OR NOT EXISTS (SELECT 1 FROM blobs WHERE digest = d.descendant_digest)
                    """, logger: self.logger)
            }
            let known = Set(
                try await connection.all(
                    "SELECT digest FROM blobs WHERE digest = ANY(\(candidates.map(\.hex)))", logger: self.logger
                ).map { row throws in try row[0] as String })
            report.sweep(
                candidates: candidates, isKnown: { known.contains($0.hex) }, temporaryItems: temporaryItems, store: store, grace: grace)
            return report
        }
    }

    /// Removes blob rows (and stored blobs) given as rows of (digest, byte_length, inline);
    /// stored ones only when `isOld` says so. The rows go first; the stored blobs once the
    /// transaction has committed would be safer still, but a removed row with its blob kept is
    /// only an orphan gc collects, while the reverse never happens here: a blob is removed after
    /// its row, under the exclusive lock.
    func dropBlobs(
        _ connection: PostgresConnection, _ rows: [Row], store: any BlobStore, dryRun: Bool, isOld: (Digest) -> Bool? = { _ in true }
    ) async throws -> (count: Int, bytes: Int, kept: Int, bases: [String]) {
        var count = 0, bytes = 0, kept = 0
        var doomed: [String] = [], stored: [Digest] = [], bases: Set<String> = []
        for row in rows {
            let hex: String = try row["digest"]
            guard let digest = try? Digest(parsing: hex) else { continue }
            let inline: Bool = try row["inline"]
            if !inline, isOld(digest) == false {
                kept += 1
                continue
            }
            count += 1
            bytes += try row["stored"] as Int
            if let base = try row["base_digest"] as String? { bases.insert(base) }
            doomed.append(hex)
            if !inline { stored.append(digest) }
        }
        if !dryRun, !doomed.isEmpty {
            try await connection.run("DELETE FROM blobs WHERE digest = ANY(\(doomed))", logger: logger)
            for digest in stored { store.remove(digest) }
        }
        return (count, bytes, kept, bases.sorted())
    }

    /// Why a checkpoint must stay: students derive from it, an alias points at it, or it is a
    /// base's registered checkpoint. Empty when it may go.
    func protections(_ connection: PostgresConnection, checkpoint id: Int64, model: String, kind: String, number: Int) async throws
        -> [Protection]
    {
        let students = try await connection.all(
            "SELECT m.name FROM model_parents p JOIN models m ON m.id = p.model_id WHERE p.parent_checkpoint_id = \(id) ORDER BY m.name",
            logger: logger
        ).map { row throws in try row[0] as String }
        let aliases = try await connection.all("SELECT alias FROM aliases WHERE checkpoint_id = \(id) ORDER BY alias", logger: logger)
            .map { row throws in try row[0] as String }
        return RetentionPolicy.protections(students: students, aliases: aliases, model: model, kind: kind, number: number)
    }

    package func removeCheckpoint(_ checkpoint: ResolvedCheckpoint, blobs store: any BlobStore, dryRun: Bool) async throws(GraftError)
        -> RemovalReport?
    {
        try await write { connection -> RemovalReport? in
            try await self.lockBlobs(connection)
            guard
                let row = try await connection.one(
                    """
                    SELECT m.name, m.kind, c.number FROM checkpoints c JOIN models m ON m.id = c.model_id WHERE c.id =\
                     \(checkpoint.id) FOR UPDATE OF c
                    """,
                    logger: self.logger)
            else { return nil }
            let reasons = try await self.protections(
                connection, checkpoint: checkpoint.id, model: try row["name"], kind: try row["kind"], number: try row["number"])
            guard reasons.isEmpty else { throw GraftError.protected(checkpoint.summary.ref, reasons: reasons) }
            let freed = try await self.removeCheckpoints(connection, [checkpoint.id], store: store, dryRun: dryRun)
            return RemovalReport(dryRun: dryRun, checkpoints: [checkpoint.summary.ref], bytesFreed: freed)
        }
    }

    /// Deletes checkpoints (their tensors, metrics and checkpoint advisories go with them) and
    /// the blobs nothing else uses; returns the bytes freed.
    func removeCheckpoints(_ connection: PostgresConnection, _ ids: [Int64], store: any BlobStore, dryRun: Bool) async throws -> Int {
        guard !ids.isEmpty else { return 0 }
        let unreferenced = """
            SELECT b.digest, b.byte_length, b.inline_data IS NOT NULL AS inline, coalesce(b.stored_length, b.byte_length) AS stored,
             b.base_digest FROM blobs b
            WHERE b.digest IN (SELECT DISTINCT blob_digest FROM blob_references WHERE checkpoint_id = ANY($1))
            AND NOT EXISTS (SELECT 1 FROM blob_references t WHERE t.blob_digest = b.digest AND NOT (t.checkpoint_id = ANY($1)))
            """
        var binds = PostgresBindings()
        binds.append(ids)
        let rows = try await connection.all(PostgresQuery(unsafeSQL: unreferenced, binds: binds), logger: logger)
        if !dryRun { try await connection.run("DELETE FROM checkpoints WHERE id = ANY(\(ids))", logger: logger) }
        let dropped = try await dropBlobs(connection, rows, store: store, dryRun: dryRun)
        guard !dryRun, !dropped.bases.isEmpty else { return dropped.bytes }
        // The bases of the deltas just removed, where nothing else needs them.
        let bases = try await connection.all(
            """
            SELECT digest, byte_length, inline_data IS NOT NULL AS inline, coalesce(stored_length, byte_length) AS stored, base_digest
            FROM blobs b WHERE digest = ANY(\(dropped.bases))
            AND NOT EXISTS (SELECT 1 FROM blob_references t WHERE t.blob_digest = b.digest)
            """, logger: logger)
        return try await dropped.bytes + dropBlobs(connection, bases, store: store, dryRun: false).bytes
    }

    package func prune(model name: ModelName, policy: RetentionPolicy, split: String?, blobs store: any BlobStore, dryRun: Bool)
        async throws(GraftError) -> RemovalReport?
    {
        try await write { connection -> RemovalReport? in
            try await self.lockBlobs(connection)
            guard
                let model = try await connection.one(
                    "SELECT id, kind FROM models WHERE name = \(name.value) FOR NO KEY UPDATE", logger: self.logger)
            else {
                return nil
            }
            let modelID: Int64 = try model["id"]
            let kind: String = try model["kind"]
            let checkpoints = try await connection.all(
                "SELECT id, number FROM checkpoints WHERE model_id = \(modelID) ORDER BY number", logger: self.logger)
            var values: [Int64: Double] = [:]
            if policy.keepBest > 0, let metric = policy.metric {
                for row in try await connection.all(
                    "SELECT checkpoint_id, value FROM metrics WHERE model_id = \(modelID) AND name = \(metric) AND split = \(split ?? "")",
                    logger: self.logger)
                {
                    values[try row[0]] = try row[1]
                }
                guard !values.isEmpty else {
                    let known = try await connection.all(
                        "SELECT DISTINCT name FROM metrics WHERE model_id = \(modelID) ORDER BY name", logger: self.logger
                    )
                    .map { row throws in try row[0] as String }
                    throw GraftError.unknownMetric(metric, known: known)
                }
            }
            var idOf: [Int: Int64] = [:]
            var candidates: [RetentionPolicy.Candidate] = []
            for row in checkpoints {
                let id: Int64 = try row["id"], number: Int = try row["number"]
                idOf[number] = id
                candidates.append(
                    RetentionPolicy.Candidate(
                        number: number, value: values[id],
                        protections: try await self.protections(connection, checkpoint: id, model: name.value, kind: kind, number: number)))
            }
            let plan = policy.plan(candidates, model: name)
            let freed = try await self.removeCheckpoints(connection, plan.remove.compactMap { idOf[$0] }, store: store, dryRun: dryRun)
            return RemovalReport(dryRun: dryRun, checkpoints: plan.removed, kept: plan.kept, bytesFreed: freed)
        }
    }

    package func removeModel(_ name: ModelName, cascade: Bool, blobs store: any BlobStore, dryRun: Bool) async throws(GraftError)
        -> RemovalReport?
    {
        try await write { connection -> RemovalReport? in
            try await self.lockBlobs(connection)
            guard let root = try await connection.one("SELECT id FROM models WHERE name = \(name.value)", logger: self.logger) else {
                return nil
            }
            let rootID: Int64 = try root[0]
            // The subtree, locked.
            let subtree = try await connection.all(
                "SELECT id, name, cardinality(lineage) AS depth FROM models WHERE lineage @> ARRAY[\(rootID)]::bigint[] FOR UPDATE",
                logger: self.logger
            ).map { row throws in ModelRemoval.Member(id: try row["id"], name: try row["name"], depth: try row["depth"]) }
            let members = try ModelRemoval.order(subtree, root: rootID, name: name.value, cascade: cascade)
            let ids = members.map(\.id)
            let checkpoints = try await connection.all(
                """
                SELECT c.id, m.name, c.number FROM checkpoints c JOIN models m ON m.id = c.model_id
                WHERE c.model_id = ANY(\(ids)) ORDER BY m.name, c.number
                """, logger: self.logger)
            if !dryRun {
                try await connection.run("DELETE FROM aliases WHERE model_id = ANY(\(ids))", logger: self.logger)
                try await connection.run("DELETE FROM model_parents WHERE model_id = ANY(\(ids))", logger: self.logger)
                try await connection.run("UPDATE models SET parent_checkpoint_id = NULL WHERE id = ANY(\(ids))", logger: self.logger)
            }
            let freed = try await self.removeCheckpoints(
                connection, try checkpoints.map { row throws in try row["id"] as Int64 }, store: store, dryRun: dryRun)
            if !dryRun { try await connection.run("DELETE FROM models WHERE id = ANY(\(ids))", logger: self.logger) }
            return RemovalReport(
                dryRun: dryRun, models: members.map(\.name),
                checkpoints: try checkpoints.map { row throws in "\(try row["name"] as String)@\(try row["number"] as Int)" },
                bytesFreed: freed)
        }
    }

    // MARK: Verification and totals

    package func checkpointCount() async throws(GraftError) -> Int {
        try await withConnection { connection in
            try await connection.one("SELECT count(*) FROM checkpoints", logger: self.logger).map { row throws in try row[0] as Int } ?? 0
        }
    }

    package func referencedBlobs() async throws(GraftError) -> (blobs: [StoredBlob], dangling: [String]) {
        try await read { connection -> (blobs: [StoredBlob], dangling: [String]) in
            let blobs = try await connection.all(
                """
                SELECT b.digest, b.byte_length, b.inline_data FROM blobs b
                WHERE EXISTS (SELECT 1 FROM blob_references t WHERE t.blob_digest = b.digest) ORDER BY b.digest
                """, logger: self.logger
            ).map { row throws in
                StoredBlob(
                    digest: try Digest(parsing: try row["digest"] as String), length: try row["byte_length"],
                    inline: try row.bytes("inline_data"))
            }
            let dangling = try await connection.all(
                """
                SELECT DISTINCT t.blob_digest FROM blob_references t LEFT JOIN blobs b ON b.digest = t.blob_digest WHERE b.digest\
                 IS NULL
                """,
                logger: self.logger
            ).map { row throws in try row[0] as String }
            return (blobs, dangling)
        }
    }

    package func knownBlobDigests() async throws(GraftError) -> Set<String> {
        try await withConnection { connection in
            Set(try await connection.all("SELECT digest FROM blobs", logger: self.logger).map { row throws in try row[0] as String })
        }
    }

    package func users(of digest: Digest) async throws(GraftError) -> [String] {
        try await withConnection { connection in
            try await connection.all(
                """
                SELECT DISTINCT m.name, c.number FROM blob_references t JOIN checkpoints c ON c.id = t.checkpoint_id
                JOIN models m ON m.id = c.model_id WHERE t.blob_digest = \(digest.hex) ORDER BY m.name, c.number
                """, logger: self.logger
            ).map { row throws in "\(try row[0] as String)@\(try row[1] as Int)" }
        }
    }

    /// What the lineage views read from `models` and `metric_summaries`, checked against what
    /// it is kept from: each lineage is its parent's and its own id, each student's copy of its
    /// edge matches `model_parents`, each checkpoint count the checkpoints, each metric summary
    /// the model's metric rows.
    package func derivedDataProblems() async throws(GraftError) -> [String] {
        try await read { connection in
            try await connection.all(
                """
                SELECT m.name, 'lineage ' || m.lineage::text || ', expected ' || (coalesce(pm.lineage, '{}') || m.id)::text
                FROM models m LEFT JOIN model_parents p ON p.model_id = m.id LEFT JOIN models pm ON pm.id = p.parent_model_id
                WHERE m.lineage IS DISTINCT FROM coalesce(pm.lineage, '{}') || m.id
                UNION ALL
                SELECT m.name, 'a ' || m.kind || (CASE WHEN p.model_id IS NULL THEN ' without' ELSE ' with' END) || ' a parent edge'
                FROM models m LEFT JOIN model_parents p ON p.model_id = m.id WHERE (m.kind = 'student') IS DISTINCT FROM (p.model_id IS\
                 NOT NULL)
                UNION ALL
                SELECT m.name, 'parent edge copied as ' || coalesce(m.relation, 'none') || ' from ' ||\
                 coalesce(m.parent_checkpoint_id::text, 'none')
                    || ' (@' || coalesce(m.parent_checkpoint_number::text, 'none') || '), recorded as ' || p.relation || ' from ' ||\
                 p.parent_checkpoint_id
                    || ' (@' || c.number || ')'
                FROM models m JOIN model_parents p ON p.model_id = m.id JOIN checkpoints c ON c.id = p.parent_checkpoint_id
                WHERE m.relation IS DISTINCT FROM p.relation OR m.parent_checkpoint_id IS DISTINCT FROM p.parent_checkpoint_id
                    OR m.parent_checkpoint_number IS DISTINCT FROM c.number
                UNION ALL
                SELECT name, 'checkpoint count ' || checkpoint_count || ', but ' || actual || ' checkpoints'
                FROM (SELECT m.name, m.checkpoint_count, (SELECT count(*) FROM checkpoints c WHERE c.model_id = m.id) AS actual FROM\
                 models m) counted
                WHERE checkpoint_count IS DISTINCT FROM actual
                UNION ALL
                SELECT m.name, 'summary of ' || a.name || (CASE a.split WHEN '' THEN '' ELSE ' (' || a.split || ')' END)
                    || coalesce(': max ' || s.max_value || ', min ' || s.min_value || ' over ' || s.count, ' missing')
                    || ', but max ' || a.top || ', min ' || a.bottom || ' over ' || a.count || ' checkpoints'
                FROM (SELECT model_id, name, split, max(value) AS top, min(value) AS bottom, count(*) AS count FROM metrics GROUP BY\
                 model_id, name, split) a
                    JOIN models m ON m.id = a.model_id LEFT JOIN metric_summaries s ON s.model_id = a.model_id AND s.name = a.name AND\
                 s.split = a.split
                WHERE s.model_id IS NULL OR s.max_value IS DISTINCT FROM a.top OR s.min_value IS DISTINCT FROM a.bottom OR s.count IS\
                 DISTINCT FROM a.count
                    OR s.lineage IS DISTINCT FROM m.lineage
                UNION ALL
                SELECT m.name, 'summary of ' || s.name || ', a metric none of its checkpoints has' FROM metric_summaries s JOIN models m\
                 ON m.id = s.model_id
                WHERE NOT EXISTS (SELECT 1 FROM metrics mt WHERE mt.model_id = s.model_id AND mt.name = s.name AND mt.split = s.split)
                """, logger: self.logger
            ).map { row throws in "\(try row[0] as String): \(try row[1] as String)" }.sorted(by: numericAwareLess)
        }
    }

    package func stats() async throws(GraftError) -> RegistryStats {
        try await read { connection in
            guard
                let row = try await connection.one(
                    """
                    SELECT (SELECT count(*) FROM models) AS models,
                           (SELECT count(*) FROM models WHERE kind = 'base') AS bases,
                           (SELECT count(*) FROM checkpoints) AS checkpoints,
                           (SELECT count(*) FROM checkpoint_tensors) AS tensors,
                           (SELECT count(*) FROM blobs) AS blobs,
                           (SELECT count(*) FROM blobs WHERE inline_data IS NOT NULL) AS inline_blobs,
                           (SELECT coalesce(sum(file_bytes), 0)::bigint FROM checkpoints) AS logical,
                           (SELECT coalesce(sum(coalesce(stored_length, byte_length)), 0)::bigint FROM blobs) AS blob_bytes,
                           (SELECT coalesce(sum(length(header)), 0)::bigint FROM checkpoints) AS header_bytes,
                           pg_database_size(current_database()) AS database_bytes,
                           (SELECT count(*) FROM models WHERE transfer_mode = 'adapter') AS adapters
                    """, logger: self.logger),
                let adapters = try await connection.one(
                    """
                    SELECT count(*) AS checkpoints, coalesce(sum(c.file_bytes), 0)::bigint AS bytes,
                           coalesce(sum(p.file_bytes), 0)::bigint AS parent_bytes
                    FROM models m JOIN checkpoints c ON c.model_id = m.id JOIN checkpoints p ON p.id = m.parent_checkpoint_id
                    WHERE m.transfer_mode = 'adapter'
                    """, logger: self.logger)
            else { throw GraftError.database(code: -1, message: "no totals") }
            let codecs = try await connection.all(
                """
                SELECT codec, count(*) AS blobs, sum(byte_length)::bigint AS raw,
                       sum(coalesce(stored_length, byte_length))::bigint AS stored FROM blobs WHERE inline_data IS NULL GROUP BY codec
                """, logger: self.logger
            ).compactMap { row throws -> CodecUsage? in
                guard let codec = BlobCodec(rawValue: try row["codec"]) else { return nil }
                return CodecUsage(codec: codec, blobs: try row["blobs"], rawBytes: try row["raw"], storedBytes: try row["stored"])
            }
            let logical: Int = try row["logical"]
            let physical = (try row["blob_bytes"] as Int) + (try row["header_bytes"] as Int)
            return RegistryStats(
                models: try row["models"], bases: try row["bases"], checkpoints: try row["checkpoints"], tensors: try row["tensors"],
                blobs: try row["blobs"], inlineBlobs: try row["inline_blobs"], logicalBytes: logical, physicalBytes: physical,
                dedupRatio: physical == 0 ? 1 : Double(logical) / Double(physical), databaseBytes: try row["database_bytes"],
                adapterModels: try row["adapters"], adapterCheckpoints: try adapters["checkpoints"], adapterBytes: try adapters["bytes"],
                adapterParentBytes: try adapters["parent_bytes"], codecs: codecs)
        }
    }
}
