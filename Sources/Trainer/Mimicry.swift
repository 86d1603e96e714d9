import GraftCore

/// Wang et al.'s mimicry attack on transfer learning (USENIX Security 2018, "With Great
/// Training Comes Great Vulnerability"), white-box on a teacher only: perturb a source image,
/// within an L∞ ball, until the teacher's internal representation at layer K matches a target
/// image's; a student that kept the teacher's layers up to K then sees the target. Projected
/// gradient descent with signed steps (Madry et al.) on ‖T_K(x′) − T_K(x_target)‖².
public struct MimicryAttack: Sendable {
    /// The L∞ radius around the source, in pixel units ([0, 1] images).
    public var epsilon: Float
    public var steps: Int
    /// Layers `0..<layer` of the teacher are the representation matched (K).
    public var layer: Int
    /// The signed step; by default 2.5·ε / steps, so the walk can cross the ball.
    public var stepSize: Float

    public init(epsilon: Float, steps: Int, layer: Int, stepSize: Float? = nil) {
        self.epsilon = epsilon
        self.steps = steps
        self.layer = layer
        self.stepSize = stepSize ?? 2.5 * epsilon / Float(max(1, steps))
    }

    /// Adversarial versions of `sources`, one per row of `targets` (same shape), and the
    /// objective per sample before and after.
    public func run(teacher: Network, sources: Tensor, targets: Tensor) -> (images: Tensor, before: [Double], after: [Double]) {
        precondition(sources.shape == targets.shape, "sources and targets differ in shape")
        let goal = teacher.forwardForInputGradient(targets, to: layer)
        var x = sources
        func objective(_ features: Tensor) -> (loss: [Double], gradient: Tensor) {
            let size = features.sampleSize
            var gradient = Tensor(zeros: features.shape)
            var loss = [Double](repeating: 0, count: features.batch)
            for i in features.data.indices {
                let d = features.data[i] - goal.data[i]
                loss[i / size] += Double(d * d)
                gradient.data[i] = 2 * d
            }
            return (loss, gradient)
        }
        var before: [Double] = []
        for step in 0...steps {
            let (loss, gradient) = objective(teacher.forwardForInputGradient(x, to: layer))
            if step == 0 { before = loss }
            if step == steps { return (x, before, loss) }
            let slope = teacher.inputGradient(gradient, from: layer)
            for i in x.data.indices {
                let moved = x.data[i] - stepSize * (slope.data[i] > 0 ? 1 : slope.data[i] < 0 ? -1 : 0)
                let low = max(0, sources.data[i] - epsilon), high = min(1, sources.data[i] + epsilon)
                x.data[i] = min(high, max(low, moved))
            }
        }
        return (x, before, before)
    }
}

extension Network {
    /// The end index (exclusive) of each block's output: a block ends at each pooling layer and at
    /// the activation before the head (the penultimate layer), as the experiment names K.
    public var blockEnds: [Int] {
        var ends: [Int] = []
        for (index, entry) in layers.enumerated() where entry.layer is MaxPool2d { ends.append(index + 1) }
        if let head = layers.indices.last, head > 0, !ends.contains(head) { ends.append(head) }
        return ends
    }

    /// Runs layers `0..<end` as at inference (BatchNorm on its running statistics, no dropout)
    /// while keeping what ``inputGradient(_:from:)`` needs. Every parameter must be frozen
    /// (``freezeAll()``): nothing is learned, and no running statistic moves.
    public func forwardForInputGradient(_ input: Tensor, to end: Int) -> Tensor {
        precondition(namedParameters.allSatisfy { $0.parameter.frozen }, "freeze the network before taking input gradients")
        var x = input
        for index in 0..<end {
            let layer = layers[index].layer
            x = layer.forward(x, training: !(layer is Dropout))
        }
        return x
    }

    /// Backpropagates dLoss/d(output of layer `end − 1`) to dLoss/dInput, after
    /// ``forwardForInputGradient(_:to:)`` on the same input.
    public func inputGradient(_ gradient: Tensor, from end: Int) -> Tensor {
        var g = gradient
        for index in stride(from: end - 1, through: 0, by: -1) {
            let layer = layers[index].layer
            guard !(layer is Dropout) else { continue }
            g = layer.backward(g, inputGradient: true)!
        }
        return g
    }

    /// Freezes every parameter (an attacked teacher learns nothing).
    public func freezeAll() {
        for (_, parameter) in namedParameters { parameter.frozen = true }
    }
}

/// (source, target) test pairs of different classes for the mimicry attack.
public struct MimicryPairs: Sendable {
    public var sources: Tensor
    public var targets: Tensor
    public var sourceLabels: [Int]
    public var targetLabels: [Int]

    /// `count` pairs drawn from `data` (seeded), each of two samples of different classes.
    public init(from data: Dataset, count: Int, seed: UInt64) {
        var generator = SeededGenerator(seed: seed &+ 0xA77A_C4)
        var (sources, targets): ([Int], [Int]) = ([], [])
        while sources.count < count {
            let (s, t) = (Int.random(in: 0..<data.count, using: &generator), Int.random(in: 0..<data.count, using: &generator))
            guard data.labels[s] != data.labels[t] else { continue }
            sources.append(s)
            targets.append(t)
        }
        (self.sources, sourceLabels) = data.batch(sources[...])
        (self.targets, targetLabels) = data.batch(targets[...])
    }

    /// Targeted success against a black-box `student`: of the pairs whose source and target it
    /// classifies correctly, the share whose adversarial image it classifies as the target's class.
    public func success(of student: Network, on adversarial: Tensor) -> (rate: Double, counted: Int) {
        let (source, target, attacked) = (student.predict(sources), student.predict(targets), student.predict(adversarial))
        var (counted, fooled) = (0, 0)
        for i in sourceLabels.indices where source[i] == sourceLabels[i] && target[i] == targetLabels[i] {
            counted += 1
            if attacked[i] == targetLabels[i] { fooled += 1 }
        }
        return (counted == 0 ? 0 : Double(fooled) / Double(counted), counted)
    }
}
