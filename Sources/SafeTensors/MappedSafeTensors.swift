#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A safetensors file mapped into memory: tensor data is read in place, never copied.
///
/// ```swift
/// let file = try MappedSafeTensors(path: "model.safetensors")
/// let weight = file.header.tensors[0]
/// file.withData(of: weight) { bytes in print(bytes.count) }
/// ```
// @unchecked Sendable: the mapping is read-only (PROT_READ, MAP_PRIVATE), created in init and
// unmapped only in deinit, so concurrent readers never see it change.
public final class MappedSafeTensors: @unchecked Sendable {
    public let path: String
    public let header: SafeTensorsHeader
    private let base: UnsafeRawPointer
    private let size: Int

    /// Maps and validates `path`.
    ///
    /// - Throws: ``SafeTensorsError`` naming what is wrong with the file.
    public init(path: String) throws(SafeTensorsError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(operation: "cannot open", path: path, errno: errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .io(operation: "cannot stat", path: path, errno: errno) }
        let size = Int(info.st_size)
        guard size >= 8 else {
            if size > 0, let kind = pickleKind(prefix: [], path: path) { throw .pickleCheckpoint(kind: kind) }
            throw .fileTooSmall(byteCount: size)
        }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw .io(operation: "cannot map", path: path, errno: errno)
        }
        let whole = UnsafeRawBufferPointer(start: mapped, count: size)
        do throws(SafeTensorsError) {
            let length = try SafeTensorsHeader.headerLength(prefix: Array(whole[0..<8]), fileSize: size)
            header = try SafeTensorsHeader.parse(json: Array(whole[8..<(8 + length)]), fileSize: size)
        } catch {
            let prefix = Array(whole.prefix(8))
            munmap(mapped, size)
            if let kind = pickleKind(prefix: prefix, path: path) { throw .pickleCheckpoint(kind: kind) }
            throw error
        }
        self.path = path
        self.base = UnsafeRawPointer(mapped)
        self.size = size
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), size) }

    /// Calls `body` with the tensor's bytes, in place in the mapping.
    public func withData<R>(of tensor: TensorInfo, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: base + header.dataStart + tensor.dataOffsets.lowerBound, count: tensor.byteCount))
    }

    /// The header bytes exactly as stored (length prefix and JSON).
    public var headerBytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: header.dataStart) }
}
