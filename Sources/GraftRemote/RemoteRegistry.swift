import AsyncHTTPClient
import Crypto
import Foundation
public import GraftCore
import NIOCore
import NIOHTTP1
import NIOSSL
public import SafeTensors

/// A registry behind `graft serve`, over HTTP(S): what the CLI uses for
/// `--registry http(s)://HOST:PORT`. Every method is one route of the API (docs/API.md) and
/// answers the same types as ``Registry``; a server's error comes back as
/// ``GraftError/remote(_:message:details:)`` with its kind, so exit codes match local ones.
///
/// Commits follow the upload protocol: propose (header and digests), send only the blobs the
/// server lacks, then commit. A student's frozen tensors are the parent's blobs and never travel.
public final class RemoteRegistry: RegistryAPI {
    /// The server's base URL, without a trailing slash.
    public let url: String
    private let token: String?
    private let client: HTTPClient
    /// Blobs in flight at once during an upload.
    static let parallelUploads = 4
    static let chunk = 1 << 20
    /// The most an answer that is not a file may hold.
    static let maxAnswer = 256 << 20

    /// - Parameters:
    ///   - url: `http://HOST:PORT` or `https://…`.
    ///   - token: sent as `Authorization: Bearer TOKEN` (`GRAFT_TOKEN`).
    public init(url: String, token: String?) throws(GraftError) {
        var url = url
        while url.hasSuffix("/") { url.removeLast() }
        guard let parsed = URL(string: url), let scheme = parsed.scheme, ["http", "https"].contains(scheme), parsed.host != nil,
            parsed.query == nil, parsed.path.isEmpty
        else {
            throw .badRequest("a registry URL is http(s)://HOST:PORT, not \(url)")
        }
        self.url = url
        self.token = token
        client = try Self.sharedClient.get()
    }

    /// One client per process (connections are pooled and reused), never shut down: the CLI
    /// exits instead. A refused or silent server fails a request after 5 s of connection
    /// attempts. `GRAFT_CA_FILE` (PEM) adds a trusted root for a server with its own certificate.
    private static let sharedClient: Result<HTTPClient, GraftError> = {
        var configuration = HTTPClient.Configuration(timeout: .init(connect: .seconds(5), read: .seconds(600)), decompression: .disabled)
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = parallelUploads + 4
        if let caFile = ProcessInfo.processInfo.environment["GRAFT_CA_FILE"], !caFile.isEmpty {
            do {
                var tls = TLSConfiguration.makeClientConfiguration()
                tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMFile(caFile))]
                configuration.tlsConfiguration = tls
            } catch {
                return .failure(
                    .cannotReadInput(path: caFile, .io(operation: "cannot read a PEM certificate from", path: caFile, errno: 22)))
            }
        }
        return .success(HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration))
    }()

    /// Whether `text` names a server rather than a directory.
    public static func isURL(_ text: String) -> Bool { text.hasPrefix("http://") || text.hasPrefix("https://") }

    // MARK: Reads

    public func models() async throws(GraftError) -> [ModelSummary] { try await get(["v1", "models"]) }
    public func model(_ name: ModelName) async throws(GraftError) -> ModelDetail { try await get(["v1", "models", name.description]) }
    public func checkpoints(of name: ModelName) async throws(GraftError) -> [CheckpointSummary] {
        try await get(["v1", "models", name.description, "checkpoints"])
    }
    public func checkpoint(_ reference: Reference) async throws(GraftError) -> CheckpointDetail {
        try await get(["v1", "checkpoints", reference.description])
    }
    public func smallFile(_ reference: Reference, path: String, limit: Int = 1 << 20) async throws(GraftError) -> [UInt8] {
        let detail = try await checkpoint(reference)
        guard let entry = detail.files.first(where: { $0.path == path }), entry.kind == "file", let digest = entry.digest else {
            throw .fileNotFound(checkpoint: detail.checkpoint.ref, path: path)
        }
        guard entry.bytes <= limit else {
            throw .tooLarge("\(path) of \(detail.checkpoint.ref) holds \(entry.bytes) bytes; at most \(limit) are read whole")
        }
        let body = try await send(.GET, ["v1", "checkpoints", detail.checkpoint.ref, "file"], query: ["path": path]).body
        guard GraftCore.Digest.of(body) == digest else {
            throw .damagedBlob(digest, reason: "the downloaded bytes of \(path) hash to another digest")
        }
        return body
    }
    public func card(_ name: ModelName) async throws(GraftError) -> String {
        String(decoding: try await send(.GET, ["v1", "models", name.description, "card"]).body, as: UTF8.self)
    }
    public func metrics(_ reference: Reference) async throws(GraftError) -> MetricsReport {
        try await get(["v1", "checkpoints", reference.description, "metrics"])
    }
    public func lineage(_ name: ModelName, metric: String?, direction: Direction?, parts: Registry.LineageParts) async throws(GraftError)
        -> LineageReport
    {
        let partsText =
            switch parts {
            case .both: "both"
            case .ancestors: "ancestors"
            case .descendants: "descendants"
            }
        return try await get(
            ["v1", "models", name.description, "lineage"], query: ["metric": metric, "direction": direction?.rawValue, "parts": partsText])
    }
    public func best(metric: String, direction: Direction?, split: String?, scope: BestScope, includeFlagged: Bool) async throws(GraftError)
        -> BestResult
    {
        var query: [String: String?] = [
            "metric": metric, "direction": direction?.rawValue, "split": split, "include_flagged": includeFlagged ? "true" : nil,
        ]
        switch scope {
        case .all: break
        case .model(let name): query["model"] = name.description
        case .under(let name): query["under"] = name.description
        }
        return try await get(["v1", "best"], query: query)
    }
    public func affected(_ reference: Reference, exposure: ExposureDetail? = .digests) async throws(GraftError) -> [AffectedModel] {
        try await get(
            ["v1", "checkpoints", reference.description, "affected"], query: ["paths": "true", "exposure": exposure?.rawValue ?? "none"])
    }
    public func exposure(of descendant: Reference, to ancestor: Reference, detail: ExposureDetail = .drift) async throws(GraftError)
        -> Exposure
    {
        try await get(
            ["v1", "checkpoints", descendant.description, "exposure"], query: ["to": ancestor.description, "detail": detail.rawValue])
    }
    public func advisories(includeResolved: Bool) async throws(GraftError) -> [Advisory] {
        try await get(["v1", "advisories"], query: ["all": includeResolved ? "true" : nil])
    }
    public func diff(_ first: Reference, _ second: Reference) async throws(GraftError) -> DiffResult {
        try await get(["v1", "diff"], query: ["from": first.description, "to": second.description])
    }
    public func stats() async throws(GraftError) -> RegistryStats { try await get(["v1", "stats"]) }
    public func verify(readData: Bool) async throws(GraftError) -> VerifyReport {
        try await call(.POST, ["v1", "verify"], query: ["read_data": readData ? "true" : nil])
    }

    public func manifest(of name: ModelName) async throws(GraftError) -> ManifestSummary? {
        try await model(name).manifest
    }

    /// Downloads the checkpoint once into a temporary file, maps it (the file is unlinked at
    /// once; the mapping keeps the bytes) and checks its digest: what `graft train` reads a
    /// parent from on a training machine.
    public func openCheckpoint(_ reference: Reference, verify: Bool) async throws(GraftError) -> OpenCheckpoint {
        let summary = try await checkpoint(reference).checkpoint
        let path = NSTemporaryDirectory() + "graft-open-\(UInt64.random(in: 0 ... .max)).safetensors"
        defer { unlink(path) }
        _ = try await export(summary.reference, to: path, overwrite: false)
        let file: MappedSafeTensors
        do { file = try MappedSafeTensors(path: path) } catch { throw .invalidFile(path: "the download of \(summary.ref)", error) }
        return try OpenCheckpoint.copy(of: summary, file: file)
    }

    /// Downloads the checkpoint's exact bytes to `path` (a temporary file, fsync'd, renamed into
    /// place: an interrupted download leaves nothing at `path`). A checkpoint kept as a model
    /// directory downloads as that directory, file by file, into a hidden folder beside `path`
    /// renamed into place whole; every plain file's digest is checked on the way.
    public func export(_ reference: Reference, to path: String, overwrite: Bool) async throws(GraftError) -> ExportResult {
        if !overwrite, FileManager.default.fileExists(atPath: path) { throw .outputExists(path: path) }
        let detail = try await checkpoint(reference)
        if !detail.files.isEmpty { return try await exportDirectory(detail, to: path, overwrite: overwrite) }
        let summary = detail.checkpoint
        let temporary = path + ".graft-download-\(UInt32.random(in: 0 ... .max))"
        let written: Int
        do throws(GraftError) {
            written = try await download(
                ["v1", "checkpoints", summary.ref, "safetensors"], to: temporary, length: summary.fileBytes, digest: nil)
            guard rename(temporary, path) == 0 else { throw GraftError.io(operation: "cannot rename to", path: path, errno: errno) }
        } catch {
            unlink(temporary)
            throw error
        }
        return ExportResult(checkpoint: summary.ref, digest: summary.digest, path: path, bytes: written)
    }

    /// A directory checkpoint's files into a hidden folder beside `path`, then renamed into place.
    private func exportDirectory(_ detail: CheckpointDetail, to path: String, overwrite: Bool) async throws(GraftError) -> ExportResult {
        let manager = FileManager.default
        let target = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        let location = URL(fileURLWithPath: target)
        let temporary =
            location.deletingLastPathComponent().path + "/." + location.lastPathComponent
            + ".graft-download-\(UInt32.random(in: 0 ... .max))"
        var total = 0
        do throws(GraftError) {
            for file in detail.files {
                // A server names files; nothing it sends becomes a path outside the folder.
                if let problem = DirectoryInput.pathProblem(file.path) {
                    throw GraftError.unreachable(url: url, reason: "the server listed a file \(file.path.debugDescription): \(problem)")
                }
                let folder = URL(fileURLWithPath: temporary + "/" + file.path).deletingLastPathComponent().path
                do { try manager.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
                    throw GraftError.io(operation: "cannot create directory", path: folder, errno: EIO)
                }
                total += try await download(
                    ["v1", "checkpoints", detail.checkpoint.ref, "file"], query: ["path": file.path], to: temporary + "/" + file.path,
                    length: file.bytes, digest: file.kind == "file" ? file.digest : nil)
            }
            if manager.fileExists(atPath: target) {
                guard overwrite else { throw GraftError.outputExists(path: path) }
                let old = temporary + ".old"
                guard rename(target, old) == 0 else { throw GraftError.io(operation: "cannot move aside", path: target, errno: errno) }
                guard rename(temporary, target) == 0 else { throw GraftError.io(operation: "cannot rename to", path: target, errno: errno) }
                try? manager.removeItem(atPath: old)
            } else {
                guard rename(temporary, target) == 0 else { throw GraftError.io(operation: "cannot rename to", path: target, errno: errno) }
            }
        } catch {
            try? manager.removeItem(atPath: temporary)
            throw error
        }
        return ExportResult(
            checkpoint: detail.checkpoint.ref, digest: detail.checkpoint.digest, path: target, bytes: total, files: detail.files.count)
    }

    /// Streams a GET's body into a new file (fsync'd): exactly `length` bytes, hashing to
    /// `digest` when one is given. Returns the bytes written.
    private func download(_ path: [String], query: [String: String?] = [:], to file: String, length: Int, digest: GraftCore.Digest?)
        async throws(GraftError) -> Int
    {
        guard FileManager.default.createFile(atPath: file, contents: nil), let handle = FileHandle(forWritingAtPath: file) else {
            throw .io(operation: "cannot create", path: file, errno: errno)
        }
        defer { try? handle.close() }
        var written = 0
        var hasher = Crypto.SHA256()
        let response = try await execute(.GET, path, query: query, body: nil, timeout: .hours(24))
        guard response.status == .ok else { throw await Self.failure(response) }
        do {
            for try await buffer in response.body {
                let bytes = Data(buffer.readableBytesView)
                if digest != nil { hasher.update(data: bytes) }
                try handle.write(contentsOf: bytes)
                written += buffer.readableBytes
            }
            try handle.synchronize()
        } catch {
            throw GraftError.unreachable(url: url, reason: "the download broke off after \(written) bytes: \(error)")
        }
        guard written == length else {
            throw GraftError.unreachable(url: url, reason: "the download ended after \(written) of \(length) bytes")
        }
        if let digest, GraftCore.Digest(bytes: hasher.finalize()) != digest {
            throw GraftError.damagedBlob(digest, reason: "the downloaded bytes of \(file) hash to another digest")
        }
        return written
    }

    // MARK: Writes

    public func addBase(
        name: ModelName, file path: String, provenance: Provenance, progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        try await upload(
            to: name, base: true, input: try Registry.openInput(path),
            commit: UploadCommit(proposal: .init(header: "", tensors: []), provenance: provenance), progress: progress)
    }

    public func addBase(
        name: ModelName, input: some SafeTensorsInput, provenance: Provenance, progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        try await withRandomAccess(input) { (input) async throws(GraftError) in
            try await upload(
                to: name, base: true, input: input, commit: UploadCommit(proposal: .init(header: "", tensors: []), provenance: provenance),
                progress: progress)
        }
    }

    public func addCheckpoint(
        model name: ModelName, file path: String, step: Int?, epoch: Int?, metrics: [MetricAssignment], split: String?,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        try await upload(
            to: name, base: false, input: try Registry.openInput(path), commit: Self.commit(step, epoch, metrics, split), progress: progress
        )
    }

    public func addCheckpoint(
        model name: ModelName, input: some SafeTensorsInput, step: Int?, epoch: Int?, metrics: [MetricAssignment], split: String?,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        try await withRandomAccess(input) { (input) async throws(GraftError) in
            try await upload(to: name, base: false, input: input, commit: Self.commit(step, epoch, metrics, split), progress: progress)
        }
    }

    /// A model directory through the upload protocol: its shards' headers, every tensor's and
    /// other file's digest proposed first, then only the blobs the server lacks.
    public func addBase(
        name: ModelName, directory: DirectoryInput, provenance: Provenance, progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        try await upload(
            to: name, base: true, directory: directory, weights: directory.weights, files: directory.files,
            commit: UploadCommit(proposal: .init(header: "", tensors: []), provenance: provenance), progress: progress)
    }

    public func addCheckpoint(
        model name: ModelName, directory: DirectoryInput, step: Int?, epoch: Int?, metrics: [MetricAssignment], split: String?,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        try await upload(
            to: name, base: false, directory: directory, weights: directory.weights, files: directory.files,
            commit: Self.commit(step, epoch, metrics, split), progress: progress)
    }

    public func createStudent(
        name: ModelName, from parent: Reference, relation: Relation, manifest declaration: ManifestDeclaration, description: String?
    ) async throws(GraftError) -> StudentResult {
        try await call(
            .POST, ["v1", "students"],
            json: StudentRequest(name: name, parent: parent, relation: relation, manifest: declaration, description: description))
    }

    public func logMetrics(_ reference: Reference, _ values: [MetricAssignment], split: String?) async throws(GraftError) -> String {
        let answer: CheckpointRef = try await call(
            .POST, ["v1", "checkpoints", reference.description, "metrics"],
            json: MetricsRequest(metrics: Self.dictionary(values), split: split))
        return answer.checkpoint
    }

    public func logCurve(model name: ModelName, step: Int, _ values: [MetricAssignment]) async throws(GraftError) {
        _ = try await send(
            .POST, ["v1", "models", name.description, "curves"],
            body: try Self.encode(CurveRequest(step: step, metrics: Self.dictionary(values))))
    }

    public func importCurves(model name: ModelName, bytes: [UInt8]) async throws(GraftError) -> CurveImportResult {
        try Self.decode(try await send(.POST, ["v1", "models", name.description, "curves", "import"], body: bytes).body)
    }

    public func tag(_ reference: Reference, alias: String) async throws(GraftError) -> AliasResult {
        try await call(.PUT, ["v1", "checkpoints", reference.description, "aliases", alias])
    }

    public func untag(model name: ModelName, alias: String) async throws(GraftError) {
        _ = try await send(.DELETE, ["v1", "models", name.description, "aliases", alias])
    }

    // MARK: Signatures

    /// Signs here: the server lists the files' digests, the key never leaves this machine, and
    /// the server records the signature once it verifies with the public key against the files.
    public func sign(_ reference: Reference, key: SigningKey) async throws(GraftError) -> SignResult {
        let listed: SignedFiles = try await get(["v1", "checkpoints", reference.description, "signed-files"])
        let model = listed.checkpoint.split(separator: "@").first.map(String.init) ?? listed.checkpoint
        let signature = try ModelSignature.sign(modelName: model, resources: listed.files, key: key)
        return try await call(
            .PUT, ["v1", "checkpoints", listed.checkpoint, "signature"],
            json: SignatureBundle(bundle: Data(signature.bytes).base64EncodedString(), publicKey: key.publicKey.pem))
    }

    public func signatureBundle(_ reference: Reference) async throws(GraftError) -> [UInt8]? {
        try await signatureAnswer(reference).bundle
    }

    /// The server's answer for a checkpoint's signature: its bytes and the checkpoint resolved.
    private func signatureAnswer(_ reference: Reference) async throws(GraftError) -> (bundle: [UInt8]?, checkpoint: String) {
        let answer: SignatureBundle = try await get(["v1", "checkpoints", reference.description, "signature"])
        let ref = answer.checkpoint ?? reference.description
        guard let text = answer.bundle else { return (nil, ref) }
        guard let bytes = Data(base64Encoded: text) else {
            throw .unreachable(url: url, reason: "the server sent a signature that is not base64")
        }
        return (Array(bytes), ref)
    }

    /// Checks the signature here with `key`, against the file digests the server computes.
    public func verifySignature(_ reference: Reference, key: VerifyingKey) async throws(GraftError) -> SignatureVerification {
        // One checkpoint throughout: the signature's answer resolves a bare NAME to NAME@N.
        let (bundle, ref) = try await signatureAnswer(reference)
        guard let bytes = bundle else { throw .notSigned(ref) }
        let signature = try ModelSignature.parse(bytes, origin: ref)
        try signature.verify(with: key, origin: ref)
        let listed: SignedFiles = try await get(["v1", "checkpoints", ref, "signed-files"])
        try signature.checkFiles(listed.files, origin: ref)
        return SignatureVerification(subject: ref, key: key, signature: signature)
    }

    // MARK: Administration

    public func addAdvisory(on reference: Reference, id: String, severity: Severity, note: String?, url: String?) async throws(GraftError)
        -> Advisory
    {
        try await call(
            .POST, ["v1", "advisories"], json: AdvisoryRequest(on: reference.description, id: id, severity: severity, note: note, url: url))
    }

    public func resolveAdvisory(_ id: String) async throws(GraftError) {
        _ = try await send(.POST, ["v1", "advisories", id, "resolve"])
    }

    public func gc(grace: Double, dryRun: Bool) async throws(GraftError) -> GCReport {
        try await call(.POST, ["v1", "gc"], json: GCRequest(grace: grace, dryRun: dryRun))
    }

    public func prune(
        _ name: ModelName, keepLast: Int, keepBest: Int, metric: String?, direction: Direction?, split: String?, dryRun: Bool
    ) async throws(GraftError) -> RemovalReport {
        try await call(
            .POST, ["v1", "models", name.description, "prune"],
            json: PruneRequest(keepLast: keepLast, keepBest: keepBest, metric: metric, direction: direction, split: split, dryRun: dryRun))
    }

    public func removeModel(_ name: ModelName, cascade: Bool, dryRun: Bool) async throws(GraftError) -> RemovalReport {
        try await call(
            .DELETE, ["v1", "models", name.description], query: ["cascade": cascade ? "true" : nil, "dry_run": dryRun ? "true" : nil])
    }

    public func removeCheckpoint(_ reference: Reference, dryRun: Bool) async throws(GraftError) -> RemovalReport {
        try await call(.DELETE, ["v1", "checkpoints", reference.description], query: ["dry_run": dryRun ? "true" : nil])
    }
}

// MARK: The upload protocol

extension RemoteRegistry {
    /// Propose, send what is missing (a few blobs at a time, each streamed from the input), commit.
    private func upload(
        to name: ModelName, base: Bool, input: some SafeTensorsInput, commit template: UploadCommit,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        try await upload(
            to: name, base: base, proposal: try UploadProposal.of(input, inlineBelow: 0), weights: input, files: nil as SafeTensorsMemory?,
            commit: template, progress: progress)
    }

    /// A directory's upload: its proposal names the shards and the other files, whose blobs
    /// are sent from `files`.
    private func upload(
        to name: ModelName, base: Bool, directory: DirectoryInput, weights: some SafeTensorsInput, files: some SafeTensorsInput,
        commit template: UploadCommit, progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        // A signature is checked here first (nothing is sent for a refused one); the server
        // checks it again against what it received, with the same key.
        _ = try await Registry.checkedSignature(of: directory)
        var commit = template
        commit.signature = directory.signature.map { Data($0).base64EncodedString() }
        commit.publicKey = directory.publicKey?.pem
        return try await upload(
            to: name, base: base, proposal: try UploadProposal.of(directory), weights: weights, files: Optional(files), commit: commit,
            progress: progress)
    }

    /// The upload protocol once the proposal is made: the plan, the small tensors and files the
    /// server lacks inline, the missing blobs (each sent from the tensor or file that holds it),
    /// then the commit.
    private func upload<Weights: SafeTensorsInput, Files: SafeTensorsInput>(
        to name: ModelName, base: Bool, proposal made: UploadProposal, weights: Weights, files: Files?, commit template: UploadCommit,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult {
        let kind = base ? ["v1", "bases", name.description] : ["v1", "models", name.description, "checkpoints"]
        var proposal = made
        let proposalBody = try Self.encode(proposal)
        let plan: UploadPlan = try Self.decode(try await send(.POST, kind + ["proposal"], body: proposalBody).body)
        var sent = proposalBody.count
        let tensorInfo = Dictionary(weights.header.tensors.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let fileInfo = Dictionary((files?.header.tensors ?? []).map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        // Small ones travel in the commit, but not those the server holds already.
        let held = Set(plan.inlinePresent ?? [])
        for index in proposal.tensors.indices where proposal.tensors[index].length < plan.inlineBelow {
            guard !held.contains(proposal.tensors[index].digest), let info = tensorInfo[proposal.tensors[index].name] else { continue }
            do { proposal.tensors[index].data = Data(try weights.data(of: info)).base64EncodedString() } catch {
                throw .reading(weights.origin, error)
            }
        }
        if let files {
            for index in (proposal.files ?? []).indices {
                guard let length = proposal.files?[index].length, length < plan.inlineBelow,
                    let info = fileInfo[proposal.files![index].path], let digest = proposal.files?[index].digest, !held.contains(digest)
                else { continue }
                do { proposal.files?[index].data = Data(try files.data(of: info)).base64EncodedString() } catch {
                    throw .reading(files.origin, error)
                }
            }
        }
        // The plan names a blob by one tensor or file that holds it: send it from where it is.
        var tensorByDigest: [GraftCore.Digest: TensorInfo] = [:]
        for tensor in proposal.tensors { tensorByDigest[tensor.digest] = tensorInfo[tensor.name] }
        var fileByDigest: [GraftCore.Digest: TensorInfo] = [:]
        for file in proposal.files ?? [] { if let digest = file.digest { fileByDigest[digest] = fileInfo[file.path] } }
        let fromWeights = plan.missing.compactMap { blob in tensorByDigest[blob.digest].map { (blob, $0) } }
        sent += try await sendBlobs(fromWeights, from: weights, total: plan.bytesMissing, progress: progress)
        if let files {
            let fromFiles = plan.missing.filter { tensorByDigest[$0.digest] == nil }.compactMap { blob in
                fileByDigest[blob.digest].map { (blob, $0) }
            }
            sent += try await sendBlobs(fromFiles, from: files, total: plan.bytesMissing, progress: nil)
        }
        return try await commit(template, proposal, to: kind, plan: plan, sent: sent)
    }

    /// Sends the commit of an upload whose blobs are all sent, and accounts for the bytes.
    private func commit(_ template: UploadCommit, _ proposal: UploadProposal, to kind: [String], plan: UploadPlan, sent: Int)
        async throws(GraftError) -> ImportResult
    {
        var commit = template
        commit.proposal = proposal
        // A key of this commit's own: sent again after a lost answer, it finds the checkpoint the
        // first attempt made instead of committing twice.
        commit.idempotencyKey = commit.idempotencyKey ?? UUID().uuidString
        let commitBody = try Self.encode(commit)
        var attempt = 1
        var answer: [UInt8]
        while true {
            do {
                answer = try await send(.POST, kind, body: commitBody).body
                break
            } catch {
                guard case .unreachable = error, attempt < 3 else { throw error }
                attempt += 1
            }
        }
        var result: ImportResult = try Self.decode(answer)
        result.bytesStored += plan.bytesMissing
        result.bytesAlreadyPresent = max(0, result.bytesAlreadyPresent - plan.bytesMissing)
        result.bytesSent = sent + commitBody.count
        return result
    }

    /// PUTs each blob, `parallelUploads` at a time; returns the bytes sent.
    private func sendBlobs(
        _ blobs: [(ProposedTensor, TensorInfo)], from input: some SafeTensorsInput, total: Int, progress: (@Sendable (Int, Int) -> Void)?
    ) async throws(GraftError) -> Int {
        let result = await Result { () async throws(GraftError) -> Int in
            do {
                return try await withThrowingTaskGroup(of: Int.self) { group in
                    var (next, done) = (0, 0)
                    func start() {
                        let (blob, info) = blobs[next]
                        next += 1
                        group.addTask { try await self.put(blob, info, from: input) }
                    }
                    while next < min(blobs.count, Self.parallelUploads) { start() }
                    while let finished = try await group.next() {
                        done += finished
                        progress?(done, total)
                        if next < blobs.count { start() }
                    }
                    return done
                }
            } catch let error as GraftError {
                throw error
            } catch {
                throw .unreachable(url: url, reason: "\(error)")
            }
        }
        return try result.get()
    }

    private func put(_ blob: ProposedTensor, _ info: TensorInfo, from input: some SafeTensorsInput) async throws -> Int {
        let chunks = TensorChunks(input: input, tensor: info, chunk: Self.chunk)
        var request = try self.request(.PUT, ["v1", "blobs", blob.digest.description])
        request.headers.add(name: "Content-Type", value: "application/octet-stream")
        request.body = .stream(chunks, length: .known(Int64(blob.length)))
        let response = try await executeRaw(request, timeout: .hours(6))
        guard response.status == .created else { throw await Self.failure(response) }
        _ = try? await response.body.collect(upTo: 1 << 16)
        return blob.length
    }

    private static func commit(_ step: Int?, _ epoch: Int?, _ metrics: [MetricAssignment], _ split: String?) -> UploadCommit {
        UploadCommit(
            proposal: .init(header: "", tensors: []), step: step, epoch: epoch, metrics: metrics.isEmpty ? nil : dictionary(metrics),
            split: split)
    }

    private static func dictionary(_ values: [MetricAssignment]) -> [String: Double] {
        Dictionary(values.map { ($0.name, $0.value) }, uniquingKeysWith: { _, last in last })
    }

    /// A stream (standard input) is read once into a temporary file, which is then uploaded:
    /// hashing and sending each need the bytes.
    private func withRandomAccess<R>(
        _ input: some SafeTensorsInput, _ body: (any SafeTensorsInput) async throws(GraftError) -> R
    ) async throws(GraftError) -> R {
        guard input.isSequential else { return try await body(input) }
        let path = NSTemporaryDirectory() + "graft-upload-\(UInt64.random(in: 0 ... .max)).safetensors"
        defer { unlink(path) }
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw .io(operation: "cannot create", path: path, errno: errno)
        }
        do {
            defer { try? handle.close() }
            try handle.write(contentsOf: input.headerBytes)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.chunk, alignment: 64)
            defer { buffer.deallocate() }
            for tensor in input.header.tensors {
                var offset = 0
                while offset < tensor.byteCount {
                    let count = min(Self.chunk, tensor.byteCount - offset)
                    try input.read(tensor, at: offset, count: count, into: buffer)
                    try handle.write(contentsOf: Data(bytesNoCopy: buffer, count: count, deallocator: .none))
                    offset += count
                }
            }
            try input.finish()
        } catch let error as SafeTensorsError {
            throw .reading(input.origin, error)
        } catch {
            throw .io(operation: "cannot write", path: path, errno: EIO)
        }
        return try await body(try Registry.openInput(path))
    }
}

/// A tensor's bytes in chunks, read from the input as the request body is sent.
struct TensorChunks<Input: SafeTensorsInput>: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let input: Input
    let tensor: TensorInfo
    let chunk: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        let input: Input
        let tensor: TensorInfo
        let chunk: Int
        var offset = 0

        mutating func next() async throws -> ByteBuffer? {
            guard offset < tensor.byteCount else { return nil }
            let count = Swift.min(chunk, tensor.byteCount - offset)
            var buffer = ByteBufferAllocator().buffer(capacity: count)
            let (input, tensor, offset) = (self.input, self.tensor, self.offset)
            try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
                try input.read(tensor, at: offset, count: count, into: raw.baseAddress!)
                return count
            }
            self.offset += count
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(input: input, tensor: tensor, chunk: chunk) }
}

// MARK: HTTP

extension RemoteRegistry {
    struct Answer {
        var status: HTTPResponseStatus
        var body: [UInt8]
    }

    func get<T: Decodable>(_ path: [String], query: [String: String?] = [:]) async throws(GraftError) -> T {
        try await call(.GET, path, query: query)
    }

    func call<T: Decodable>(_ method: HTTPMethod, _ path: [String], query: [String: String?] = [:]) async throws(GraftError) -> T {
        try Self.decode(try await send(method, path, query: query).body)
    }

    func call<T: Decodable>(_ method: HTTPMethod, _ path: [String], query: [String: String?] = [:], json: some Encodable)
        async throws(GraftError) -> T
    {
        try Self.decode(try await send(method, path, query: query, body: try Self.encode(json)).body)
    }

    /// One request; a 2xx answer's body, or the server's error as ``GraftError/remote(_:message:details:)``.
    private func send(_ method: HTTPMethod, _ path: [String], query: [String: String?] = [:], body: [UInt8]? = nil) async throws(GraftError)
        -> Answer
    {
        let response = try await execute(method, path, query: query, body: body, timeout: .minutes(30))
        guard (200..<300).contains(response.status.code) else { throw await Self.failure(response) }
        do {
            let buffer = try await response.body.collect(upTo: Self.maxAnswer)
            return Answer(status: response.status, body: Array(buffer.readableBytesView))
        } catch {
            throw .unreachable(url: url, reason: "the answer broke off: \(error)")
        }
    }

    func execute(
        _ method: HTTPMethod, _ path: [String], query: [String: String?] = [:], body: [UInt8]?, timeout: TimeAmount
    ) async throws(GraftError) -> HTTPClientResponse {
        var request = try self.request(method, path, query: query)
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(body)
        }
        do { return try await executeRaw(request, timeout: timeout) } catch let error as GraftError { throw error } catch {
            throw .unreachable(url: url, reason: "\(error)")
        }
    }

    func executeRaw(_ request: HTTPClientRequest, timeout: TimeAmount) async throws -> HTTPClientResponse {
        do { return try await client.execute(request, timeout: timeout) } catch let error as HTTPClientError {
            throw GraftError.unreachable(url: url, reason: error == .connectTimeout ? "connection timed out" : "\(error)")
        } catch let error as GraftError { throw error } catch {
            throw GraftError.unreachable(url: url, reason: "\(error)")
        }
    }

    func request(_ method: HTTPMethod, _ path: [String], query: [String: String?] = [:]) throws(GraftError) -> HTTPClientRequest {
        var text = url + "/" + path.map(Self.escape).joined(separator: "/")
        let items = query.compactMap { key, value in value.map { "\(key)=\(Self.escapeQuery($0))" } }.sorted()
        if !items.isEmpty { text += "?" + items.joined(separator: "&") }
        var request = HTTPClientRequest(url: text)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        request.headers.add(name: "Accept", value: "application/json")
        return request
    }

    /// A path segment, every byte outside the unreserved set percent-encoded (a `/` in a
    /// segment stays inside it; the server decodes it once).
    static func escape(_ segment: String) -> String {
        segment.addingPercentEncoding(withAllowedCharacters: unreserved) ?? segment
    }

    static func escapeQuery(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: unreserved) ?? value
    }

    private static let unreserved: CharacterSet = {
        var set = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)...Unicode.Scalar(127)))
        set.insert(charactersIn: "-._~@:")
        return set
    }()

    static func failure(_ response: HTTPClientResponse) async -> GraftError {
        let bytes = (try? await response.body.collect(upTo: 1 << 20)).map { Array($0.readableBytesView) } ?? []
        if let body = try? GraftJSON.decoder().decode(ErrorAnswerBody.self, from: Data(bytes)) {
            return .remote(body.error, message: body.message, details: body.details ?? [])
        }
        let kind: ErrorKind =
            switch response.status.code {
            case 401: .unauthorized
            case 403: .forbidden
            case 404: .notFound
            case 409: .conflict
            case 413: .tooLarge
            case 400..<500: .usage
            case 503: .busy
            default: .internal
            }
        return .remote(kind, message: "the server answered \(response.status.code) \(response.status.reasonPhrase)", details: [])
    }

    static func encode(_ value: some Encodable) throws(GraftError) -> [UInt8] {
        do { return Array(try GraftJSON.encoder().encode(value)) } catch { throw .badRequest("cannot encode the request: \(error)") }
    }

    static func decode<T: Decodable>(_ bytes: [UInt8]) throws(GraftError) -> T {
        do { return try GraftJSON.decoder().decode(T.self, from: Data(bytes)) } catch {
            throw .remote(.internal, message: "the server's answer is not the expected JSON: \(error)", details: [])
        }
    }
}

/// The server's error answer.
struct ErrorAnswerBody: Decodable {
    var error: ErrorKind
    var message: String
    var details: [String]?
}
