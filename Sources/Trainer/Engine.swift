import Foundation
public import GraftCore
import SafeTensors

#if canImport(Glibc)
    import Glibc
#endif

/// How a training run is set up.
public struct TrainingSettings: Sendable, Equatable {
    public var epochs: Int
    public var batchSize: Int
    public var optimizer: OptimizerSettings
    /// Seeds initialisation, shuffling and dropout.
    public var seed: UInt64
    /// Learning-rate multipliers by tensor pattern (a name, a layer prefix or a glob); the
    /// last matching pattern wins.
    public var learningRateScales: [(pattern: String, scale: Float)]

    public init(
        epochs: Int = 5, batchSize: Int = 64, optimizer: OptimizerSettings = OptimizerSettings(), seed: UInt64 = 0,
        learningRateScales: [(pattern: String, scale: Float)] = []
    ) {
        self.epochs = epochs
        self.batchSize = batchSize
        self.optimizer = optimizer
        self.seed = seed
        self.learningRateScales = learningRateScales
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.epochs == b.epochs && a.batchSize == b.batchSize && a.optimizer == b.optimizer && a.seed == b.seed
            && a.learningRateScales.map(\.pattern) == b.learningRateScales.map(\.pattern)
            && a.learningRateScales.map(\.scale) == b.learningRateScales.map(\.scale)
    }

    func validate() throws(TrainerError) {
        guard epochs >= 1 else { throw .configuration("--epochs must be at least 1") }
        guard batchSize >= 1 else { throw .configuration("--batch-size must be at least 1") }
        guard optimizer.learningRate > 0, optimizer.learningRate.isFinite else { throw .configuration("--lr must be a positive number") }
        guard optimizer.momentum >= 0, optimizer.momentum < 1 else { throw .configuration("--momentum must be in [0, 1)") }
        guard optimizer.weightDecay >= 0 else { throw .configuration("--weight-decay must be ≥ 0") }
        for (pattern, scale) in learningRateScales where !(scale >= 0 && scale.isFinite) {
            throw .configuration("--lr-scale \(pattern)=\(scale): the scale must be a finite number ≥ 0")
        }
    }
}

/// What one epoch did.
public struct EpochReport: Sendable, Codable, Equatable {
    public var epoch: Int
    /// Optimiser steps so far.
    public var steps: Int
    public var trainLoss: Double
    public var trainAccuracy: Double
    public var validationLoss: Double
    public var validationAccuracy: Double
    /// Training samples per second (forward, backward and update).
    public var samplesPerSecond: Double
    /// Wall time of the epoch: training and validation.
    public var seconds: Double
    /// The checkpoint committed for the epoch, `NAME@N`.
    public var checkpoint: String?
    public var bytesStored: Int?
    public var logicalBytes: Int?
    /// Parameters the optimiser updates.
    public var trainableParameters: Int = 0

    /// The metrics recorded with the epoch's checkpoint.
    public var metrics: [MetricAssignment] {
        [
            ("val/accuracy", validationAccuracy), ("val/loss", validationLoss), ("train/loss", trainLoss),
            ("train/accuracy", trainAccuracy), ("train/samples_per_s", samplesPerSecond), ("train/epoch_seconds", seconds),
        ].compactMap { try? MetricAssignment(name: $0.0, value: $0.1) }
    }
}

/// Trains a network on a dataset, epoch by epoch. Layers before the network's frozen prefix
/// are run once per dataset and their outputs reused (feature extraction's speed).
public final class TrainingLoop {
    public let network: Network
    public let settings: TrainingSettings
    let optimizer: Optimizer
    private var generator: SeededGenerator
    private var cachedTrain: Dataset?
    private var cachedValidation: Dataset?
    public private(set) var steps = 0
    public private(set) var epochs = 0
    /// Seconds spent computing the frozen prefix's outputs (once per dataset).
    public private(set) var cacheSeconds = 0.0
    /// How many datasets the frozen prefix has been run over: two (training and validation)
    /// however many epochs, when the prefix is not empty.
    public private(set) var prefixPasses = 0

    public init(network: Network, settings: TrainingSettings) throws(TrainerError) {
        try settings.validate()
        self.network = network
        self.settings = settings
        optimizer = Optimizer(settings.optimizer)
        generator = SeededGenerator(seed: settings.seed &+ 1)
        for (name, parameter) in network.namedParameters {
            for (pattern, scale) in settings.learningRateScales where tensorPattern(pattern, matches: name) {
                parameter.learningRateScale = scale
            }
        }
        for (pattern, _) in settings.learningRateScales
        where !network.namedParameters.contains(where: { tensorPattern(pattern, matches: $0.name) }) {
            throw .configuration("--lr-scale \(pattern) matches no tensor of the network")
        }
    }

    /// Runs the frozen prefix over a dataset, in inference mode, in chunks.
    func prefixOutputs(_ data: Dataset, prefix: Int) -> Dataset {
        guard prefix > 0, data.count > 0 else { return data }
        prefixPasses += 1
        var features: [Float] = []
        var shape: [Int] = []
        var start = 0
        while start < data.count {
            let end = min(start + 512, data.count)
            let (batch, _) = data.batch(Array(start..<end)[...])
            let out = network.forward(batch, training: false, to: prefix)
            shape = Array(out.shape.dropFirst())
            features.append(contentsOf: out.data)
            start = end
        }
        return Dataset(sampleShape: shape, features: features, labels: data.labels, classes: data.classes)
    }

    /// Trains one epoch over `train` and evaluates on `validation`. A loop trains on one
    /// dataset: the frozen prefix's outputs for the first call's datasets are reused after.
    public func epoch(train: Dataset, validation: Dataset) -> EpochReport {
        let started = monotonicSeconds()
        let prefix = network.frozenPrefix
        if cachedTrain == nil {
            let cacheStart = monotonicSeconds()
            cachedTrain = prefixOutputs(train, prefix: prefix)
            cachedValidation = prefixOutputs(validation, prefix: prefix)
            cacheSeconds = monotonicSeconds() - cacheStart
        }
        let trainSet = cachedTrain!, validationSet = cachedValidation!
        var order = Array(0..<trainSet.count)
        order.shuffle(using: &generator)
        var lossSum = 0.0, correct = 0
        let trainStart = monotonicSeconds()
        let parameters = network.namedParameters.map(\.parameter)
        var start = 0
        while start < order.count {
            let end = min(start + settings.batchSize, order.count)
            let (batch, labels) = trainSet.batch(order[start..<end])
            let logits = network.forward(batch, training: true, from: prefix)
            let (loss, gradient, right) = SoftmaxCrossEntropy.evaluate(logits: logits, labels: labels)
            lossSum += Double(loss) * Double(end - start)
            correct += right
            network.backward(gradient, downTo: prefix)
            optimizer.step(parameters)
            steps += 1
            start = end
        }
        let trainSeconds = monotonicSeconds() - trainStart
        let (validationLoss, validationAccuracy) = evaluate(validationSet, from: prefix)
        epochs += 1
        return EpochReport(
            epoch: epochs, steps: steps, trainLoss: lossSum / Double(max(order.count, 1)),
            trainAccuracy: Double(correct) / Double(max(order.count, 1)),
            validationLoss: validationLoss, validationAccuracy: validationAccuracy,
            samplesPerSecond: Double(order.count) / max(trainSeconds, 1e-9), seconds: monotonicSeconds() - started)
    }

    /// Mean loss and accuracy in inference mode; `from` skips layers already applied.
    public func evaluate(_ data: Dataset, from start: Int = 0) -> (loss: Double, accuracy: Double) {
        guard data.count > 0 else { return (.nan, .nan) }
        var lossSum = 0.0, correct = 0
        var index = 0
        while index < data.count {
            let end = min(index + 512, data.count)
            let (batch, labels) = data.batch(Array(index..<end)[...])
            let logits = network.forward(batch, training: false, from: start)
            let (loss, _, right) = SoftmaxCrossEntropy.evaluate(logits: logits, labels: labels)
            lossSum += Double(loss) * Double(end - index)
            correct += right
            index = end
        }
        return (lossSum / Double(data.count), Double(correct) / Double(data.count))
    }
}

/// Monotonic seconds.
func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// A tensor name matches a pattern as in manifests: equal, under it as a layer prefix, or by glob.
func tensorPattern(_ pattern: String, matches name: String) -> Bool {
    if pattern.contains(where: { "*?[".contains($0) }) { return fnmatch(pattern, name, 0) == 0 }
    return name == pattern || name.hasPrefix(pattern + ".")
}
