import Foundation
import GRDB
import GRDBSQLite
package import GraftCore
import GraftLocal
import SafeTensors

// Writes: commits of bases, students and checkpoints; aliases, metrics, curves, advisories.
extension SQLiteMetadataStore {
    package func insertBase(
        name: ModelName, provenance: Provenance, checkpoint: NewCheckpoint, stillStored: @escaping @Sendable (Digest) -> Bool
    ) async throws(GraftError) -> Int {
        let provenanceMetadata = encodeJSON(provenance.metadata)
        return try await write { db -> Int in
            if try Int.fetchOne(db, sql: "SELECT id FROM models WHERE name = ?", arguments: [name.value]) != nil {
                throw GraftError.modelExists(name)
            }
            let now = timestamp()
            let copied = checkpoint.copied
            try db.execute(
                sql: """
                    INSERT INTO models (name, kind, description, source, license, dataset, architecture, task, metadata, created_at)
                    VALUES (?, 'base', ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    name.value, provenance.description, provenance.source, provenance.license, provenance.dataset,
                    provenance.architecture, provenance.task, provenanceMetadata, copied?.modelCreatedAt ?? now,
                ])
            let modelID = db.lastInsertedRowID
            try db.execute(sql: "UPDATE models SET lineage_path = '/' || id || '/' WHERE id = ?", arguments: [modelID])
            let stored = try Self.insertBlobs(db, checkpoint.blobs, stillStored: stillStored, now: now)
            try Self.insertCheckpoint(db, modelID: modelID, number: copied?.number ?? 1, checkpoint, now: copied?.createdAt ?? now)
            return stored
        }
    }

    package func insertStudent(_ student: NewStudent) async throws(GraftError) {
        try await write { db in
            if try Int.fetchOne(db, sql: "SELECT id FROM models WHERE name = ?", arguments: [student.name.value]) != nil {
                throw GraftError.modelExists(student.name)
            }
            let parentModel = try Int64.fetchOne(db, sql: "SELECT model_id FROM checkpoints WHERE id = ?", arguments: [student.parent.id])
            guard let parentModel else {
                throw GraftError.checkpointNotFound(student.parent.summary.reference, available: "it was removed meanwhile")
            }
            // The model row carries a copy of its parent edge, and its line of descent: the
            // parent's, then its own id (see migration 0004).
            try db.execute(
                sql: """
                    INSERT INTO models (name, kind, description, transfer_mode, manifest_rules, relation, parent_checkpoint_id,
                        parent_checkpoint_number, created_at)
                    VALUES (?, 'student', ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    student.name.value, student.description, student.mode.rawValue, student.rules, student.relation.rawValue,
                    student.parent.id,
                    student.parent.summary.number, student.createdAt,
                ])
            let modelID = db.lastInsertedRowID
            try db.execute(
                sql: "UPDATE models SET lineage_path = (SELECT lineage_path FROM models WHERE id = ?) || id || '/' WHERE id = ?",
                arguments: [parentModel, modelID])
            try db.execute(
                sql:
                    """
                    INSERT INTO model_parents (model_id, parent_checkpoint_id, parent_model_id, relation, created_at) VALUES (?, ?,\
                     ?, ?, ?)
                    """,
                arguments: [modelID, student.parent.id, parentModel, student.relation.rawValue, student.createdAt])
            let statement = try db.cachedStatement(
                sql: """
                    INSERT INTO manifest_entries (model_id, tensor_name, state, dtype, shape, element_count, parent_digest)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """)
            for entry in student.entries {
                try statement.execute(arguments: [
                    modelID, entry.name, entry.state.rawValue, entry.dtype?.rawValue, entry.shape.map(shapeJSON), entry.parameters,
                    entry.parentDigest?.hex,
                ])
            }
        }
    }

    package func insertCheckpoint(
        model name: ModelName, _ checkpoint: NewCheckpoint, metrics: [MetricAssignment], split: String?, newTensors: [String]?,
        stillStored: @escaping @Sendable (Digest) -> Bool
    ) async throws(GraftError) -> (number: Int, inlineStored: Int) {
        try await write { db -> (number: Int, inlineStored: Int) in
            guard let modelID = try Int64.fetchOne(db, sql: "SELECT id FROM models WHERE name = ?", arguments: [name.value]) else {
                throw GraftError.modelNotFound(name, suggestions: [])
            }
            let now = timestamp()
            let stored = try Self.insertBlobs(db, checkpoint.blobs, stillStored: stillStored, now: now)
            let newest = try Int.fetchOne(db, sql: "SELECT max(number) FROM checkpoints WHERE model_id = ?", arguments: [modelID]) ?? 0
            let number = try copiedNumber(checkpoint, model: name, newest: newest) ?? newest + 1
            let checkpointID = try Self.insertCheckpoint(
                db, modelID: modelID, number: number, checkpoint, now: checkpoint.copied?.createdAt ?? now)
            try Self.insertMetrics(db, checkpointID: checkpointID, metrics, split: split)
            if let newTensors {
                let newNames = Set(newTensors)
                let statement = try db.cachedStatement(
                    sql: """
                        INSERT INTO manifest_entries (model_id, tensor_name, state, dtype, shape, element_count, parent_digest)
                        VALUES (?, ?, 'new', ?, ?, ?, NULL)
                        ON CONFLICT (model_id, tensor_name) DO UPDATE SET dtype = excluded.dtype, shape = excluded.shape,
                            element_count = excluded.element_count WHERE manifest_entries.state = 'new'
                        """)
                for tensor in checkpoint.tensors where newNames.contains(tensor.info.name) {
                    try statement.execute(arguments: [
                        modelID, tensor.info.name, tensor.info.dtype.rawValue, shapeJSON(tensor.info.shape), tensor.info.elementCount,
                    ])
                }
            }
            return (number, stored)
        }
    }

    /// Inserts a checkpoint row and its tensors (the blobs must be recorded already); returns its id.
    @discardableResult
    static func insertCheckpoint(_ db: Database, modelID: Int64, number: Int, _ checkpoint: NewCheckpoint, now: String) throws -> Int64 {
        try db.execute(
            sql: """
                INSERT INTO checkpoints (model_id, number, digest, header, header_digest, metadata, tensor_count,
                    parameter_count, data_bytes, file_bytes, step, epoch, created_at, idempotency_key)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                modelID, number, checkpoint.digest.hex, Data(checkpoint.headerBytes), checkpoint.headerDigest.hex,
                encodeJSON(checkpoint.metadata),
                checkpoint.tensors.count, checkpoint.parameterCount, checkpoint.dataLength, checkpoint.fileBytes,
                checkpoint.step, checkpoint.epoch, now, checkpoint.idempotencyKey,
            ])
        let id = db.lastInsertedRowID
        let statement = try db.cachedStatement(
            sql: """
                INSERT INTO checkpoint_tensors (checkpoint_id, position, name, dtype, shape, element_count, byte_length, blob_digest)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """)
        for (position, tensor) in checkpoint.tensors.enumerated() {
            try statement.execute(arguments: [
                id, position, tensor.info.name, tensor.info.dtype.rawValue, shapeJSON(tensor.info.shape),
                tensor.info.elementCount, tensor.info.byteCount, tensor.digest.hex,
            ])
        }
        if !checkpoint.files.isEmpty {
            let file = try db.cachedStatement(
                sql: """
                    INSERT INTO checkpoint_files (checkpoint_id, path, kind, header, first_tensor, tensor_count, blob_digest, byte_length)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """)
            for entry in checkpoint.files {
                switch entry.content {
                case .shard(let header, let first, let count):
                    let data = checkpoint.tensors[first..<(first + count)].reduce(0) { $0 + $1.info.byteCount }
                    try file.execute(arguments: [id, entry.path, "shard", Data(header), first, count, nil, header.count + data])
                case .file(let digest, let length, _):
                    try file.execute(arguments: [id, entry.path, "file", nil, nil, nil, digest.hex, length])
                }
            }
        }
        if let signature = checkpoint.signature { try insertSignature(db, checkpoint: id, signature) }
        return id
    }

    /// Records a checkpoint's signature, replacing the one it had.
    static func insertSignature(_ db: Database, checkpoint id: Int64, _ signature: StoredSignature) throws {
        try db.execute(
            sql: """
                INSERT INTO checkpoint_signatures (checkpoint_id, bundle, key_hint, root_digest, file_count, signed_at, verified, origin)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (checkpoint_id) DO UPDATE SET bundle = excluded.bundle, key_hint = excluded.key_hint,
                    root_digest = excluded.root_digest, file_count = excluded.file_count, signed_at = excluded.signed_at,
                    verified = excluded.verified, origin = excluded.origin
                """,
            arguments: [
                id, Data(signature.bundle), signature.keyHint, signature.rootDigest.hex, signature.fileCount, signature.signedAt,
                signature.verified, signature.origin,
            ])
    }

    package func recordSignature(checkpoint id: Int64, _ signature: StoredSignature) async throws(GraftError) {
        try await write { db in
            // A checkpoint removed since it was resolved: nothing to sign (the foreign key would refuse it too).
            guard try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM checkpoints WHERE id = ?)", arguments: [id]) == true else {
                throw GraftError.busy
            }
            try Self.insertSignature(db, checkpoint: id, signature)
        }
    }

    /// Records blobs, checking under the write lock that every stored blob is still there (gc
    /// may have removed one since the import found it). Returns the inline bytes newly stored.
    static func insertBlobs(_ db: Database, _ tensors: [IngestedTensor], stillStored: (Digest) -> Bool, now: String) throws -> Int {
        var stored = 0
        var seen = Set<Digest>()
        let statement = try db.cachedStatement(
            sql: "INSERT INTO blobs (digest, byte_length, inline_data, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING")
        for tensor in tensors where seen.insert(tensor.digest).inserted {
            if tensor.inline == nil, !stillStored(tensor.digest) {
                throw GraftError.blobVanished(tensor.digest)
            }
            try statement.execute(arguments: [tensor.digest.hex, tensor.info.byteCount, tensor.inline.map { Data($0) }, now])
            if tensor.inline != nil, db.changesCount > 0 { stored += tensor.info.byteCount }
        }
        return stored
    }

    package func tag(checkpoint: Int64, alias: String) async throws(GraftError) -> Int?? {
        try await write { db -> Int?? in
            guard let modelID = try Int64.fetchOne(db, sql: "SELECT model_id FROM checkpoints WHERE id = ?", arguments: [checkpoint]) else {
                return nil
            }
            let previous = try Int.fetchOne(
                db, sql: "SELECT c.number FROM aliases a JOIN checkpoints c ON c.id = a.checkpoint_id WHERE a.model_id = ? AND a.alias = ?",
                arguments: [modelID, alias])
            try db.execute(
                sql: """
                    INSERT INTO aliases (model_id, alias, checkpoint_id, updated_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT (model_id, alias) DO UPDATE SET checkpoint_id = excluded.checkpoint_id, updated_at = excluded.updated_at
                    """, arguments: [modelID, alias, checkpoint, timestamp()])
            return .some(previous)
        }
    }

    package func untag(model: Int64, alias: String) async throws(GraftError) -> Bool {
        try await write { db -> Bool in
            try db.execute(sql: "DELETE FROM aliases WHERE model_id = ? AND alias = ?", arguments: [model, alias])
            return db.changesCount > 0
        }
    }

    package func logMetrics(checkpoint: Int64, _ values: [MetricAssignment], split: String?) async throws(GraftError) {
        try await write { db in try Self.insertMetrics(db, checkpointID: checkpoint, values, split: split) }
    }

    static func insertMetrics(_ db: Database, checkpointID: Int64, _ values: [MetricAssignment], split: String?) throws {
        let statement = try db.cachedStatement(
            sql: """
                INSERT INTO metrics (checkpoint_id, model_id, name, split, value, created_at)
                VALUES (?, (SELECT model_id FROM checkpoints WHERE id = ?), ?, ?, ?, ?)
                ON CONFLICT (checkpoint_id, name, split) DO UPDATE SET value = excluded.value, created_at = excluded.created_at
                """)
        let now = timestamp()
        for value in values { try statement.execute(arguments: [checkpointID, checkpointID, value.name, split ?? "", value.value, now]) }
    }

    package func insertCurvePoints(model: Int64, _ batch: CurveBatch) async throws(GraftError) {
        try await write { db in try Self.insertCurvePoints(db, modelID: model, batch) }
    }

    /// Inserts curve points in key order, binding through SQLite's C API: this is the bulk
    /// path (`metric import`), where per-row overhead decides the rate.
    static func insertCurvePoints(_ db: Database, modelID: Int64, _ batch: CurveBatch) throws {
        // One curve row per name; points reference it by integer.
        var curveIDs: [Int64] = []
        for name in batch.names {
            try db.execute(
                sql: "INSERT INTO curves (model_id, name) VALUES (?, ?) ON CONFLICT (model_id, name) DO NOTHING",
                arguments: [modelID, name])
            curveIDs.append(
                try Int64.fetchOne(db, sql: "SELECT id FROM curves WHERE model_id = ? AND name = ?", arguments: [modelID, name])!)
        }
        // Rows in primary-key order append to the B-tree instead of splitting pages all over it.
        var order = Array(0..<batch.count)
        order.sort { (batch.nameIndex[$0], batch.steps[$0]) < (batch.nameIndex[$1], batch.steps[$1]) }
        // Many rows per statement: each execution of a statement opens and closes its cursors,
        // which cost more than the row itself when it carries one.
        let perStatement = 256
        func statement(rows: Int) throws -> Statement {
            let values = Array(repeating: "(?, ?, ?)", count: rows).joined(separator: ", ")
            return try db.cachedStatement(
                sql:
                    """
                    INSERT INTO curve_points (curve_id, step, value) VALUES \(values) ON CONFLICT (curve_id, step) DO UPDATE SET\
                     value = excluded.value
                    """
            )
        }
        var start = 0
        while start < order.count {
            let count = min(perStatement, order.count - start)
            let handle = try statement(rows: count).sqliteStatement
            sqlite3_reset(handle)
            for (offset, index) in order[start..<(start + count)].enumerated() {
                let column = Int32(offset * 3)
                sqlite3_bind_int64(handle, column + 1, curveIDs[Int(batch.nameIndex[index])])
                sqlite3_bind_int64(handle, column + 2, Int64(batch.steps[index]))
                sqlite3_bind_double(handle, column + 3, batch.values[index])
            }
            let code = sqlite3_step(handle)
            sqlite3_reset(handle)
            guard code == SQLITE_DONE else {
                throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
            }
            start += count
        }
    }

    package func insertAdvisory(_ advisory: NewAdvisory) async throws(GraftError) {
        try await write { db in
            if try db.cachedOne(Bool.self, sql: "SELECT 1 FROM advisories WHERE id = ?", arguments: [advisory.id]) ?? false {
                throw GraftError.advisoryExists(advisory.id)
            }
            try db.execute(
                sql: "INSERT INTO advisories (id, model_id, checkpoint_id, severity, note, url, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                arguments: [
                    advisory.id, advisory.model, advisory.checkpoint, advisory.severity.rawValue, advisory.note, advisory.url,
                    advisory.createdAt,
                ])
        }
    }

    package func resolveAdvisory(_ id: String, at time: String) async throws(GraftError) -> Bool? {
        try await write { db -> Bool? in
            try db.execute(sql: "UPDATE advisories SET resolved_at = ? WHERE id = ? AND resolved_at IS NULL", arguments: [time, id])
            if db.changesCount > 0 { return true }
            return try db.cachedOne(Bool.self, sql: "SELECT 1 FROM advisories WHERE id = ?", arguments: [id]) == nil ? nil : false
        }
    }
}
