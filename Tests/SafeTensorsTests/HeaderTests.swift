import Foundation
import GraftTestSupport
import SafeTensors
import Testing

/// A hostile or broken input and the refusal it must get.
struct HostileCase: Sendable, CustomTestStringConvertible {
    let label: String
    let bytes: [UInt8]
    let expect: @Sendable (SafeTensorsError) -> Bool
    /// Whether the reference implementation accepts it (Graft is stricter there on purpose).
    var referenceAccepts = false
    var testDescription: String { label }
}

private let u8x1 = #"{"dtype":"U8","shape":[1],"data_offsets":[0,1]}"#

let hostileCases: [HostileCase] = [
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
    HostileCase(label: "trailing NUL after JSON", bytes: rawSafetensors(header: "{}\u{0}")) { if case .invalidJSON = $0 { true } else { false } },
    HostileCase(label: "unterminated object", bytes: rawSafetensors(header: #"{"a":"#)) { if case .invalidJSON = $0 { true } else { false } },
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
    HostileCase(label: "unknown dtype", bytes: rawSafetensors(header: #"{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}"#, data: [1])) {
        $0 == .unknownDType(tensor: "a", dtype: "Q7")
    },
    HostileCase(label: "negative dimension", bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#, data: [1])) {
        if case .invalidTensorEntry(tensor: "a", _) = $0 { true } else { false }
    },
    HostileCase(label: "fractional dimension", bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}"#, data: [1])) {
        if case .invalidTensorEntry(tensor: "a", _) = $0 { true } else { false }
    },
    HostileCase(label: "three offsets", bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}"#, data: [1])) {
        if case .invalidTensorEntry(tensor: "a", _) = $0 { true } else { false }
    },
    HostileCase(label: "offsets backwards", bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[0],"data_offsets":[1,0]}}"#, data: [1])) {
        if case .invalidOffsets(tensor: "a", _, _, _) = $0 { true } else { false }
    },
    HostileCase(label: "gap before a tensor", bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#, data: [1, 2])) {
        $0 == .invalidOffsets(tensor: "a", begin: 1, end: 2, expectedBegin: 0)
    },
    HostileCase(
        label: "overlapping tensors",
        bytes: rawSafetensors(
            header: #"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#, data: [1, 2, 3])
    ) { $0 == .invalidOffsets(tensor: "b", begin: 1, end: 3, expectedBegin: 2) },
    HostileCase(label: "offsets past the end of the file", bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#, data: [1])) {
        $0 == .dataSectionMismatch(covered: 4, actual: 1)
    },
    HostileCase(label: "trailing bytes after the data", bytes: rawSafetensors(header: #"{"a":\#(u8x1)}"#, data: [1, 2])) {
        $0 == .dataSectionMismatch(covered: 1, actual: 2)
    },
    HostileCase(label: "span disagrees with shape", bytes: rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: [1, 2, 3, 4])) {
        $0 == .byteLengthMismatch(tensor: "a", expected: 8, actual: 4)
    },
    HostileCase(
        label: "shape × dtype overflows",
        bytes: rawSafetensors(header: #"{"a":{"dtype":"F64","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}}"#)
    ) { $0 == .sizeOverflow(tensor: "a") },
    HostileCase(label: "dimension beyond 64 bits", bytes: rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[99999999999999999999],"data_offsets":[0,0]}}"#)) {
        if case .invalidTensorEntry(tensor: "a", _) = $0 { true } else { false }
    },
    HostileCase(label: "F4 tensor not filling a byte", bytes: rawSafetensors(header: #"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, data: [1, 2])) {
        $0 == .misalignedSubByteTensor(tensor: "a", dtype: .f4, elements: 3)
    },
    HostileCase(label: "pickle (torch.save legacy)", bytes: [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]) {
        if case .pickleCheckpoint(let kind) = $0 { kind.contains("pickle") } else { false }
    },
    HostileCase(label: "zip (torch.save)", bytes: [0x50, 0x4B, 0x03, 0x04] + [UInt8](repeating: 0, count: 60)) {
        if case .pickleCheckpoint(let kind) = $0 { kind.contains("zip") } else { false }
    },
]

@Suite("Header validation")
struct HeaderTests {
    @Test("hostile inputs are refused with their specific error", arguments: hostileCases)
    func refusesHostileInput(_ hostile: HostileCase) throws {
        let directory = TemporaryDirectory()
        let path = directory.file("input.safetensors")
        try writeFile(path, hostile.bytes)
        do {
            _ = try SafeTensorsReader(path: path)
            Issue.record("reader accepted \(hostile.label)")
        } catch {
            #expect(hostile.expect(error), "reader: \(error)")
            #expect(!error.description.contains("\n"), "errors are one line")
        }
        do {
            _ = try MappedSafeTensors(path: path)
            Issue.record("mapped reader accepted \(hostile.label)")
        } catch {
            #expect(hostile.expect(error), "mapped reader: \(error)")
        }
    }

    @Test("a pickle named .pt gets advice to convert, never a load")
    func pickleAdvice() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("model.pt")
        try writeFile(path, Array("junk that is not safetensors".utf8))
        #expect {
            _ = try SafeTensorsReader(path: path)
        } throws: { error in
            guard let error = error as? SafeTensorsError, case .pickleCheckpoint = error else { return false }
            return error.description.contains("safetensors") && error.description.contains("never loaded")
        }
    }

    @Test("edge cases the format allows are accepted")
    func acceptsEdgeCases() throws {
        let directory = TemporaryDirectory()
        let cases: [(String, [UInt8], Int)] = [
            ("empty header", rawSafetensors(header: "{}"), 0),
            ("whitespace around JSON", rawSafetensors(header: "  {}    "), 0),
            ("null metadata", rawSafetensors(header: #"{"__metadata__":null}"#), 0),
            ("scalar", rawSafetensors(header: #"{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#, data: [0, 0, 128, 63]), 1),
            ("zero-size tensors sharing an offset",
             rawSafetensors(header: #"{"a":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#), 2),
            ("unknown fields ignored", rawSafetensors(header: #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":[1]}}"#, data: [9]), 1),
            ("escaped unicode name", rawSafetensors(header: #"{"caf\u00e9.\ud83d\ude00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, data: [9]), 1),
        ]
        for (label, bytes, count) in cases {
            let path = directory.file("ok.safetensors")
            try writeFile(path, bytes)
            let reader = try SafeTensorsReader(path: path)
            #expect(reader.header.tensors.count == count, "\(label)")
            #expect(reader.headerBytes == Array(bytes.prefix(reader.header.dataStart)), "\(label)")
        }
        let path = directory.file("unicode.safetensors")
        try writeFile(path, rawSafetensors(header: #"{"caf\u00e9.\ud83d\ude00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, data: [9]))
        #expect(try SafeTensorsReader(path: path).header.tensors.first?.name == "café.😀")
    }

    @Test("tensors come back in data order with their metadata")
    func dataOrderAndMetadata() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("m.safetensors")
        try writeFile(path, rawSafetensors(
            header: #"{"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"__metadata__":{"z":"1","a":"2"},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
            data: [5, 6]))
        let reader = try SafeTensorsReader(path: path)
        #expect(reader.header.tensors.map(\.name) == ["a", "b"])
        #expect(reader.header.metadata?.map(\.key) == ["z", "a"])
        #expect(try reader.data(of: reader.header.tensors[1]) == [6])
    }

    @Test("a file that is missing or a directory is an I/O error, not a format error")
    func ioErrors() throws {
        let directory = TemporaryDirectory()
        #expect(throws: SafeTensorsError.self) { _ = try SafeTensorsReader(path: directory.file("absent")) }
        do {
            _ = try SafeTensorsReader(path: directory.path)
            Issue.record("opened a directory")
        } catch {
            guard case .io = error else { Issue.record("expected an I/O error, got \(error)"); return }
        }
    }
}
