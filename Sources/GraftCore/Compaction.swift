/// How a stored blob is kept, as the metadata store records it (issue 27).
public struct BlobEncoding: Sendable, Equatable, Codable {
    public var codec: BlobCodec
    /// The bytes the blob store holds (`nil`: the raw length).
    public var storedLength: Int?
    /// The blob an `xor-bg-zstd` delta is taken against (also set, with `codec` still raw,
    /// while a delta is being written).
    public var base: Digest?

    public init(codec: BlobCodec, storedLength: Int?, base: Digest?) {
        (self.codec, self.storedLength, self.base) = (codec, storedLength, base)
    }

    public static let raw = BlobEncoding(codec: .raw, storedLength: nil, base: nil)
}

/// One reference of a checkpoint to a stored blob: a tensor (with its dtype) or a file.
package struct CompactionRow: Sendable, Equatable {
    package var checkpoint: Int64
    /// The checkpoint of the lineage parent this checkpoint's model derives from (students).
    package var parentCheckpoint: Int64?
    package var model: Int64
    /// The tensor's name, or the file's path.
    package var name: String
    /// The tensor's dtype; `nil` for a file.
    package var dtype: String?
    package var digest: Digest
    package var length: Int

    package init(
        checkpoint: Int64, parentCheckpoint: Int64?, model: Int64, name: String, dtype: String?, digest: Digest, length: Int
    ) {
        (self.checkpoint, self.parentCheckpoint, self.model, self.name, self.dtype, self.digest, self.length) = (
            checkpoint, parentCheckpoint, model, name, dtype, digest, length
        )
    }
}

/// What `graft compact` plans from: every stored blob reference, ordered by checkpoint (a parent
/// checkpoint always comes before its students'), and the encodings recorded so far.
package struct CompactionInventory: Sendable {
    package var rows: [CompactionRow]
    /// Of every stored blob whose row is not plain raw: encoded, a base set, or tried and kept raw.
    package var encodings: [Digest: BlobEncoding]

    package init(rows: [CompactionRow], encodings: [Digest: BlobEncoding]) {
        (self.rows, self.encodings) = (rows, encodings)
    }
}

/// Stored blobs of one codec: how many, their raw bytes and the bytes their store holds.
public struct CodecUsage: Sendable, Codable, Equatable {
    public var codec: BlobCodec
    public var blobs: Int
    public var rawBytes: Int
    public var storedBytes: Int

    public init(codec: BlobCodec, blobs: Int, rawBytes: Int, storedBytes: Int) {
        (self.codec, self.blobs, self.rawBytes, self.storedBytes) = (codec, blobs, rawBytes, storedBytes)
    }

    /// One entry per codec, in ``BlobCodec/allCases`` order, zeros where none.
    package static func complete(_ found: [CodecUsage]) -> [CodecUsage] {
        BlobCodec.allCases.map { codec in
            found.first { $0.codec == codec } ?? CodecUsage(codec: codec, blobs: 0, rawBytes: 0, storedBytes: 0)
        }
    }
}
