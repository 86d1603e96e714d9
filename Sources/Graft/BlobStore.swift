#if canImport(Glibc)
    import Glibc
#endif
import Crypto
import Dispatch
import SafeTensors
import Synchronization

/// One tensor of an imported file, hashed and stored.
struct IngestedTensor: Sendable {
    let info: TensorInfo
    let digest: Digest
    /// The bytes, for tensors small enough to live in the database.
    let inline: [UInt8]?
    /// Whether this import wrote the blob file (false when it was already present).
    let wroteFile: Bool
    /// Whether the blob is in the store (a `hashOnly` pass may find it missing).
    var present: Bool = true
}

/// How `ingest` treats a large tensor.
enum IngestMode: Sendable {
    /// Hash while writing to `tmp/`; keep the file only if the blob is new.
    case writeThrough
    /// Hash without writing; write (rehashing) only if the blob turns out to be missing.
    case hashFirst
    /// Hash without writing, and never write: report whether the blob is present.
    case hashOnly
}

/// Content-addressed tensor bytes on disk.
///
/// A blob is written to `tmp/`, hashed as it streams, flushed, and renamed into
/// `blobs/sha256/ab/<hex>`; the directory is flushed before any row refers to it. A blob that
/// exists already is not written again: its modification time is refreshed instead, so `gc`'s
/// grace period protects it until the referring checkpoint commits.
struct BlobStore: Sendable {
    let layout: RegistryLayout
    /// Tensors smaller than this many bytes are kept inside SQLite instead of as files
    /// (see docs/ARCHITECTURE.md for the measurement behind the default).
    let inlineThreshold: Int
    static let chunkSize = 4 << 20

    /// Hashes and stores every tensor of `reader`, two lanes in parallel, in bounded memory.
    ///
    /// - Parameter progress: called with the bytes processed so far (from any thread).
    /// - Returns: one entry per tensor, in data order, and the directories that must be
    ///   flushed before the commit.
    /// - Parameters:
    ///   - indices: which of the file's tensors to process (default: all, in data order).
    ///   - mode: `.hashFirst` is faster when most tensors are expected to be present (a
    ///     re-import); `.hashOnly` checks tensors that must already be stored (frozen ones).
    func ingest(
        _ reader: SafeTensorsReader, indices: [Int]? = nil, mode: IngestMode = .writeThrough,
        progress: (@Sendable (Int) -> Void)?
    ) async throws(GraftError) -> [IngestedTensor] {
        let selected = indices ?? Array(reader.header.tensors.indices)
        let tensors = selected.map { reader.header.tensors[$0] }
        // Balance the lanes by bytes: largest tensors first, each to the lighter lane.
        let laneCount = max(1, min(2, tensors.count))
        var lanes = [[Int]](repeating: [], count: laneCount)
        var load = [Int](repeating: 0, count: laneCount)
        for index in tensors.indices.sorted(by: { tensors[$0].byteCount > tensors[$1].byteCount }) {
            let lane = load.indices.min(by: { load[$0] < load[$1] })!
            lanes[lane].append(index)
            load[lane] += tensors[index].byteCount
        }
        let results = Mutex<[IngestedTensor?]>(Array(repeating: nil, count: tensors.count))
        let failure = Mutex<GraftError?>(nil)
        let done = Atomic<Int>(0)
        let store = self
        let lanesToRun = lanes
        await Self.inLanes(lanesToRun.count) { lane, buffer in
            for index in lanesToRun[lane] {
                if failure.withLock({ $0 != nil }) { return }
                do throws(GraftError) {
                    let stored = try store.ingestOne(tensors[index], from: reader, mode: mode, buffer: buffer) { bytes in
                        let total = done.add(bytes, ordering: .relaxed).newValue
                        progress?(total)
                    }
                    results.withLock { $0[index] = stored }
                } catch {
                    failure.withLock { if $0 == nil { $0 = error } }
                    return
                }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
        return results.withLock { $0.map { $0! } }
    }

    /// Runs `body(lane, buffer)` on `lanes` Dispatch threads, each with its own chunk buffer,
    /// and waits for all of them without blocking Swift's cooperative pool.
    static func inLanes(_ lanes: Int, _ body: @escaping @Sendable (Int, UnsafeMutableRawPointer) -> Void) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                DispatchQueue.concurrentPerform(iterations: lanes) { lane in
                    let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunkSize, alignment: 64)
                    defer { buffer.deallocate() }
                    body(lane, buffer)
                }
                continuation.resume()
            }
        }
    }

    private func ingestOne(
        _ tensor: TensorInfo, from reader: SafeTensorsReader, mode: IngestMode, buffer: UnsafeMutableRawPointer,
        progress: (Int) -> Void
    ) throws(GraftError) -> IngestedTensor {
        var hasher = SHA256()
        if mode != .writeThrough, tensor.byteCount >= inlineThreshold {
            var offset = 0
            while offset < tensor.byteCount {
                let count = min(Self.chunkSize, tensor.byteCount - offset)
                do { try reader.read(tensor, at: offset, count: count, into: buffer) } catch { throw .cannotReadInput(path: reader.path, error) }
                hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buffer, count: count))
                offset += count
            }
            let digest = Digest(hasher.finalize())
            let destination = layout.blobPath(digest)
            if FileSystem.fileExists(destination) {
                FileSystem.touch(destination)
                progress(tensor.byteCount)
                return IngestedTensor(info: tensor, digest: digest, inline: nil, wroteFile: false)
            }
            if mode == .hashOnly {
                progress(tensor.byteCount)
                return IngestedTensor(info: tensor, digest: digest, inline: nil, wroteFile: false, present: false)
            }
            // Not there after all: store it, rehashing as it is written.
            return try ingestOne(tensor, from: reader, mode: .writeThrough, buffer: buffer, progress: progress)
        }
        if tensor.byteCount < inlineThreshold {
            let bytes: [UInt8]
            do { bytes = try reader.data(of: tensor) } catch { throw .cannotReadInput(path: reader.path, error) }
            hasher.update(data: bytes)
            progress(bytes.count)
            return IngestedTensor(info: tensor, digest: Digest(hasher.finalize()), inline: bytes, wroteFile: false)
        }
        let temporary = layout.tmp + "/" + FileSystem.uniqueName(suffix: ".blob")
        var keep = false
        defer { if !keep { FileSystem.remove(temporary) } }
        let file = try FileDescriptor(path: temporary, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o444)
        var offset = 0
        while offset < tensor.byteCount {
            let count = min(Self.chunkSize, tensor.byteCount - offset)
            do { try reader.read(tensor, at: offset, count: count, into: buffer) } catch { throw .cannotReadInput(path: reader.path, error) }
            let chunk = UnsafeRawBufferPointer(start: buffer, count: count)
            hasher.update(bufferPointer: chunk)
            try file.write(chunk)
            offset += count
            progress(count)
        }
        let digest = Digest(hasher.finalize())
        let destination = layout.blobPath(digest)
        if FileSystem.fileExists(destination) {
            FileSystem.touch(destination)
            return IngestedTensor(info: tensor, digest: digest, inline: nil, wroteFile: false)
        }
        try file.sync()
        try FileSystem.makeDirectory(layout.blobDirectory(digest))
        try FileSystem.rename(temporary, destination)
        keep = true
        return IngestedTensor(info: tensor, digest: digest, inline: nil, wroteFile: true)
    }

    /// Flushes the directories that received new blobs, so the renames survive a crash.
    func syncDirectories(for tensors: [IngestedTensor]) throws(GraftError) {
        let directories = Set(tensors.filter(\.wroteFile).map { layout.blobDirectory($0.digest) })
        for directory in directories.sorted() { try FileSystem.syncDirectory(directory) }
        if !directories.isEmpty { try FileSystem.syncDirectory(layout.sha256) }
    }

    /// Checks one stored blob: present, of the right length and, with `readData`, hashing to
    /// its digest. Returns the problem, or `nil` when the blob is sound.
    func check(
        _ digest: Digest, length: Int, inline: [UInt8]?, readData: Bool, buffer: UnsafeMutableRawPointer,
        bytesRead: (Int) -> Void = { _ in }
    ) -> (kind: BlobProblem.Kind, detail: String)? {
        if let inline {
            guard inline.count == length else { return (.wrongSize, "inline data holds \(inline.count) bytes, expected \(length)") }
            guard readData else { return nil }
            bytesRead(inline.count)
            return Digest.of(inline) == digest ? nil : (.wrongDigest, "inline bytes no longer match the digest")
        }
        let path = layout.blobPath(digest)
        let size: Int?
        do { size = try FileSystem.fileSize(path) } catch { return (.missing, "\(error)") }
        guard let size else { return (.missing, "file \(path) is missing") }
        guard size == length else { return (.wrongSize, "file holds \(size) bytes, expected \(length)") }
        guard readData else { return nil }
        do throws(GraftError) {
            try stream(digest, length: length, buffer: buffer, verify: true) { chunk throws(GraftError) in bytesRead(chunk.count) }
        } catch {
            if case .damagedBlob = error { return (.wrongDigest, "file bytes no longer match the digest") }
            return (.missing, "\(error)")
        }
        return nil
    }

    /// Streams a stored file blob to `body` in chunks, checking its length and digest.
    ///
    /// - Throws: ``GraftError/damagedBlob(_:reason:)`` when the file is missing, has the wrong
    ///   length, or its bytes no longer hash to `digest`.
    func stream(
        _ digest: Digest, length: Int, buffer: UnsafeMutableRawPointer, verify: Bool,
        _ body: (UnsafeRawBufferPointer) throws(GraftError) -> Void
    ) throws(GraftError) {
        let path = layout.blobPath(digest)
        guard let size = try FileSystem.fileSize(path) else { throw .damagedBlob(digest, reason: "its file is missing") }
        guard size == length else { throw .damagedBlob(digest, reason: "its file holds \(size) bytes, expected \(length)") }
        let file = try FileDescriptor(path: path, flags: O_RDONLY)
        var hasher = SHA256()
        var offset = 0
        while offset < length {
            let count = min(Self.chunkSize, length - offset)
            try file.read(into: buffer, count: count, offset: offset)
            let chunk = UnsafeRawBufferPointer(start: buffer, count: count)
            if verify { hasher.update(bufferPointer: chunk) }
            try body(chunk)
            offset += count
        }
        if verify, Digest(hasher.finalize()) != digest {
            throw .damagedBlob(digest, reason: "its bytes no longer match the digest")
        }
    }
}

/// A stored blob file mapped read-only into memory; unmapped when released.
final class MappedBlob: @unchecked Sendable {
    // @unchecked Sendable: mapped PROT_READ in init, unmapped only in deinit; blob files are
    // immutable (mode 0444, replaced never, removed only by gc under the write lock).
    let base: UnsafeRawPointer?
    let length: Int

    init(path: String, digest: Digest, length: Int) throws(GraftError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw .damagedBlob(digest, reason: "its file is missing") }
            throw GraftError.fromErrno(errno, operation: "cannot open", path: path)
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw GraftError.fromErrno(errno, operation: "cannot stat", path: path) }
        guard Int(info.st_size) == length else { throw .damagedBlob(digest, reason: "its file holds \(info.st_size) bytes, expected \(length)") }
        self.length = length
        guard length > 0 else {
            base = nil
            return
        }
        guard let mapped = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), mapped != MAP_FAILED else {
            throw GraftError.fromErrno(errno, operation: "cannot map", path: path)
        }
        base = UnsafeRawPointer(mapped)
    }

    deinit { if let base { munmap(UnsafeMutableRawPointer(mutating: base), length) } }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: length) }
}

extension BlobStore {
    /// Maps a file-stored blob for reading in place.
    /// - Throws: ``GraftError/damagedBlob(_:reason:)`` when the file is missing or of the wrong length.
    func map(_ digest: Digest, length: Int) throws(GraftError) -> MappedBlob {
        try MappedBlob(path: layout.blobPath(digest), digest: digest, length: length)
    }
}
