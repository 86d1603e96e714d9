#if canImport(Glibc)
    import Glibc
#endif
import Dispatch
import Foundation
import GRDB
import SafeTensors
import Synchronization

extension Registry {
    /// Checks that every checkpoint's blobs exist with the right size; with `readData`, rehashes
    /// every blob (two lanes in parallel).
    ///
    /// Each problem names the blob and every checkpoint that uses it. Nothing is repaired.
    public func verify(readData: Bool = false) async throws(GraftError) -> VerifyReport {
        struct BlobRow: Sendable { let digest: Digest; let length: Int; let inline: [UInt8]? }
        let (checkpointCount, rows, dangling) = try await read { db -> (Int, [BlobRow], [String]) in
            let count = try Int.fetchOne(db, sql: "SELECT count(*) FROM checkpoints") ?? 0
            let rows = try Row.fetchAll(
                db, sql: """
                    SELECT b.digest, b.byte_length, b.inline_data FROM blobs b
                    WHERE EXISTS (SELECT 1 FROM checkpoint_tensors t WHERE t.blob_digest = b.digest) ORDER BY b.digest
                    """
            ).map { row in
                BlobRow(digest: try Digest(parsing: row["digest"] as String), length: row["byte_length"], inline: (row["inline_data"] as Data?).map { Array($0) })
            }
            let dangling = try String.fetchAll(
                db, sql: "SELECT DISTINCT t.blob_digest FROM checkpoint_tensors t LEFT JOIN blobs b ON b.digest = t.blob_digest WHERE b.digest IS NULL")
            return (count, rows, dangling)
        }
        let blobs = self.blobs
        let found = Mutex<[(Digest, BlobProblem.Kind, String)]>([])
        let bytesRead = Atomic<Int>(0)
        for hex in dangling {
            if let digest = try? Digest(parsing: hex) { found.withLock { $0.append((digest, .missing, "no blob row")) } }
        }
        let lanes = readData ? 2 : 1
        await BlobTransfer.inLanes(lanes) { lane, buffer in
            for index in stride(from: lane, to: rows.count, by: lanes) {
                let row = rows[index]
                if let problem = blobs.check(row.digest, length: row.length, inline: row.inline, readData: readData, buffer: buffer, bytesRead: { bytesRead.add($0, ordering: .relaxed) }) {
                    found.withLock { $0.append((row.digest, problem.kind, problem.detail)) }
                }
            }
        }
        var problems: [BlobProblem] = []
        var damaged = Set<String>()
        for (digest, kind, detail) in found.withLock({ $0 }).sorted(by: { $0.0 < $1.0 }) {
            let users = try await read { db in
                try Row.fetchAll(
                    db, sql: """
                        SELECT DISTINCT m.name, c.number FROM checkpoint_tensors t JOIN checkpoints c ON c.id = t.checkpoint_id
                        JOIN models m ON m.id = c.model_id WHERE t.blob_digest = ? ORDER BY m.name, c.number
                        """, arguments: [digest.hex]
                ).map { "\($0["name"] as String)@\($0["number"] as Int)" }
            }
            damaged.formUnion(users)
            problems.append(BlobProblem(digest: digest, kind: kind, detail: detail, checkpoints: users))
        }
        var report = VerifyReport(
            checkpoints: checkpointCount, blobs: rows.count, readData: readData, bytesRead: bytesRead.load(ordering: .relaxed),
            problems: problems, damagedCheckpoints: damaged.sorted(by: numericAwareLess))
        let known = Set(try await read { db in try String.fetchAll(db, sql: "SELECT digest FROM blobs") })
        (report.strayFiles, report.orphanFiles) = strayAndOrphanFiles(known: known)
        report.lineageProblems = try await read { db in try Self.lineageProblems(db) }
        return report
    }

    /// What the lineage views read from `models` (migration 0004) and `metric_summaries`
    /// (0005), checked against what it is kept from: each path is its parent's path and its own
    /// id, each student's copy of its edge matches `model_parents`, each checkpoint count
    /// matches the checkpoints, each metric summary the model's metric rows.
    static func lineageProblems(_ db: Database) throws -> [String] {
        try db.cachedRows(sql: """
                SELECT m.name, 'lineage path ' || m.lineage_path || ', expected ' || coalesce(pm.lineage_path, '/') || m.id || '/'
                FROM models m LEFT JOIN model_parents p ON p.model_id = m.id LEFT JOIN models pm ON pm.id = p.parent_model_id
                WHERE m.lineage_path IS NOT coalesce(pm.lineage_path, '/') || m.id || '/'
                UNION ALL
                SELECT m.name, 'a ' || m.kind || (CASE WHEN p.model_id IS NULL THEN ' without' ELSE ' with' END) || ' a parent edge'
                FROM models m LEFT JOIN model_parents p ON p.model_id = m.id WHERE (m.kind = 'student') IS NOT (p.model_id IS NOT NULL)
                UNION ALL
                SELECT m.name, 'parent edge copied as ' || coalesce(m.relation, 'none') || ' from ' || coalesce(m.parent_checkpoint_id, 'none')
                    || ' (@' || coalesce(m.parent_checkpoint_number, 'none') || '), recorded as ' || p.relation || ' from ' || p.parent_checkpoint_id
                    || ' (@' || c.number || ')'
                FROM models m JOIN model_parents p ON p.model_id = m.id JOIN checkpoints c ON c.id = p.parent_checkpoint_id
                WHERE m.relation IS NOT p.relation OR m.parent_checkpoint_id IS NOT p.parent_checkpoint_id OR m.parent_checkpoint_number IS NOT c.number
                UNION ALL
                SELECT name, 'checkpoint count ' || checkpoint_count || ', but ' || actual || ' checkpoints'
                FROM (SELECT m.name, m.checkpoint_count, (SELECT count(*) FROM checkpoints c WHERE c.model_id = m.id) AS actual FROM models m)
                WHERE checkpoint_count IS NOT actual
                UNION ALL
                SELECT m.name, 'summary of ' || a.name || (CASE a.split WHEN '' THEN '' ELSE ' (' || a.split || ')' END)
                    || coalesce(': max ' || s.max_value || ', min ' || s.min_value || ' over ' || s.count, ' missing')
                    || ', but max ' || a.top || ', min ' || a.bottom || ' over ' || a.count || ' checkpoints'
                FROM (SELECT model_id, name, split, max(value) AS top, min(value) AS bottom, count(*) AS count FROM metrics GROUP BY model_id, name, split) a
                    JOIN models m ON m.id = a.model_id LEFT JOIN metric_summaries s ON s.model_id = a.model_id AND s.name = a.name AND s.split = a.split
                WHERE s.model_id IS NULL OR s.max_value IS NOT a.top OR s.min_value IS NOT a.bottom OR s.count IS NOT a.count
                    OR s.lineage_path IS NOT m.lineage_path
                UNION ALL
                SELECT m.name, 'summary of ' || s.name || ', a metric none of its checkpoints has' FROM metric_summaries s JOIN models m ON m.id = s.model_id
                WHERE NOT EXISTS (SELECT 1 FROM metrics mt WHERE mt.model_id = s.model_id AND mt.name = s.name AND mt.split = s.split)
                """
        ).map { "\($0[0] as String): \($0[1] as String)" }.sorted(by: numericAwareLess)
    }

    /// What the blob store holds beyond the blob rows: stray entries (not blobs: damage) and
    /// orphans (well-formed blobs no row knows: an interrupted import's, gc's job).
    func strayAndOrphanFiles(known: Set<String>) -> (stray: [String], orphans: Int) {
        let inventory = blobs.store.inventory()
        return (inventory.stray, inventory.blobs.filter { !known.contains($0.hex) }.count)
    }

    /// Totals over the registry: models, checkpoints, logical and physical bytes.
    public func stats() async throws(GraftError) -> RegistryStats {
        let layout = self.layout
        return try await read { db in
            let row = try Row.fetchOne(
                db, sql: """
                    SELECT (SELECT count(*) FROM models) AS models,
                           (SELECT count(*) FROM models WHERE kind = 'base') AS bases,
                           (SELECT count(*) FROM checkpoints) AS checkpoints,
                           (SELECT count(*) FROM checkpoint_tensors) AS tensors,
                           (SELECT count(*) FROM blobs) AS blobs,
                           (SELECT count(*) FROM blobs WHERE inline_data IS NOT NULL) AS inline_blobs,
                           (SELECT coalesce(sum(file_bytes), 0) FROM checkpoints) AS logical,
                           (SELECT coalesce(sum(byte_length), 0) FROM blobs) AS blob_bytes,
                           (SELECT coalesce(sum(length(header)), 0) FROM checkpoints) AS header_bytes
                    """)!
            let logical: Int = row["logical"]
            let physical = (row["blob_bytes"] as Int) + (row["header_bytes"] as Int)
            var databaseBytes = 0
            for suffix in ["", "-wal", "-shm"] {
                databaseBytes += (try? FileSystem.fileSize(layout.database + suffix)).flatMap { $0 } ?? 0
            }
            return RegistryStats(
                models: row["models"], bases: row["bases"], checkpoints: row["checkpoints"], tensors: row["tensors"],
                blobs: row["blobs"], inlineBlobs: row["inline_blobs"], logicalBytes: logical, physicalBytes: physical,
                dedupRatio: physical == 0 ? 1 : Double(logical) / Double(physical), databaseBytes: databaseBytes)
        }
    }
}
