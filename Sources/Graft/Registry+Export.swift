#if canImport(Glibc)
    import Glibc
#endif
import Crypto
import Dispatch
import Foundation
import SafeTensors
import Synchronization

/// What `export` wrote.
public struct ExportResult: Sendable, Codable, Equatable {
    public var checkpoint: String
    public var digest: Digest
    public var path: String
    public var bytes: Int
}

extension Registry {
    /// Writes a checkpoint as a safetensors file, byte-identical to the file it was imported from.
    ///
    /// Every blob is rehashed while the copy runs (two lanes in parallel), so a damaged store
    /// never yields a silently wrong file; the copy itself is the store's (for local blobs the
    /// kernel's `sendfile`). The output appears whole or not at all (written beside it,
    /// flushed, renamed). A single pass that hashed each chunk on its way to a positional write
    /// was measured slower here (0.78 s against 0.53 s for 512 MiB; docs/BENCHMARKS.md).
    ///
    /// - Throws: ``GraftError/outputExists(path:)`` unless `overwrite`; ``GraftError/damagedBlob(_:reason:)``.
    @discardableResult
    public func export(_ reference: Reference, to path: String, overwrite: Bool = false) async throws(GraftError) -> ExportResult {
        let (id, summary) = try await resolve(reference)
        if !overwrite, FileSystem.fileExists(path) { throw .outputExists(path: path) }
        let stored = try await metadata.parts(checkpoint: id)
        let (header, parts) = (stored.header, stored.tensors)
        let blobs = self.blobs
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let base = path.split(separator: "/").last.map(String.init) ?? path
        let temporary = (directory.isEmpty ? "" : directory + "/") + "." + base + "." + FileSystem.uniqueName(suffix: ".tmp")
        // Rehash every blob while the copy runs: the output is renamed into place only once
        // every blob checked out. Blobs are immutable, so the bytes copied are the bytes hashed.
        async let verified = Self.firstDamaged(parts, in: blobs)
        let copied = await Result { () async throws(GraftError) -> Int in
            try await offload { () throws(GraftError) -> Int in
                let out = try FileDescriptor(path: temporary, flags: O_WRONLY | O_CREAT | O_EXCL)
                try out.write(header)
                var written = header.count
                for (digest, length, inline) in parts {
                    if let inline {
                        try out.write(inline)
                    } else {
                        try blobs.store.copy(digest, length: length, appendingTo: out.fd)
                    }
                    written += length
                }
                try out.sync()
                return written
            }
        }
        let damaged = await verified
        let bytes: Int
        switch copied {
        case .success(let count) where damaged == nil:
            bytes = count
        case .success:
            FileSystem.remove(temporary)
            throw damaged!
        case .failure(let error):
            FileSystem.remove(temporary)
            // Damage explains a failed copy better than the copy's own error.
            throw damaged ?? error
        }
        do throws(GraftError) {
            try FileSystem.rename(temporary, path)
        } catch {
            FileSystem.remove(temporary)
            throw error
        }
        try FileSystem.syncDirectory(directory.isEmpty ? "/" : directory)
        return ExportResult(checkpoint: summary.ref, digest: summary.digest, path: path, bytes: bytes)
    }
}

extension Registry {
    /// Rehashes blobs in two lanes balanced by bytes; returns the first damage found, or `nil`.
    static func firstDamaged(_ parts: [(digest: Digest, length: Int, inline: [UInt8]?)], in blobs: BlobTransfer) async -> GraftError? {
        let failure = Mutex<GraftError?>(nil)
        let lanes = BlobTransfer.balance(parts.map(\.length))
        await BlobTransfer.inLanes(lanes.count) { lane, buffer in
            for index in lanes[lane] {
                if failure.withLock({ $0 != nil }) { return }
                let (digest, length, inline) = parts[index]
                if let problem = blobs.check(digest, length: length, inline: inline, readData: true, buffer: buffer) {
                    failure.withLock { if $0 == nil { $0 = .damagedBlob(digest, reason: problem.detail) } }
                }
            }
        }
        return failure.withLock { $0 }
    }
}

extension Result where Failure == GraftError {
    init(catching body: () async throws(GraftError) -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

/// Runs blocking file I/O on a Dispatch thread, off Swift's cooperative pool.
func offload<T: Sendable>(_ body: @escaping @Sendable () throws(GraftError) -> T) async throws(GraftError) -> T {
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
        let (header, parts) = (stored.header, stored.tensors)
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
}
