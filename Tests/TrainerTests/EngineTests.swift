import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Testing

@testable import Trainer

/// Fashion-MNIST's 10,000 test images (Debian's dataset-fashion-mnist, installed by `make test`),
/// loaded once. Missing, each test that needs it fails with this message; the rest still run.
private let loadedFashion = Result { try Dataset.load(fashionDirectory, test: true) }
let fashionDirectory = ProcessInfo.processInfo.environment["GRAFT_FASHION_MNIST"] ?? "/usr/share/datasets/fashion-mnist"
var fashion: Dataset {
    get throws {
        try loadedFashion.mapError { HelperError("Fashion-MNIST is missing (\($0)); `make test` installs Debian's dataset-fashion-mnist") }
            .get()
    }
}

private let tiny = "conv:4:3,bn,relu,pool:2,conv:4:3,bn,relu,pool:2,flatten,linear:8,relu"

private func tensors(_ reference: String, _ registry: Registry, in directory: TemporaryDirectory) async throws -> [String: [UInt8]] {
    let path = directory.file(reference.replacingOccurrences(of: "@", with: "-") + ".safetensors")
    _ = try await registry.export(try Reference(parsing: reference), to: path)
    let file = try MappedSafeTensors(path: path)
    return Dictionary(uniqueKeysWithValues: file.header.tensors.map { info in (info.name, file.withData(of: info) { Array($0) }) })
}

private func teacher(_ registry: Registry, _ name: String = "teacher") async throws -> ModelName {
    let model = try ModelName(name)
    _ = try await Engine.trainBase(
        model, architecture: tiny, in: registry, data: try fashion,
        selection: DataSelection(classes: Array(0...4), perClass: 30, validationPerClass: 10),
        settings: TrainingSettings(epochs: 1, batchSize: 16), provenance: Provenance(license: "mit"))
    return model
}

@Suite("Training engine")
struct EngineTests {
    @Test("a small network learns a slice of Fashion-MNIST (5 classes, 300 images each) to ≥ 75% validation accuracy")
    func learns() throws {
        let (train, validation) = try DataSelection(classes: Array(0...4), perClass: 300, validationPerClass: 100, seed: 1).split(
            try fashion)
        let network = try Network(try Architecture(spec: "mlp", input: train.sampleShape, classes: 5), seed: 1)
        let loop = try TrainingLoop(
            network: network,
            settings: TrainingSettings(epochs: 4, batchSize: 32, optimizer: OptimizerSettings(kind: .adam, learningRate: 0.002)))
        var last: EpochReport? = nil
        for _ in 0..<4 { last = loop.epoch(train: train, validation: validation) }
        let report = try #require(last)
        #expect(report.validationAccuracy >= 0.75, "val/accuracy \(report.validationAccuracy)")
        #expect(report.trainLoss < 1.0)
        // Chance is 20%: the untrained network must be far below what it learned.
        let untrained = try TrainingLoop(network: try Network(network.architecture, seed: 1), settings: TrainingSettings())
        #expect(untrained.evaluate(validation).accuracy < 0.5)
    }

    @Test("SGD with momentum learns too")
    func sgd() throws {
        let (train, validation) = try DataSelection(classes: [1, 8], perClass: 100, validationPerClass: 50, seed: 2).split(try fashion)
        let network = try Network(try Architecture(spec: "flatten,linear:16,relu", input: train.sampleShape, classes: 2), seed: 2)
        let loop = try TrainingLoop(
            network: network,
            settings: TrainingSettings(epochs: 3, batchSize: 16, optimizer: OptimizerSettings(kind: .sgd, learningRate: 0.05)))
        var accuracy = 0.0
        for _ in 0..<3 { accuracy = loop.epoch(train: train, validation: validation).validationAccuracy }
        #expect(accuracy >= 0.9, "trouser vs bag: \(accuracy)")
    }

    @Test("a committed checkpoint loads back into the engine and predicts exactly the same; names follow PyTorch's state_dict")
    func roundTrip() async throws {
        let directory = TemporaryDirectory()
        let registry = try await Registry.create(at: directory.file("registry")).registry
        let (train, validation) = try DataSelection(classes: Array(0...4), perClass: 20, validationPerClass: 10).split(try fashion)
        let network = try Network(
            try Architecture(spec: tiny + ",dropout:0.2", input: train.sampleShape, classes: 5, labels: Array(0...4)), seed: 3)
        let loop = try TrainingLoop(network: network, settings: TrainingSettings(epochs: 1, batchSize: 8))
        _ = loop.epoch(train: train, validation: validation)
        try network.write(to: directory.file("net.safetensors"))
        _ = try await registry.addBase(name: try ModelName("net"), file: directory.file("net.safetensors"))
        let loaded = try await Engine.load(try Reference(parsing: "net@1"), from: registry)
        #expect(loaded.architecture == network.architecture)
        let (batch, _) = validation.batch(Array(0..<validation.count)[...])
        #expect(loaded.forward(batch, training: false).data == network.forward(batch, training: false).data)
        let stored = try await tensors("net@1", registry, in: directory)
        #expect(Set(stored.keys) == Set(network.stateNames))
        for name in [
            "features.0.weight", "features.1.running_mean", "features.1.num_batches_tracked", "features.9.weight", "classifier.weight",
            "classifier.bias",
        ] {
            #expect(stored[name] != nil, "\(name)")
        }
        // num_batches_tracked is an int64 scalar, as in PyTorch: one per optimiser step.
        let tracked = stored["features.1.num_batches_tracked"]!.withUnsafeBytes { $0.loadUnaligned(as: Int64.self) }
        #expect(tracked == Int64(loop.steps))
    }

    @Test("a checkpoint reads in the reference safetensors package with exactly PyTorch's state_dict keys, dtypes and shapes for cnn-small")
    func pytorchLayout() throws {
        let directory = TemporaryDirectory()
        let network = try Network(try Architecture(spec: "cnn-small", input: [1, 28, 28], classes: 5), seed: 1)
        try network.write(to: directory.file("cnn.safetensors"))
        let output = try ReferencePython.run(["read", directory.file("cnn.safetensors")])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        let tensors = try #require(json["tensors"] as? [[String: Any]])
        var found: [String: (String, [Int])] = [:]
        for tensor in tensors { found[tensor["name"] as! String] = (tensor["dtype"] as! String, tensor["shape"] as! [Int]) }
        // What `nn.Sequential(Conv2d(1,8,3,padding=1), BatchNorm2d(8), ReLU(), MaxPool2d(2), Conv2d(8,16,3,padding=1),
        // BatchNorm2d(16), ReLU(), MaxPool2d(2), Flatten(), Linear(784,64), ReLU())` as `features` and
        // `Linear(64,5)` as `classifier` put in their state_dict.
        func norm(_ index: Int, _ channels: Int) -> [String: (String, [Int])] {
            [
                "features.\(index).weight": ("F32", [channels]), "features.\(index).bias": ("F32", [channels]),
                "features.\(index).running_mean": ("F32", [channels]), "features.\(index).running_var": ("F32", [channels]),
                "features.\(index).num_batches_tracked": ("I64", []),
            ]
        }
        var expected: [String: (String, [Int])] = [
            "features.0.weight": ("F32", [8, 1, 3, 3]), "features.0.bias": ("F32", [8]),
            "features.4.weight": ("F32", [16, 8, 3, 3]), "features.4.bias": ("F32", [16]),
            "features.9.weight": ("F32", [64, 784]), "features.9.bias": ("F32", [64]),
            "classifier.weight": ("F32", [5, 64]), "classifier.bias": ("F32", [5]),
        ]
        expected.merge(norm(1, 8)) { a, _ in a }
        expected.merge(norm(5, 16)) { a, _ in a }
        #expect(Set(found.keys) == Set(expected.keys))
        for (name, (dtype, shape)) in expected { #expect(found[name]?.0 == dtype && found[name]?.1 == shape, "\(name)") }
        let metadata = try #require(json["metadata"] as? [String: String])
        #expect(metadata["format"] == "pt")
        #expect(try Architecture(json: try #require(metadata[Architecture.metadataKey])) == network.architecture)
    }

    @Test("frozen layers, BatchNorm statistics included, stay bit-identical through training; trainable ones move")
    func frozenStay() async throws {
        let directory = TemporaryDirectory()
        let registry = try await Registry.create(at: directory.file("registry")).registry
        let base = try await teacher(registry)
        let student = try ModelName("partial")
        let created = try await Engine.deriveStudent(
            student, from: try Reference(parsing: "teacher@1"), plan: .freezeBlocks(1), in: registry)
        #expect(created.manifest.mode == .partialFinetune)
        let reports = try await Engine.trainStudent(
            student, in: registry, data: try fashion, selection: DataSelection(classes: Array(5...9), perClass: 30, validationPerClass: 10),
            settings: TrainingSettings(epochs: 2, batchSize: 16))
        #expect(reports.map(\.checkpoint) == ["partial@1", "partial@2"])
        let parent = try await tensors("\(base)@1", registry, in: directory)
        let after = try await tensors("partial@2", registry, in: directory)
        for name in [
            "features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias", "features.1.running_mean",
            "features.1.running_var", "features.1.num_batches_tracked",
        ] {
            #expect(after[name] == parent[name], "\(name) is frozen")
        }
        for name in ["features.4.weight", "features.5.running_mean", "features.5.num_batches_tracked", "features.9.weight"] {
            #expect(after[name] != parent[name], "\(name) trains")
        }
        // Frozen tensors are the parent's blobs: each checkpoint stores less than its size.
        for report in reports { #expect(report.bytesStored! < report.logicalBytes!) }
        let metrics = try await registry.metrics(try Reference(parsing: "partial@2"))
        let names = Set(metrics.checkpoints.flatMap(\.metrics).map(\.name))
        #expect(names.isSuperset(of: ["val/accuracy", "val/loss", "train/loss", "train/samples_per_s", "train/epoch_seconds"]))
    }

    @Test("feature extraction trains only the head, on features computed once")
    func featureExtraction() async throws {
        let directory = TemporaryDirectory()
        let registry = try await Registry.create(at: directory.file("registry")).registry
        _ = try await teacher(registry)
        let created = try await Engine.deriveStudent(
            try ModelName("fe"), from: try Reference(parsing: "teacher@1"), plan: .featureExtraction, in: registry)
        #expect(created.manifest.mode == .featureExtraction)
        #expect(created.manifest.count(.trainable).tensors == 0 && created.manifest.count(.new).tensors == 2)
        let reports = try await Engine.trainStudent(
            try ModelName("fe"), in: registry, data: try fashion,
            selection: DataSelection(classes: [5, 7, 9], perClass: 20, validationPerClass: 10),
            settings: TrainingSettings(epochs: 2, batchSize: 16))
        #expect(reports.allSatisfy { $0.trainableParameters == 8 * 3 + 3 })
        let network = try await Engine.load(try Reference(parsing: "fe@2"), from: registry)
        #expect(network.architecture.classes == 3 && network.architecture.labels == [5, 7, 9])
        let parent = try await tensors("teacher@1", registry, in: directory)
        let first = try await tensors("fe@1", registry, in: directory)
        let after = try await tensors("fe@2", registry, in: directory)
        for (name, bytes) in parent where !name.hasPrefix("classifier") { #expect(after[name] == bytes, "\(name)") }
        // The head is new (the teacher's had 5 classes) and it moved between the epochs.
        #expect(after["classifier.weight"]?.count == 3 * 8 * 4 && parent["classifier.weight"]?.count == 5 * 8 * 4)
        #expect(after["classifier.weight"] != first["classifier.weight"] && after["classifier.bias"] != first["classifier.bias"])
    }

    @Test("adapter mode trains LoRA pairs and a new head, commits PEFT directories, and its merged export predicts as it trained")
    func adapter() async throws {
        let directory = TemporaryDirectory()
        let registry = try await Registry.create(at: directory.file("registry")).registry
        _ = try await teacher(registry)
        let parentBefore = try await tensors("teacher@1", registry, in: directory)
        let created = try await Engine.deriveAdapter(try ModelName("lora"), from: try Reference(parsing: "teacher@1"), in: registry)
        #expect(created.manifest.mode == .adapter)
        let selection = DataSelection(classes: Array(5...9), perClass: 30, validationPerClass: 10)
        let settings = TrainingSettings(epochs: 2, batchSize: 16, optimizer: OptimizerSettings(kind: .adam, learningRate: 0.01))
        let reports = try await Engine.trainAdapter(
            try ModelName("lora"), in: registry, data: try fashion, selection: selection, settings: settings,
            adapter: AdapterSettings(rank: 2, alpha: 4))
        #expect(reports.map(\.checkpoint) == ["lora@1", "lora@2"])
        // conv 4←1 (3×3), conv 4←4 (3×3), linear 8←16·… : A and B per layer at rank 2, plus the head.
        let network = try await Engine.load(try Reference(parsing: "teacher@1"), from: registry)
        let adapted = network.layers.filter { $0.prefix != "classifier" && ($0.layer is Linear || $0.layer is Conv2d) }
        let pairs = adapted.reduce(0) { total, entry in
            let shape = entry.layer.parameters[0].shape
            return total + 2 * shape.dropFirst().reduce(1, *) + shape[0] * 2
        }
        #expect(reports.allSatisfy { $0.trainableParameters == pairs + 5 * 8 + 5 })
        let detail = try await registry.checkpoint(try Reference(parsing: "lora@2"))
        #expect(detail.files.map(\.path) == ["adapter_config.json", "adapter_model.safetensors"])
        let exported = directory.file("adapter")
        _ = try await registry.export(try Reference(parsing: "lora@2"), to: exported)
        let file = try MappedSafeTensors(path: exported + "/adapter_model.safetensors")
        #expect(
            Set(file.header.tensors.map(\.name))
                == Set(
                    adapted.flatMap { ["base_model.model.\($0.prefix).lora_A.weight", "base_model.model.\($0.prefix).lora_B.weight"] }
                        + ["base_model.model.classifier.weight", "base_model.model.classifier.bias"]))
        // The parent is untouched, and no checkpoint stored a byte of it again.
        #expect(try await tensors("teacher@1", registry, in: TemporaryDirectory()) == parentBefore)
        for report in reports { #expect(report.bytesStored! <= report.logicalBytes! && report.logicalBytes! < 32 * 1024) }
        // Merged: the parent with W + scale·B·A and the trained head, which predicts as the adapter did.
        let merged = directory.file("merged")
        try await registry.exportMerged(try Reference(parsing: "lora@2"), to: merged)
        let mergedFile = try MappedSafeTensors(path: merged + "/model.safetensors")
        let rebuilt = try Network(try Network.architecture(of: mergedFile), seed: 0)
        try rebuilt.load(from: mergedFile)
        // The student's architecture (its classes and their labels) came with the adapter, not the teacher's.
        #expect(rebuilt.architecture.labels == Array(5...9))
        let (_, validation) = try selection.split(try fashion)
        let loop = try TrainingLoop(network: rebuilt, settings: settings)
        let (loss, accuracy) = loop.evaluate(validation)
        #expect(accuracy == reports.last!.validationAccuracy)
        #expect(abs(loss - reports.last!.validationLoss) < 1e-4)
        // Training it again starts a new adapter from the parent, as for any student: the next checkpoints.
        var once = settings
        once.epochs = 1
        let again = try await Engine.trainAdapter(
            try ModelName("lora"), in: registry, data: try fashion, selection: selection, settings: once,
            adapter: AdapterSettings(rank: 3, alpha: 3, targets: ["features.0"]))
        #expect(again.map(\.checkpoint) == ["lora@3"])
        #expect(try await registry.checkpoint(try Reference(parsing: "lora@3")).checkpoint.tensorCount == 4)
    }

    @Test("a frozen prefix runs once per dataset, not once per epoch, and its parameters do not move")
    func prefixOnce() throws {
        let (train, validation) = try DataSelection(classes: [0, 1, 2], perClass: 20, validationPerClass: 10, seed: 4).split(try fashion)
        let network = try Network(try Architecture(spec: tiny, input: train.sampleShape, classes: 3), seed: 4)
        for (name, parameter) in network.namedParameters where !name.hasPrefix("classifier") { parameter.frozen = true }
        #expect(network.frozenPrefix == network.features.count)
        let frozenBefore = network.namedParameters.filter { !$0.name.hasPrefix("classifier") }.map { $0.parameter.value }
        let headBefore = network.namedParameters.filter { $0.name.hasPrefix("classifier") }.map { $0.parameter.value }
        let loop = try TrainingLoop(network: network, settings: TrainingSettings(epochs: 3, batchSize: 8))
        for _ in 0..<3 { _ = loop.epoch(train: train, validation: validation) }
        #expect(loop.prefixPasses == 2, "training and validation sets, once each over 3 epochs")
        #expect(network.namedParameters.filter { !$0.name.hasPrefix("classifier") }.map { $0.parameter.value } == frozenBefore)
        #expect(network.namedParameters.filter { $0.name.hasPrefix("classifier") }.map { $0.parameter.value } != headBefore)
        // Nothing frozen: nothing cached, the whole network runs every step.
        let open = try TrainingLoop(
            network: try Network(network.architecture, seed: 4), settings: TrainingSettings(epochs: 1, batchSize: 8))
        _ = open.epoch(train: train, validation: validation)
        #expect(open.prefixPasses == 0)
    }

    @Test("bad setups are refused before training, and nothing is committed")
    func refusals() async throws {
        let directory = TemporaryDirectory()
        let registry = try await Registry.create(at: directory.file("registry")).registry
        _ = try await teacher(registry)
        let selection = DataSelection(classes: Array(5...7), perClass: 10, validationPerClass: 5)
        func expectRefused(_ name: String, _ message: String) async throws {
            await #expect {
                try await Engine.trainStudent(
                    try ModelName(name), in: registry, data: try fashion, selection: selection, settings: TrainingSettings(epochs: 1))
            } throws: {
                "\($0)".contains(message)
            }
            if name != "teacher" { #expect(try await registry.checkpoints(of: try ModelName(name)).isEmpty) }
        }
        try await expectRefused("teacher", "is a base")
        let parent = try Reference(parsing: "teacher@1")
        // A rule-made student that keeps the 5-class head for 3 classes.
        _ = try await registry.createStudent(
            name: try ModelName("keeps-head"), from: parent, manifest: .rules([ManifestRule(.freeze, "features.0")], freezeThrough: nil))
        try await expectRefused("keeps-head", "--reinit classifier")
        _ = try await registry.createStudent(
            name: try ModelName("stats-frozen"), from: parent,
            manifest: .rules([ManifestRule(.freeze, "features.1.running_mean"), ManifestRule(.reinit, "classifier")], freezeThrough: nil))
        try await expectRefused("stats-frozen", "freeze or train the layer as a whole")
        _ = try await registry.createStudent(
            name: try ModelName("drops"), from: parent,
            manifest: .rules([ManifestRule(.drop, "features.9"), ManifestRule(.reinit, "classifier")], freezeThrough: nil))
        try await expectRefused("drops", "cannot drop")
        // Data of another shape than the parent takes.
        _ = try await registry.createStudent(
            name: try ModelName("ok"), from: parent, manifest: .rules([ManifestRule(.reinit, "classifier")], freezeThrough: nil))
        let vectors = Dataset(sampleShape: [4], features: (0..<80).map(Float.init), labels: (0..<20).map { $0 % 2 }, classes: [0, 1])
        await #expect {
            try await Engine.trainStudent(
                try ModelName("ok"), in: registry, data: vectors, selection: DataSelection(), settings: TrainingSettings(epochs: 1))
        } throws: {
            "\($0)".contains("shape")
        }
        // A base name that is taken is refused before any training.
        await #expect { try await teacher(registry) } throws: { "\($0)".contains("exists") }
        await #expect { try await Engine.deriveStudent(try ModelName("x"), from: parent, plan: .freezeBlocks(9), in: registry) } throws: {
            "\($0)".contains("blocks")
        }
        #expect(throws: TrainerError.self) { try TrainingSettings(epochs: 0).validate() }
        #expect(throws: TrainerError.self) { try Architecture(spec: "conv:4:3,linear:2", input: [1, 28, 28], classes: 2) }
        #expect(throws: TrainerError.self) { try Architecture(spec: "conv:4:40", input: [1, 28, 28], classes: 2) }
        #expect(throws: TrainerError.self) { try Architecture(spec: "warp:3", input: [1, 28, 28], classes: 2) }
    }
}
