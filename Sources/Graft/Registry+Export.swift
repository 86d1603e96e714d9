public import GraftCore
import GraftLocal
import SafeTensors

#if canImport(Glibc)
    import Glibc
#endif

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

extension Registry: RegistryAPI {}
