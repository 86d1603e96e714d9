import Crypto
import Foundation
public import SafeTensors

/// One tensor of an upload proposal: what the client computed from its own bytes.
public struct ProposedTensor: Sendable, Codable, Equatable {
    public var name: String
    public var digest: Digest
    public var length: Int
    /// The bytes, base64, for a tensor under the server's inline threshold (small tensors live
    /// in the metadata, not as blobs): required at commit, ignored in a proposal.
    public var data: String?

    public init(name: String, digest: Digest, length: Int, data: String? = nil) {
        (self.name, self.digest, self.length, self.data) = (name, digest, length, data)
    }
}

/// One file of a model directory in an upload proposal: a shard (its header, base64) or
/// another file (its digest and length; its bytes, base64, when under the inline threshold, at
/// commit).
public struct ProposedFile: Sendable, Codable, Equatable {
    /// Relative POSIX path in the directory.
    public var path: String
    /// A shard's header exactly as its file begins (the 8-byte length and the JSON), base64.
    public var shardHeader: String?
    public var digest: Digest?
    public var length: Int?
    public var data: String?

    public init(path: String, shardHeader: String? = nil, digest: Digest? = nil, length: Int? = nil, data: String? = nil) {
        (self.path, self.shardHeader, self.digest, self.length, self.data) = (path, shardHeader, digest, length, data)
    }
}

/// A checkpoint as a client proposes it before sending any tensor data: the safetensors header
/// exactly as its file begins (the 8-byte length and the JSON, base64) and each tensor's digest
/// and length. The header fixes the checkpoint's bytes; with the digests the server can
/// enforce a student's manifest and find what it lacks without a byte of tensor data.
///
/// A model directory proposes its `files` instead of a header (`header` is empty): its shards'
/// headers, from which the server builds the header the shards are read under as one file
/// (``DirectoryInput/combinedHeader(_:)``), and its other files' digests; `tensors` are every
/// shard's tensors, names global.
public struct UploadProposal: Sendable, Codable, Equatable {
    public var header: String
    public var tensors: [ProposedTensor]
    public var files: [ProposedFile]?

    public init(header: String, tensors: [ProposedTensor], files: [ProposedFile]? = nil) {
        (self.header, self.tensors, self.files) = (header, tensors, files)
    }

    /// A proposal for a model directory: every tensor and every other file hashed, shards'
    /// headers as they are (nothing is sent inline; the commit adds the small ones' data).
    public static func of(_ directory: DirectoryInput) throws(GraftError) -> UploadProposal {
        let tensors = try of(directory.weights, inlineBelow: 0).tensors
        let others = try of(directory.files, inlineBelow: 0).tensors
        let files =
            directory.shards.map { ProposedFile(path: $0.path, shardHeader: Data($0.headerBytes).base64EncodedString()) }
            + others.map { ProposedFile(path: $0.name, digest: $0.digest, length: $0.length) }
        return UploadProposal(header: "", tensors: tensors, files: files.sorted { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) })
    }

    /// A proposal for a safetensors input: its header, and every tensor hashed from its bytes
    /// (tensors under `inlineBelow` bytes carry their data).
    public static func of(_ input: some SafeTensorsInput, inlineBelow: Int = Registry.defaultInlineThreshold) throws(GraftError)
        -> UploadProposal
    {
        var tensors: [ProposedTensor] = []
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: BlobTransfer.chunkSize, alignment: 64)
        defer { buffer.deallocate() }
        for tensor in input.header.tensors {
            var hasher = SHA256()
            var small: [UInt8] = []
            var offset = 0
            while offset < tensor.byteCount {
                let count = min(BlobTransfer.chunkSize, tensor.byteCount - offset)
                do { try input.read(tensor, at: offset, count: count, into: buffer) } catch { throw .reading(input.origin, error) }
                let chunk = UnsafeRawBufferPointer(start: buffer, count: count)
                hasher.update(bufferPointer: chunk)
                if tensor.byteCount < inlineBelow { small.append(contentsOf: chunk) }
                offset += count
            }
            tensors.append(
                ProposedTensor(
                    name: tensor.name, digest: Digest(hasher.finalize()), length: tensor.byteCount,
                    data: tensor.byteCount < inlineBelow ? Data(small).base64EncodedString() : nil))
        }
        return UploadProposal(header: Data(input.headerBytes).base64EncodedString(), tensors: tensors)
    }
}

/// The server's answer to a proposal: the blobs to send, and which tensors travel inline.
public struct UploadPlan: Sendable, Codable, Equatable {
    /// Blobs the registry lacks (each digest once), to `PUT /v1/blobs/DIGEST` before the commit.
    public var missing: [ProposedTensor]
    /// Tensors of fewer bytes than this travel in the commit (`data`), not as blobs.
    public var inlineBelow: Int
    public var bytesMissing: Int
    public var logicalBytes: Int
    /// Small tensors and files (under `inlineBelow`) the registry holds already: their `data`
    /// may be left out of the commit. (Absent from older servers: send every small one.)
    public var inlinePresent: [Digest]? = nil
}

/// A commit of uploaded tensors: the proposal again (with the small tensors' `data`) and what
/// the CLI's `checkpoint add` or `base add` would take.
public struct UploadCommit: Sendable, Codable, Equatable {
    public var proposal: UploadProposal
    public var step: Int?
    public var epoch: Int?
    public var metrics: [String: Double]?
    public var split: String?
    public var provenance: Provenance?
    /// A key the client chooses (1 to 128 of `A-Z a-z 0-9 . _ : -`), stored with the
    /// checkpoint: the same commit sent again with it (after a lost answer) answers the
    /// checkpoint it made, `NAME@N`, instead of committing twice.
    public var idempotencyKey: String?
    /// A model directory's `model.sig`, base64: kept with the checkpoint ("signed, not
    /// verified" unless a key below, or one the server requires, verifies it against the
    /// uploaded files before the commit; otherwise the commit is refused).
    public var signature: String?
    /// A PEM public key the signature must verify with (the client's `--public-key`).
    public var publicKey: String?

    public init(
        proposal: UploadProposal, step: Int? = nil, epoch: Int? = nil, metrics: [String: Double]? = nil, split: String? = nil,
        provenance: Provenance? = nil, idempotencyKey: String? = nil
    ) {
        (self.proposal, self.step, self.epoch, self.metrics, self.split, self.provenance) = (
            proposal, step, epoch, metrics, split, provenance
        )
        self.idempotencyKey = idempotencyKey
    }

    /// Checks an idempotency key's form.
    static func checkKey(_ key: String) throws(GraftError) {
        let allowed = key.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || ".:_-".utf8.contains(byte)
        }
        guard (1...128).contains(key.utf8.count), allowed else {
            throw .invalidUpload("an idempotency key is 1 to 128 of A-Z a-z 0-9 . _ : -")
        }
    }
}

/// A proposal checked against its header: tensors in header order, each with its digest.
struct CheckedProposal {
    var headerBytes: [UInt8]
    var header: SafeTensorsHeader
    var digests: [Digest]
    var data: [[UInt8]?]
    /// For a student: the tensors its manifest records as `new` (set by the registry's check).
    var newTensors: [String]? = nil
    /// For a model directory: its files by path, and its other files' blobs (`data` for small ones).
    var layout: [CheckpointFile] = []
    var fileBlobs: [(path: String, digest: Digest, length: Int, data: [UInt8]?)] = []

    /// A header as a file begins, base64, parsed (`what` names it in messages).
    static func parseHeader(_ text: String, what: String) throws(GraftError) -> ([UInt8], SafeTensorsHeader) {
        guard let bytes = Data(base64Encoded: text).map(Array.init) else { throw .invalidUpload("\(what) is not base64") }
        guard bytes.count >= 8 else {
            throw .invalidUpload("\(what) holds \(bytes.count) bytes; a safetensors header starts with an 8-byte length")
        }
        var declared: UInt64 = 0
        for i in (0..<8).reversed() { declared = declared << 8 | UInt64(bytes[i]) }
        guard declared <= UInt64(SafeTensorsHeader.maximumLength), Int(declared) == bytes.count - 8 else {
            throw .invalidUpload("\(what)'s length prefix says \(declared) bytes of JSON; \(bytes.count - 8) were sent")
        }
        do { return (bytes, try SafeTensorsHeader.parse(json: Array(bytes[8...]), fileSize: nil)) } catch {
            throw .invalidFile(path: what, error)
        }
    }

    init(_ proposal: UploadProposal) throws(GraftError) {
        if let files = proposal.files, !files.isEmpty {
            guard proposal.header.isEmpty else {
                throw .invalidUpload("a model directory's header is built from its shards' headers: send an empty header")
            }
            guard files.count <= DirectoryOptions.defaultMaxFiles else {
                throw .invalidUpload("\(files.count) files; a model directory holds at most \(DirectoryOptions.defaultMaxFiles)")
            }
            let sorted = files.sorted { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
            var shards: [(path: String, bytes: [UInt8], header: SafeTensorsHeader)] = []
            for (index, file) in sorted.enumerated() {
                if let problem = DirectoryInput.pathProblem(file.path) { throw .invalidUpload("file \(show(file.path)): \(problem)") }
                if index > 0, sorted[index - 1].path == file.path { throw .invalidUpload("file \(show(file.path)) is proposed twice") }
                if let text = file.shardHeader {
                    guard file.digest == nil, file.length == nil, file.data == nil else {
                        throw .invalidUpload("file \(show(file.path)) is a shard: its header, not a digest, length or data")
                    }
                    let (bytes, header) = try Self.parseHeader(text, what: "the header of shard \(show(file.path))")
                    shards.append((file.path, bytes, header))
                } else {
                    guard let digest = file.digest, let length = file.length, length >= 0 else {
                        throw .invalidUpload("file \(show(file.path)) needs a digest and a length (or a shard header)")
                    }
                    var data: [UInt8]? = nil
                    if let text = file.data {
                        guard let bytes = Data(base64Encoded: text).map(Array.init), bytes.count == length, Digest.of(bytes) == digest
                        else {
                            throw .invalidUpload(
                                "file \(show(file.path)): its data is not \(length) bytes of base64 hashing to \(digest.short)…")
                        }
                        data = bytes
                    }
                    fileBlobs.append((file.path, digest, length, data))
                }
            }
            guard !shards.isEmpty else { throw .invalidUpload("a model directory needs safetensors weights (a file with a shard header)") }
            var first = 0
            for shard in shards {
                layout.append(
                    CheckpointFile(path: shard.path, content: .shard(header: shard.bytes, first: first, count: shard.header.tensors.count)))
                first += shard.header.tensors.count
            }
            for file in fileBlobs {
                layout.append(CheckpointFile(path: file.path, content: .file(digest: file.digest, length: file.length, inline: nil)))
            }
            layout.sort { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
            if shards.count == 1 {
                (headerBytes, header) = (shards[0].bytes, shards[0].header)
            } else {
                do {
                    let bytes = try DirectoryInput.combinedHeader(shards.map(\.header))
                    (headerBytes, header) = (bytes, try SafeTensorsHeader.parse(json: Array(bytes[8...]), fileSize: nil))
                } catch {
                    throw .invalidUpload("the shards cannot be read as one set of tensors: \(error)")
                }
            }
        } else {
            (headerBytes, header) = try Self.parseHeader(proposal.header, what: "the header")
        }
        var byName: [String: ProposedTensor] = [:]
        for tensor in proposal.tensors {
            guard byName.updateValue(tensor, forKey: tensor.name) == nil else {
                throw .invalidUpload("tensor \(show(tensor.name)) is proposed twice")
            }
        }
        guard byName.count == header.tensors.count else {
            let names = Set(header.tensors.map(\.name))
            let extra = byName.keys.filter { !names.contains($0) }.sorted()
            let missing = names.filter { byName[$0] == nil }.sorted()
            throw .invalidUpload(
                "the proposal's tensors differ from the header's"
                    + (missing.isEmpty ? "" : "; not proposed: " + missing.prefix(5).map(show).joined(separator: ", "))
                    + (extra.isEmpty ? "" : "; not in the header: " + extra.prefix(5).map(show).joined(separator: ", ")))
        }
        var digests: [Digest] = []
        var data: [[UInt8]?] = []
        for info in header.tensors {
            guard let proposed = byName[info.name] else { throw .invalidUpload("tensor \(show(info.name)) of the header is not proposed") }
            guard proposed.length == info.byteCount else {
                throw .invalidUpload("tensor \(show(info.name)): proposed as \(proposed.length) bytes, the header gives \(info.byteCount)")
            }
            digests.append(proposed.digest)
            if let text = proposed.data {
                guard let bytes = Data(base64Encoded: text).map(Array.init), bytes.count == info.byteCount,
                    Digest.of(bytes) == proposed.digest
                else {
                    throw .invalidUpload(
                        "tensor \(show(info.name)): its data is not \(info.byteCount) bytes of base64 hashing to \(proposed.digest.short)…")
                }
                data.append(bytes)
            } else {
                data.append(nil)
            }
        }
        (self.digests, self.data) = (digests, data)
    }

    /// The bytes the checkpoint exports to: its file, or its directory (shards and other files).
    var logicalBytes: Int {
        guard !layout.isEmpty else { return headerBytes.count + header.dataLength }
        let shardHeaders = layout.reduce(0) { total, file in
            if case .shard(let header, _, _) = file.content { return total + header.count }
            return total
        }
        return shardHeaders + header.dataLength + fileBlobs.reduce(0) { $0 + $1.length }
    }
}

extension Registry {
    /// Checks a proposed commit to `name` (a new base when `base`, else the model's next
    /// checkpoint) and answers which blobs to send. A student's manifest is enforced from the
    /// header and digests alone: a violation throws ``GraftError/manifestViolation(model:violations:)``
    /// naming every offending tensor, and nothing is stored.
    ///
    /// - Parameter visibleTo: a glob over model names; a blob counts as present only when a
    ///   model it matches refers to it, so a confined client learns nothing of other models.
    public func planUpload(to name: ModelName, base: Bool, _ proposal: UploadProposal, visibleTo pattern: String? = nil)
        async throws(GraftError)
        -> UploadPlan
    {
        let checked = try await check(proposal, to: name, base: base)
        let inlineBelow = blobs.inlineThreshold
        var seen = Set<Digest>()
        var candidates: [ProposedTensor] = []
        for (index, info) in checked.header.tensors.enumerated() where info.byteCount >= inlineBelow {
            let digest = checked.digests[index]
            if seen.insert(digest).inserted { candidates.append(ProposedTensor(name: info.name, digest: digest, length: info.byteCount)) }
        }
        // A directory's other files are blobs too (named by their paths in the answer).
        for file in checked.fileBlobs where file.length >= inlineBelow && seen.insert(file.digest).inserted {
            candidates.append(ProposedTensor(name: file.path, digest: file.digest, length: file.length))
        }
        let store = blobs.store
        // Present blobs are claimed: gc's grace period then protects them until the commit.
        var present = Set(candidates.filter { store.contains($0.digest, claim: true) }.map(\.digest))
        if let pattern, !present.isEmpty {
            present = try await metadata.digests(Array(present), referencedByModelsMatching: pattern)
        }
        let missing = candidates.filter { !present.contains($0.digest) }
        return UploadPlan(
            missing: missing, inlineBelow: inlineBelow, bytesMissing: missing.reduce(0) { $0 + $1.length },
            logicalBytes: checked.logicalBytes, inlinePresent: try await inlineHeld(checked, visibleTo: pattern).keys.sorted())
    }

    /// Commits uploaded tensors as a new base (`provenance` from the commit) or the model's next
    /// checkpoint: every blob must be stored already (``GraftError/blobsMissing(_:)`` lists
    /// those that are not; nothing is committed) and every small tensor carry its data. The
    /// checkpoint is the one a local import of the same file makes: same digest, same bytes.
    ///
    /// - Parameters:
    ///   - visibleTo: a confined client's glob over model names. A stored blob counts only when
    ///     a model it matches refers to it or the client proved it holds the bytes (sent them,
    ///     checked, within the upload window: `proofsOf`); else it is missing, as in
    ///     ``planUpload(to:base:_:visibleTo:)``. Knowing a hidden model's digest is not enough.
    ///   - proofsOf: the name of the token whose upload proofs count.
    ///   - requiredSigners: keys one of which must verify the commit's signature against its
    ///     files (`graft serve --require-signed-bases`); empty: a signature is optional.
    public func commitUpload(
        to name: ModelName, base: Bool, _ commit: UploadCommit, visibleTo pattern: String? = nil, proofsOf token: String? = nil,
        requiredSigners: [VerifyingKey] = []
    ) async throws(GraftError) -> ImportResult {
        if let split = commit.split { try MetricAssignment.checkName(split) }
        let metrics = try (commit.metrics ?? [:]).sorted { $0.key < $1.key }.map { (key, value) throws(GraftError) in
            try MetricAssignment(name: key, value: value)
        }
        if base, commit.step != nil || commit.epoch != nil || !metrics.isEmpty {
            throw .invalidUpload("a base is registered without step, epoch or metrics")
        }
        try commit.provenance?.check()
        if let key = commit.idempotencyKey {
            try UploadCommit.checkKey(key)
            if let replay = try await replayed(commit, key: key, to: name) { return replay }
        }
        return try await retryingVanishedBlobs { () async throws(GraftError) in
            let checked = try await check(commit.proposal, to: name, base: base)
            let store = blobs.store
            // Small ones sent without data: the bytes the registry holds (checked against the digest).
            let needed = checked.data.contains(where: { $0 == nil }) || checked.fileBlobs.contains(where: { $0.data == nil })
            let held = needed ? try await inlineHeld(checked, visibleTo: pattern) : [:]
            var tensors: [IngestedTensor] = []
            var missing: [Digest] = []
            for (index, info) in checked.header.tensors.enumerated() {
                let digest = checked.digests[index]
                if info.byteCount < blobs.inlineThreshold {
                    guard let data = checked.data[index] ?? held[digest].flatMap({ Digest.of($0) == digest ? $0 : nil }) else {
                        throw .invalidUpload(
                            "tensor \(show(info.name)) is under \(blobs.inlineThreshold) bytes: its data must come with the commit")
                    }
                    tensors.append(IngestedTensor(info: info, digest: digest, inline: data, wroteFile: false))
                } else {
                    if !store.contains(digest, claim: true) { missing.append(digest) }
                    tensors.append(IngestedTensor(info: info, digest: digest, inline: nil, wroteFile: false))
                }
            }
            var fileBlobs: [IngestedTensor] = []
            for file in checked.fileBlobs {
                let info = TensorInfo(name: file.path, dtype: .u8, shape: [file.length], dataOffsets: 0..<file.length)
                if file.length < blobs.inlineThreshold {
                    guard let data = file.data ?? held[file.digest].flatMap({ Digest.of($0) == file.digest ? $0 : nil }) else {
                        throw .invalidUpload(
                            "file \(show(file.path)) is under \(blobs.inlineThreshold) bytes: its data must come with the commit")
                    }
                    fileBlobs.append(IngestedTensor(info: info, digest: file.digest, inline: data, wroteFile: false))
                } else {
                    if !store.contains(file.digest, claim: true) { missing.append(file.digest) }
                    fileBlobs.append(IngestedTensor(info: info, digest: file.digest, inline: nil, wroteFile: false))
                }
            }
            if let pattern {
                let stored = Array(Set((tensors + fileBlobs).filter { $0.inline == nil }.map(\.digest)).subtracting(missing))
                let seen = try await metadata.digests(stored, referencedByModelsMatching: pattern)
                let unseen = stored.filter { !seen.contains($0) }
                let proven = unseen.isEmpty ? [] : try await metadata.uploadProofs(unseen, token: token ?? "")
                missing += unseen.filter { !proven.contains($0) }
            }
            if !missing.isEmpty { throw .blobsMissing(Array(Set(missing)).sorted()) }
            var new = NewCheckpoint(
                headerBytes: checked.headerBytes, headerDigest: Digest.of(checked.headerBytes),
                digest: Self.checkpointDigest(header: checked.headerBytes, tensors: tensors, files: checked.layout),
                metadata: checked.header.metadataDictionary,
                dataLength: checked.header.dataLength, fileBytes: checked.headerBytes.count + checked.header.dataLength, tensors: tensors,
                step: commit.step, epoch: commit.epoch)
            (new.files, new.fileBlobs, new.idempotencyKey) = (checked.layout, fileBlobs, commit.idempotencyKey)
            new.signature = try await uploadedSignature(
                commit,
                of: CheckpointParts(
                    header: new.headerBytes, tensors: tensors.map { ($0.digest, $0.info.byteCount, $0.inline) },
                    files: checked.layout), name: name, requiredSigners: requiredSigners)
            let stillStored: @Sendable (Digest) -> Bool = { store.contains($0, claim: false) }
            let logical = checked.logicalBytes
            let data = new.dataLength + fileBlobs.reduce(0) { $0 + $1.info.byteCount }
            let files = checked.layout.isEmpty ? nil : checked.layout.count
            if base {
                let inline = try await metadata.insertBase(
                    name: name, provenance: commit.provenance ?? Provenance(), checkpoint: new, stillStored: stillStored)
                return ImportResult(
                    model: name, checkpoint: "\(name)@1", digest: new.digest, tensors: tensors.count, parameters: new.parameterCount,
                    logicalBytes: logical, bytesStored: inline, bytesAlreadyPresent: data - inline, files: files,
                    signature: new.signature?.info)
            }
            let (number, inline) = try await metadata.insertCheckpoint(
                model: name, new, metrics: metrics, split: commit.split, newTensors: checked.newTensors, stillStored: stillStored)
            return ImportResult(
                model: name, checkpoint: "\(name)@\(number)", digest: new.digest, tensors: tensors.count, parameters: new.parameterCount,
                logicalBytes: logical, bytesStored: inline, bytesAlreadyPresent: data - inline,
                newTensors: checked.newTensors ?? [], files: files, signature: new.signature?.info)
        }
    }

    /// The signature a commit carries, checked before anything is recorded: with the commit's
    /// public key when it gives one, and with one of `requiredSigners` when there are any
    /// (then a commit without a signature is refused); a verified signature's files are
    /// rehashed from the uploaded blobs and compared. `nil` when the commit has none.
    private func uploadedSignature(_ commit: UploadCommit, of parts: CheckpointParts, name: ModelName, requiredSigners: [VerifyingKey])
        async throws(GraftError) -> StoredSignature?
    {
        guard let text = commit.signature else {
            if !requiredSigners.isEmpty { throw .notSigned("\(name.value) (this server registers only bases signed by a key it trusts)") }
            if commit.publicKey != nil { throw .notSigned("\(name.value) (a public key came without a signature)") }
            return nil
        }
        guard let bytes = Data(base64Encoded: text).map(Array.init) else { throw .invalidUpload("the signature is not base64") }
        let origin = "\(name.value)/\(ModelSignature.fileName)"
        let signature = try ModelSignature.parse(bytes, origin: origin)
        var verified = false
        if let pem = commit.publicKey {
            try signature.verify(with: try VerifyingKey(pem: pem, origin: "the commit's public key"), origin: origin)
            verified = true
        }
        if !requiredSigners.isEmpty {
            guard requiredSigners.contains(where: { (try? signature.verify(with: $0, origin: origin)) != nil }) else {
                throw .invalidSignature(origin, problems: ["no key this server trusts made it (key hint \(signature.keyHint ?? "none"))"])
            }
            verified = true
        }
        if verified {
            try signature.checkFiles(try await signedResources(of: parts), origin: origin)
        }
        return StoredSignature(signature, verified: verified, origin: "imported")
    }

    /// What a commit sent again with an idempotency key it already used answers: the checkpoint
    /// it made, when the commit is the same (same checkpoint digest); `nil` when the key is new.
    /// - Throws: ``GraftError/invalidUpload(_:)`` when the key made another checkpoint.
    private func replayed(_ commit: UploadCommit, key: String, to name: ModelName) async throws(GraftError) -> ImportResult? {
        guard let existing = try await metadata.checkpoint(model: name, idempotencyKey: key) else { return nil }
        let checked = try CheckedProposal(commit.proposal)
        let tensors = zip(checked.header.tensors, checked.digests).map { info, digest in
            IngestedTensor(info: info, digest: digest, inline: nil, wroteFile: false)
        }
        let digest = Self.checkpointDigest(header: checked.headerBytes, tensors: tensors, files: checked.layout)
        guard digest == existing.summary.digest else {
            throw .invalidUpload("the idempotency key \(show(key)) made \(existing.summary.ref), which is another checkpoint")
        }
        let data = checked.header.dataLength + checked.fileBlobs.reduce(0) { $0 + $1.length }
        return ImportResult(
            model: name, checkpoint: existing.summary.ref, digest: digest, tensors: tensors.count,
            parameters: existing.summary.parameterCount, logicalBytes: checked.logicalBytes, bytesStored: 0, bytesAlreadyPresent: data,
            files: checked.layout.isEmpty ? nil : checked.layout.count)
    }

    /// The small tensors and files of a proposal (under the inline threshold) whose bytes the
    /// registry holds inline — for a confined token only those a model it sees refers to.
    private func inlineHeld(_ checked: CheckedProposal, visibleTo pattern: String?) async throws(GraftError) -> [Digest: [UInt8]] {
        let threshold = blobs.inlineThreshold
        var small = Set<Digest>()
        for (index, info) in checked.header.tensors.enumerated() where info.byteCount < threshold { small.insert(checked.digests[index]) }
        for file in checked.fileBlobs where file.length < threshold { small.insert(file.digest) }
        guard !small.isEmpty else { return [:] }
        var held = try await metadata.inlineBytes(Array(small))
        if let pattern, !held.isEmpty {
            let seen = try await metadata.digests(Array(held.keys), referencedByModelsMatching: pattern)
            held = held.filter { seen.contains($0.key) }
        }
        return held
    }

    /// The proposal against its header and the model: a taken name for a base, an unknown model
    /// or a manifest violation (from the header and the digests) for a checkpoint. The manifest
    /// is read and planned once: the commit records the plan's `new` tensors.
    /// `parsed`: the proposal already parsed and checked (a copy has), not parsed again.
    func check(_ proposal: UploadProposal, to name: ModelName, base: Bool, parsed: CheckedProposal? = nil) async throws(GraftError)
        -> CheckedProposal
    {
        if base {
            if try await modelID(name) != nil { throw .modelExists(name) }
        } else {
            guard try await modelID(name) != nil else { throw try await notFound(name) }
        }
        var checked: CheckedProposal
        if let parsed { checked = parsed } else { checked = try CheckedProposal(proposal) }
        guard !base, let manifest = try await self.manifest(of: name) else { return checked }
        let adapterConfig = manifest.mode == .adapter ? try await adapterConfig(checked) : .missing
        let plan = ManifestEnforcement.plan(manifest, tensors: checked.header.tensors, adapterConfig: adapterConfig)
        // A checkpoint under another prefix: one line says so (other violations are listed below, with the drift).
        let refusal = Self.refusal(name, manifest, tensors: checked.header.tensors, plan.violations)
        if case .prefixMismatch = refusal { throw refusal }
        var violations = plan.violations
        violations += ManifestEnforcement.frozenDrift(
            manifest, hashed: plan.frozen.map { (checked.header.tensors[$0].name, checked.digests[$0]) })
        if !violations.isEmpty { throw .manifestViolation(model: name, violations: violations) }
        checked.newTensors = plan.newTensors
        return checked
    }

    /// An uploaded adapter's `adapter_config.json`: sent with the proposal, held inline, or a
    /// stored blob; `.pending` while it is still to be uploaded.
    private func adapterConfig(_ checked: CheckedProposal) async throws(GraftError) -> AdapterConfigBytes {
        guard let file = checked.fileBlobs.first(where: { $0.path == AdapterConfig.fileName }) else { return .missing }
        if let data = file.data { return .bytes(data) }
        guard file.length <= 1 << 20 else { throw .invalidUpload("\(AdapterConfig.fileName) is over 1 MiB") }
        if let held = try await metadata.inlineBytes([file.digest])[file.digest], Digest.of(held) == file.digest { return .bytes(held) }
        guard blobs.store.contains(file.digest, claim: false) else { return .pending }
        return .bytes(try blobs.bytes(file.digest, length: file.length, inline: nil))
    }

    /// Starts storing one uploaded blob (`PUT /v1/blobs/DIGEST`): bytes go to temporary storage
    /// as they arrive, hashed; ``BlobUpload/finish()`` keeps them only when they number `length`
    /// and hash to `expected`, and makes the blob durable before answering.
    public func beginBlobUpload(expected: Digest, length: Int) throws(GraftError) -> BlobUpload {
        try BlobUpload(transfer: blobs, expected: expected, length: length)
    }
}

/// Bytes that arrive in small pieces (network buffers) gathered into 1 MiB appends to an upload,
/// each written off the cooperative pool: a server receiving a PUT, a client fetching a blob.
package struct GatheredUpload {
    package let upload: BlobUpload
    private var pending: [UInt8] = []

    package init(_ upload: BlobUpload) {
        self.upload = upload
        pending.reserveCapacity(1 << 20)
    }

    /// Adds a piece; writes once 1 MiB has gathered.
    package mutating func add(_ piece: some Collection<UInt8>) async throws(GraftError) {
        pending.append(contentsOf: piece)
        if pending.count >= 1 << 20 { try await flush() }
    }

    /// Writes what has gathered.
    package mutating func flush() async throws(GraftError) {
        guard !pending.isEmpty else { return }
        let (bytes, upload) = (pending, self.upload)
        pending.removeAll(keepingCapacity: true)
        try await offload { () throws(GraftError) in
            try bytes.withUnsafeBytes { raw in Result { () throws(GraftError) in try upload.append(raw) } }.get()
        }
    }
}

/// A blob arriving in pieces (an HTTP body): see ``Registry/beginBlobUpload(expected:length:)``.
/// Not safe for concurrent calls; one request owns it.
public final class BlobUpload: @unchecked Sendable {
    let expected: Digest
    let length: Int
    let transfer: BlobTransfer
    private let write: (any BlobWrite)?
    private var hasher = SHA256()
    private var total = 0
    private var done = false

    init(transfer: BlobTransfer, expected: Digest, length: Int) throws(GraftError) {
        (self.transfer, self.expected, self.length) = (transfer, expected, length)
        // A blob the store holds is claimed, and the bytes sent are hashed and discarded: every
        // upload is checked against its digest, so a PUT's answer never says whether the store
        // held the blob (no existence oracle for a confined token).
        write = transfer.store.contains(expected, claim: true) ? nil : try transfer.store.beginWrite()
    }

    /// Appends bytes (blocking file I/O: call it off the cooperative pool).
    /// - Throws: ``GraftError/blobMismatch(_:reason:)`` past the announced length (the upload is abandoned).
    public func append(_ chunk: UnsafeRawBufferPointer) throws(GraftError) {
        do throws(GraftError) {
            total += chunk.count
            guard total <= length else { throw .blobMismatch(expected, reason: "run past the announced \(length) bytes") }
            hasher.update(bufferPointer: chunk)
            try write?.write(chunk)
        } catch {
            abort()
            throw error
        }
    }

    /// Files the blob when its bytes number and hash as announced, durable on return.
    /// - Returns: whether this upload stored it (false when the store held it already).
    public func finish() throws(GraftError) -> Bool {
        do throws(GraftError) {
            guard total == length else { throw .blobMismatch(expected, reason: "end after \(total) of the announced \(length) bytes") }
            done = true
            let actual = Digest(hasher.finalize())
            guard actual == expected else { throw .blobMismatch(expected, reason: "hash to \(actual.short)…") }
            guard let write else { return false }
            let stored = try write.commit(as: expected)
            try transfer.store.flush(stored ? [expected] : [])
            return stored
        } catch {
            abort()
            throw error
        }
    }

    /// Abandons the upload: nothing is kept (the temporary bytes are removed).
    public func abort() {
        write?.abort()
        done = true
    }

    deinit {
        if !done { write?.abort() }
    }
}

/// The blobs upload proposals announced, with their lengths, for a while: a `PUT` of a blob is
/// accepted only when a proposal asked for it, and never past the announced length. The SQLite
/// store keeps them here, in the server's memory (one server per registry directory); the
/// PostgreSQL store keeps them in the database, so a PUT may reach any of several servers.
package actor UploadAnnouncements {
    private var entries: [Digest: (length: Int, until: ContinuousClock.Instant)] = [:]
    /// Bounds the table: a client cannot grow the server's memory by proposing without end.
    package static let capacity = 1_000_000

    package init() {}

    package func announce(_ blobs: [ProposedTensor], window: Duration) throws(GraftError) {
        let now = ContinuousClock.now
        if entries.count + blobs.count > Self.capacity { entries = entries.filter { $0.value.until > now } }
        guard entries.count + blobs.count <= Self.capacity else { throw .busy }
        for blob in blobs { entries[blob.digest] = (blob.length, now + window) }
    }

    /// The announced length of a blob, if a live proposal announced it.
    package func length(of digest: Digest) -> Int? {
        guard let entry = entries[digest], entry.until > ContinuousClock.now else { return nil }
        return entry.length
    }

    private struct Proof: Hashable {
        var digest: Digest
        var token: String
    }
    private var proofs: [Proof: ContinuousClock.Instant] = [:]

    /// Records that `token` sent `digest`'s bytes, checked; bounded like the announcements.
    package func prove(_ digest: Digest, token: String, window: Duration) throws(GraftError) {
        let now = ContinuousClock.now
        if proofs.count >= Self.capacity { proofs = proofs.filter { $0.value > now } }
        guard proofs.count < Self.capacity else { throw .busy }
        proofs[Proof(digest: digest, token: token)] = now + window
    }

    /// Of `digests`, those `token` holds a live proof of.
    package func proven(_ digests: [Digest], token: String) -> Set<Digest> {
        let now = ContinuousClock.now
        return Set(digests.filter { proofs[Proof(digest: $0, token: token)].map { $0 > now } ?? false })
    }
}

extension Registry {
    /// Records that a proposal asked for `blobs`: each may be PUT, at most its length, for `window`.
    package func announceUploads(_ blobs: [ProposedTensor], window: Duration) async throws(GraftError) {
        guard !blobs.isEmpty else { return }
        try await metadata.announceUploads(blobs, window: window)
    }

    /// Records that the token named `token` sent `digest`'s bytes, checked: it may commit the
    /// blob for `window` though no model it sees refers to it.
    package func recordUploadProof(_ digest: Digest, token: String, window: Duration) async throws(GraftError) {
        try await metadata.recordUploadProof(digest, token: token, window: window)
    }

    /// The length a live proposal announced for a blob, if any.
    package func announcedLength(of digest: Digest) async throws(GraftError) -> Int? {
        try await metadata.announcedLength(of: digest)
    }
}
