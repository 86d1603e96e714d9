import Crypto

/// How a blob is kept in its store now: its raw bytes, or an encoding (issue 27) mapped whole.
///
/// A store's object is the raw bytes exactly when it holds the raw length; an encoding is only
/// kept when it saves at least 5%, so an object shorter than the raw length must parse as one.
/// Each read decides from one opened object, so a blob re-encoded by `graft compact` while it
/// is read is seen whole, old or new.
package enum StoredForm: Sendable {
    case raw
    case encoded(EncodedLayout, any BlobBytes)

    package var codec: BlobCodec {
        switch self {
        case .raw: .raw
        case .encoded(let layout, _): layout.codec
        }
    }
}

/// A blob's bytes heap-allocated (a decoded encoding), freed when released.
final class HeapBlob: BlobBytes, @unchecked Sendable {
    // @unchecked Sendable: written once in init, read-only after.
    private let base: UnsafeMutableRawPointer
    private let count: Int

    init(count: Int) {
        self.count = count
        base = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 64)
    }

    deinit { base.deallocate() }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
    var mutableBytes: UnsafeMutableRawPointer { base }
}

extension BlobTransfer {
    /// How the blob of raw length `length` is stored now.
    /// - Throws: ``GraftError/damagedBlob(_:reason:)`` when it is missing, or neither `length`
    ///   bytes nor a well-formed encoding of `length` bytes.
    package func form(_ digest: Digest, length: Int) throws(GraftError) -> StoredForm {
        var attempts = 0
        while true {
            attempts += 1
            guard let size = try store.length(of: digest) else { throw .damagedBlob(digest, reason: "it is missing") }
            if size == length { return .raw }
            let wrongSize = GraftError.damagedBlob(digest, reason: "it holds \(size) bytes, expected \(length)")
            guard size < length, size >= EncodedLayout.fixedHeader else { throw wrongSize }
            let mapped: any BlobBytes
            do { mapped = try store.map(digest, length: size) } catch {
                // Re-encoded (or replaced) between the two looks: look again.
                if attempts < 3, (try? store.length(of: digest)) != size { continue }
                throw error
            }
            guard let layout = EncodedLayout.parse(mapped.bytes), layout.rawLength == length else { throw wrongSize }
            return .encoded(layout, mapped)
        }
    }

    /// The raw length of a stored blob, or `nil` when it is missing: its size, or the raw length
    /// its encoding names.
    package func rawLength(of digest: Digest) throws(GraftError) -> Int? {
        guard let size = try store.length(of: digest) else { return nil }
        guard size >= EncodedLayout.fixedHeader else { return size }
        let header = UnsafeMutableRawPointer.allocate(byteCount: EncodedLayout.fixedHeader, alignment: 8)
        defer { header.deallocate() }
        try store.read(digest, at: 0, count: EncodedLayout.fixedHeader, into: header)
        let bytes = UnsafeRawBufferPointer(start: header, count: EncodedLayout.fixedHeader)
        guard bytes.starts(with: EncodedLayout.magic) else { return size }
        let named = Int(truncatingIfNeeded: bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian)
        return named > size ? named : size
    }

    /// A reader of the blob's raw bytes at any offset, whatever its stored form.
    package func reader(_ digest: Digest, length: Int) throws(GraftError) -> RawReader {
        try RawReader(transfer: self, digest: digest, length: length, form: form(digest, length: length))
    }

    /// The blob's raw bytes, whole: mapped where it is stored raw, decoded into memory otherwise.
    /// Unverified, as ``BlobStore/map(_:length:)``.
    package func map(_ digest: Digest, length: Int) throws(GraftError) -> any BlobBytes {
        let reader = try reader(digest, length: length)
        if case .raw = reader.form { return try store.map(digest, length: length) }
        let decoded = HeapBlob(count: length)
        try reader.read(at: 0, count: length, into: decoded.mutableBytes)
        return decoded
    }
}

/// Reads a blob's raw bytes at any offset from its stored form, decoding chunks of an encoding
/// (and XORing with its base) as it goes. One per thread; a sequential reader decodes each
/// chunk once.
package final class RawReader {
    package let digest: Digest
    package let length: Int
    package let form: StoredForm
    private let transfer: BlobTransfer
    private let decoder = ChunkDecoder()
    private var base: RawReader?
    /// The last decoded chunk, kept for reads that do not cover a whole chunk.
    private var cached: (index: Int, buffer: UnsafeMutableRawPointer)?
    private var scratch: UnsafeMutableRawPointer?
    /// A raw blob of a store that maps cheaply, mapped once (see ``BlobStore/mapsCheaply``).
    private var mapped: (any BlobBytes)?

    init(transfer: BlobTransfer, digest: Digest, length: Int, form: StoredForm) throws(GraftError) {
        (self.transfer, self.digest, self.length, self.form) = (transfer, digest, length, form)
        if case .raw = form, transfer.store.mapsCheaply, length > 0 { mapped = try transfer.store.map(digest, length: length) }
        if case .encoded(let layout, _) = form, let base = layout.base {
            let reader = try transfer.reader(base, length: length)
            if case .encoded(let baseLayout, _) = reader.form, baseLayout.codec == .xorBgZstd {
                throw .damagedBlob(digest, reason: "its base \(base.short)… is itself a delta")
            }
            self.base = reader
        }
    }

    deinit {
        cached?.buffer.deallocate()
        scratch?.deallocate()
    }

    /// Reads `count` raw bytes at `offset` into `buffer`.
    /// - Throws: ``GraftError/damagedBlob(_:reason:)`` when the stored form is short or does not decode.
    package func read(at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) throws(GraftError) {
        guard count > 0 else { return }
        guard offset >= 0, offset + count <= length else {
            throw .damagedBlob(digest, reason: "a read of \(count) bytes at \(offset) passes its \(length) bytes")
        }
        guard case .encoded(let layout, let stored) = form else {
            if let mapped {
                buffer.copyMemory(from: mapped.bytes.baseAddress! + offset, byteCount: count)
                mapped.willNotNeed(offset..<(offset + count))  // a pass over a large blob holds a few pages, not the blob
            } else {
                try transfer.store.read(digest, at: offset, count: count, into: buffer)
            }
            return
        }
        var done = 0
        while done < count {
            let index = (offset + done) / layout.chunkSize
            let range = layout.chunk(index)
            let within = offset + done - range.lowerBound
            let take = min(count - done, range.count - within)
            if within == 0, take == range.count {
                try decode(index, of: layout, stored: stored, into: buffer + done)
            } else {
                let chunk = try decoded(index, of: layout, stored: stored)
                (buffer + done).copyMemory(from: chunk + within, byteCount: take)
            }
            done += take
        }
    }

    private func decoded(_ index: Int, of layout: EncodedLayout, stored: any BlobBytes) throws(GraftError) -> UnsafeRawPointer {
        if let cached, cached.index == index { return UnsafeRawPointer(cached.buffer) }
        let buffer = cached?.buffer ?? UnsafeMutableRawPointer.allocate(byteCount: layout.chunkSize, alignment: 64)
        cached = nil
        do throws(GraftError) { try decode(index, of: layout, stored: stored, into: buffer) } catch {
            buffer.deallocate()
            throw error
        }
        cached = (index, buffer)
        return UnsafeRawPointer(buffer)
    }

    private func decode(_ index: Int, of layout: EncodedLayout, stored: any BlobBytes, into out: UnsafeMutableRawPointer) throws(GraftError)
    {
        guard let count = decoder.decode(index, of: layout, stored: stored.bytes, into: out) else {
            throw .damagedBlob(digest, reason: "its \(layout.codec.rawValue) encoding does not decode (chunk \(index))")
        }
        guard let base else { return }
        let scratch = self.scratch ?? UnsafeMutableRawPointer.allocate(byteCount: layout.chunkSize, alignment: 64)
        self.scratch = scratch
        try base.read(at: layout.chunk(index).lowerBound, count: count, into: scratch)
        EncodedLayout.xor(out, scratch, into: out, count: count)
    }
}
