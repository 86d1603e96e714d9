import Foundation
import GRDB
package import GraftCore
import GraftLocal

// What `verify` and `stats` read.
extension SQLiteMetadataStore {
    package func checkpointCount() async throws(GraftError) -> Int {
        try await read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM checkpoints") ?? 0 }
    }

    package func referencedBlobs() async throws(GraftError) -> (blobs: [StoredBlob], dangling: [String]) {
        try await read { db -> (blobs: [StoredBlob], dangling: [String]) in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT b.digest, b.byte_length, b.inline_data FROM blobs b
                    WHERE EXISTS (SELECT 1 FROM blob_references t WHERE t.blob_digest = b.digest) ORDER BY b.digest
                    """
            ).map { row in
                StoredBlob(
                    digest: try Digest(parsing: row["digest"] as String), length: row["byte_length"],
                    inline: (row["inline_data"] as Data?).map { Array($0) })
            }
            let dangling = try String.fetchAll(
                db,
                sql:
                    """
                    SELECT DISTINCT t.blob_digest FROM blob_references t LEFT JOIN blobs b ON b.digest = t.blob_digest WHERE\
                     b.digest IS NULL
                    """
            )
            return (rows, dangling)
        }
    }

    package func knownBlobDigests() async throws(GraftError) -> Set<String> {
        Set(try await read { db in try String.fetchAll(db, sql: "SELECT digest FROM blobs") })
    }

    package func users(of digest: Digest) async throws(GraftError) -> [String] {
        try await read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT DISTINCT m.name, c.number FROM blob_references t JOIN checkpoints c ON c.id = t.checkpoint_id
                    JOIN models m ON m.id = c.model_id WHERE t.blob_digest = ? ORDER BY m.name, c.number
                    """, arguments: [digest.hex]
            ).map { "\($0["name"] as String)@\($0["number"] as Int)" }
        }
    }

    package func derivedDataProblems() async throws(GraftError) -> [String] {
        try await read { db in try Self.derivedDataProblems(db) }
    }

    /// What the lineage views read from `models` (migration 0004) and `metric_summaries`
    /// (0005), checked against what it is kept from: each path is its parent's path and its own
    /// id, each student's copy of its edge matches `model_parents`, each checkpoint count
    /// matches the checkpoints, each metric summary the model's metric rows.
    static func derivedDataProblems(_ db: Database) throws -> [String] {
        try db.cachedRows(
            sql: """
                SELECT m.name, 'lineage path ' || m.lineage_path || ', expected ' || coalesce(pm.lineage_path, '/') || m.id || '/'
                FROM models m LEFT JOIN model_parents p ON p.model_id = m.id LEFT JOIN models pm ON pm.id = p.parent_model_id
                WHERE m.lineage_path IS NOT coalesce(pm.lineage_path, '/') || m.id || '/'
                UNION ALL
                SELECT m.name, 'a ' || m.kind || (CASE WHEN p.model_id IS NULL THEN ' without' ELSE ' with' END) || ' a parent edge'
                FROM models m LEFT JOIN model_parents p ON p.model_id = m.id WHERE (m.kind = 'student') IS NOT (p.model_id IS NOT NULL)
                UNION ALL
                SELECT m.name, 'parent edge copied as ' || coalesce(m.relation, 'none') || ' from ' || coalesce(m.parent_checkpoint_id,\
                 'none')
                    || ' (@' || coalesce(m.parent_checkpoint_number, 'none') || '), recorded as ' || p.relation || ' from ' ||\
                 p.parent_checkpoint_id
                    || ' (@' || c.number || ')'
                FROM models m JOIN model_parents p ON p.model_id = m.id JOIN checkpoints c ON c.id = p.parent_checkpoint_id
                WHERE m.relation IS NOT p.relation OR m.parent_checkpoint_id IS NOT p.parent_checkpoint_id OR m.parent_checkpoint_number\
                 IS NOT c.number
                UNION ALL
                SELECT name, 'checkpoint count ' || checkpoint_count || ', but ' || actual || ' checkpoints'
                FROM (SELECT m.name, m.checkpoint_count, (SELECT count(*) FROM checkpoints c WHERE c.model_id = m.id) AS actual FROM\
                 models m)
                WHERE checkpoint_count IS NOT actual
                UNION ALL
                SELECT m.name, 'summary of ' || a.name || (CASE a.split WHEN '' THEN '' ELSE ' (' || a.split || ')' END)
                    || coalesce(': max ' || s.max_value || ', min ' || s.min_value || ' over ' || s.count, ' missing')
                    || ', but max ' || a.top || ', min ' || a.bottom || ' over ' || a.count || ' checkpoints'
                FROM (SELECT model_id, name, split, max(value) AS top, min(value) AS bottom, count(*) AS count FROM metrics GROUP BY\
                 model_id, name, split) a
                    JOIN models m ON m.id = a.model_id LEFT JOIN metric_summaries s ON s.model_id = a.model_id AND s.name = a.name AND\
                 s.split = a.split
                WHERE s.model_id IS NULL OR s.max_value IS NOT a.top OR s.min_value IS NOT a.bottom OR s.count IS NOT a.count
                    OR s.lineage_path IS NOT m.lineage_path
                UNION ALL
                SELECT m.name, 'summary of ' || s.name || ', a metric none of its checkpoints has' FROM metric_summaries s JOIN models m\
                 ON m.id = s.model_id
                WHERE NOT EXISTS (SELECT 1 FROM metrics mt WHERE mt.model_id = s.model_id AND mt.name = s.name AND mt.split = s.split)
                """
        ).map { "\($0[0] as String): \($0[1] as String)" }.sorted(by: numericAwareLess)
    }

    package func stats() async throws(GraftError) -> RegistryStats {
        let path = self.path
        return try await read { db in
            let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT (SELECT count(*) FROM models) AS models,
                           (SELECT count(*) FROM models WHERE kind = 'base') AS bases,
                           (SELECT count(*) FROM checkpoints) AS checkpoints,
                           (SELECT count(*) FROM checkpoint_tensors) AS tensors,
                           (SELECT count(*) FROM blobs) AS blobs,
                           (SELECT count(*) FROM blobs WHERE inline_data IS NOT NULL) AS inline_blobs,
                           (SELECT coalesce(sum(file_bytes), 0) FROM checkpoints) AS logical,
                           (SELECT coalesce(sum(coalesce(stored_length, byte_length)), 0) FROM blobs) AS blob_bytes,
                           (SELECT coalesce(sum(length(header)), 0) FROM checkpoints) AS header_bytes,
                           (SELECT count(*) FROM models WHERE transfer_mode = 'adapter') AS adapters
                    """)!
            let adapters = try Row.fetchOne(
                db,
                sql: """
                    SELECT count(*) AS checkpoints, coalesce(sum(c.file_bytes), 0) AS bytes, coalesce(sum(p.file_bytes), 0) AS parent_bytes
                    FROM models m JOIN checkpoints c ON c.model_id = m.id JOIN checkpoints p ON p.id = m.parent_checkpoint_id
                    WHERE m.transfer_mode = 'adapter'
                    """)!
            let codecs = try Row.fetchAll(
                db,
                sql: """
                    SELECT codec, count(*) AS blobs, sum(byte_length) AS raw, sum(coalesce(stored_length, byte_length)) AS stored
                    FROM blobs WHERE inline_data IS NULL GROUP BY codec
                    """
            ).compactMap { row in
                BlobCodec(rawValue: row["codec"]).map {
                    CodecUsage(codec: $0, blobs: row["blobs"], rawBytes: row["raw"], storedBytes: row["stored"])
                }
            }
            let logical: Int = row["logical"]
            let physical = (row["blob_bytes"] as Int) + (row["header_bytes"] as Int)
            var databaseBytes = 0
            for suffix in ["", "-wal", "-shm"] {
                databaseBytes += (try? FileSystem.fileSize(path + suffix)).flatMap { $0 } ?? 0
            }
            return RegistryStats(
                models: row["models"], bases: row["bases"], checkpoints: row["checkpoints"], tensors: row["tensors"],
                blobs: row["blobs"], inlineBlobs: row["inline_blobs"], logicalBytes: logical, physicalBytes: physical,
                dedupRatio: physical == 0 ? 1 : Double(logical) / Double(physical), databaseBytes: databaseBytes,
                adapterModels: row["adapters"], adapterCheckpoints: adapters["checkpoints"], adapterBytes: adapters["bytes"],
                adapterParentBytes: adapters["parent_bytes"], codecs: codecs)
        }
    }
}
