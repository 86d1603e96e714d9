#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Reads a safetensors file through a file descriptor, in bounded memory.
///
/// Opening reads and validates only the header; tensor data is read on demand with `pread`,
/// so a file larger than memory can be streamed. Reads at different offsets may run
/// concurrently from several threads.
///
/// ```swift
/// let reader = try SafeTensorsReader(path: "model.safetensors")
/// for tensor in reader.header.tensors { print(tensor.name, tensor.shape) }
/// ```
public final class SafeTensorsReader: Sendable {
    public let path: String
    public let header: SafeTensorsHeader
    /// The header exactly as stored: the 8-byte length prefix followed by the JSON text.
    public let headerBytes: [UInt8]
    public let fileSize: Int
    private let fd: Int32

    /// Opens and validates `path`.
    ///
    /// - Throws: ``SafeTensorsError`` naming what is wrong; ``SafeTensorsError/pickleCheckpoint(kind:)``
    ///   for PyTorch pickle or zip checkpoints, which are never loaded.
    public init(path: String) throws(SafeTensorsError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(operation: "cannot open", path: path, errno: errno) }
        do throws(SafeTensorsError) {
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw SafeTensorsError.io(operation: "cannot stat", path: path, errno: errno) }
            guard (info.st_mode & S_IFMT) == S_IFREG else {
                throw SafeTensorsError.io(operation: "not a regular file:", path: path, errno: EINVAL)
            }
            let size = Int(info.st_size)
            var prefix = [UInt8](repeating: 0, count: 8)
            let got: Int
            switch prefix.withUnsafeMutableBytes({ preadFully(fd, $0.baseAddress!, count: 8, offset: 0) }) {
            case .success(let n): got = n
            case .failure(let failure): throw .io(operation: "cannot read", path: path, errno: failure.code)
            }
            let json: [UInt8]
            let header: SafeTensorsHeader
            do throws(SafeTensorsError) {
                let length = try SafeTensorsHeader.headerLength(prefix: Array(prefix[0..<got]), fileSize: size)
                var text = [UInt8](repeating: 0, count: length)
                if length > 0,
                    case .failure(let failure) = text.withUnsafeMutableBytes({ preadFully(fd, $0.baseAddress!, count: length, offset: 8) })
                {
                    throw .io(operation: "cannot read", path: path, errno: failure.code)
                }
                header = try SafeTensorsHeader.parse(json: text, fileSize: size)
                json = text
            } catch {
                if case .io = error { throw error }
                if let kind = pickleKind(prefix: Array(prefix[0..<got]), path: path) { throw .pickleCheckpoint(kind: kind) }
                throw error
            }
            self.path = path
            self.fd = fd
            self.fileSize = size
            self.header = header
            self.headerBytes = prefix + json
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// Reads `count` bytes of `tensor`'s data starting `offset` bytes into the tensor.
    ///
    /// - Throws: ``SafeTensorsError/io(operation:path:errno:)``, also when the file shrank
    ///   since it was opened.
    public func read(
        _ tensor: TensorInfo, at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer
    ) throws(SafeTensorsError) {
        precondition(offset >= 0 && count >= 0 && offset + count <= tensor.byteCount, "read outside the tensor")
        switch preadFully(fd, buffer, count: count, offset: header.dataStart + tensor.dataOffsets.lowerBound + offset) {
        case .success(let n) where n == count: return
        case .success: throw .io(operation: "file shrank while reading", path: path, errno: EIO)
        case .failure(let failure): throw .io(operation: "cannot read", path: path, errno: failure.code)
        }
    }
}

/// Names the kind of pickle-based checkpoint a file looks like, or `nil`.
///
/// Used only to explain a refusal: the file is never unpickled.
func pickleKind(prefix: [UInt8], path: String) -> String? {
    let lower = path.lowercased()
    let pickleExtensions = [".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"]
    if prefix.count >= 2, prefix[0] == 0x80, (2...5).contains(prefix[1]) {
        return "pickle file (a PyTorch checkpoint saved with torch.save)"
    }
    if prefix.starts(with: [0x50, 0x4B, 0x03, 0x04]) {
        return "zip archive (PyTorch's torch.save format, which holds a pickle)"
    }
    if let ext = pickleExtensions.first(where: { lower.hasSuffix($0) }) {
        return "\(ext) file (PyTorch checkpoints with this extension are pickles)"
    }
    return nil
}
