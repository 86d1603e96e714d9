import CZstd
import Dispatch
import Synchronization

/// How a blob's bytes are kept in its store (issue 27): a storage encoding only. The blob's
/// address stays the SHA-256 of its raw bytes; every read decodes and is checked against it.
///
/// - `raw`: the bytes as imported.
/// - `bg-zstd`: split into byte planes by dtype width (4 for F32/I32, 2 for BF16/F16, 8 for
///   64-bit types, 1 otherwise), one zstd frame per plane, per 4 MiB chunk.
/// - `xor-bg-zstd`: XOR with a same-length blob of the lineage parent (its *base*, never itself
///   a delta, so a read touches at most two blobs), then as `bg-zstd`.
///
/// The layout is in docs/ARCHITECTURE.md ("Stored encodings"); ``EncodedLayout`` parses it.
public enum BlobCodec: String, Sendable, Codable, CaseIterable {
    case raw
    case bgZstd = "bg-zstd"
    case xorBgZstd = "xor-bg-zstd"

    /// The codec's byte in an encoded blob's header (raw blobs have no header).
    var code: UInt8 {
        switch self {
        case .raw: 0
        case .bgZstd: 1
        case .xorBgZstd: 2
        }
    }

    /// The byte-plane count for a tensor of `dtype` (a safetensors dtype name), 1 for files.
    package static func planes(forDType dtype: String?) -> Int {
        switch dtype {
        case "F32", "I32", "U32": 4
        case "BF16", "F16", "I16", "U16": 2
        case "F64", "I64", "U64": 8
        default: 1
        }
    }
}

/// The header of an encoded blob, parsed and checked against the stored object's size.
///
/// Little-endian throughout:
///
///     0   8  magic "GRAFTZ" 0x00 0x01
///     8   1  codec: 1 bg-zstd, 2 xor-bg-zstd
///     9   1  planes per chunk (w: 1, 2, 4 or 8)
///     10  2  zero
///     12  4  raw bytes per chunk (C, a multiple of 8; the last chunk may be shorter)
///     16  8  raw length (L, a multiple of w)
///     24  32 the base's raw SHA-256 (xor-bg-zstd), zeros (bg-zstd)
///     56  4  chunk count n = ceil(L / C)
///     60  4  zero
///     64  4·n·w  each frame's length, chunk by chunk, plane by plane
///     then the frames in that order: plane p of a chunk of b bytes holds bytes p, p+w, p+2w, …
///     of the chunk (XORed with the base's bytes at the same offsets first, for xor-bg-zstd),
///     as one zstd frame.
package struct EncodedLayout: Sendable {
    package static let magic: [UInt8] = Array("GRAFTZ".utf8) + [0, 1]
    package static let fixedHeader = 64
    /// Raw bytes per chunk: the transfer's chunk, so a streamed read decodes one chunk per piece.
    package static let chunkSize = BlobTransfer.chunkSize

    package let codec: BlobCodec
    package let width: Int
    package let chunkSize: Int
    package let rawLength: Int
    package let base: Digest?
    /// Each frame's byte range in the stored object, chunk-major.
    package let frames: [Range<Int>]
    package var chunkCount: Int { frames.count / width }

    /// The raw byte range chunk `index` covers.
    package func chunk(_ index: Int) -> Range<Int> {
        (index * chunkSize)..<min(rawLength, (index + 1) * chunkSize)
    }

    /// Parses `stored` as an encoded blob; `nil` when it is not one, whole and well formed
    /// (the frames end exactly where the object does).
    package static func parse(_ stored: UnsafeRawBufferPointer) -> EncodedLayout? {
        guard stored.count >= fixedHeader, stored.prefix(8).elementsEqual(magic) else { return nil }
        func u32(_ at: Int) -> Int { Int(stored.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian) }
        func u64(_ at: Int) -> UInt64 { stored.loadUnaligned(fromByteOffset: at, as: UInt64.self).littleEndian }
        let codec: BlobCodec
        switch stored[8] {
        case 1: codec = .bgZstd
        case 2: codec = .xorBgZstd
        default: return nil
        }
        let width = Int(stored[9])
        guard [1, 2, 4, 8].contains(width), stored[10] == 0, stored[11] == 0, u32(60) == 0 else { return nil }
        let chunkSize = u32(12)
        let raw = u64(16)
        guard chunkSize > 0, chunkSize % 8 == 0, chunkSize <= BlobTransfer.chunkSize, raw <= UInt64(Int.max / 2) else { return nil }
        let rawLength = Int(raw)
        guard rawLength % width == 0 else { return nil }
        let baseBytes = Array(stored[24..<56])
        let base: Digest?
        if codec == .xorBgZstd {
            guard baseBytes.contains(where: { $0 != 0 }) else { return nil }
            base = Digest(bytes: baseBytes)
        } else {
            guard baseBytes.allSatisfy({ $0 == 0 }) else { return nil }
            base = nil
        }
        let chunks = u32(56)
        guard chunks == (rawLength + chunkSize - 1) / chunkSize else { return nil }
        let tableEnd = fixedHeader + 4 * chunks * width
        guard tableEnd <= stored.count else { return nil }
        var frames: [Range<Int>] = []
        frames.reserveCapacity(chunks * width)
        var offset = tableEnd
        for index in 0..<(chunks * width) {
            let length = u32(fixedHeader + 4 * index)
            guard length <= stored.count - offset else { return nil }
            frames.append(offset..<(offset + length))
            offset += length
        }
        guard offset == stored.count else { return nil }
        return EncodedLayout(codec: codec, width: width, chunkSize: chunkSize, rawLength: rawLength, base: base, frames: frames)
    }

    /// Encodes `raw` with byte planes of `width` (XORed with `base` first, when given: the base's
    /// digest and its raw bytes, of the same length), chunks spread over `lanes` threads.
    package static func encode(
        _ raw: UnsafeRawBufferPointer, width: Int, base: (digest: Digest, bytes: UnsafeRawBufferPointer)?, lanes: Int = 2, level: Int32 = 1
    ) -> [UInt8] {
        precondition([1, 2, 4, 8].contains(width) && raw.count % width == 0)
        precondition(base == nil || base!.bytes.count == raw.count)
        let chunkSize = Self.chunkSize
        let chunks = (raw.count + chunkSize - 1) / chunkSize
        let tableEnd = fixedHeader + 4 * chunks * width
        // Each chunk compresses into its own slot of the output (the most its frames can take),
        // in parallel; the frames are then moved together. One allocation, no copy per frame.
        let slot = width * ZSTD_compressBound(chunkSize / width)
        let next = Atomic<Int>(0)
        // Read-only views, valid for this call, which waits for every lane.
        nonisolated(unsafe) let raw = raw
        nonisolated(unsafe) let base = base
        return [UInt8](unsafeUninitializedCapacity: tableEnd + chunks * slot) { buffer, count in
            nonisolated(unsafe) let out = buffer.baseAddress!
            nonisolated(unsafe) var sizes = [Int](repeating: 0, count: chunks * width)
            sizes.withUnsafeMutableBufferPointer { sizesBuffer in
                nonisolated(unsafe) let frameSizes = sizesBuffer.baseAddress!
                DispatchQueue.concurrentPerform(iterations: max(1, min(lanes, chunks))) { _ in
                    let context = ZSTD_createCCtx()!
                    defer { ZSTD_freeCCtx(context) }
                    let planes = UnsafeMutableRawPointer.allocate(byteCount: chunkSize, alignment: 64)
                    defer { planes.deallocate() }
                    let mixed = UnsafeMutableRawPointer.allocate(byteCount: chunkSize, alignment: 64)
                    defer { mixed.deallocate() }
                    while true {
                        let index = next.add(1, ordering: .relaxed).oldValue
                        guard index < chunks else { return }
                        let start = index * chunkSize
                        let count = min(chunkSize, raw.count - start)
                        var source = UnsafeRawPointer(raw.baseAddress! + start)
                        if let base {
                            xor(source, UnsafeRawPointer(base.bytes.baseAddress! + start), into: mixed, count: count)
                            source = UnsafeRawPointer(mixed)
                        }
                        split(source, count: count, width: width, into: planes)
                        let planeLength = count / width
                        var at = tableEnd + index * slot
                        for plane in 0..<width {
                            let bound = ZSTD_compressBound(planeLength)
                            let written = ZSTD_compressCCtx(context, out + at, bound, planes + plane * planeLength, planeLength, level)
                            precondition(
                                ZSTD_isError(written) == 0, "zstd refused to compress: \(String(cString: ZSTD_getErrorName(written)))")
                            frameSizes[index * width + plane] = written
                            at += written
                        }
                    }
                }
            }
            var header: [UInt8] = magic
            header += [base == nil ? BlobCodec.bgZstd.code : BlobCodec.xorBgZstd.code, UInt8(width), 0, 0]
            appendLittleEndian(UInt32(chunkSize), to: &header)
            appendLittleEndian(UInt64(raw.count), to: &header)
            header += base?.digest.rawBytes ?? [UInt8](repeating: 0, count: 32)
            appendLittleEndian(UInt32(chunks), to: &header)
            appendLittleEndian(UInt32(0), to: &header)
            for size in sizes { appendLittleEndian(UInt32(size), to: &header) }
            UnsafeMutableRawPointer(out).copyMemory(from: header, byteCount: header.count)
            // Frames together, in order (each moves left, or stays).
            var end = tableEnd
            for index in 0..<chunks {
                let length = sizes[(index * width)..<((index + 1) * width)].reduce(0, +)
                if end != tableEnd + index * slot {
                    UnsafeMutableRawPointer(out + end).copyMemory(from: out + tableEnd + index * slot, byteCount: length)  // may overlap
                }
                end += length
            }
            count = end
        }
    }

    private static func appendLittleEndian<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { out += $0 }
    }

    /// Bytes 0, w, 2w, … to plane 0, bytes 1, w+1, … to plane 1, and so on (planes back to back).
    package static func split(_ source: UnsafeRawPointer, count: Int, width: Int, into planes: UnsafeMutableRawPointer) {
        let n = count / width
        let input = source.assumingMemoryBound(to: UInt8.self)
        let output = planes.assumingMemoryBound(to: UInt8.self)
        switch width {
        case 1: planes.copyMemory(from: source, byteCount: count)
        case 2:
            for j in 0..<n {
                output[j] = input[2 * j]
                output[n + j] = input[2 * j + 1]
            }
        case 4:
            for j in 0..<n {
                let word = source.loadUnaligned(fromByteOffset: 4 * j, as: UInt32.self)
                output[j] = UInt8(truncatingIfNeeded: word)
                output[n + j] = UInt8(truncatingIfNeeded: word >> 8)
                output[2 * n + j] = UInt8(truncatingIfNeeded: word >> 16)
                output[3 * n + j] = UInt8(truncatingIfNeeded: word >> 24)
            }
        default:
            for j in 0..<n {
                for p in 0..<width { output[p * n + j] = input[width * j + p] }
            }
        }
    }

    /// The inverse of ``split(_:count:width:into:)``.
    package static func join(_ planes: UnsafeRawPointer, count: Int, width: Int, into destination: UnsafeMutableRawPointer) {
        let n = count / width
        let input = planes.assumingMemoryBound(to: UInt8.self)
        let output = destination.assumingMemoryBound(to: UInt8.self)
        switch width {
        case 1: destination.copyMemory(from: planes, byteCount: count)
        case 2:
            for j in 0..<n {
                output[2 * j] = input[j]
                output[2 * j + 1] = input[n + j]
            }
        case 4:
            for j in 0..<n {
                let word =
                    UInt32(input[j]) | UInt32(input[n + j]) << 8 | UInt32(input[2 * n + j]) << 16 | UInt32(input[3 * n + j]) << 24
                destination.storeBytes(of: word, toByteOffset: 4 * j, as: UInt32.self)
            }
        default:
            for j in 0..<n {
                for p in 0..<width { output[width * j + p] = input[p * n + j] }
            }
        }
    }

    /// `into = a ^ b`, `count` bytes (`into` may be `a`).
    package static func xor(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, into: UnsafeMutableRawPointer, count: Int) {
        var offset = 0
        while offset + 8 <= count {
            let word = a.loadUnaligned(fromByteOffset: offset, as: UInt64.self) ^ b.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            into.storeBytes(of: word, toByteOffset: offset, as: UInt64.self)
            offset += 8
        }
        while offset < count {
            into.storeBytes(
                of: a.load(fromByteOffset: offset, as: UInt8.self) ^ b.load(fromByteOffset: offset, as: UInt8.self),
                toByteOffset: offset, as: UInt8.self)
            offset += 1
        }
    }
}

/// Decodes the chunks of encoded blobs: a zstd decompression context and a plane buffer.
/// One per thread; not thread-safe.
package final class ChunkDecoder {
    private let context: OpaquePointer
    private let planes: UnsafeMutableRawPointer

    package init() {
        context = ZSTD_createDCtx()!
        planes = UnsafeMutableRawPointer.allocate(byteCount: EncodedLayout.chunkSize, alignment: 64)
    }

    deinit {
        ZSTD_freeDCtx(context)
        planes.deallocate()
    }

    /// Decodes chunk `index` of `layout` (whose object is `stored`) into `out`, before any XOR
    /// with a base. Returns the chunk's byte count, or `nil` when a frame does not decode to
    /// exactly its plane (damage).
    package func decode(_ index: Int, of layout: EncodedLayout, stored: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) -> Int? {
        let range = layout.chunk(index)
        let planeLength = range.count / layout.width
        for plane in 0..<layout.width {
            let frame = layout.frames[index * layout.width + plane]
            let size = ZSTD_decompressDCtx(
                context, planes + plane * planeLength, planeLength, stored.baseAddress! + frame.lowerBound, frame.count)
            guard ZSTD_isError(size) == 0, size == planeLength else { return nil }
        }
        EncodedLayout.join(planes, count: range.count, width: layout.width, into: out)
        return range.count
    }
}
