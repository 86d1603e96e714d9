import Crypto
import Synchronization

/// What `graft sign` did.
public struct SignResult: Sendable, Codable, Equatable {
    public var checkpoint: String
    public var signature: SignatureInfo
}

/// The API's form of a checkpoint's `model.sig` (`GET /v1/checkpoints/{ref}/signature`) and of
/// a signature sent to record (`PUT`, with the public key that must verify it).
public struct SignatureBundle: Sendable, Codable, Equatable {
    /// The file's bytes, base64; `nil` when the checkpoint has none.
    public var bundle: String?
    /// PEM public key (in a `PUT` only).
    public var publicKey: String?
    /// The checkpoint it belongs to, `NAME@N` (in a `GET` answer: a bare NAME resolved).
    public var checkpoint: String?
    public init(bundle: String?, publicKey: String? = nil, checkpoint: String? = nil) {
        (self.bundle, self.publicKey, self.checkpoint) = (bundle, publicKey, checkpoint)
    }
}

/// The files a checkpoint exports to with their SHA-256 (`GET /v1/checkpoints/{ref}/signed-files`).
public struct SignedFiles: Sendable, Codable, Equatable {
    public var checkpoint: String
    public var files: [SignedResource]
    public init(checkpoint: String, files: [SignedResource]) { (self.checkpoint, self.files) = (checkpoint, files) }
}

/// What `graft verify-signature` found: the signature checked with the key and against the files.
public struct SignatureVerification: Sendable, Codable, Equatable {
    /// The checkpoint (for a registry reference) or the directory or file checked.
    public var subject: String
    public var keyHint: String
    public var curve: String
    public var rootDigest: Digest
    public var files: Int

    package init(subject: String, key: VerifyingKey, signature: ModelSignature) {
        (self.subject, self.keyHint, self.curve) = (subject, key.hint, key.curve.rawValue)
        (self.rootDigest, self.files) = (signature.rootDigest, signature.resources.count)
    }
}

extension Registry {
    /// The files a checkpoint exports to, each with its SHA-256: what a signature lists. A
    /// plain file's digest is its blob's (no read); a shard's — or, for a checkpoint that is one
    /// file, that file's (named `.`) — is hashed from its header and its tensors' blobs, shards
    /// in two lanes. Every blob is rehashed alongside, as export does, so damage is refused
    /// rather than signed.
    /// - Throws: ``GraftError/damagedBlob(_:reason:)``.
    package func signedResources(of parts: CheckpointParts) async throws(GraftError) -> [SignedResource] {
        // Each stream: a name, leading bytes and a range of the checkpoint's tensors.
        var list: [(name: String, header: [UInt8], tensors: Range<Int>)] = []
        var resources: [SignedResource] = []
        if parts.files.isEmpty {
            list.append((".", parts.header, 0..<parts.tensors.count))
        }
        for file in parts.files {
            switch file.content {
            case .shard(let header, let first, let count): list.append((file.path, header, first..<(first + count)))
            case .file(let digest, _, _): resources.append(SignedResource(name: file.path, digest: digest))
            }
        }
        let tensors = parts.tensors
        let blobs = self.blobs
        let streams = list
        let sizes = streams.map { stream in stream.tensors.reduce(stream.header.count) { $0 + tensors[$1].length } }
        let lanes = BlobTransfer.balance(sizes)
        let digests = Mutex<[Int: Digest]>([:])
        let failure = Mutex<GraftError?>(nil)
        async let damaged = Self.firstDamaged(tensors, in: blobs)
        await BlobTransfer.inLanes(lanes.count) { lane, buffer in
            for index in lanes[lane] {
                var hasher = SHA256()
                hasher.update(data: streams[index].header)
                for position in streams[index].tensors {
                    if failure.withLock({ $0 != nil }) { return }
                    let (digest, length, inline) = tensors[position]
                    if let inline {
                        hasher.update(data: inline)
                        continue
                    }
                    var offset = 0
                    let reader: RawReader
                    do throws(GraftError) { reader = try blobs.reader(digest, length: length) } catch {
                        failure.withLock { if $0 == nil { $0 = error } }
                        return
                    }
                    while offset < length {
                        let count = min(BlobTransfer.chunkSize, length - offset)
                        do throws(GraftError) {
                            try reader.read(at: offset, count: count, into: buffer)
                        } catch {
                            failure.withLock { if $0 == nil { $0 = error } }
                            return
                        }
                        hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buffer, count: count))
                        offset += count
                    }
                }
                let digest = Digest(hasher.finalize())
                digests.withLock { $0[index] = digest }
            }
        }
        if let problem = await damaged { throw problem }
        if let problem = failure.withLock({ $0 }) { throw problem }
        let hashed = digests.withLock { $0 }
        for (index, stream) in streams.enumerated() { resources.append(SignedResource(name: stream.name, digest: hashed[index]!)) }
        return resources.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
    }

    /// Signs a checkpoint's exported tree (without writing it) with `key` and records the
    /// signature with the checkpoint, replacing any it had; `graft export` then writes it as
    /// `model.sig`. The subject is named after the model.
    /// - Throws: ``GraftError/damagedBlob(_:reason:)``, the errors of resolving `reference`.
    public func sign(_ reference: Reference, key: SigningKey) async throws(GraftError) -> SignResult {
        let (id, summary) = try await resolve(reference)
        let resources = try await signedResources(of: try await metadata.parts(checkpoint: id))
        let signature = try ModelSignature.sign(modelName: summary.model.value, resources: resources, key: key)
        let stored = StoredSignature(signature, verified: true, origin: "graft")
        try await metadata.recordSignature(checkpoint: id, stored)
        return SignResult(checkpoint: summary.ref, signature: stored.info)
    }

    /// The files a checkpoint exports to with their SHA-256, as a signature lists them (what a
    /// remote client signs: the server hashes, the private key never leaves the client).
    public func signedFiles(_ reference: Reference) async throws(GraftError) -> [SignedResource] {
        let (id, _) = try await resolve(reference)
        return try await signedResources(of: try await metadata.parts(checkpoint: id))
    }

    /// Records a signature made elsewhere (a remote `graft sign`) once it verifies with
    /// `publicKey` against the checkpoint's files, replacing any it had.
    /// - Throws: ``GraftError/invalidSignature(_:problems:)``.
    public func attachSignature(_ reference: Reference, bundle: [UInt8], publicKey: VerifyingKey) async throws(GraftError) -> SignResult {
        let (id, summary) = try await resolve(reference)
        let signature = try ModelSignature.parse(bundle, origin: summary.ref)
        try signature.verify(with: publicKey, origin: summary.ref)
        try signature.checkFiles(try await signedResources(of: try await metadata.parts(checkpoint: id)), origin: summary.ref)
        let stored = StoredSignature(signature, verified: true, origin: "graft")
        try await metadata.recordSignature(checkpoint: id, stored)
        return SignResult(checkpoint: summary.ref, signature: stored.info)
    }

    /// The bytes of a checkpoint's `model.sig`, `nil` when it has none.
    public func signatureBundle(_ reference: Reference) async throws(GraftError) -> [UInt8]? {
        try await signatureBundle(resolving: reference).bundle
    }

    /// The bytes of a checkpoint's `model.sig` (`nil` without one) and the checkpoint, `NAME@N`.
    public func signatureBundle(resolving reference: Reference) async throws(GraftError) -> (bundle: [UInt8]?, checkpoint: String) {
        let (id, summary) = try await resolve(reference)
        return (try await metadata.signature(checkpoint: id)?.bundle, summary.ref)
    }

    /// Checks a checkpoint's signature with `key` and against the files the checkpoint exports
    /// to (shards rehashed from their blobs).
    /// - Throws: ``GraftError/notSigned(_:)``; ``GraftError/invalidSignature(_:problems:)``
    ///   naming a key mismatch, an altered payload or signature, or every extra, missing and
    ///   changed file.
    public func verifySignature(_ reference: Reference, key: VerifyingKey) async throws(GraftError) -> SignatureVerification {
        let (id, summary) = try await resolve(reference)
        guard let stored = try await metadata.signature(checkpoint: id) else { throw .notSigned(summary.ref) }
        let signature = try ModelSignature.parse(stored.bundle, origin: summary.ref)
        try signature.verify(with: key, origin: summary.ref)
        try signature.checkFiles(try await signedResources(of: try await metadata.parts(checkpoint: id)), origin: summary.ref)
        return SignatureVerification(subject: summary.ref, key: key, signature: signature)
    }
}
