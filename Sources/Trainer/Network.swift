import Foundation
import GraftCore
public import SafeTensors

/// A feed-forward classifier: `features.0 … features.N` then the head `classifier`.
public final class Network {
    public private(set) var architecture: Architecture
    public let features: [any Layer]
    public let classifier: Linear
    /// Each layer with its `state_dict` prefix, head last.
    public let layers: [(prefix: String, layer: any Layer)]

    /// Builds the network with freshly initialised parameters (seeded).
    public init(_ architecture: Architecture, seed: UInt64) throws(TrainerError) {
        guard !architecture.input.isEmpty, architecture.input.allSatisfy({ $0 > 0 }) else {
            throw .architecture("the input shape \(architecture.input) is not a shape")
        }
        guard architecture.classes >= 2 else { throw .architecture("a classifier needs at least 2 classes, not \(architecture.classes)") }
        self.architecture = architecture
        var generator = SeededGenerator(seed: seed &+ 0x9E37_79B9_7F4A_7C15)
        var shape = architecture.input
        var built: [any Layer] = []
        for (index, spec) in architecture.features.enumerated() {
            let layer: any Layer
            switch spec.type {
            case "conv2d":
                guard shape.count == 3, let out = spec.out, let kernel = spec.kernel else {
                    throw .architecture("features.\(index): conv2d needs [C, H, W] input, out and kernel")
                }
                layer = Conv2d(
                    inChannels: shape[0], outChannels: out, kernel: kernel, stride: spec.stride ?? 1, padding: spec.padding ?? 0,
                    generator: &generator)
            case "batchnorm2d": layer = BatchNorm(channels: shape[0], spatial: true)
            case "batchnorm1d": layer = BatchNorm(channels: shape[0], spatial: false)
            case "relu": layer = ReLU()
            case "maxpool2d":
                guard let kernel = spec.kernel else { throw .architecture("features.\(index): maxpool2d needs a kernel") }
                layer = MaxPool2d(kernel: kernel)
            case "flatten": layer = Flatten()
            case "linear":
                guard let out = spec.out else { throw .architecture("features.\(index): linear needs out") }
                layer = Linear(inputs: shape.reduce(1, *), outputs: out, generator: &generator)
            case "dropout": layer = Dropout(probability: Float(spec.p ?? 0.5), seed: seed &+ UInt64(index))
            default: throw .architecture("features.\(index): unknown layer type `\(spec.type)`")
            }
            do { shape = try layer.outputShape(shape) } catch { throw .architecture("features.\(index): \(error)") }
            built.append(layer)
        }
        guard shape.count == 1 else { throw .architecture("the features end in shape \(shape); add flatten before the head") }
        features = built
        classifier = Linear(inputs: shape[0], outputs: architecture.classes, generator: &generator)
        layers = built.enumerated().map { ("features.\($0)", $1) } + [("classifier", classifier)]
    }

    /// Every trainable tensor, with its full name.
    public var namedParameters: [(name: String, parameter: Parameter)] {
        layers.flatMap { prefix, layer in layer.parameters.map { ("\(prefix).\($0.name)", $0) } }
    }

    public var parameterCount: Int { namedParameters.reduce(0) { $0 + $1.parameter.value.count } }
    public var trainableParameterCount: Int { namedParameters.filter { !$0.parameter.frozen }.reduce(0) { $0 + $1.parameter.value.count } }

    /// Layers before this index are fixed functions of the input: each is frozen (inference
    /// mode) or parameter-free and deterministic (Dropout ends the prefix). The engine
    /// computes their output once per dataset.
    public var frozenPrefix: Int {
        var index = 0
        for (_, layer) in layers {
            if layer.parameters.isEmpty ? layer is Dropout : !layer.allFrozen { break }
            index += 1
        }
        return index
    }

    /// Runs layers `start..<end` (all by default). Frozen layers below the first trainable one
    /// run in inference mode; a frozen layer above it (an adapter's unadapted linear layer) keeps
    /// what the backward pass through it needs (a frozen BatchNorm still uses its running statistics).
    public func forward(_ input: Tensor, training: Bool, from start: Int = 0, to end: Int? = nil) -> Tensor {
        var x = input
        let lowest = layers.indices.first { layers[$0].layer.parameters.contains { !$0.frozen } } ?? layers.count
        for index in start..<(end ?? layers.count) {
            let layer = layers[index].layer
            x = layer.forward(x, training: training && (index > lowest || !layer.allFrozen))
        }
        return x
    }

    /// Backpropagates dLoss/dLogits down to layer `start`, filling parameter gradients.
    public func backward(_ gradient: Tensor, downTo start: Int = 0) {
        var g = gradient
        let lowest =
            layers.indices.first { index in index >= start && layers[index].layer.parameters.contains { !$0.frozen } } ?? layers.count
        var index = layers.count - 1
        while index >= lowest {
            guard let next = layers[index].layer.backward(g, inputGradient: index > lowest) else { break }
            g = next
            index -= 1
        }
    }

    /// Class predictions for a batch, in inference mode.
    public func predict(_ input: Tensor) -> [Int] {
        let logits = forward(input, training: false)
        let k = logits.sampleSize
        return (0..<logits.batch).map { row in
            var best = 0
            for j in 1..<k where logits.data[row * k + j] > logits.data[row * k + best] { best = j }
            return best
        }
    }

    // MARK: state_dict

    /// The PyTorch-style `state_dict` as safetensors tensors: F32, with BatchNorm's
    /// `num_batches_tracked` as an I64 scalar.
    public func stateDict() -> [TensorData] {
        layers.flatMap { prefix, layer in
            layer.state.map { entry -> TensorData in
                let name = "\(prefix).\(entry.name)"
                switch entry.value {
                case .floats(let floats):
                    return TensorData(name: name, dtype: .f32, shape: entry.shape, bytes: floats.withUnsafeBytes { Array($0) })
                case .count(let count):
                    return TensorData(
                        name: name, dtype: .i64, shape: entry.shape, bytes: withUnsafeBytes(of: count.littleEndian) { Array($0) })
                }
            }
        }
    }

    /// The full names of every `state_dict` entry.
    public var stateNames: [String] { layers.flatMap { prefix, layer in layer.state.map { "\(prefix).\($0.name)" } } }

    /// The safetensors metadata of a checkpoint of this network.
    public func metadata(_ extra: [String: String] = [:]) -> [String: String] {
        extra.merging(["format": "pt", Architecture.metadataKey: architecture.json]) { _, ours in ours }
    }

    /// Writes the network as a safetensors file.
    public func write(to path: String, metadata extra: [String: String] = [:]) throws(TrainerError) {
        do { try SafeTensorsWriter.write(stateDict(), metadata: metadata(extra), to: path) } catch {
            throw .state("cannot write \(path): \(error)")
        }
    }

    /// Restores the named `state_dict` entries from a safetensors file; `skip` names entries
    /// to leave as initialised. Every other entry of the network must be in the file, with its shape.
    public func load(from file: some SafeTensorsSource, skip: Set<String> = []) throws(TrainerError) {
        let byName = Dictionary(file.header.tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for (prefix, layer) in layers {
            for entry in layer.state {
                let name = "\(prefix).\(entry.name)"
                if skip.contains(name) { continue }
                guard let info = byName[name] else { throw .state("`\(name)` is missing from \(file.origin)") }
                guard info.shape == entry.shape else {
                    throw .state("`\(name)` is \(info.shape) in the file, \(entry.shape) in the network")
                }
                let value: StateValue
                switch (entry.value, info.dtype) {
                case (.floats, .f32):
                    value = .floats(file.withData(of: info) { raw in [Float](raw.bindMemory(to: Float.self)) })
                case (.count, .i64):
                    value = .count(file.withData(of: info) { raw in Int64(littleEndian: raw.loadUnaligned(as: Int64.self)) })
                default:
                    throw .state("`\(name)` is \(info.dtype.rawValue); the engine trains float32 (counts int64)")
                }
                try layer.load(entry.name, value)
            }
        }
    }

    /// Reads the architecture stored in a checkpoint file.
    public static func architecture(of file: some SafeTensorsSource) throws(TrainerError) -> Architecture {
        guard let json = file.header.metadataDictionary[Architecture.metadataKey] else {
            throw .architecture("\(file.origin) has no `\(Architecture.metadataKey)` metadata: the engine rebuilds only networks it wrote")
        }
        return try Architecture(json: json)
    }
}
