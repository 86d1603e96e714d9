/// A tensor element type, as named in a safetensors header.
///
/// The cases and their order follow the reference implementation (`safetensors` 0.8):
/// the order decides the canonical tensor layout that ``SafeTensorsWriter`` produces.
public enum DType: String, CaseIterable, Sendable, Codable, Comparable {
    case bool = "BOOL"
    case f4 = "F4"
    case f6e2m3 = "F6_E2M3"
    case f6e3m2 = "F6_E3M2"
    case u8 = "U8"
    case i8 = "I8"
    case f8e5m2 = "F8_E5M2"
    case f8e4m3 = "F8_E4M3"
    case f8e8m0 = "F8_E8M0"
    case f8e4m3fnuz = "F8_E4M3FNUZ"
    case f8e5m2fnuz = "F8_E5M2FNUZ"
    case i16 = "I16"
    case u16 = "U16"
    case f16 = "F16"
    case bf16 = "BF16"
    case i32 = "I32"
    case u32 = "U32"
    case f32 = "F32"
    case c64 = "C64"
    case f64 = "F64"
    case i64 = "I64"
    case u64 = "U64"

    /// Bits one element occupies. Sub-byte types (`F4`, `F6_*`) pack elements tightly.
    public var bitsPerElement: Int {
        switch self {
        case .f4: 4
        case .f6e2m3, .f6e3m2: 6
        case .bool, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz: 8
        case .i16, .u16, .f16, .bf16: 16
        case .i32, .u32, .f32: 32
        case .c64, .f64, .i64, .u64: 64
        }
    }

    /// Position in the reference implementation's enum; the canonical writer sorts by it.
    public var rank: Int { Self.allCases.firstIndex(of: self)! }

    public static func < (lhs: DType, rhs: DType) -> Bool { lhs.rank < rhs.rank }

    /// Number of elements in a tensor of this `shape`, or `nil` on overflow.
    public static func elementCount(of shape: [Int]) -> Int? {
        var count = 1
        for dimension in shape {
            guard dimension >= 0 else { return nil }
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            if overflow { return nil }
            count = product
        }
        return count
    }

    /// Bytes a tensor of `shape` occupies, checked for overflow and byte alignment.
    ///
    /// - Throws: ``SafeTensorsError/sizeOverflow(tensor:)`` when the size does not fit,
    ///   ``SafeTensorsError/misalignedSubByteTensor(tensor:dtype:elements:)`` when a sub-byte
    ///   tensor does not end on a byte boundary.
    public func byteCount(of shape: [Int], tensor: String) throws(SafeTensorsError) -> Int {
        guard let elements = Self.elementCount(of: shape) else {
            throw .sizeOverflow(tensor: tensor)
        }
        let (bits, overflow) = elements.multipliedReportingOverflow(by: bitsPerElement)
        if overflow { throw .sizeOverflow(tensor: tensor) }
        guard bits % 8 == 0 else {
            throw .misalignedSubByteTensor(tensor: tensor, dtype: self, elements: elements)
        }
        return bits / 8
    }
}
