package import GraftCore
import SafeTensors

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

package let ENOSPC_ = ENOSPC
package let EDQUOT_ = EDQUOT
package let EROFS_ = EROFS
package let EACCES_ = EACCES
package let EPERM_ = EPERM

/// Thin, throwing wrappers over the POSIX calls the store needs. Every path here is built by
/// the registry from digests and fixed names, never from user text.
package enum FileSystem {
    /// The folder holding `path` (`.` for a bare name, `/` for a name at the root) and its last
    /// component, a trailing slash ignored: where a file is written beside its destination
    /// before being renamed onto it.
    package static func parentAndName(_ path: String) -> (parent: String, name: String) {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        guard let slash = trimmed.lastIndex(of: "/") else { return (".", trimmed) }
        let parent = String(trimmed[..<slash])
        return (parent.isEmpty ? "/" : parent, String(trimmed[trimmed.index(after: slash)...]))
    }

    package static func fileExists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    package static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// Size of a regular file, or `nil` when it does not exist.
    package static func fileSize(_ path: String) throws(GraftError) -> Int? {
        var info = stat()
        if stat(path, &info) != 0 {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw GraftError.fromErrno(errno, operation: "cannot stat", path: path)
        }
        return Int(info.st_size)
    }

    /// Creates a directory of the registry's, private to its owner (0700, whatever the umask:
    /// the registry holds token hashes and every model's bytes); an existing one is fine and
    /// left as it is. Returns whether it was created.
    @discardableResult
    package static func makeDirectory(_ path: String, mode: UInt32 = 0o700) throws(GraftError) -> Bool {
        if mkdir(path, mode_t(mode)) == 0 {
            guard chmod(path, mode_t(mode)) == 0 else { throw GraftError.fromErrno(errno, operation: "cannot set the mode of", path: path) }
            return true
        }
        if errno == EEXIST, isDirectory(path) { return false }
        throw GraftError.fromErrno(errno, operation: "cannot create directory", path: path)
    }

    /// Flushes a directory so that renames and creations in it survive a crash.
    package static func syncDirectory(_ path: String) throws(GraftError) {
        CrashPoint.tick()
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw GraftError.fromErrno(errno, operation: "cannot open directory", path: path) }
        defer { close(fd) }
        // A failed fsync is never retried: the kernel may have dropped the dirty pages.
        guard fsync(fd) == 0 else { throw GraftError.fromErrno(errno, operation: "cannot flush directory", path: path) }
    }

    package static func rename(_ from: String, _ to: String) throws(GraftError) {
        CrashPoint.tick()
        guard Glibc.rename(from, to) == 0 else { throw GraftError.fromErrno(errno, operation: "cannot rename to", path: to) }
    }

    /// Removes a file; a missing one is fine.
    package static func remove(_ path: String) {
        _ = unlink(path)
    }

    /// Seconds since the epoch, now (the clock file modification times use).
    package static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }

    /// Sets a file's modification time to now.
    package static func touch(_ path: String) {
        _ = utimensat(AT_FDCWD, path, nil, 0)
    }

    /// Seconds since the epoch of the file's last modification, or nil when it is gone.
    package static func modificationTime(_ path: String) -> Double? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9
    }

    /// Directory entries other than `.` and `..`.
    package static func contentsOfDirectory(_ path: String) throws(GraftError) -> [String] {
        guard let dir = opendir(path) else { throw GraftError.fromErrno(errno, operation: "cannot list", path: path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Appends `count` bytes of `source` (from its start) to the open file `fd` at its current
    /// offset, in the kernel where it can (`sendfile`), else through a buffer.
    package static func copy(from source: FileDescriptor, to fd: Int32, count: Int, destination: String = "the output") throws(GraftError) {
        var sourceOffset = off_t(0)
        var remaining = count
        // In pieces, each one's writeback started as soon as it is copied (see startWriteback).
        var outputOffset = lseek(fd, 0, SEEK_CUR)
        while remaining > 0 {
            let n = sendfile(fd, source.fd, &sourceOffset, min(remaining, writebackPiece))
            if n > 0 {
                remaining -= n
                if outputOffset >= 0 {
                    _ = posix_fadvise(fd, outputOffset, off_t(n), POSIX_FADV_DONTNEED)
                    outputOffset += off_t(n)
                }
                continue
            }
            if n == 0 { throw GraftError.io(operation: "unexpected end of file reading", path: source.path, errno: EIO) }
            if errno == EINTR { continue }
            if errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP { break }
            throw GraftError.fromErrno(errno, operation: "cannot copy to", path: destination)
        }
        guard remaining > 0 else { return }
        let size = min(remaining, 4 << 20)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        defer { buffer.deallocate() }
        var offset = Int(sourceOffset)
        while remaining > 0 {
            let chunk = min(size, remaining)
            try source.read(into: buffer, count: chunk, offset: offset)
            CrashPoint.tick()
            if let code = writeFully(fd, buffer, count: chunk) {
                throw GraftError.fromErrno(code, operation: "cannot write", path: destination)
            }
            offset += chunk
            remaining -= chunk
        }
    }

    /// How much a copy hands the kernel at a time before starting its writeback.
    static let writebackPiece = 8 << 20

    /// A name for a temporary file that no other writer will pick.
    package static func uniqueName(suffix: String) -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        for _ in 0..<24 { bytes.append(digits[Int(generator.next() % 16)]) }
        return "\(getpid())-" + String(decoding: bytes, as: UTF8.self) + suffix
    }
}

/// An open file descriptor, closed when released. Immutable, so it may be shared across
/// threads for positional reads and writes.
package final class FileDescriptor: Sendable {
    package let fd: Int32
    let path: String

    /// Opens `path`, creating it with `mode` under the umask; with `exact`, a file created gets
    /// exactly `mode` whatever the umask (the registry's own files: private to the owner).
    package init(path: String, flags: Int32, mode: UInt32 = 0o644, exact: Bool = false) throws(GraftError) {
        let fd = open(path, flags | O_CLOEXEC, mode_t(mode))
        guard fd >= 0 else { throw GraftError.fromErrno(errno, operation: "cannot open", path: path) }
        self.fd = fd
        self.path = path
        if exact, flags & O_CREAT != 0, fchmod(fd, mode_t(mode)) != 0 {
            throw GraftError.fromErrno(errno, operation: "cannot set the mode of", path: path)
        }
    }

    deinit { close(fd) }

    package func write(_ buffer: UnsafeRawBufferPointer) throws(GraftError) {
        guard buffer.count > 0 else { return }
        CrashPoint.tick()
        if let code = writeFully(fd, buffer.baseAddress!, count: buffer.count) {
            throw GraftError.fromErrno(code, operation: "cannot write", path: path)
        }
    }

    /// Writes `buffer` at `offset` (positional: safe from several threads on disjoint ranges).
    package func write(_ buffer: UnsafeRawBufferPointer, at offset: Int) throws(GraftError) {
        guard buffer.count > 0 else { return }
        CrashPoint.tick()
        if let code = pwriteFully(fd, buffer.baseAddress!, count: buffer.count, offset: offset) {
            throw GraftError.fromErrno(code, operation: "cannot write", path: path)
        }
    }

    package func write(_ bytes: [UInt8], at offset: Int) throws(GraftError) {
        let result = bytes.withUnsafeBytes { buffer in Result { () throws(GraftError) in try write(buffer, at: offset) } }
        try result.get()
    }

    package func write(_ bytes: [UInt8]) throws(GraftError) {
        let result = bytes.withUnsafeBytes { buffer in Result { () throws(GraftError) in try write(buffer) } }
        try result.get()
    }

    /// Reads exactly `count` bytes at `offset`.
    package func read(into buffer: UnsafeMutableRawPointer, count: Int, offset: Int) throws(GraftError) {
        switch preadFully(fd, buffer, count: count, offset: offset) {
        case .success(let n) where n == count: return
        case .success: throw GraftError.io(operation: "unexpected end of file reading", path: path, errno: EIO)
        case .failure(let failure): throw GraftError.fromErrno(failure.code, operation: "cannot read", path: path)
        }
    }

    /// Appends `count` bytes of `source` (from its start) at this file's current offset.
    package func copy(from source: FileDescriptor, count: Int) throws(GraftError) {
        try FileSystem.copy(from: source, to: fd, count: count, destination: path)
    }

    /// Asks the kernel to start writing `count` bytes at `offset` to disk now, without waiting
    /// (`POSIX_FADV_DONTNEED` on dirty pages starts their writeback; pages still dirty are not
    /// dropped). Written as they arrive, the bytes of a large file are mostly on disk by the
    /// time its `fsync` runs, so the flush overlaps with hashing instead of following it. Advice
    /// only: a kernel that ignores it loses nothing but the overlap.
    package func startWriteback(offset: Int, count: Int) {
        _ = posix_fadvise(fd, off_t(offset), off_t(count), POSIX_FADV_DONTNEED)
    }

    /// Flushes the file to stable storage. Never retried on failure.
    package func sync() throws(GraftError) {
        CrashPoint.tick()
        guard fsync(fd) == 0 else { throw GraftError.fromErrno(errno, operation: "cannot flush", path: path) }
    }
}

extension GraftError {
    /// Maps a failed system call's `errno` to the error a user should see.
    package static func fromErrno(_ code: Int32, operation: String, path: String) -> GraftError {
        switch code {
        case ENOSPC_, EDQUOT_: .diskFull(path: path)
        case EROFS_, EACCES_, EPERM_: .readOnly(path: path)
        default: .io(operation: operation, path: path, errno: code)
        }
    }
}
