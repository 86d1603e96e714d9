import Foundation
import GRDB
import GraftTestSupport
import SafeTensors
import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal
@testable import GraftSQLite

@Suite("Checkpoints opened in place")
struct OpenCheckpointTests {
    @Test("every tensor reads in place exactly as in the imported file: inline ones and mapped blob files, header bytes too")
    func readsInPlace() async throws {
        let test = try await TestRegistry()
        let path = try test.writeBase(metadata: ["format": "pt", "note": "in place"])
        _ = try await test.registry.addBase(name: ModelName("cnn"), file: path)
        let original = try MappedSafeTensors(path: path)
        let opened = try await test.registry.openCheckpoint(try Reference(parsing: "cnn@1"))
        #expect(opened.origin == "cnn@1" && opened.checkpoint.ref == "cnn@1")
        #expect(opened.headerBytes == Array(original.headerBytes))
        #expect(opened.header.tensors == original.header.tensors)
        #expect(opened.header.metadataDictionary["note"] == "in place")
        let sizes = Set(original.header.tensors.map { $0.byteCount >= Registry.defaultInlineThreshold })
        #expect(sizes == [true, false], "the fixture has both inline and file-stored tensors")
        for tensor in original.header.tensors {
            let expected = original.withData(of: tensor) { Array($0) }
            #expect(opened.withData(of: tensor) { Array($0) } == expected, "\(tensor.name)")
        }
        // A tensor looked up by name from another file's header (offsets differ) is found too.
        let renamed = TensorInfo(name: "classifier.bias", dtype: .f32, shape: [10], dataOffsets: 0..<40)
        let bias = try #require(original.header.tensors.first { $0.name == "classifier.bias" })
        #expect(opened.withData(of: renamed) { Array($0) } == original.withData(of: bias) { Array($0) })
        try await opened.verify()
        #expect(test.storedFiles.allSatisfy { !$0.hasPrefix("tmp/") }, "no temporary file")
    }

    @Test("a damaged blob: open refuses a missing or resized file at once, verify finds a flipped byte (file or inline)")
    func damage() async throws {
        let test = try await TestRegistry()
        let path = try test.writeBase()
        _ = try await test.registry.addBase(name: ModelName("cnn"), file: path)
        let reference = try Reference(parsing: "cnn@1")
        let largest = baseTensors(seed: 1).max { $0.bytes.count < $1.bytes.count }!
        let hex = sha256Hex(largest.bytes)
        let file = test.root + "/blobs/sha256/\(hex.prefix(2))/\(hex)"
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file)
        var bytes = try fileBytes(file)
        bytes[bytes.count / 3] ^= 0x10
        try bytes.write(to: URL(fileURLWithPath: file))
        // Without verification the open maps what is there; verification names the blob.
        let unverified = try await test.registry.openCheckpoint(reference)
        let refused = await expectGraftError("damagedBlob") { try await unverified.verify() }
        #expect(refused?.description.contains(String(hex.prefix(12))) == true, "\(String(describing: refused))")
        await expectGraftError("damagedBlob") { try await test.registry.openCheckpoint(reference, verify: true) }

        try bytes.dropLast().write(to: URL(fileURLWithPath: file))
        await expectGraftError("damagedBlob") { try await test.registry.openCheckpoint(reference) }
        try FileManager.default.removeItem(atPath: file)
        let missing = await expectGraftError("damagedBlob") { try await test.registry.openCheckpoint(reference) }
        #expect(missing?.description.contains("missing") == true)

        // Inline bytes changed inside the database.
        let inline = try await TestRegistry()
        _ = try await inline.registry.addBase(name: ModelName("cnn"), file: try inline.writeBase())
        try await DatabaseQueue(path: inline.registry.layout.database).write { db in
            try db.execute(sql: "UPDATE blobs SET inline_data = zeroblob(length(inline_data)) WHERE inline_data IS NOT NULL")
        }
        let opened = try await inline.registry.openCheckpoint(reference)
        await expectGraftError("damagedBlob") { try await opened.verify() }
    }

    @Test("the engine's way in: a checkpoint opened in place rebuilds the same tensors as an exported file")
    func sameAsExport() async throws {
        let test = try await TestRegistry()
        _ = try await test.registry.addBase(name: ModelName("cnn"), file: try test.writeBase())
        let out = test.directory.file("out.safetensors")
        _ = try await test.registry.export(try Reference(parsing: "cnn"), to: out)
        let exported = try MappedSafeTensors(path: out)
        let opened = try await test.registry.openCheckpoint(try Reference(parsing: "cnn"))
        func contents(_ source: some SafeTensorsSource) -> [String: [UInt8]] {
            Dictionary(uniqueKeysWithValues: source.header.tensors.map { ($0.name, source.withData(of: $0) { Array($0) }) })
        }
        #expect(contents(opened) == contents(exported))
    }
}

@Suite("Imports from memory")
struct MemoryImportTests {
    @Test("tensors in memory import as the file SafeTensorsWriter would write, byte for byte; a student's manifest is enforced on them")
    func fromMemory() async throws {
        let test = try await TestRegistry()
        let tensors = baseTensors(seed: 3)
        let metadata = ["format": "pt", "from": "memory"]
        let input = try SafeTensorsMemory(tensors, metadata: metadata)
        let expected = try SafeTensorsWriter.serialize(tensors, metadata: metadata)
        #expect(input.fileSize == expected.count && input.headerBytes == Array(expected.prefix(input.headerBytes.count)))
        let result = try await test.registry.addBase(name: ModelName("mem"), input: input)
        #expect(result.logicalBytes == expected.count && result.checkpoint == "mem@1")
        let out = test.directory.file("mem.safetensors")
        _ = try await test.registry.export(try Reference(parsing: "mem@1"), to: out)
        #expect(try fileBytes(out) == Data(expected))
        // The same tensors from a file land on the same blobs and the same checkpoint digest.
        let file = test.directory.file("same.safetensors")
        try SafeTensorsWriter.write(tensors, metadata: metadata, to: file)
        let again = try await test.registry.addBase(name: ModelName("file"), file: file)
        #expect(again.digest == result.digest && again.bytesStored == 0)

        _ = try await test.registry.createStudent(
            name: ModelName("s"), from: Reference(parsing: "mem@1"),
            manifest: .rules([ManifestRule(.freeze, "features")], freezeThrough: nil))
        var drifted = tensors
        let index = drifted.firstIndex { $0.name == "features.0.weight" }!
        drifted[index].bytes[0] ^= 1
        let refused = await expectGraftError("manifestViolation") {
            try await test.registry.addCheckpoint(model: ModelName("s"), input: try SafeTensorsMemory(drifted, metadata: metadata))
        }
        #expect(refused?.description.contains("features.0.weight: frozen, but changed") == true)
        var tuned = tensors
        let head = tuned.firstIndex { $0.name == "classifier.weight" }!
        tuned[head].bytes[0] ^= 1
        let committed = try await test.registry.addCheckpoint(
            model: ModelName("s"), input: try SafeTensorsMemory(tuned, metadata: metadata), step: 7)
        #expect(committed.checkpoint == "s@1" && committed.bytesStored == tuned[head].bytes.count)
        #expect { try SafeTensorsMemory([TensorData(name: "w", dtype: .f32, shape: [3], bytes: [0, 0, 0, 0])]) } throws: { error in
            if case SafeTensorsError.dataLengthMismatch = error { true } else { false }
        }
    }
}

@Suite("Checkpoints streamed out")
struct StreamOutTests {
    @Test("stream sends the exported file's bytes in order; a damaged blob stops it with damagedBlob")
    func streamed() async throws {
        let test = try await TestRegistry()
        let path = try test.writeBase(metadata: ["format": "pt", "note": "streamed"])
        _ = try await test.registry.addBase(name: ModelName("cnn"), file: path)
        final class Collector: @unchecked Sendable {
            // Written only from the one thread `stream` runs its sink on.
            var bytes: [UInt8] = []
            var calls = 0
        }
        let collector = Collector()
        let sent = try await test.registry.stream(try Reference(parsing: "cnn@1")) { chunk throws(GraftError) in
            collector.bytes.append(contentsOf: chunk)
            collector.calls += 1
        }
        #expect(Data(collector.bytes) == (try fileBytes(path)) && sent == collector.bytes.count)
        #expect(collector.calls == 12, "the header, then one call per tensor of this small file")

        let largest = baseTensors(seed: 1).max { $0.bytes.count < $1.bytes.count }!
        let hex = sha256Hex(largest.bytes)
        let file = test.root + "/blobs/sha256/\(hex.prefix(2))/\(hex)"
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file)
        var damaged = try fileBytes(file)
        damaged[7] ^= 0x80
        try damaged.write(to: URL(fileURLWithPath: file))
        await expectGraftError("damagedBlob") {
            try await test.registry.stream(try Reference(parsing: "cnn@1")) { _ throws(GraftError) in }
        }
        // What the sink throws comes out as it is.
        try FileManager.default.removeItem(atPath: file)
        let other = try await TestRegistry()
        _ = try await other.registry.addBase(name: ModelName("cnn"), file: try other.writeBase())
        await expectGraftError("diskFull") {
            try await other.registry.stream(try Reference(parsing: "cnn")) { _ throws(GraftError) in throw .diskFull(path: "/sink") }
        }
    }
}
