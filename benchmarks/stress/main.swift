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
                model: model, file: path, step: step, metrics: [try MetricAssignment(name: "loss", value: Double(generator.next() % 1000) / 1000)])
        } catch { report(error) }
    }
    try? FileManager.default.removeItem(atPath: path)
    try? FileManager.default.removeItem(atPath: parentPath)
    say("write \(model): \(count - errors) of \(count) committed")
case "read":
    let base = try ModelName(arguments[3])
    let stop = arguments[4]
    var rounds = 0
    while !FileManager.default.fileExists(atPath: stop) {
        do {
            _ = try? await registry.best(metric: "loss", scope: .under(base))  // no candidate yet is not an error
            _ = try await registry.lineage(base, metric: "loss")
            _ = try await registry.checkpoints(of: base)
        } catch { report(error) }
        rounds += 1
    }
    say("read: \(rounds) rounds")
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
