import Crypto
public import SafeTensors

/// One file of a checkpoint kept as a model directory (`config.json`, a tokenizer, a shard of
/// the weights). A checkpoint imported from one safetensors file has none: it is that file.
///
/// The tensors of every shard are the checkpoint's tensors, with names global across shards, so
/// manifests, `diff`, dedup, `best` and lineage see one list whatever the shard size; a shard
/// keeps only its own header bytes and which of those tensors it holds, and exports
/// byte-identically as that header followed by its tensors' bytes.
package struct CheckpointFile: Sendable, Equatable {
    package enum Content: Sendable, Equatable {
        /// A safetensors shard: its header bytes (length prefix and JSON) and its tensors, the
        /// checkpoint's `count` tensors from position `first`, in data order.
        case shard(header: [UInt8], first: Int, count: Int)
        /// Any other file, stored as a content-addressed blob; `inline` holds the bytes of a
        /// small one read back from the metadata (never set on a commit).
        case file(digest: Digest, length: Int, inline: [UInt8]?)
    }

    /// Relative POSIX path inside the directory (`1_Pooling/config.json`).
    package var path: String
    package var content: Content

    package init(path: String, content: Content) {
        (self.path, self.content) = (path, content)
    }
}

/// A file of a checkpoint kept as a directory, as `show`, `--json` and the API list it.
public struct CheckpointFileEntry: Sendable, Codable, Equatable {
    /// Relative POSIX path inside the directory.
    public var path: String
    /// `shard` (safetensors weights: its tensors are the checkpoint's) or `file`.
    public var kind: String
    /// The file's length as exported.
    public var bytes: Int
    /// A plain file's SHA-256 (its blob); `nil` for a shard, whose tensors have theirs.
    public var digest: Digest?
    /// How many of the checkpoint's tensors a shard holds.
    public var tensors: Int?

    package init(path: String, kind: String, bytes: Int, digest: Digest?, tensors: Int?) {
        (self.path, self.kind, self.bytes, self.digest, self.tensors) = (path, kind, bytes, digest, tensors)
    }
}

extension CheckpointFile {
    /// The entry shown for this file; `tensorBytes` are the checkpoint's tensor lengths in data order.
    package func entry(tensorBytes: [Int]) -> CheckpointFileEntry {
        switch content {
        case .shard(let header, let first, let count):
            let data = tensorBytes[first..<(first + count)].reduce(0, +)
            return CheckpointFileEntry(path: path, kind: "shard", bytes: header.count + data, digest: nil, tensors: count)
        case .file(let digest, let length, _):
            return CheckpointFileEntry(path: path, kind: "file", bytes: length, digest: digest, tensors: nil)
        }
    }

    /// Bytes the digest of a checkpoint's layout covers for this file (see ``Registry/checkpointDigest(header:tensors:files:)``).
    func digestBytes() -> [UInt8] {
        var bytes: [UInt8] = [0] + Array(path.utf8) + [0]
        func append(_ value: Int) { withUnsafeBytes(of: UInt64(value).littleEndian) { bytes.append(contentsOf: $0) } }
        switch content {
        case .shard(let header, let first, let count):
            bytes.append(UInt8(ascii: "s"))
            bytes.append(contentsOf: Digest.of(header).rawBytes)
            append(first)
            append(count)
        case .file(let digest, let length, _):
            bytes.append(UInt8(ascii: "f"))
            bytes.append(contentsOf: digest.rawBytes)
            append(length)
        }
        return bytes
    }
}

/// A model directory read for import: its safetensors shards seen as one file (tensor names
/// global, shards in path order), the shards' own headers, and every other file.
///
/// Built by the local file layer (`ModelDirectory.open` in GraftLocal), which walks the
/// directory, refuses what cannot be imported and validates the index; the registry ingests it
/// exactly as it ingests one file, then the other files as blobs.
public struct DirectoryInput: Sendable {
    /// One safetensors shard: its path, header bytes and how many tensors it holds.
    public struct Shard: Sendable {
        public let path: String
        public let headerBytes: [UInt8]
        public let tensorCount: Int
        public init(path: String, headerBytes: [UInt8], tensorCount: Int) {
            (self.path, self.headerBytes, self.tensorCount) = (path, headerBytes, tensorCount)
        }
    }

    /// The directory, for messages.
    public let origin: String
    /// Every shard's tensors as one safetensors input: shards in `shards` order, each shard's
    /// tensors in its data order.
    public let weights: any SafeTensorsInput
    public let shards: [Shard]
    /// Every other file as one input whose "tensors" are the files (dtype U8, shape [length],
    /// named by their relative paths), in path order.
    public let files: any SafeTensorsInput
    /// The directory's `model.sig` (an OpenSSF model signature) as read, not one of `files`: a
    /// commit keeps it with the checkpoint, "signed, not verified" unless `publicKey` is set.
    public let signature: [UInt8]?
    /// The key `signature` must verify with, against these files, before anything is written
    /// (`--public-key`); the commit then records it as verified.
    public var publicKey: VerifyingKey? = nil

    public init(
        origin: String, weights: any SafeTensorsInput, shards: [Shard], files: any SafeTensorsInput, signature: [UInt8]? = nil
    ) {
        (self.origin, self.weights, self.shards, self.files, self.signature) = (origin, weights, shards, files, signature)
    }

    /// The directory's signature checked as the commit will record it: with ``publicKey`` when
    /// set (key, signature, then every file's SHA-256 — shards read once — against the signed
    /// list), else only parsed. `nil` when the directory has no `model.sig`.
    /// - Throws: ``GraftError/invalidSignature(_:problems:)``; ``GraftError/notSigned(_:)`` for
    ///   a key given to a directory without a signature.
    package func checkedSignature() throws(GraftError) -> StoredSignature? {
        guard let bytes = signature else {
            if publicKey != nil { throw .notSigned(origin + " (it has no \(ModelSignature.fileName))") }
            return nil
        }
        let parsed = try ModelSignature.parse(bytes, origin: origin + "/" + ModelSignature.fileName)
        guard let publicKey else { return StoredSignature(parsed, verified: false, origin: "imported") }
        try parsed.verify(with: publicKey, origin: origin)
        try parsed.checkFiles(try signedResources(), origin: origin)
        return StoredSignature(parsed, verified: true, origin: "imported")
    }

    /// Every file of the directory with its SHA-256: plain files' bytes and each shard's (its
    /// header, then its tensors' bytes in data order) hashed as read.
    package func signedResources() throws(GraftError) -> [SignedResource] {
        var resources: [SignedResource] = []
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: BlobTransfer.chunkSize, alignment: 64)
        defer { buffer.deallocate() }
        func hash(_ input: any SafeTensorsInput, _ tensors: ArraySlice<TensorInfo>, into hasher: inout SHA256) throws(GraftError) {
            for info in tensors {
                var offset = 0
                while offset < info.byteCount {
                    let count = min(BlobTransfer.chunkSize, info.byteCount - offset)
                    do { try input.read(info, at: offset, count: count, into: buffer) } catch { throw .reading(origin, error) }
                    hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buffer, count: count))
                    offset += count
                }
            }
        }
        var first = 0
        let all = weights.header.tensors
        for shard in shards {
            var hasher = SHA256()
            hasher.update(data: shard.headerBytes)
            try hash(weights, all[first..<(first + shard.tensorCount)], into: &hasher)
            first += shard.tensorCount
            resources.append(SignedResource(name: shard.path, digest: Digest(hasher.finalize())))
        }
        for info in files.header.tensors {
            var hasher = SHA256()
            try hash(files, [info][...], into: &hasher)
            resources.append(SignedResource(name: info.name, digest: Digest(hasher.finalize())))
        }
        return resources
    }

    /// The bytes of a small file of the directory (a config), `nil` when it has none by that path.
    /// - Throws: ``GraftError/invalidDirectory(path:reason:)`` for one over 1 MiB or unreadable.
    package func smallFile(_ path: String) throws(GraftError) -> [UInt8]? {
        guard let info = files.header.tensors.first(where: { $0.name == path }) else { return nil }
        guard info.byteCount <= 1 << 20 else { throw .invalidDirectory(path: origin, reason: "\(path) is over 1 MiB") }
        do { return try files.data(of: info) } catch { throw .invalidFile(path: origin + "/" + path, error) }
    }

    /// Bytes of the directory's files: shards and the rest.
    public var byteCount: Int {
        shards.reduce(0) { $0 + $1.headerBytes.count } + weights.header.dataLength + files.header.dataLength
    }

    /// The header a directory's shards are read under as one file: their tensors in the order
    /// given (shards by path, each in its data order), laid out back to back, with the first
    /// shard's metadata. One shard is read under its own header (the caller keeps its bytes).
    /// The local reader and the server's check of an uploaded directory both use this, so a
    /// directory committed remotely has the digest a local import gives it.
    package static func combinedHeader(_ shards: [SafeTensorsHeader]) throws(SafeTensorsError) -> [UInt8] {
        let all = shards.flatMap(\.tensors)
        return try SafeTensorsWriter.header(inOrder: all.map { ($0.name, $0.dtype, $0.shape) }, metadata: shards.first?.metadataDictionary)
    }

    /// What is wrong with a file's relative path as a directory checkpoint records it, or `nil`:
    /// POSIX, relative, no empty, `.`, `..` or hidden component, no control character or
    /// backslash, at most 4,096 bytes. The local walk and the server's check of an upload share it.
    package static func pathProblem(_ path: String) -> String? {
        guard !path.isEmpty, path.utf8.count <= 4096 else { return "a path is 1 to 4,096 bytes" }
        guard !path.hasPrefix("/") else { return "an absolute path" }
        for component in path.split(separator: "/", omittingEmptySubsequences: false) {
            guard !component.isEmpty, !component.hasPrefix(".") else { return "an empty, `.`, `..` or hidden component" }
        }
        if let bad = path.unicodeScalars.first(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) || $0 == "\\" }) {
            return "the character U+\(String(bad.value, radix: 16, uppercase: true)) (a control character or a backslash)"
        }
        return nil
    }

    /// The checkpoint's files, by path, once the other files are ingested (`blobs`, in `files` order).
    func layout(files blobs: [IngestedTensor]) -> [CheckpointFile] {
        var layout: [CheckpointFile] = []
        var first = 0
        for shard in shards {
            layout.append(
                CheckpointFile(path: shard.path, content: .shard(header: shard.headerBytes, first: first, count: shard.tensorCount)))
            first += shard.tensorCount
        }
        for blob in blobs {
            layout.append(
                CheckpointFile(path: blob.info.name, content: .file(digest: blob.digest, length: blob.info.byteCount, inline: nil)))
        }
        return layout.sorted { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
    }
}

/// What a model directory import leaves out and how much it takes (docs/CLI.md, "Model directories").
public struct DirectoryOptions: Sendable, Equatable {
    /// The most files a directory may hold (shards and the rest).
    public static let defaultMaxFiles = 10_000
    /// The largest file other than a shard (a shard's size is the format's to bound).
    public static let defaultMaxFileBytes = 1 << 30

    /// Globs (fnmatch rules; `*` crosses `/`) of relative paths to leave out; a pattern without
    /// `/` also matches a file's own name at any depth.
    public var exclude: [String]
    public var maxFiles: Int
    public var maxFileBytes: Int

    public init(exclude: [String] = [], maxFiles: Int = defaultMaxFiles, maxFileBytes: Int = defaultMaxFileBytes) {
        (self.exclude, self.maxFiles, self.maxFileBytes) = (exclude, maxFiles, maxFileBytes)
    }

    /// Whether `path` (relative, POSIX) is excluded.
    public func excludes(_ path: String) -> Bool {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return exclude.contains { pattern in
            let glob = Array(pattern.unicodeScalars)
            return Glob.matches(glob, Array(path.unicodeScalars))
                || (!pattern.contains("/") && Glob.matches(glob, Array(name.unicodeScalars)))
        }
    }
}
