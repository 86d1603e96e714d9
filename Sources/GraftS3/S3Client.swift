public import AsyncHTTPClient
import Crypto
public import Foundation
public import NIOCore
import NIOHTTP1

/// Where blobs live in an S3-compatible store: `s3://BUCKET/PREFIX?endpoint=URL&region=R&path_style=true`.
///
/// Without `endpoint`, AWS's regional endpoint with virtual-hosted addressing
/// (`https://BUCKET.s3.REGION.amazonaws.com/KEY`); with one (MinIO, moto, Ceph), path-style
/// addressing (`URL/BUCKET/KEY`) unless `path_style=false`. The region defaults to `us-east-1`.
public struct S3Location: Sendable, Equatable {
    public var bucket: String
    /// Keys start with it (no leading or trailing `/`; may be empty).
    public var prefix: String
    public var endpoint: URL
    public var region: String
    public var pathStyle: Bool

    public init(bucket: String, prefix: String = "", endpoint: URL, region: String = "us-east-1", pathStyle: Bool = true) {
        (self.bucket, self.prefix, self.endpoint, self.region, self.pathStyle) = (bucket, prefix, endpoint, region, pathStyle)
    }

    /// Parses `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true|false]`.
    public init(parsing text: String) throws(S3Error) {
        guard text.hasPrefix("s3://"), let components = URLComponents(string: text), let bucket = components.host, !bucket.isEmpty else {
            throw .invalidLocation(text, reason: "expected s3://BUCKET/PREFIX?endpoint=URL&region=R")
        }
        guard bucket.count >= 3, bucket.count <= 63,
            bucket.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x2E })
        else {
            throw .invalidLocation(text, reason: "a bucket name is 3–63 lower-case letters, digits, `-` and `.`")
        }
        let prefix = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        guard !prefix.split(separator: "/").contains(where: { $0 == "." || $0 == ".." }),
            prefix.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != 0x5C })
        else {
            throw .invalidLocation(text, reason: "the prefix is printable ASCII path segments without `.`, `..`, spaces or `\\`")
        }
        var parameters: [String: String] = [:]
        for item in components.queryItems ?? [] {
            guard ["endpoint", "region", "path_style"].contains(item.name) else {
                throw .invalidLocation(text, reason: "unknown parameter `\(item.name)` (endpoint, region, path_style)")
            }
            parameters[item.name] = item.value ?? ""
        }
        let region = parameters["region"] ?? "us-east-1"
        guard !region.isEmpty, region.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }) else {
            throw .invalidLocation(text, reason: "a region is lower-case letters, digits and `-`")
        }
        let endpoint: URL
        var pathStyle: Bool
        if let given = parameters["endpoint"] {
            guard let url = URL(string: given), ["http", "https"].contains(url.scheme ?? ""), url.host != nil,
                url.path.isEmpty || url.path == "/"
            else {
                throw .invalidLocation(text, reason: "the endpoint is an http(s)://HOST[:PORT] URL")
            }
            endpoint = url
            pathStyle = true
        } else {
            endpoint = URL(string: "https://s3.\(region).amazonaws.com")!
            pathStyle = false
        }
        switch parameters["path_style"] {
        case nil: break
        case "true", "1": pathStyle = true
        case "false", "0": pathStyle = false
        case let other?: throw .invalidLocation(text, reason: "path_style is true or false, not `\(other)`")
        }
        self.init(bucket: bucket, prefix: prefix, endpoint: endpoint, region: region, pathStyle: pathStyle)
    }

    /// The full key of `name` under the prefix.
    public func key(_ name: String) -> String { prefix.isEmpty ? name : prefix + "/" + name }
}

/// What an S3 request answered other than success.
public enum S3Error: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidLocation(String, reason: String)
    /// The service's error: HTTP status, S3 error code (`NoSuchKey`, `SignatureDoesNotMatch`…), message.
    case service(status: Int, code: String, message: String)
    /// The endpoint could not be reached or the connection failed.
    case unreachable(String)
    /// An answer that is not what S3 sends.
    case malformed(String)

    public var description: String {
        switch self {
        case .invalidLocation(let text, let reason): "invalid S3 location `\(text)`: \(reason)"
        case .service(let status, let code, let message): "S3 answered \(status) \(code)" + (message.isEmpty ? "" : ": \(message)")
        case .unreachable(let reason): "the S3 endpoint cannot be reached: \(reason)"
        case .malformed(let reason): "an unexpected S3 answer: \(reason)"
        }
    }

    /// Worth retrying: throttling, a server error, a connection failure.
    public var isRetryable: Bool {
        switch self {
        case .service(let status, let code, _): status >= 500 || status == 429 || code == "SlowDown" || code == "RequestTimeout"
        case .unreachable: true
        default: false
        }
    }
}

/// An object in a listing.
public struct S3Object: Sendable, Equatable {
    public var key: String
    public var size: Int
    public var lastModified: Date
}

/// The S3 operations a blob store needs, signed with Signature Version 4, on AsyncHTTPClient:
/// PUT, ranged GET, HEAD, DELETE, ListObjectsV2 (paged), and multipart uploads. Bodies whose
/// SHA-256 is known (every blob: its digest is that hash) are signed with it, so the service
/// rejects bytes damaged in transit; others go as `UNSIGNED-PAYLOAD`.
public final class S3Client: Sendable {
    public let location: S3Location
    let signer: SigV4Signer
    let client: HTTPClient
    public static let maxAnswer = 16 << 20

    /// One client per process, connections pooled; an endpoint that refuses or stays silent
    /// fails a request after `connect` seconds of attempts (AsyncHTTPClient's own default keeps
    /// retrying a refused connection for much longer).
    public static let sharedClient = client(connectTimeout: .seconds(10))

    public static func client(connectTimeout: TimeAmount) -> HTTPClient {
        var configuration = HTTPClient.Configuration(timeout: .init(connect: connectTimeout, read: .seconds(300)), decompression: .disabled)
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 16
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public init(location: S3Location, credentials: AWSCredentials, client: HTTPClient = S3Client.sharedClient) {
        self.location = location
        signer = .s3(credentials: credentials, region: location.region)
        self.client = client
    }

    // MARK: Objects

    /// Stores `body` under `key` (the full key, prefix included). `sha256`: the body's hash in hex, if known.
    public func put(_ key: String, body: [UInt8], sha256: String? = nil) async throws(S3Error) {
        let hash = sha256 ?? SigV4Signer.hex(SHA256.hash(data: body))
        _ = try await send("PUT", key: key, body: body, payloadHash: hash)
    }

    /// The object's bytes, or `range` of them; `nil` when there is no such key.
    public func get(_ key: String, range: ClosedRange<Int>? = nil) async throws(S3Error) -> [UInt8]? {
        let headers = range.map { [("Range", "bytes=\($0.lowerBound)-\($0.upperBound)")] } ?? []
        let answer = try await send("GET", key: key, headers: headers, allowMissing: true)
        return answer.status == 404 ? nil : answer.body
    }

    /// The object's size, or `nil` when there is no such key.
    public func head(_ key: String) async throws(S3Error) -> Int? {
        let answer = try await send("HEAD", key: key, allowMissing: true)
        guard answer.status != 404 else { return nil }
        guard let length = answer.headers.first(name: "Content-Length").flatMap(Int.init) else {
            throw .malformed("HEAD without Content-Length")
        }
        return length
    }

    /// Removes the object (a missing key is no error: S3 answers 204 either way).
    public func delete(_ key: String) async throws(S3Error) {
        _ = try await send("DELETE", key: key, allowMissing: true)
    }

    /// Every object whose key starts with `prefix`, following continuation tokens, `pageSize` a request.
    public func list(prefix: String, pageSize: Int = 1000) async throws(S3Error) -> [S3Object] {
        var objects: [S3Object] = []
        var token: String? = nil
        repeat {
            let page = try S3XML.listing(
                try await send("GET", key: nil, query: Self.listQuery(prefix: prefix, pageSize: pageSize, token: token)).body)
            objects += page.objects
            token = try page.next()
        } while token != nil
        return objects
    }

    /// ``list(prefix:pageSize:)``, blocking the calling thread (for the blob store).
    func listBlocking(prefix: String, pageSize: Int = 1000) throws(S3Error) -> [S3Object] {
        var objects: [S3Object] = []
        var token: String? = nil
        repeat {
            let page = try S3XML.listing(
                try sendBlocking("GET", key: nil, query: Self.listQuery(prefix: prefix, pageSize: pageSize, token: token)).body)
            objects += page.objects
            token = try page.next()
        } while token != nil
        return objects
    }

    static func listQuery(prefix: String, pageSize: Int, token: String?) -> String {
        "list-type=2&max-keys=\(pageSize)&prefix=\(SigV4Signer.encode(prefix))"
            + (token.map { "&continuation-token=\(SigV4Signer.encode($0))" } ?? "")
    }

    // MARK: Multipart uploads (parts of 5 MiB or more, but the last)

    /// Starts a multipart upload; returns its id.
    public func createMultipartUpload(_ key: String) async throws(S3Error) -> String {
        let answer = try await send("POST", key: key, query: "uploads=")
        guard let id = S3XML.value("UploadId", in: answer.body) else { throw .malformed("CreateMultipartUpload without UploadId") }
        return id
    }

    /// Uploads part `number` (1…10,000); returns its ETag, for the completion.
    public func uploadPart(_ key: String, uploadID: String, number: Int, body: [UInt8], sha256: String? = nil) async throws(S3Error)
        -> String
    {
        let hash = sha256 ?? SigV4Signer.hex(SHA256.hash(data: body))
        let answer = try await send(
            "PUT", key: key, query: "partNumber=\(number)&uploadId=\(SigV4Signer.encode(uploadID))", body: body, payloadHash: hash)
        guard let etag = answer.headers.first(name: "ETag") else { throw .malformed("UploadPart without ETag") }
        return etag
    }

    /// Assembles the parts, in order, into the object.
    public func completeMultipartUpload(_ key: String, uploadID: String, parts: [String]) async throws(S3Error) {
        let body = S3XML.completion(parts)
        let answer = try await send("POST", key: key, query: "uploadId=\(SigV4Signer.encode(uploadID))", body: body)
        // S3 may answer 200 with an error in the body.
        if let code = S3XML.value("Code", in: answer.body),
            S3XML.value("Error", in: answer.body) != nil || answer.body.starts(with: Array("<Error".utf8))
        {
            throw .service(status: answer.status, code: code, message: S3XML.value("Message", in: answer.body) ?? "")
        }
    }

    /// Abandons a multipart upload and its parts.
    public func abortMultipartUpload(_ key: String, uploadID: String) async throws(S3Error) {
        _ = try await send("DELETE", key: key, query: "uploadId=\(SigV4Signer.encode(uploadID))", allowMissing: true)
    }

    /// Creates the bucket (for `graft init` and tests); an existing one of ours is fine.
    public func createBucket() async throws(S3Error) {
        do { _ = try await send("PUT", key: nil, bucketOnly: true) } catch {
            if case .service(_, let code, _) = error, code == "BucketAlreadyOwnedByYou" { return }
            throw error
        }
    }

    // MARK: Requests

    struct Answer {
        var status: Int
        var headers: HTTPHeaders
        var body: [UInt8]
    }

    /// The URL's path and host for `key` (nil: the bucket itself).
    func address(key: String?) -> (host: String, path: String, base: String) {
        let endpoint = location.endpoint
        let scheme = endpoint.scheme ?? "https"
        var host = endpoint.host ?? ""
        if let port = endpoint.port, !((scheme == "http" && port == 80) || (scheme == "https" && port == 443)) { host += ":\(port)" }
        let encodedKey =
            key.map {
                "/"
                    + $0.split(separator: "/", omittingEmptySubsequences: false).map { SigV4Signer.encode(String($0)) }.joined(
                        separator: "/")
            } ?? ""
        if location.pathStyle {
            return (host, "/" + location.bucket + (key == nil ? "" : encodedKey), "\(scheme)://\(host)")
        }
        let virtualHost = location.bucket + "." + host
        return (virtualHost, key == nil ? "/" : encodedKey, "\(scheme)://\(virtualHost)")
    }

    /// A signed request, ready for either way of sending it.
    struct Prepared {
        var url: String
        var method: String
        var headers: [(name: String, value: String)]
        var body: [UInt8]?
    }

    func prepare(
        _ method: String, key: String?, query: String, headers extra: [(String, String)], body: [UInt8]?, payloadHash: String?
    ) -> Prepared {
        let (host, path, base) = address(key: key)
        let hash = payloadHash ?? (body.map { SigV4Signer.hex(SHA256.hash(data: $0)) } ?? SigV4Signer.emptyPayloadHash)
        var headers: [(name: String, value: String)] = [("Host", host)] + extra.map { (name: $0.0, value: $0.1) }
        if let body { headers.append(("Content-Length", String(body.count))) }
        let signed = signer.sign(
            method: method, path: path, query: query, headers: headers, payloadHash: hash, date: Date(), addContentHash: true)
        return Prepared(
            url: base + path + (query.isEmpty ? "" : "?" + query), method: method,
            headers: (headers + signed.headers).filter { $0.name != "Content-Length" }, body: body)
    }

    func check(_ status: Int, _ headers: HTTPHeaders, _ bytes: [UInt8], allowMissing: Bool) throws(S3Error) -> Answer {
        if (200..<300).contains(status) || (allowMissing && status == 404) {
            return Answer(status: status, headers: headers, body: bytes)
        }
        throw .service(
            status: status, code: S3XML.value("Code", in: bytes) ?? "HTTP\(status)", message: S3XML.value("Message", in: bytes) ?? "")
    }

    func send(
        _ method: String, key: String?, query: String = "", headers extra: [(String, String)] = [], body: [UInt8]? = nil,
        payloadHash: String? = nil, allowMissing: Bool = false, bucketOnly: Bool = false
    ) async throws(S3Error) -> Answer {
        let prepared = prepare(method, key: key, query: query, headers: extra, body: body, payloadHash: payloadHash)
        var request = HTTPClientRequest(url: prepared.url)
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in prepared.headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(body) }
        let response: HTTPClientResponse
        do { response = try await client.execute(request, timeout: .seconds(300)) } catch { throw .unreachable("\(error)") }
        var bytes: [UInt8] = []
        do {
            if method != "HEAD" { bytes = Array(try await response.body.collect(upTo: Self.maxAnswer).readableBytesView) }
        } catch { throw .unreachable("\(error)") }
        return try check(Int(response.status.code), response.headers, bytes, allowMissing: allowMissing)
    }

    /// The same request, blocking the calling thread on the client's event loop (for the blob
    /// store, whose callers are Dispatch threads; never call it from an event loop).
    func sendBlocking(
        _ method: String, key: String?, query: String = "", headers extra: [(String, String)] = [], body: [UInt8]? = nil,
        payloadHash: String? = nil, allowMissing: Bool = false
    ) throws(S3Error) -> Answer {
        let prepared = prepare(method, key: key, query: query, headers: extra, body: body, payloadHash: payloadHash)
        var headers = HTTPHeaders()
        for (name, value) in prepared.headers { headers.add(name: name, value: value) }
        let response: HTTPClient.Response
        do {
            let request = try HTTPClient.Request(
                url: prepared.url, method: HTTPMethod(rawValue: method), headers: headers,
                body: body.map { .byteBuffer(ByteBuffer(bytes: $0)) })
            response = try client.execute(request: request, deadline: .now() + .seconds(300)).wait()
        } catch { throw .unreachable("\(error)") }
        let bytes = response.body.map { Array($0.readableBytesView) } ?? []
        return try check(Int(response.status.code), response.headers, bytes, allowMissing: allowMissing)
    }
}

/// The few elements of S3's XML answers a blob store reads. S3's XML is flat and regular; a
/// scanner for `<Name>value</Name>` with entity decoding reads it without an XML library.
enum S3XML {
    static func value(_ name: String, in bytes: [UInt8]) -> String? {
        values(name, in: String(decoding: bytes, as: UTF8.self)).first
    }

    static func values(_ name: String, in text: String) -> [String] {
        var out: [String] = []
        var rest = text[...]
        while let open = rest.range(of: "<\(name)>"), let close = rest[open.upperBound...].range(of: "</\(name)>") {
            out.append(unescape(String(rest[open.upperBound..<close.lowerBound])))
            rest = rest[close.upperBound...]
        }
        return out
    }

    /// One page of ListObjectsV2.
    struct Page {
        var objects: [S3Object]
        var truncated: Bool
        var token: String?

        /// The next page's continuation token; nil after the last page.
        func next() throws(S3Error) -> String? {
            guard truncated else { return nil }
            guard let token else { throw .malformed("a truncated listing without NextContinuationToken") }
            return token
        }
    }

    static func listing(_ bytes: [UInt8]) throws(S3Error) -> Page {
        let text = String(decoding: bytes, as: UTF8.self)
        guard text.contains("<ListBucketResult") else { throw .malformed("ListObjectsV2 without ListBucketResult") }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let plain = ISO8601DateFormatter()
        var objects: [S3Object] = []
        for item in values("Contents", in: text) {
            guard let key = values("Key", in: item).first, let size = values("Size", in: item).first.flatMap(Int.init) else {
                throw .malformed("a listed object without Key or Size")
            }
            let stamp = values("LastModified", in: item).first ?? ""
            objects.append(
                S3Object(key: key, size: size, lastModified: formatter.date(from: stamp) ?? plain.date(from: stamp) ?? .distantPast))
        }
        return Page(
            objects: objects, truncated: values("IsTruncated", in: text).first == "true",
            token: values("NextContinuationToken", in: text).first)
    }

    /// The body of CompleteMultipartUpload: each part's number and ETag, in order.
    static func completion(_ etags: [String]) -> [UInt8] {
        let items = etags.enumerated().map { "<Part><PartNumber>\($0.offset + 1)</PartNumber><ETag>\(escape($0.element))</ETag></Part>" }
        return Array(
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\(items.joined())</CompleteMultipartUpload>".utf8)
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(
            of: ">", with: "&gt;"
        )
        .replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func unescape(_ text: String) -> String {
        guard text.contains("&") else { return text }
        return text.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">").replacingOccurrences(
            of: "&quot;", with: "\""
        )
        .replacingOccurrences(of: "&apos;", with: "'").replacingOccurrences(of: "&amp;", with: "&")
    }
}
