/// Which optimiser trains the parameters.
public enum OptimizerKind: String, Sendable, Codable, CaseIterable {
    /// SGD with (heavy-ball) momentum and L2 weight decay, as PyTorch's `SGD`.
    case sgd
    /// Adam with bias correction and L2 weight decay, as PyTorch's `Adam`.
    case adam
}

/// Optimiser settings.
public struct OptimizerSettings: Sendable, Equatable, Codable {
    public var kind: OptimizerKind
    public var learningRate: Float
    public var momentum: Float
    public var weightDecay: Float
    public var beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8

    public init(kind: OptimizerKind = .sgd, learningRate: Float = 0.05, momentum: Float = 0.9, weightDecay: Float = 0) {
        self.kind = kind
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
    }
}

/// Updates trainable parameters from their gradients; frozen ones are never touched.
final class Optimizer {
    let settings: OptimizerSettings
    private var first: [ObjectIdentifier: [Float]] = [:]
    private var second: [ObjectIdentifier: [Float]] = [:]
    private var steps = 0

    init(_ settings: OptimizerSettings) { self.settings = settings }

    func step(_ parameters: [Parameter]) {
        steps += 1
        let s = settings
        let correction1 = 1 - powf(s.beta1, Float(steps)), correction2 = 1 - powf(s.beta2, Float(steps))
        for parameter in parameters where !parameter.frozen {
            let id = ObjectIdentifier(parameter)
            let rate = s.learningRate * parameter.learningRateScale
            let count = parameter.value.count
            switch s.kind {
            case .sgd:
                var velocity = first[id] ?? [Float](repeating: 0, count: count)
                for i in 0..<count {
                    let g = parameter.gradient[i] + s.weightDecay * parameter.value[i]
                    velocity[i] = steps == 1 ? g : s.momentum * velocity[i] + g
                    parameter.value[i] -= rate * velocity[i]
                }
                first[id] = velocity
            case .adam:
                var m = first[id] ?? [Float](repeating: 0, count: count)
                var v = second[id] ?? [Float](repeating: 0, count: count)
                for i in 0..<count {
                    let g = parameter.gradient[i] + s.weightDecay * parameter.value[i]
                    m[i] = s.beta1 * m[i] + (1 - s.beta1) * g
                    v[i] = s.beta2 * v[i] + (1 - s.beta2) * g * g
                    parameter.value[i] -= rate * (m[i] / correction1) / ((v[i] / correction2).squareRoot() + s.epsilon)
                }
                first[id] = m
                second[id] = v
            }
        }
    }
}

#if canImport(Glibc)
    import Glibc
#endif
