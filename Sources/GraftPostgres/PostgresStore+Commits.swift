package import GraftCore
import NIOCore
import PostgresNIO
import SafeTensors

// Writes: commits of bases, students and checkpoints; aliases, metrics, curves, advisories.
// Rows of one kind go in one statement (arrays unnested), so a commit's cost in round trips
// does not grow with its tensor count.
extension PostgresMetadataStore {
    package func insertBase(
        name: ModelName, provenance: Provenance, checkpoint: NewCheckpoint, stillStored: @escaping @Sendable (Digest) -> Bool
    ) async throws(GraftError) -> Int {
        let metadata = encodeJSON(provenance.metadata)
        return try await write { connection in
            let now = timestamp()
            let copied = checkpoint.copied
            guard
                let row = try await connection.one(
                    """
                    INSERT INTO models (name, kind, description, source, license, dataset, architecture, task, metadata, created_at,\
                     lineage)
                    VALUES (\(name.value), 'base', \(provenance.description), \(provenance.source), \(provenance.license),\
                     \(provenance.dataset),
                            \(provenance.architecture), \(provenance.task), \(metadata)::jsonb, \(copied?.modelCreatedAt ?? now),\
                     '{}')
                    ON CONFLICT (name) DO NOTHING RETURNING id
                    """, logger: self.logger)
            else { throw GraftError.modelExists(name) }
            let modelID: Int64 = try row[0]
            try await connection.run("UPDATE models SET lineage = ARRAY[id] WHERE id = \(modelID)", logger: self.logger)
            let stored = try await self.insertBlobs(connection, checkpoint.blobs, stillStored: stillStored, now: now)
            try await self.insertCheckpoint(
                connection, modelID: modelID, number: copied?.number ?? 1, checkpoint, now: copied?.createdAt ?? now)
            return stored
        }
    }

    package func insertStudent(_ student: NewStudent) async throws(GraftError) {
        try await write { connection in
            // The parent checkpoint's row is locked against a removal until this commits.
            guard
                let parent = try await connection.one(
                    "SELECT model_id FROM checkpoints WHERE id = \(student.parent.id) FOR KEY SHARE", logger: self.logger)
            else {
                throw GraftError.checkpointNotFound(student.parent.summary.reference, available: "it was removed meanwhile")
            }
            let parentModel: Int64 = try parent[0]
            // The model row carries a copy of its parent edge, and its line of descent: the
            // parent's, then its own id.
            guard
                let row = try await connection.one(
                    """
                    INSERT INTO models (name, kind, description, transfer_mode, manifest_rules, relation, parent_checkpoint_id,
                        parent_checkpoint_number, created_at, lineage)
                    VALUES (\(student.name.value), 'student', \(student.description), \(student.mode.rawValue), \(student.rules)::jsonb,
                            \(student.relation.rawValue), \(student.parent.id), \(student.parent.summary.number), \(student.createdAt),\
                     '{}')
                    ON CONFLICT (name) DO NOTHING RETURNING id
                    """, logger: self.logger)
            else { throw GraftError.modelExists(student.name) }
            let modelID: Int64 = try row[0]
            try await connection.run(
                "UPDATE models SET lineage = (SELECT lineage FROM models WHERE id = \(parentModel)) || id WHERE id = \(modelID)",
                logger: self.logger)
            try await connection.run(
                """
                INSERT INTO model_parents (model_id, parent_checkpoint_id, parent_model_id, relation, created_at)
                VALUES (\(modelID), \(student.parent.id), \(parentModel), \(student.relation.rawValue), \(student.createdAt))
                """, logger: self.logger)
            let entries = student.entries
            guard !entries.isEmpty else { return }
            try await connection.run(
                """
                INSERT INTO manifest_entries (model_id, tensor_name, state, dtype, shape, element_count, parent_digest)
                SELECT \(modelID), t.name, t.state, nullif(t.dtype, ''), nullif(t.shape, '')::jsonb, t.elements, nullif(t.parent, '')
                FROM unnest(\(entries.map(\.name))::text[], \(entries.map(\.state.rawValue))::text[],\
                 \(entries.map { $0.dtype?.rawValue ?? "" })::text[],
                            \(entries.map { $0.shape.map(shapeJSON) ?? "" })::text[], \(entries.map { Int64($0.parameters) })::bigint[],
                            \(entries.map { $0.parentDigest?.hex ?? "" })::text[]) AS t(name, state, dtype, shape, elements, parent)
                """, logger: self.logger)
        }
    }

    package func insertCheckpoint(
        model name: ModelName, _ checkpoint: NewCheckpoint, metrics: [MetricAssignment], split: String?, newTensors: [String]?,
        stillStored: @escaping @Sendable (Digest) -> Bool
    ) async throws(GraftError) -> (number: Int, inlineStored: Int) {
        try await write { connection -> (number: Int, inlineStored: Int) in
            guard let model = try await connection.one("SELECT id FROM models WHERE name = \(name.value)", logger: self.logger) else {
                throw GraftError.modelNotFound(name, suggestions: [])
            }
            let modelID: Int64 = try model[0]
            let now = timestamp()
            // Blobs first (checking each stored one may be a request to the blob store), then the
            // model's row is locked: commits to one model take their numbers in turn, and hold the
            // lock only for their own rows.
            let stored = try await self.insertBlobs(connection, checkpoint.blobs, stillStored: stillStored, now: now)
            guard try await connection.one("SELECT id FROM models WHERE id = \(modelID) FOR NO KEY UPDATE", logger: self.logger) != nil
            else {
                throw GraftError.modelNotFound(name, suggestions: [])
            }
            let newest =
                try await connection.one("SELECT max(number) FROM checkpoints WHERE model_id = \(modelID)", logger: self.logger)
                .flatMap { row throws in try row[0] as Int? } ?? 0
            let number = try copiedNumber(checkpoint, model: name, newest: newest) ?? newest + 1
            let checkpointID = try await self.insertCheckpoint(
                connection, modelID: modelID, number: number, checkpoint, now: checkpoint.copied?.createdAt ?? now)
            try await self.insertMetrics(connection, checkpointID: checkpointID, modelID: modelID, metrics, split: split)
            if let newTensors {
                let newNames = Set(newTensors)
                let tensors = checkpoint.tensors.map(\.info).filter { newNames.contains($0.name) }
                if !tensors.isEmpty {
                    try await connection.run(
                        """
                        INSERT INTO manifest_entries (model_id, tensor_name, state, dtype, shape, element_count, parent_digest)
                        SELECT \(modelID), t.name, 'new', t.dtype, t.shape::jsonb, t.elements, NULL
                        FROM unnest(\(tensors.map(\.name))::text[], \(tensors.map(\.dtype.rawValue))::text[],\
                         \(tensors.map { shapeJSON($0.shape) })::text[],
                                    \(tensors.map { Int64($0.elementCount) })::bigint[]) AS t(name, dtype, shape, elements)
                        ON CONFLICT (model_id, tensor_name) DO UPDATE SET dtype = excluded.dtype, shape = excluded.shape,
                            element_count = excluded.element_count WHERE manifest_entries.state = 'new'
                        """, logger: self.logger)
                }
            }
            return (number, stored)
        }
    }

    /// Inserts a checkpoint row and its tensors (the blobs must be recorded already); returns its id.
    @discardableResult
    func insertCheckpoint(_ connection: PostgresConnection, modelID: Int64, number: Int, _ checkpoint: NewCheckpoint, now: String)
        async throws -> Int64
    {
        let row = try await connection.one(
            """
            INSERT INTO checkpoints (model_id, number, digest, header, header_digest, metadata, tensor_count,
                parameter_count, data_bytes, file_bytes, step, epoch, created_at, idempotency_key)
            VALUES (\(modelID), \(number), \(checkpoint.digest.hex), \(ByteBuffer(bytes: checkpoint.headerBytes)),\
             \(checkpoint.headerDigest.hex),
                    \(encodeJSON(checkpoint.metadata))::jsonb, \(checkpoint.tensors.count), \(checkpoint.parameterCount),\
             \(checkpoint.dataLength),
                    \(checkpoint.fileBytes), \(checkpoint.step), \(checkpoint.epoch), \(now), \(checkpoint.idempotencyKey))
            RETURNING id
            """, logger: logger)
        let id: Int64 = try row.map { row throws in try row[0] as Int64 } ?? 0
        let infos = checkpoint.tensors.map(\.info)
        guard !infos.isEmpty else { return id }
        try await connection.run(
            """
            INSERT INTO checkpoint_tensors (checkpoint_id, position, name, dtype, shape, element_count, byte_length, blob_digest)
            SELECT \(id), t.position - 1, t.name, t.dtype, t.shape::jsonb, t.elements, t.bytes, t.digest
            FROM unnest(\(infos.map(\.name))::text[], \(infos.map(\.dtype.rawValue))::text[], \(infos.map { shapeJSON($0.shape) })::text[],
                        \(infos.map { Int64($0.elementCount) })::bigint[], \(infos.map { Int64($0.byteCount) })::bigint[],
                        \(checkpoint.tensors.map(\.digest.hex))::text[]) WITH ORDINALITY AS t(name, dtype, shape, elements, bytes,\
             digest, position)
            """, logger: logger)
        try await insertFiles(connection, checkpoint: id, checkpoint)
        if let signature = checkpoint.signature { try await insertSignature(connection, checkpoint: id, signature) }
        return id
    }

    /// Records a checkpoint's signature, replacing the one it had.
    func insertSignature(_ connection: PostgresConnection, checkpoint id: Int64, _ signature: StoredSignature) async throws {
        try await connection.run(
            """
            INSERT INTO checkpoint_signatures (checkpoint_id, bundle, key_hint, root_digest, file_count, signed_at, verified, origin)
            VALUES (\(id), \(ByteBuffer(bytes: signature.bundle)), \(signature.keyHint), \(signature.rootDigest.hex),\
             \(signature.fileCount), \(signature.signedAt), \(signature.verified), \(signature.origin))
            ON CONFLICT (checkpoint_id) DO UPDATE SET bundle = excluded.bundle, key_hint = excluded.key_hint,
                root_digest = excluded.root_digest, file_count = excluded.file_count, signed_at = excluded.signed_at,
                verified = excluded.verified, origin = excluded.origin
            """, logger: logger)
    }

    package func recordSignature(checkpoint id: Int64, _ signature: StoredSignature) async throws(GraftError) {
        try await withConnection { connection in
            // A checkpoint removed since it was resolved: nothing to sign (the foreign key would refuse it too).
            guard try await connection.one("SELECT 1 FROM checkpoints WHERE id = \(id)", logger: self.logger) != nil else {
                throw GraftError.busy
            }
            try await self.insertSignature(connection, checkpoint: id, signature)
        }
    }

    /// Records a directory checkpoint's files (shards and plain files), in one statement.
    func insertFiles(_ connection: PostgresConnection, checkpoint id: Int64, _ checkpoint: NewCheckpoint) async throws {
        guard !checkpoint.files.isEmpty else { return }
        // Arrays of non-optional values (NULLIF turns the blanks of the other kind into NULL).
        var (paths, kinds, headers, firsts, counts, digests, lengths) =
            ([String](), [String](), [String](), [Int64](), [Int64](), [String](), [Int64]())
        for file in checkpoint.files {
            paths.append(file.path)
            switch file.content {
            case .shard(let header, let first, let count):
                let data = checkpoint.tensors[first..<(first + count)].reduce(0) { $0 + $1.info.byteCount }
                (kinds, headers, digests) = (kinds + ["shard"], headers + [Self.hex(header)], digests + [""])
                (firsts, counts, lengths) = (firsts + [Int64(first)], counts + [Int64(count)], lengths + [Int64(header.count + data)])
            case .file(let digest, let length, _):
                (kinds, headers, digests) = (kinds + ["file"], headers + [""], digests + [digest.hex])
                (firsts, counts, lengths) = (firsts + [-1], counts + [-1], lengths + [Int64(length)])
            }
        }
        try await connection.run(
            """
            INSERT INTO checkpoint_files (checkpoint_id, path, kind, header, first_tensor, tensor_count, blob_digest, byte_length)
            SELECT \(id), f.path, f.kind, decode(NULLIF(f.header, ''), 'hex'), NULLIF(f.first, -1), NULLIF(f.count, -1),
                NULLIF(f.digest, ''), f.length
            FROM unnest(\(paths)::text[], \(kinds)::text[], \(headers)::text[], \(firsts)::bigint[], \(counts)::bigint[],
                        \(digests)::text[], \(lengths)::bigint[]) AS f(path, kind, header, first, count, digest, length)
            """, logger: logger)
    }

    /// Bytes as lowercase hex, for `decode(…, 'hex')`.
    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes { text += [digits[Int(byte >> 4)], digits[Int(byte & 15)]] }
        return String(decoding: text, as: UTF8.self)
    }

    /// Records blobs under the shared blob lock, checking that every stored blob is still there
    /// (gc may have removed one since the import found it). Returns the inline bytes newly stored.
    func insertBlobs(_ connection: PostgresConnection, _ tensors: [IngestedTensor], stillStored: (Digest) -> Bool, now: String) async throws
        -> Int
    {
        try await connection.run("SELECT pg_advisory_xact_lock_shared(\(Self.blobLock))", logger: logger)
        var seen = Set<Digest>()
        let unique = tensors.filter { seen.insert($0.digest).inserted }
        for tensor in unique where tensor.inline == nil && !stillStored(tensor.digest) {
            throw GraftError.blobVanished(tensor.digest)
        }
        let stored = unique.filter { $0.inline == nil }
        if !stored.isEmpty {
            try await connection.run(
                """
                INSERT INTO blobs (digest, byte_length, inline_data, created_at)
                SELECT t.digest, t.length, NULL, \(now) FROM unnest(\(stored.map(\.digest.hex))::text[],\
                 \(stored.map { Int64($0.info.byteCount) })::bigint[]) AS t(digest, length)
                ON CONFLICT (digest) DO NOTHING
                """, logger: logger)
        }
        let inline = unique.filter { $0.inline != nil }
        guard !inline.isEmpty else { return 0 }
        let inserted = try await connection.all(
            """
            INSERT INTO blobs (digest, byte_length, inline_data, created_at)
            SELECT t.digest, t.length, t.data, \(now)
            FROM unnest(\(inline.map(\.digest.hex))::text[], \(inline.map { Int64($0.info.byteCount) })::bigint[],
                        \(inline.map { ByteBuffer(bytes: $0.inline ?? []) })::bytea[]) AS t(digest, length, data)
            ON CONFLICT (digest) DO NOTHING RETURNING byte_length
            """, logger: logger)
        return try inserted.reduce(0) { $0 + (try $1[0] as Int) }
    }

    package func tag(checkpoint: Int64, alias: String) async throws(GraftError) -> Int?? {
        try await write { connection -> Int?? in
            guard
                let row = try await connection.one(
                    "SELECT model_id FROM checkpoints WHERE id = \(checkpoint) FOR KEY SHARE", logger: self.logger)
            else {
                return nil
            }
            let modelID: Int64 = try row[0]
            let previous = try await connection.one(
                """
                SELECT c.number FROM aliases a JOIN checkpoints c ON c.id = a.checkpoint_id WHERE a.model_id = \(modelID) AND a.alias =\
                 \(alias)
                FOR UPDATE OF a
                """, logger: self.logger
            ).map { row throws in try row[0] as Int }
            try await connection.run(
                """
                INSERT INTO aliases (model_id, alias, checkpoint_id, updated_at) VALUES (\(modelID), \(alias), \(checkpoint),\
                 \(timestamp()))
                ON CONFLICT (model_id, alias) DO UPDATE SET checkpoint_id = excluded.checkpoint_id, updated_at = excluded.updated_at
                """, logger: self.logger)
            return .some(previous)
        }
    }

    package func untag(model: Int64, alias: String) async throws(GraftError) -> Bool {
        try await write { connection in
            try await connection.changes(
                "DELETE FROM aliases WHERE model_id = \(model) AND alias = \(alias) RETURNING 1", logger: self.logger) > 0
        }
    }

    package func logMetrics(checkpoint: Int64, _ values: [MetricAssignment], split: String?) async throws(GraftError) {
        try await write { connection in
            guard let row = try await connection.one("SELECT model_id FROM checkpoints WHERE id = \(checkpoint)", logger: self.logger)
            else { return }
            try await self.insertMetrics(connection, checkpointID: checkpoint, modelID: try row[0], values, split: split)
        }
    }

    func insertMetrics(_ connection: PostgresConnection, checkpointID: Int64, modelID: Int64, _ values: [MetricAssignment], split: String?)
        async throws
    {
        guard !values.isEmpty else { return }
        // The last value of a name wins, as with one statement per value.
        var latest: [String: Double] = [:]
        var order: [String] = []
        for value in values {
            if latest.updateValue(value.value, forKey: value.name) == nil { order.append(value.name) }
        }
        try await connection.run(
            """
            INSERT INTO metrics (checkpoint_id, model_id, name, split, value, created_at)
            SELECT \(checkpointID), \(modelID), t.name, \(split ?? ""), t.value, \(timestamp())
            FROM unnest(\(order)::text[], \(order.map { latest[$0] ?? 0 })::float8[]) AS t(name, value)
            ON CONFLICT (checkpoint_id, name, split) DO UPDATE SET value = excluded.value, created_at = excluded.created_at
            """, logger: logger)
    }

    package func insertCurvePoints(model: Int64, _ batch: CurveBatch) async throws(GraftError) {
        try await write { connection in
            var curveIDs: [Int64] = []
            for name in batch.names {
                try await connection.run(
                    "INSERT INTO curves (model_id, name) VALUES (\(model), \(name)) ON CONFLICT (model_id, name) DO NOTHING",
                    logger: self.logger)
                guard
                    let row = try await connection.one(
                        "SELECT id FROM curves WHERE model_id = \(model) AND name = \(name)", logger: self.logger)
                else {
                    throw GraftError.modelNotFound(ModelName(trusted: "#\(model)"), suggestions: [])
                }
                curveIDs.append(try row[0])
            }
            // Points in key order, the last of a (curve, step) winning (ON CONFLICT cannot touch
            // one row twice in a statement), 50,000 to a statement.
            var order = Array(0..<batch.count)
            order.sort { (batch.nameIndex[$0], batch.steps[$0], $0) < (batch.nameIndex[$1], batch.steps[$1], $1) }
            var curves: [Int64] = [], steps: [Int64] = [], values: [Double] = []
            for (position, index) in order.enumerated() {
                if position + 1 < order.count, batch.nameIndex[order[position + 1]] == batch.nameIndex[index],
                    batch.steps[order[position + 1]] == batch.steps[index]
                {
                    continue
                }
                curves.append(curveIDs[Int(batch.nameIndex[index])])
                steps.append(Int64(batch.steps[index]))
                values.append(batch.values[index])
            }
            for start in stride(from: 0, to: curves.count, by: 50_000) {
                let end = min(start + 50_000, curves.count)
                try await connection.run(
                    """
                    INSERT INTO curve_points (curve_id, step, value)
                    SELECT * FROM unnest(\(Array(curves[start..<end]))::bigint[], \(Array(steps[start..<end]))::bigint[],\
                     \(Array(values[start..<end]))::float8[])
                    ON CONFLICT (curve_id, step) DO UPDATE SET value = excluded.value
                    """, logger: self.logger)
            }
        }
    }

    package func insertAdvisory(_ advisory: NewAdvisory) async throws(GraftError) {
        try await write { connection in
            let inserted = try await connection.changes(
                """
                INSERT INTO advisories (id, model_id, checkpoint_id, severity, note, url, created_at)
                VALUES (\(advisory.id), \(advisory.model), \(advisory.checkpoint), \(advisory.severity.rawValue), \(advisory.note),\
                 \(advisory.url), \(advisory.createdAt))
                ON CONFLICT (id) DO NOTHING RETURNING 1
                """, logger: self.logger)
            if inserted == 0 { throw GraftError.advisoryExists(advisory.id) }
        }
    }

    package func resolveAdvisory(_ id: String, at time: String) async throws(GraftError) -> Bool? {
        try await write { connection -> Bool? in
            if try await connection.changes(
                "UPDATE advisories SET resolved_at = \(time) WHERE id = \(id) AND resolved_at IS NULL RETURNING 1", logger: self.logger) > 0
            {
                return true
            }
            return try await connection.one("SELECT 1 FROM advisories WHERE id = \(id)", logger: self.logger) == nil ? nil : false
        }
    }
}

// Upload announcements in `pending_blobs`, so a PUT may reach any server of the registry.
extension PostgresMetadataStore {
    package func announceUploads(_ blobs: [ProposedTensor], window: Duration) async throws(GraftError) {
        let seconds = Double(window.components.seconds) + Double(window.components.attoseconds) / 1e18
        var lengths: [String: Int64] = [:]
        for blob in blobs { lengths[blob.digest.hex] = Int64(blob.length) }
        let digests = Array(lengths.keys), byteLengths = digests.map { lengths[$0] ?? 0 }
        try await write { connection in
            try await connection.run("DELETE FROM pending_blobs WHERE expires_at < now()", logger: self.logger)
            let live =
                try await connection.one("SELECT count(*) FROM pending_blobs", logger: self.logger).map { row throws in try row[0] as Int }
                ?? 0
            guard live + digests.count <= UploadAnnouncements.capacity else { throw GraftError.busy }
            try await connection.run(
                """
                INSERT INTO pending_blobs (digest, byte_length, expires_at)
                SELECT t.digest, t.length, now() + make_interval(secs => \(seconds)) FROM unnest(\(digests)::text[],\
                 \(byteLengths)::bigint[]) AS t(digest, length)
                ON CONFLICT (digest) DO UPDATE SET byte_length = excluded.byte_length, expires_at = excluded.expires_at
                """, logger: self.logger)
        }
    }

    package func recordUploadProof(_ digest: Digest, token: String, window: Duration) async throws(GraftError) {
        let seconds = Double(window.components.seconds) + Double(window.components.attoseconds) / 1e18
        try await write { connection in
            try await connection.run("DELETE FROM upload_proofs WHERE expires_at < now()", logger: self.logger)
            let live =
                try await connection.one("SELECT count(*) FROM upload_proofs", logger: self.logger).map { row throws in try row[0] as Int }
                ?? 0
            guard live < UploadAnnouncements.capacity else { throw GraftError.busy }
            try await connection.run(
                """
                INSERT INTO upload_proofs (digest, token, expires_at) VALUES (\(digest.hex), \(token), now() + make_interval(secs =>\
                 \(seconds)))
                ON CONFLICT (digest, token) DO UPDATE SET expires_at = excluded.expires_at
                """, logger: self.logger)
        }
    }

    package func uploadProofs(_ digests: [Digest], token: String) async throws(GraftError) -> Set<Digest> {
        guard !digests.isEmpty else { return [] }
        let hexes = digests.map(\.hex)
        return try await withConnection { connection in
            var proven = Set<Digest>()
            for row in try await connection.all(
                "SELECT digest FROM upload_proofs WHERE token = \(token) AND digest = ANY(\(hexes)) AND expires_at > now()",
                logger: self.logger)
            {
                if let digest = try? Digest(parsing: try row[0] as String) { proven.insert(digest) }
            }
            return proven
        }
    }

    package func announcedLength(of digest: Digest) async throws(GraftError) -> Int? {
        try await withConnection { connection in
            try await connection.one(
                "SELECT byte_length FROM pending_blobs WHERE digest = \(digest.hex) AND expires_at > now()", logger: self.logger
            )
            .map { row throws in try row[0] as Int }
        }
    }
}
