public import SafeTensors

/// SplitMix64: a small, fast, seeded random number generator, so generated weights are
/// reproducible run to run.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `count` random bytes.
    public mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var i = 0
        while i < count {
            var word = next()
            for _ in 0..<8 where i < count {
                out[i] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                i += 1
            }
        }
        return out
    }
}

/// A generated CNN-shaped base (conv, BatchNorm with its running statistics, linear head),
/// named like a PyTorch `state_dict`. Used by `graft demo` until the training engine makes
/// real ones, and by tests and benchmarks.
public enum SyntheticBase {
    /// The tensors of a small CNN with float32 weights drawn from a seeded generator
    /// (uniform in ±1/√fan-in, as PyTorch initialises linear and conv layers).
    public static func tensors(seed: UInt64, channels: [Int] = [1, 16, 32, 64], classes: Int = 10) -> [TensorData] {
        var generator = SeededGenerator(seed: seed)
        var tensors: [TensorData] = []
        func floats(_ values: [Float]) -> [UInt8] {
            values.withUnsafeBytes { Array($0) }
        }
        func uniform(_ count: Int, bound: Float) -> [UInt8] {
            floats((0..<count).map { _ in (Float(generator.next() >> 40) / Float(1 << 24) * 2 - 1) * bound })
        }
        var index = 0
        for (input, output) in zip(channels, channels.dropFirst()) {
            let fanIn = Float(input * 9)
            tensors.append(
                TensorData(
                    name: "features.\(index).weight", dtype: .f32, shape: [output, input, 3, 3],
                    bytes: uniform(output * input * 9, bound: 1 / fanIn.squareRoot())))
            tensors.append(
                TensorData(
                    name: "features.\(index).bias", dtype: .f32, shape: [output], bytes: uniform(output, bound: 1 / fanIn.squareRoot())))
            let bn = index + 1
            tensors.append(
                TensorData(name: "features.\(bn).weight", dtype: .f32, shape: [output], bytes: floats(Array(repeating: 1, count: output))))
            tensors.append(
                TensorData(name: "features.\(bn).bias", dtype: .f32, shape: [output], bytes: floats(Array(repeating: 0, count: output))))
            tensors.append(
                TensorData(name: "features.\(bn).running_mean", dtype: .f32, shape: [output], bytes: uniform(output, bound: 0.1)))
            tensors.append(
                TensorData(
                    name: "features.\(bn).running_var", dtype: .f32, shape: [output],
                    bytes: floats((0..<output).map { _ in 1 + Float(generator.next() % 100) / 1000 })))
            tensors.append(
                TensorData(
                    name: "features.\(bn).num_batches_tracked", dtype: .i64, shape: [],
                    bytes: withUnsafeBytes(of: Int64(1000).littleEndian) { Array($0) }))
            index += 4  // conv, bn, relu, pool
        }
        let features = channels.last! * 9
        tensors.append(
            TensorData(
                name: "classifier.weight", dtype: .f32, shape: [classes, features],
                bytes: uniform(classes * features, bound: 1 / Float(features).squareRoot())))
        tensors.append(
            TensorData(
                name: "classifier.bias", dtype: .f32, shape: [classes], bytes: uniform(classes, bound: 1 / Float(features).squareRoot())))
        return tensors
    }
}
