import Foundation
import GraftTestSupport
import SafeTensors
import Testing

/// Checks against the reference Python `safetensors` package (installed by `make test`).
@Suite("Conformance with the reference safetensors")
struct ConformanceTests {
    /// The reference writer handles every dtype except the two F6 types.
    static let referenceWritable = DType.allCases.filter { $0 != .f6e2m3 && $0 != .f6e3m2 }

    struct ReferenceTensor: Decodable, Equatable {
        let name: String
        let dtype: String
        let shape: [Int]
        let sha256: String
    }

    struct ReferenceRead: Decodable {
        let tensors: [ReferenceTensor]
        let metadata: [String: String]?
    }

    @Test("files Graft writes load in the reference implementation, bit-equal, every dtype", arguments: [UInt64(11), 12])
    func graftToReference(seed: UInt64) throws {
        let directory = TemporaryDirectory()
        let tensors = randomTensors(dtypes: DType.allCases, seed: seed)
        let path = directory.file("graft.safetensors")
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt", "note": "é \"quoted\" \\ /"], to: path)
        let read = try JSONDecoder().decode(ReferenceRead.self, from: Data(try ReferencePython.run(["read", path]).utf8))
        let expected = tensors.map {
            ReferenceTensor(name: $0.name, dtype: $0.dtype.rawValue, shape: $0.shape, sha256: sha256Hex($0.bytes))
        }.sorted { $0.name < $1.name }
        #expect(read.tensors == expected)
        #expect(read.metadata == ["format": "pt", "note": "é \"quoted\" \\ /"])
    }

    @Test("files the reference writes read back bit-equal, and Graft's writer produces the same bytes", arguments: [UInt64(21), 22])
    func referenceToGraft(seed: UInt64) throws {
        let directory = TemporaryDirectory()
        let tensors = randomTensors(dtypes: Self.referenceWritable, seed: seed)
        let spec: [String: Any] = [
            "metadata": ["format": "pt"],
            "tensors": tensors.map { ["name": $0.name, "dtype": $0.dtype.rawValue, "shape": $0.shape, "hex": hex($0.bytes)] },
        ]
        let specPath = directory.file("spec.json")
        try JSONSerialization.data(withJSONObject: spec).write(to: URL(fileURLWithPath: specPath))
        let path = directory.file("reference.safetensors")
        _ = try ReferencePython.run(["write", specPath, path])
        let reader = try SafeTensorsReader(path: path)
        #expect(reader.header.metadataDictionary == ["format": "pt"])
        for tensor in tensors {
            let info = try #require(reader.header.tensors.first { $0.name == tensor.name })
            #expect(info.dtype == tensor.dtype)
            #expect(info.shape == tensor.shape)
            #expect(try reader.data(of: info) == tensor.bytes)
        }
        let reference = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(
            Data(try SafeTensorsWriter.serialize(tensors, metadata: ["format": "pt"])) == reference,
            "canonical layout matches the reference writer")
    }

    @Test("without metadata the layout matches the reference too")
    func noMetadata() throws {
        let directory = TemporaryDirectory()
        let tensors = randomTensors(dtypes: [.f32, .bf16, .i64, .u8], seed: 5)
        let spec: [String: Any] = [
            "metadata": NSNull(),
            "tensors": tensors.map { ["name": $0.name, "dtype": $0.dtype.rawValue, "shape": $0.shape, "hex": hex($0.bytes)] },
        ]
        let specPath = directory.file("spec.json")
        try JSONSerialization.data(withJSONObject: spec).write(to: URL(fileURLWithPath: specPath))
        let path = directory.file("reference.safetensors")
        _ = try ReferencePython.run(["write", specPath, path])
        #expect(Data(try SafeTensorsWriter.serialize(tensors)) == (try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    @Test("the same accept/refuse decision as the reference for every hostile input, except documented strictness")
    func differential() throws {
        let directory = TemporaryDirectory()
        var paths: [String] = []
        for (index, hostile) in hostileCases.enumerated() {
            let path = directory.file("case\(index).safetensors")
            try writeFile(path, hostile.bytes)
            paths.append(path)
        }
        let decisions = try ReferencePython.run(["check"] + paths).split(separator: "\n").map(String.init)
        try #require(decisions.count == hostileCases.count)
        for (hostile, decision) in zip(hostileCases, decisions) {
            // Graft refuses all of these; the reference must too, unless the case documents otherwise.
            #expect((decision == "ok") == hostile.referenceAccepts, "\(hostile.label): reference said \(decision)")
        }
    }
}

func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
