/// A safetensors file to import, readable at random in bounded memory: a file on disk
/// (``SafeTensorsReader``) or tensors held in memory (``SafeTensorsMemory``). Its header has been
/// validated; reads at different offsets may run concurrently.
public protocol SafeTensorsInput: Sendable {
    /// Where it comes from, for messages: a path, or a description of the memory.
    var origin: String { get }
    var header: SafeTensorsHeader { get }
    /// The header exactly as it would be stored: the 8-byte length prefix and the JSON text.
    var headerBytes: [UInt8] { get }
    /// The length of the whole file: header and data.
    var fileSize: Int { get }
    /// Reads `count` bytes of `tensor`'s data starting `offset` bytes into the tensor.
    func read(_ tensor: TensorInfo, at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) throws(SafeTensorsError)
    /// Whether it can be read only once, front to back (``SafeTensorsStream``); false for files
    /// and memory, which are read at random from several threads.
    var isSequential: Bool { get }
    /// Called once every tensor was read: a stream checks that nothing follows its data section.
    func finish() throws(SafeTensorsError)
}

extension SafeTensorsInput {
    public var isSequential: Bool { false }
    public func finish() throws(SafeTensorsError) {}

    /// A whole tensor in memory. Meant for small tensors; stream big ones with `read`.
    public func data(of tensor: TensorInfo) throws(SafeTensorsError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: tensor.byteCount)
        guard tensor.byteCount > 0 else { return bytes }
        let result = bytes.withUnsafeMutableBytes { buffer in
            Result { () throws(SafeTensorsError) in try read(tensor, at: 0, count: tensor.byteCount, into: buffer.baseAddress!) }
        }
        try result.get()
        return bytes
    }
}

extension SafeTensorsReader: SafeTensorsInput {
    public var origin: String { path }
}

/// Tensors in memory as a safetensors file would hold them: the canonical header (the layout
/// ``SafeTensorsWriter`` writes, byte for byte) and each tensor's bytes, never copied into one
/// buffer. What a training loop commits without writing a temporary file.
///
/// ```swift
/// let input = try SafeTensorsMemory([TensorData(name: "w", dtype: .f32, shape: [2], bytes: Array(repeating: 0, count: 8))])
/// print(input.fileSize)  // what SafeTensorsWriter.write would have written
/// ```
public struct SafeTensorsMemory: SafeTensorsInput {
    public let origin: String
    public let header: SafeTensorsHeader
    public let headerBytes: [UInt8]
    public let fileSize: Int
    /// Tensor bytes in data order (the header's order), and each name's position there.
    private let data: [[UInt8]]
    private let position: [String: Int]

    /// - Throws: ``SafeTensorsError`` for a bad or duplicate name, or bytes that do not match a
    ///   tensor's dtype and shape.
    public init(_ tensors: [TensorData], metadata: [String: String]? = nil, origin: String = "tensors in memory") throws(SafeTensorsError) {
        let (headerBytes, order) = try SafeTensorsWriter.canonicalHeader(
            for: tensors.map { ($0.name, $0.dtype, $0.shape) }, metadata: metadata)
        for tensor in tensors {
            let size = try tensor.dtype.byteCount(of: tensor.shape, tensor: tensor.name)
            guard size == tensor.bytes.count else {
                throw .dataLengthMismatch(tensor: tensor.name, expected: size, actual: tensor.bytes.count)
            }
        }
        let dataLength = tensors.reduce(0) { $0 + $1.bytes.count }
        let fileSize = headerBytes.count + dataLength
        let length = try SafeTensorsHeader.headerLength(prefix: Array(headerBytes.prefix(8)), fileSize: fileSize)
        header = try SafeTensorsHeader.parse(json: Array(headerBytes[8..<(8 + length)]), fileSize: fileSize)
        self.headerBytes = headerBytes
        self.fileSize = fileSize
        self.origin = origin
        // The parsed header lists tensors in data order, which is `order`.
        data = order.map { tensors[$0].bytes }
        position = Dictionary(uniqueKeysWithValues: header.tensors.enumerated().map { ($1.name, $0) })
    }

    public func read(_ tensor: TensorInfo, at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) throws(SafeTensorsError) {
        guard let index = position[tensor.name], offset >= 0, count >= 0, offset + count <= data[index].count else {
            throw .io(operation: "no such range of tensor \(tensor.name) in", path: origin, errno: 22)
        }
        guard count > 0 else { return }
        data[index].withUnsafeBytes { bytes in
            buffer.copyMemory(from: bytes.baseAddress! + offset, byteCount: count)
        }
    }
}
