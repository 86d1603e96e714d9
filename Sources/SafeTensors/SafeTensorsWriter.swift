#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A tensor to write: its name, type, shape and raw little-endian bytes.
public struct TensorData: Sendable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    public var bytes: [UInt8]

    public init(name: String, dtype: DType, shape: [Int], bytes: [UInt8]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }
}

/// Writes safetensors files in the reference implementation's canonical layout.
///
/// Tensors are ordered by dtype (the reference's enum order, widest-aligned first), then by
/// name; the header is compact JSON padded with spaces to a multiple of 8 bytes; metadata keys
/// are sorted so the output is deterministic. PyTorch and `safetensors` load the result as is.
///
/// ```swift
/// let bytes = try SafeTensorsWriter.serialize([
///     TensorData(name: "fc.bias", dtype: .f32, shape: [2], bytes: [UInt8](repeating: 0, count: 8))
/// ], metadata: ["format": "pt"])
/// ```
public enum SafeTensorsWriter {
    /// Builds the canonical header (length prefix included) and the order to write data in.
    ///
    /// - Returns: the header bytes and, for each position in the data section, the index into `tensors`.
    /// - Throws: ``SafeTensorsError`` for a bad name, a duplicate name or a size that overflows.
    public static func canonicalHeader(
        for tensors: [(name: String, dtype: DType, shape: [Int])], metadata: [String: String]?
    ) throws(SafeTensorsError) -> (header: [UInt8], order: [Int]) {
        let order = tensors.indices.sorted { a, b in
            let left = tensors[a], right = tensors[b]
            if left.dtype != right.dtype { return left.dtype > right.dtype }
            return left.name.utf8.lexicographicallyPrecedes(right.name.utf8)
        }
        return (try header(inOrder: order.map { tensors[$0] }, metadata: metadata), order)
    }

    /// A header (length prefix included) for tensors laid out in the data section in the order
    /// given, metadata keys sorted, padded with spaces to 8 bytes: what several shards read as
    /// one file look like.
    ///
    /// - Throws: ``SafeTensorsError`` for a bad name, a duplicate name or a size that overflows.
    public static func header(
        inOrder tensors: [(name: String, dtype: DType, shape: [Int])], metadata: [String: String]?
    ) throws(SafeTensorsError) -> [UInt8] {
        var seen = Set<String>()
        for tensor in tensors {
            guard !tensor.name.isEmpty, tensor.name != "__metadata__" else { throw .invalidTensorName(tensor.name) }
            guard seen.insert(tensor.name).inserted else { throw .duplicateKey(tensor.name) }
        }
        var json: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        if let metadata {
            JSONWriter.appendString("__metadata__", to: &json)
            json.append(contentsOf: Array(":{".utf8))
            for (i, key) in metadata.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }).enumerated() {
                if i > 0 { json.append(UInt8(ascii: ",")) }
                JSONWriter.appendString(key, to: &json)
                json.append(UInt8(ascii: ":"))
                JSONWriter.appendString(metadata[key]!, to: &json)
            }
            json.append(UInt8(ascii: "}"))
            first = false
        }
        var offset = 0
        for tensor in tensors {
            let size = try tensor.dtype.byteCount(of: tensor.shape, tensor: tensor.name)
            if !first { json.append(UInt8(ascii: ",")) }
            first = false
            JSONWriter.appendString(tensor.name, to: &json)
            json.append(contentsOf: Array(":{\"dtype\":".utf8))
            JSONWriter.appendString(tensor.dtype.rawValue, to: &json)
            json.append(contentsOf: Array(",\"shape\":[".utf8))
            for (i, dimension) in tensor.shape.enumerated() {
                if i > 0 { json.append(UInt8(ascii: ",")) }
                JSONWriter.appendInteger(dimension, to: &json)
            }
            json.append(contentsOf: Array("],\"data_offsets\":[".utf8))
            JSONWriter.appendInteger(offset, to: &json)
            json.append(UInt8(ascii: ","))
            let (end, overflow) = offset.addingReportingOverflow(size)
            if overflow { throw .sizeOverflow(tensor: tensor.name) }
            offset = end
            JSONWriter.appendInteger(offset, to: &json)
            json.append(contentsOf: Array("]}".utf8))
        }
        json.append(UInt8(ascii: "}"))
        json.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8))
        var header = [UInt8](repeating: 0, count: 8)
        var length = UInt64(json.count)
        for i in 0..<8 {
            header[i] = UInt8(truncatingIfNeeded: length)
            length >>= 8
        }
        return header + json
    }

    /// Serializes tensors and metadata into one in-memory file.
    public static func serialize(_ tensors: [TensorData], metadata: [String: String]? = nil) throws(SafeTensorsError) -> [UInt8] {
        let (header, order) = try layout(tensors, metadata: metadata)
        var out = header
        for index in order { out.append(contentsOf: tensors[index].bytes) }
        return out
    }

    /// Writes tensors and metadata to `path` (created or truncated) and flushes it to disk.
    public static func write(_ tensors: [TensorData], metadata: [String: String]? = nil, to path: String) throws(SafeTensorsError) {
        let (header, order) = try layout(tensors, metadata: metadata)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io(operation: "cannot create", path: path, errno: errno) }
        defer { close(fd) }
        func put(_ bytes: [UInt8]) throws(SafeTensorsError) {
            if let code = bytes.withUnsafeBytes({ writeFully(fd, $0.baseAddress!, count: $0.count) }) {
                throw .io(operation: "cannot write", path: path, errno: code)
            }
        }
        try put(header)
        for index in order where !tensors[index].bytes.isEmpty { try put(tensors[index].bytes) }
        guard fsync(fd) == 0 else { throw .io(operation: "cannot flush", path: path, errno: errno) }
    }

    private static func layout(_ tensors: [TensorData], metadata: [String: String]?) throws(SafeTensorsError) -> (
        header: [UInt8], order: [Int]
    ) {
        let (header, order) = try canonicalHeader(for: tensors.map { ($0.name, $0.dtype, $0.shape) }, metadata: metadata)
        for tensor in tensors {
            let size = try tensor.dtype.byteCount(of: tensor.shape, tensor: tensor.name)
            guard size == tensor.bytes.count else {
                throw .dataLengthMismatch(tensor: tensor.name, expected: size, actual: tensor.bytes.count)
            }
        }
        return (header, order)
    }
}
