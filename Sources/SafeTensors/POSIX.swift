#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The operating system's text for `code`, e.g. "No space left on device".
public func describeErrno(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "error \(code)" }
    return String(cString: text)
}

/// An `errno` value from a failed system call.
public struct Errno: Error, Sendable, Equatable {
    public let code: Int32
    public init(_ code: Int32) { self.code = code }
}

/// Reads exactly `count` bytes at `offset`, retrying short reads and `EINTR`.
///
/// - Returns: the number of bytes read; less than `count` only at end of file.
public func preadFully(
    _ fd: Int32, _ buffer: UnsafeMutableRawPointer, count: Int, offset: Int
) -> Result<Int, Errno> {
    var done = 0
    while done < count {
        let n = pread(fd, buffer + done, count - done, off_t(offset + done))
        if n < 0 {
            if errno == EINTR { continue }
            return .failure(Errno(errno))
        }
        if n == 0 { break }
        done += n
    }
    return .success(done)
}

/// Writes all `count` bytes, retrying short writes and `EINTR`.
public func writeFully(_ fd: Int32, _ buffer: UnsafeRawPointer, count: Int) -> Int32? {
    var done = 0
    while done < count {
        let n = write(fd, buffer + done, count - done)
        if n < 0 {
            if errno == EINTR { continue }
            return errno
        }
        done += n
    }
    return nil
}

/// Writes all `count` bytes at `offset`, retrying short writes and `EINTR`; the file offset is
/// left alone, so several threads may write disjoint ranges of one file.
public func pwriteFully(_ fd: Int32, _ buffer: UnsafeRawPointer, count: Int, offset: Int) -> Int32? {
    var done = 0
    while done < count {
        let n = pwrite(fd, buffer + done, count - done, off_t(offset + done))
        if n < 0 {
            if errno == EINTR { continue }
            return errno
        }
        done += n
    }
    return nil
}
