import AsyncHTTPClient
import Foundation
public import GraftCore
import NIOCore
import NIOHTTP1

// `graft copy` with a server at one end: as the source (its histories and blobs read through
// `/v1/copy/…` and `/v1/blobs/…`, an unconfined read token), or as the destination (each model's
// plan asked of the server, the blobs it lacks PUT, then the histories posted in batches that
// it checks and commits as a local copy would: an admin token).
extension RemoteRegistry: CopySource {
    package func copyGraph() async throws(GraftError) -> [CopyGraphEntry] {
        try await get(["v1", "copy", "graph"])
    }

    package func history(of name: ModelName) async throws(GraftError) -> ModelHistory? {
        do {
            return try await get(["v1", "copy", "models", name.description]) as ModelHistory
        } catch {
            if error.kind == .notFound { return nil }
            throw error
        }
    }

    package func contents(of name: ModelName, numbers: [Int]) async throws(GraftError) -> [CopiedCheckpoint] {
        var contents: [CopiedCheckpoint] = []
        for start in stride(from: 0, to: numbers.count, by: 64) {
            let batch = numbers[start..<min(start + 64, numbers.count)].map(String.init).joined(separator: ",")
            let history: ModelHistory = try await get(["v1", "copy", "models", name.description], query: ["numbers": batch])
            contents += history.contents
        }
        return contents
    }

    package func streamBlob(_ digest: GraftCore.Digest, length: Int, into upload: BlobUpload) async throws(GraftError) {
        let response = try await execute(.GET, ["v1", "blobs", digest.description], body: nil, timeout: .hours(24))
        guard response.status == .ok else { throw await Self.failure(response) }
        var gathered = GatheredUpload(upload)
        do {
            for try await buffer in response.body { try await gathered.add(buffer.readableBytesView) }
        } catch let error as GraftError {
            throw error
        } catch {
            throw .unreachable(url: url, reason: "the blob download broke off: \(error)")
        }
        try await gathered.flush()
    }

    /// The bytes of JSON a copy batch carries at most (well under a server's default 16 MiB body cap).
    static let copyBatchBytes = 4 << 20

    /// Copies models from a registry this process opens into this server: what
    /// ``Registry/copy(to:_:progress:)`` does locally, the server checking and committing each
    /// batch. Needs an admin token.
    public func copy(from source: Registry, _ request: CopyRequest, progress: (@Sendable (CopyProgress) -> Void)? = nil)
        async throws(GraftError) -> CopyResult
    {
        let graph = CopyGraph(try await source.copyGraph())
        let order = try Registry.copyOrder(graph, request)
        let renames = request.renames.mapValues(\.value)
        var histories: [String: ModelHistory] = [:]
        func history(_ name: String) async throws(GraftError) -> ModelHistory? {
            if let known = histories[name] { return known }
            let read = try await source.history(of: ModelName(name))
            histories[name] = read
            return read
        }
        /// A model's history with its parent's (the context its edge names).
        func withParent(_ name: String, _ light: ModelHistory) async throws(GraftError) -> [ModelHistory] {
            guard let parent = graph.parents[name]?.model, parent != name, let context = try await history(parent) else { return [light] }
            return [light, context]
        }
        if request.dryRun {
            var all: [ModelHistory] = []
            for name in order { if let light = try await history(name) { all.append(light) } }
            let parents = Set(order.compactMap { graph.parents[$0]?.model }).subtracting(order)
            for name in parents.sorted() { if let light = try await history(name) { all.append(light) } }
            var plan: CopyResult = try await call(
                .POST, ["v1", "copy"], json: CopyBatch(models: order, histories: all, renames: renames, dryRun: true))
            // What would be sent: the blobs of the checkpoints planned that the server lacks (asked, not announced).
            var asked = Set<GraftCore.Digest>()
            for index in plan.models.indices where plan.models[index].action != "refused" {
                let contents = try await source.contents(of: ModelName(plan.models[index].model), numbers: plan.models[index].checkpoints)
                let blobs = Self.storedBlobs(of: contents).filter { asked.insert($0.digest).inserted }
                guard !blobs.isEmpty else { continue }
                let missing: [ProposedTensor] = try await call(.POST, ["v1", "copy", "blobs"], query: ["dry_run": "true"], json: blobs)
                (plan.models[index].blobs, plan.models[index].bytes) = (missing.count, missing.reduce(0) { $0 + $1.length })
            }
            return CopyResult(models: plan.models, dryRun: true)
        }
        var results: [CopiedModel] = []
        var refused = Set<String>()
        var done = CopyProgress(checkpoints: 0, checkpointsTotal: 0, bytes: 0, bytesTotal: 0)
        for name in order {
            guard let light = try await history(name) else { continue }
            if let parent = graph.parents[name]?.model, refused.contains(parent) {
                var result = try await plan(name, light, graph: graph, renames: renames, withParent: withParent)
                (result.action, result.reason, result.checkpoints) = ("refused", "its parent `\(parent)` was refused", [])
                results.append(result)
                refused.insert(name)
                continue
            }
            let planned = try await plan(name, light, graph: graph, renames: renames, withParent: withParent)
            if planned.action == "refused" {
                results.append(planned)
                refused.insert(name)
                continue
            }
            done.checkpointsTotal += planned.checkpoints.count
            var merged = planned
            (merged.checkpoints, merged.metrics, merged.curvePoints, merged.aliases, merged.advisories) = ([], 0, 0, 0, 0)
            (merged.blobs, merged.bytes) = (0, 0)
            var pending = planned.checkpoints[...]
            repeat {
                // As many checkpoints as fit one batch (at least one).
                var contents: [CopiedCheckpoint] = []
                var size = 0
                while let number = pending.first {
                    guard let content = try await source.contents(of: ModelName(name), numbers: [number]).first else {
                        pending.removeFirst()
                        continue
                    }
                    let bytes = try RemoteRegistry.encode(content).count
                    if !contents.isEmpty, size + bytes > Self.copyBatchBytes { break }
                    (size, contents) = (size + bytes, contents + [content])
                    pending.removeFirst()
                }
                let sent = try await sendBlobs(of: contents, from: source) { bytes in
                    done.bytes += bytes
                    progress?(done)
                }
                (merged.blobs, merged.bytes) = (merged.blobs + sent.blobs, merged.bytes + sent.bytes)
                var full = light
                full.contents = contents
                let answer: CopyResult = try await call(
                    .POST, ["v1", "copy"],
                    json: CopyBatch(models: [name], histories: try await withParent(name, full), renames: renames, dryRun: false))
                guard let result = answer.models.first else { break }
                merged.checkpoints += result.checkpoints
                merged.metrics += result.metrics
                merged.curvePoints += result.curvePoints
                merged.aliases += result.aliases
                merged.advisories += result.advisories
                if result.action == "refused" { (merged.action, merged.reason) = (result.action, result.reason) }
                done.checkpoints += result.checkpoints.count
                progress?(done)
            } while !pending.isEmpty && merged.action != "refused"
            if merged.action == "unchanged", merged.changed { merged.action = "updated" }
            results.append(merged)
        }
        return CopyResult(models: results, dryRun: false)
    }

    /// The server's plan for one model: a dry run of it alone (its parents are there by now).
    private func plan(
        _ name: String, _ light: ModelHistory, graph: CopyGraph, renames: [String: String],
        withParent: (String, ModelHistory) async throws(GraftError) -> [ModelHistory]
    ) async throws(GraftError) -> CopiedModel {
        let answer: CopyResult = try await call(
            .POST, ["v1", "copy"],
            json: CopyBatch(models: [name], histories: try await withParent(name, light), renames: renames, dryRun: true))
        guard let planned = answer.models.first else { throw .unreachable(url: url, reason: "the server's copy plan named no model") }
        return planned
    }

    /// The blobs of these checkpoints kept apart from the metadata (sent without data).
    static func storedBlobs(of contents: [CopiedCheckpoint]) -> [ProposedTensor] {
        var stored: [ProposedTensor] = []
        for content in contents {
            stored += content.proposal.tensors.filter { $0.data == nil }.map {
                ProposedTensor(name: "", digest: $0.digest, length: $0.length)
            }
            for file in content.proposal.files ?? [] where file.data == nil {
                if let digest = file.digest, let length = file.length {
                    stored.append(ProposedTensor(name: "", digest: digest, length: length))
                }
            }
        }
        return stored
    }

    /// PUTs the blobs of these checkpoints that the server lacks (it announces them for upload).
    private func sendBlobs(of contents: [CopiedCheckpoint], from source: Registry, sent: (Int) -> Void) async throws(GraftError)
        -> (blobs: Int, bytes: Int)
    {
        let stored = Self.storedBlobs(of: contents)
        guard !stored.isEmpty else { return (0, 0) }
        let missing: [ProposedTensor] = try await call(.POST, ["v1", "copy", "blobs"], json: stored)
        var bytes = 0
        for blob in missing {
            var request = try self.request(.PUT, ["v1", "blobs", blob.digest.description])
            request.headers.add(name: "Content-Type", value: "application/octet-stream")
            request.body = .stream(
                StoredBlobChunks(transfer: source.blobs, digest: blob.digest, length: blob.length), length: .known(Int64(blob.length)))
            let response: HTTPClientResponse
            do { response = try await executeRaw(request, timeout: .hours(6)) } catch let error as GraftError { throw error } catch {
                throw .unreachable(url: url, reason: "\(error)")
            }
            guard response.status == .created else { throw await Self.failure(response) }
            _ = try? await response.body.collect(upTo: 1 << 16)
            bytes += blob.length
            sent(blob.length)
        }
        return (missing.count, bytes)
    }
}

/// A stored blob's bytes in chunks, read from the store as a request body is sent.
struct StoredBlobChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let transfer: BlobTransfer
    let digest: GraftCore.Digest
    let length: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        let transfer: BlobTransfer
        let digest: GraftCore.Digest
        let length: Int
        var offset = 0
        /// The blob's raw bytes whatever its stored form (opened at the first piece).
        var reader: RawReader?

        mutating func next() async throws -> ByteBuffer? {
            guard offset < length else { return nil }
            let count = Swift.min(RemoteRegistry.chunk, length - offset)
            var buffer = ByteBufferAllocator().buffer(capacity: count)
            if reader == nil { reader = try transfer.reader(digest, length: length) }
            let (reader, offset) = (self.reader!, self.offset)
            try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
                try Result { () throws(GraftError) in try reader.read(at: offset, count: count, into: raw.baseAddress!) }.get()
                return count
            }
            self.offset += count
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(transfer: transfer, digest: digest, length: length) }
}
