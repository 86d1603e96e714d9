// What `make results` and `make results-vulnerability` share: their options, how a student of
// the teacher is trained through the registry in each transfer mode, and the network each run is
// evaluated as.
import Foundation
public import Graft
import SafeTensors
public import Trainer

/// A command-line option's value (`--name VALUE`), or `fallback`.
public func option(_ name: String, _ fallback: String) -> String {
    let arguments = CommandLine.arguments
    return arguments.firstIndex(of: name).map { arguments[$0 + 1] } ?? fallback
}

/// The mean (NaN for none).
public func mean(_ values: [Double]) -> Double { values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count) }

/// The sample standard deviation (0 for fewer than two values).
public func sd(_ values: [Double]) -> Double {
    guard values.count > 1 else { return 0 }
    let m = mean(values)
    return (values.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(values.count - 1)).squareRoot()
}

/// How one run derives from the teacher: a transfer plan (a student of its manifest), an adapter
/// (LoRA pairs trained with Adam, as PEFT users train them), or neither (a base from scratch).
public struct Recipe: Sendable {
    public var key: String
    public var label: String
    public var plan: TransferPlan?
    public var adapter: AdapterSettings?
    /// SGD's rate (an adapter's Adam runs at 0.01).
    public var learningRate: Float

    public init(key: String, label: String, plan: TransferPlan? = nil, adapter: AdapterSettings? = nil, learningRate: Float = 0.03) {
        self.key = key
        self.label = label
        self.plan = plan
        self.adapter = adapter
        self.learningRate = learningRate
    }

    /// Trains the run `name` from `teacher` through `registry`, committing every epoch.
    public func train(
        _ name: ModelName, from teacher: Reference, in registry: Registry, data: Dataset, selection: DataSelection,
        settings: TrainingSettings, architecture: String, source: String
    ) async throws -> [EpochReport] {
        if let adapter {
            _ = try await Engine.deriveAdapter(name, from: teacher, in: registry)
            var adam = settings
            adam.optimizer = OptimizerSettings(kind: .adam, learningRate: 0.01)
            return try await Engine.trainAdapter(name, in: registry, data: data, selection: selection, settings: adam, adapter: adapter)
        }
        if let plan {
            _ = try await Engine.deriveStudent(name, from: teacher, plan: plan, in: registry)
            return try await Engine.trainStudent(name, in: registry, data: data, selection: selection, settings: settings)
        }
        return try await Engine.trainBase(
            name, architecture: architecture, in: registry, data: data, selection: selection, settings: settings,
            provenance: Provenance(source: source))
    }

    /// The network a checkpoint of this run is evaluated as: an adapter's is its adapter, so it is
    /// merged into the teacher (`graft export --merged`, to a scratch directory beside `scratch`).
    public func network(_ checkpoint: Reference, in registry: Registry, scratch: String) async throws -> Network {
        guard adapter != nil else { return try await Engine.load(checkpoint, from: registry) }
        let merged = scratch + "/../.merged-\(getpid())"
        try await registry.exportMerged(checkpoint, to: merged, overwrite: true)
        defer { try? FileManager.default.removeItem(atPath: merged) }
        let file = try MappedSafeTensors(path: merged + "/model.safetensors")
        let network = try Network(try Network.architecture(of: file), seed: 0)
        try network.load(from: file)
        return network
    }
}
