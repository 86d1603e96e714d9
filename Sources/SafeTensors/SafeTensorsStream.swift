import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Bytes that arrive once, front to back: a pipe, standard input, a socket, a body being received.
public protocol ByteSource: Sendable {
    /// Where the bytes come from, for messages.
    var origin: String { get }
    /// Reads up to `count` bytes into `buffer`; returns how many, 0 only at the end. Blocks.
    func read(into buffer: UnsafeMutableRawPointer, count: Int) throws(SafeTensorsError) -> Int
}

/// A file descriptor read to its end (`-` on the command line: standard input). The descriptor
/// is not closed.
public struct FileDescriptorSource: ByteSource {
    public let fd: Int32
    public let origin: String

    public init(fd: Int32, origin: String) {
        self.fd = fd
        self.origin = origin
    }

    public func read(into buffer: UnsafeMutableRawPointer, count: Int) throws(SafeTensorsError) -> Int {
        while true {
            #if canImport(Glibc)
                let n = Glibc.read(fd, buffer, count)
            #else
                let n = Darwin.read(fd, buffer, count)
            #endif
            if n >= 0 { return n }
            if errno != EINTR { throw .io(operation: "cannot read", path: origin, errno: errno) }
        }
    }
}

/// A safetensors file read from a ``ByteSource`` in one pass: the header is read and validated
/// at once (the data section's length follows from it), then tensors are read in data order.
/// An input for the registry's imports (``SafeTensorsInput``), with ``isSequential`` set: the
/// registry reads it on one lane, front to back, and cannot read it twice.
///
/// Reads must come in data order, each starting where the previous one ended; anything else
/// is a programming error. ``finish()`` checks that the source ends exactly where the data
/// section does.
public final class SafeTensorsStream: SafeTensorsInput, @unchecked Sendable {
    // @unchecked Sendable: `position` is behind a mutex; the source is read by one caller at a time.
    public let origin: String
    public let header: SafeTensorsHeader
    public let headerBytes: [UInt8]
    public var fileSize: Int { header.fileLength }
    private let source: any ByteSource
    private let position = Mutex<Int>(0)

    /// Reads and validates the header.
    ///
    /// - Throws: ``SafeTensorsError`` as for a file: a source shorter than its 8-byte prefix or its
    ///   header, a header over ``SafeTensorsHeader/maximumLength``, invalid JSON or offsets, and
    ///   ``SafeTensorsError/pickleCheckpoint(kind:)`` for a pickle or zip checkpoint.
    public init(_ source: any ByteSource) throws(SafeTensorsError) {
        self.source = source
        origin = source.origin
        let prefix = try Self.readFully(source, count: 8)
        do throws(SafeTensorsError) {
            guard prefix.count == 8 else { throw .fileTooSmall(byteCount: prefix.count) }
            var declared: UInt64 = 0
            for i in (0..<8).reversed() { declared = declared << 8 | UInt64(prefix[i]) }
            guard declared <= UInt64(SafeTensorsHeader.maximumLength) else { throw .headerTooLarge(declared: declared) }
            let json = try Self.readFully(source, count: Int(declared))
            guard json.count == Int(declared) else { throw .headerPastEndOfFile(declared: declared, fileSize: 8 + json.count) }
            header = try SafeTensorsHeader.parse(json: json, fileSize: nil)
            headerBytes = prefix + json
        } catch {
            if case .io = error { throw error }
            if let kind = pickleKind(prefix: prefix, path: "") { throw .pickleCheckpoint(kind: kind) }
            throw error
        }
    }

    public var isSequential: Bool { true }

    public func read(_ tensor: TensorInfo, at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) throws(SafeTensorsError) {
        let start = tensor.dataOffsets.lowerBound + offset
        try position.withLock { (position: inout Int) throws(SafeTensorsError) in
            precondition(start == position, "a stream is read in data order: asked for byte \(start), at \(position)")
            var done = 0
            while done < count {
                let n = try source.read(into: buffer + done, count: count - done)
                guard n > 0 else { throw .dataSectionMismatch(covered: header.dataLength, actual: position + done) }
                done += n
            }
            position += count
        }
    }

    /// Checks that every tensor was read and the source ends there.
    /// - Throws: ``SafeTensorsError/dataSectionMismatch(covered:actual:)`` for bytes past the data section.
    public func finish() throws(SafeTensorsError) {
        let read = position.withLock { $0 }
        precondition(read == header.dataLength, "finish() before every tensor was read")
        var extra: UInt8 = 0
        let n = try withUnsafeMutableBytes(of: &extra) { byte in
            Result { () throws(SafeTensorsError) -> Int in try source.read(into: byte.baseAddress!, count: 1) }
        }.get()
        if n > 0 { throw .dataSectionMismatch(covered: header.dataLength, actual: header.dataLength + n) }
    }

    /// Up to `count` bytes: fewer only when the source ended.
    private static func readFully(_ source: any ByteSource, count: Int) throws(SafeTensorsError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = try bytes.withUnsafeMutableBytes { buffer in
                Result { () throws(SafeTensorsError) -> Int in try source.read(into: buffer.baseAddress! + done, count: count - done) }
            }.get()
            if n == 0 { break }
            done += n
        }
        return Array(bytes[0..<done])
    }
}
