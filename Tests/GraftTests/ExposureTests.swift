import Foundation
import GraftTestSupport
import SafeTensors
import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal

/// Exposure (issue 26): how much of a flagged ancestor each descendant still carries — digests
/// alone for the share and the frozen depth, blob pairs (cached) for the drift — exact across
/// generations, through a task model's prefix and under an adapter.
@Suite("exposure")
struct ExposureTests {
    typealias T = AdapterTests

    /// Four layers: three blocks (the last in BF16) and a head.
    static let base: [TensorData] = [
        T.tensor("blocks.0.weight", [8, 4], seed: 1), T.tensor("blocks.0.bias", [8], seed: 2),
        T.tensor("blocks.1.weight", [8, 8], seed: 3), T.tensor("blocks.2.weight", [8, 8], .bf16, seed: 4),
        T.tensor("head.weight", [3, 8], seed: 5),
    ]

    /// `base` with the named tensors' values moved by `step` × noise (the same dtype and shape).
    static func moved(_ tensors: [TensorData], _ names: Set<String>, step: Float, seed: UInt64, prefix: String = "") -> [TensorData] {
        tensors.map { tensor in
            var copy = tensor
            copy.name = prefix + tensor.name
            guard names.contains(tensor.name) else { return copy }
            let values = zip(MergePlan.floats(tensor.bytes, tensor.dtype), T.floats(tensor.bytes.count, seed: seed)).map { $0 + step * $1 }
            copy.bytes = MergePlan.bytes(values, tensor.dtype)
            return copy
        }
    }

    /// Σ(d − a)² and Σa² of two tensors as the reader sees their values.
    static func sums(_ a: TensorData, _ d: TensorData) -> (Double, Double) {
        zip(MergePlan.floats(a.bytes, a.dtype), MergePlan.floats(d.bytes, d.dtype)).reduce((0.0, 0.0)) { sum, pair in
            let (x, y) = (Double(pair.0), Double(pair.1))
            return (sum.0 + (y - x) * (y - x), sum.1 + x * x)
        }
    }

    static func relative(_ pairs: [(TensorData, TensorData)]) -> Double {
        let total = pairs.map { sums($0.0, $0.1) }.reduce((0.0, 0.0)) { ($0.0 + $1.0, $0.1 + $1.1) }
        return (total.0 / total.1).squareRoot()
    }

    static func bytes(_ tensors: [TensorData], _ names: Set<String>) -> Int {
        tensors.filter { names.contains($0.name) }.reduce(0) { $0 + $1.bytes.count }
    }

    /// base → fe (blocks frozen, head trained) → grand (blocks.0 frozen; blocks.1 and the head
    /// changed, blocks.2 committed unchanged), and a full fine-tune `full` of base.
    static func family(inlineThreshold: Int = 0) async throws -> (
        test: TestRegistry, fe: [TensorData], grand: [TensorData], full: [TensorData]
    ) {
        let test = try await TestRegistry(inlineThreshold: inlineThreshold)
        let (fe, grand, full) = try await build(test.registry, in: test.directory)
        return (test, fe, grand, full)
    }

    /// The family of ``family(inlineThreshold:)`` in any registry, its files written under `directory`.
    static func build(_ registry: Registry, in directory: TemporaryDirectory) async throws -> (
        fe: [TensorData], grand: [TensorData], full: [TensorData]
    ) {
        func write(_ name: String, _ tensors: [TensorData]) throws -> String {
            let path = directory.file(name + ".safetensors")
            try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: path)
            return path
        }
        _ = try await registry.addBase(name: try ModelName("base"), file: try write("base", base))
        _ = try await registry.createStudent(
            name: try ModelName("fe"), from: try Reference(parsing: "base@1"),
            manifest: .rules([ManifestRule(.freeze, "blocks")], freezeThrough: nil))
        let fe = moved(base, ["head.weight"], step: 0.5, seed: 50)
        _ = try await registry.addCheckpoint(model: try ModelName("fe"), file: try write("fe", fe))
        _ = try await registry.createStudent(
            name: try ModelName("grand"), from: try Reference(parsing: "fe@1"),
            manifest: .rules([ManifestRule(.freeze, "blocks.0")], freezeThrough: nil))
        let grand = moved(fe, ["blocks.1.weight", "head.weight"], step: 0.1, seed: 60)
        _ = try await registry.addCheckpoint(model: try ModelName("grand"), file: try write("grand", grand))
        _ = try await registry.createStudent(
            name: try ModelName("full"), from: try Reference(parsing: "base@1"), manifest: .rules([], freezeThrough: nil))
        let full = moved(base, Set(base.map(\.name)), step: 0.05, seed: 70)
        _ = try await registry.addCheckpoint(model: try ModelName("full"), file: try write("full", full))
        return (fe, grand, full)
    }

    @Test("exposure is the share of the ancestor's bytes held by digest, exact two generations down; frozen depth counts leading layers")
    func exactAcrossGenerations() async throws {
        let (test, fe, grand, full) = try await Self.family()
        let total = Self.bytes(Self.base, Set(Self.base.map(\.name)))
        let student = try await test.registry.exposure(of: try Reference(parsing: "fe"), to: try Reference(parsing: "base"))
        #expect(student.checkpoint == "fe@1" && student.ancestor == "base@1")
        #expect(student.heldBytes == total - Self.bytes(Self.base, ["head.weight"]) && student.ancestorBytes == total)
        #expect(student.exposure == Double(student.heldBytes) / Double(total))
        #expect(student.layers.map(\.name) == ["blocks.0", "blocks.1", "blocks.2", "head"])
        #expect(student.layers.map(\.identical) == [true, true, true, false])
        #expect(student.frozenDepth == 3)

        // Two generations down: blocks.0 (frozen) and blocks.2 (committed unchanged) are held.
        let grandchild = try await test.registry.exposure(of: try Reference(parsing: "grand@1"), to: try Reference(parsing: "base@1"))
        #expect(grandchild.heldBytes == Self.bytes(Self.base, ["blocks.0.weight", "blocks.0.bias", "blocks.2.weight"]))
        #expect(grandchild.layers.map(\.identical) == [true, false, true, false])
        #expect(grandchild.frozenDepth == 1, "leading layers only")
        // Drift per layer and over all, against the values computed here.
        let (b, g) = (
            Dictionary(uniqueKeysWithValues: Self.base.map { ($0.name, $0) }), Dictionary(uniqueKeysWithValues: grand.map { ($0.name, $0) })
        )
        let layer1 = try #require(grandchild.layers[1].drift)
        #expect(abs(layer1 - Self.relative([(b["blocks.1.weight"]!, g["blocks.1.weight"]!)])) < 1e-9)
        #expect(grandchild.layers[0].drift == 0 && grandchild.layers[2].drift == 0)
        let overall = try #require(grandchild.drift)
        #expect(abs(overall - Self.relative(Self.base.map { (b[$0.name]!, g[$0.name]!) })) < 1e-9)
        #expect(abs(try #require(student.layers[3].drift) - Self.relative([(b["head.weight"]!, fe.last!)])) < 1e-9)

        // A full fine-tune holds nothing; its drift still says how far it moved.
        let tuned = try await test.registry.exposure(of: try Reference(parsing: "full"), to: try Reference(parsing: "base"))
        #expect(tuned.exposure == 0 && tuned.heldBytes == 0 && tuned.frozenDepth == 0)
        let tunedByName = Dictionary(uniqueKeysWithValues: full.map { ($0.name, $0) })
        #expect(abs(try #require(tuned.drift) - Self.relative(Self.base.map { (b[$0.name]!, tunedByName[$0.name]!) })) < 1e-9)
    }

    @Test("digests alone read no tensor data: drift is 0 for identical layers, unknown for changed ones until measured, then cached")
    func driftIsCachedPerBlobPair() async throws {
        let (test, _, _, _) = try await Self.family()
        let (grand, base) = (try Reference(parsing: "grand"), try Reference(parsing: "base"))
        let quick = try await test.registry.exposure(of: grand, to: base, detail: .digests)
        #expect(quick.layers.map(\.drift) == [0, nil, 0, nil] && quick.drift == nil)
        // A descendant that moved nothing has drift 0 from digests alone.
        let frozen = try await test.registry.exposure(of: try Reference(parsing: "fe"), to: try Reference(parsing: "fe"), detail: .digests)
        #expect(frozen.drift == 0 && frozen.exposure == 1 && frozen.frozenDepth == frozen.layers.count)
        #expect(try test.rows("SELECT count(*) FROM tensor_drift") == 0, "digests only: nothing read, nothing cached")
        let measured = try await test.registry.exposure(of: grand, to: base, detail: .drift)
        #expect(measured.layers.allSatisfy { $0.drift != nil })
        #expect(try test.rows("SELECT count(*) FROM tensor_drift") == 5, "one row per blob pair, identical pairs included")
        // Cached: the digest-only answer is now the whole answer, and a damaged blob is not read again.
        let cached = try await test.registry.exposure(of: grand, to: base, detail: .digests)
        #expect(cached == measured)
        #expect(quick.exposure == measured.exposure && quick.frozenDepth == measured.frozenDepth)
        // gc drops the rows of blobs it removes (grand's changed blocks.1 and head), and keeps the rest.
        _ = try await test.registry.removeModel(try ModelName("grand"))
        _ = try await test.registry.gc(grace: 0)
        #expect(try test.rows("SELECT count(*) FROM tensor_drift") == 3)
    }

    @Test("a blob whose bytes no longer match its digest is damage, not a drift")
    func damagedBlob() async throws {
        let (test, _, grand, _) = try await Self.family()
        let digest = Digest.of(grand.first { $0.name == "blocks.1.weight" }!.bytes).hex
        let file = test.root + "/blobs/sha256/\(digest.prefix(2))/\(digest)"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file)))
        bytes[0] ^= 0xFF
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file)
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        let error = await expectGraftError("damagedBlob") {
            try await test.registry.exposure(of: try Reference(parsing: "grand"), to: try Reference(parsing: "base"))
        }
        #expect(error?.kind.exitCode == GraftError.damagedBlob(Digest.of([]), reason: "").kind.exitCode)
        #expect(try test.rows("SELECT count(*) FROM tensor_drift WHERE descendant_digest = '\(digest)'") == 0)
    }

    @Test("a tensor holding NaN has no drift: its layer and the whole are unmeasured, and nothing is cached for it")
    func notANumber() async throws {
        let test = try await TestRegistry(inlineThreshold: 0)
        var broken = Self.base
        broken[4].bytes = MergePlan.bytes([.nan] + MergePlan.floats(broken[4].bytes, .f32).dropFirst(), .f32)
        for (name, tensors) in [("base", Self.base), ("broken", broken)] {
            let path = test.directory.file(name + ".safetensors")
            try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: path)
            if name == "base" {
                _ = try await test.registry.addBase(name: try ModelName(name), file: path)
                _ = try await test.registry.createStudent(
                    name: try ModelName("broken"), from: try Reference(parsing: "base@1"), manifest: .rules([], freezeThrough: nil))
            } else {
                _ = try await test.registry.addCheckpoint(model: try ModelName(name), file: path)
            }
        }
        let measured = try await test.registry.exposure(of: try Reference(parsing: "broken"), to: try Reference(parsing: "base"))
        #expect(measured.layers.map(\.drift) == [0, 0, 0, nil] && measured.drift == nil)
        #expect(try test.rows("SELECT count(*) FROM tensor_drift") == 4)
        _ = try GraftJSON.encoder().encode(measured)
    }

    @Test("a task model's prefix (bert.) is found: the base's tensors are held under it")
    func prefixedTaskModel() async throws {
        let (test, _, _, _) = try await Self.family()
        _ = try await test.registry.createStudent(
            name: try ModelName("task"), from: try Reference(parsing: "base@1"),
            manifest: .rules([ManifestRule(.prefix, "bert."), ManifestRule(.freeze, "bert.blocks")], freezeThrough: nil))
        let tensors = Self.moved(Self.base, ["head.weight"], step: 1, seed: 80, prefix: "bert.")
        let path = test.directory.file("task.safetensors")
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: path)
        _ = try await test.registry.addCheckpoint(model: try ModelName("task"), file: path)
        let measured = try await test.registry.exposure(of: try Reference(parsing: "task"), to: try Reference(parsing: "base"))
        let total = Self.bytes(Self.base, Set(Self.base.map(\.name)))
        #expect(measured.heldBytes == total - Self.bytes(Self.base, ["head.weight"]))
        #expect(measured.frozenDepth == 3 && measured.layers.last?.drift != nil)
    }

    @Test("an adapter holds its parent's tensors; its pairs mark their layers adapted, with drift scale·‖BA‖ / ‖W‖")
    func adapter() async throws {
        let test = try await AdapterTests.setup()
        _ = try await AdapterTests.commit(test, try AdapterTests.writeAdapter(test.directory.file("adapter")))
        let measured = try await test.registry.exposure(of: try Reference(parsing: "lora@1"), to: try Reference(parsing: "base@1"))
        let parent = AdapterTests.parentTensors
        let head = Self.bytes(parent, ["head.weight", "head.bias"])
        #expect(measured.heldBytes == Self.bytes(parent, Set(parent.map(\.name))) - head, "modules_to_save replaces the head")
        let byName = Dictionary(uniqueKeysWithValues: measured.layers.map { ($0.name, $0) })
        #expect(["enc.q", "enc.k", "enc.v", "conv", "emb"].allSatisfy { byName[$0]?.adapted == true && byName[$0]?.identical == false })
        #expect(byName["head"]?.adapted == nil && byName["head"]?.identical == false)
        #expect(measured.frozenDepth == 0)
        // enc.q: A [2, 5], B [6, 2], scale alpha / r = 2; the bias is held and counts in ‖W‖.
        let lora = Dictionary(uniqueKeysWithValues: AdapterTests.loraTensors().map { ($0.name, MergePlan.floats($0.bytes, $0.dtype)) })
        let (a, b) = (lora[AdapterTests.key + "enc.q.lora_A.weight"]!, lora[AdapterTests.key + "enc.q.lora_B.weight"]!)
        var delta = 0.0
        for o in 0..<6 {
            for i in 0..<5 {
                let value = 2 * (0..<2).reduce(0.0) { $0 + Double(b[o * 2 + $1]) * Double(a[$1 * 5 + i]) }
                delta += value * value
            }
        }
        let w = parent.filter { $0.name.hasPrefix("enc.q.") }.flatMap { MergePlan.floats($0.bytes, $0.dtype) }
        let expected = (delta / w.reduce(0.0) { $0 + Double($1) * Double($1) }).squareRoot()
        #expect(abs(try #require(byName["enc.q"]?.drift) - expected) < 1e-6 * expected)
        // The conv's pair is at rank 3 by rank_pattern: scale 4/3, and its drift is there too.
        #expect(byName["conv"]?.drift != nil && byName["emb"]?.drift != nil)
    }

    @Test("affected carries each descendant's exposure to the flagged checkpoint on its path; none when not asked")
    func affectedCarriesExposure() async throws {
        let (test, _, _, _) = try await Self.family()
        try await test.registry.addAdvisory(on: try Reference(parsing: "base"), id: "ADV-9", severity: .high)
        let affected = try await test.registry.affected(try Reference(parsing: "base"), exposure: .drift)
        #expect(affected.map(\.model) == ["fe", "full", "grand"])
        for model in affected {
            let direct = try await test.registry.exposure(of: try Reference(parsing: model.model), to: try Reference(parsing: "base@1"))
            #expect(model.measured == direct.checkpoint && model.ancestor == "base@1")
            #expect(model.exposure == direct.exposure && model.frozenDepth == direct.frozenDepth && model.drift == direct.drift)
            #expect(model.layers == direct.layers)
        }
        let bare = try await test.registry.affected(try Reference(parsing: "base"), exposure: nil)
        #expect(bare.allSatisfy { $0.exposure == nil && $0.layers == nil && $0.drift == nil })
        // The JSON contract's keys.
        let json = String(decoding: try GraftJSON.encoder().encode(affected), as: UTF8.self)
        for key in ["\"exposure\":", "\"frozen_depth\":", "\"drift\":", "\"layers\":", "\"identical\":"] {
            #expect(json.contains(key), "\(key)")
        }
    }
}
