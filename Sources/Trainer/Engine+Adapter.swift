import Foundation
public import GraftCore
import SafeTensors

/// The engine's fourth transfer mode: LoRA on the parent's conv2d and linear layers.
public struct AdapterSettings: Sendable, Equatable {
    /// LoRA's rank r and alpha (the update is scaled by alpha / r). PEFT's defaults.
    public var rank: Int
    public var alpha: Double
    /// Layers to adapt, as names (`features.0`) or globs (`features.*`); empty: every conv2d and
    /// linear layer of `features`. The head is new and trains whole (PEFT's `modules_to_save`).
    public var targets: [String]

    public init(rank: Int = 8, alpha: Double = 8, targets: [String] = []) {
        (self.rank, self.alpha, self.targets) = (rank, alpha, targets)
    }
}

extension Engine {
    /// Creates an adapter student of `parent` (transfer mode `adapter`) after checking that
    /// the parent is a network the engine rebuilds.
    public static func deriveAdapter(
        _ name: ModelName, from parent: Reference, in registry: any RegistryAPI, description: String? = nil
    ) async throws(TrainerError) -> StudentResult {
        _ = try await load(parent, from: registry)
        return try await graft { () async throws(GraftError) in
            try await registry.createStudent(name: name, from: parent, relation: .adapter, manifest: .adapter, description: description)
        }
    }

    /// Trains an adapter student: the parent's network loaded whole and frozen, a LoRA pair of
    /// `adapter.rank` on each targeted conv2d and linear layer, a new head for the data's
    /// classes; only the pairs and the head train. Like every student's training, it starts from
    /// the parent (a second run trains a new adapter and commits the next checkpoints). Every
    /// epoch commits the PEFT directory
    /// (`adapter_model.safetensors` with `base_model.model.`-prefixed names and
    /// `adapter_config.json`), so the parent's tensors are never stored again.
    public static func trainAdapter(
        _ name: ModelName, in registry: any RegistryAPI, data: Dataset, selection: DataSelection, settings: TrainingSettings,
        adapter: AdapterSettings, progress: (EpochReport) -> Void = { _ in }
    ) async throws(TrainerError) -> [EpochReport] {
        try settings.validate()
        guard adapter.rank >= 1, adapter.rank <= 4096 else { throw .configuration("--rank must be 1 to 4096 (got \(adapter.rank))") }
        guard adapter.alpha.isFinite, adapter.alpha > 0 else { throw .configuration("--alpha must be a positive number") }
        guard let manifest = try await graft({ () async throws(GraftError) in try await registry.manifest(of: name) }),
            manifest.mode == .adapter
        else { throw .configuration("\(name) is not an adapter student (create it with --mode adapter)") }
        let parent: Reference
        do { parent = try Reference(parsing: manifest.parent) } catch { throw .registry(error) }
        let (train, validation) = try selection.split(data)
        let (network, targets) = try await withCheckpoint(parent, registry) { file throws(TrainerError) -> (Network, [String]) in
            var architecture = try Network.architecture(of: file)
            guard architecture.input == train.sampleShape else {
                throw .data("the parent takes samples of shape \(architecture.input); the data's are \(train.sampleShape)")
            }
            architecture.classes = train.classes.count
            architecture.labels = train.classes
            let network = try Network(architecture, seed: settings.seed)
            try network.load(from: file, skip: ["classifier.weight", "classifier.bias"])
            for (_, layer) in network.layers { for parameter in layer.parameters { parameter.frozen = true } }
            for parameter in network.classifier.parameters { parameter.frozen = false }
            let targets = try adapt(network, adapter, seed: settings.seed)
            return (network, targets)
        }
        let config = try adapterConfig(adapter, targets: targets, parent: manifest.parent)
        return try await run(network: network, train: train, validation: validation, settings: settings, progress: progress) {
            _, report throws(TrainerError) in
            let directory = try adapterDirectory(network, config: config, epoch: report.epoch)
            return try await graft { () async throws(GraftError) in
                try await registry.addCheckpoint(
                    model: name, directory: directory, step: report.steps, epoch: report.epoch, metrics: report.metrics, split: nil,
                    progress: nil)
            }
        }
    }

    /// Puts a LoRA pair on each targeted layer; returns their names (`features.0`).
    static func adapt(_ network: Network, _ adapter: AdapterSettings, seed: UInt64) throws(TrainerError) -> [String] {
        var generator = SeededGenerator(seed: seed &+ 0x4C6F_5241)
        var chosen: [String] = []
        var matched = Array(repeating: false, count: adapter.targets.count)
        for (prefix, layer) in network.layers where prefix != "classifier" {
            guard layer is Linear || layer is Conv2d else { continue }
            if !adapter.targets.isEmpty {
                let hits = adapter.targets.indices.filter {
                    Glob.matches(Array(adapter.targets[$0].unicodeScalars), Array(prefix.unicodeScalars))
                }
                guard !hits.isEmpty else { continue }
                for hit in hits { matched[hit] = true }
            }
            if let linear = layer as? Linear { linear.addLowRank(rank: adapter.rank, alpha: adapter.alpha, generator: &generator) }
            if let conv = layer as? Conv2d { conv.addLowRank(rank: adapter.rank, alpha: adapter.alpha, generator: &generator) }
            chosen.append(prefix)
        }
        if let unused = matched.firstIndex(of: false) {
            throw .configuration("--target \(adapter.targets[unused]) matches no conv2d or linear layer of `features`")
        }
        guard !chosen.isEmpty else { throw .configuration("the network has no conv2d or linear layer in `features` to adapt") }
        return chosen
    }

    /// `adapter_config.json` as PEFT writes it for these settings (keys sorted, the subset a
    /// LoRA needs; PEFT fills the rest with its defaults when it loads the file).
    static func adapterConfig(_ adapter: AdapterSettings, targets: [String], parent: String) throws(TrainerError) -> [UInt8] {
        let object: [String: Any] = [
            "peft_type": "LORA", "r": adapter.rank, "lora_alpha": adapter.alpha, "target_modules": targets,
            "modules_to_save": ["classifier"],
            "fan_in_fan_out": false, "use_rslora": false, "use_dora": false, "bias": "none", "lora_dropout": 0.0, "inference_mode": true,
            "init_lora_weights": true, "base_model_name_or_path": parent, "task_type": NSNull(),
        ]
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]) else {
            throw .state("cannot write the adapter's config")
        }
        return Array(data) + [UInt8(ascii: "\n")]
    }

    /// The epoch's PEFT directory, in memory: the pairs and the head under `base_model.model.`.
    static func adapterDirectory(_ network: Network, config: [UInt8], epoch: Int) throws(TrainerError) -> DirectoryInput {
        var tensors: [TensorData] = []
        func floats(_ name: String, _ parameter: Parameter) {
            tensors.append(
                TensorData(
                    name: AdapterConfig.keyPrefix + name, dtype: .f32, shape: parameter.shape,
                    bytes: parameter.value.withUnsafeBytes { [UInt8]($0) }))
        }
        for (prefix, layer) in network.layers {
            let pair = (layer as? Linear)?.lowRank ?? (layer as? Conv2d)?.lowRank
            if let pair {
                floats("\(prefix).lora_A.weight", pair.a)
                floats("\(prefix).lora_B.weight", pair.b)
            }
        }
        floats("classifier.weight", network.classifier.weight)
        floats("classifier.bias", network.classifier.bias)
        do {
            // The student's architecture (its classes and labels) rides in the adapter's metadata:
            // a merged export takes it over the parent's, so the merged network rebuilds as trained.
            let weights = try SafeTensorsMemory(tensors, metadata: network.metadata(), origin: "epoch \(epoch)'s adapter")
            let files = try SafeTensorsMemory(
                [TensorData(name: AdapterConfig.fileName, dtype: .u8, shape: [config.count], bytes: config)],
                origin: "epoch \(epoch)'s config")
            return DirectoryInput(
                origin: "epoch \(epoch)'s adapter", weights: weights,
                shards: [
                    DirectoryInput.Shard(path: "adapter_model.safetensors", headerBytes: weights.headerBytes, tensorCount: tensors.count)
                ],
                files: files)
        } catch { throw .state("cannot lay out epoch \(epoch)'s adapter: \(error)") }
    }
}
