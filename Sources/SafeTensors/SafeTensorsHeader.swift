/// One tensor as the header describes it.
public struct TensorInfo: Sendable, Hashable {
    /// The tensor's name, e.g. `features.0.weight`.
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte range within the data section (which starts right after the header).
    public let dataOffsets: Range<Int>

    public init(name: String, dtype: DType, shape: [Int], dataOffsets: Range<Int>) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.dataOffsets = dataOffsets
    }

    /// Bytes of data the tensor occupies.
    public var byteCount: Int { dataOffsets.count }
    /// Number of elements (parameters) in the tensor.
    public var elementCount: Int { DType.elementCount(of: shape) ?? 0 }
}

/// A validated safetensors header.
///
/// The rules are the reference implementation's: an 8-byte little-endian length, at most
/// 100,000,000 bytes of UTF-8 JSON, `__metadata__` mapping strings to strings, every dtype of
/// the spec, sizes computed with overflow checks, and offsets that start at 0 and cover the
/// data section exactly. Graft is stricter in one way: a key that appears twice is refused
/// (the reference keeps the last one).
public struct SafeTensorsHeader: Sendable {
    /// The largest header the format allows.
    public static let maximumLength = 100_000_000

    /// Length of the JSON header in bytes (the value of the 8-byte prefix).
    public let length: Int
    /// `__metadata__`, in file order, or `nil` when the header has none.
    public let metadata: [(key: String, value: String)]?
    /// The tensors in data-section order.
    public let tensors: [TensorInfo]

    /// Offset of the data section in the file.
    public var dataStart: Int { 8 + length }
    /// Length of the data section in bytes.
    public var dataLength: Int { tensors.last?.dataOffsets.upperBound ?? 0 }
    /// Bytes of the whole file.
    public var fileLength: Int { dataStart + dataLength }
    /// `__metadata__` as a dictionary (empty when absent).
    public var metadataDictionary: [String: String] {
        Dictionary(metadata ?? [], uniquingKeysWith: { _, last in last })
    }

    /// Reads the header length from the file's first 8 bytes and checks it against the file size.
    ///
    /// - Throws: ``SafeTensorsError`` when the file is too small, the header too large, or the
    ///   header runs past the end of the file.
    public static func headerLength(prefix: [UInt8], fileSize: Int) throws(SafeTensorsError) -> Int {
        guard fileSize >= 8, prefix.count >= 8 else { throw .fileTooSmall(byteCount: fileSize) }
        var declared: UInt64 = 0
        for i in (0..<8).reversed() { declared = declared << 8 | UInt64(prefix[i]) }
        guard declared <= UInt64(maximumLength) else { throw .headerTooLarge(declared: declared) }
        guard Int(declared) <= fileSize - 8 else { throw .headerPastEndOfFile(declared: declared, fileSize: fileSize) }
        return Int(declared)
    }

    /// Parses and validates the JSON header of a file of `fileSize` bytes.
    ///
    /// - Parameters:
    ///   - json: the header bytes (after the 8-byte prefix).
    ///   - fileSize: the size of the whole file, to check that the tensors cover the data exactly;
    ///     `nil` for a stream, whose data section is as long as the tensors say (checked as it is read).
    public static func parse(json: [UInt8], fileSize: Int?) throws(SafeTensorsError) -> SafeTensorsHeader {
        let parsed = json.withUnsafeBufferPointer { bytes in
            Result { () throws(SafeTensorsError) -> JSONValue in
                if let bad = firstInvalidUTF8Offset(bytes) { throw .invalidUTF8(offset: bad) }
                return try JSONParser.parse(bytes)
            }
        }
        guard case .object(let members) = try parsed.get() else {
            throw .invalidJSON("the header must be a JSON object")
        }
        var metadata: [(key: String, value: String)]? = nil
        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(members.count)
        for (key, value) in members {
            if key == "__metadata__" {
                metadata = try parseMetadata(value)
            } else {
                tensors.append(try parseTensor(name: key, value))
            }
        }
        tensors.sort { ($0.dataOffsets.lowerBound, $0.dataOffsets.upperBound) < ($1.dataOffsets.lowerBound, $1.dataOffsets.upperBound) }
        var expected = 0
        for tensor in tensors {
            let size = try tensor.dtype.byteCount(of: tensor.shape, tensor: tensor.name)
            guard tensor.dataOffsets.lowerBound == expected else {
                throw .invalidOffsets(
                    tensor: tensor.name, begin: tensor.dataOffsets.lowerBound, end: tensor.dataOffsets.upperBound, expectedBegin: expected)
            }
            guard size == tensor.byteCount else {
                throw .byteLengthMismatch(tensor: tensor.name, expected: size, actual: tensor.byteCount)
            }
            expected = tensor.dataOffsets.upperBound
        }
        if let fileSize {
            let available = fileSize - 8 - json.count
            guard expected == available else { throw .dataSectionMismatch(covered: expected, actual: available) }
        }
        return SafeTensorsHeader(length: json.count, metadata: metadata, tensors: tensors)
    }

    private static func parseMetadata(_ value: JSONValue) throws(SafeTensorsError) -> [(key: String, value: String)]? {
        switch value {
        case .null:
            return nil
        case .object(let members):
            var result: [(key: String, value: String)] = []
            for (key, value) in members {
                guard case .string(let text) = value else {
                    throw .invalidMetadata("value of \(quoted(key)) is \(value.typeName), expected a string")
                }
                result.append((key, text))
            }
            return result
        default:
            throw .invalidMetadata("is \(value.typeName), expected an object of strings")
        }
    }

    private static func parseTensor(name: String, _ value: JSONValue) throws(SafeTensorsError) -> TensorInfo {
        guard case .object(let fields) = value else {
            throw .invalidTensorEntry(tensor: name, reason: "is \(value.typeName), expected an object")
        }
        var dtypeText: String?
        var shape: [Int]?
        var offsets: [Int]?
        for (key, field) in fields {
            switch key {
            case "dtype":
                guard case .string(let text) = field else {
                    throw .invalidTensorEntry(tensor: name, reason: "dtype is \(field.typeName), expected a string")
                }
                dtypeText = text
            case "shape":
                shape = try unsignedArray(field, tensor: name, field: "shape")
            case "data_offsets":
                offsets = try unsignedArray(field, tensor: name, field: "data_offsets")
            default:
                continue  // unknown fields are ignored, as the reference does
            }
        }
        guard let dtypeText else { throw .invalidTensorEntry(tensor: name, reason: "missing dtype") }
        guard let shape else { throw .invalidTensorEntry(tensor: name, reason: "missing shape") }
        guard let offsets else { throw .invalidTensorEntry(tensor: name, reason: "missing data_offsets") }
        guard let dtype = DType(rawValue: dtypeText) else { throw .unknownDType(tensor: name, dtype: dtypeText) }
        guard offsets.count == 2 else {
            throw .invalidTensorEntry(tensor: name, reason: "data_offsets has \(offsets.count) element(s), expected 2")
        }
        guard offsets[0] <= offsets[1] else {
            throw .invalidOffsets(tensor: name, begin: offsets[0], end: offsets[1], expectedBegin: offsets[0])
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: offsets[0]..<offsets[1])
    }

    private static func unsignedArray(_ value: JSONValue, tensor: String, field: String) throws(SafeTensorsError) -> [Int] {
        guard case .array(let elements) = value else {
            throw .invalidTensorEntry(tensor: tensor, reason: "\(field) is \(value.typeName), expected an array of non-negative integers")
        }
        var result: [Int] = []
        result.reserveCapacity(elements.count)
        for element in elements {
            guard case .unsigned(let number) = element else {
                throw .invalidTensorEntry(
                    tensor: tensor,
                    reason:
                        """
                        \(field) holds \(element.typeName == "a number" ? "a negative or fractional number" : element.typeName),\
                         expected non-negative integers
                        """
                )
            }
            guard number <= UInt64(Int.max) else { throw .sizeOverflow(tensor: tensor) }
            result.append(Int(number))
        }
        return result
    }
}

/// The offset of the first byte that is not part of well-formed UTF-8, or `nil`.
func firstInvalidUTF8Offset(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
    var i = 0
    let n = bytes.count
    while i < n {
        let b0 = bytes[i]
        if b0 < 0x80 { i += 1; continue }
        let length: Int
        var lower: UInt8 = 0x80
        var upper: UInt8 = 0xBF
        switch b0 {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; lower = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; upper = 0x9F
        case 0xF0: length = 4; lower = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; upper = 0x8F
        default: return i
        }
        guard i + length <= n else { return i }
        let b1 = bytes[i + 1]
        guard b1 >= lower && b1 <= upper else { return i }
        for k in 2..<max(length, 2) where k < length {
            guard bytes[i + k] & 0xC0 == 0x80 else { return i }
        }
        i += length
    }
    return nil
}
