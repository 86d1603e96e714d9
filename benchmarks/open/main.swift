// graft-open-bench: how fast a checkpoint opens in place (`Registry.openCheckpoint`).
//
//   graft-open-bench REGISTRY REF [RUNS]
//
// Opens REF RUNS times (default 20) on an already open registry and prints one JSON object with
// the medians, in milliseconds: `open_ms` (resolve, read the tensor list, map every blob),
// `first_tensor_ms` (from the start of the open until the first tensor's first byte is read),
// and, run once, `verify_ms` (rehash every tensor in place, two lanes).
import Foundation
import Graft
import SafeTensors

let arguments = CommandLine.arguments
guard arguments.count >= 3, let reference = try? Reference(parsing: arguments[2]) else {
    FileHandle.standardError.write(Data("usage: graft-open-bench REGISTRY REF [RUNS]\n".utf8))
    exit(64)
}
let runs = arguments.count > 3 ? Int(arguments[3]) ?? 20 : 20
let registry = try await Registry.open(at: arguments[1])
func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e6 }
func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

var open: [Double] = [], first: [Double] = []
var tensors = 0, bytes = 0
var sink: UInt8 = 0
for _ in 0..<runs {
    let start = now()
    let checkpoint = try await registry.openCheckpoint(reference)
    let opened = now()
    sink ^= checkpoint.withData(of: checkpoint.header.tensors[0]) { $0.first ?? 0 }
    first.append(now() - start)
    open.append(opened - start)
    tensors = checkpoint.header.tensors.count
    bytes = checkpoint.checkpoint.fileBytes
}
let checkpoint = try await registry.openCheckpoint(reference)
let verifyStart = now()
try await checkpoint.verify()
let verify = now() - verifyStart
let result: [String: Any] = [
    "ref": reference.description, "tensors": tensors, "bytes": bytes, "runs": runs,
    "open_ms": median(open), "first_tensor_ms": median(first), "verify_ms": verify, "checksum": Int(sink),
]
print(String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys]), as: UTF8.self))
