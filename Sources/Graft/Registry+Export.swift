#if canImport(Glibc)
    import Glibc
#endif
import Crypto
import Dispatch
import Foundation
import GRDB
import SafeTensors

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
    /// Every blob is rehashed as it is copied, so a damaged store never yields a silently wrong
    /// file. The output appears whole or not at all (written beside it, flushed, renamed).
    ///
    /// - Throws: ``GraftError/outputExists(path:)`` unless `overwrite`; ``GraftError/damagedBlob(_:reason:)``.
    public func export(_ reference: Reference, to path: String, overwrite: Bool = false) async throws(GraftError) -> ExportResult {
        let (id, summary) = try await resolve(reference)
        if !overwrite, FileSystem.fileExists(path) { throw .outputExists(path: path) }
        let (header, parts) = try await read { db -> ([UInt8], [(Digest, Int, [UInt8]?)]) in
            let header = try Data.fetchOne(db, sql: "SELECT header FROM checkpoints WHERE id = ?", arguments: [id]) ?? Data()
            let parts = try Row.fetchAll(
                db, sql: """
                    SELECT t.blob_digest, t.byte_length, b.inline_data FROM checkpoint_tensors t
                    JOIN blobs b ON b.digest = t.blob_digest WHERE t.checkpoint_id = ? ORDER BY t.position
                    """, arguments: [id]
            ).map { row -> (Digest, Int, [UInt8]?) in
                (try Digest(parsing: row["blob_digest"] as String), row["byte_length"], (row["inline_data"] as Data?).map { Array($0) })
            }
            return (Array(header), parts)
        }
        let blobs = self.blobs
        let bytes = try await offload { () throws(GraftError) -> Int in
            let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
            let base = path.split(separator: "/").last.map(String.init) ?? path
            let temporary = (directory.isEmpty ? "" : directory + "/") + "." + base + "." + FileSystem.uniqueName(suffix: ".tmp")
            var done = false
            defer { if !done { FileSystem.remove(temporary) } }
            let out = try FileDescriptor(path: temporary, flags: O_WRONLY | O_CREAT | O_EXCL)
            try out.write(header)
            var written = header.count
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: BlobStore.chunkSize, alignment: 64)
            defer { buffer.deallocate() }
            for (digest, length, inline) in parts {
                if let inline {
                    guard inline.count == length, Digest.of(inline) == digest else {
                        throw GraftError.damagedBlob(digest, reason: "its stored bytes no longer match the digest")
                    }
                    try out.write(inline)
                } else {
                    try blobs.stream(digest, length: length, buffer: buffer, verify: true) { chunk throws(GraftError) in try out.write(chunk) }
                }
                written += length
            }
            try out.sync()
            try FileSystem.rename(temporary, path)
            done = true
            try FileSystem.syncDirectory(directory.isEmpty ? "/" : directory)
            return written
        }
        return ExportResult(checkpoint: summary.ref, digest: summary.digest, path: path, bytes: bytes)
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
