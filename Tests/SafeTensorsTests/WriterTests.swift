import Foundation
import GraftTestSupport
import SafeTensors
import Testing

@Suite("Canonical writer")
struct WriterTests {
    @Test("every dtype round-trips through both readers bit for bit", arguments: [UInt64(1), 2, 3])
    func roundTrip(seed: UInt64) throws {
        let directory = TemporaryDirectory()
        let tensors = randomTensors(dtypes: DType.allCases, seed: seed)
        let path = directory.file("all.safetensors")
        try SafeTensorsWriter.write(tensors, metadata: ["seed": String(seed)], to: path)
        let reader = try SafeTensorsReader(path: path)
        let mapped = try MappedSafeTensors(path: path)
        #expect(reader.header.metadataDictionary == ["seed": String(seed)])
        for tensor in tensors {
            let info = try #require(reader.header.tensors.first { $0.name == tensor.name })
            #expect(info.dtype == tensor.dtype && info.shape == tensor.shape)
            #expect(try reader.data(of: info) == tensor.bytes)
            #expect(mapped.withData(of: info) { Array($0) } == tensor.bytes)
        }
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: path))
                == Data(try SafeTensorsWriter.serialize(tensors, metadata: ["seed": String(seed)])))
    }

    @Test("layout: dtype order (widest first), then name; header padded to 8 bytes")
    func canonicalLayout() throws {
        let tensors = [
            TensorData(name: "b", dtype: .u8, shape: [3], bytes: [1, 2, 3]),
            TensorData(name: "aa", dtype: .f32, shape: [1], bytes: [0, 0, 64, 64]),
            TensorData(name: "a", dtype: .f32, shape: [1], bytes: [0, 0, 192, 63]),
            TensorData(name: "c", dtype: .f64, shape: [1], bytes: [0, 0, 0, 0, 0, 0, 0, 64]),
        ]
        let bytes = try SafeTensorsWriter.serialize(tensors, metadata: ["z": "1", "a": "é\"/\n"])
        let length = Int(bytes[0]) | Int(bytes[1]) << 8
        let json = String(decoding: bytes[8..<(8 + length)], as: UTF8.self)
        #expect(length % 8 == 0)
        #expect(json.hasPrefix(#"{"__metadata__":{"a":"é\"/\n","z":"1"},"c":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"a":"#))
        #expect(json.trimmingCharacters(in: .whitespaces).hasSuffix(#""b":{"dtype":"U8","shape":[3],"data_offsets":[16,19]}}"#))
        #expect(Array(bytes.suffix(3)) == [1, 2, 3])
    }

    @Test("the writer refuses bad names, duplicates and wrong data sizes")
    func refusals() {
        #expect(throws: SafeTensorsError.invalidTensorName("__metadata__")) {
            try SafeTensorsWriter.serialize([TensorData(name: "__metadata__", dtype: .u8, shape: [0], bytes: [])])
        }
        #expect(throws: SafeTensorsError.invalidTensorName("")) {
            try SafeTensorsWriter.serialize([TensorData(name: "", dtype: .u8, shape: [0], bytes: [])])
        }
        #expect(throws: SafeTensorsError.duplicateKey("x")) {
            try SafeTensorsWriter.serialize([
                TensorData(name: "x", dtype: .u8, shape: [0], bytes: []), TensorData(name: "x", dtype: .u8, shape: [0], bytes: []),
            ])
        }
        #expect(throws: SafeTensorsError.dataLengthMismatch(tensor: "x", expected: 8, actual: 4)) {
            try SafeTensorsWriter.serialize([TensorData(name: "x", dtype: .f32, shape: [2], bytes: [0, 0, 0, 0])])
        }
    }

    @Test("byte sizes per dtype, sub-byte types included")
    func byteCounts() throws {
        #expect(try DType.f32.byteCount(of: [2, 3], tensor: "t") == 24)
        #expect(try DType.bf16.byteCount(of: [], tensor: "t") == 2)
        #expect(try DType.f4.byteCount(of: [4], tensor: "t") == 2)
        #expect(try DType.f6e2m3.byteCount(of: [4], tensor: "t") == 3)
        #expect(throws: SafeTensorsError.misalignedSubByteTensor(tensor: "t", dtype: .f6e3m2, elements: 2)) {
            try DType.f6e3m2.byteCount(of: [2], tensor: "t")
        }
        #expect(throws: SafeTensorsError.sizeOverflow(tensor: "t")) { try DType.u64.byteCount(of: [Int.max / 2, 3], tensor: "t") }
    }
}
