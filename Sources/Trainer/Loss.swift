#if canImport(Glibc)
    import Glibc
#endif

/// Softmax cross-entropy, averaged over the batch.
public enum SoftmaxCrossEntropy {
    /// The mean loss, dLoss/dLogits, and how many rows predict their label.
    public static func evaluate(logits: Tensor, labels: [Int]) -> (loss: Float, gradient: Tensor, correct: Int) {
        let n = logits.batch, k = logits.sampleSize
        var gradient = [Float](repeating: 0, count: n * k)
        var total: Double = 0
        var correct = 0
        for row in 0..<n {
            let base = row * k
            var maximum = -Float.infinity, argmax = 0
            for j in 0..<k where logits.data[base + j] > maximum {
                maximum = logits.data[base + j]
                argmax = j
            }
            if argmax == labels[row] { correct += 1 }
            var sum: Float = 0
            for j in 0..<k {
                let e = expf(logits.data[base + j] - maximum)
                gradient[base + j] = e
                sum += e
            }
            total += Double(logf(sum) + maximum - logits.data[base + labels[row]])
            for j in 0..<k { gradient[base + j] = gradient[base + j] / sum / Float(n) }
            gradient[base + labels[row]] -= 1 / Float(n)
        }
        return (Float(total / Double(n)), Tensor(shape: logits.shape, data: gradient), correct)
    }
}
