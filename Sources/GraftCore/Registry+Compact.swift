import Crypto
import Dispatch
import Synchronization

/// What `graft compact` did (or, with `dryRun`, would do).
public struct CompactResult: Sendable, Codable, Equatable {
    public var dryRun: Bool
    /// Stored blobs looked at: raw ones never tried before (earlier runs' are skipped).
    public var examined: Int
    /// Of those, how many each codec now keeps (`raw`: tried, kept raw — no codec saved 5%).
    public var encoded: [CodecUsage]
    /// Raw bytes of the blobs examined, and what they take in the store after this run.
    public var rawBytes: Int
    public var storedBytes: Int
    /// `1 - storedBytes / rawBytes` (0 when nothing was examined).
    public var saving: Double
    /// Blobs that could not be encoded (damaged, or removed meanwhile), by digest, with why;
    /// `verify` says more. They stay as they were.
    public var skipped: [String]
    public var seconds: Double

    package init(dryRun: Bool) {
        (self.dryRun, examined, encoded, rawBytes, storedBytes, saving, skipped, seconds) = (dryRun, 0, [], 0, 0, 0, [], 0)
    }
}

/// Progress of a running compaction, for progress lines.
public struct CompactProgress: Sendable {
    public var blobs: Int
    public var totalBlobs: Int
    public var rawBytes: Int
    public var totalRawBytes: Int
}

extension Registry {
    /// A codec is kept only when it saves at least this share over the next simpler one.
    package static let minimumSaving = 0.05
    /// Blobs smaller than this stay raw (an encoding's header and table would eat the saving).
    package static let smallestEncoded = 4096

    /// Re-encodes stored blobs (all, or those of `under` and its descendants) that earlier runs
    /// have not tried: byte planes + zstd, or an XOR delta against the same tensor of the
    /// nearest lineage ancestor whose blob is not itself a delta, whichever is smallest and saves
    /// at least 5% over the next simpler form. Each blob: encoded in memory (chunks in parallel),
    /// decoded again and checked against its digest, a delta's base recorded first, the new form
    /// written to temporary storage and renamed over the old one, then its encoding recorded. A
    /// kill at any point leaves every blob readable; a re-run resumes.
    public func compact(
        under: ModelName? = nil, dryRun: Bool = false, lanes: Int = 2,
        progress: (@Sendable (CompactProgress) -> Void)? = nil
    ) async throws(GraftError) -> CompactResult {
        let clock = ContinuousClock.now
        let inventory = try await metadata.compactionInventory()
        var scope: Set<Int64>?
        if let under {
            guard try await metadata.modelID(named: under) != nil else { throw try await notFound(under) }
            scope = try await subtree(of: under)
        }
        var encodings = inventory.encodings
        var byCheckpoint: [Int64: [String: CompactionRow]] = [:]
        var parentOf: [Int64: Int64] = [:]
        for row in inventory.rows {
            byCheckpoint[row.checkpoint, default: [:]][row.name] = row
            if let parent = row.parentCheckpoint { parentOf[row.checkpoint] = parent }
        }
        // Each blob once, at its first use (parents' before students').
        var seen: Set<Digest> = []
        var candidates: [CompactionRow] = []
        for row in inventory.rows where scope?.contains(row.model) ?? true && row.length >= Self.smallestEncoded {
            guard seen.insert(row.digest).inserted else { continue }
            let encoding = encodings[row.digest] ?? .raw
            // Raw and never tried (stored_length unset), or a delta interrupted before it was recorded.
            guard encoding.codec == .raw, encoding.storedLength == nil else { continue }
            candidates.append(row)
        }
        var result = CompactResult(dryRun: dryRun)
        var counts: [BlobCodec: CodecUsage] = [:]
        let total = CompactProgress(
            blobs: 0, totalBlobs: candidates.count, rawBytes: 0, totalRawBytes: candidates.reduce(0) { $0 + $1.length })
        var done = total
        done.blobs = 0
        var bases = Set(encodings.values.compactMap(\.base))
        var verifiedBases: Set<Digest> = []
        // Each blob is whole before the next starts: a cancelled task (a server shutting down)
        // stops between two, and the next run resumes.
        for row in candidates where !Task.isCancelled {
            // A blob some delta is taken against is never itself a delta.
            let base = bases.contains(row.digest) ? nil : deltaBase(for: row, rows: byCheckpoint, parents: parentOf, encodings: encodings)
            let outcome: (encoding: BlobEncoding, bytes: [UInt8]?)
            do {
                let baseVerified = base.map { verifiedBases.contains($0) } ?? false
                outcome = try await offload { [blobs] () throws(GraftError) in
                    try Self.chooseEncoding(row, base: base, baseVerified: baseVerified, blobs: blobs, lanes: lanes)
                }
                if let base { verifiedBases.insert(base) }
            } catch {
                result.skipped.append("\(row.digest): \(error)")
                continue
            }
            var encoding = outcome.encoding
            if !dryRun {
                if let bytes = outcome.bytes {
                    encoding = try await store(row.digest, bytes: bytes, as: encoding, recorded: encodings[row.digest])
                } else {
                    _ = try await metadata.setEncoding(row.digest, encoding)
                }
            }
            // A dry run plans on as a real run would (a blob it would make a delta is no base).
            encodings[row.digest] = encoding
            if let base = encoding.base { bases.insert(base) }
            result.examined += 1
            result.rawBytes += row.length
            result.storedBytes += encoding.storedLength ?? row.length
            var usage = counts[encoding.codec] ?? CodecUsage(codec: encoding.codec, blobs: 0, rawBytes: 0, storedBytes: 0)
            usage.blobs += 1
            usage.rawBytes += row.length
            usage.storedBytes += encoding.storedLength ?? row.length
            counts[encoding.codec] = usage
            done.blobs += 1
            done.rawBytes += row.length
            progress?(done)
        }
        result.encoded = CodecUsage.complete(Array(counts.values))
        result.saving = result.rawBytes == 0 ? 0 : 1 - Double(result.storedBytes) / Double(result.rawBytes)
        result.seconds = (ContinuousClock.now - clock).seconds
        return result
    }

    /// The ids of `name` and every model below it.
    private func subtree(of name: ModelName) async throws(GraftError) -> Set<Int64> {
        let index = try await metadata.modelIndex()
        var children: [String: [String]] = [:]
        for entry in index {
            if let parent = entry.parent, let at = parent.lastIndex(of: "@") {
                children[String(parent[..<at]), default: []].append(entry.name)
            }
        }
        var names = [name.description]
        var ids: Set<Int64> = []
        while let next = names.popLast() {
            if let parsed = try? ModelName(next), let id = try await metadata.modelID(named: parsed) { ids.insert(id) }
            names += children[next] ?? []
        }
        return ids
    }

    /// The blob of the same tensor (name, dtype, length) in the nearest ancestor checkpoint
    /// whose blob is not a delta (nor being made one), if any.
    private func deltaBase(
        for row: CompactionRow, rows: [Int64: [String: CompactionRow]], parents: [Int64: Int64], encodings: [Digest: BlobEncoding]
    ) -> Digest? {
        guard row.dtype != nil else { return nil }
        var checkpoint = row.parentCheckpoint
        var depth = 0
        while let current = checkpoint, depth < 64 {
            depth += 1
            guard let ancestor = rows[current]?[row.name], ancestor.dtype == row.dtype, ancestor.length == row.length else { return nil }
            let encoding = encodings[ancestor.digest] ?? .raw
            if ancestor.digest != row.digest, encoding.codec != .xorBgZstd, encoding.base == nil { return ancestor.digest }
            checkpoint = parents[current]
        }
        return nil
    }

    /// Encodes one blob every way that applies, keeps the smallest that saves 5% over the next
    /// simpler one, and checks it decodes to the blob's digest. `bytes` is nil when raw stays.
    /// With a base, the delta is encoded whole and the planes-only size estimated from every
    /// eighth chunk (encoded whole only when the delta does not win). The base is rehashed unless
    /// `baseVerified` (this run did already): a delta must never be taken against damaged bytes
    /// (repairing the base later would change what the delta decodes to).
    /// - Throws: ``GraftError/damagedBlob(_:reason:)`` when the blob (or its base) is damaged.
    package static func chooseEncoding(
        _ row: CompactionRow, base: Digest?, baseVerified: Bool, blobs: BlobTransfer, lanes: Int
    ) throws(GraftError) -> (encoding: BlobEncoding, bytes: [UInt8]?) {
        let width = BlobCodec.planes(forDType: row.dtype)
        let raw = try blobs.map(row.digest, length: row.length)
        let limit = Double(row.length) * (1 - minimumSaving)
        var best: (codec: BlobCodec, bytes: [UInt8])?
        var baseBytes: (any BlobBytes)?
        if let base {
            let mapped = try blobs.map(base, length: row.length)
            baseBytes = mapped
            if !baseVerified, Digest(SHA256.hash(data: mapped.bytes)) != base {
                throw .damagedBlob(base, reason: "its bytes no longer match the digest (found while taking a delta against it)")
            }
            let delta = EncodedLayout.encode(raw.bytes, width: width, base: (base, mapped.bytes), lanes: lanes)
            let planes = estimatedPlanes(raw.bytes, width: width, lanes: lanes)
            if Double(delta.count) <= min(limit, planes * (1 - minimumSaving)) { best = (.xorBgZstd, delta) }
        }
        if best == nil {
            let planes = EncodedLayout.encode(raw.bytes, width: width, base: nil, lanes: lanes)
            if Double(planes.count) <= limit { best = (.bgZstd, planes) }
        }
        guard let best else {
            // Kept raw: checked as it is (a damaged blob is reported, not marked tried).
            guard Digest(SHA256.hash(data: raw.bytes)) == row.digest else {
                throw .damagedBlob(row.digest, reason: "its bytes no longer match the digest")
            }
            return (BlobEncoding(codec: .raw, storedLength: row.length, base: nil), nil)
        }
        // The encoding must decode to the blob's bytes, and they to its digest, before it may replace anything.
        try check(
            best.bytes, raw: raw.bytes, base: best.codec == .xorBgZstd ? baseBytes?.bytes : nil, digest: row.digest, lanes: lanes)
        return (BlobEncoding(codec: best.codec, storedLength: best.bytes.count, base: best.codec == .xorBgZstd ? base : nil), best.bytes)
    }

    /// The planes-only encoding's size estimated from every eighth chunk (all of a small blob).
    private static func estimatedPlanes(_ raw: UnsafeRawBufferPointer, width: Int, lanes: Int) -> Double {
        let chunk = EncodedLayout.chunkSize
        let chunks = (raw.count + chunk - 1) / chunk
        guard chunks > 8 else { return Double(EncodedLayout.encode(raw, width: width, base: nil, lanes: lanes).count) }
        var sample: [UInt8] = []
        sample.reserveCapacity((chunks / 8 + 1) * chunk)
        for index in stride(from: 0, to: chunks, by: 8) {
            sample += UnsafeRawBufferPointer(rebasing: raw[(index * chunk)..<min(raw.count, (index + 1) * chunk)])
        }
        let encoded = sample.withUnsafeBytes { EncodedLayout.encode($0, width: width, base: nil, lanes: lanes) }
        return Double(encoded.count) * Double(raw.count) / Double(sample.count)
    }

    /// Checks that `encoded` decodes (XORed with `base`, for a delta) to exactly `raw`, and that
    /// `raw` hashes to `digest`: the chunks are decoded and compared in `lanes` lanes while
    /// another hashes the raw bytes.
    package static func check(
        _ encoded: [UInt8], raw: UnsafeRawBufferPointer, base: UnsafeRawBufferPointer?, digest: Digest, lanes: Int
    ) throws(GraftError) {
        let failure = Mutex<GraftError?>(nil)
        encoded.withUnsafeBytes { stored in
            guard let layout = EncodedLayout.parse(stored), layout.rawLength == raw.count, (layout.base == nil) == (base == nil) else {
                failure.withLock { $0 = .damagedBlob(digest, reason: "its new encoding does not parse") }
                return
            }
            let next = Atomic<Int>(0)
            nonisolated(unsafe) let (stored, raw, base) = (stored, raw, base)
            DispatchQueue.concurrentPerform(iterations: max(1, lanes) + 1) { lane in
                if lane == 0 {
                    if Digest(SHA256.hash(data: raw)) != digest {
                        failure.withLock { $0 = $0 ?? .damagedBlob(digest, reason: "its bytes no longer match the digest") }
                    }
                    return
                }
                let decoder = ChunkDecoder()
                let buffer = UnsafeMutableRawPointer.allocate(byteCount: layout.chunkSize, alignment: 64)
                defer { buffer.deallocate() }
                while failure.withLock({ $0 == nil }) {
                    let index = next.add(1, ordering: .relaxed).oldValue
                    guard index < layout.chunkCount else { return }
                    let range = layout.chunk(index)
                    guard decoder.decode(index, of: layout, stored: stored, into: buffer) == range.count else {
                        failure.withLock { $0 = $0 ?? .damagedBlob(digest, reason: "its new encoding does not decode") }
                        return
                    }
                    if let base { EncodedLayout.xor(buffer, base.baseAddress! + range.lowerBound, into: buffer, count: range.count) }
                    guard Self.same(UnsafeRawPointer(buffer), raw.baseAddress! + range.lowerBound, count: range.count) else {
                        failure.withLock { $0 = $0 ?? .damagedBlob(digest, reason: "its new encoding decodes to other bytes") }
                        return
                    }
                }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }

    /// Whether `count` bytes at `a` and `b` are equal (eight at a time).
    private static func same(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int) -> Bool {
        var offset = 0
        while offset + 8 <= count {
            if a.loadUnaligned(fromByteOffset: offset, as: UInt64.self) != b.loadUnaligned(fromByteOffset: offset, as: UInt64.self) {
                return false
            }
            offset += 8
        }
        while offset < count {
            if a.load(fromByteOffset: offset, as: UInt8.self) != b.load(fromByteOffset: offset, as: UInt8.self) { return false }
            offset += 1
        }
        return true
    }

    /// Writes a blob's new stored form with the crash protocol: a delta's base recorded first,
    /// the new object renamed over the old and flushed, then the encoding recorded.
    private func store(_ digest: Digest, bytes: [UInt8], as encoding: BlobEncoding, recorded: BlobEncoding?) async throws(GraftError)
        -> BlobEncoding
    {
        if let base = encoding.base, recorded?.base != base {
            guard try await metadata.setEncoding(digest, BlobEncoding(codec: .raw, storedLength: nil, base: base)) else {
                return .raw  // removed meanwhile
            }
        }
        let store = blobs.store
        try await offload { () throws(GraftError) in
            if let base = encoding.base, !store.contains(base, claim: false) {
                throw .damagedBlob(base, reason: "the base of a delta vanished while it was written")
            }
            let write = try store.beginWrite()
            do throws(GraftError) {
                try bytes.withUnsafeBytes { raw in Result { () throws(GraftError) in try write.write(raw) } }.get()
                try write.replace(digest)
            } catch {
                write.abort()
                throw error
            }
            try store.flush([digest])
        }
        guard try await metadata.setEncoding(digest, encoding) else { return .raw }
        return encoding
    }
}

extension Duration {
    fileprivate var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
