// graft-stress: the processes of the concurrency harness (tests and `make soak`).
//
//   graft-stress write REGISTRY MODEL COUNT SEED   commit COUNT checkpoints to the student MODEL,
//                                                  each with metrics; its frozen tensors are the parent's
//   graft-stress read REGISTRY BASE STOPFILE       run best --under BASE and lineage BASE until STOPFILE exists
//   graft-stress gc REGISTRY STOPFILE              run gc --grace 0 in a loop until STOPFILE exists
//
// Prints one summary line; any error is printed on stderr and makes the exit status 1.
import Foundation
import Graft
import SafeTensors

let arguments = CommandLine.arguments
guard arguments.count >= 4 else {
    FileHandle.standardError.write(Data("usage: graft-stress write|read|gc REGISTRY …\n".utf8))
    exit(64)
}
let registry = try await Registry.open(at: arguments[2])
var errors = 0
/// One line on stdout, written at once (print's buffer is lost if the process is killed).
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

@MainActor func report(_ error: any Error) {
    errors += 1
    FileHandle.standardError.write(Data("graft-stress \(arguments[1]): \(error)\n".utf8))
}

switch arguments[1] {
case "write":
    let model = try ModelName(arguments[3])
    let count = Int(arguments[4])!, seed = UInt64(arguments[5])!
    let parentPath = NSTemporaryDirectory() + "graft-stress-\(getpid())-parent.safetensors"
    let manifest = try await registry.manifest(of: model)!
    _ = try await registry.export(try Reference(parsing: manifest.parent), to: parentPath, overwrite: true)
    let parent = try MappedSafeTensors(path: parentPath)
    var tensors = parent.header.tensors.map { info in
        TensorData(name: info.name, dtype: info.dtype, shape: info.shape, bytes: parent.withData(of: info) { Array($0) })
    }
    let trainable = Set(manifest.entries.filter { $0.state != .frozen }.map(\.name))
    var generator = SeededGenerator(seed: seed)
    let path = NSTemporaryDirectory() + "graft-stress-\(getpid()).safetensors"
    for step in 1...count {
        for index in tensors.indices where trainable.contains(tensors[index].name) {
            tensors[index].bytes = generator.bytes(tensors[index].bytes.count)
        }
        do {
            try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: path)
            _ = try await registry.addCheckpoint(
                model: model, file: path, step: step,
                metrics: [try MetricAssignment(name: "loss", value: Double(generator.next() % 1000) / 1000)])
        } catch { report(error) }
    }
    try? FileManager.default.removeItem(atPath: path)
    try? FileManager.default.removeItem(atPath: parentPath)
    say("write \(model): \(count - errors) of \(count) committed")
case "read":
    // Every answer is checked, not only the absence of errors: the base has one checkpoint and
    // four students; the students' checkpoint counts never go down; the best loss (lowest) is a
    // student's, in [0, 1), and never rises, since checkpoints are only ever added.
    let base = try ModelName(arguments[3])
    let stop = arguments[4]
    var rounds = 0, bestSeen = Double.infinity, countSeen = 0
    struct Wrong: Error, CustomStringConvertible { let description: String }
    while !FileManager.default.fileExists(atPath: stop) {
        do {
            do {
                let best = try await registry.best(metric: "loss", scope: .under(base))
                guard best.checkpoint.model.description.hasPrefix("s"), (0..<1).contains(best.value), best.value <= bestSeen else {
                    throw Wrong(description: "best \(best.checkpoint.ref) = \(best.value) after \(bestSeen)")
                }
                bestSeen = best.value
            } catch GraftError.unknownMetric {
                // No student has committed yet: the one answer allowed before the first commit.
                guard countSeen == 0 else { throw Wrong(description: "no candidate for best after \(countSeen) checkpoints were seen") }
            }
            let lineage = try await registry.lineage(base, metric: "loss")
            let count = lineage.descendants.reduce(0) { $0 + $1.checkpoints }
            guard lineage.descendants.count == 4, count >= countSeen else {
                throw Wrong(description: "lineage: \(lineage.descendants.count) students, \(count) checkpoints after \(countSeen)")
            }
            countSeen = count
            let own = try await registry.checkpoints(of: base)
            guard own.map(\.ref) == ["\(base)@1"] else { throw Wrong(description: "checkpoints of \(base): \(own.map(\.ref))") }
        } catch { report(error) }
        rounds += 1
    }
    say("read: \(rounds) rounds, \(countSeen) checkpoints seen")
case "gc":
    let stop = arguments[3]
    var rounds = 0
    while !FileManager.default.fileExists(atPath: stop) {
        do { _ = try await registry.gc(grace: 0) } catch { report(error) }
        rounds += 1
    }
    say("gc: \(rounds) rounds")
default:
    FileHandle.standardError.write(Data("unknown mode \(arguments[1])\n".utf8))
    exit(64)
}
exit(errors == 0 ? 0 : 1)
