import Crypto
import Foundation
public import SafeTensors
import Synchronization

/// A checkpoint opened in place: each tensor is read straight from its blob (a mapped file, or
/// the bytes stored inline), with no temporary file and no copy. Valid while it is retained;
/// blob files are immutable, so the bytes cannot change under a reader.
///
/// ```swift
/// let checkpoint = try await registry.openCheckpoint(try Reference(parsing: "resnet18@1"))
/// for tensor in checkpoint.header.tensors {
///     checkpoint.withData(of: tensor) { bytes in print(tensor.name, bytes.count) }
/// }
/// ```
public final class OpenCheckpoint: SafeTensorsSource, @unchecked Sendable {
    // @unchecked Sendable: everything is set in init and never changes; mappings are read-only.
    public let checkpoint: CheckpointSummary
    public let header: SafeTensorsHeader
    /// The header bytes exactly as imported (length prefix, JSON, padding).
    public let headerBytes: [UInt8]
    /// Each tensor's digest, in data order.
    public let digests: [Digest]
    private let storage: [Storage]

    enum Storage {
        case inline([UInt8])
        case mapped(any BlobBytes)
        /// The tensor of the same name in a downloaded copy of the checkpoint.
        case file(MappedSafeTensors, TensorInfo)
    }

    init(checkpoint: CheckpointSummary, header: SafeTensorsHeader, headerBytes: [UInt8], digests: [Digest], storage: [Storage]) {
        self.checkpoint = checkpoint
        self.header = header
        self.headerBytes = headerBytes
        self.digests = digests
        self.storage = storage
    }

    public var origin: String { checkpoint.ref }

    /// Calls `body` with the tensor's bytes in place. `tensor` comes from ``header`` (or has the
    /// name of one of its tensors); naming a tensor the checkpoint lacks is a programming error.
    public func withData<R>(of tensor: TensorInfo, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        // Tensors are in data order; a tensor of another file is located by name.
        let index =
            header.tensors.binarySearch(offset: tensor.dataOffsets.lowerBound, name: tensor.name)
            ?? header.tensors.firstIndex { $0.name == tensor.name }
        guard let index else { preconditionFailure("\(checkpoint.ref) has no tensor named \(tensor.name)") }
        switch storage[index] {
        case .inline(let bytes): return try bytes.withUnsafeBytes(body)
        case .mapped(let blob): return try body(blob.bytes)
        case .file(let file, let info): return try file.withData(of: info, body)
        }
    }

    /// A checkpoint read from a byte-exact copy of its file (what a server sent), each tensor
    /// hashed now; the copy must have `checkpoint`'s digest.
    /// - Throws: ``GraftError/damagedBlob(_:reason:)`` when the bytes do not hash to it.
    public static func copy(of checkpoint: CheckpointSummary, file: MappedSafeTensors) throws(GraftError) -> OpenCheckpoint {
        let tensors = file.header.tensors
        let digests = tensors.map { tensor in
            file.withData(of: tensor) { bytes in
                var hasher = SHA256()
                hasher.update(bufferPointer: bytes)
                return Digest(hasher.finalize())
            }
        }
        let headerBytes = Array(file.headerBytes)
        var hasher = SHA256()
        hasher.update(data: headerBytes)
        for digest in digests { hasher.update(data: digest.rawBytes) }
        let actual = Digest(hasher.finalize())
        guard actual == checkpoint.digest else {
            throw .damagedBlob(checkpoint.digest, reason: "the copy of \(checkpoint.ref) received hashes to \(actual.short)…")
        }
        return OpenCheckpoint(
            checkpoint: checkpoint, header: file.header, headerBytes: headerBytes, digests: digests,
            storage: tensors.map { .file(file, $0) })
    }

    /// Rehashes every tensor against its digest, on two lanes balanced by bytes (as export does).
    /// - Throws: ``GraftError/damagedBlob(_:reason:)`` for the first tensor whose bytes changed.
    public func verify() async throws(GraftError) {
        let failure = Mutex<GraftError?>(nil)
        let tensors = header.tensors, digests = self.digests
        let lanes = BlobTransfer.balance(tensors.map(\.byteCount))
        await BlobTransfer.inLanes(lanes.count) { lane, _ in
            for index in lanes[lane] {
                if failure.withLock({ $0 != nil }) { return }
                let actual = self.withData(of: tensors[index]) { Digest(SHA256.hash(data: $0)) }
                if actual != digests[index] {
                    failure.withLock { if $0 == nil { $0 = .damagedBlob(digests[index], reason: "its bytes no longer match the digest") } }
                }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }
}

extension [TensorInfo] {
    /// The index of the tensor at `offset` named `name`, for tensors sorted by offset.
    func binarySearch(offset: Int, name: String) -> Int? {
        var low = 0, high = count
        while low < high {
            let middle = (low + high) / 2
            if self[middle].dataOffsets.lowerBound < offset { low = middle + 1 } else { high = middle }
        }
        // Zero-length tensors share an offset with their neighbour: look at each there.
        var index = low
        while index < count, self[index].dataOffsets.lowerBound == offset {
            if self[index].name == name { return index }
            index += 1
        }
        return nil
    }
}

extension Registry {
    /// Opens a checkpoint for reading in place: every file-stored tensor is mapped from its blob
    /// (no temporary file, no copy), inline ones are read from the database.
    ///
    /// - Parameter verify: rehash every tensor before returning (what `export` always does).
    /// - Throws: ``GraftError/damagedBlob(_:reason:)`` for a blob file that is missing or of
    ///   the wrong length (or, with `verify`, whose bytes changed); the errors of resolving `reference`.
    public func openCheckpoint(_ reference: Reference, verify: Bool = false) async throws(GraftError) -> OpenCheckpoint {
        let (id, summary) = try await resolve(reference)
        let stored = try await metadata.parts(checkpoint: id)
        let (headerBytes, parts) = (stored.header, stored.tensors)
        let header: SafeTensorsHeader
        do {
            let length = try SafeTensorsHeader.headerLength(prefix: Array(headerBytes.prefix(8)), fileSize: summary.fileBytes)
            header = try SafeTensorsHeader.parse(json: Array(headerBytes[8..<(8 + length)]), fileSize: summary.fileBytes)
        } catch {
            throw .corruptDatabase(path: layout.database, message: "the stored header of \(summary.ref) does not parse: \(error)")
        }
        guard header.tensors.count == parts.count else {
            throw .corruptDatabase(
                path: layout.database, message: "\(summary.ref) lists \(parts.count) tensors, its header \(header.tensors.count)")
        }
        var storage: [OpenCheckpoint.Storage] = []
        storage.reserveCapacity(parts.count)
        for part in parts {
            if let inline = part.inline {
                storage.append(.inline(inline))
            } else {
                storage.append(.mapped(try blobs.map(part.digest, length: part.length)))
            }
        }
        let opened = OpenCheckpoint(
            checkpoint: summary, header: header, headerBytes: headerBytes, digests: parts.map(\.digest), storage: storage)
        if verify { try await opened.verify() }
        return opened
    }
}
