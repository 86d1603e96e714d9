import GRDB
package import GraftCore

// What `graft compact` reads and records (issue 27).
extension SQLiteMetadataStore {
    package func compactionInventory() async throws(GraftError) -> CompactionInventory {
        try await read { db in
            // Tensors and files through their tables' primary keys, ordered by checkpoint: a
            // parent checkpoint always has a smaller id than its students'.
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT t.checkpoint_id, m.parent_checkpoint_id, c.model_id, t.name, t.dtype, t.blob_digest, b.byte_length
                    FROM checkpoint_tensors t JOIN blobs b ON b.digest = t.blob_digest AND b.inline_data IS NULL
                    JOIN checkpoints c ON c.id = t.checkpoint_id JOIN models m ON m.id = c.model_id
                    UNION ALL
                    SELECT f.checkpoint_id, m.parent_checkpoint_id, c.model_id, f.path, NULL, f.blob_digest, b.byte_length
                    FROM checkpoint_files f JOIN blobs b ON b.digest = f.blob_digest AND b.inline_data IS NULL
                    JOIN checkpoints c ON c.id = f.checkpoint_id JOIN models m ON m.id = c.model_id
                    ORDER BY 1
                    """
            ).compactMap { row -> CompactionRow? in
                guard let digest = try? Digest(parsing: row[5] as String) else { return nil }
                return CompactionRow(
                    checkpoint: row[0], parentCheckpoint: row[1], model: row[2], name: row[3], dtype: row[4], digest: digest,
                    length: row[6])
            }
            var encodings: [Digest: BlobEncoding] = [:]
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT digest, codec, stored_length, base_digest FROM blobs
                    WHERE codec != 'raw' OR base_digest IS NOT NULL OR stored_length IS NOT NULL
                    """
            ) {
                guard let digest = try? Digest(parsing: row["digest"] as String), let codec = BlobCodec(rawValue: row["codec"]) else {
                    continue
                }
                let base = (row["base_digest"] as String?).flatMap { try? Digest(parsing: $0) }
                encodings[digest] = BlobEncoding(codec: codec, storedLength: row["stored_length"], base: base)
            }
            return CompactionInventory(rows: rows, encodings: encodings)
        }
    }

    package func setEncoding(_ digest: Digest, _ encoding: BlobEncoding) async throws(GraftError) -> Bool {
        try await write { db in
            try db.execute(
                sql: "UPDATE blobs SET codec = ?, stored_length = ?, base_digest = ? WHERE digest = ? AND inline_data IS NULL",
                arguments: [encoding.codec.rawValue, encoding.storedLength, encoding.base?.hex, digest.hex])
            return db.changesCount > 0
        }
    }
}
