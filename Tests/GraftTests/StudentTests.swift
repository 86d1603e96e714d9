import Foundation
import GraftTestSupport
import SafeTensors
import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal
@testable import GraftSQLite

private func entry(_ name: String, _ parameters: Int = 4) -> TensorEntry {
    TensorEntry(
        name: name, dtype: .f32, shape: [parameters], parameters: parameters, bytes: parameters * 4, digest: Digest.of(Array(name.utf8)))
}

private let cnn = [
    "features.0.weight", "features.0.bias", "features.1.running_mean", "features.2.weight", "features.10.weight",
    "encoderx.weight", "classifier.weight", "classifier.bias",
].map { entry($0) }

private func states(_ declaration: ManifestDeclaration) throws -> [String: TensorState] {
    Dictionary(uniqueKeysWithValues: try ManifestResolver.resolve(declaration, parent: cnn).map { ($0.name, $0.state) })
}

@Suite("Manifest resolution")
struct ManifestTests {
    @Test("a bare prefix matches whole components only; uncovered tensors are trainable")
    func prefixes() throws {
        let s = try states(.rules([ManifestRule(.freeze, "features")], freezeThrough: nil))
        #expect(s["features.10.weight"] == .frozen && s["features.0.bias"] == .frozen)
        #expect(s["classifier.weight"] == .trainable && s["encoderx.weight"] == .trainable)
        let e = try states(.rules([ManifestRule(.freeze, "encoder*")], freezeThrough: nil))
        #expect(e["encoderx.weight"] == .frozen && e["features.0.weight"] == .trainable)
    }

    @Test("--freeze-through is numeric-aware: features.2 is before features.10")
    func freezeThrough() throws {
        let s = try states(.rules([], freezeThrough: "features.2"))
        #expect(s["features.0.weight"] == .frozen && s["features.1.running_mean"] == .frozen && s["features.2.weight"] == .frozen)
        #expect(s["features.10.weight"] == .trainable)
        #expect(s["classifier.weight"] == .trainable)
    }

    @Test("--freeze-through also takes torchvision's layerN naming")
    func freezeThroughResNet() throws {
        let resnet = [
            "conv1.weight", "layer1.0.conv1.weight", "layer2.1.bn1.running_mean", "layer3.0.conv2.weight", "layer4.1.conv1.weight",
            "layer10.x", "fc.weight",
        ].map { entry($0) }
        let resolved = try ManifestResolver.resolve(.rules([ManifestRule(.freeze, "conv1")], freezeThrough: "layer3"), parent: resnet)
        let s = Dictionary(uniqueKeysWithValues: resolved.map { ($0.name, $0.state) })
        #expect(
            s["conv1.weight"] == .frozen && s["layer1.0.conv1.weight"] == .frozen && s["layer2.1.bn1.running_mean"] == .frozen
                && s["layer3.0.conv2.weight"] == .frozen)
        #expect(s["layer4.1.conv1.weight"] == .trainable && s["layer10.x"] == .trainable && s["fc.weight"] == .trainable)
    }

    @Test("overlap: the most specific pattern wins; on a tie drop beats train beats freeze")
    func overlap() throws {
        let s = try states(.rules([ManifestRule(.freeze, "features"), ManifestRule(.train, "features.10")], freezeThrough: nil))
        #expect(s["features.10.weight"] == .trainable && s["features.2.weight"] == .frozen)
        let t = try states(.rules([ManifestRule(.train, "features.1")], freezeThrough: "features.10"))
        #expect(t["features.1.running_mean"] == .trainable, "a named layer beats the broader freeze-through")
        #expect(t["features.10.weight"] == .frozen)
        let tie = try states(
            .rules(
                [ManifestRule(.freeze, "classifier"), ManifestRule(.drop, "classifier"), ManifestRule(.train, "classifier")],
                freezeThrough: nil))
        #expect(tie["classifier.bias"] == .dropped)
    }

    @Test("a rule that matches nothing, or a freeze-through without a number, is an error")
    func errors() {
        #expect { try states(.rules([ManifestRule(.freeze, "feature")], freezeThrough: nil)) } throws: { error in
            if case GraftError.patternMatchesNothing(let rule) = error { rule.contains("feature") } else { false }
        }
        #expect { try states(.rules([], freezeThrough: "features")) } throws: { error in
            if case GraftError.invalidManifest = error { true } else { false }
        }
        #expect { try states(.rules([], freezeThrough: "nothing.3")) } throws: { error in
            if case GraftError.patternMatchesNothing = error { true } else { false }
        }
    }

    @Test("per-tensor declarations: unnamed parent tensors train, absent names must be new, a parent's `new` tensor is re-initialised")
    func perTensor() throws {
        let resolved = try ManifestResolver.resolve(
            .perTensor(["features.0.weight": .frozen, "head.weight": .new, "classifier.bias": .new]), parent: cnn)
        #expect(resolved.first { $0.name == "head.weight" }?.state == .new)
        #expect(resolved.first { $0.name == "features.0.bias" }?.state == .trainable)
        let reinit = try #require(resolved.first { $0.name == "classifier.bias" })
        #expect(reinit.state == .new && reinit.parentDigest == nil && reinit.shape == nil)
        #expect { try ManifestResolver.resolve(.perTensor(["nope": .frozen]), parent: cnn) } throws: { caseName($0) == "invalidManifest" }
    }

    @Test("--reinit marks the parent's tensors new; drop beats reinit beats train on a tie")
    func reinitRules() throws {
        let s = try states(.rules([ManifestRule(.reinit, "classifier"), ManifestRule(.freeze, "features")], freezeThrough: nil))
        #expect(s["classifier.weight"] == .new && s["classifier.bias"] == .new && s["features.0.weight"] == .frozen)
        let tie = try states(
            .rules(
                [ManifestRule(.reinit, "classifier"), ManifestRule(.train, "classifier"), ManifestRule(.drop, "classifier.bias")],
                freezeThrough: nil))
        #expect(tie["classifier.weight"] == .new && tie["classifier.bias"] == .dropped)
        #expect(
            ManifestResolver.mode(
                of: try ManifestResolver.resolve(
                    .rules([ManifestRule(.reinit, "classifier"), ManifestRule(.freeze, "*")], freezeThrough: nil), parent: cnn))
                == .featureExtraction)
    }

    @Test("the transfer mode follows from the manifest")
    func modes() throws {
        func mode(_ declaration: ManifestDeclaration) throws -> TransferMode {
            ManifestResolver.mode(of: try ManifestResolver.resolve(declaration, parent: cnn))
        }
        #expect(
            try mode(.rules([ManifestRule(.freeze, "*"), ManifestRule(.drop, "classifier")], freezeThrough: nil)) == .featureExtraction)
        #expect(try mode(.rules([ManifestRule(.freeze, "features")], freezeThrough: nil)) == .partialFinetune)
        #expect(try mode(.rules([], freezeThrough: nil)) == .fullFinetune)
    }
}

/// Writes a variant of the base: `change` edits tensors by name.
private func variant(_ test: TestRegistry, _ name: String, _ change: (inout [TensorData]) -> Void) throws -> String {
    var tensors = baseTensors(seed: 1)
    change(&tensors)
    let path = test.directory.file(name)
    try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: path)
    return path
}

private func modify(_ tensors: inout [TensorData], _ name: String) {
    let index = tensors.firstIndex { $0.name == name }!
    tensors[index].bytes[0] ^= 0xFF
}

@Suite("Students and enforced manifests")
struct StudentTests {
    func setup() async throws -> TestRegistry {
        let test = try await TestRegistry()
        _ = try await test.registry.addBase(name: ModelName("cnn"), file: try test.writeBase())
        return test
    }

    @Test("a feature-extraction student costs only its head")
    func featureExtraction() async throws {
        let test = try await setup()
        let student = try await test.registry.createStudent(
            name: ModelName("cnn-fe"), from: Reference(parsing: "cnn@1"),
            manifest: .rules([ManifestRule(.freeze, "features"), ManifestRule(.drop, "classifier")], freezeThrough: nil))
        #expect(student.manifest.mode == .featureExtraction)
        #expect(student.manifest.parent == "cnn@1")
        var generator = SeededGenerator(seed: 99)
        let head = TensorData(name: "head.weight", dtype: .f32, shape: [3, 512], bytes: generator.bytes(3 * 512 * 4))
        let path = try variant(test, "fe.safetensors") { tensors in
            tensors.removeAll { $0.name.hasPrefix("classifier") }
            tensors.append(head)
        }
        let result = try await test.registry.addCheckpoint(model: ModelName("cnn-fe"), file: path, step: 100, epoch: 1)
        #expect(result.checkpoint == "cnn-fe@1")
        #expect(result.bytesStored == head.bytes.count)
        #expect(result.newTensors == ["head.weight"])
        let manifest = try #require(try await test.registry.manifest(of: ModelName("cnn-fe")))
        #expect(manifest.entries.first { $0.name == "head.weight" }?.state == .new)
        #expect(manifest.count(.new).parameters == 3 * 512)
        let second = try await test.registry.addCheckpoint(model: ModelName("cnn-fe"), file: path)
        #expect(second.checkpoint == "cnn-fe@2" && second.bytesStored == 0)
        let detail = try await test.registry.model(ModelName("cnn-fe"))
        #expect(detail.model.kind == "student")
        #expect(detail.checkpoints.first?.step == 100)
    }

    @Test("a change to a BatchNorm buffer alone in a frozen layer refuses the commit and writes nothing")
    func batchNormDrift() async throws {
        let test = try await setup()
        _ = try await test.registry.createStudent(
            name: ModelName("s"), from: Reference(parsing: "cnn"), manifest: .rules([], freezeThrough: "features.4"))
        let good = try variant(test, "good.safetensors") { modify(&$0, "classifier.weight") }
        _ = try await test.registry.addCheckpoint(model: ModelName("s"), file: good)
        let filesBefore = test.storedFiles
        let checkpointsBefore = try test.rows("SELECT count(*) FROM checkpoints")
        let bad = try variant(test, "bad.safetensors") { tensors in
            modify(&tensors, "features.1.running_mean")
            modify(&tensors, "features.10.weight")  // trainable: may change
        }
        await #expect { _ = try await test.registry.addCheckpoint(model: ModelName("s"), file: bad) } throws: { error in
            guard case GraftError.manifestViolation(_, let violations) = error else { return false }
            return violations.count == 1 && violations[0].description.hasPrefix("features.1.running_mean: frozen, but changed (sha256:")
        }
        #expect(test.storedFiles == filesBefore, "no blob or temp file written")
        #expect(try test.rows("SELECT count(*) FROM checkpoints") == checkpointsBefore)
    }

    @Test("a frozen int64 buffer (num_batches_tracked) changed alone refuses the commit, remotely too")
    func frozenInt64Drift() async throws {
        let test = try await setup()
        _ = try await test.registry.createStudent(
            name: ModelName("s"), from: Reference(parsing: "cnn"), manifest: .rules([], freezeThrough: "features.4"))
        let checkpointsBefore = try test.rows("SELECT count(*) FROM checkpoints")
        let bad = try variant(test, "counter.safetensors") { tensors in
            let index = tensors.firstIndex { $0.name == "features.1.num_batches_tracked" }!
            #expect(tensors[index].dtype == .i64)
            tensors[index].bytes[0] &+= 1  // one more batch counted: an int64, inline-sized
        }
        await #expect { _ = try await test.registry.addCheckpoint(model: ModelName("s"), file: bad) } throws: { error in
            guard case GraftError.manifestViolation(_, let violations) = error else { return false }
            return violations.count == 1
                && violations[0].description.hasPrefix("features.1.num_batches_tracked: frozen, but changed (sha256:")
        }
        // The upload protocol checks it from the proposal's digest alone, before any data moves.
        let proposal = try UploadProposal.of(try SafeTensorsReader(path: bad))
        await #expect { _ = try await test.registry.planUpload(to: ModelName("s"), base: false, proposal) } throws: { error in
            guard case GraftError.manifestViolation(_, let violations) = error else { return false }
            return violations.map(\.tensor) == ["features.1.num_batches_tracked"]
        }
        #expect(try test.rows("SELECT count(*) FROM checkpoints") == checkpointsBefore)
    }

    @Test("dropped tensors must be absent, kept ones present, frozen ones keep their dtype and shape")
    func otherViolations() async throws {
        let test = try await setup()
        _ = try await test.registry.createStudent(
            name: ModelName("s"), from: Reference(parsing: "cnn"),
            manifest: .rules([ManifestRule(.drop, "classifier.bias"), ManifestRule(.freeze, "features.0")], freezeThrough: nil))
        let path = try variant(test, "v.safetensors") { tensors in
            tensors.removeAll { $0.name == "features.4.weight" }
            let index = tensors.firstIndex { $0.name == "features.0.bias" }!
            tensors[index] = TensorData(name: "features.0.bias", dtype: .f16, shape: [32], bytes: tensors[index].bytes)
        }
        await #expect { _ = try await test.registry.addCheckpoint(model: ModelName("s"), file: path) } throws: { error in
            guard case GraftError.manifestViolation(_, let violations) = error else { return false }
            return Set(violations.map(\.description)) == [
                "classifier.bias: dropped, but present", "features.4.weight: trainable, but missing",
                "features.0.bias: frozen, but its type changed (F32 [16] → F16 [32])",
            ]
        }
    }

    @Test("students of students: three generations, each resolved against its own parent")
    func generations() async throws {
        let test = try await setup()
        _ = try await test.registry.createStudent(
            name: ModelName("g1"), from: Reference(parsing: "cnn"),
            manifest: .rules([ManifestRule(.freeze, "features")], freezeThrough: nil))
        let g1 = try variant(test, "g1.safetensors") { modify(&$0, "classifier.weight") }
        _ = try await test.registry.addCheckpoint(model: ModelName("g1"), file: g1)
        let g2 = try await test.registry.createStudent(
            name: ModelName("g2"), from: Reference(parsing: "g1@1"), relation: .distillation,
            manifest: .rules([ManifestRule(.freeze, "classifier")], freezeThrough: nil))
        #expect(g2.manifest.parent == "g1@1" && g2.manifest.relation == .distillation)
        // g2 freezes the classifier as g1 changed it: g1's version passes, the base's does not.
        _ = try await test.registry.addCheckpoint(model: ModelName("g2"), file: g1)
        let refused = await expectGraftError("manifestViolation") {
            _ = try await test.registry.addCheckpoint(model: ModelName("g2"), file: try test.writeBase("orig.safetensors"))
        }
        #expect(refused?.description.contains("classifier.weight: frozen, but changed") == true, "\(String(describing: refused))")
        #expect(try await test.registry.checkpoints(of: ModelName("g2")).count == 1, "nothing written")
    }

    @Test("a base takes more checkpoints with no manifest to enforce")
    func baseCheckpoints() async throws {
        let test = try await setup()
        let path = try variant(test, "v.safetensors") { modify(&$0, "features.0.weight") }
        #expect(try await test.registry.addCheckpoint(model: ModelName("cnn"), file: path).checkpoint == "cnn@2")
        #expect(try await test.registry.manifest(of: ModelName("cnn")) == nil)
    }

    @Test("creating a student refuses a taken name, a missing parent and a bad rule, writing nothing")
    func createErrors() async throws {
        let test = try await setup()
        await expectGraftError("modelExists") {
            _ = try await test.registry.createStudent(
                name: ModelName("cnn"), from: Reference(parsing: "cnn"), manifest: .rules([], freezeThrough: nil))
        }
        await #expect {
            _ = try await test.registry.createStudent(
                name: ModelName("s"), from: Reference(parsing: "cnn@5"), manifest: .rules([], freezeThrough: nil))
        } throws: { error in
            if case GraftError.checkpointNotFound = error { true } else { false }
        }
        await expectGraftError("patternMatchesNothing") {
            _ = try await test.registry.createStudent(
                name: ModelName("s"), from: Reference(parsing: "cnn"), manifest: .rules([ManifestRule(.freeze, "zzz")], freezeThrough: nil))
        }
        #expect(try test.rows("SELECT count(*) FROM models") == 1)
        #expect(try test.rows("SELECT count(*) FROM manifest_entries") == 0)
    }
}

@Suite("Aliases and diffs")
struct AliasDiffTests {
    @Test("tag, resolve NAME@ALIAS, move atomically, untag")
    func aliases() async throws {
        let test = try await TestRegistry()
        _ = try await test.registry.addBase(name: ModelName("cnn"), file: try test.writeBase())
        _ = try await test.registry.addCheckpoint(model: ModelName("cnn"), file: try test.writeBase("b2.safetensors", seed: 2))
        let first = try await test.registry.tag(Reference(parsing: "cnn@1"), alias: "production")
        #expect(first.alias == "cnn@production" && first.checkpoint == "cnn@1" && first.previous == nil)
        #expect(try await test.registry.checkpoint(Reference(parsing: "cnn@production")).checkpoint.ref == "cnn@1")
        let moved = try await test.registry.tag(Reference(parsing: "cnn@2"), alias: "production")
        #expect(moved.previous == "cnn@1")
        #expect(try await test.registry.checkpoint(Reference(parsing: "cnn@production")).checkpoint.ref == "cnn@2")
        #expect(try await test.registry.model(ModelName("cnn")).aliases == ["production": "cnn@2"])
        try await test.registry.untag(model: ModelName("cnn"), alias: "production")
        await #expect { _ = try await test.registry.checkpoint(Reference(parsing: "cnn@production")) } throws: { error in
            if case GraftError.aliasNotFound = error { true } else { false }
        }
        await expectGraftError("aliasNotFound") { try await test.registry.untag(model: ModelName("cnn"), alias: "production") }
        for bad in ["12", "latest", "a/b", ".x"] {
            await expectGraftError("invalidName") { _ = try await test.registry.tag(Reference(parsing: "cnn@1"), alias: bad) }
        }
    }

    @Test("diff reports same, changed, added and removed tensors, by layer")
    func diff() async throws {
        let test = try await TestRegistry()
        _ = try await test.registry.addBase(name: ModelName("a"), file: try test.writeBase())
        let path = try variant(test, "b.safetensors") { tensors in
            modify(&tensors, "features.0.weight")
            tensors.removeAll { $0.name == "classifier.bias" }
            tensors.append(TensorData(name: "head.weight", dtype: .f32, shape: [1], bytes: [0, 0, 0, 0]))
        }
        _ = try await test.registry.addBase(name: ModelName("b"), file: path)
        let result = try await test.registry.diff(Reference(parsing: "a"), Reference(parsing: "b@1"))
        let status = Dictionary(uniqueKeysWithValues: result.tensors.map { ($0.name, $0.status) })
        #expect(status["features.0.weight"] == .changed && status["features.0.bias"] == .same)
        #expect(status["classifier.bias"] == .removed && status["head.weight"] == .added)
        #expect(
            result.layers.first { $0.layer == "features.0" } == LayerDiff(layer: "features.0", same: 1, changed: 1, added: 0, removed: 0))
    }
}
