import Foundation
package import GraftCore
import GraftLocal
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Blobs in an S3-compatible bucket: `PREFIX/blobs/sha256/ab/<64 hex>`; keys come from digests only.
///
/// - **Writes** spool to a local file (`spool/`), then go up whole when committed: one PUT up
///   to 64 MiB, else a multipart upload of 16 MiB parts. Every body is signed with its SHA-256
///   (the blob's digest, or each part's hash), so the service refuses bytes damaged on the way.
///   A blob that exists already is not sent again: it is claimed instead.
/// - **Claims** (`contains(_:claim:)`) write a small `claims/<hex>` object: S3 cannot touch an
///   object's time, so a blob's age is the younger of its own and its claim's; gc's grace
///   period protects a claimed blob until the import that found it commits.
/// - **Reads** are ranged GETs; `map` downloads the blob into an unlinked spool file and maps it.
/// - **Temporary items** are spool files and incomplete multipart uploads under the prefix.
/// - **Durability**: an acknowledged PUT or completed upload is durable; `flush` has nothing to do.
///
/// Calls block (the registry makes them from Dispatch threads): each waits on the HTTP
/// client's event loop, never on Swift's cooperative pool.
package final class S3BlobStore: BlobStore {
    package let client: S3Client
    let spool: String
    /// Blobs larger than this go up as multipart uploads (64 MiB), in parts of `partSize` (16 MiB; S3's least is 5 MiB).
    package let multipartThreshold: Int
    package let partSize: Int
    static let readPiece = 8 << 20

    /// - Parameter spool: a local directory for writes in progress and downloads being mapped (created if missing).
    package init(client: S3Client, spool: String, multipartThreshold: Int = 64 << 20, partSize: Int = 16 << 20) throws(GraftError) {
        self.client = client
        self.spool = spool
        (self.multipartThreshold, self.partSize) = (multipartThreshold, max(partSize, 5 << 20))
        _ = try FileSystem.makeDirectory(spool)
    }

    var location: S3Location { client.location }

    /// Creates the bucket when it does not exist (an existing one of ours is fine).
    package func createBucket() throws(GraftError) {
        do { _ = try client.sendBlocking("PUT", key: nil) } catch {
            if case .service(_, let code, _) = error, code == "BucketAlreadyOwnedByYou" { return }
            throw graftError(error, key: "")
        }
    }

    func blobKey(_ digest: Digest) -> String { location.key("blobs/sha256/\(digest.hex.prefix(2))/\(digest.hex)") }
    func claimKey(_ digest: Digest) -> String { location.key("claims/\(digest.hex)") }

    /// An S3 failure as the registry's error: retryable ones as unreachable (exit 69).
    func graftError(_ error: S3Error, key: String) -> GraftError {
        if error.isRetryable { return .unreachable(url: location.endpoint.absoluteString, reason: error.description) }
        return .io(operation: error.description + "; on", path: "s3://\(location.bucket)/\(key)", errno: EIO)
    }

    // MARK: BlobStore

    package func beginWrite() throws(GraftError) -> any BlobWrite {
        try S3BlobWrite(store: self)
    }

    package func contains(_ digest: Digest, claim: Bool) -> Bool {
        guard (try? length(of: digest)) ?? nil != nil else { return false }
        if claim { _ = try? client.sendBlocking("PUT", key: claimKey(digest), body: []) }
        return true
    }

    package func length(of digest: Digest) throws(GraftError) -> Int? {
        let key = blobKey(digest)
        do {
            let answer = try client.sendBlocking("HEAD", key: key, allowMissing: true)
            guard answer.status != 404 else { return nil }
            return answer.headers.first(name: "Content-Length").flatMap(Int.init)
        } catch { throw graftError(error, key: key) }
    }

    package func read(_ digest: Digest, at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) throws(GraftError) {
        guard count > 0 else { return }
        let key = blobKey(digest)
        let answer: S3Client.Answer
        do {
            answer = try client.sendBlocking(
                "GET", key: key, headers: [("Range", "bytes=\(offset)-\(offset + count - 1)")], allowMissing: true)
        } catch {
            if case .service(416, _, _) = error { throw .damagedBlob(digest, reason: "its object is shorter than \(offset + count) bytes") }
            throw graftError(error, key: key)
        }
        guard answer.status != 404 else { throw .damagedBlob(digest, reason: "its object is missing") }
        guard answer.body.count == count else { throw .damagedBlob(digest, reason: "its object is shorter than \(offset + count) bytes") }
        answer.body.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: count) }
    }

    /// Lanes of ranged GETs (and of multipart parts going up) in flight at once: S3 serves
    /// ranges and parts of one object in parallel, and one request at a time leaves the link idle.
    static let lanes = 4

    package func copy(_ digest: Digest, length: Int, appendingTo fd: Int32) throws(GraftError) {
        // A window of `lanes` pieces is fetched at once, then written in order.
        let window = Self.lanes * Self.readPiece
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: min(max(length, 1), window), alignment: 64)
        defer { buffer.deallocate() }
        var offset = 0
        while offset < length {
            let span = min(window, length - offset)
            let pieces = (span + Self.readPiece - 1) / Self.readPiece
            let failure = Mutex<GraftError?>(nil)
            let base = offset
            let target = UnsafeMutableRawPointerBox(buffer)
            DispatchQueue.concurrentPerform(iterations: pieces) { index in
                let start = index * Self.readPiece
                let count = min(Self.readPiece, span - start)
                do throws(GraftError) { try self.read(digest, at: base + start, count: count, into: target.pointer + start) } catch {
                    failure.withLock { if $0 == nil { $0 = error } }
                }
            }
            if let error = failure.withLock({ $0 }) { throw error }
            var written = 0
            while written < span {
                let n = Glibc.write(fd, buffer + written, span - written)
                guard n > 0 else { throw GraftError.fromErrno(errno, operation: "cannot write", path: "the output") }
                written += n
            }
            offset += span
        }
    }

    package func map(_ digest: Digest, length: Int) throws(GraftError) -> any BlobBytes {
        guard let stored = try self.length(of: digest) else { throw .damagedBlob(digest, reason: "its object is missing") }
        guard stored == length else { throw .damagedBlob(digest, reason: "its object holds \(stored) bytes, expected \(length)") }
        let path = spool + "/" + FileSystem.uniqueName(suffix: ".map")
        let file = try GraftLocal.FileDescriptor(path: path, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        defer { FileSystem.remove(path) }  // the mapping outlives the name
        try copy(digest, length: length, appendingTo: file.fd)
        return try MappedBlob(path: path, digest: digest, length: length)
    }

    package func flush(_ written: [Digest]) throws(GraftError) {}

    package func age(of digest: Digest) -> Double? {
        func lastModified(_ key: String) -> Date? {
            guard let answer = try? client.sendBlocking("HEAD", key: key, allowMissing: true), answer.status != 404 else { return nil }
            return answer.headers.first(name: "Last-Modified").flatMap(Self.httpDate)
        }
        guard let stored = lastModified(blobKey(digest)) else { return nil }
        let newest = max(stored, lastModified(claimKey(digest)) ?? stored)
        return max(0, Date().timeIntervalSince(newest))
    }

    package func remove(_ digest: Digest) {
        _ = try? client.sendBlocking("DELETE", key: blobKey(digest), allowMissing: true)
        _ = try? client.sendBlocking("DELETE", key: claimKey(digest), allowMissing: true)
    }

    package func inventory() -> BlobInventory {
        let root = location.key("blobs/")
        guard let objects = try? client.listBlocking(prefix: root) else { return BlobInventory(blobs: [], stray: []) }
        func isHex(_ text: Substring) -> Bool { text.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) } }
        var blobs: [Digest] = [], stray: [String] = []
        for object in objects {
            let relative = String(object.key.dropFirst(root.count))
            let parts = relative.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count == 3, parts[0] == "sha256", parts[1].count == 2, isHex(parts[1]), parts[2].count == 64,
                parts[2].hasPrefix(parts[1]), isHex(parts[2]),
                let digest = try? Digest(parsing: "sha256:" + parts[2])
            {
                blobs.append(digest)
            } else {
                stray.append("blobs/" + relative)
            }
        }
        return BlobInventory(blobs: blobs.sorted(), stray: stray.sorted())
    }

    package func temporaryItems() -> [(name: String, age: Double)] {
        let now = FileSystem.now()
        var items: [(name: String, age: Double)] = ((try? FileSystem.contentsOfDirectory(spool)) ?? []).compactMap { name in
            FileSystem.modificationTime(spool + "/" + name).map { ("spool/" + name, now - $0) }
        }
        for upload in (try? multipartUploads()) ?? [] {
            items.append(("upload/" + upload.id + "/" + upload.key, max(0, Date().timeIntervalSince(upload.initiated))))
        }
        return items
    }

    package func removeTemporary(_ name: String) {
        if name.hasPrefix("spool/") {
            let file = String(name.dropFirst(6))
            guard !file.contains("/"), file != ".", file != ".." else { return }
            FileSystem.remove(spool + "/" + file)
        } else if name.hasPrefix("upload/") {
            let rest = name.dropFirst(7)
            guard let slash = rest.firstIndex(of: "/") else { return }
            let (id, key) = (String(rest[..<slash]), String(rest[rest.index(after: slash)...]))
            guard key.hasPrefix(location.key("blobs/")) else { return }  // only uploads this store started
            _ = try? client.sendBlocking("DELETE", key: key, query: "uploadId=\(SigV4Signer.encode(id))", allowMissing: true)
        }
    }

    // MARK: Helpers

    /// Incomplete multipart uploads of blobs under the prefix.
    func multipartUploads() throws(S3Error) -> [(key: String, id: String, initiated: Date)] {
        let body = try client.sendBlocking("GET", key: nil, query: "prefix=\(SigV4Signer.encode(location.key("blobs/")))&uploads=").body
        let text = String(decoding: body, as: UTF8.self)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return S3XML.values("Upload", in: text).compactMap { item in
            guard let key = S3XML.values("Key", in: item).first, let id = S3XML.values("UploadId", in: item).first else { return nil }
            let stamp = S3XML.values("Initiated", in: item).first ?? ""
            return (key, id, formatter.date(from: stamp) ?? ISO8601DateFormatter().date(from: stamp) ?? Date())
        }
    }

    /// `Last-Modified`'s RFC 1123 date. One formatter for every call (gc asks once per blob).
    static func httpDate(_ text: String) -> Date? { httpDateFormatter.date(from: text) }

    private static let httpDateFormatter: DateFormatter = {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter
    }()

    /// Sends a spooled blob: one PUT, or a multipart upload (aborted if any part fails).
    /// `encoded`: the bytes are another stored form of the blob (`graft compact`), not the
    /// bytes its digest names, so the payload is hashed as sent.
    func upload(_ file: GraftLocal.FileDescriptor, length: Int, as digest: Digest, encoded: Bool = false) throws(GraftError) {
        let key = blobKey(digest)
        @Sendable func bytes(at offset: Int, count: Int) throws(GraftError) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: count)
            if count > 0 {
                try out.withUnsafeMutableBytes { raw in
                    Result { () throws(GraftError) in try file.read(into: raw.baseAddress!, count: count, offset: offset) }
                }.get()
            }
            return out
        }
        do {
            if length <= multipartThreshold {
                _ = try client.sendBlocking("PUT", key: key, body: try bytes(at: 0, count: length), payloadHash: encoded ? nil : digest.hex)
                return
            }
            let created = try client.sendBlocking("POST", key: key, query: "uploads=")
            guard let id = S3XML.value("UploadId", in: created.body) else {
                throw S3Error.malformed("CreateMultipartUpload without UploadId")
            }
            do {
                // Parts go up `lanes` at a time, each read from the spool when its lane takes it.
                let offsets = Array(stride(from: 0, to: length, by: partSize))
                let tags = Mutex<[String?]>(Array(repeating: nil, count: offsets.count))
                let failure = Mutex<(any Error)?>(nil)
                let next = Atomic<Int>(0)
                let (client, partSize) = (self.client, self.partSize)
                DispatchQueue.concurrentPerform(iterations: min(Self.lanes, offsets.count)) { _ in
                    while failure.withLock({ $0 == nil }) {
                        let index = next.add(1, ordering: .relaxed).oldValue
                        guard index < offsets.count else { return }
                        do {
                            let part = try bytes(at: offsets[index], count: min(partSize, length - offsets[index]))
                            let answer = try client.sendBlocking(
                                "PUT", key: key, query: "partNumber=\(index + 1)&uploadId=\(SigV4Signer.encode(id))", body: part)
                            guard let etag = answer.headers.first(name: "ETag") else { throw S3Error.malformed("UploadPart without ETag") }
                            tags.withLock { $0[index] = etag }
                        } catch {
                            failure.withLock { if $0 == nil { $0 = error } }
                        }
                    }
                }
                if let error = failure.withLock({ $0 }) { throw error }
                let etags = tags.withLock { $0.compactMap { $0 } }
                let body = S3XML.completion(etags)
                let done = try client.sendBlocking("POST", key: key, query: "uploadId=\(SigV4Signer.encode(id))", body: body)
                if let code = S3XML.value("Code", in: done.body) {
                    throw S3Error.service(status: done.status, code: code, message: S3XML.value("Message", in: done.body) ?? "")
                }
            } catch {
                _ = try? client.sendBlocking("DELETE", key: key, query: "uploadId=\(SigV4Signer.encode(id))", allowMissing: true)
                throw error
            }
        } catch let error as GraftError {
            throw error
        } catch let error as S3Error {
            throw graftError(error, key: key)
        } catch {
            throw .io(operation: "\(error); on", path: "s3://\(location.bucket)/\(key)", errno: EIO)
        }
    }
}

/// A blob being written: spooled to a local file, sent when committed.
final class S3BlobWrite: BlobWrite {
    private let store: S3BlobStore
    private let path: String
    private var file: GraftLocal.FileDescriptor?
    private var written = 0

    init(store: S3BlobStore) throws(GraftError) {
        self.store = store
        path = store.spool + "/" + FileSystem.uniqueName(suffix: ".blob")
        file = try GraftLocal.FileDescriptor(path: path, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o600)
    }

    deinit { abort() }

    func write(_ chunk: UnsafeRawBufferPointer) throws(GraftError) {
        guard let file else { throw .io(operation: "write after commit to", path: path, errno: EBADF) }
        try file.write(chunk)
        written += chunk.count
    }

    func commit(as digest: Digest) throws(GraftError) -> Bool {
        guard let file else { throw .io(operation: "commit twice", path: path, errno: EBADF) }
        defer { abort() }
        if store.contains(digest, claim: true) { return false }
        try store.upload(file, length: written, as: digest)
        return true
    }

    func replace(_ digest: Digest) throws(GraftError) {
        guard let file else { throw .io(operation: "commit twice", path: path, errno: EBADF) }
        defer { abort() }
        // A PUT replaces the object whole: a GET sees the old object or the new one.
        try store.upload(file, length: written, as: digest, encoded: true)
    }

    func abort() {
        guard file != nil else { return }
        file = nil
        FileSystem.remove(path)
    }
}

/// A buffer handed to the lanes that fill disjoint parts of it.
struct UnsafeMutableRawPointerBox: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    init(_ pointer: UnsafeMutableRawPointer) { self.pointer = pointer }
}
