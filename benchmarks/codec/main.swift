// `make bench-compress`'s view of Graft's codec on one core: encodes a raw tensor file (and,
// for a delta, its base) as `graft compact` does, decodes it again, checks the round trip byte
// for byte, and prints one JSON line: sizes and encode/decode speeds (median of --runs).
//
//     graft-codec-bench RAW --width 2|4|… [--base RAW] [--runs 5]
import Foundation
import GraftCore

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("graft-codec-bench: \(message)\n".utf8))
    exit(2)
}

let arguments = Array(CommandLine.arguments.dropFirst())
func option(_ name: String) -> String? {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}
let width = Int(option("--width") ?? "1") ?? 1
let basePath = option("--base")
let runs = Int(option("--runs") ?? "5") ?? 5
guard
    let path = arguments.first(where: { !$0.hasPrefix("--") && option("--width") != $0 && option("--base") != $0 && option("--runs") != $0 }
    ), let raw = FileManager.default.contents(atPath: path)
else { fail("usage: RAW --width W [--base RAW]") }
var base: Data?
if let basePath {
    guard let read = FileManager.default.contents(atPath: basePath) else { fail("cannot read \(basePath)") }
    base = read
}
let baseDigest = base.map { Digest.of(Array($0)) }
guard base == nil || base!.count == raw.count else { fail("the base is not the same length") }
let digest = Digest.of(Array(raw))

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
func seconds(_ body: () -> Void) -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

var encoded: [UInt8] = []
var encodeTimes: [Double] = []
raw.withUnsafeBytes { rawBytes in
    (base ?? Data()).withUnsafeBytes { baseBytes in
        for _ in 0..<runs {
            encodeTimes.append(
                seconds {
                    encoded = EncodedLayout.encode(
                        rawBytes, width: width, base: baseDigest.map { ($0, baseBytes) }, lanes: 1)
                })
        }
    }
}
var decodeTimes: [Double] = []
var decoded = [UInt8](repeating: 0, count: raw.count)
let decoder = ChunkDecoder()
encoded.withUnsafeBytes { stored in
    guard let layout = EncodedLayout.parse(stored) else { fail("the encoding does not parse") }
    (base ?? Data()).withUnsafeBytes { baseBytes in
        decoded.withUnsafeMutableBytes { out in
            for _ in 0..<runs {
                decodeTimes.append(
                    seconds {
                        for index in 0..<layout.chunkCount {
                            let range = layout.chunk(index)
                            guard decoder.decode(index, of: layout, stored: stored, into: out.baseAddress! + range.lowerBound) != nil else {
                                fail("chunk \(index) does not decode")
                            }
                            if base != nil {
                                EncodedLayout.xor(
                                    out.baseAddress! + range.lowerBound, baseBytes.baseAddress! + range.lowerBound,
                                    into: out.baseAddress! + range.lowerBound, count: range.count)
                            }
                        }
                    })
            }
        }
    }
}
let report: [String: Any] = [
    "raw_bytes": raw.count, "stored_bytes": encoded.count, "ratio": Double(raw.count) / Double(encoded.count),
    "encode_gbps": Double(raw.count) / median(encodeTimes) / 1e9, "decode_gbps": Double(raw.count) / median(decodeTimes) / 1e9,
    "round_trip": Digest.of(decoded) == digest,
]
print(String(decoding: try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys]), as: UTF8.self))
