import Foundation
import GraftTestSupport
import SafeTensors
import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal

/// Adapter students (issue 25): a checkpoint holds only a PEFT adapter, checked against the
/// parent's modules with nothing written on refusal; a merged export computes W + scale·B·A per
/// dtype and layout kind; the registry treats adapters like any student. The real-PEFT side
/// (PeftModel, merge_and_unload, from_pretrained) is clients/python/tests/test_adapters.py.
@Suite("adapter students")
struct AdapterTests {
    // MARK: A parent and adapters built here

    static func floats(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in Float.random(in: -scale...scale, using: &generator) }
    }

    static func tensor(_ name: String, _ shape: [Int], _ dtype: DType = .f32, seed: UInt64) -> TensorData {
        let values = floats(shape.reduce(1, *), seed: seed)
        return TensorData(name: name, dtype: dtype, shape: shape, bytes: MergePlan.bytes(values, dtype))
    }

    /// Linear weights in three dtypes, a 3×3 convolution, an embedding and a head.
    static let parentTensors: [TensorData] = [
        tensor("enc.q.weight", [6, 5], seed: 1), tensor("enc.q.bias", [6], seed: 2), tensor("enc.v.weight", [6, 5], .bf16, seed: 3),
        tensor("enc.k.weight", [6, 5], .f16, seed: 4), tensor("conv.weight", [4, 3, 3, 3], seed: 5),
        tensor("emb.weight", [10, 5], seed: 6),
        tensor("head.weight", [3, 6], seed: 7), tensor("head.bias", [3], seed: 8),
    ]

    static let key = AdapterConfig.keyPrefix

    /// A LoRA on every weight of the parent (rank 2, conv at rank 3 by rank_pattern, alpha 4)
    /// with the head trained whole (modules_to_save).
    static func loraTensors(seed: UInt64 = 20, prefix: String = "") -> [TensorData] {
        let p = key + prefix
        return [
            tensor(p + "enc.q.lora_A.weight", [2, 5], seed: seed), tensor(p + "enc.q.lora_B.weight", [6, 2], seed: seed + 1),
            tensor(p + "enc.v.lora_A.weight", [2, 5], seed: seed + 2), tensor(p + "enc.v.lora_B.weight", [6, 2], seed: seed + 3),
            tensor(p + "enc.k.lora_A.weight", [2, 5], .f16, seed: seed + 4),
            tensor(p + "enc.k.lora_B.weight", [6, 2], .f16, seed: seed + 5),
            tensor(p + "conv.lora_A.weight", [3, 3, 3, 3], seed: seed + 6), tensor(p + "conv.lora_B.weight", [4, 3, 1, 1], seed: seed + 7),
            tensor(p + "emb.lora_embedding_A", [2, 10], seed: seed + 8), tensor(p + "emb.lora_embedding_B", [5, 2], seed: seed + 9),
            tensor(p + "head.weight", [3, 6], seed: seed + 10), tensor(p + "head.bias", [3], seed: seed + 11),
        ]
    }

    static var loraConfig: [String: Any] {
        [
            "peft_type": "LORA", "r": 2, "lora_alpha": 4, "rank_pattern": ["conv": 3], "target_modules": ["q", "v", "k", "conv", "emb"],
            "modules_to_save": ["head"], "fan_in_fan_out": false, "use_rslora": false, "bias": "none",
        ]
    }

    /// Writes a PEFT directory: adapter_model.safetensors and adapter_config.json.
    @discardableResult
    static func writeAdapter(_ path: String, tensors: [TensorData] = loraTensors(), config: [String: Any] = loraConfig) throws -> String {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: path + "/adapter_model.safetensors")
        try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
            .write(to: URL(fileURLWithPath: path + "/adapter_config.json"))
        return path
    }

    /// A registry with the parent (`base`, a model directory) and an adapter student `lora`.
    static func setup(parent: [TensorData] = parentTensors, inlineThreshold: Int = Registry.defaultInlineThreshold) async throws
        -> TestRegistry
    {
        let test = try await TestRegistry(inlineThreshold: inlineThreshold)
        let directory = test.directory.file("parent")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try SafeTensorsWriter.write(parent, metadata: ["format": "pt"], to: directory + "/model.safetensors")
        try writeFile(directory + "/config.json", Array("{\"model_type\": \"tiny\"}\n".utf8))
        _ = try await test.registry.addBase(name: try ModelName("base"), directory: try DirectoryInput.open(directory))
        _ = try await test.registry.createStudent(name: try ModelName("lora"), from: try Reference(parsing: "base@1"), manifest: .adapter)
        return test
    }

    static func commit(_ test: TestRegistry, _ path: String, to model: String = "lora") async throws(GraftError) -> ImportResult {
        try await test.registry.addCheckpoint(model: try ModelName(model), directory: try DirectoryInput.open(path))
    }

    // MARK: Students and commits

    @Test("an adapter student freezes every parent tensor and stores only its adapter")
    func storesOnlyTheAdapter() async throws {
        let test = try await Self.setup()
        let manifest = try #require(try await test.registry.manifest(of: try ModelName("lora")))
        #expect(manifest.mode == .adapter && manifest.relation == .adapter)
        #expect(manifest.entries.count == Self.parentTensors.count && manifest.entries.allSatisfy { $0.state == .frozen })
        let adapter = try Self.writeAdapter(test.directory.file("adapter"))
        let result = try await Self.commit(test, adapter)
        let adapterFile = try FileSystem.fileSize(adapter + "/adapter_model.safetensors")!
        #expect(result.bytesStored <= adapterFile + 4096, "\(result)")
        #expect(result.tensors == Self.loraTensors().count)
        let detail = try await test.registry.checkpoint(try Reference(parsing: "lora@1"))
        #expect(detail.files.map(\.path) == ["adapter_config.json", "adapter_model.safetensors"])
        // Exported as the PEFT directory, byte for byte.
        let out = test.directory.file("out")
        try await test.registry.export(try Reference(parsing: "lora@1"), to: out)
        #expect(
            FileManager.default.contents(atPath: out + "/adapter_model.safetensors")
                == FileManager.default.contents(
                    atPath: adapter + "/adapter_model.safetensors"))
        #expect(filesUnder(out) == filesUnder(adapter))
        // Its config reads back whole, checked; a shard or an oversized read is refused.
        let reference = try Reference(parsing: "lora@1")
        let config = try await test.registry.smallFile(reference, path: AdapterConfig.fileName)
        #expect(config == Array(FileManager.default.contents(atPath: adapter + "/adapter_config.json")!))
        #expect(
            try AdapterConfig.parse(config).summary
                == "LORA rank 2, alpha 4 (scale 2), per-module ranks on q, v, k, conv, emb; modules_to_save head")
        await #expect(throws: GraftError.self) { try await test.registry.smallFile(reference, path: "adapter_model.safetensors") }
        do {
            _ = try await test.registry.smallFile(reference, path: AdapterConfig.fileName, limit: 16)
            Issue.record("read past the limit")
        } catch {
            #expect(error.kind == .tooLarge)
        }
        let stats = try await test.registry.stats()
        #expect(stats.adapterModels == 1 && stats.adapterCheckpoints == 1)
        let parentBytes = try await test.registry.checkpoint(try Reference(parsing: "base@1")).checkpoint.fileBytes
        #expect(stats.adapterBytes == detail.checkpoint.fileBytes && stats.adapterParentBytes == parentBytes)
    }

    /// One malformed adapter per case: what is changed, and what the refusal names.
    static var refusals: [(String, (inout [TensorData], inout [String: Any]) -> Void, String)] {
        [
            ("a tensor outside base_model.model.", { tensors, _ in tensors[0].name = "enc.q.lora_A.weight" }, "base_model.model."),
            ("lora_A without its lora_B", { tensors, _ in tensors.remove(at: 1) }, "lora_B"),
            (
                "a module the parent lacks",
                { tensors, _ in
                    tensors[0].name = key + "enc.x.lora_A.weight"
                    tensors[1].name = key + "enc.x.lora_B.weight"
                }, "enc.x.weight"
            ),
            (
                "a pair of another rank",
                { tensors, _ in
                    tensors[0] = tensor(key + "enc.q.lora_A.weight", [3, 5], seed: 1)
                    tensors[1] = tensor(key + "enc.q.lora_B.weight", [6, 3], seed: 2)
                }, "rank 2"
            ),
            (
                "A against another input width", { tensors, _ in tensors[0] = tensor(key + "enc.q.lora_A.weight", [2, 4], seed: 1) },
                "[2, 5]"
            ),
            (
                "an integer LoRA tensor",
                { tensors, _ in
                    tensors[0] = TensorData(
                        name: key + "enc.q.lora_A.weight", dtype: .i32, shape: [2, 5], bytes: Array(repeating: 0, count: 40))
                }, "floating-point"
            ),
            ("a whole module not in modules_to_save", { _, config in config["modules_to_save"] = NSNull() }, "modules_to_save"),
            ("a rank_pattern that gives the conv another rank", { _, config in config["rank_pattern"] = [:] as [String: Int] }, "rank 2"),
            ("no rank", { _, config in config["r"] = nil }, "rank r"),
            ("a rank that is a flag", { _, config in config["r"] = true }, "r of the wrong type"),
            ("no peft_type", { _, config in config["peft_type"] = nil }, "peft_type"),
            (
                "a DoRA magnitude beside no pair",
                { tensors, config in
                    config["use_dora"] = true
                    tensors.append(tensor(key + "enc.x.lora_magnitude_vector", [6], seed: 50))
                }, "no lora_A and lora_B for enc.x"
            ),
            (
                "a trained bias the config does not declare", { tensors, _ in tensors.append(tensor(key + "enc.q.bias", [6], seed: 51)) },
                "enc.q.bias"
            ),
        ]
    }

    @Test("every malformed adapter is refused, each problem named, with nothing written", arguments: refusals.indices)
    func refused(_ index: Int) async throws {
        let (what, change, named) = Self.refusals[index]
        let test = try await Self.setup()
        var (tensors, config) = (Self.loraTensors(), Self.loraConfig)
        change(&tensors, &config)
        let adapter = try Self.writeAdapter(test.directory.file("adapter"), tensors: tensors, config: config)
        let blobs = try test.rows("SELECT count(*) FROM blobs")
        do {
            _ = try await Self.commit(test, adapter)
            Issue.record("\(what): committed")
        } catch {
            guard case .manifestViolation(_, let violations) = error else {
                Issue.record("\(what): \(error)")
                return
            }
            #expect(violations.allSatisfy { $0.rule == "adapter" }, "\(what)")
            #expect(violations.contains { $0.description.contains(named) }, "\(what): \(violations)")
        }
        #expect(try await test.registry.checkpoints(of: try ModelName("lora")).isEmpty, "\(what)")
        #expect(try test.rows("SELECT count(*) FROM blobs") == blobs, "\(what)")
    }

    @Test("a single file and a directory without adapter_config.json are not adapters")
    func notADirectory() async throws {
        let test = try await Self.setup()
        let file = test.directory.file("adapter.safetensors")
        try SafeTensorsWriter.write(Self.loraTensors(), metadata: nil, to: file)
        await #expect(throws: GraftError.self) { try await test.registry.addCheckpoint(model: try ModelName("lora"), file: file) }
        let adapter = try Self.writeAdapter(test.directory.file("adapter"))
        try FileManager.default.removeItem(atPath: adapter + "/adapter_config.json")
        do {
            _ = try await Self.commit(test, adapter)
            Issue.record("committed without a config")
        } catch {
            #expect(error.description.contains("adapter_config.json"), "\(error)")
        }
        #expect(try await test.registry.checkpoints(of: try ModelName("lora")).isEmpty)
    }

    @Test("other adapter types are stored when their tensors sit on parent modules")
    func otherTypes() async throws {
        let test = try await Self.setup()
        let ia3 = [Self.tensor(Self.key + "enc.q.ia3_l", [6, 1], seed: 30), Self.tensor(Self.key + "enc.v.ia3_l", [6, 1], seed: 31)]
        let good = try Self.writeAdapter(test.directory.file("ia3"), tensors: ia3, config: ["peft_type": "IA3"])
        #expect(try await Self.commit(test, good).checkpoint == "lora@1")
        // DoRA's magnitudes, LoRA biases and the parent's own biases, where the config declares them.
        var config = Self.loraConfig
        (config["use_dora"], config["lora_bias"], config["bias"]) = (true, true, "all")
        let extras =
            Self.loraTensors() + [
                Self.tensor(Self.key + "enc.q.lora_magnitude_vector", [6], seed: 33),
                Self.tensor(Self.key + "enc.q.lora_B.bias", [6], seed: 34),
                Self.tensor(Self.key + "enc.q.base_layer.bias", [6], seed: 35),
            ]
        #expect(
            try await Self.commit(test, try Self.writeAdapter(test.directory.file("dora"), tensors: extras, config: config)).checkpoint
                == "lora@2")
        let stray = [Self.tensor(Self.key + "nowhere.ia3_l", [6, 1], seed: 32)]
        let bad = try Self.writeAdapter(test.directory.file("ia3-bad"), tensors: stray, config: ["peft_type": "IA3"])
        await #expect(throws: GraftError.self) { try await Self.commit(test, bad) }
        // Stored as an adapter, refused as a merge.
        do {
            try await test.registry.exportMerged(try Reference(parsing: "lora@1"), to: test.directory.file("merged"))
            Issue.record("merged an IA3 adapter")
        } catch {
            guard case .cannotMerge(_, let reason) = error else { throw error }
            #expect(reason.contains("IA3"))
        }
        #expect(!FileSystem.fileExists(test.directory.file("merged")))
    }

    @Test("an adapter of an adapter, and any student of one, is refused; --adapter makes the relation adapter")
    func stackedRefused() async throws {
        let test = try await Self.setup()
        _ = try await Self.commit(test, try Self.writeAdapter(test.directory.file("adapter")))
        for declaration in [ManifestDeclaration.adapter, .rules([], freezeThrough: nil)] {
            do {
                _ = try await test.registry.createStudent(
                    name: try ModelName("stacked"), from: try Reference(parsing: "lora@1"), manifest: declaration)
                Issue.record("a student of an adapter was made")
            } catch {
                guard case .invalidManifest(let reason) = error else { throw error }
                #expect(reason.contains("adapter"))
            }
        }
        let made = try await test.registry.createStudent(
            name: try ModelName("second"), from: try Reference(parsing: "base@1"), relation: .distillation, manifest: .adapter)
        #expect(made.manifest.relation == .adapter && made.manifest.mode == .adapter)
    }

    // MARK: Merged exports

    /// W + round(scale · B·A) per element in double precision, as PEFT's merge defines it.
    static func expectedMerge(
        weight: [Float], a: [Float], b: [Float], rank: Int, scale: Double, transposed: Bool
    ) -> [Double] {
        let columns = a.count / rank, rows = b.count / rank
        var w = weight.map(Double.init)
        for row in 0..<rows {
            for column in 0..<columns {
                var sum = 0.0
                for k in 0..<rank { sum += Double(b[row * rank + k]) * Double(a[k * columns + column]) }
                let at = transposed ? column * rows + row : row * columns + column
                w[at] += scale * sum
            }
        }
        return w
    }

    @Test("a merged export adds scale·B·A to each targeted weight in its dtype; the rest is the parent's, byte for byte")
    func mergedExport() async throws {
        let test = try await Self.setup()
        let lora = Self.loraTensors()
        _ = try await Self.commit(test, try Self.writeAdapter(test.directory.file("adapter"), tensors: lora))
        let out = test.directory.file("merged")
        let result = try await test.registry.exportMerged(try Reference(parsing: "lora@1"), to: out)
        #expect(result.files == 2 && filesUnder(out) == ["config.json", "model.safetensors"])
        let parentFile = test.directory.file("parent/model.safetensors")
        let merged = try SafeTensorsReader(path: out + "/model.safetensors")
        let parent = try SafeTensorsReader(path: parentFile)
        // No prefix, no new module: the header is the parent's, byte for byte.
        #expect(merged.headerBytes == parent.headerBytes)
        func values(_ name: String, in reader: SafeTensorsReader) throws -> [Float] {
            let info = try #require(reader.header.tensors.first { $0.name == name })
            return MergePlan.floats(try reader.data(of: info), info.dtype)
        }
        func adapter(_ name: String) -> [Float] {
            let tensor = lora.first { $0.name == Self.key + name }!
            return MergePlan.floats(tensor.bytes, tensor.dtype)
        }
        // (weight, A, B, rank, transposed, tolerance relative to the largest magnitude)
        let cases: [(String, String, String, Int, Bool, Double)] = [
            ("enc.q.weight", "enc.q.lora_A.weight", "enc.q.lora_B.weight", 2, false, 1e-6),
            ("enc.v.weight", "enc.v.lora_A.weight", "enc.v.lora_B.weight", 2, false, 1.0 / 128),  // BF16: 7 mantissa bits
            ("enc.k.weight", "enc.k.lora_A.weight", "enc.k.lora_B.weight", 2, false, 1.0 / 512),  // F16 (and an F16 update)
            ("conv.weight", "conv.lora_A.weight", "conv.lora_B.weight", 3, false, 1e-6),
            ("emb.weight", "emb.lora_embedding_A", "emb.lora_embedding_B", 2, true, 1e-6),
        ]
        for (weight, a, b, rank, transposed, tolerance) in cases {
            let expected = Self.expectedMerge(
                weight: try values(weight, in: parent), a: adapter(a), b: adapter(b), rank: rank, scale: 4.0 / Double(rank),
                transposed: transposed)
            let got = try values(weight, in: merged)
            let largest = expected.map(abs).max()!
            let worst = zip(got, expected).map { abs(Double($0) - $1) }.max()!
            #expect(worst <= tolerance * largest, "\(weight): \(worst) against \(largest)")
            #expect(got != (try values(weight, in: parent)), "\(weight) unchanged")
        }
        // The head is the adapter's copy; the bias no LoRA targets is the parent's.
        #expect(try values("head.weight", in: merged) == adapter("head.weight"))
        #expect(try values("enc.q.bias", in: merged) == (try values("enc.q.bias", in: parent)))
        #expect(
            FileManager.default.contents(atPath: out + "/config.json")
                == FileManager.default.contents(atPath: test.directory.file("parent/config.json")))
    }

    @Test("a damaged blob, merged or copied, fails the merged export with nothing written", arguments: ["enc.q.weight", "enc.q.bias"])
    func damagedMerge(_ tensor: String) async throws {
        let test = try await Self.setup(inlineThreshold: 0)  // every tensor a blob file
        _ = try await Self.commit(test, try Self.writeAdapter(test.directory.file("adapter")))
        let digest = sha256Hex(Self.parentTensors.first { $0.name == tensor }!.bytes)
        let file = test.root + "/blobs/sha256/\(digest.prefix(2))/\(digest)"
        var bytes = Array(FileManager.default.contents(atPath: file)!)
        bytes[0] ^= 1
        try FileManager.default.removeItem(atPath: file)
        try writeFile(file, bytes)
        let out = test.directory.file("merged")
        do {
            try await test.registry.exportMerged(try Reference(parsing: "lora@1"), to: out)
            Issue.record("merged from a damaged \(tensor)")
        } catch {
            guard case .damagedBlob(let damaged, _) = error else { throw error }
            #expect(damaged.hex == digest)
        }
        #expect(!FileSystem.fileExists(out))
        #expect(try FileManager.default.contentsOfDirectory(atPath: test.directory.path).allSatisfy { !$0.hasPrefix(".merged") })
    }

    @Test("fan_in_fan_out merges into the transposed weight")
    func transposed() async throws {
        let parent = [Self.tensor("attn.c_attn.weight", [5, 6], seed: 1), Self.tensor("attn.c_attn.bias", [6], seed: 2)]
        let test = try await Self.setup(parent: parent)
        let lora = [
            Self.tensor(Self.key + "attn.c_attn.lora_A.weight", [2, 5], seed: 3),
            Self.tensor(Self.key + "attn.c_attn.lora_B.weight", [6, 2], seed: 4),
        ]
        var config = Self.loraConfig
        config["fan_in_fan_out"] = true
        config["use_rslora"] = true
        config["modules_to_save"] = NSNull()
        _ = try await Self.commit(test, try Self.writeAdapter(test.directory.file("adapter"), tensors: lora, config: config))
        let out = test.directory.file("merged")
        try await test.registry.exportMerged(try Reference(parsing: "lora@1"), to: out)
        let merged = try SafeTensorsReader(path: out + "/model.safetensors")
        let got = MergePlan.floats(try merged.data(of: merged.header.tensors.first { $0.name == "attn.c_attn.weight" }!), .f32)
        let expected = Self.expectedMerge(
            weight: MergePlan.floats(parent[0].bytes, .f32), a: MergePlan.floats(lora[0].bytes, .f32),
            b: MergePlan.floats(lora[1].bytes, .f32),
            rank: 2, scale: 4.0 / 2.0.squareRoot(), transposed: true)
        #expect(zip(got, expected).allSatisfy { abs(Double($0) - $1) <= 1e-6 * 4 })
    }

    @Test("under a prefix, and with a new head, the merged tensors take the adapter's names and a sharded index is rewritten")
    func prefixedAndSharded() async throws {
        let test = try await TestRegistry()
        let directory = test.directory.file("parent")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let body = Self.parentTensors.filter { !$0.name.hasPrefix("head.") }
        let shards = [Array(body.prefix(3)), Array(body.dropFirst(3))]
        var map: [String: String] = [:]
        for (index, shard) in shards.enumerated() {
            let name = "model-0000\(index + 1)-of-00002.safetensors"
            try SafeTensorsWriter.write(shard, metadata: ["format": "pt"], to: directory + "/" + name)
            for tensor in shard { map[tensor.name] = name }
        }
        try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 1], "weight_map": map])
            .write(to: URL(fileURLWithPath: directory + "/model.safetensors.index.json"))
        _ = try await test.registry.addBase(name: try ModelName("base"), directory: try DirectoryInput.open(directory))
        _ = try await test.registry.createStudent(name: try ModelName("lora"), from: try Reference(parsing: "base@1"), manifest: .adapter)
        // The task model names the base's tensors under `bert.` and brings its own head.
        let lora = Self.loraTensors(prefix: "bert.").map { tensor in
            var renamed = tensor
            renamed.name = renamed.name.replacingOccurrences(of: Self.key + "bert.head.", with: Self.key + "head.")
            return renamed
        }
        _ = try await Self.commit(test, try Self.writeAdapter(test.directory.file("adapter"), tensors: lora))
        let out = test.directory.file("merged")
        try await test.registry.exportMerged(try Reference(parsing: "lora@1"), to: out)
        let input = try DirectoryInput.open(out)  // the index checks out against the shards
        let names = Set(input.weights.header.tensors.map(\.name))
        #expect(names == Set(body.map { "bert." + $0.name } + ["head.weight", "head.bias"]))
        let index =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/model.safetensors.index.json")))
            as! [String: Any]
        let weightMap = index["weight_map"] as! [String: String]
        #expect(weightMap["bert.enc.q.weight"] == "model-00001-of-00002.safetensors")
        #expect(weightMap["head.weight"] == "model-00002-of-00002.safetensors")
    }

    @Test("a merged export refuses what a plain merge cannot reproduce, writing nothing")
    func mergeRefusals() async throws {
        let test = try await Self.setup()
        var config = Self.loraConfig
        config["use_dora"] = true
        _ = try await Self.commit(test, try Self.writeAdapter(test.directory.file("dora"), config: config))
        let out = test.directory.file("merged")
        for (reference, named) in [("lora@1", "DoRA"), ("base@1", "not an adapter")] {
            do {
                try await test.registry.exportMerged(try Reference(parsing: reference), to: out)
                Issue.record("\(reference) merged")
            } catch {
                guard case .cannotMerge(_, let reason) = error else { throw error }
                #expect(reason.contains(named), "\(reason)")
                #expect(error.kind.exitCode == 65)
            }
            #expect(!FileSystem.fileExists(out))
        }
    }

    // MARK: Like any student

    @Test("lineage shows the adapter mode; best ranks adapters under the base; advisories on the base flow to them; diff compares two")
    func likeAnyStudent() async throws {
        let test = try await Self.setup()
        let registry = test.registry
        _ = try await registry.createStudent(name: try ModelName("lora2"), from: try Reference(parsing: "base@1"), manifest: .adapter)
        _ = try await Self.commit(test, try Self.writeAdapter(test.directory.file("a1")))
        _ = try await Self.commit(test, try Self.writeAdapter(test.directory.file("a2"), tensors: Self.loraTensors(seed: 40)), to: "lora2")
        _ = try await registry.logMetrics(
            try Reference(parsing: "lora@1"), [try MetricAssignment(name: "accuracy", value: 0.6)], split: nil)
        _ = try await registry.logMetrics(
            try Reference(parsing: "lora2@1"), [try MetricAssignment(name: "accuracy", value: 0.8)], split: nil)
        let lineage = try await registry.lineage(try ModelName("base"), metric: nil, direction: nil, parts: .both)
        #expect(lineage.descendants.map(\.mode) == [.adapter, .adapter])
        #expect(lineage.dot.contains("(adapter)") && lineage.mermaid.contains("(adapter)") && lineage.tree.contains("(adapter)"))
        let best = try await registry.best(
            metric: "accuracy", direction: nil, split: nil, scope: .under(try ModelName("base")), includeFlagged: false)
        #expect(best.checkpoint.ref == "lora2@1")
        try await registry.addAdvisory(on: try Reference(parsing: "base@1"), id: "ADV-1", severity: .high, note: nil, url: nil)
        let affected = try await registry.affected(try Reference(parsing: "base@1"))
        #expect(Set(affected.map(\.model)).isSuperset(of: ["lora", "lora2"]))
        let diff = try await registry.diff(try Reference(parsing: "lora@1"), try Reference(parsing: "lora2@1"))
        #expect(diff.tensors.count == Self.loraTensors().count && diff.tensors.allSatisfy { $0.status == .changed })
    }
}
