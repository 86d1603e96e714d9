import Foundation
public import GraftCore
import SafeTensors

/// How much of the parent a student derived by the engine trains.
public enum TransferPlan: Sendable, Equatable {
    /// Only the new head trains; every tensor of `features` is frozen.
    case featureExtraction
    /// The first `blocks` blocks of `features` are frozen (a block is a conv2d or linear
    /// layer with the layers up to the next one); the rest and the new head train.
    case freezeBlocks(Int)
    /// Everything trains, starting from the parent's weights; the head is new.
    case fullFinetune

    public var label: String {
        switch self {
        case .featureExtraction: "feature-extraction"
        case .freezeBlocks(let n): "freeze-\(n)"
        case .fullFinetune: "full-finetune"
        }
    }
}

/// The registry side of the engine: rebuild networks from checkpoints, derive students with
/// the exact per-tensor manifest the engine applies, train them committing every epoch.
public enum Engine {
    /// Restores a checkpoint into a network, as stored (head included).
    public static func load(_ reference: Reference, from registry: any RegistryAPI) async throws(TrainerError) -> Network {
        try await withCheckpoint(reference, registry) { file throws(TrainerError) in
            let network = try Network(try Network.architecture(of: file), seed: 0)
            try network.load(from: file)
            return network
        }
    }

    /// Opens a checkpoint in place (each tensor mapped from its blob, every blob rehashed
    /// first, as an export would) and hands it to `body`.
    static func withCheckpoint<R>(
        _ reference: Reference, _ registry: any RegistryAPI, _ body: (OpenCheckpoint) throws(TrainerError) -> R
    ) async throws(TrainerError) -> R {
        let checkpoint = try await graft { () async throws(GraftError) in try await registry.openCheckpoint(reference, verify: true) }
        return try body(checkpoint)
    }

    /// The per-tensor manifest of a plan over a network's tensors: the head `new`, and the
    /// frozen blocks' tensors (BatchNorm statistics included) `frozen`.
    public static func manifest(for plan: TransferPlan, network: Network) throws(TrainerError) -> [String: TensorState] {
        let blockStarts = network.features.indices.filter { network.features[$0] is Conv2d || network.features[$0] is Linear }
        let frozenLayers: Int
        switch plan {
        case .featureExtraction: frozenLayers = network.features.count
        case .fullFinetune: frozenLayers = 0
        case .freezeBlocks(let n):
            guard n >= 0, n <= blockStarts.count else {
                throw .configuration(
                    "the network has \(blockStarts.count) blocks (conv2d or linear layers) in `features`; cannot freeze \(n)")
            }
            frozenLayers = n == blockStarts.count ? network.features.count : blockStarts[n]
        }
        var states: [String: TensorState] = [:]
        for (index, (prefix, layer)) in network.layers.enumerated() {
            for entry in layer.state {
                let name = "\(prefix).\(entry.name)"
                if prefix == "classifier" {
                    states[name] = .new
                } else if index < frozenLayers {
                    states[name] = .frozen
                } else {
                    states[name] = .trainable
                }
            }
        }
        return states
    }

    /// Creates a student of `parent` whose manifest is exactly what `plan` trains.
    public static func deriveStudent(
        _ name: ModelName, from parent: Reference, plan: TransferPlan, in registry: any RegistryAPI, description: String? = nil
    ) async throws(TrainerError) -> StudentResult {
        let parentNetwork = try await load(parent, from: registry)
        let states = try manifest(for: plan, network: parentNetwork)
        return try await graft { () async throws(GraftError) in
            try await registry.createStudent(
                name: name, from: parent, relation: .finetune, manifest: .perTensor(states), description: description)
        }
    }

    /// Trains an existing student on `data` under its manifest, committing `NAME@N` with its
    /// metrics after every epoch. The parent's tensors are loaded as the manifest says
    /// (frozen and trainable ones); `new` ones are freshly initialised, the head sized for
    /// the selected classes.
    public static func trainStudent(
        _ name: ModelName, in registry: any RegistryAPI, data: Dataset, selection: DataSelection, settings: TrainingSettings,
        progress: (EpochReport) -> Void = { _ in }
    ) async throws(TrainerError) -> [EpochReport] {
        try settings.validate()
        let manifest: ManifestSummary
        guard let found = try await graft({ () async throws(GraftError) in try await registry.manifest(of: name) }) else {
            throw .configuration("\(name) is a base; train a student of it (graft student create), or train a new base with --scratch")
        }
        manifest = found
        let parent: Reference
        do { parent = try Reference(parsing: manifest.parent) } catch { throw .registry(error) }
        let (train, validation) = try selection.split(data)
        let network = try await withCheckpoint(parent, registry) { file throws(TrainerError) -> Network in
            var architecture = try Network.architecture(of: file)
            guard architecture.input == train.sampleShape else {
                throw .data("the parent takes samples of shape \(architecture.input); the data's are \(train.sampleShape)")
            }
            let parentClasses = architecture.classes
            architecture.classes = train.classes.count
            architecture.labels = train.classes
            let network = try Network(architecture, seed: settings.seed)
            let states = Dictionary(manifest.entries.map { ($0.name, $0.state) }, uniquingKeysWith: { a, _ in a })
            if let dropped = states.first(where: { $0.value == .dropped }) {
                throw .configuration(
                    "\(name) drops `\(dropped.key)`; the engine trains the parent's whole architecture, so it cannot drop tensors")
            }
            let names = Set(network.stateNames)
            if let stray = states.keys.sorted().first(where: { !names.contains($0) }) {
                throw .configuration("\(name)'s manifest names `\(stray)`, which this network does not have")
            }
            if parentClasses != architecture.classes,
                let kept = ["classifier.weight", "classifier.bias"].first(where: { states[$0] != .new })
            {
                throw .configuration(
                    """
                    \(name) keeps the parent's `\(kept)` (\(parentClasses) classes) but the data has \(architecture.classes); create\
                     the student with --reinit classifier
                    """
                )
            }
            let fresh = Set(names.filter { states[$0] == nil || states[$0] == .new })
            try network.load(from: file, skip: fresh)
            for (prefix, layer) in network.layers {
                for parameter in layer.parameters { parameter.frozen = states["\(prefix).\(parameter.name)"] == .frozen }
                if let norm = layer as? BatchNorm, !norm.allFrozen,
                    let frozenStat = ["running_mean", "running_var", "num_batches_tracked"].first(where: {
                        states["\(prefix).\($0)"] == .frozen
                    })
                {
                    throw .configuration(
                        """
                        \(prefix).\(frozenStat) is frozen but \(prefix)'s weights train; training moves the running statistics, so\
                         freeze or train the layer as a whole
                        """
                    )
                }
            }
            return network
        }
        return try await run(network: network, train: train, validation: validation, settings: settings, progress: progress) {
            input, report throws(TrainerError) in
            try await graft { () async throws(GraftError) in
                try await registry.addCheckpoint(
                    model: name, input: input, step: report.steps, epoch: report.epoch, metrics: report.metrics, split: nil, progress: nil)
            }
        }
    }

    /// Trains a new network from scratch and registers it as a base: epoch 1 registers
    /// `NAME@1` with `provenance`, later epochs commit `NAME@2…`, each with its metrics.
    public static func trainBase(
        _ name: ModelName, architecture spec: String, in registry: any RegistryAPI, data: Dataset, selection: DataSelection,
        settings: TrainingSettings, provenance: Provenance, progress: (EpochReport) -> Void = { _ in }
    ) async throws(TrainerError) -> [EpochReport] {
        try settings.validate()
        try await graft { () async throws(GraftError) in
            if try await registry.models().contains(where: { $0.name == name }) { throw .modelExists(name) }
        }
        let (train, validation) = try selection.split(data)
        let architecture = try Architecture(spec: spec, input: train.sampleShape, classes: train.classes.count, labels: train.classes)
        let network = try Network(architecture, seed: settings.seed)
        var provenance = provenance
        provenance.architecture = provenance.architecture ?? spec
        return try await run(network: network, train: train, validation: validation, settings: settings, progress: progress) {
            input, report throws(TrainerError) in
            try await graft { () async throws(GraftError) in
                if report.epoch == 1 {
                    let result = try await registry.addBase(name: name, input: input, provenance: provenance, progress: nil)
                    _ = try await registry.logMetrics(try Reference(parsing: result.checkpoint), report.metrics, split: nil)
                    return result
                }
                return try await registry.addCheckpoint(
                    model: name, input: input, step: report.steps, epoch: report.epoch, metrics: report.metrics, split: nil, progress: nil)
            }
        }
    }

    static func run(
        network: Network, train: Dataset, validation: Dataset, settings: TrainingSettings, progress: (EpochReport) -> Void,
        commit: (SafeTensorsMemory, EpochReport) async throws(TrainerError) -> ImportResult
    ) async throws(TrainerError) -> [EpochReport] {
        let loop = try TrainingLoop(network: network, settings: settings)
        var reports: [EpochReport] = []
        for _ in 0..<settings.epochs {
            var report = loop.epoch(train: train, validation: validation)
            guard report.trainLoss.isFinite else {
                throw .configuration("training diverged in epoch \(report.epoch) (loss is not finite); lower --lr")
            }
            // Committed from memory: the registry hashes and stores the state_dict as the file
            // `network.write` would have written, byte for byte, with no temporary file.
            let input: SafeTensorsMemory
            do { input = try SafeTensorsMemory(network.stateDict(), metadata: network.metadata(), origin: "epoch \(report.epoch)") } catch {
                throw .state("cannot lay out epoch \(report.epoch)'s checkpoint: \(error)")
            }
            let result = try await commit(input, report)
            report.checkpoint = result.checkpoint
            report.bytesStored = result.bytesStored
            report.logicalBytes = result.logicalBytes
            report.trainableParameters = network.trainableParameterCount
            reports.append(report)
            progress(report)
        }
        return reports
    }
}

/// Runs a registry call, wrapping its error.
func graft<R>(_ body: () async throws(GraftError) -> R) async throws(TrainerError) -> R {
    do { return try await body() } catch { throw .registry(error) }
}
