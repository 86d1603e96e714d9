import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Testing

/// Adapter students from the command line (issue 25), locally and against `graft serve`: the
/// flags' refusals, an adapter committed through the upload protocol, and a merged export from a
/// server equal byte for byte to the local one.
@Suite("adapters: the CLI, locally and over HTTP")
struct AdapterCLITests {
    static func f32(_ name: String, _ shape: [Int], seed: UInt64) -> TensorData {
        var generator = SeededGenerator(seed: seed)
        let values = (0..<shape.reduce(1, *)).map { _ in Float.random(in: -1...1, using: &generator) }
        return TensorData(name: name, dtype: .f32, shape: shape, bytes: values.withUnsafeBytes { [UInt8]($0) })
    }

    /// A parent directory (two linear layers and a head, with a config) and a rank-8 LoRA on it
    /// whose tensors are 4 KiB or more (blobs, not inline data).
    static func write(parent: String, adapter: String, seed: UInt64 = 10) throws {
        for folder in [parent, adapter] { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        try SafeTensorsWriter.write(
            [
                f32("layer.0.weight", [256, 128], seed: 1), f32("layer.1.weight", [256, 256], seed: 2),
                f32("head.weight", [3, 256], seed: 3),
            ],
            metadata: ["format": "pt"], to: parent + "/model.safetensors")
        try writeFile(parent + "/config.json", Array("{\"model_type\": \"tiny\"}\n".utf8))
        let key = "base_model.model."
        try SafeTensorsWriter.write(
            [
                f32(key + "layer.0.lora_A.weight", [8, 128], seed: seed), f32(key + "layer.0.lora_B.weight", [256, 8], seed: seed + 1),
                f32(key + "layer.1.lora_A.weight", [8, 256], seed: seed + 2), f32(key + "layer.1.lora_B.weight", [256, 8], seed: seed + 3),
            ], metadata: ["format": "pt"], to: adapter + "/adapter_model.safetensors")
        try writeFile(
            adapter + "/adapter_config.json",
            Array("{\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 16, \"target_modules\": [\"0\", \"1\"]}".utf8))
    }

    @Test("--adapter takes no other rule; --merged refuses a checkpoint that is not an adapter's; the engine says it trains none yet")
    func refusals() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        let (parent, adapter) = (cli.directory.file("parent"), cli.directory.file("adapter"))
        try Self.write(parent: parent, adapter: adapter)
        #expect(try cli.run(["base", "add", parent, "--name", "base"]).status == 0)
        for extra in [["--freeze", "layer.0"], ["--prefix", "bert."], ["--relation", "distillation"]] {
            let refused = try cli.run(["student", "create", "lora", "--from", "base", "--adapter"] + extra)
            #expect(refused.status == 64, "\(extra): \(refused.stderr)")
        }
        let made = try cli.json(["student", "create", "lora", "--from", "base", "--adapter"]) as! [String: Any]
        let manifest = made["manifest"] as! [String: Any]
        #expect(manifest["mode"] as? String == "adapter" && manifest["relation"] as? String == "adapter")
        let merged = try cli.run(["export", "base@1", "--merged", "-o", cli.directory.file("merged")])
        #expect(merged.status == 65 && merged.stderr.contains("not an adapter"), "\(merged.stderr)")
        #expect(!FileManager.default.fileExists(atPath: cli.directory.file("merged")))
        // A full copy committed to an adapter student: exit 79, each tensor named.
        let full = try cli.run(["checkpoint", "add", "lora", parent])
        #expect(
            full.status == 79 && full.stderr.contains("adapter_config.json") && full.stderr.contains("not an adapter"), "\(full.stderr)")
        #expect(try cli.run(["checkpoint", "add", "lora", adapter]).status == 0)
        let shown = try cli.run(["show", "lora"])
        #expect(shown.stdout.contains("adapter LORA rank 8, alpha 16 (scale 2) on 0, 1"), "\(shown.stdout)")
        let tree = try cli.run(["lineage", "base"])
        #expect(tree.stdout.contains("lora (adapter)"), "\(tree.stdout)")
        let stats = try cli.run(["stats"])
        #expect(stats.stdout.contains("adapters") && stats.stdout.contains("as full copies"), "\(stats.stdout)")
    }

    @Test("an adapter committed to a server stores and sends only the adapter; a merged export from the server equals the local one")
    func remote() throws {
        let served = try Served(registerBase: false)
        let (parent, adapter) = (served.cli.directory.file("parent"), served.cli.directory.file("adapter"))
        try Self.write(parent: parent, adapter: adapter)
        #expect(try served.remote(["base", "add", parent, "--name", "base"], token: served.write).status == 0)
        #expect(try served.remote(["student", "create", "lora", "--from", "base@1", "--adapter"], token: served.write).status == 0)
        let commit = try served.remote(["checkpoint", "add", "lora", adapter, "--json"], token: served.write)
        #expect(commit.status == 0, "\(commit.stderr)")
        let result = try JSONSerialization.jsonObject(with: Data(commit.stdout.utf8)) as! [String: Any]
        let adapterFile = try FileManager.default.attributesOfItem(atPath: adapter + "/adapter_model.safetensors")[.size] as! Int
        #expect((result["bytes_stored"] as! Int) <= adapterFile + 4096, "\(result)")
        // The parent's tensors never travel: what is sent is the adapter, its config and the
        // proposal (sent twice: planned, then committed).
        let parentFile = try FileManager.default.attributesOfItem(atPath: parent + "/model.safetensors")[.size] as! Int
        let sent = result["bytes_sent"] as! Int
        #expect(sent < adapterFile + 8 * 1024 && sent < parentFile / 10, "\(result)")

        let shown = try served.remote(["show", "lora@1"], token: served.read)
        #expect(shown.stdout.contains("adapter LORA rank 8, alpha 16 (scale 2) on 0, 1"), "\(shown.stdout) \(shown.stderr)")
        let remoteMerged = served.cli.directory.file("remote-merged")
        let exported = try served.remote(["export", "lora@1", "--merged", "-o", remoteMerged, "--json"], token: served.read)
        #expect(exported.status == 0, "\(exported.stderr)")
        let answer = try JSONSerialization.jsonObject(with: Data(exported.stdout.utf8)) as! [String: Any]
        #expect(answer["checkpoint"] as? String == "lora@1")
        let localMerged = served.cli.directory.file("local-merged")
        #expect(try served.cli.run(["export", "lora@1", "--merged", "-o", localMerged]).status == 0)
        for path in filesUnder(localMerged) {
            #expect(
                FileManager.default.contents(atPath: localMerged + "/" + path)
                    == FileManager.default.contents(atPath: remoteMerged + "/" + path), "\(path)")
        }
        #expect(filesUnder(remoteMerged) == ["config.json", "model.safetensors"])
        // No scratch left beside the output.
        #expect(try FileManager.default.contentsOfDirectory(atPath: served.cli.directory.path).allSatisfy { !$0.hasSuffix(".merge") })
    }
}
