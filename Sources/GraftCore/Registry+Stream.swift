import Crypto
import Dispatch
import SafeTensors
import Synchronization

/// What `export` wrote.
public struct ExportResult: Sendable, Codable, Equatable {
    public var checkpoint: String
    public var digest: Digest
    public var path: String
    public var bytes: Int
    /// For a directory checkpoint: the files written (shards and the rest). Absent for one file.
    public var files: Int?
    /// Where the checkpoint's signature was written (`DIR/model.sig`, or `FILE.sig`); absent
    /// when it has none or `--no-signature` left it out.
    public var signature: String?

    package init(checkpoint: String, digest: Digest, path: String, bytes: Int, files: Int? = nil) {
        (self.checkpoint, self.digest, self.path, self.bytes, self.files) = (checkpoint, digest, path, bytes, files)
    }
}

extension Registry {
    /// Rehashes blobs in two lanes balanced by bytes; returns the first damage found, or `nil`.
    package static func firstDamaged(_ parts: [(digest: Digest, length: Int, inline: [UInt8]?)], in blobs: BlobTransfer) async
        -> GraftError?
    {
        await BlobTransfer.firstFailure(sizes: parts.map(\.length)) { index, buffer throws(GraftError) in
            let (digest, length, inline) = parts[index]
            if let problem = blobs.check(digest, length: length, inline: inline, readData: true, buffer: buffer) {
                throw .damagedBlob(digest, reason: problem.detail)
            }
        }
    }
}

extension Result where Failure == GraftError {
    package init(catching body: () async throws(GraftError) -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

/// Runs blocking file I/O on a Dispatch thread, off Swift's cooperative pool.
package func offload<T: Sendable>(_ body: @escaping @Sendable () throws(GraftError) -> T) async throws(GraftError) -> T {
    let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, GraftError>, Never>) in
        DispatchQueue.global().async {
            continuation.resume(returning: Result { () throws(GraftError) -> T in try body() })
        }
    }
    return try result.get()
}

extension Registry {
    /// Streams a checkpoint's safetensors bytes to `sink` in file order — the header, then every
    /// tensor in 4 MiB chunks or less — byte-identical to what ``export(_:to:overwrite:)``
    /// writes, for a sender that cannot write a file (an HTTP response). Each blob is verified as
    /// it streams: its digest is checked when its last chunk has been passed on, so on damage
    /// the bytes before were already sent and the sender must abandon the stream.
    ///
    /// - Returns: the number of bytes streamed (the checkpoint's file size).
    /// - Throws: ``GraftError/damagedBlob(_:reason:)``; whatever `sink` throws.
    @discardableResult
    public func stream(
        _ reference: Reference, to sink: @escaping @Sendable (UnsafeRawBufferPointer) throws(GraftError) -> Void
    ) async throws(GraftError) -> Int {
        let (id, _) = try await resolve(reference)
        let stored = try await metadata.parts(checkpoint: id)
        return try await streamParts(header: stored.header, stored.tensors, to: sink)
    }
}

extension Registry {
    /// The file at `path` of a directory checkpoint, as `show` lists it, with its checkpoint.
    /// - Throws: ``GraftError/fileNotFound(checkpoint:path:)`` (also for a single-file checkpoint).
    public func fileEntry(_ reference: Reference, path: String) async throws(GraftError) -> (CheckpointSummary, CheckpointFileEntry) {
        let (id, summary) = try await resolve(reference)
        let files = try await metadata.files(checkpoint: id)
        guard let file = files.first(where: { $0.path == path }) else { throw .fileNotFound(checkpoint: summary.ref, path: path) }
        let lengths = try await metadata.tensors(checkpoint: id).map(\.bytes)
        return (summary, file.entry(tensorBytes: lengths))
    }

    /// A small file of a directory checkpoint in memory, verified (see ``RegistryAPI/smallFile(_:path:limit:)``).
    public func smallFile(_ reference: Reference, path: String, limit: Int = 1 << 20) async throws(GraftError) -> [UInt8] {
        let (summary, entry) = try await fileEntry(reference, path: path)
        guard entry.kind == "file" else { throw .fileNotFound(checkpoint: summary.ref, path: path) }
        guard entry.bytes <= limit else {
            throw .tooLarge("\(path) of \(summary.ref) holds \(entry.bytes) bytes; at most \(limit) are read whole")
        }
        let collected = Mutex<[UInt8]>([])
        try await streamFile(summary.reference, path: path) { chunk throws(GraftError) in
            collected.withLock { $0.append(contentsOf: chunk) }
        }
        return collected.withLock { $0 }
    }

    /// Streams one file of a directory checkpoint to `sink` — a shard (its header, then its
    /// tensors' bytes) or another file — byte-identical to what `export` writes at that path,
    /// each blob verified as it streams (on damage the sender must abandon the stream).
    /// - Returns: the bytes streamed (the file's length).
    /// - Throws: ``GraftError/fileNotFound(checkpoint:path:)``; ``GraftError/damagedBlob(_:reason:)``.
    @discardableResult
    public func streamFile(
        _ reference: Reference, path: String, to sink: @escaping @Sendable (UnsafeRawBufferPointer) throws(GraftError) -> Void
    ) async throws(GraftError) -> Int {
        let (id, summary) = try await resolve(reference)
        let stored = try await metadata.parts(checkpoint: id)
        guard let file = stored.files.first(where: { $0.path == path }) else { throw .fileNotFound(checkpoint: summary.ref, path: path) }
        let parts: [(digest: Digest, length: Int, inline: [UInt8]?)]
        var header: [UInt8] = []
        switch file.content {
        case .shard(let bytes, let first, let count):
            (header, parts) = (bytes, Array(stored.tensors[first..<(first + count)]))
        case .file(let digest, let length, let inline):
            parts = [(digest, length, inline)]
        }
        return try await streamParts(header: header, parts, to: sink)
    }

    /// Sends `header`, then each part's bytes (inline, or its blob in chunks), verifying each.
    private func streamParts(
        header: [UInt8], _ parts: [(digest: Digest, length: Int, inline: [UInt8]?)],
        to sink: @escaping @Sendable (UnsafeRawBufferPointer) throws(GraftError) -> Void
    ) async throws(GraftError) -> Int {
        let blobs = self.blobs
        return try await offload { () throws(GraftError) -> Int in
            func send(_ bytes: [UInt8]) throws(GraftError) {
                try bytes.withUnsafeBytes { buffer in Result { () throws(GraftError) in try sink(buffer) } }.get()
            }
            try send(header)
            var sent = header.count
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: BlobTransfer.chunkSize, alignment: 64)
            defer { buffer.deallocate() }
            for (digest, length, inline) in parts {
                if let inline {
                    guard inline.count == length, Digest.of(inline) == digest else {
                        throw .damagedBlob(digest, reason: "inline bytes no longer match the digest")
                    }
                    try send(inline)
                } else {
                    try blobs.stream(digest, length: length, buffer: buffer, verify: true) { chunk throws(GraftError) in try sink(chunk) }
                }
                sent += length
            }
            return sent
        }
    }

    /// The length of a blob the store holds, or `nil` (inline tensors are not blobs).
    public func blobLength(_ digest: Digest) throws(GraftError) -> Int? {
        try blobs.rawLength(of: digest)
    }

    /// Of `digests`, those a model matching the glob `models` refers to.
    public func digests(_ digests: [Digest], referencedByModelsMatching models: String) async throws(GraftError) -> Set<Digest> {
        try await metadata.digests(digests, referencedByModelsMatching: models)
    }

    /// Streams one stored blob's bytes to `sink` in chunks of 4 MiB or less, verifying its
    /// digest when the last chunk has been passed on (on damage the sender must abandon).
    /// - Throws: ``GraftError/damagedBlob(_:reason:)`` when it is missing, short or damaged.
    @discardableResult
    public func streamBlob(
        _ digest: Digest, to sink: @escaping @Sendable (UnsafeRawBufferPointer) throws(GraftError) -> Void
    ) async throws(GraftError) -> Int {
        guard let length = try blobs.rawLength(of: digest) else { throw .damagedBlob(digest, reason: "not stored") }
        let transfer = blobs
        return try await offload { () throws(GraftError) -> Int in
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: BlobTransfer.chunkSize, alignment: 64)
            defer { buffer.deallocate() }
            try transfer.stream(digest, length: length, buffer: buffer, verify: true, sink)
            return length
        }
    }
}
