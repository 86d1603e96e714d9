// `make bench-train`: the engine's dense math and training speed on this machine.
//
// 1. GEMM: GFLOP/s of a Linear layer's forward pass (the engine: bias, allocation, sgemm) and of
//    a Conv2d forward (im2col + sgemm), against OpenBLAS's own cblas_sgemm on the same shapes.
// 2. Training samples/s per transfer mode on Fashion-MNIST classes 5-9 with the demo's CNN,
//    and feature extraction's epoch speed-up over full fine-tuning on the same data.
// Medians of repeated runs; the machine is shared, so ratios are the figures to quote.
import COpenBLAS
import Foundation
import Graft
import Trainer

func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

/// Median seconds of `body` over `runs`, after one warm-up.
func time(runs: Int, _ body: () -> Void) -> Double {
    body()
    return median(
        (0..<runs).map { _ in
            let start = now()
            body()
            return now() - start
        })
}

let arguments = CommandLine.arguments
let threads = arguments.firstIndex(of: "--threads").flatMap { Int(arguments[$0 + 1]) } ?? 1
let dataPath = arguments.firstIndex(of: "--data").map { arguments[$0 + 1] } ?? "/usr/share/datasets/fashion-mnist"
BLAS.setThreads(threads)
print("OpenBLAS threads: \(BLAS.threads)")

print("\n## GEMM: the engine against OpenBLAS's sgemm (median GFLOP/s)\n")
print("| shape (M×K · K×N) | what | engine | OpenBLAS sgemm | ratio |")
print("|---|---|---:|---:|---:|")
var generator = SeededGenerator(seed: 1)
for (m, k, n) in [(64, 784, 64), (256, 1024, 256), (512, 512, 512), (1024, 1024, 1024)] {
    let layer = Linear(inputs: k, outputs: n, generator: &generator)
    let input = Tensor(shape: [m, k], data: (0..<(m * k)).map { _ in Float.random(in: -1..<1, using: &generator) })
    let flops = 2.0 * Double(m * n * k)
    let runs = max(5, Int(2e9 / flops))
    let engine = time(runs: runs) { _ = layer.forward(input, training: false) }
    var c = [Float](repeating: 0, count: m * n)
    let raw = time(runs: runs) {
        input.data.withUnsafeBufferPointer { a in
            layer.weight.value.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { out in
                    cblas_sgemm(
                        CblasRowMajor, CblasNoTrans, CblasTrans, blasint(m), blasint(n), blasint(k), 1, a.baseAddress, blasint(k),
                        b.baseAddress, blasint(k), 0, out.baseAddress, blasint(n))
                }
            }
        }
    }
    print(
        String(
            format: "| %d×%d · %d×%d | Linear forward | %.1f | %.1f | %.2f |", m, k, k, n, flops / engine / 1e9, flops / raw / 1e9,
            raw / engine))
}
for (batch, channels, size, out) in [(64, 1, 28, 8), (64, 8, 14, 16)] {
    let conv = Conv2d(inChannels: channels, outChannels: out, kernel: 3, padding: 1, generator: &generator)
    let input = Tensor(
        shape: [batch, channels, size, size],
        data: (0..<(batch * channels * size * size)).map { _ in Float.random(in: -1..<1, using: &generator) })
    let rows = batch * size * size, patch = channels * 9
    let flops = 2.0 * Double(rows * patch * out)
    let engine = time(runs: 20) { _ = conv.forward(input, training: false) }
    let columns = [Float](repeating: 0.5, count: rows * patch)
    var c = [Float](repeating: 0, count: rows * out)
    let raw = time(runs: 20) {
        columns.withUnsafeBufferPointer { a in
            conv.weight.value.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { o in
                    cblas_sgemm(
                        CblasRowMajor, CblasNoTrans, CblasTrans, blasint(rows), blasint(out), blasint(patch), 1, a.baseAddress,
                        blasint(patch), b.baseAddress, blasint(patch), 0, o.baseAddress, blasint(out))
                }
            }
        }
    }
    print(
        String(
            format: "| %d×%d · %d×%d | Conv2d %d→%d on %d×%d, batch %d (im2col + GEMM) | %.1f | %.1f | %.2f |", rows, patch, patch, out,
            channels, out, size, size, batch, flops / engine / 1e9, flops / raw / 1e9, raw / engine))
}

print("\n## Training samples/s per transfer mode (cnn-small, Fashion-MNIST classes 5-9, 5,000 images, batch 32)\n")
let all = try Dataset.load(dataPath)
let (train, validation) = try DataSelection(classes: Array(5...9), perClass: 1000, validationPerClass: 100, seed: 1).split(all)
let architecture = try Architecture(spec: "cnn-small", input: train.sampleShape, classes: 5)
print("| mode | trainable parameters | samples/s (median of 3 epochs) | epoch seconds | one-time feature pass |")
print("|---|---:|---:|---:|---:|")
var epochSeconds: [String: Double] = [:]
for plan in [TransferPlan.featureExtraction, .freezeBlocks(2), .freezeBlocks(1), .fullFinetune] {
    let network = try Network(architecture, seed: 1)
    let states = try Engine.manifest(for: plan, network: network)
    for (name, parameter) in network.namedParameters { parameter.frozen = states[name] == .frozen }
    let loop = try TrainingLoop(network: network, settings: TrainingSettings(epochs: 4, batchSize: 32))
    _ = loop.epoch(train: train, validation: validation)  // the first epoch pays for the feature pass
    let reports = (0..<3).map { _ in loop.epoch(train: train, validation: validation) }
    let rate = median(reports.map(\.samplesPerSecond))
    epochSeconds[plan.label] = Double(train.count) / rate
    print(
        String(
            format: "| %@ | %@ | %.0f | %.3f | %.2f s |", plan.label, "\(network.trainableParameterCount)", rate,
            Double(train.count) / rate, loop.cacheSeconds))
}
let speedup = epochSeconds["full-finetune"]! / epochSeconds["feature-extraction"]!
print(
    String(
        format: "\nfeature-extraction epoch speed-up over full fine-tuning: %.0f× (training steps of one epoch, same 5,000 images)", speedup
    ))
