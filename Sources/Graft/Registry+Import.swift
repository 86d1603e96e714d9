import Crypto
import Foundation
import GRDB
public import SafeTensors

extension Registry {
    /// Registers a pretrained base from a safetensors file, as its first checkpoint (`NAME@1`).
    ///
    /// The file is validated before anything is written; tensors stream into the blob store
    /// (two lanes hashing in parallel, bounded memory), and one transaction then records the
    /// model, its checkpoint and its tensors. A tensor the store holds already is not written again.
    ///
    /// - Parameter progress: called with (bytes done, bytes total) while tensors stream.
    /// - Throws: ``GraftError/invalidFile(path:_:)`` for anything that is not valid safetensors
    ///   (nothing is written), ``GraftError/modelExists(_:)``, ``GraftError/diskFull(path:)``.
    ///
    /// ```swift
    /// let result = try await registry.addBase(
    ///     name: try ModelName("resnet18"), file: "resnet18.safetensors",
    ///     provenance: Provenance(source: "https://…", license: "bsd-3-clause"))
    /// ```
    public func addBase(
        name: ModelName, file path: String, provenance: Provenance = Provenance(),
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) async throws(GraftError) -> ImportResult {
        try await retryingVanishedBlobs { () async throws(GraftError) in
            try await addBaseOnce(name: name, input: { () throws(GraftError) in try Self.openInput(path) }, provenance: provenance, progress: progress)
        }
    }

    /// Registers a pretrained base from any safetensors input: a file, or tensors in memory
    /// (``SafeTensorsMemory``, stored exactly as `SafeTensorsWriter` would have written them).
    public func addBase(
        name: ModelName, input: some SafeTensorsInput, provenance: Provenance = Provenance(),
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) async throws(GraftError) -> ImportResult {
        try await retryingVanishedBlobs { () async throws(GraftError) in
            try await addBaseOnce(name: name, input: { () throws(GraftError) in input }, provenance: provenance, progress: progress)
        }
    }

    /// Runs an import again when `gc` removed a blob it relied on between writing (or finding)
    /// the blob and committing: the next attempt finds it missing and writes it anew.
    func retryingVanishedBlobs(_ body: () async throws(GraftError) -> ImportResult) async throws(GraftError) -> ImportResult {
        var attempt = 1
        while true {
            do { return try await body() } catch {
                guard case .blobVanished = error, attempt < 5 else { throw error }
                attempt += 1
            }
        }
    }

    /// One attempt; `input` is opened after the cheap checks, so a taken name is refused first.
    func addBaseOnce<Input: SafeTensorsInput>(
        name: ModelName, input open: () throws(GraftError) -> Input, provenance: Provenance,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        if try await modelID(name) != nil { throw .modelExists(name) }
        let reader = try open()
        let total = reader.header.dataLength
        let headerDigest = Digest.of(reader.headerBytes)
        // A file whose header the registry has seen is most likely a re-import: hash before
        // writing, so tensors that are present cost only their hashing.
        let seenBefore = try await read { db in
            try Bool.fetchOne(db, sql: "SELECT 1 FROM checkpoints WHERE header_digest = ? LIMIT 1", arguments: [headerDigest.hex]) ?? false
        }
        var report: (@Sendable (Int) -> Void)? = nil
        if let progress { report = { done in progress(done, total) } }
        let ingested = try await blobs.ingest(reader, mode: seenBefore ? .hashFirst : .writeThrough, progress: report)
        try blobs.flush(ingested)
        let digest = Self.checkpointDigest(header: reader.headerBytes, tensors: ingested)
        let provenanceMetadata = encodeJSON(provenance.metadata)
        let store = blobs.store
        let fileBytes = reader.fileSize
        let inlineStored = try await write { db -> Int in
            if try Int.fetchOne(db, sql: "SELECT id FROM models WHERE name = ?", arguments: [name.value]) != nil {
                throw GraftError.modelExists(name)
            }
            let now = timestamp()
            try db.execute(
                sql: """
                    INSERT INTO models (name, kind, description, source, license, dataset, architecture, task, metadata, created_at)
                    VALUES (?, 'base', ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [name.value, provenance.description, provenance.source, provenance.license, provenance.dataset,
                            provenance.architecture, provenance.task, provenanceMetadata, now])
            let modelID = db.lastInsertedRowID
            try db.execute(sql: "UPDATE models SET lineage_path = '/' || id || '/' WHERE id = ?", arguments: [modelID])
            let stored = try Self.insertBlobs(db, ingested, store: store, now: now)
            try Self.insertCheckpoint(
                db, modelID: modelID, number: 1, reader: reader, digest: digest, headerDigest: headerDigest, tensors: ingested,
                step: nil, epoch: nil, now: now)
            return stored
        }
        var seen = Set<Digest>()
        let fileStored = ingested.filter { $0.wroteFile && seen.insert($0.digest).inserted }.reduce(0) { $0 + $1.info.byteCount }
        let stored = fileStored + inlineStored
        return ImportResult(
            model: name, checkpoint: "\(name)@1", digest: digest, tensors: ingested.count,
            parameters: ingested.reduce(0) { $0 + $1.info.elementCount }, logicalBytes: fileBytes,
            bytesStored: stored, bytesAlreadyPresent: total - stored)
    }

    /// Opens an input file, telling a file that cannot be read from one that is not safetensors.
    static func openInput(_ path: String) throws(GraftError) -> SafeTensorsReader {
        do {
            return try SafeTensorsReader(path: path)
        } catch {
            if case .io = error { throw .cannotReadInput(path: path, error) }
            throw .invalidFile(path: path, error)
        }
    }

    /// Inserts a checkpoint row and its tensors (the blobs must be recorded already); returns its id.
    @discardableResult
    static func insertCheckpoint(
        _ db: Database, modelID: Int64, number: Int, reader: some SafeTensorsInput, digest: Digest, headerDigest: Digest,
        tensors: [IngestedTensor], step: Int?, epoch: Int?, now: String
    ) throws -> Int64 {
        try db.execute(
            sql: """
                INSERT INTO checkpoints (model_id, number, digest, header, header_digest, metadata, tensor_count,
                    parameter_count, data_bytes, file_bytes, step, epoch, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [modelID, number, digest.hex, Data(reader.headerBytes), headerDigest.hex, encodeJSON(reader.header.metadataDictionary),
                        tensors.count, tensors.reduce(0) { $0 + $1.info.elementCount }, reader.header.dataLength, reader.fileSize,
                        step, epoch, now])
        let id = db.lastInsertedRowID
        try insertTensors(db, checkpointID: id, tensors)
        return id
    }

    /// The checkpoint digest: SHA-256 of the header bytes followed by each tensor's raw digest.
    static func checkpointDigest(header: [UInt8], tensors: [IngestedTensor]) -> Digest {
        var hasher = SHA256()
        hasher.update(data: header)
        for tensor in tensors { hasher.update(data: tensor.digest.rawBytes) }
        return Digest(hasher.finalize())
    }

    /// Records blobs, checking under the write lock that every stored blob is still there (gc
    /// may have removed one since the import found it). Returns the inline bytes newly stored.
    static func insertBlobs(_ db: Database, _ tensors: [IngestedTensor], store: any BlobStore, now: String) throws -> Int {
        var stored = 0
        var seen = Set<Digest>()
        let statement = try db.cachedStatement(
            sql: "INSERT INTO blobs (digest, byte_length, inline_data, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING")
        for tensor in tensors where seen.insert(tensor.digest).inserted {
            if tensor.inline == nil, !store.contains(tensor.digest, claim: false) {
                throw GraftError.blobVanished(tensor.digest)
            }
            try statement.execute(arguments: [tensor.digest.hex, tensor.info.byteCount, tensor.inline.map { Data($0) }, now])
            if tensor.inline != nil, db.changesCount > 0 { stored += tensor.info.byteCount }
        }
        return stored
    }

    static func insertTensors(_ db: Database, checkpointID: Int64, _ tensors: [IngestedTensor]) throws {
        let statement = try db.cachedStatement(
            sql: """
                INSERT INTO checkpoint_tensors (checkpoint_id, position, name, dtype, shape, element_count, byte_length, blob_digest)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """)
        for (position, tensor) in tensors.enumerated() {
            try statement.execute(arguments: [
                checkpointID, position, tensor.info.name, tensor.info.dtype.rawValue, shapeJSON(tensor.info.shape),
                tensor.info.elementCount, tensor.info.byteCount, tensor.digest.hex,
            ])
        }
    }

    /// The row id of a model, or `nil`.
    func modelID(_ name: ModelName) async throws(GraftError) -> Int64? {
        try await read { db in try Int64.fetchOne(db, sql: "SELECT id FROM models WHERE name = ?", arguments: [name.value]) }
    }
}

/// Encodes a string dictionary as a JSON object with sorted keys.
func encodeJSON(_ dictionary: [String: String]) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: (try? encoder.encode(dictionary)) ?? Data("{}".utf8), as: UTF8.self)
}

/// Decodes a JSON object of strings; anything else decodes as empty.
func decodeJSON(_ text: String?) -> [String: String] {
    guard let text, let data = text.data(using: .utf8) else { return [:] }
    return (try? JSONDecoder().decode([String: String].self, from: data)) ?? [:]
}
