import Crypto
import Dispatch
package import SafeTensors
import Synchronization

/// Where the registry keeps tensor bytes: the seam between the registry and its storage.
///
/// A blob is the bytes of one tensor, named by their SHA-256 (``Digest``). The registry reaches
/// blob bytes only through this protocol: import writes through ``beginWrite()``, export and
/// `verify` read through ``read(_:at:count:into:)``, `openCheckpoint` maps through
/// ``map(_:length:)``, `gc` lists and removes through ``inventory()`` and ``remove(_:)``.
/// Hashing happens above the store (in lanes, while bytes stream): a store never computes a
/// digest, it files bytes under the digest it is given. Tensors under the inline threshold
/// are not blobs of a store: the metadata store keeps their bytes (see docs/ARCHITECTURE.md).
///
/// Calls block (they are file or network I/O); the registry makes them from Dispatch threads,
/// never from Swift's cooperative pool. Every method is safe to call from many threads.
///
/// A stored encoding may differ from the raw bytes (compressed, delta-coded against a parent):
/// the digest stays the SHA-256 of the raw tensor bytes, and ``read(_:at:count:into:)`` and
/// ``map(_:length:)`` return raw bytes.
public protocol BlobStore: Sendable {
    /// Starts writing a new blob to temporary storage; nothing is visible until ``BlobWrite/commit(as:)``.
    func beginWrite() throws(GraftError) -> any BlobWrite
    /// Whether the blob is stored. With `claim`, a found blob's age is reset, so that `gc`'s
    /// grace period protects it until the import that found it commits.
    func contains(_ digest: Digest, claim: Bool) -> Bool
    /// The stored blob's length in bytes, or `nil` when it is missing.
    func length(of digest: Digest) throws(GraftError) -> Int?
    /// Reads `count` bytes of the blob at `offset` into `buffer`.
    /// - Throws: ``GraftError/damagedBlob(_:reason:)`` when the blob is missing or shorter.
    func read(_ digest: Digest, at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) throws(GraftError)
    /// Appends the blob's bytes to the open file `fd` at its current offset (the kernel copies
    /// where it can). Unverified: callers that must not pass damage on hash alongside.
    /// - Throws: ``GraftError/damagedBlob(_:reason:)`` when the blob is missing or shorter.
    func copy(_ digest: Digest, length: Int, appendingTo fd: Int32) throws(GraftError)
    /// The whole blob in memory, read-only: mapped where the store is local.
    /// - Throws: ``GraftError/damagedBlob(_:reason:)`` when it is missing or not `length` bytes.
    func map(_ digest: Digest, length: Int) throws(GraftError) -> any BlobBytes
    /// Makes blobs committed since the last call durable, before any metadata refers to them.
    func flush(_ written: [Digest]) throws(GraftError)
    /// Seconds since the blob was written or last claimed, or `nil` when it is missing.
    func age(of digest: Digest) -> Double?
    /// Removes a blob; a missing one is fine. Only `gc` and removals call it, under the
    /// metadata store's write lock.
    func remove(_ digest: Digest)
    /// Every blob the store holds, and anything in it that is not a well-formed blob (damage).
    func inventory() -> BlobInventory
    /// Temporary items (interrupted writes and the like) with their age in seconds.
    func temporaryItems() -> [(name: String, age: Double)]
    /// Removes a temporary item listed by ``temporaryItems()``.
    func removeTemporary(_ name: String)
    /// Makes `other`'s blob (another registry's store) this store's without copying its bytes,
    /// where both keep blobs as files on one file system (a hard link: blobs are never changed
    /// in place); durable once ``flush(_:)`` returns. `false` when it cannot (another kind of
    /// store, another file system, no such blob): send the bytes instead.
    func adopt(_ digest: Digest, from other: any BlobStore) throws(GraftError) -> Bool
    /// Whether ``map(_:length:)`` is cheap (a memory mapping of a local file, not a download):
    /// then a reader maps a blob once and reads the one object it opened, even if `graft compact`
    /// replaces the blob's stored form meanwhile.
    var mapsCheaply: Bool { get }
}

extension BlobStore {
    public func adopt(_ digest: Digest, from other: any BlobStore) throws(GraftError) -> Bool { false }
    public var mapsCheaply: Bool { false }
}

/// A blob being written: chunks in order, then committed under its digest or abandoned.
public protocol BlobWrite: AnyObject {
    /// Appends bytes.
    func write(_ chunk: UnsafeRawBufferPointer) throws(GraftError)
    /// Files the bytes under `digest` (computed by the caller from exactly these bytes).
    /// - Returns: whether this write stored the blob (false when the store held it already;
    ///   the temporary bytes are then discarded and the stored blob claimed).
    func commit(as digest: Digest) throws(GraftError) -> Bool
    /// Files the bytes under `digest` in place of what is stored there: another stored form of
    /// the same raw bytes (`graft compact`), checked by the caller. Atomic: a reader sees the old
    /// object or the new one, whole. Durable once ``BlobStore/flush(_:)`` returns.
    func replace(_ digest: Digest) throws(GraftError)
    /// Discards the temporary bytes. Called automatically when neither commit nor abort was.
    func abort()
}

/// A blob's bytes, valid while the value is retained.
public protocol BlobBytes: AnyObject, Sendable {
    var bytes: UnsafeRawBufferPointer { get }
    /// Says `range` (of ``bytes``) will not be read again soon: a mapping lets go of its pages
    /// (they stay in the page cache; a later read maps them back), so a pass over a large blob
    /// holds a few megabytes, not the whole blob. The default does nothing.
    func willNotNeed(_ range: Range<Int>)
}

extension BlobBytes {
    public func willNotNeed(_ range: Range<Int>) {}
}

/// What a blob store holds.
public struct BlobInventory: Sendable {
    public var blobs: [Digest]
    /// Entries that are not blobs (a file of the wrong name or place), by their path in the store.
    public var stray: [String]

    public init(blobs: [Digest], stray: [String]) {
        self.blobs = blobs
        self.stray = stray
    }
}

/// One tensor of an imported file, hashed and stored.
package struct IngestedTensor: Sendable {
    package let info: TensorInfo
    package let digest: Digest
    /// The bytes, for tensors small enough to live in the metadata store.
    package let inline: [UInt8]?
    /// Whether this import stored the blob (false when it was already present).
    package let wroteFile: Bool
    /// Whether the blob is in the store (a `hashOnly` pass may find it missing).
    package var present: Bool = true

    package init(info: TensorInfo, digest: Digest, inline: [UInt8]?, wroteFile: Bool, present: Bool = true) {
        (self.info, self.digest, self.inline, self.wroteFile, self.present) = (info, digest, inline, wroteFile, present)
    }
}

/// How `ingest` treats a large tensor.
enum IngestMode: Sendable {
    /// Hash while writing to temporary storage; keep the blob only if it is new.
    case writeThrough
    /// Hash without writing; write (rehashing) only if the blob turns out to be missing.
    case hashFirst
    /// Hash without writing, and never write: report whether the blob is present.
    case hashOnly
}

/// Moving tensor bytes between inputs, a ``BlobStore`` and outputs, hashing as they stream:
/// the store-independent half of import, export and verify.
package struct BlobTransfer: Sendable {
    package let store: any BlobStore
    /// Tensors smaller than this many bytes are kept in the metadata store, not as blobs.
    package let inlineThreshold: Int
    package static let chunkSize = 4 << 20

    /// Hashes and stores every tensor of `reader`, two lanes in parallel, in bounded memory.
    ///
    /// - Parameters:
    ///   - indices: which of the file's tensors to process (default: all, in data order).
    ///   - mode: `.hashFirst` is faster when most tensors are expected to be present (a
    ///     re-import); `.hashOnly` checks tensors that must already be stored (frozen ones).
    ///   - progress: called with the bytes processed so far (from any thread).
    /// - Returns: one entry per tensor, in the order of `indices`.
    func ingest(
        _ reader: some SafeTensorsInput, indices: [Int]? = nil, mode: IngestMode = .writeThrough,
        progress: (@Sendable (Int) -> Void)?
    ) async throws(GraftError) -> [IngestedTensor] {
        let selected = indices ?? Array(reader.header.tensors.indices)
        let tensors = selected.map { reader.header.tensors[$0] }
        let lanes = Self.balance(tensors.map(\.byteCount))
        let results = Mutex<[IngestedTensor?]>(Array(repeating: nil, count: tensors.count))
        let failure = Mutex<GraftError?>(nil)
        let done = Atomic<Int>(0)
        let transfer = self
        await Self.inLanes(lanes.count) { lane, buffer in
            for index in lanes[lane] {
                if failure.withLock({ $0 != nil }) { return }
                do throws(GraftError) {
                    let stored = try transfer.ingestOne(tensors[index], from: reader, mode: mode, buffer: buffer) { bytes in
                        let total = done.add(bytes, ordering: .relaxed).newValue
                        progress?(total)
                    }
                    results.withLock { $0[index] = stored }
                } catch {
                    failure.withLock { if $0 == nil { $0 = error } }
                    return
                }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
        return results.withLock { $0.map { $0! } }
    }

    /// Hashes and stores every tensor of a sequential input (a stream) in data order, on one
    /// lane: it can be read only once. Tensors in `hashOnly` (a student's frozen ones) are hashed,
    /// not written — they must be the parent's blobs, which are stored. `each` sees every tensor
    /// as it completes (to refuse a drifted frozen tensor before reading on); then the input is
    /// checked to end where its data section does.
    func ingestInOrder(
        _ reader: some SafeTensorsInput, hashOnly: Set<Int> = [],
        each: @escaping @Sendable (IngestedTensor) throws(GraftError) -> Void = { _ in },
        progress: (@Sendable (Int) -> Void)?
    ) async throws(GraftError) -> [IngestedTensor] {
        let transfer = self
        let result = Mutex<Result<[IngestedTensor], GraftError>>(.success([]))
        await Self.inLanes(1) { _, buffer in
            var done = 0
            let outcome = Result { () throws(GraftError) -> [IngestedTensor] in
                var ingested: [IngestedTensor] = []
                for (index, tensor) in reader.header.tensors.enumerated() {
                    let stored = try transfer.ingestOne(
                        tensor, from: reader, mode: hashOnly.contains(index) ? .hashOnly : .writeThrough, buffer: buffer
                    ) { bytes in
                        done += bytes
                        progress?(done)
                    }
                    try each(stored)
                    ingested.append(stored)
                }
                do throws(SafeTensorsError) { try reader.finish() } catch { throw .reading(reader.origin, error) }
                return ingested
            }
            result.withLock { $0 = outcome }
        }
        return try result.withLock { $0 }.get()
    }

    /// Splits items of the given sizes into at most two lanes, largest first, each to the
    /// lighter lane. Returns each lane's indices.
    package static func balance(_ sizes: [Int]) -> [[Int]] {
        let laneCount = max(1, min(2, sizes.count))
        var lanes = [[Int]](repeating: [], count: laneCount)
        var load = [Int](repeating: 0, count: laneCount)
        for index in sizes.indices.sorted(by: { sizes[$0] > sizes[$1] }) {
            let lane = load.indices.min(by: { load[$0] < load[$1] })!
            lanes[lane].append(index)
            load[lane] += sizes[index]
        }
        return lanes
    }

    /// Runs `body(index, buffer)` for items of the given sizes in two lanes balanced by bytes,
    /// each lane stopping once any item failed; returns the first failure, or `nil`.
    package static func firstFailure(
        sizes: [Int], _ body: @escaping @Sendable (Int, UnsafeMutableRawPointer) throws(GraftError) -> Void
    ) async -> GraftError? {
        let failure = Mutex<GraftError?>(nil)
        let lanes = balance(sizes)
        await inLanes(lanes.count) { lane, buffer in
            for index in lanes[lane] {
                if failure.withLock({ $0 != nil }) { return }
                do throws(GraftError) { try body(index, buffer) } catch {
                    failure.withLock { if $0 == nil { $0 = error } }
                }
            }
        }
        return failure.withLock { $0 }
    }

    /// Runs `body(lane, buffer)` on `lanes` Dispatch threads, each with its own chunk buffer,
    /// and waits for all of them without blocking Swift's cooperative pool.
    package static func inLanes(_ lanes: Int, _ body: @escaping @Sendable (Int, UnsafeMutableRawPointer) -> Void) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                DispatchQueue.concurrentPerform(iterations: lanes) { lane in
                    let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunkSize, alignment: 64)
                    defer { buffer.deallocate() }
                    body(lane, buffer)
                }
                continuation.resume()
            }
        }
    }

    private func ingestOne(
        _ tensor: TensorInfo, from reader: some SafeTensorsInput, mode: IngestMode, buffer: UnsafeMutableRawPointer,
        progress: (Int) -> Void
    ) throws(GraftError) -> IngestedTensor {
        if tensor.byteCount < inlineThreshold {
            let bytes: [UInt8]
            do { bytes = try reader.data(of: tensor) } catch { throw .reading(reader.origin, error) }
            progress(bytes.count)
            return IngestedTensor(info: tensor, digest: Digest.of(bytes), inline: bytes, wroteFile: false)
        }
        if mode != .writeThrough {
            var hasher = SHA256()
            try Self.chunks(of: tensor, from: reader, buffer: buffer) { chunk throws(GraftError) in hasher.update(bufferPointer: chunk) }
            let digest = Digest(hasher.finalize())
            progress(tensor.byteCount)
            if store.contains(digest, claim: true) {
                return IngestedTensor(info: tensor, digest: digest, inline: nil, wroteFile: false)
            }
            if mode == .hashOnly {
                return IngestedTensor(info: tensor, digest: digest, inline: nil, wroteFile: false, present: false)
            }
            // Not there after all: store it, rehashing as it is written.
            return try ingestOne(tensor, from: reader, mode: .writeThrough, buffer: buffer) { _ in }
        }
        let write = try store.beginWrite()
        var hasher = SHA256()
        do throws(GraftError) {
            try Self.chunks(of: tensor, from: reader, buffer: buffer) { chunk throws(GraftError) in
                hasher.update(bufferPointer: chunk)
                try write.write(chunk)
                progress(chunk.count)
            }
        } catch {
            write.abort()
            throw error
        }
        let digest = Digest(hasher.finalize())
        return IngestedTensor(info: tensor, digest: digest, inline: nil, wroteFile: try write.commit(as: digest))
    }

    /// Reads a tensor of `reader` in chunks into `buffer`.
    private static func chunks(
        of tensor: TensorInfo, from reader: some SafeTensorsInput, buffer: UnsafeMutableRawPointer,
        _ body: (UnsafeRawBufferPointer) throws(GraftError) -> Void
    ) throws(GraftError) {
        var offset = 0
        while offset < tensor.byteCount {
            let count = min(chunkSize, tensor.byteCount - offset)
            do { try reader.read(tensor, at: offset, count: count, into: buffer) } catch { throw .reading(reader.origin, error) }
            try body(UnsafeRawBufferPointer(start: buffer, count: count))
            offset += count
        }
    }

    /// Stores one blob from a stream (an upload), hashing as it writes: kept only when the bytes
    /// number exactly `length` and hash to `expected`. `next(buffer, capacity)` fills the
    /// buffer and returns how many bytes it put there, 0 at the end. A blob the store holds
    /// already is claimed and the stream is read to its end and discarded. The blob is durable on return.
    /// - Returns: whether the blob was stored now.
    /// - Throws: ``GraftError/blobMismatch(_:reason:)`` for more or fewer bytes than announced,
    ///   or bytes with another digest (nothing is kept); the errors of `next` and of the store.
    func put(
        expected: Digest, length: Int, buffer: UnsafeMutableRawPointer,
        from next: (UnsafeMutableRawPointer, Int) throws(GraftError) -> Int
    ) throws(GraftError) -> Bool {
        let upload = try BlobUpload(transfer: self, expected: expected, length: length)
        while true {
            let count = try next(buffer, Self.chunkSize)
            if count == 0 { break }
            try upload.append(UnsafeRawBufferPointer(start: buffer, count: count))
        }
        return try upload.finish()
    }

    /// Makes the blobs these tensors stored durable.
    func flush(_ tensors: [IngestedTensor]) throws(GraftError) {
        try store.flush(tensors.filter(\.wroteFile).map(\.digest))
    }

    /// Checks one stored blob: present, of the right length and, with `readData`, hashing to
    /// its digest. Returns the problem, or `nil` when the blob is sound.
    func check(
        _ digest: Digest, length: Int, inline: [UInt8]?, readData: Bool, buffer: UnsafeMutableRawPointer,
        bytesRead: (Int) -> Void = { _ in }
    ) -> (kind: BlobProblem.Kind, detail: String)? {
        if let inline {
            guard inline.count == length else { return (.wrongSize, "inline data holds \(inline.count) bytes, expected \(length)") }
            guard readData else { return nil }
            bytesRead(inline.count)
            return Digest.of(inline) == digest ? nil : (.wrongDigest, "inline bytes no longer match the digest")
        }
        let size: Int?
        do { size = try store.length(of: digest) } catch { return (.missing, "\(error)") }
        guard let size else { return (.missing, "blob \(digest.short)… is missing") }
        var encoded: RawReader?
        if size != length {
            // Not the raw bytes: sound only as a well-formed encoding (`graft compact`) of them.
            guard size < length, let reader = try? reader(digest, length: length), case .encoded = reader.form else {
                return (.wrongSize, "it holds \(size) bytes, expected \(length)")
            }
            encoded = reader
        }
        guard readData else { return nil }
        if let encoded {
            // Decoded chunk by chunk (with its base, for a delta) and rehashed.
            var hasher = SHA256()
            var offset = 0
            while offset < length {
                let count = min(Self.chunkSize, length - offset)
                do { try encoded.read(at: offset, count: count, into: buffer) } catch { return (.wrongDigest, "\(error)") }
                hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buffer, count: count))
                bytesRead(count)
                offset += count
            }
            return Digest(hasher.finalize()) == digest ? nil : (.wrongDigest, "its decoded bytes no longer match the digest")
        }
        // Hashed in place from the store's mapping (no copy into a buffer): export rehashes
        // every blob while the kernel copies it, and on two cores each copy counts. Pages are
        // let go as they are hashed, so memory stays bounded by the chunk, not the blob.
        let mapped: any BlobBytes
        do { mapped = try store.map(digest, length: length) } catch { return (.missing, "\(error)") }
        var hasher = SHA256()
        var offset = 0
        while offset < length {
            let count = min(Self.chunkSize, length - offset)
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: mapped.bytes[offset..<(offset + count)]))
            mapped.willNotNeed(offset..<(offset + count))
            bytesRead(count)
            offset += count
        }
        return Digest(hasher.finalize()) == digest ? nil : (.wrongDigest, "its bytes no longer match the digest")
    }

    /// A blob's bytes in memory (a config, a tensor to merge): inline ones as held, stored ones
    /// read and checked against their length and, with `verify`, their digest (a caller that
    /// rehashes every blob it reads anyway, as a merged export does, passes false).
    /// - Throws: ``GraftError/damagedBlob(_:reason:)``.
    package func bytes(_ digest: Digest, length: Int, inline: [UInt8]?, verify: Bool = true) throws(GraftError) -> [UInt8] {
        if let inline { return inline }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(length)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.chunkSize, alignment: 64)
        defer { buffer.deallocate() }
        try stream(digest, length: length, buffer: buffer, verify: verify) { chunk throws(GraftError) in bytes.append(contentsOf: chunk) }
        return bytes
    }

    /// Streams a stored blob to `body` in chunks, checking its length and, with `verify`, its digest.
    ///
    /// - Throws: ``GraftError/damagedBlob(_:reason:)`` when the blob is missing, has the wrong
    ///   length, or its bytes no longer hash to `digest`.
    package func stream(
        _ digest: Digest, length: Int, buffer: UnsafeMutableRawPointer, verify: Bool,
        _ body: (UnsafeRawBufferPointer) throws(GraftError) -> Void
    ) throws(GraftError) {
        let reader = try reader(digest, length: length)
        var hasher = SHA256()
        var offset = 0
        while offset < length {
            let count = min(Self.chunkSize, length - offset)
            try reader.read(at: offset, count: count, into: buffer)
            let chunk = UnsafeRawBufferPointer(start: buffer, count: count)
            if verify { hasher.update(bufferPointer: chunk) }
            try body(chunk)
            offset += count
        }
        if verify, Digest(hasher.finalize()) != digest {
            throw .damagedBlob(digest, reason: "its bytes no longer match the digest")
        }
    }
}
