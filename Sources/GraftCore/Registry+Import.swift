import Crypto
public import SafeTensors

extension Registry {
    /// Registers a pretrained base from a safetensors file, as its first checkpoint (`NAME@1`).
    ///
    /// The file is validated before anything is written; tensors stream into the blob store
    /// (two lanes hashing in parallel, bounded memory), and one transaction then records the
    /// model, its checkpoint and its tensors. A tensor the store holds already is not written again.
    ///
    /// - Parameter progress: called with (bytes done, bytes total) while tensors stream.
    /// - Throws: ``GraftError/invalidFile(path:_:)`` for anything that is not valid safetensors
    ///   (nothing is written), ``GraftError/modelExists(_:)``, ``GraftError/diskFull(path:)``.
    ///
    /// ```swift
    /// let result = try await registry.addBase(
    ///     name: try ModelName("resnet18"), file: "resnet18.safetensors",
    ///     provenance: Provenance(source: "https://…", license: "bsd-3-clause"))
    /// ```
    public func addBase(
        name: ModelName, file path: String, provenance: Provenance = Provenance(),
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) async throws(GraftError) -> ImportResult {
        try await retryingVanishedBlobs { () async throws(GraftError) in
            try await addBaseOnce(
                name: name, input: { () throws(GraftError) in try Self.openInput(path) }, provenance: provenance, progress: progress)
        }
    }

    /// Registers a pretrained base from any safetensors input: a file, tensors in memory
    /// (``SafeTensorsMemory``, stored exactly as `SafeTensorsWriter` would have written them), or
    /// a byte stream in safetensors layout (``SafeTensorsStream``: a pipe, standard input), read
    /// once on one lane; a stream that ends early or runs past its data section is refused
    /// (``GraftError/invalidFile(path:_:)``) and nothing is committed.
    public func addBase(
        name: ModelName, input: some SafeTensorsInput, provenance: Provenance = Provenance(),
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) async throws(GraftError) -> ImportResult {
        try await retryingVanishedBlobs(retry: !input.isSequential) { () async throws(GraftError) in
            try await addBaseOnce(name: name, input: { () throws(GraftError) in input }, provenance: provenance, progress: progress)
        }
    }

    /// Registers a pretrained base from a model directory (`DirectoryInput`, read by the local
    /// file layer): its safetensors shards' tensors exactly as one file's, every other file of
    /// the directory (config, tokenizer, card, subfolders) as a content-addressed blob, and each
    /// shard's own header, so that ``export(_:to:overwrite:)`` writes the same tree back.
    public func addBase(
        name: ModelName, directory: DirectoryInput, provenance: Provenance = Provenance(),
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) async throws(GraftError) -> ImportResult {
        try await retryingVanishedBlobs { () async throws(GraftError) in
            try await addBaseOnce(name: name, weights: directory.weights, directory: directory, provenance: provenance, progress: progress)
        }
    }

    /// Opens the directory's weights (an existential) as the generic input the import takes.
    private func addBaseOnce<Input: SafeTensorsInput>(
        name: ModelName, weights: Input, directory: DirectoryInput, provenance: Provenance,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        try await addBaseOnce(
            name: name, input: { () throws(GraftError) in weights }, directory: directory, provenance: provenance, progress: progress)
    }

    /// Runs an import again when `gc` removed a blob it relied on between writing (or finding)
    /// the blob and committing: the next attempt finds it missing and writes it anew. A stream
    /// cannot be read twice (`retry` false): its import reports the error.
    func retryingVanishedBlobs(retry: Bool = true, _ body: () async throws(GraftError) -> ImportResult) async throws(GraftError)
        -> ImportResult
    {
        var attempt = 1
        while true {
            do { return try await body() } catch {
                guard case .blobVanished = error, retry, attempt < 5 else { throw error }
                attempt += 1
            }
        }
    }

    /// One attempt; `input` is opened after the cheap checks, so a taken name is refused first.
    func addBaseOnce<Input: SafeTensorsInput>(
        name: ModelName, input open: () throws(GraftError) -> Input, directory: DirectoryInput? = nil, provenance: Provenance,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        try provenance.check()
        if try await modelID(name) != nil { throw .modelExists(name) }
        // A directory's signature is checked (with its key, against its files) before anything is written.
        let signature = try await Self.checkedSignature(of: directory)
        let reader = try open()
        let total = reader.header.dataLength
        let headerDigest = Digest.of(reader.headerBytes)
        // A file whose header the registry has seen is most likely a re-import: hash before
        // writing, so tensors that are present cost only their hashing.
        let seenBefore = try await metadata.hasHeader(digest: headerDigest)
        var report: (@Sendable (Int) -> Void)? = nil
        if let progress { report = { done in progress(done, total) } }
        let ingested =
            reader.isSequential
            ? try await blobs.ingestInOrder(reader, progress: report)
            : try await blobs.ingest(reader, mode: seenBefore ? .hashFirst : .writeThrough, progress: report)
        try blobs.flush(ingested)
        var commit = try await Self.newCheckpoint(reader, tensors: ingested, directory: directory, blobs: blobs, step: nil, epoch: nil)
        commit.signature = signature
        let store = blobs.store
        let inlineStored = try await metadata.insertBase(
            name: name, provenance: provenance, checkpoint: commit, stillStored: { store.contains($0, claim: false) })
        let stored = Self.bytesWritten(commit) + inlineStored
        let logical = directory?.byteCount ?? reader.fileSize
        return ImportResult(
            model: name, checkpoint: "\(name)@1", digest: commit.digest, tensors: ingested.count,
            parameters: commit.parameterCount, logicalBytes: logical,
            bytesStored: stored, bytesAlreadyPresent: total + (directory?.files.header.dataLength ?? 0) - stored,
            files: directory == nil ? nil : commit.files.count, signature: signature?.info)
    }

    /// Bytes of blob files a commit wrote (each distinct blob once; inline ones are the store's to count).
    static func bytesWritten(_ commit: NewCheckpoint) -> Int {
        var seen = Set<Digest>()
        return commit.blobs.filter { $0.wroteFile && seen.insert($0.digest).inserted }.reduce(0) { $0 + $1.info.byteCount }
    }

    /// Opens an input file, telling a file that cannot be read from one that is not safetensors.
    package static func openInput(_ path: String) throws(GraftError) -> SafeTensorsReader {
        do {
            return try SafeTensorsReader(path: path)
        } catch {
            if case .io = error { throw .cannotReadInput(path: path, error) }
            throw .invalidFile(path: path, error)
        }
    }

    /// What the metadata store records of an ingested input.
    static func newCheckpoint(_ reader: some SafeTensorsInput, tensors: [IngestedTensor], step: Int?, epoch: Int?) -> NewCheckpoint {
        NewCheckpoint(
            headerBytes: reader.headerBytes, headerDigest: Digest.of(reader.headerBytes),
            digest: checkpointDigest(header: reader.headerBytes, tensors: tensors),
            metadata: reader.header.metadataDictionary, dataLength: reader.header.dataLength, fileBytes: reader.fileSize, tensors: tensors,
            step: step, epoch: epoch)
    }

    /// A directory's `model.sig` as its commit records it (``DirectoryInput/checkedSignature()``,
    /// read off the cooperative pool); `nil` without one.
    package static func checkedSignature(of directory: DirectoryInput?) async throws(GraftError) -> StoredSignature? {
        guard let directory, directory.signature != nil || directory.publicKey != nil else { return nil }
        return try await offload { () throws(GraftError) in try directory.checkedSignature() }
    }

    /// What the metadata store records of an ingested input and, for a directory, its other
    /// files, which this ingests (after the tensors: a refused commit never reads them) and flushes.
    static func newCheckpoint(
        _ reader: some SafeTensorsInput, tensors: [IngestedTensor], directory: DirectoryInput?, blobs: BlobTransfer, step: Int?,
        epoch: Int?
    ) async throws(GraftError) -> NewCheckpoint {
        var commit = newCheckpoint(reader, tensors: tensors, step: step, epoch: epoch)
        guard let directory else { return commit }
        let fileBlobs = try await ingestFiles(directory.files, blobs: blobs)
        commit.fileBlobs = fileBlobs
        commit.files = directory.layout(files: fileBlobs)
        commit.digest = checkpointDigest(header: reader.headerBytes, tensors: tensors, files: commit.files)
        return commit
    }

    /// Ingests a directory's plain files as blobs (its input's "tensors" are the files) and flushes them.
    private static func ingestFiles<Files: SafeTensorsInput>(_ files: Files, blobs: BlobTransfer) async throws(GraftError)
        -> [IngestedTensor]
    {
        let ingested = try await blobs.ingest(files, mode: .writeThrough, progress: nil)
        try blobs.flush(ingested)
        return ingested
    }

    /// The checkpoint digest: SHA-256 of the header bytes followed by each tensor's raw digest
    /// and, for a directory, each file by path (its path, and a shard's header digest and
    /// tensor range or a plain file's digest and length).
    static func checkpointDigest(header: [UInt8], tensors: [IngestedTensor], files: [CheckpointFile] = []) -> Digest {
        var hasher = SHA256()
        hasher.update(data: header)
        for tensor in tensors { hasher.update(data: tensor.digest.rawBytes) }
        for file in files { hasher.update(data: file.digestBytes()) }
        return Digest(hasher.finalize())
    }

}
