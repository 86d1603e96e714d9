import GraftCore

/// A LoRA pair on a Linear or Conv2d weight W [rows, columns] (a convolution's kernel flattened
/// to [out, in·k·k]), as PEFT builds it: A [rank, columns] (PEFT's kaiming-uniform start), B
/// [rows, rank] (zeros, so training starts from the parent's function), and the layer computes
/// with W + scale·B·A where scale = alpha / rank. W stays frozen; only A and B train.
///
/// The layer runs on the merged weight, so its forward and backward code is the one it always
/// uses; the weight's gradient G then gives the pair's: dA = scale·BᵀG, dB = scale·G·Aᵀ. Exact,
/// and cheap beside the layer's own products (rows·columns·rank).
public final class LowRank {
    /// `lora_A.weight` and `lora_B.weight`, shaped as PEFT saves them.
    public let a: Parameter, b: Parameter
    public let rank: Int
    public let alpha: Double
    let rows: Int, columns: Int
    public var scale: Float { Float(alpha / Double(rank)) }

    /// `weightShape` is the layer's weight: [out, in] or [out, in, k, k].
    init(rank: Int, alpha: Double, weightShape: [Int], generator: inout SeededGenerator) {
        (self.rank, self.alpha) = (rank, alpha)
        rows = weightShape[0]
        columns = weightShape.dropFirst().reduce(1, *)
        let aShape = [rank] + weightShape.dropFirst()
        let bShape = weightShape.count == 4 ? [rows, rank, 1, 1] : [rows, rank]
        a = Parameter("lora_A.weight", shape: aShape, value: uniformInit(rank * columns, fanIn: columns, using: &generator))
        b = Parameter("lora_B.weight", shape: bShape, value: [Float](repeating: 0, count: rows * rank))
    }

    /// W + scale·B·A.
    func merged(_ weight: [Float]) -> [Float] {
        var result = weight
        b.value.withUnsafeBufferPointer { b in
            a.value.withUnsafeBufferPointer { a in
                result.withUnsafeMutableBufferPointer { w in
                    BLAS.gemm(b.baseAddress!, a.baseAddress!, w.baseAddress!, m: rows, n: columns, k: rank, alpha: scale, beta: 1)
                }
            }
        }
        return result
    }

    /// The pair's gradients from the merged weight's gradient G [rows, columns].
    func backward(weightGradient g: [Float]) {
        g.withUnsafeBufferPointer { g in
            b.value.withUnsafeBufferPointer { bv in
                a.gradient.withUnsafeMutableBufferPointer { da in
                    // dA [rank, columns] = scale · Bᵀ [rank, rows] · G [rows, columns]
                    BLAS.gemm(
                        bv.baseAddress!, g.baseAddress!, da.baseAddress!, m: rank, n: columns, k: rows, transposeA: true, alpha: scale)
                }
            }
            a.value.withUnsafeBufferPointer { av in
                b.gradient.withUnsafeMutableBufferPointer { db in
                    // dB [rows, rank] = scale · G [rows, columns] · Aᵀ [columns, rank]
                    BLAS.gemm(
                        g.baseAddress!, av.baseAddress!, db.baseAddress!, m: rows, n: rank, k: columns, transposeB: true, alpha: scale)
                }
            }
        }
    }
}
