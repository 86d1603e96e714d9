#if canImport(Glibc)
    import Glibc
#endif
import Crypto
import Dispatch
import Foundation
import GRDB
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
    /// Every blob is rehashed as it is copied — each byte read once, hashed and written at its
    /// place in the output, two lanes in parallel balanced by bytes — so a damaged store never
    /// yields a silently wrong file. The output appears whole or not at all (written beside
    /// it, flushed, renamed).
    ///
    /// - Throws: ``GraftError/outputExists(path:)`` unless `overwrite`; ``GraftError/damagedBlob(_:reason:)``.
    public func export(_ reference: Reference, to path: String, overwrite: Bool = false) async throws(GraftError) -> ExportResult {
        let (id, summary) = try await resolve(reference)
        if !overwrite, FileSystem.fileExists(path) { throw .outputExists(path: path) }
        let (header, parts) = try await checkpointParts(id)
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let base = path.split(separator: "/").last.map(String.init) ?? path
        let temporary = (directory.isEmpty ? "" : directory + "/") + "." + base + "." + FileSystem.uniqueName(suffix: ".tmp")
        let bytes: Int
        do throws(GraftError) {
            let out = try FileDescriptor(path: temporary, flags: O_WRONLY | O_CREAT | O_EXCL)
            try out.write(header)
            var offsets: [Int] = []
            var end = header.count
            for part in parts {
                offsets.append(end)
                end += part.length
            }
            try await Self.copyVerified(parts, offsets: offsets, from: blobs, to: out)
            try out.sync()
            bytes = end
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
    /// Copies each part to `offsets[i]` of `out`, hashing it on the way: two lanes, largest
    /// parts first to the lighter lane. Throws the first damage found (nothing of it is kept:
    /// the caller removes the output).
    static func copyVerified(
        _ parts: [(digest: Digest, length: Int, inline: [UInt8]?)], offsets: [Int], from blobs: BlobStore, to out: FileDescriptor
    ) async throws(GraftError) {
        let laneCount = min(2, max(1, parts.count))
        var lanes = [[Int]](repeating: [], count: laneCount)
        var load = [Int](repeating: 0, count: laneCount)
        for index in parts.indices.sorted(by: { parts[$0].length > parts[$1].length }) {
            let lane = load.indices.min(by: { load[$0] < load[$1] })!
            lanes[lane].append(index)
            load[lane] += parts[index].length
        }
        let failure = Mutex<GraftError?>(nil)
        let work = lanes
        await BlobStore.inLanes(laneCount) { lane, buffer in
            for index in work[lane] {
                if failure.withLock({ $0 != nil }) { return }
                let (digest, length, inline) = parts[index]
                do throws(GraftError) {
                    if let inline {
                        guard inline.count == length, Digest.of(inline) == digest else {
                            throw .damagedBlob(digest, reason: "inline bytes no longer match the digest")
                        }
                        try out.write(inline, at: offsets[index])
                    } else {
                        var at = offsets[index]
                        try blobs.stream(digest, length: length, buffer: buffer, verify: true) { chunk throws(GraftError) in
                            try out.write(chunk, at: at)
                            at += chunk.count
                        }
                    }
                } catch {
                    failure.withLock { if $0 == nil { $0 = error } }
                    return
                }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
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
