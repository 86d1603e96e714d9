import Graft
import Testing

@testable import Trainer

/// Central finite differences against each layer's backward pass, on L = Σ output·R for a
/// fixed random R (so dL/dOutput = R).
private struct GradientCheck {
    var generator = SeededGenerator(seed: 11)

    mutating func random(_ count: Int, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in Float.random(in: -scale..<scale, using: &generator) }
    }

    /// Distinct values spread ≥ 0.02 apart, so a max-pool or ReLU never flips within ±eps.
    mutating func spread(_ count: Int) -> [Float] {
        var values = (0..<count).map { Float($0 - count / 2) * 0.02 + 0.01 }
        values.shuffle(using: &generator)
        return values
    }

    static func loss(_ output: Tensor, _ weights: [Float]) -> Double {
        zip(output.data, weights).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }

    /// Checks dL/dInput and every non-frozen parameter's gradient at up to `samples` coordinates each.
    mutating func check(_ layer: any Layer, input: Tensor, training: Bool = true, eps: Float = 1e-2, samples: Int = 24) {
        let output = layer.forward(input, training: training)
        let weights = random(output.data.count)
        let analytic = layer.backward(Tensor(shape: output.shape, data: weights), inputGradient: true)!
        let parameterGradients = layer.parameters.map(\.gradient)
        func numeric(_ perturb: (Float) -> Void) -> Double {
            perturb(eps)
            let plus = Self.loss(layer.forward(input2(), training: training), weights)
            perturb(-2 * eps)
            let minus = Self.loss(layer.forward(input2(), training: training), weights)
            perturb(eps)
            return (plus - minus) / Double(2 * eps)
        }
        var current = input
        func input2() -> Tensor { current }
        for index in pick(input.data.count, samples) {
            let n = numeric { current.data[index] += $0 }
            expectClose(Double(analytic.data[index]), n, "d/dx[\(index)]")
        }
        for (p, parameter) in layer.parameters.enumerated() where !parameter.frozen {
            for index in pick(parameter.value.count, samples) {
                let n = numeric { parameter.value[index] += $0 }
                expectClose(Double(parameterGradients[p][index]), n, "d/d\(parameter.name)[\(index)]")
            }
        }
    }

    mutating func pick(_ count: Int, _ samples: Int) -> [Int] {
        count <= samples ? Array(0..<count) : (0..<samples).map { _ in Int.random(in: 0..<count, using: &generator) }
    }

    func expectClose(_ analytic: Double, _ numeric: Double, _ what: String) {
        #expect(
            abs(analytic - numeric) <= 2e-3 + 2e-2 * max(abs(analytic), abs(numeric)), "\(what): analytic \(analytic), numeric \(numeric)")
    }
}

@Suite("Gradients match finite differences")
struct GradientTests {
    @Test("Linear")
    func linear() {
        var check = GradientCheck()
        var generator = SeededGenerator(seed: 1)
        let layer = Linear(inputs: 7, outputs: 5, generator: &generator)
        check.check(layer, input: Tensor(shape: [4, 7], data: check.random(28)))
    }

    @Test(
        "Conv2d, with stride and padding", arguments: [(1, 1, 6, 5), (2, 1, 6, 5), (1, 0, 6, 5), (2, 2, 5, 4), (2, 1, 2, 1), (3, 2, 4, 4)])
    func conv(stride: Int, padding: Int, h: Int, w: Int) {
        var check = GradientCheck()
        var generator = SeededGenerator(seed: 2)
        let layer = Conv2d(inChannels: 2, outChannels: 3, kernel: 3, stride: stride, padding: padding, generator: &generator)
        check.check(layer, input: Tensor(shape: [2, 2, h, w], data: check.random(2 * 2 * h * w)))
    }

    @Test("a LoRA pair on a frozen Linear or Conv2d: A's and B's gradients (and the input's) match finite differences")
    func lowRank() {
        var check = GradientCheck()
        var generator = SeededGenerator(seed: 3)
        let linear = Linear(inputs: 7, outputs: 5, generator: &generator)
        let conv = Conv2d(inChannels: 2, outChannels: 3, kernel: 3, stride: 1, padding: 1, generator: &generator)
        linear.addLowRank(rank: 2, alpha: 6, generator: &generator)
        conv.addLowRank(rank: 3, alpha: 3, generator: &generator)
        for layer in [linear, conv] as [any Layer] {
            let weight = layer.parameters[0]
            weight.frozen = true
            layer.parameters[1].frozen = true
            // B starts at zero (the parent's function); a random B checks A's gradient too.
            layer.parameters[3].value = check.random(layer.parameters[3].value.count)
            let before = weight.value
            check.check(
                layer,
                input: layer is Linear
                    ? Tensor(shape: [4, 7], data: check.random(28)) : Tensor(shape: [2, 2, 5, 4], data: check.random(80)))
            #expect(weight.value == before, "the frozen weight never moves")
            #expect(
                layer.state.map(\.name) == ["weight", "bias"], "the state_dict is the layer's own: the pair is committed as an adapter")
        }
        #expect(linear.lowRank!.a.shape == [2, 7] && linear.lowRank!.b.shape == [5, 2])
        #expect(conv.lowRank!.a.shape == [3, 2, 3, 3] && conv.lowRank!.b.shape == [3, 3, 1, 1])
    }

    @Test("Conv2d agrees with a direct convolution")
    func convDirect() {
        var generator = SeededGenerator(seed: 5)
        for (stride, padding, h, w) in [(1, 1, 5, 6), (2, 1, 2, 1), (2, 0, 7, 5), (3, 2, 4, 4)] {
            let layer = Conv2d(inChannels: 2, outChannels: 3, kernel: 3, stride: stride, padding: padding, generator: &generator)
            let input = Tensor(shape: [2, 2, h, w], data: (0..<(4 * h * w)).map { _ in Float.random(in: -1..<1, using: &generator) })
            let output = layer.forward(input, training: false)
            let (oh, ow) = (output.shape[2], output.shape[3])
            for n in 0..<2 {
                for o in 0..<3 {
                    for oy in 0..<oh {
                        for ox in 0..<ow {
                            var sum = layer.bias.value[o]
                            for c in 0..<2 {
                                for ky in 0..<3 {
                                    for kx in 0..<3 {
                                        let iy = oy * stride + ky - padding, ix = ox * stride + kx - padding
                                        guard iy >= 0, iy < h, ix >= 0, ix < w else { continue }
                                        sum +=
                                            layer.weight.value[((o * 2 + c) * 3 + ky) * 3 + kx]
                                            * input.data[((n * 2 + c) * h + iy) * w + ix]
                                    }
                                }
                            }
                            let got = output.data[((n * 3 + o) * oh + oy) * ow + ox]
                            #expect(abs(got - sum) < 1e-5, "stride \(stride) padding \(padding) \(h)×\(w) at \(n),\(o),\(oy),\(ox)")
                        }
                    }
                }
            }
        }
    }

    @Test("ReLU and MaxPool2d")
    func pointwise() {
        var check = GradientCheck()
        check.check(ReLU(), input: Tensor(shape: [2, 12], data: check.spread(24)))
        check.check(MaxPool2d(kernel: 2), input: Tensor(shape: [2, 2, 4, 6], data: check.spread(96)))
    }

    @Test("Flatten")
    func flatten() {
        var check = GradientCheck()
        check.check(Flatten(), input: Tensor(shape: [3, 2, 2, 2], data: check.random(24)))
    }

    @Test("BatchNorm2d and BatchNorm1d, training mode (batch statistics)", arguments: [true, false])
    func batchNorm(spatial: Bool) {
        var check = GradientCheck()
        let layer = BatchNorm(channels: 3, spatial: spatial)
        layer.weight.value = check.random(3, scale: 2)
        layer.bias.value = check.random(3)
        let shape = spatial ? [4, 3, 2, 3] : [6, 3]
        check.check(layer, input: Tensor(shape: shape, data: check.random(shape.reduce(1, *), scale: 2)))
    }

    @Test("a frozen BatchNorm runs in inference mode: running statistics, fixed map, nothing moves")
    func frozenBatchNorm() {
        var check = GradientCheck()
        let layer = BatchNorm(channels: 3, spatial: true)
        layer.runningMean = [0.5, -0.2, 0.1]
        layer.runningVar = [2, 0.5, 1.5]
        for parameter in layer.parameters { parameter.frozen = true }
        let input = Tensor(shape: [2, 3, 2, 2], data: check.random(24))
        check.check(layer, input: input)
        #expect(layer.runningMean == [0.5, -0.2, 0.1] && layer.runningVar == [2, 0.5, 1.5] && layer.batchesTracked == 0)
        let y = layer.forward(input, training: true)
        #expect(abs(y.data[0] - (input.data[0] - 0.5) / (2 + 1e-5 as Float).squareRoot()) < 1e-6)
    }

    @Test("Dropout with a fixed mask; identity in inference mode")
    func dropout() {
        let layer = Dropout(probability: 0.5, seed: 3)
        let input = Tensor(shape: [2, 4], data: [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(layer.forward(input, training: false) == input)
        let out = layer.forward(input, training: true)
        #expect(out.data.allSatisfy { $0 == 0 } == false)
        for (x, y) in zip(input.data, out.data) { #expect(y == 0 || y == 2 * x) }
        let g = layer.backward(Tensor(shape: [2, 4], data: [Float](repeating: 1, count: 8)), inputGradient: true)!
        for (x, y) in zip(g.data, out.data) { #expect((x == 0) == (y == 0)) }
    }

    @Test("softmax cross-entropy")
    func crossEntropy() {
        var check = GradientCheck()
        let logits = Tensor(shape: [3, 4], data: check.random(12, scale: 3))
        let labels = [0, 3, 2]
        let (_, gradient, _) = SoftmaxCrossEntropy.evaluate(logits: logits, labels: labels)
        for index in 0..<12 {
            var plus = logits, minus = logits
            plus.data[index] += 1e-2
            minus.data[index] -= 1e-2
            let numeric =
                (Double(SoftmaxCrossEntropy.evaluate(logits: plus, labels: labels).loss)
                    - Double(SoftmaxCrossEntropy.evaluate(logits: minus, labels: labels).loss)) / 2e-2
            check.expectClose(Double(gradient.data[index]), numeric, "dCE/dlogit[\(index)]")
        }
        // Uniform logits: loss is ln(classes).
        let uniform = SoftmaxCrossEntropy.evaluate(logits: Tensor(zeros: [2, 4]), labels: [1, 2])
        #expect(abs(uniform.loss - logf(4)) < 1e-6)
    }

    @Test("a whole network: the composed backward pass matches finite differences on the loss")
    func network() throws {
        let architecture = try Architecture(spec: "conv:2:3,bn,relu,pool:2,flatten,linear:5,relu", input: [1, 6, 6], classes: 3)
        let network = try Network(architecture, seed: 4)
        var check = GradientCheck()
        let input = Tensor(shape: [4, 1, 6, 6], data: check.random(144))
        let labels = [0, 1, 2, 1]
        func loss() -> Double { Double(SoftmaxCrossEntropy.evaluate(logits: network.forward(input, training: true), labels: labels).loss) }
        let (_, gradient, _) = SoftmaxCrossEntropy.evaluate(logits: network.forward(input, training: true), labels: labels)
        network.backward(gradient)
        for (name, parameter) in network.namedParameters {
            let analytic = parameter.gradient
            for index in check.pick(parameter.value.count, 6) {
                // A small step: a larger one flips ReLUs and pooling winners (kinks) in a whole network.
                parameter.value[index] += 1e-3
                let plus = loss()
                parameter.value[index] -= 2e-3
                let minus = loss()
                parameter.value[index] += 1e-3
                check.expectClose(Double(analytic[index]), (plus - minus) / 2e-3, "\(name)[\(index)]")
            }
        }
    }

    @Test("the input gradient to each block's output (the mimicry attack's) matches finite differences, at inference behaviour")
    func inputGradient() throws {
        let architecture = try Architecture(spec: "conv:2:3,bn,relu,pool:2,flatten,linear:5,relu", input: [1, 6, 6], classes: 3)
        let network = try Network(architecture, seed: 5)
        var check = GradientCheck()
        // Running statistics other than (0, 1), so inference mode differs from the identity.
        let norm = network.layers[1].layer as! BatchNorm
        norm.runningMean = [0.3, -0.2]
        norm.runningVar = [2.0, 0.5]
        network.freezeAll()
        #expect(network.blockEnds == [4, 7], "after the pool, and the activation before the head")
        let input = Tensor(shape: [2, 1, 6, 6], data: check.spread(72).map { $0 * 0.5 })
        for end in network.blockEnds {
            let output = network.forwardForInputGradient(input, to: end)
            let weights = check.random(output.data.count)
            let analytic = network.inputGradient(Tensor(shape: output.shape, data: weights), from: end)
            #expect(analytic.shape == input.shape)
            for index in check.pick(input.data.count, 12) {
                var x = input
                x.data[index] += 1e-3
                let plus = GradientCheck.loss(network.forwardForInputGradient(x, to: end), weights)
                x.data[index] -= 2e-3
                let minus = GradientCheck.loss(network.forwardForInputGradient(x, to: end), weights)
                check.expectClose(Double(analytic.data[index]), (plus - minus) / 2e-3, "K=\(end) d/dx[\(index)]")
            }
        }
        // Inference behaviour: the same input gives the same representation, and nothing moved.
        #expect(network.forwardForInputGradient(input, to: 7) == network.forwardForInputGradient(input, to: 7))
        #expect(norm.runningMean == [0.3, -0.2] && norm.batchesTracked == 0)
    }
}

#if canImport(Glibc)
    import Glibc
#endif
