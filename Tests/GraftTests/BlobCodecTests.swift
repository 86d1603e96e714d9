import Foundation
import GraftTestSupport
import Testing

@testable import Graft
@testable import GraftCore

/// Float-like bytes: `count` little-endian values of `width` bytes whose high byte varies little
/// (as weights' sign and exponent do), the rest random — what byte planes are for.
func weightLike(_ count: Int, width: Int, seed: UInt64) -> [UInt8] {
    var generator = SeededGenerator(seed: seed)
    var out = randomBytes(count * width, using: &generator)
    for index in 0..<count { out[index * width + width - 1] = 0x3C | (out[index * width + width - 1] & 0x81) }
    return out
}

/// Encodes and decodes through the codec alone (no store): every chunk, XORed with `base` when given.
func decodeAll(_ encoded: [UInt8], base: [UInt8]?) -> [UInt8]? {
    encoded.withUnsafeBytes { stored -> [UInt8]? in
        guard let layout = EncodedLayout.parse(stored) else { return nil }
        var out = [UInt8](repeating: 0, count: layout.rawLength)
        let decoder = ChunkDecoder()
        for index in 0..<layout.chunkCount {
            let range = layout.chunk(index)
            let done = out.withUnsafeMutableBytes {
                decoder.decode(index, of: layout, stored: stored, into: $0.baseAddress! + range.lowerBound)
            }
            guard done == range.count else { return nil }
        }
        if let base { for i in out.indices { out[i] ^= base[i] } }
        return out
    }
}

@Suite("Stored encodings: byte planes + zstd, XOR deltas")
struct BlobCodecTests {
    @Test("planes split and join back for every width; a dtype picks its width", arguments: [1, 2, 4, 8])
    func planes(width: Int) {
        let data = weightLike(1001, width: width, seed: UInt64(width))
        var planes = [UInt8](repeating: 0, count: data.count), back = planes
        data.withUnsafeBytes { source in
            planes.withUnsafeMutableBytes {
                EncodedLayout.split(source.baseAddress!, count: data.count, width: width, into: $0.baseAddress!)
            }
        }
        // Plane p holds bytes p, p+w, … : the documented layout a second reader relies on.
        let n = data.count / width
        for p in 0..<width {
            #expect(Array(planes[(p * n)..<((p + 1) * n)]) == stride(from: p, to: data.count, by: width).map { data[$0] })
        }
        planes.withUnsafeBytes { source in
            back.withUnsafeMutableBytes { EncodedLayout.join(source.baseAddress!, count: data.count, width: width, into: $0.baseAddress!) }
        }
        #expect(back == data)
        #expect(BlobCodec.planes(forDType: "F32") == 4 && BlobCodec.planes(forDType: "BF16") == 2)
        #expect(BlobCodec.planes(forDType: "F64") == 8 && BlobCodec.planes(forDType: "U8") == 1 && BlobCodec.planes(forDType: nil) == 1)
    }

    @Test("bg-zstd round-trips over several chunks (the last one short) and stores weight-like bytes smaller")
    func roundTrip() throws {
        // 2.5 chunks of F32.
        let data = weightLike(EncodedLayout.chunkSize * 5 / 8, width: 4, seed: 9)
        let encoded = data.withUnsafeBytes { EncodedLayout.encode($0, width: 4, base: nil, lanes: 2) }
        let layout = try #require(encoded.withUnsafeBytes { EncodedLayout.parse($0) })
        #expect(layout.codec == .bgZstd && layout.width == 4 && layout.rawLength == data.count && layout.base == nil)
        #expect(layout.chunkCount == 3 && layout.chunk(2).count == data.count - 2 * EncodedLayout.chunkSize)
        #expect(Array(encoded.prefix(8)) == Array("GRAFTZ".utf8) + [0, 1])
        #expect(decodeAll(encoded, base: nil) == data)
        // The high plane holds 3 of 8 bits' worth of variety: a quarter of the bytes nearly vanish.
        #expect(Double(encoded.count) < Double(data.count) * 0.85, "\(encoded.count) of \(data.count)")
    }

    @Test("xor-bg-zstd names its base and needs it: a small change from the base stores far smaller than the tensor alone")
    func delta() throws {
        let base = weightLike(300_000, width: 2, seed: 11)
        var tuned = base
        for index in stride(from: 0, to: tuned.count, by: 2) where index % 14 == 0 { tuned[index] ^= 0x01 }  // low mantissa bits move
        let baseDigest = Digest.of(base)
        let delta = tuned.withUnsafeBytes { raw in base.withUnsafeBytes { EncodedLayout.encode(raw, width: 2, base: (baseDigest, $0)) } }
        let alone = tuned.withUnsafeBytes { EncodedLayout.encode($0, width: 2, base: nil) }
        let layout = try #require(delta.withUnsafeBytes { EncodedLayout.parse($0) })
        #expect(layout.codec == .xorBgZstd && layout.base == baseDigest)
        #expect(decodeAll(delta, base: base) == tuned)
        #expect(decodeAll(delta, base: nil) != tuned, "without its base the delta is not the tensor")
        #expect(delta.count * 5 < alone.count, "delta \(delta.count), alone \(alone.count)")
    }

    @Test("a malformed encoding does not parse, and a damaged frame does not decode")
    func malformed() {
        let data = weightLike(50_000, width: 4, seed: 12)
        let encoded = data.withUnsafeBytes { EncodedLayout.encode($0, width: 4, base: nil) }
        func parses(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBytes { EncodedLayout.parse($0) != nil } }
        #expect(parses(encoded))
        let truncated = parses(Array(encoded.dropLast())), extended = parses(encoded + [0])
        #expect(!truncated && !extended, "a byte short, a byte past the last frame")
        // One byte changed in the header: magic, codec, width, raw length (its chunk count), a base on bg-zstd.
        for (offset, value) in [(0, UInt8(0x47 ^ 1)), (8, 3), (9, 3), (19, encoded[19] ^ 1), (24, 1)] {
            var wrong = encoded
            wrong[offset] = value
            let accepted = parses(wrong)
            #expect(!accepted, "byte \(offset) = \(value)")
        }
        // A flipped byte inside a frame: the frame decodes to something else or not at all.
        var wrong = encoded
        wrong[wrong.count - 10] ^= 0xFF
        let decoded = decodeAll(wrong, base: nil)
        #expect(decoded == nil || decoded! != data)
    }

    @Test("compact's check refuses an encoding of other bytes, a delta checked without its base, and raw bytes off their digest")
    func compactionCheck() throws {
        let data = weightLike(300_000, width: 4, seed: 31)
        var other = data
        other[123_457] ^= 0x10
        let digest = Digest.of(data)
        let encoded = data.withUnsafeBytes { EncodedLayout.encode($0, width: 4, base: nil) }
        let wrong = other.withUnsafeBytes { EncodedLayout.encode($0, width: 4, base: nil) }
        try data.withUnsafeBytes { raw in
            try Registry.check(encoded, raw: raw, base: nil, digest: digest, lanes: 2)
            #expect { try Registry.check(wrong, raw: raw, base: nil, digest: digest, lanes: 2) } throws: { "\($0)".contains("other bytes") }
        }
        other.withUnsafeBytes { raw in
            let refused = #expect { try Registry.check(wrong, raw: raw, base: nil, digest: digest, lanes: 2) } throws: {
                "\($0)".contains("digest")
            }
            _ = refused
        }
        let base = weightLike(300_000, width: 4, seed: 32)
        let delta = data.withUnsafeBytes { raw in base.withUnsafeBytes { EncodedLayout.encode(raw, width: 4, base: (Digest.of(base), $0)) }
        }
        try data.withUnsafeBytes { raw in
            try base.withUnsafeBytes { try Registry.check(delta, raw: raw, base: $0, digest: digest, lanes: 1) }
            #expect { try Registry.check(delta, raw: raw, base: nil, digest: digest, lanes: 1) } throws: {
                "\($0)".contains("does not parse")
            }
            other.withUnsafeBytes { wrongBase in
                let refused = #expect { try Registry.check(delta, raw: raw, base: wrongBase, digest: digest, lanes: 1) } throws: { _ in true
                }
                _ = refused
            }
        }
    }
}
