package import GraftCore
import PostgresNIO

// What `graft compact` reads and records (issue 27), as the SQLite store.
extension PostgresMetadataStore {
    package func compactionInventory() async throws(GraftError) -> CompactionInventory {
        try await read { connection in
            let rows = try await connection.all(
                """
                SELECT t.checkpoint_id, m.parent_checkpoint_id, c.model_id, t.name, t.dtype, t.blob_digest, b.byte_length
                FROM checkpoint_tensors t JOIN blobs b ON b.digest = t.blob_digest AND b.inline_data IS NULL
                JOIN checkpoints c ON c.id = t.checkpoint_id JOIN models m ON m.id = c.model_id
                UNION ALL
                SELECT f.checkpoint_id, m.parent_checkpoint_id, c.model_id, f.path, NULL, f.blob_digest, b.byte_length
                FROM checkpoint_files f JOIN blobs b ON b.digest = f.blob_digest AND b.inline_data IS NULL
                JOIN checkpoints c ON c.id = f.checkpoint_id JOIN models m ON m.id = c.model_id
                ORDER BY 1
                """, logger: self.logger
            ).compactMap { row throws -> CompactionRow? in
                guard let digest = try? Digest(parsing: try row[5] as String) else { return nil }
                return CompactionRow(
                    checkpoint: try row[0], parentCheckpoint: try row[1], model: try row[2], name: try row[3], dtype: try row[4],
                    digest: digest, length: try row[6])
            }
            var encodings: [Digest: BlobEncoding] = [:]
            for row in try await connection.all(
                """
                SELECT digest, codec, stored_length, base_digest FROM blobs
                WHERE codec <> 'raw' OR base_digest IS NOT NULL OR stored_length IS NOT NULL
                """, logger: self.logger)
            {
                guard let digest = try? Digest(parsing: try row["digest"] as String), let codec = BlobCodec(rawValue: try row["codec"])
                else { continue }
                let base = (try row["base_digest"] as String?).flatMap { try? Digest(parsing: $0) }
                encodings[digest] = BlobEncoding(codec: codec, storedLength: try row["stored_length"], base: base)
            }
            return CompactionInventory(rows: rows, encodings: encodings)
        }
    }

    package func setEncoding(_ digest: Digest, _ encoding: BlobEncoding) async throws(GraftError) -> Bool {
        try await write { connection in
            try await connection.changes(
                """
                UPDATE blobs SET codec = \(encoding.codec.rawValue), stored_length = \(encoding.storedLength),
                 base_digest = \(encoding.base?.hex) WHERE digest = \(digest.hex) AND inline_data IS NULL RETURNING 1
                """, logger: self.logger) > 0
        }
    }
}
