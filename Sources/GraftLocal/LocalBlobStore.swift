public import GraftCore
import SafeTensors

#if canImport(Glibc)
    import Glibc
#endif

/// Blobs as files on a local disk: `blobs/sha256/ab/<64 hex>`, read-only (mode 0444).
///
/// A blob is written to `tmp/`, flushed, and renamed into place; its directory is flushed
/// (``flush(_:)``) before any row refers to it. A blob that exists already is not written
/// again: its modification time is refreshed instead (a claim), so `gc`'s grace period protects
/// it until the referring checkpoint commits. Every path comes from the root and a digest.
public struct LocalBlobStore: BlobStore {
    public let layout: RegistryLayout

    public init(layout: RegistryLayout) {
        self.layout = layout
    }

    public func beginWrite() throws(GraftError) -> any BlobWrite {
        try LocalBlobWrite(store: self)
    }

    public func contains(_ digest: Digest, claim: Bool) -> Bool {
        let path = layout.blobPath(digest)
        guard FileSystem.fileExists(path) else { return false }
        if claim { FileSystem.touch(path) }
        return true
    }

    public func length(of digest: Digest) throws(GraftError) -> Int? {
        try FileSystem.fileSize(layout.blobPath(digest))
    }

    public func read(_ digest: Digest, at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) throws(GraftError) {
        let path = layout.blobPath(digest)
        let file: FileDescriptor
        do { file = try FileDescriptor(path: path, flags: O_RDONLY) } catch {
            if case .io(_, _, ENOENT) = error { throw .damagedBlob(digest, reason: "its file is missing") }
            throw error
        }
        do { try file.read(into: buffer, count: count, offset: offset) } catch {
            if case .io(_, _, EIO) = error, !FileSystem.fileExists(path) { throw .damagedBlob(digest, reason: "its file is missing") }
            throw error
        }
    }

    public func copy(_ digest: Digest, length: Int, appendingTo fd: Int32) throws(GraftError) {
        let path = layout.blobPath(digest)
        let source: FileDescriptor
        do { source = try FileDescriptor(path: path, flags: O_RDONLY) } catch {
            if case .io(_, _, ENOENT) = error { throw .damagedBlob(digest, reason: "its file is missing") }
            throw error
        }
        try FileSystem.copy(from: source, to: fd, count: length)
    }

    public var mapsCheaply: Bool { true }

    public func map(_ digest: Digest, length: Int) throws(GraftError) -> any BlobBytes {
        try MappedBlob(path: layout.blobPath(digest), digest: digest, length: length)
    }

    public func flush(_ written: [Digest]) throws(GraftError) {
        let directories = Set(written.map { layout.blobDirectory($0) })
        for directory in directories.sorted() { try FileSystem.syncDirectory(directory) }
        if !directories.isEmpty { try FileSystem.syncDirectory(layout.sha256) }
    }

    public func age(of digest: Digest) -> Double? {
        FileSystem.modificationTime(layout.blobPath(digest)).map { FileSystem.now() - $0 }
    }

    public func remove(_ digest: Digest) {
        FileSystem.remove(layout.blobPath(digest))
    }

    public func inventory() -> BlobInventory {
        func isHex(_ text: Substring) -> Bool { text.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) } }
        var blobs: [Digest] = [], stray: [String] = []
        for name in (try? FileSystem.contentsOfDirectory(layout.blobs)) ?? [] where name != "sha256" {
            stray.append("blobs/" + name)
        }
        for directory in (try? FileSystem.contentsOfDirectory(layout.sha256)) ?? [] {
            let path = layout.sha256 + "/" + directory
            guard directory.count == 2, isHex(Substring(directory)), FileSystem.isDirectory(path) else {
                stray.append("blobs/sha256/" + directory)
                continue
            }
            for name in (try? FileSystem.contentsOfDirectory(path)) ?? [] {
                if name.count == 64, name.hasPrefix(directory), isHex(Substring(name)), let digest = try? Digest(parsing: "sha256:" + name)
                {
                    blobs.append(digest)
                } else {
                    stray.append("blobs/sha256/\(directory)/\(name)")
                }
            }
        }
        return BlobInventory(blobs: blobs, stray: stray.sorted())
    }

    public func temporaryItems() -> [(name: String, age: Double)] {
        let now = FileSystem.now()
        return ((try? FileSystem.contentsOfDirectory(layout.tmp)) ?? []).compactMap { name in
            FileSystem.modificationTime(layout.tmp + "/" + name).map { (name, now - $0) }
        }
    }

    public func adopt(_ digest: Digest, from other: any BlobStore) throws(GraftError) -> Bool {
        guard let other = other as? LocalBlobStore, other.layout.root != layout.root else { return false }
        try FileSystem.makeDirectory(layout.blobDirectory(digest))
        CrashPoint.tick()
        if link(other.layout.blobPath(digest), layout.blobPath(digest)) == 0 || errno == EEXIST { return true }
        // Another file system (EXDEV), links refused (EPERM, EMLINK), or the blob gone: copy instead.
        return false
    }

    public func removeTemporary(_ name: String) {
        // Names come from temporaryItems(): one component, never a path a user typed.
        guard !name.contains("/"), name != ".", name != ".." else { return }
        FileSystem.remove(layout.tmp + "/" + name)
    }
}

/// A blob file being written under `tmp/`.
final class LocalBlobWrite: BlobWrite {
    private let store: LocalBlobStore
    private let temporary: String
    private var file: FileDescriptor?
    private var written = 0

    package init(store: LocalBlobStore) throws(GraftError) {
        self.store = store
        temporary = store.layout.tmp + "/" + FileSystem.uniqueName(suffix: ".blob")
        file = try FileDescriptor(path: temporary, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o400, exact: true)
    }

    deinit { abort() }

    package func write(_ chunk: UnsafeRawBufferPointer) throws(GraftError) {
        guard let file else { throw .io(operation: "write after commit to", path: temporary, errno: EBADF) }
        try file.write(chunk)
        // Start the chunk on its way to disk while the next one is hashed: the fsync at commit
        // then finds most of the blob written.
        file.startWriteback(offset: written, count: chunk.count)
        written += chunk.count
    }

    package func commit(as digest: Digest) throws(GraftError) -> Bool {
        guard let file else { throw .io(operation: "commit twice", path: temporary, errno: EBADF) }
        if store.contains(digest, claim: true) {
            abort()
            return false
        }
        try file.sync()
        self.file = nil
        let layout = store.layout
        do throws(GraftError) {
            try FileSystem.makeDirectory(layout.blobDirectory(digest))
            try FileSystem.rename(temporary, layout.blobPath(digest))
        } catch {
            FileSystem.remove(temporary)
            throw error
        }
        return true
    }

    package func replace(_ digest: Digest) throws(GraftError) {
        guard let file else { throw .io(operation: "commit twice", path: temporary, errno: EBADF) }
        try file.sync()
        self.file = nil
        let layout = store.layout
        do throws(GraftError) {
            try FileSystem.makeDirectory(layout.blobDirectory(digest))
            CrashPoint.tick()
            // Over the old file: readers holding it open keep reading it whole.
            try FileSystem.rename(temporary, layout.blobPath(digest))
        } catch {
            FileSystem.remove(temporary)
            throw error
        }
    }

    package func abort() {
        guard file != nil else { return }
        file = nil
        FileSystem.remove(temporary)
    }
}

/// A stored blob file mapped read-only into memory; unmapped when released.
package final class MappedBlob: BlobBytes, @unchecked Sendable {
    // @unchecked Sendable: mapped PROT_READ in init, unmapped only in deinit; blob files are
    // immutable (mode 0444, never rewritten, removed only by gc under the write lock).
    private let base: UnsafeRawPointer?
    private let length: Int

    package init(path: String, digest: Digest, length: Int) throws(GraftError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw .damagedBlob(digest, reason: "its file is missing") }
            throw GraftError.fromErrno(errno, operation: "cannot open", path: path)
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw GraftError.fromErrno(errno, operation: "cannot stat", path: path) }
        guard Int(info.st_size) == length else {
            throw .damagedBlob(digest, reason: "its file holds \(info.st_size) bytes, expected \(length)")
        }
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

    package var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: length) }

    /// Drops the pages of `range` from this mapping (`MADV_DONTNEED` on a read-only shared file
    /// mapping: the page cache keeps them; the next read faults them back in).
    package func willNotNeed(_ range: Range<Int>) {
        guard let base, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (range.lowerBound + page - 1) / page * page  // only whole pages inside the range
        let end = range.upperBound == length ? range.upperBound : range.upperBound / page * page
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED)
    }
}
