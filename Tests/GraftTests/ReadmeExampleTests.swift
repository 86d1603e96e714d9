import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Testing

/// The README's "As a library" example, with its paths inside a temporary directory: it must
/// compile against the public API and run.
@Suite("README example")
struct ReadmeExampleTests {
    @Test("the library example in the README runs as written")
    func libraryExample() async throws {
        let directory = TemporaryDirectory()
        try SafeTensorsWriter.write(SyntheticBase.tensors(seed: 1), metadata: ["format": "pt"], to: directory.file("resnet18.safetensors"))
        // --- README.md, "As a library" (paths prefixed with the directory) ---
        let registry = try await Registry.create(at: directory.file("registry")).registry
        let result = try await registry.addBase(
            name: try ModelName("resnet18"), file: directory.file("resnet18.safetensors"),
            provenance: Provenance(license: "bsd-3-clause", architecture: "resnet18"))
        print(result.checkpoint, result.bytesStored)
        try await registry.export(try Reference(parsing: "resnet18@1"), to: directory.file("copy.safetensors"))
        let checkpoint = try await registry.openCheckpoint(try Reference(parsing: "resnet18@1"), verify: true)
        checkpoint.withData(of: checkpoint.header.tensors[0]) { bytes in print(bytes.count) }
        let tensors = [TensorData(name: "head.weight", dtype: .f32, shape: [2], bytes: [UInt8](repeating: 0, count: 8))]
        _ = try await registry.addBase(name: try ModelName("tiny"), input: try SafeTensorsMemory(tensors, metadata: ["format": "pt"]))
        // --- end of the example ---
        #expect(
            FileManager.default.contentsEqual(atPath: directory.file("copy.safetensors"), andPath: directory.file("resnet18.safetensors")))
        #expect(try await registry.checkpoints(of: ModelName("tiny")).map(\.ref) == ["tiny@1"])
    }
}
