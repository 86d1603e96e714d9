import Foundation

/// One layer of a network's `features` stack, as stored in a checkpoint's metadata.
public struct LayerSpec: Sendable, Codable, Equatable {
    /// `conv2d`, `batchnorm2d`, `batchnorm1d`, `relu`, `maxpool2d`, `flatten`, `linear`, `dropout`.
    public var type: String
    /// Output channels (conv2d) or features (linear).
    public var out: Int?
    public var kernel: Int?
    public var stride: Int?
    public var padding: Int?
    /// Dropout probability.
    public var p: Double?

    public init(type: String, out: Int? = nil, kernel: Int? = nil, stride: Int? = nil, padding: Int? = nil, p: Double? = nil) {
        self.type = type
        self.out = out
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.p = p
    }
}

/// A network the engine can rebuild from any checkpoint: a `features` stack (PyTorch
/// `nn.Sequential`, tensors `features.N.…`) and a linear head `classifier` with one output
/// per class. Stored as JSON under `graft.architecture` in each checkpoint's metadata.
public struct Architecture: Sendable, Codable, Equatable {
    /// The per-sample input shape: [C, H, W] for images, [F] for feature vectors.
    public var input: [Int]
    public var features: [LayerSpec]
    public var classes: Int
    /// The dataset labels the classes stand for, in order (class 0 is `labels[0]`).
    public var labels: [Int]?

    public static let metadataKey = "graft.architecture"

    public init(input: [Int], features: [LayerSpec], classes: Int, labels: [Int]? = nil) {
        self.input = input
        self.features = features
        self.classes = classes
        self.labels = labels
    }

    /// Named presets for `--architecture`.
    public static let presets: [String: String] = [
        "cnn-small": "conv:8:3,bn,relu,pool:2,conv:16:3,bn,relu,pool:2,flatten,linear:64,relu",
        "mlp": "flatten,linear:128,relu",
    ]

    /// Parses a spec: a preset name or comma-separated layers — `conv:OUT:K[:STRIDE[:PAD]]`
    /// (padding defaults to K/2), `bn`, `relu`, `pool:K`, `flatten`, `linear:OUT`,
    /// `dropout:P`. `bn` becomes batchnorm2d after a convolution and batchnorm1d after a
    /// flatten or linear layer. The head `classifier` is added for `classes` outputs.
    public init(spec: String, input: [Int], classes: Int, labels: [Int]? = nil) throws(TrainerError) {
        let text = Self.presets[spec] ?? spec
        var layers: [LayerSpec] = []
        var flat = input.count == 1
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.trimmingCharacters(in: .whitespaces).split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            func number(_ index: Int, _ what: String) throws(TrainerError) -> Int {
                guard index < parts.count, let value = Int(parts[index]), value > 0 else {
                    throw .architecture("`\(item)`: \(what) must be a positive whole number")
                }
                return value
            }
            switch parts[0] {
            case "conv":
                guard (3...5).contains(parts.count) else { throw .architecture("`\(item)`: write conv:OUT:KERNEL[:STRIDE[:PADDING]]") }
                let kernel = try number(2, "the kernel size")
                let padding = parts.count == 5 ? Int(parts[4]) : kernel / 2
                guard let padding, padding >= 0 else { throw .architecture("`\(item)`: the padding must be a whole number ≥ 0") }
                layers.append(
                    LayerSpec(
                        type: "conv2d", out: try number(1, "OUT"), kernel: kernel,
                        stride: parts.count >= 4 ? try number(3, "the stride") : 1, padding: padding))
                flat = false
            case "bn" where parts.count == 1: layers.append(LayerSpec(type: flat ? "batchnorm1d" : "batchnorm2d"))
            case "relu" where parts.count == 1: layers.append(LayerSpec(type: "relu"))
            case "pool" where parts.count == 2: layers.append(LayerSpec(type: "maxpool2d", kernel: try number(1, "the pool size")))
            case "flatten" where parts.count == 1:
                layers.append(LayerSpec(type: "flatten"))
                flat = true
            case "linear" where parts.count == 2:
                layers.append(LayerSpec(type: "linear", out: try number(1, "OUT")))
                flat = true
            case "dropout" where parts.count == 2:
                guard let p = Double(parts[1]), p >= 0, p < 1 else {
                    throw .architecture("`\(item)`: the dropout probability is in [0, 1)")
                }
                layers.append(LayerSpec(type: "dropout", p: p))
            default:
                let presets = Self.presets.keys.sorted().joined(separator: ", ")
                throw .architecture(
                    "unknown layer `\(item)`; use conv:OUT:K, bn, relu, pool:K, flatten, linear:OUT, dropout:P, or a preset (\(presets))")
            }
        }
        self.init(input: input, features: layers, classes: classes, labels: labels)
        _ = try Network(self, seed: 0)  // every shape must fit
    }

    /// The JSON stored in checkpoint metadata.
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }

    public init(json: String) throws(TrainerError) {
        do {
            self = try JSONDecoder().decode(Architecture.self, from: Data(json.utf8))
        } catch {
            throw .architecture("`\(Self.metadataKey)` metadata is not an architecture: \(error)")
        }
    }
}
