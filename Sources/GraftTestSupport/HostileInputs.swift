public import SafeTensors

/// A hostile or broken input and the refusal it must get.
public struct HostileCase: Sendable, CustomStringConvertible {
    public let label: String
    public let bytes: [UInt8]
    public let expect: @Sendable (SafeTensorsError) -> Bool
    /// Whether the reference implementation accepts it (Graft is stricter there on purpose).
    public var referenceAccepts = false
    public var description: String { label }
}

private let u8x1 = #"{"dtype":"U8","shape":[1],"data_offsets":[0,1]}"#

/// Hostile and broken inputs, each with the refusal it must get.
public let hostileCases: [HostileCase] = [
    HostileCase(label: "empty file", bytes: []) { $0 == .fileTooSmall(byteCount: 0) },
    HostileCase(label: "7 bytes", bytes: [1, 0, 0, 0, 0, 0, 0]) { $0 == .fileTooSmall(byteCount: 7) },
    HostileCase(label: "header length 2^64-1", bytes: rawSafetensors(header: "{}", declaredLength: UInt64.max)) {
        $0 == .headerTooLarge(declared: UInt64.max)
    },
    HostileCase(label: "header length just over the cap", bytes: rawSafetensors(header: "{}", declaredLength: 100_000_001)) {
        $0 == .headerTooLarge(declared: 100_000_001)
    },
    HostileCase(label: "header past end of file", bytes: rawSafetensors(header: "{}", declaredLength: 100)) {
        $0 == .headerPastEndOfFile(declared: 100, fileSize: 10)
    },
    HostileCase(label: "bad UTF-8", bytes: rawSafetensors(headerBytes: Array(#"{"a\#u{0}":1}"#.utf8).map { $0 == 0 ? 0xFF : $0 })) {
        $0 == .invalidUTF8(offset: 3)
    },
    HostileCase(label: "overlong UTF-8", bytes: rawSafetensors(headerBytes: [0x7B, 0x22, 0xC0, 0xAF, 0x22, 0x3A, 0x31, 0x7D])) {
        $0 == .invalidUTF8(offset: 2)
    },
    HostileCase(label: "not JSON", bytes: rawSafetensors(header: "hello")) { if case .invalidJSON = $0 { true } else { false } },
    HostileCase(label: "JSON array", bytes: rawSafetensors(header: "[]")) { if case .invalidJSON = $0 { true } else { false } },
    HostileCase(label: "trailing NUL after JSON", bytes: rawSafetensors(header: "{}\u{0}")) {
        if case .invalidJSON = $0 { true } else { false }
    },
    HostileCase(label: "unterminated object", bytes: rawSafetensors(header: #"{"a":"#)) {
        if case .invalidJSON = $0 { true } else { false }
    },
    HostileCase(label: "deep nesting", bytes: rawSafetensors(header: String(repeating: "[", count: 5000))) {
        if case .invalidJSON = $0 { true } else { false }
    },
    HostileCase(label: "raw control character in a string", bytes: rawSafetensors(header: "{\"a\u{1}\":1}")) {
        if case .invalidJSON = $0 { true } else { false }
    },
    HostileCase(label: "lone surrogate escape", bytes: rawSafetensors(header: #"{"\ud800":1}"#)) {
        if case .invalidJSON = $0 { true } else { false }
    },
    HostileCase(
        label: "duplicate tensor name", bytes: rawSafetensors(header: #"{"a":\#(u8x1),"a":\#(u8x1)}"#, data: [7]),
        expect: { $0 == .duplicateKey("a") }, referenceAccepts: true),
    HostileCase(label: "duplicate __metadata__", bytes: rawSafetensors(header: #"{"__metadata__":{},"__metadata__":{}}"#)) {
        $0 == .duplicateKey("__metadata__")
    },
    HostileCase(label: "non-string metadata value", bytes: rawSafetensors(header: #"{"__metadata__":{"epochs":3}}"#)) {
        if case .invalidMetadata = $0 { true } else { false }
    },
    HostileCase(label: "metadata that is an array", bytes: rawSafetensors(header: #"{"__metadata__":["a"]}"#)) {
        if case .invalidMetadata = $0 { true } else { false }
    },
    HostileCase(label: "a tensor named __metadata__", bytes: rawSafetensors(header: #"{"__metadata__":\#(u8x1)}"#, data: [1])) {
        if case .invalidMetadata = $0 { true } else { false }
    },
    HostileCase(label: "tensor entry not an object", bytes: rawSafetensors(header: #"{"a":[1]}"#)) {
        if case .invalidTensorEntry(tensor: "a", _) = $0 { true } else { false }
    },
    HostileCase(label: "missing dtype", bytes: rawSafetensors(header: #"{"a":{"shape":[1],"data_offsets":[0,1]}}"#, data: [1])) {
        $0 == .invalidTensorEntry(tensor: "a", reason: "missing dtype")
    },
    HostileCase(label: "unknown dtype", bytes: rawSafetensors(header: #"{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}"#, data: [1]))
    {
        $0 == .unknownDType(tensor: "a", dtype: "Q7")
    },
    HostileCase(
        label: "negative dimension", bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#, data: [1])
    ) {
        if case .invalidTensorEntry(tensor: "a", _) = $0 { true } else { false }
    },
    HostileCase(
        label: "fractional dimension", bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}"#, data: [1])
    ) {
        if case .invalidTensorEntry(tensor: "a", _) = $0 { true } else { false }
    },
    HostileCase(
        label: "three offsets", bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}"#, data: [1])
    ) {
        if case .invalidTensorEntry(tensor: "a", _) = $0 { true } else { false }
    },
    HostileCase(
        label: "offsets backwards", bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[0],"data_offsets":[1,0]}}"#, data: [1])
    ) {
        if case .invalidOffsets(tensor: "a", _, _, _) = $0 { true } else { false }
    },
    HostileCase(
        label: "gap before a tensor",
        bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#, data: [1, 2])
    ) {
        $0 == .invalidOffsets(tensor: "a", begin: 1, end: 2, expectedBegin: 0)
    },
    HostileCase(
        label: "overlapping tensors",
        bytes: rawSafetensors(
            header: #"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#,
            data: [1, 2, 3])
    ) { $0 == .invalidOffsets(tensor: "b", begin: 1, end: 3, expectedBegin: 2) },
    HostileCase(
        label: "offsets past the end of the file",
        bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#, data: [1])
    ) {
        $0 == .dataSectionMismatch(covered: 4, actual: 1)
    },
    HostileCase(label: "trailing bytes after the data", bytes: rawSafetensors(header: #"{"a":\#(u8x1)}"#, data: [1, 2])) {
        $0 == .dataSectionMismatch(covered: 1, actual: 2)
    },
    HostileCase(
        label: "span disagrees with shape",
        bytes: rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: [1, 2, 3, 4])
    ) {
        $0 == .byteLengthMismatch(tensor: "a", expected: 8, actual: 4)
    },
    HostileCase(
        label: "shape × dtype overflows",
        bytes: rawSafetensors(header: #"{"a":{"dtype":"F64","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}}"#)
    ) { $0 == .sizeOverflow(tensor: "a") },
    HostileCase(
        label: "dimension beyond 64 bits",
        bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[99999999999999999999],"data_offsets":[0,0]}}"#)
    ) {
        if case .invalidTensorEntry(tensor: "a", _) = $0 { true } else { false }
    },
    HostileCase(
        label: "F4 tensor not filling a byte",
        bytes: rawSafetensors(header: #"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, data: [1, 2])
    ) {
        $0 == .misalignedSubByteTensor(tensor: "a", dtype: .f4, elements: 3)
    },
    HostileCase(
        label: "pickle (torch.save legacy)", bytes: [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]
    ) {
        if case .pickleCheckpoint(let kind) = $0 { kind.contains("pickle") } else { false }
    },
    HostileCase(label: "zip (torch.save)", bytes: [0x50, 0x4B, 0x03, 0x04] + [UInt8](repeating: 0, count: 60)) {
        if case .pickleCheckpoint(let kind) = $0 { kind.contains("zip") } else { false }
    },
]
