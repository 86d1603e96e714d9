import Foundation
import GraftTestSupport
import SafeTensors
import Synchronization
import Testing

@testable import Graft
@testable import GraftCore

/// Bytes handed out a few at a time, as a pipe does; counts what was read.
private final class Drip: ByteSource, @unchecked Sendable {
    let bytes: [UInt8]
    let step: Int
    private let position = Mutex<Int>(0)
    var origin: String { "a test stream" }
    var consumed: Int { position.withLock { $0 } }

    init(_ bytes: [UInt8], step: Int = 7) {
        self.bytes = bytes
        self.step = step
    }

    func read(into buffer: UnsafeMutableRawPointer, count: Int) throws(SafeTensorsError) -> Int {
        position.withLock { position in
            let n = min(count, step, bytes.count - position)
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress! + position, byteCount: n) }
            position += n
            return n
        }
    }
}

@Suite("Imports from a byte stream")
struct StreamImportTests {
    @Test("a base read from a stream in small pieces is stored exactly as the file would be: same digest, byte-identical export")
    func base() async throws {
        let test = try await TestRegistry()
        let file = try SafeTensorsWriter.serialize(baseTensors(seed: 3), metadata: ["format": "pt"])
        let fromFile = try await test.registry.addBase(name: ModelName("file"), file: try test.writeBase("a.safetensors", seed: 3))
        let streamed = try await test.registry.addBase(name: ModelName("stream"), input: try SafeTensorsStream(Drip(file)))
        #expect(streamed.digest == fromFile.digest && streamed.logicalBytes == file.count && streamed.tensors == 11)
        #expect(streamed.bytesStored == 0, "every tensor was already stored by the file import")
        let out = test.directory.file("out.safetensors")
        try await test.registry.export(.number(ModelName("stream"), 1), to: out)
        #expect(Array(try fileBytes(out)) == file)
        #expect(try await test.registry.verify(readData: true).ok)
    }

    @Test("a stream cut anywhere, or running on past its data, is refused and nothing is committed", arguments: [3, 8, 40, -2, 30_000, -1])
    func damaged(cut: Int) async throws {
        let test = try await TestRegistry()
        let file = try SafeTensorsWriter.serialize(baseTensors(seed: 4))
        let dataStart = try SafeTensorsStream(Drip(file)).header.dataStart
        // -1: one byte too many; -2: ten bytes into the data section.
        let bytes = cut == -1 ? file + [0] : Array(file.prefix(cut == -2 ? dataStart + 10 : cut))
        if bytes.count < dataStart {
            // Within the prefix or the header: refused on opening, as a file would be.
            #expect(throws: SafeTensorsError.self) { _ = try SafeTensorsStream(Drip(bytes)) }
            return
        }
        let error = await expectGraftError("invalidFile") {
            try await test.registry.addBase(name: ModelName("m"), input: try SafeTensorsStream(Drip(bytes, step: 4096)))
        }
        #expect("\(error.map { "\($0)" } ?? "")".contains(cut == -1 ? "trailing" : "truncated"))
        #expect(try await test.registry.models().isEmpty)
        #expect(try test.rows("SELECT count(*) FROM blobs") == 0)
    }

    @Test("a pickle arriving on a stream is named as one and refused")
    func pickle() async throws {
        let bytes: [UInt8] = [0x80, 0x02, 0x7D, 0x71, 0x00] + [UInt8](repeating: 0, count: 20)
        #expect(throws: SafeTensorsError.pickleCheckpoint(kind: "pickle file (a PyTorch checkpoint saved with torch.save)")) {
            _ = try SafeTensorsStream(Drip(bytes))
        }
    }

    @Test("a student's checkpoint from a stream: the manifest holds — frozen tensors cost nothing, drift and header violations are refused")
    func student() async throws {
        let test = try await TestRegistry()
        let base = baseTensors(seed: 5)
        _ = try await test.registry.addBase(name: ModelName("base"), input: try SafeTensorsMemory(base))
        _ = try await test.registry.createStudent(
            name: ModelName("s"), from: Reference(parsing: "base@1"),
            manifest: .rules([ManifestRule(.freeze, "features"), ManifestRule(.drop, "classifier")], freezeThrough: nil))
        var trained = base.filter { !$0.name.hasPrefix("classifier") }
        trained.append(TensorData(name: "head.weight", dtype: .f32, shape: [2, 512], bytes: [UInt8](repeating: 1, count: 4096)))
        let result = try await test.registry.addCheckpoint(
            model: ModelName("s"), input: try SafeTensorsStream(Drip(try SafeTensorsWriter.serialize(trained), step: 1000)))
        #expect(result.checkpoint == "s@1" && result.newTensors == ["head.weight"])
        #expect(result.bytesStored == 4096, "only the new head; the frozen features are the base's blobs")

        // A frozen tensor that changed: refused, no checkpoint.
        var drifted = trained
        let index = drifted.firstIndex { $0.name == "features.10.weight" }!
        drifted[index].bytes[0] ^= 1
        let drift = await expectGraftError("manifestViolation") {
            try await test.registry.addCheckpoint(
                model: ModelName("s"), input: try SafeTensorsStream(Drip(try SafeTensorsWriter.serialize(drifted), step: 1000)))
        }
        #expect("\(drift.map { "\($0)" } ?? "")".contains("features.10.weight: frozen, but changed"))

        // A dropped tensor present: refused from the header, before a byte of data is read.
        let withDropped = try SafeTensorsWriter.serialize(base)
        let source = Drip(withDropped, step: 1000)
        let stream = try SafeTensorsStream(source)
        await expectGraftError("manifestViolation") { try await test.registry.addCheckpoint(model: ModelName("s"), input: stream) }
        #expect(source.consumed == stream.header.dataStart, "only the header was read")
        #expect(try await test.registry.checkpoints(of: ModelName("s")).map(\.ref) == ["s@1"])
    }
}
