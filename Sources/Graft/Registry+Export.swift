import Foundation
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
        do {
            return try await exportAttempt(reference, to: path, overwrite: overwrite)
        } catch .damagedBlob {
            // A blob `graft compact` replaced while this export read it looks damaged for that
            // read (the copy opened one form, the check another): once more, from the start.
            // Real damage fails the same way again and is reported.
            return try await exportAttempt(reference, to: path, overwrite: overwrite)
        }
    }

    private func exportAttempt(_ reference: Reference, to path: String, overwrite: Bool) async throws(GraftError) -> ExportResult {
        let (id, summary) = try await resolve(reference)
        if !overwrite, FileSystem.fileExists(path) { throw .outputExists(path: path) }
        let stored = try await metadata.parts(checkpoint: id)
        if !stored.files.isEmpty { return try await exportDirectory(stored, summary: summary, to: path, overwrite: overwrite) }
        let (header, parts) = (stored.header, stored.tensors)
        let blobs = self.blobs
        let (directory, base) = FileSystem.parentAndName(path)
        let temporary = directory + "/." + base + "." + FileSystem.uniqueName(suffix: ".tmp")
        // Blobs `graft compact` encoded are decoded, rehashed and written at their offsets by
        // lanes of their own, one pass each; the raw ones are copied by the kernel while lanes
        // rehash them alongside. The output is renamed into place only once every blob checked
        // out. Blobs are immutable (re-encoding keeps the bytes), so the bytes copied are the bytes hashed.
        let encoded = Set(
            parts.indices.filter { index in
                parts[index].inline == nil
                    && ((try? blobs.store.length(of: parts[index].digest)) ?? nil).map { $0 != parts[index].length } == true
            })
        var starts: [Int] = []
        var total = header.count
        for part in parts {
            starts.append(total)
            total += part.length
        }
        let (offsets, end) = (starts, total)
        let out: FileDescriptor
        do throws(GraftError) { out = try FileDescriptor(path: temporary, flags: O_WRONLY | O_CREAT | O_EXCL) } catch {
            throw error
        }
        async let verified = Self.firstDamaged(parts.indices.filter { !encoded.contains($0) }.map { parts[$0] }, in: blobs)
        async let decoded = Self.writeDecoded(
            encoded.sorted().map { (parts[$0].digest, parts[$0].length, offsets[$0]) }, to: out, blobs: blobs)
        let copied = await Result { () async throws(GraftError) -> Int in
            try await offload { () throws(GraftError) -> Int in
                try out.write(header)
                for (index, (digest, length, inline)) in parts.enumerated() {
                    if encoded.contains(index) {
                        // Room left for the lanes writing it.
                        guard lseek(out.fd, off_t(offsets[index] + length), SEEK_SET) >= 0 else {
                            throw GraftError.fromErrno(errno, operation: "cannot seek in", path: temporary)
                        }
                    } else if let inline {
                        try out.write(inline)
                    } else {
                        try blobs.store.copy(digest, length: length, appendingTo: out.fd)
                    }
                }
                return end
            }
        }
        let decodeFailure = await decoded
        if case .success = copied, decodeFailure == nil {
            do throws(GraftError) { try out.sync() } catch {
                FileSystem.remove(temporary)
                throw error
            }
        }
        let damaged = await verified ?? decodeFailure
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
            // A file is replaced by the rename itself; a directory there (with --force) is moved aside first.
            if overwrite, FileSystem.isDirectory(path) {
                try Self.replace(path, with: temporary, parent: directory, base: base)
            } else {
                try FileSystem.rename(temporary, path)
            }
        } catch {
            FileSystem.remove(temporary)
            throw error
        }
        try FileSystem.syncDirectory(directory)
        return ExportResult(checkpoint: summary.ref, digest: summary.digest, path: path, bytes: bytes)
    }
}

extension Registry {
    /// Writes a directory checkpoint as the tree it was imported from: every shard (its header,
    /// then its tensors' bytes), every other file, byte for byte. The tree is written beside
    /// `path` under a hidden temporary name, each file flushed, every blob rehashed in parallel,
    /// then renamed into place whole (an existing `path` is replaced only with `overwrite`).
    private func exportDirectory(_ stored: CheckpointParts, summary: CheckpointSummary, to path: String, overwrite: Bool)
        async throws(GraftError) -> ExportResult
    {
        var checked = stored.tensors
        for file in stored.files {
            if case .file(let digest, let length, let inline) = file.content { checked.append((digest, length, inline)) }
        }
        let blobs = self.blobs
        let (target, bytes) = try await writeTree(to: path, overwrite: overwrite, checking: checked) { root throws(GraftError) in
            try Self.writeTree(stored, into: root, blobs: blobs)
        }
        return ExportResult(checkpoint: summary.ref, digest: summary.digest, path: target, bytes: bytes, files: stored.files.count)
    }

    /// Writes a tree with `write` under a hidden temporary name beside `path`, while every blob
    /// of `parts` is rehashed in parallel, then renames it into place whole (an existing `path`
    /// is replaced only with `overwrite`); a failure or damage leaves nothing behind.
    /// - Returns: the path written (without a trailing slash) and the bytes `write` wrote.
    func writeTree(
        to path: String, overwrite: Bool, checking parts: [(digest: Digest, length: Int, inline: [UInt8]?)],
        write: @escaping @Sendable (_ root: String) throws(GraftError) -> Int
    ) async throws(GraftError) -> (path: String, bytes: Int) {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        let (parent, base) = FileSystem.parentAndName(trimmed)
        let temporary = parent + "/." + base + "." + FileSystem.uniqueName(suffix: ".tmp")
        async let verified = Self.firstDamaged(parts, in: blobs)
        let written = await Result { () async throws(GraftError) -> Int in
            try await offload { () throws(GraftError) -> Int in try write(temporary) }
        }
        let damaged = await verified
        func discard() { try? FileManager.default.removeItem(atPath: temporary) }
        let bytes: Int
        switch written {
        case .success(let count) where damaged == nil: bytes = count
        case .success:
            discard()
            throw damaged!
        case .failure(let error):
            discard()
            throw damaged ?? error
        }
        do throws(GraftError) {
            if FileSystem.fileExists(trimmed) {
                guard overwrite else { throw GraftError.outputExists(path: path) }
                try Self.replace(trimmed, with: temporary, parent: parent, base: base)
            } else {
                try FileSystem.rename(temporary, trimmed)
            }
        } catch {
            discard()
            throw error
        }
        try FileSystem.syncDirectory(parent)
        return (trimmed, bytes)
    }

    /// Puts `temporary` (a file or a tree, written beside `path` in `parent`) where `path` is,
    /// replacing whatever is there: that is first renamed aside, then removed.
    static func replace(_ path: String, with temporary: String, parent: String, base: String) throws(GraftError) {
        let old = parent + "/." + base + "." + FileSystem.uniqueName(suffix: ".old")
        try FileSystem.rename(path, old)
        try FileSystem.rename(temporary, path)
        try? FileManager.default.removeItem(atPath: old)
    }

    /// Writes every file of a directory checkpoint under `root` (created), each flushed, and
    /// the folders flushed after; returns the bytes written.
    private static func writeTree(_ stored: CheckpointParts, into root: String, blobs: BlobTransfer) throws(GraftError) -> Int {
        try FileSystem.makeDirectory(root, mode: 0o755)
        var folders: [String] = [root]
        var written = 0
        for file in stored.files {
            // Paths were checked when the checkpoint was recorded; a database edited since never writes outside `root`.
            if let problem = DirectoryInput.pathProblem(file.path) {
                throw GraftError.io(
                    operation: "refusing to write \(file.path.debugDescription) (\(problem)) under", path: root, errno: EINVAL)
            }
            let components = file.path.split(separator: "/").map(String.init)
            var folder = root
            for component in components.dropLast() {
                folder += "/" + component
                if try FileSystem.makeDirectory(folder, mode: 0o755) { folders.append(folder) }
            }
            let out = try FileDescriptor(path: root + "/" + file.path, flags: O_WRONLY | O_CREAT | O_EXCL)
            func put(_ digest: Digest, _ length: Int, _ inline: [UInt8]?) throws(GraftError) {
                if let inline { try out.write(inline) } else { try blobs.append(digest, length: length, to: out) }
                written += length
            }
            switch file.content {
            case .shard(let header, let first, let count):
                try out.write(header)
                written += header.count
                for (digest, length, inline) in stored.tensors[first..<(first + count)] { try put(digest, length, inline) }
            case .file(let digest, let length, let inline):
                try put(digest, length, inline)
            }
            try out.sync()
        }
        for folder in folders.reversed() { try FileSystem.syncDirectory(folder) }
        return written
    }
}

extension DirectoryInput {
    /// Reads a model directory for import (``Registry/addBase(name:directory:provenance:progress:)``,
    /// ``Registry/addCheckpoint(model:directory:step:epoch:metrics:split:progress:)``): every file
    /// checked, shards validated against their index, nothing stored yet.
    /// - Throws: ``GraftError/invalidDirectory(path:reason:)`` saying what cannot be imported.
    public static func open(_ path: String, options: DirectoryOptions = DirectoryOptions()) throws(GraftError) -> DirectoryInput {
        try ModelDirectory.open(path, options: options)
    }

    /// Whether `path` is a directory (a symlink followed): what the CLI imports as a model directory.
    public static func isDirectory(_ path: String) -> Bool { ModelDirectory.isDirectory(path) }

    /// Why a single file should have been given as its directory: one shard of a sharded model,
    /// or its index; `nil` for any other file.
    public static func shardAdvice(file path: String) -> String? { ModelDirectory.shardAdvice(file: path) }
}

extension Registry: RegistryAPI {}

extension Registry {
    /// Decodes encoded blobs, rehashing each, and writes their raw bytes at the given offsets of
    /// `out` (two lanes); the first damage found, or nil.
    static func writeDecoded(_ items: [(digest: Digest, length: Int, offset: Int)], to out: FileDescriptor, blobs: BlobTransfer) async
        -> GraftError?
    {
        await BlobTransfer.firstFailure(sizes: items.map(\.length)) { index, buffer throws(GraftError) in
            let (digest, length, offset) = items[index]
            var position = 0
            try blobs.stream(digest, length: length, buffer: buffer, verify: true) { chunk throws(GraftError) in
                try out.write(chunk, at: offset + position)
                // On its way to disk while the next chunk decodes: the final fsync then finds most of it written.
                out.startWriteback(offset: offset + position, count: chunk.count)
                position += chunk.count
            }
        }
    }
}

extension BlobTransfer {
    /// Appends a stored blob's raw bytes to `out`: the kernel copies a raw blob; an encoded one
    /// (`graft compact`) is decoded chunk by chunk. Unverified, as ``BlobStore/copy(_:length:appendingTo:)``:
    /// callers hash alongside (``Registry/firstDamaged(_:in:)``).
    func append(_ digest: Digest, length: Int, to out: FileDescriptor) throws(GraftError) {
        let reader = try reader(digest, length: length)
        if case .raw = reader.form {
            try store.copy(digest, length: length, appendingTo: out.fd)
            return
        }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.chunkSize, alignment: 64)
        defer { buffer.deallocate() }
        var offset = 0
        while offset < length {
            let count = min(Self.chunkSize, length - offset)
            try reader.read(at: offset, count: count, into: buffer)
            try out.write(UnsafeRawBufferPointer(start: buffer, count: count))
            offset += count
        }
    }
}
