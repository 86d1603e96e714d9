public import GraftCore

/// A trainable tensor of a layer, with its gradient and optimiser settings.
public final class Parameter {
    /// The name inside its layer (`weight`, `bias`).
    public let name: String
    public let shape: [Int]
    public var value: [Float]
    public var gradient: [Float]
    /// Frozen parameters keep their value: no gradient is computed for them and no optimiser
    /// touches them.
    public var frozen = false
    /// Multiplies the learning rate for this parameter (per-layer rates when fine-tuning).
    public var learningRateScale: Float = 1

    init(_ name: String, shape: [Int], value: [Float]) {
        self.name = name
        self.shape = shape
        self.value = value
        gradient = [Float](repeating: 0, count: value.count)
    }
}

/// A tensor in a layer's state: a parameter, or a buffer such as BatchNorm's running mean.
public enum StateValue: Equatable, Sendable {
    case floats([Float])
    /// An int64 scalar (BatchNorm's `num_batches_tracked`).
    case count(Int64)
}

/// One entry of a layer's `state_dict`, named inside the layer.
public struct LayerState: Sendable {
    public var name: String
    public var shape: [Int]
    public var value: StateValue
}

/// A network layer. Layers cache what their backward pass needs during `forward`.
public protocol Layer: AnyObject {
    /// Trainable tensors.
    var parameters: [Parameter] { get }
    /// Every tensor of the layer's PyTorch `state_dict`, parameters included, in PyTorch's order.
    var state: [LayerState] { get }
    /// Restores one `state_dict` entry.
    func load(_ name: String, _ value: StateValue) throws(TrainerError)
    /// The output's per-sample shape for an input's per-sample shape.
    func outputShape(_ input: [Int]) throws(TrainerError) -> [Int]
    /// `training` false is inference mode: BatchNorm uses and keeps its running statistics,
    /// Dropout passes everything through.
    func forward(_ input: Tensor, training: Bool) -> Tensor
    /// Takes dLoss/dOutput, sets the parameters' gradients (unless frozen) and returns
    /// dLoss/dInput when `inputGradient` is true.
    func backward(_ gradient: Tensor, inputGradient: Bool) -> Tensor?
}

extension Layer {
    public var state: [LayerState] { parameters.map { LayerState(name: $0.name, shape: $0.shape, value: .floats($0.value)) } }

    public func load(_ name: String, _ value: StateValue) throws(TrainerError) {
        guard let parameter = parameters.first(where: { $0.name == name }) else { throw .state("no tensor `\(name)` in this layer") }
        guard case .floats(let floats) = value, floats.count == parameter.value.count else {
            throw .state("`\(name)` holds \(parameter.value.count) float32 values")
        }
        parameter.value = floats
    }

    /// True when the layer has parameters and every one is frozen.
    var allFrozen: Bool { !parameters.isEmpty && parameters.allSatisfy(\.frozen) }
}

/// Uniform in ±1/√fanIn: PyTorch's default for Linear and Conv2d (kaiming_uniform, a = √5).
func uniformInit(_ count: Int, fanIn: Int, using generator: inout SeededGenerator) -> [Float] {
    let bound = 1 / Float(fanIn).squareRoot()
    return (0..<count).map { _ in Float.random(in: -bound..<bound, using: &generator) }
}

// MARK: - Linear

/// y = x·Wᵀ + b, W of shape [out, in] as in PyTorch.
public final class Linear: Layer {
    public let inputs: Int, outputs: Int
    public let weight: Parameter, bias: Parameter
    /// A LoRA pair on the weight (adapter training): the layer computes with W + scale·B·A.
    public private(set) var lowRank: LowRank?
    public var parameters: [Parameter] { [weight, bias] + (lowRank.map { [$0.a, $0.b] } ?? []) }
    public var state: [LayerState] { [weight, bias].map { LayerState(name: $0.name, shape: $0.shape, value: .floats($0.value)) } }
    private var input: Tensor?
    /// The weight the last training forward used (merged with the LoRA pair).
    private var effective: [Float] = []

    /// Puts a LoRA pair of `rank` on the weight.
    public func addLowRank(rank: Int, alpha: Double, generator: inout SeededGenerator) {
        lowRank = LowRank(rank: rank, alpha: alpha, weightShape: weight.shape, generator: &generator)
    }

    public init(inputs: Int, outputs: Int, generator: inout SeededGenerator) {
        self.inputs = inputs
        self.outputs = outputs
        weight = Parameter("weight", shape: [outputs, inputs], value: uniformInit(outputs * inputs, fanIn: inputs, using: &generator))
        bias = Parameter("bias", shape: [outputs], value: uniformInit(outputs, fanIn: inputs, using: &generator))
    }

    public func outputShape(_ input: [Int]) throws(TrainerError) -> [Int] {
        // As in PyTorch, a linear layer takes flat samples: a flatten comes first.
        guard input == [inputs] else { throw .architecture("linear layer takes [\(inputs)], gets \(input); add flatten before it") }
        return [outputs]
    }

    public func forward(_ input: Tensor, training: Bool) -> Tensor {
        let n = input.batch
        var output = [Float](repeating: 0, count: n * outputs)
        let weights = lowRank?.merged(weight.value) ?? weight.value
        input.data.withUnsafeBufferPointer { x in
            weights.withUnsafeBufferPointer { w in
                output.withUnsafeMutableBufferPointer { y in
                    for row in 0..<n { (y.baseAddress! + row * outputs).update(from: bias.value, count: outputs) }
                    BLAS.gemm(x.baseAddress!, w.baseAddress!, y.baseAddress!, m: n, n: outputs, k: inputs, transposeB: true, beta: 1)
                }
            }
        }
        if training { (self.input, effective) = (input, weights) }
        return Tensor(shape: [n, outputs], data: output)
    }

    public func backward(_ gradient: Tensor, inputGradient: Bool) -> Tensor? {
        guard let input else { preconditionFailure("backward before a training forward") }
        let n = gradient.batch
        if !weight.frozen || lowRank != nil {
            gradient.data.withUnsafeBufferPointer { g in
                input.data.withUnsafeBufferPointer { x in
                    weight.gradient.withUnsafeMutableBufferPointer { dw in
                        BLAS.gemm(g.baseAddress!, x.baseAddress!, dw.baseAddress!, m: outputs, n: inputs, k: n, transposeA: true)
                    }
                }
            }
        }
        lowRank?.backward(weightGradient: weight.gradient)
        if !bias.frozen {
            for o in 0..<outputs { bias.gradient[o] = 0 }
            gradient.data.withUnsafeBufferPointer { g in
                for row in 0..<n { for o in 0..<outputs { bias.gradient[o] += g[row * outputs + o] } }
            }
        }
        guard inputGradient else { return nil }
        var dx = [Float](repeating: 0, count: n * inputs)
        gradient.data.withUnsafeBufferPointer { g in
            effective.withUnsafeBufferPointer { w in
                dx.withUnsafeMutableBufferPointer { d in
                    BLAS.gemm(g.baseAddress!, w.baseAddress!, d.baseAddress!, m: n, n: inputs, k: outputs)
                }
            }
        }
        return Tensor(shape: input.shape, data: dx)
    }
}

// MARK: - Conv2d

/// 2-D convolution through im2col and GEMM (Caffe's layout): per sample, the patches are a
/// [C·k·k, OH·OW] matrix and the output is W[out, C·k·k] × patches, already NCHW. Weight
/// [out, in, k, k] as in PyTorch.
public final class Conv2d: Layer {
    public let inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int
    public let weight: Parameter, bias: Parameter
    /// A LoRA pair on the kernel (adapter training): the layer computes with W + scale·B·A.
    public private(set) var lowRank: LowRank?
    public var parameters: [Parameter] { [weight, bias] + (lowRank.map { [$0.a, $0.b] } ?? []) }
    public var state: [LayerState] { [weight, bias].map { LayerState(name: $0.name, shape: $0.shape, value: .floats($0.value)) } }
    private var columns: [Float] = []
    private var inputShape: [Int] = []
    /// The kernel the last training forward used (merged with the LoRA pair).
    private var effective: [Float] = []

    /// Puts a LoRA pair of `rank` on the kernel.
    public func addLowRank(rank: Int, alpha: Double, generator: inout SeededGenerator) {
        lowRank = LowRank(rank: rank, alpha: alpha, weightShape: weight.shape, generator: &generator)
    }

    public init(inChannels: Int, outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, generator: inout SeededGenerator) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        let fanIn = inChannels * kernel * kernel
        weight = Parameter(
            "weight", shape: [outChannels, inChannels, kernel, kernel],
            value: uniformInit(outChannels * fanIn, fanIn: fanIn, using: &generator))
        bias = Parameter("bias", shape: [outChannels], value: uniformInit(outChannels, fanIn: fanIn, using: &generator))
    }

    public func outputShape(_ input: [Int]) throws(TrainerError) -> [Int] {
        guard input.count == 3, input[0] == inChannels else { throw .architecture("conv2d takes [\(inChannels), H, W], gets \(input)") }
        let h = (input[1] + 2 * padding - kernel) / stride + 1, w = (input[2] + 2 * padding - kernel) / stride + 1
        guard h > 0, w > 0 else { throw .architecture("conv2d kernel \(kernel) does not fit an input of \(input[1])×\(input[2])") }
        return [outChannels, h, w]
    }

    private func geometry(_ shape: [Int]) -> (n: Int, h: Int, w: Int, oh: Int, ow: Int) {
        let h = shape[2], w = shape[3]
        return (shape[0], h, w, (h + 2 * padding - kernel) / stride + 1, (w + 2 * padding - kernel) / stride + 1)
    }

    /// The output columns `ox` for which input column `ox·stride + kx − padding` lies inside [0, w).
    @inline(__always)
    private func validColumns(_ kx: Int, w: Int, ow: Int) -> Range<Int> {
        // Floor division: the numerators can be negative.
        func floorDiv(_ a: Int, _ b: Int) -> Int { a >= 0 ? a / b : -((-a + b - 1) / b) }
        let first = max(0, -floorDiv(kx - padding, stride))
        let last = min(ow, floorDiv(w - 1 + padding - kx, stride) + 1)
        return first < last ? first..<last : 0..<0
    }

    /// Visits each (patch row, output row) pair with the input row it reads (nil: padding).
    @inline(__always)
    private func forEachRow(h: Int, oh: Int, _ body: (_ row: Int, _ kx: Int, _ oy: Int, _ plane: Int, _ iy: Int?) -> Void) {
        var row = 0
        for channel in 0..<inChannels {
            for ky in 0..<kernel {
                for kx in 0..<kernel {
                    for oy in 0..<oh {
                        let iy = oy * stride + ky - padding
                        body(row, kx, oy, channel, iy >= 0 && iy < h ? iy : nil)
                    }
                    row += 1
                }
            }
        }
    }

    public func forward(_ input: Tensor, training: Bool) -> Tensor {
        let (n, h, w, oh, ow) = geometry(input.shape)
        let patch = inChannels * kernel * kernel, pixels = oh * ow, o = outChannels
        var columns = [Float](repeating: 0, count: n * patch * pixels)
        var output = [Float](repeating: 0, count: n * o * pixels)
        let s = stride, p = padding
        let weights = lowRank?.merged(weight.value) ?? weight.value
        input.data.withUnsafeBufferPointer { x in
            columns.withUnsafeMutableBufferPointer { col in
                output.withUnsafeMutableBufferPointer { y in
                    weights.withUnsafeBufferPointer { wt in
                        for sample in 0..<n {
                            let sampleColumns = col.baseAddress! + sample * patch * pixels
                            let image = x.baseAddress! + sample * inChannels * h * w
                            forEachRow(h: h, oh: oh) { row, kx, oy, channel, iy in
                                guard let iy else { return }
                                let target = sampleColumns + row * pixels + oy * ow
                                let source = image + (channel * h + iy) * w
                                for ox in validColumns(kx, w: w, ow: ow) { target[ox] = source[ox * s + kx - p] }
                            }
                            let out = y.baseAddress! + sample * o * pixels
                            for channel in 0..<o { (out + channel * pixels).update(repeating: bias.value[channel], count: pixels) }
                            BLAS.gemm(wt.baseAddress!, sampleColumns, out, m: o, n: pixels, k: patch, beta: 1)
                        }
                    }
                }
            }
        }
        if training {
            self.columns = columns
            inputShape = input.shape
            effective = weights
        }
        return Tensor(shape: [n, o, oh, ow], data: output)
    }

    public func backward(_ gradient: Tensor, inputGradient: Bool) -> Tensor? {
        let (n, h, w, oh, ow) = geometry(inputShape)
        let patch = inChannels * kernel * kernel, pixels = oh * ow, o = outChannels
        let s = stride, p = padding
        if !weight.frozen || lowRank != nil {
            gradient.data.withUnsafeBufferPointer { g in
                columns.withUnsafeBufferPointer { col in
                    weight.gradient.withUnsafeMutableBufferPointer { dw in
                        for sample in 0..<n {
                            // dW += dY[sample] (out × pixels) · columns[sample]ᵀ (pixels × patch)
                            BLAS.gemm(
                                g.baseAddress! + sample * o * pixels, col.baseAddress! + sample * patch * pixels, dw.baseAddress!,
                                m: o, n: patch, k: pixels, transposeB: true, beta: sample == 0 ? 0 : 1)
                        }
                    }
                }
            }
        }
        lowRank?.backward(weightGradient: weight.gradient)
        if !bias.frozen {
            var sums = [Float](repeating: 0, count: o)
            gradient.data.withUnsafeBufferPointer { g in
                for sample in 0..<n {
                    for channel in 0..<o {
                        let base = g.baseAddress! + (sample * o + channel) * pixels
                        var total: Float = 0
                        for pixel in 0..<pixels { total += base[pixel] }
                        sums[channel] += total
                    }
                }
            }
            bias.gradient = sums
        }
        guard inputGradient else { return nil }
        var dx = [Float](repeating: 0, count: n * inChannels * h * w)
        var dcol = [Float](repeating: 0, count: patch * pixels)
        gradient.data.withUnsafeBufferPointer { g in
            effective.withUnsafeBufferPointer { wt in
                dcol.withUnsafeMutableBufferPointer { d in
                    dx.withUnsafeMutableBufferPointer { x in
                        for sample in 0..<n {
                            // dColumns = Wᵀ (patch × out) · dY[sample] (out × pixels), then col2im.
                            BLAS.gemm(
                                wt.baseAddress!, g.baseAddress! + sample * o * pixels, d.baseAddress!, m: patch, n: pixels, k: o,
                                transposeA: true)
                            let image = x.baseAddress! + sample * inChannels * h * w
                            forEachRow(h: h, oh: oh) { row, kx, oy, channel, iy in
                                guard let iy else { return }
                                let source = d.baseAddress! + row * pixels + oy * ow
                                let target = image + (channel * h + iy) * w
                                for ox in validColumns(kx, w: w, ow: ow) { target[ox * s + kx - p] += source[ox] }
                            }
                        }
                    }
                }
            }
        }
        return Tensor(shape: inputShape, data: dx)
    }
}

// MARK: - Parameter-free layers

public final class ReLU: Layer {
    public var parameters: [Parameter] { [] }
    private var output: [Float] = []
    public init() {}
    public func outputShape(_ input: [Int]) -> [Int] { input }

    public func forward(_ input: Tensor, training: Bool) -> Tensor {
        var result = input
        result.data.withUnsafeMutableBufferPointer { y in
            for i in y.indices where y[i] < 0 { y[i] = 0 }
        }
        if training { output = result.data }
        return result
    }

    public func backward(_ gradient: Tensor, inputGradient: Bool) -> Tensor? {
        guard inputGradient else { return nil }
        var result = gradient
        result.data.withUnsafeMutableBufferPointer { g in
            output.withUnsafeBufferPointer { y in
                for i in g.indices where y[i] <= 0 { g[i] = 0 }
            }
        }
        return result
    }
}

/// Max pooling over k×k windows with stride k (PyTorch's MaxPool2d(k)).
public final class MaxPool2d: Layer {
    public let kernel: Int
    public var parameters: [Parameter] { [] }
    private var argmax: [Int32] = []
    private var inputShape: [Int] = []

    public init(kernel: Int) { self.kernel = kernel }

    public func outputShape(_ input: [Int]) throws(TrainerError) -> [Int] {
        guard input.count == 3, input[1] >= kernel, input[2] >= kernel else {
            throw .architecture("maxpool2d(\(kernel)) takes [C, H, W], gets \(input)")
        }
        return [input[0], input[1] / kernel, input[2] / kernel]
    }

    public func forward(_ input: Tensor, training: Bool) -> Tensor {
        let (n, c, h, w) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        let k = kernel, oh = h / k, ow = w / k
        var output = [Float](repeating: 0, count: n * c * oh * ow)
        var argmax = [Int32](repeating: 0, count: output.count)
        input.data.withUnsafeBufferPointer { x in
            for plane in 0..<(n * c) {
                let base = plane * h * w
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        var best = -Float.infinity, at = 0
                        for ky in 0..<k {
                            for kx in 0..<k {
                                let index = base + (oy * k + ky) * w + ox * k + kx
                                if x[index] > best {
                                    best = x[index]
                                    at = index
                                }
                            }
                        }
                        let out = (plane * oh + oy) * ow + ox
                        output[out] = best
                        argmax[out] = Int32(at)
                    }
                }
            }
        }
        if training {
            self.argmax = argmax
            inputShape = input.shape
        }
        return Tensor(shape: [n, c, oh, ow], data: output)
    }

    public func backward(_ gradient: Tensor, inputGradient: Bool) -> Tensor? {
        guard inputGradient else { return nil }
        var dx = [Float](repeating: 0, count: inputShape.reduce(1, *))
        for (index, g) in gradient.data.enumerated() { dx[Int(argmax[index])] += g }
        return Tensor(shape: inputShape, data: dx)
    }
}

/// Flattens each sample to one dimension.
public final class Flatten: Layer {
    public var parameters: [Parameter] { [] }
    private var inputShape: [Int] = []
    public init() {}
    public func outputShape(_ input: [Int]) -> [Int] { [input.reduce(1, *)] }

    public func forward(_ input: Tensor, training: Bool) -> Tensor {
        if training { inputShape = input.shape }
        return Tensor(shape: [input.batch, input.sampleSize], data: input.data)
    }

    public func backward(_ gradient: Tensor, inputGradient: Bool) -> Tensor? {
        inputGradient ? Tensor(shape: inputShape, data: gradient.data) : nil
    }
}

/// Inverted dropout: in training, zeroes each element with probability p and scales the rest
/// by 1/(1−p); identity in inference mode. Masks come from a seeded generator.
public final class Dropout: Layer {
    public let probability: Float
    public var parameters: [Parameter] { [] }
    var generator: SeededGenerator
    private var mask: [Float] = []

    public init(probability: Float, seed: UInt64) {
        self.probability = probability
        generator = SeededGenerator(seed: seed)
    }

    public func outputShape(_ input: [Int]) -> [Int] { input }

    public func forward(_ input: Tensor, training: Bool) -> Tensor {
        guard training, probability > 0 else { return input }
        let keep = 1 - probability, scale = 1 / keep
        mask = (0..<input.data.count).map { _ in Float.random(in: 0..<1, using: &generator) < keep ? scale : 0 }
        var result = input
        for i in result.data.indices { result.data[i] *= mask[i] }
        return result
    }

    public func backward(_ gradient: Tensor, inputGradient: Bool) -> Tensor? {
        guard inputGradient else { return nil }
        guard !mask.isEmpty else { return gradient }
        var result = gradient
        for i in result.data.indices { result.data[i] *= mask[i] }
        return result
    }

    /// Sets the next mask explicitly (gradient checks).
    func fixMask(_ mask: [Float]) { self.mask = mask }
}

// MARK: - BatchNorm

/// Batch normalisation over channels (BatchNorm2d, input [N, C, H, W]) or features
/// (BatchNorm1d, input [N, C]), with PyTorch's running statistics: momentum 0.1, unbiased
/// running variance, eps 1e-5, and `num_batches_tracked`.
public final class BatchNorm: Layer {
    public let channels: Int
    public let spatial: Bool
    public let weight: Parameter, bias: Parameter
    public var runningMean: [Float], runningVar: [Float]
    public var batchesTracked: Int64 = 0
    public let momentum: Float = 0.1, epsilon: Float = 1e-5
    public var parameters: [Parameter] { [weight, bias] }
    private var normalized: [Float] = []
    private var inverseStd: [Float] = []
    private var inputShape: [Int] = []
    private var trainedForward = false

    public init(channels: Int, spatial: Bool) {
        self.channels = channels
        self.spatial = spatial
        weight = Parameter("weight", shape: [channels], value: [Float](repeating: 1, count: channels))
        bias = Parameter("bias", shape: [channels], value: [Float](repeating: 0, count: channels))
        runningMean = [Float](repeating: 0, count: channels)
        runningVar = [Float](repeating: 1, count: channels)
    }

    public var state: [LayerState] {
        [
            LayerState(name: "weight", shape: [channels], value: .floats(weight.value)),
            LayerState(name: "bias", shape: [channels], value: .floats(bias.value)),
            LayerState(name: "running_mean", shape: [channels], value: .floats(runningMean)),
            LayerState(name: "running_var", shape: [channels], value: .floats(runningVar)),
            LayerState(name: "num_batches_tracked", shape: [], value: .count(batchesTracked)),
        ]
    }

    public func load(_ name: String, _ value: StateValue) throws(TrainerError) {
        switch (name, value) {
        case ("running_mean", .floats(let floats)) where floats.count == channels: runningMean = floats
        case ("running_var", .floats(let floats)) where floats.count == channels: runningVar = floats
        case ("num_batches_tracked", .count(let count)): batchesTracked = count
        case ("weight", _), ("bias", _):
            guard let parameter = parameters.first(where: { $0.name == name }), case .floats(let floats) = value, floats.count == channels
            else {
                throw .state("`\(name)` holds \(channels) float32 values")
            }
            parameter.value = floats
        default: throw .state("`\(name)` is not a BatchNorm tensor of this shape")
        }
    }

    public func outputShape(_ input: [Int]) throws(TrainerError) -> [Int] {
        guard input.first == channels, input.count == (spatial ? 3 : 1) else {
            throw .architecture("batchnorm\(spatial ? "2d" : "1d")(\(channels)) does not take \(input)")
        }
        return input
    }

    public func forward(_ input: Tensor, training: Bool) -> Tensor {
        let n = input.batch, c = channels, size = input.sampleSize / c, count = n * size
        var output = input.data
        // A frozen BatchNorm runs in inference mode: its running statistics do not move.
        let training = training && !allFrozen
        trainedForward = training
        if !training {
            for channel in 0..<c {
                let scale = weight.value[channel] / (runningVar[channel] + epsilon).squareRoot()
                let shift = bias.value[channel] - runningMean[channel] * scale
                for sample in 0..<n {
                    let base = (sample * c + channel) * size
                    for i in base..<(base + size) { output[i] = output[i] * scale + shift }
                }
            }
            return Tensor(shape: input.shape, data: output)
        }
        var normalized = [Float](repeating: 0, count: output.count)
        var inverseStd = [Float](repeating: 0, count: c)
        for channel in 0..<c {
            var sum: Double = 0
            for sample in 0..<n {
                let base = (sample * c + channel) * size
                for i in base..<(base + size) { sum += Double(input.data[i]) }
            }
            let mean = sum / Double(count)
            var squares: Double = 0
            for sample in 0..<n {
                let base = (sample * c + channel) * size
                for i in base..<(base + size) {
                    let d = Double(input.data[i]) - mean
                    squares += d * d
                }
            }
            let variance = squares / Double(count)
            let invStd = Float(1 / (variance + Double(epsilon)).squareRoot())
            inverseStd[channel] = invStd
            let (g, b, m) = (weight.value[channel], bias.value[channel], Float(mean))
            for sample in 0..<n {
                let base = (sample * c + channel) * size
                for i in base..<(base + size) {
                    let xhat = (input.data[i] - m) * invStd
                    normalized[i] = xhat
                    output[i] = xhat * g + b
                }
            }
            let unbiased = count > 1 ? squares / Double(count - 1) : variance
            runningMean[channel] = (1 - momentum) * runningMean[channel] + momentum * Float(mean)
            runningVar[channel] = (1 - momentum) * runningVar[channel] + momentum * Float(unbiased)
        }
        batchesTracked += 1
        self.normalized = normalized
        self.inverseStd = inverseStd
        inputShape = input.shape
        return Tensor(shape: input.shape, data: output)
    }

    public func backward(_ gradient: Tensor, inputGradient: Bool) -> Tensor? {
        let n = gradient.batch, c = channels, size = gradient.sampleSize / c, count = Float(n * size)
        var dx = [Float](repeating: 0, count: gradient.data.count)
        for channel in 0..<c {
            var sumG: Float = 0, sumGX: Float = 0
            if trainedForward {
                for sample in 0..<n {
                    let base = (sample * c + channel) * size
                    for i in base..<(base + size) {
                        sumG += gradient.data[i]
                        sumGX += gradient.data[i] * normalized[i]
                    }
                }
                if !weight.frozen { weight.gradient[channel] = sumGX }
                if !bias.frozen { bias.gradient[channel] = sumG }
            }
            guard inputGradient else { continue }
            let g = weight.value[channel]
            if trainedForward {
                let k = g * inverseStd[channel] / count
                for sample in 0..<n {
                    let base = (sample * c + channel) * size
                    for i in base..<(base + size) { dx[i] = k * (count * gradient.data[i] - sumG - normalized[i] * sumGX) }
                }
            } else {
                // Inference mode (a frozen layer): a fixed affine map.
                let scale = g / (runningVar[channel] + epsilon).squareRoot()
                for sample in 0..<n {
                    let base = (sample * c + channel) * size
                    for i in base..<(base + size) { dx[i] = gradient.data[i] * scale }
                }
            }
        }
        return inputGradient ? Tensor(shape: gradient.shape, data: dx) : nil
    }
}
