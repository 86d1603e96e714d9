import Foundation
import GraftCore
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore

/// The routes of `/v1`: each checks the token's scope (and its model pattern), validates every
/// name and reference exactly as the CLI does (a URL segment is decoded once and is never a
/// path), calls the library, and answers in the JSON contract.
struct API: Sendable {
    let registry: Registry
    let configuration: ServerConfiguration
    /// Small JSON bodies (everything but upload proposals and commits).
    static let smallBody = 1 << 20
    /// Admits the large bodies (proposals, commits, curve imports) a few at a time.
    let gate: BodyGate

    init(registry: Registry, configuration: ServerConfiguration) {
        (self.registry, self.configuration) = (registry, configuration)
        gate = BodyGate(slots: configuration.largeBodies, wait: configuration.largeBodyWait)
    }

    func register(on routes: RouteTable) {
        routes.open(.get, "/healthz") { _, _ in jsonResponse(Health(status: "ok", version: graftVersion)) }
        routes.get("/v1/openapi.json", .scope(.read)) { _, _, _ in
            var response = textResponse(
                String(decoding: PackageResources.openapi_json, as: UTF8.self), type: "application/json", redactable: false)
            response.headers[.cacheControl] = "no-cache"
            return response
        }
        registerReads(on: routes)
        registerUploads(on: routes)
        registerWrites(on: routes)
        registerAdministration(on: routes)
        registerCopy(on: routes)
    }

    // MARK: Copy (`graft copy` from or to a server)

    /// A whole history moves between registries only with unconfined tokens: reading every
    /// model's history takes a reader of everything, writing one as given takes an admin.
    private func registerCopy(on routes: RouteTable) {
        let registry = self.registry
        let limit = configuration.maxJSONBytes
        let window = configuration.uploadWindow
        let gate = self.gate
        routes.get("/v1/copy/graph", .unconfined(.read)) { _, _, _ in
            jsonResponse(try await registry.copyGraph())
        }
        routes.get("/v1/copy/models/{name}", .unconfined(.read)) { request, context, _ in
            let name = try modelName(context)
            guard var history = try await registry.history(of: name) else { throw GraftError.modelNotFound(name, suggestions: []) }
            if let text = query(request, "numbers") {
                let numbers = try text.split(separator: ",").map { (part) throws(GraftError) -> Int in
                    guard let number = Int(part), number >= 1 else {
                        throw .badRequest("numbers: a comma-separated list of checkpoint numbers")
                    }
                    return number
                }
                guard numbers.count <= 64 else { throw GraftError.badRequest("numbers: at most 64 checkpoints a request") }
                history.contents = try await registry.contents(of: name, numbers: numbers)
            }
            return jsonResponse(history)
        }
        routes.post("/v1/copy/blobs", .unconfined(.admin)) { request, _, _ in
            let blobs = try await decode([ProposedTensor].self, request, limit: Self.smallBody * 16)
            return jsonResponse(try await registry.missingBlobs(blobs, window: window, announce: !(try flag(request, "dry_run"))))
        }
        routes.post("/v1/copy", .unconfined(.admin)) { request, _, _ in
            try await gate.admit {
                let batch = try await decode(CopyBatch.self, request, limit: limit)
                return jsonResponse(try await registry.receiveCopy(batch))
            }
        }
    }

    // MARK: Reads

    private func registerReads(on routes: RouteTable) {
        let registry = self.registry
        routes.get("/v1/models", .scope(.read)) { request, _, grant in
            try paged(try await registry.models().filter { grant.token.covers($0.name) }, request)
        }
        routes.get("/v1/models/{name}", .model(.read)) { _, context, _ in
            let name = try modelName(context)
            return jsonResponse(try await registry.model(name))
        }
        routes.get("/v1/models/{name}/checkpoints", .model(.read)) { request, context, _ in
            let name = try modelName(context)
            return try paged(try await registry.checkpoints(of: name), request)
        }
        routes.get("/v1/models/{name}/card", .model(.read)) { _, context, _ in
            let name = try modelName(context)
            return textResponse(try await registry.card(name), type: "text/markdown; charset=utf-8")
        }
        routes.get("/v1/models/{name}/lineage", .model(.read)) { request, context, grant in
            let (name, token) = (try modelName(context), grant.token)
            let metric = query(request, "metric")
            let parts: Registry.LineageParts =
                switch query(request, "parts") {
                case nil, "both": .both
                case "ancestors": .ancestors
                case "descendants": .descendants
                case let other?: throw GraftError.badRequest("parts must be both, ancestors or descendants, not \(quotedParameter(other))")
                }
            var report = try await registry.lineage(name, metric: metric, direction: try direction(request), parts: parts)
            report.ancestors.removeAll { !token.covers(nameOf($0.name)) }
            report.descendants.removeAll { !token.covers(nameOf($0.name)) }
            // Descendants (depth-first, parents first) may be paged like any list.
            let page = try Page.of(count: report.descendants.count, request)
            if let page { report.descendants = Array(report.descendants[page.range]) }
            var response: Response
            switch query(request, "format") ?? "json" {
            case "json": response = jsonResponse(report)
            case "dot": response = textResponse(report.dot + "\n", type: "text/vnd.graphviz; charset=utf-8")
            case "mermaid": response = textResponse(report.mermaid + "\n", type: "text/plain; charset=utf-8")
            case "tree": response = textResponse(report.tree + "\n", type: "text/plain; charset=utf-8")
            case let other: throw GraftError.badRequest("format must be json, dot, mermaid or tree, not \(quotedParameter(other))")
            }
            page?.label(&response, request)
            return response
        }
        routes.get("/v1/checkpoints/{ref}", .checkpoint(.read)) { _, _, grant in
            jsonResponse(try await registry.checkpoint(try grant.checkpoint()))
        }
        routes.get("/v1/checkpoints/{ref}/metrics", .checkpoint(.read)) { _, _, grant in
            jsonResponse(try await registry.metrics(try grant.checkpoint()))
        }
        routes.get("/v1/checkpoints/{ref}/affected", .checkpoint(.read)) { request, _, grant in
            let detail: ExposureDetail?
            switch query(request, "exposure") {
            case nil, "digests": detail = .digests
            case "drift": detail = .drift
            case "none": detail = nil
            case let other?: throw GraftError.badRequest("exposure must be none, digests or drift, not \(quotedParameter(other))")
            }
            var affected = try await registry.affected(try grant.checkpoint(), exposure: detail).filter {
                grant.token.covers(nameOf($0.model))
            }
            // Parent pointers unless paths are asked for: full paths total grows with depth².
            if try !flag(request, "paths") { for index in affected.indices { affected[index].path = [] } }
            return try paged(affected, request)
        }
        routes.get("/v1/checkpoints/{ref}/exposure", .checkpoint(.read)) { request, _, grant in
            guard let to = query(request, "to") else { throw GraftError.badRequest("exposure needs `to`, the ancestor's reference") }
            let ancestor = try await grant.visible(try Reference(parsing: to))
            let detail: ExposureDetail
            switch query(request, "detail") {
            case nil, "drift": detail = .drift
            case "digests": detail = .digests
            case let other?: throw GraftError.badRequest("detail must be digests or drift, not \(quotedParameter(other))")
            }
            return jsonResponse(try await registry.exposure(of: try grant.checkpoint(), to: ancestor, detail: detail))
        }
        routes.get("/v1/checkpoints/{ref}/signature", .checkpoint(.read)) { _, _, grant in
            let (bytes, ref) = try await registry.signatureBundle(resolving: try grant.checkpoint())
            return jsonResponse(SignatureBundle(bundle: bytes.map { Data($0).base64EncodedString() }, checkpoint: ref))
        }
        routes.get("/v1/checkpoints/{ref}/signed-files", .checkpoint(.read)) { _, _, grant in
            let reference = try grant.checkpoint()
            let ref = try await registry.checkpoint(reference).checkpoint.ref
            return jsonResponse(SignedFiles(checkpoint: ref, files: try await registry.signedFiles(reference)))
        }
        routes.get("/v1/checkpoints/{ref}/safetensors", .checkpoint(.read)) { request, _, grant in
            try await download(try grant.checkpoint(), request: request)
        }
        routes.get("/v1/checkpoints/{ref}/file", .checkpoint(.read)) { request, _, grant in
            try await downloadFile(try grant.checkpoint(), request: request)
        }
        routes.head("/v1/checkpoints/{ref}/safetensors", .checkpoint(.read)) { _, _, grant in
            // What a GET would answer, without the body: size, digest, ranges.
            let summary = try await registry.checkpoint(try grant.checkpoint()).checkpoint
            var headers = HTTPFields()
            headers[.contentType] = "application/octet-stream"
            headers[.contentLength] = String(summary.fileBytes)
            headers[.eTag] = "\"\(summary.digest)\""
            headers[.acceptRanges] = "bytes"
            return Response(status: .ok, headers: headers)
        }
        routes.get("/v1/diff", .scope(.read)) { request, _, grant in
            guard let first = query(request, "from"), let second = query(request, "to") else {
                throw GraftError.badRequest("diff needs `from` and `to` references")
            }
            let a = try await grant.visible(try Reference(parsing: first))
            let b = try await grant.visible(try Reference(parsing: second))
            return jsonResponse(try await registry.diff(a, b))
        }
        routes.get("/v1/best", .scope(.read)) { request, _, grant in
            guard let metric = query(request, "metric") else { throw GraftError.badRequest("best needs a `metric`") }
            let model = try query(request, "model").map { (text) throws(GraftError) in try ModelName(text) }
            let under = try query(request, "under").map { (text) throws(GraftError) in try ModelName(text) }
            if model != nil && under != nil { throw GraftError.badRequest("`model` and `under` exclude each other") }
            let scope: BestScope = model.map { .model($0) } ?? under.map { .under($0) } ?? .all
            return jsonResponse(
                try await best(
                    metric: metric, direction: try direction(request), split: query(request, "split"), scope: scope,
                    includeFlagged: try flag(request, "include_flagged"), token: grant.token))
        }
        routes.get("/v1/advisories", .scope(.read)) { request, _, grant in
            try paged(
                try await registry.advisories(includeResolved: try flag(request, "all")).filter { grant.token.covers(nameOf($0.model)) },
                request)
        }
        routes.get("/v1/stats", .unconfined(.read)) { _, _, _ in
            jsonResponse(try await registry.stats())
        }
        routes.get("/v1/blobs/{digest}", .scope(.read)) { _, context, grant in
            let digest = try blobDigest(context)
            if let pattern = grant.token.models, try await registry.digests([digest], referencedByModelsMatching: pattern).isEmpty {
                throw GraftError.blobNotFound(digest)
            }
            guard let length = try registry.blobLength(digest) else { throw GraftError.blobNotFound(digest) }
            let registry = self.registry
            return streamed(length: length, etag: digest.description, range: nil) { (sink) async throws(GraftError) -> Int in
                try await registry.streamBlob(digest, to: sink)
            }
        }
    }

    // MARK: Uploads

    private func registerUploads(on routes: RouteTable) {
        let registry = self.registry
        let window = configuration.uploadWindow
        let limit = configuration.maxJSONBytes
        let signers = configuration.requireSignedBases
        let gate = self.gate
        for (prefix, base) in [("/v1/bases/{name}", true), ("/v1/models/{name}/checkpoints", false)] {
            routes.post("\(prefix)/proposal", .model(.write)) { request, context, grant in
                let name = try modelName(context)
                return try await gate.admit {
                    let proposal = try await decode(UploadProposal.self, request, limit: limit)
                    let plan = try await registry.planUpload(to: name, base: base, proposal, visibleTo: grant.token.models)
                    try await registry.announceUploads(plan.missing, window: window)
                    return jsonResponse(plan)
                }
            }
            routes.post(prefix, .model(.write)) { request, context, grant in
                let name = try modelName(context)
                return try await gate.admit {
                    let commit = try await decode(UploadCommit.self, request, limit: limit)
                    return jsonResponse(
                        try await registry.commitUpload(
                            to: name, base: base, commit, visibleTo: grant.token.models, proofsOf: grant.token.name,
                            requiredSigners: base ? signers : []),
                        status: .created)
                }
            }
        }
        routes.put("/v1/blobs/{digest}", .scope(.write)) { request, context, grant in
            let digest = try blobDigest(context)
            guard let length = try await registry.announcedLength(of: digest) else {
                throw GraftError.badRequest("no upload proposal announced blob \(digest.short)…: propose the checkpoint first")
            }
            if let declared = request.headers[.contentLength].flatMap(Int.init), declared != length {
                throw GraftError.blobMismatch(
                    digest, reason: "are announced as \(declared) bytes by Content-Length; the proposal gave \(length)")
            }
            try await receive(digest, length: length, body: request.body)
            // A confined token that sent the bytes may commit them (see Registry.commitUpload).
            if grant.token.models != nil { try await registry.recordUploadProof(digest, token: grant.token.name, window: window) }
            return jsonResponse(BlobReceipt(digest: digest, length: length), status: .created)
        }
    }

    /// Streams a request body into temporary blob storage in 1 MiB steps off the cooperative
    /// pool; anything short of a complete, matching blob leaves nothing behind.
    private func receive(_ digest: Digest, length: Int, body: RequestBody) async throws {
        let upload = try registry.beginBlobUpload(expected: digest, length: length)
        do {
            var gathered = GatheredUpload(upload)
            var received = 0
            for try await buffer in body {
                received += buffer.readableBytes
                if received > length { throw GraftError.blobMismatch(digest, reason: "run past the announced \(length) bytes") }
                try await gathered.add(buffer.readableBytesView)
            }
            try await gathered.flush()
            _ = try await offload { () throws(GraftError) in try upload.finish() }
        } catch {
            upload.abort()
            throw error
        }
    }

    // MARK: Writes

    private func registerWrites(on routes: RouteTable) {
        let registry = self.registry
        routes.post("/v1/students", .scope(.write)) { request, _, grant in
            let body = try await decode(StudentRequest.self, request, limit: Self.smallBody)
            let name = try ModelName(body.name)
            try grant.require(.write, on: name)
            let parent = try await grant.visible(try Reference(parsing: body.parent))
            let result = try await registry.createStudent(
                name: name, from: parent, relation: body.relation ?? .finetune, manifest: try body.declaration(),
                description: body.description)
            return jsonResponse(result, status: .created)
        }
        routes.post("/v1/checkpoints/{ref}/metrics", .checkpoint(.write)) { request, _, grant in
            let reference = try grant.checkpoint()
            let body = try await decode(MetricsRequest.self, request, limit: Self.smallBody)
            let ref = try await registry.logMetrics(reference, try assignments(body.metrics), split: body.split)
            return jsonResponse(CheckpointRef(checkpoint: ref))
        }
        routes.post("/v1/models/{name}/curves", .model(.write)) { request, context, _ in
            let name = try modelName(context)
            let body = try await decode(CurveRequest.self, request, limit: Self.smallBody)
            try await registry.logCurve(model: name, step: body.step, try assignments(body.metrics))
            return Response(status: .noContent)
        }
        routes.post("/v1/models/{name}/curves/import", .model(.write)) { request, context, _ in
            let name = try modelName(context)
            return try await gate.admit {
                let bytes = try await collect(request, limit: configuration.maxJSONBytes)
                return jsonResponse(try await registry.importCurves(model: name, bytes: bytes))
            }
        }
        routes.put("/v1/checkpoints/{ref}/signature", .checkpoint(.write)) { request, _, grant in
            let sent = try await decode(SignatureBundle.self, request, limit: ModelSignature.maximumBytes * 2)
            guard let text = sent.bundle, let bytes = Data(base64Encoded: text), let pem = sent.publicKey else {
                throw GraftError.badRequest("a signature is recorded with `bundle` (base64) and `public_key` (PEM)")
            }
            let key = try VerifyingKey(pem: pem, origin: "public_key")
            return jsonResponse(try await registry.attachSignature(try grant.checkpoint(), bundle: Array(bytes), publicKey: key))
        }
        routes.put("/v1/checkpoints/{ref}/aliases/{alias}", .checkpoint(.write)) { _, context, grant in
            let reference = try grant.checkpoint()
            let alias = try segment(context, "alias")
            return jsonResponse(try await registry.tag(reference, alias: alias))
        }
        routes.delete("/v1/models/{name}/aliases/{alias}", .model(.write)) { _, context, _ in
            let name = try modelName(context)
            try await registry.untag(model: name, alias: try segment(context, "alias"))
            return Response(status: .noContent)
        }
    }

    // MARK: Administration

    private func registerAdministration(on routes: RouteTable) {
        let registry = self.registry
        routes.post("/v1/advisories", .scope(.admin)) { request, _, grant in
            let body = try await decode(AdvisoryRequest.self, request, limit: Self.smallBody)
            let target = try await grant.visible(try Reference(parsing: body.on))
            return jsonResponse(
                try await registry.addAdvisory(on: target, id: body.id, severity: body.severity, note: body.note, url: body.url),
                status: .created)
        }
        routes.post("/v1/advisories/{id}/resolve", .unconfined(.admin)) { _, context, _ in
            try await registry.resolveAdvisory(try segment(context, "id"))
            return Response(status: .noContent)
        }
        routes.post("/v1/models/{name}/prune", .model(.admin)) { request, context, _ in
            let name = try modelName(context)
            let body = try await decode(PruneRequest.self, request, limit: Self.smallBody)
            return jsonResponse(
                try await registry.prune(
                    name, keepLast: body.keepLast, keepBest: body.keepBest ?? 0, metric: body.metric, direction: body.direction,
                    split: body.split,
                    dryRun: body.dryRun ?? false))
        }
        routes.delete("/v1/models/{name}", .model(.admin)) { request, context, grant in
            let name = try modelName(context)
            let cascade = try flag(request, "cascade")
            // A cascade removes descendants the token might not see: only an unconfined one may.
            if cascade { try grant.requireUnconfined(.admin) }
            return jsonResponse(try await registry.removeModel(name, cascade: cascade, dryRun: try flag(request, "dry_run")))
        }
        routes.delete("/v1/checkpoints/{ref}", .checkpoint(.admin)) { request, _, grant in
            jsonResponse(try await registry.removeCheckpoint(try grant.checkpoint(), dryRun: try flag(request, "dry_run")))
        }
        routes.post("/v1/gc", .unconfined(.admin)) { request, _, _ in
            let body = try await decode(GCRequest.self, request, limit: Self.smallBody, empty: GCRequest(grace: 3600, dryRun: false))
            return jsonResponse(try await registry.gc(grace: body.grace ?? 3600, dryRun: body.dryRun ?? false))
        }
        routes.post("/v1/verify", .unconfined(.admin)) { request, _, _ in
            jsonResponse(try await registry.verify(readData: try flag(request, "read_data")))
        }
    }

    // MARK: Confinement

    /// `best` as the token sees the registry: the library's own call with the token's
    /// visibility, so a confined token's ranking is everyone's ranking over its models.
    func best(
        metric: String, direction: Direction?, split: String?, scope: BestScope, includeFlagged: Bool, token: TokenInfo
    ) async throws(GraftError) -> BestResult {
        try await registry.best(
            metric: metric, direction: direction, split: split, scope: scope, includeFlagged: includeFlagged, visibility: token.visibility)
    }

    // MARK: Downloads

    /// The checkpoint's exact bytes, verified as they stream; ETag is its digest; one byte range
    /// (`Range: bytes=A-B`, `A-`, `-N`) answers 206.
    func download(_ reference: Reference, request: Request) async throws -> Response {
        let summary = try await registry.checkpoint(reference).checkpoint
        let etag = "\"\(summary.digest)\""
        if let match = request.headers[.ifNoneMatch], match == etag || match == "*" {
            var headers = HTTPFields()
            headers[.eTag] = etag
            return Response(status: .notModified, headers: headers)
        }
        let range = try request.headers[.range].map { (text) throws(GraftError) in try byteRange(text, length: summary.fileBytes) }
        let registry = self.registry
        let exact = summary.reference
        var response = streamed(length: summary.fileBytes, etag: etag, range: range) { (sink) async throws(GraftError) -> Int in
            try await registry.stream(exact, to: sink)
        }
        response.headers[HTTPField.Name("Content-Disposition")!] =
            "attachment; filename=\"\(summary.model.value.replacingOccurrences(of: "/", with: "--"))-\(summary.number).safetensors\""
        return response
    }

    /// One file of a model directory, by its relative path (`?path=1_Pooling/config.json`),
    /// byte-identical to what export writes there, verified as it streams.
    func downloadFile(_ reference: Reference, request: Request) async throws -> Response {
        guard let path = query(request, "path") else { throw GraftError.badRequest("missing query parameter path") }
        let (summary, entry) = try await registry.fileEntry(reference, path: path)
        let registry = self.registry
        let exact = summary.reference
        var response = streamed(length: entry.bytes, etag: "\(summary.digest):\(path)", range: nil) {
            (sink) async throws(GraftError) -> Int in
            try await registry.streamFile(exact, path: path, to: sink)
        }
        let name = path.split(separator: "/").last.map(String.init) ?? path
        response.headers[HTTPField.Name("Content-Disposition")!] = "attachment; filename=\"\(name.filter { $0 != "\"" })\""
        return response
    }

    private func streamed(
        length: Int, etag: String, range: ClosedRange<Int>?,
        produce:
            @escaping @Sendable (@escaping @Sendable (UnsafeRawBufferPointer) throws(GraftError) -> Void) async throws(GraftError) -> Int
    ) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/octet-stream"
        headers[.eTag] = etag.hasPrefix("\"") ? etag : "\"\(etag)\""
        headers[.acceptRanges] = "bytes"
        let span = range ?? 0...(max(length, 1) - 1)
        let count = length == 0 ? 0 : span.count
        headers[.contentLength] = String(count)
        if let range { headers[.contentRange] = "bytes \(range.lowerBound)-\(range.upperBound)/\(length)" }
        let body = ResponseBody(contentLength: count) { writer in
            let pipe = ChunkPipe()
            let producer = Task {
                let result = await Result { () async throws(GraftError) -> Int in
                    try await produce { chunk throws(GraftError) in try pipe.send(chunk) }
                }
                pipe.finish(result.map { _ in () })
            }
            defer { pipe.cancel(); producer.cancel() }
            var offset = 0
            while offset <= span.upperBound, var buffer = try await pipe.next() {
                let start = offset
                offset += buffer.readableBytes
                // Only the part of this chunk inside the range goes out.
                let from = max(span.lowerBound - start, 0)
                let to = min(span.upperBound + 1 - start, buffer.readableBytes)
                if from < to {
                    buffer.moveReaderIndex(forwardBy: from)
                    buffer = buffer.getSlice(at: buffer.readerIndex, length: to - from)!
                    try await writer.write(buffer)
                }
            }
            try await writer.finish(nil)
        }
        return Response(status: range == nil ? .ok : .partialContent, headers: headers, body: body)
    }
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N` within a file of `length` bytes, clamped to it.
func byteRange(_ text: String, length: Int) throws(GraftError) -> ClosedRange<Int> {
    guard text.hasPrefix("bytes="), !text.contains(",") else { throw .badRequest("only one byte range is served: `bytes=A-B`") }
    let parts = text.dropFirst(6).split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
    guard parts.count == 2, length > 0 else { throw .badRequest("malformed Range header") }
    let first = parts[0].isEmpty ? nil : Int(parts[0])
    let last = parts[1].isEmpty ? nil : Int(parts[1])
    let lower: Int, upper: Int
    switch (parts[0].isEmpty, parts[1].isEmpty) {
    case (false, false):
        guard let first, let last, first >= 0, first <= last else { throw .badRequest("malformed Range header") }
        (lower, upper) = (first, min(last, length - 1))
    case (false, true):
        guard let first, first >= 0 else { throw .badRequest("malformed Range header") }
        (lower, upper) = (first, length - 1)
    case (true, false):
        guard let last, last > 0 else { throw .badRequest("malformed Range header") }
        (lower, upper) = (max(length - last, 0), length - 1)
    case (true, true):
        throw .badRequest("malformed Range header")
    }
    guard lower < length else { throw .badRequest("the range starts past the end (\(length) bytes)") }
    return lower...upper
}

// MARK: Request parsing

/// A path segment, percent-decoded once; a decoded `/` or control character is refused by the
/// name rules that follow, so a segment can never become a path.
func segment(_ context: GraftContext, _ key: String) throws(GraftError) -> String {
    guard let raw = context.parameters.get(key), let decoded = raw.removingPercentEncoding else {
        throw .badRequest("malformed URL segment for \(key)")
    }
    return decoded
}

func modelName(_ context: GraftContext) throws(GraftError) -> ModelName { try ModelName(try segment(context, "name")) }

func blobDigest(_ context: GraftContext) throws(GraftError) -> Digest { try Digest(parsing: try segment(context, "digest")) }

/// The most items one page of a list holds (`limit`).
let maxPageSize = 1000

/// One page of a list: `limit` (1 to ``maxPageSize``) items from `cursor` (the opaque
/// `X-Next-Cursor` of the page before). When more follow, `X-Next-Cursor` and a
/// `Link: <…>; rel="next"` say where.
struct Page {
    let range: Range<Int>
    let next: String?

    /// The page a request asks for of a list of `count` items; `nil` without `limit` (the
    /// whole list, as before pages existed).
    static func of(count: Int, _ request: Request) throws(GraftError) -> Page? {
        guard let limitText = query(request, "limit") else {
            if query(request, "cursor") != nil { throw .badRequest("`cursor` goes with `limit`") }
            return nil
        }
        guard let limit = Int(limitText), (1...maxPageSize).contains(limit) else {
            throw .badRequest("limit must be 1 to \(maxPageSize), not \(quotedParameter(limitText))")
        }
        var start = 0
        if let cursor = query(request, "cursor") {
            guard cursor.utf8.count <= 32, let decoded = Data(base64Encoded: cursor), let text = String(data: decoded, encoding: .utf8),
                text.hasPrefix("o:"), let offset = Int(text.dropFirst(2)), offset >= 0
            else { throw .badRequest("malformed cursor: pass back the `X-Next-Cursor` of the page before") }
            start = min(offset, count)
        }
        let end = min(start + limit, count)
        return Page(range: start..<end, next: end < count ? Data("o:\(end)".utf8).base64EncodedString() : nil)
    }

    /// Adds the next page's cursor and link to `response`.
    func label(_ response: inout Response, _ request: Request) {
        guard let next else { return }
        response.headers[HTTPField.Name("X-Next-Cursor")!] = next
        var components = URLComponents()
        components.path = request.uri.path
        components.queryItems =
            request.uri.queryParameters.filter { $0.key != "cursor" }.map { URLQueryItem(name: String($0.key), value: String($0.value)) }
            .sorted { $0.name < $1.name } + [URLQueryItem(name: "cursor", value: next)]
        response.headers[HTTPField.Name("Link")!] = "<\(components.string ?? "")>; rel=\"next\""
    }
}

/// A list answer, whole or the page the request asks for (``Page``).
func paged<T: Encodable>(_ items: [T], _ request: Request) throws(GraftError) -> Response {
    guard let page = try Page.of(count: items.count, request) else { return jsonResponse(items) }
    var response = jsonResponse(Array(items[page.range]))
    page.label(&response, request)
    return response
}

func query(_ request: Request, _ key: String) -> String? {
    request.uri.queryParameters[key[...]].map(String.init)
}

func flag(_ request: Request, _ key: String) throws(GraftError) -> Bool {
    try flag(key, query(request, key))
}

/// A boolean parameter's value: absent, `false` or `0` is false; empty, `true` or `1` true.
func flag(_ key: String, _ value: String?) throws(GraftError) -> Bool {
    switch value {
    case nil, "false", "0": false
    case "", "true", "1": true
    case let other?: throw .badRequest("\(key) must be true or false, not \(quotedParameter(other))")
    }
}

/// A search box's text: trimmed, at most 200 characters, nil when empty.
func searchText(_ value: String?) -> String? {
    value.map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { $0.isEmpty ? nil : String($0.prefix(200)) }
}

func direction(_ request: Request) throws(GraftError) -> Direction? {
    guard let text = query(request, "direction") else { return nil }
    guard let direction = Direction(rawValue: text) else { throw .badRequest("direction must be max or min, not \(quotedParameter(text))") }
    return direction
}

func quotedParameter(_ text: String) -> String {
    "`" + String(text.unicodeScalars.prefix(60).map { $0.value < 0x20 || $0.value == 0x7F ? "?" : Character($0) }) + "`"
}

/// A lineage node's or advisory's model name (valid: it came from the registry).
func nameOf(_ text: String) -> ModelName { ModelName(trusted: text) }

/// The body, refused past `limit` bytes (413) before it is all read.
func collect(_ request: Request, limit: Int) async throws -> [UInt8] {
    if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit {
        throw GraftError.tooLarge("the body has \(declared) bytes; this route takes at most \(limit)")
    }
    var bytes: [UInt8] = []
    // Sized once from the declared length (bounded by the cap): appending would double it.
    if let declared = request.headers[.contentLength].flatMap(Int.init), declared > 0 { bytes.reserveCapacity(declared) }
    for try await buffer in request.body {
        guard bytes.count + buffer.readableBytes <= limit else {
            throw GraftError.tooLarge("the body runs past \(limit) bytes, the most this route takes")
        }
        buffer.withUnsafeReadableBytes { bytes.append(contentsOf: $0) }
    }
    return bytes
}

/// A JSON body in the contract's snake_case; malformed JSON answers 400 with one line.
func decode<T: Decodable>(_ type: T.Type, _ request: Request, limit: Int, empty: T? = nil) async throws -> T {
    let bytes = try await collect(request, limit: limit)
    if bytes.isEmpty, let empty { return empty }
    do {
        return try GraftJSON.decoder().decode(T.self, from: Data(bytes))
    } catch let error as GraftError {
        throw error
    } catch let error as DecodingError {
        throw GraftError.badRequest("malformed JSON: " + describe(error))
    } catch {
        throw GraftError.badRequest("malformed JSON")
    }
}

private func describe(_ error: DecodingError) -> String {
    func path(_ context: DecodingError.Context) -> String {
        let keys = context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        return keys.isEmpty ? "" : " at `\(keys)`"
    }
    switch error {
    case .keyNotFound(let key, let context): return "missing `\(key.stringValue)`" + path(context)
    case .typeMismatch(_, let context), .valueNotFound(_, let context): return "wrong type" + path(context)
    case .dataCorrupted(let context): return "unreadable" + path(context)
    @unknown default: return "unreadable"
    }
}

let graftVersion = "0.6.0"

/// Admits a few large-body requests at a time: each holds its body and what is parsed from it
/// until it answers, so the slots times the body cap bound the memory they take. A request
/// waits for a slot at most `wait` (then 503 busy, to retry); at most 64 wait at once.
actor BodyGate {
    private var free: Int
    private var waiting = 0
    private let wait: Duration

    init(slots: Int, wait: Duration) { (free, self.wait) = (max(1, slots), wait) }

    /// Runs `body` holding a slot.
    nonisolated func admit<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        try await acquire()
        do {
            let result = try await body()
            await release()
            return result
        } catch {
            await release()
            throw error
        }
    }

    private func acquire() async throws {
        if free > 0 {
            free -= 1
            return
        }
        guard waiting < 64 else { throw GraftError.busy }
        waiting += 1
        defer { waiting -= 1 }
        let deadline = ContinuousClock.now + wait
        while free == 0 {
            guard ContinuousClock.now < deadline else { throw GraftError.busy }
            try await Task.sleep(for: .milliseconds(10))
        }
        free -= 1
    }

    private func release() { free += 1 }
}
