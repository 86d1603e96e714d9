import Crypto
import Foundation
import Graft
import GraftTestSupport
import Testing

@testable import GraftS3

#if canImport(Glibc)
    import Glibc
#endif

@Suite("S3 locations and the S3 client against moto's server", .serialized)
struct S3ClientTests {
    static let credentials = AWSCredentials(accessKeyID: "graft-test", secretAccessKey: "graft-test-secret")
    /// Gives up on a refused connection within a second.
    static let quickClient = S3Client.client(connectTimeout: .seconds(1))

    @Test("s3:// locations: bucket, prefix, endpoint, region and addressing parsed; bad ones refused with the rule")
    func locations() throws {
        let local = try S3Location(parsing: "s3://graft-blobs/team/registry?endpoint=http://127.0.0.1:9000&region=eu-west-1")
        #expect(local.bucket == "graft-blobs" && local.prefix == "team/registry" && local.region == "eu-west-1" && local.pathStyle)
        #expect(local.endpoint.absoluteString == "http://127.0.0.1:9000" && local.key("sha256/ab/cd") == "team/registry/sha256/ab/cd")
        let aws = try S3Location(parsing: "s3://graft-blobs")
        #expect(
            aws.endpoint.absoluteString == "https://s3.us-east-1.amazonaws.com" && !aws.pathStyle && aws.prefix == "" && aws.key("x") == "x"
        )
        #expect(try S3Location(parsing: "s3://b-1/p?endpoint=https://minio.lan&path_style=false").pathStyle == false)
        let client = S3Client(location: aws, credentials: Self.credentials)
        #expect(
            client.address(key: "sha256/ab").host == "graft-blobs.s3.us-east-1.amazonaws.com"
                && client.address(key: "sha256/ab").path == "/sha256/ab")
        let pathStyle = S3Client(location: local, credentials: Self.credentials).address(key: "a b")
        #expect(pathStyle.host == "127.0.0.1:9000" && pathStyle.path == "/graft-blobs/a%20b")
        for bad in [
            "http://bucket", "s3://", "s3://UPPER", "s3://ab", "s3://b_u", "s3://bucket/../x", "s3://bucket/a b",
            "s3://bucket?endpoint=ftp://x",
            "s3://bucket?endpoint=http://h/path", "s3://bucket?color=red", "s3://bucket?region=EU", "s3://bucket?path_style=maybe",
        ] {
            #expect(throws: S3Error.self, "\(bad)") { try S3Location(parsing: bad) }
        }
    }

    @Test("every prepared request sends x-amz-content-sha256 with the body's hash and signs it (moto does not check)")
    func contentHashSigned() throws {
        let location = try S3Location(parsing: "s3://graft-blobs/team?endpoint=http://127.0.0.1:9000")
        let client = S3Client(location: location, credentials: Self.credentials)
        func signedHeaders(_ prepared: S3Client.Prepared) -> [String] {
            let authorization = prepared.headers.first { $0.name == "Authorization" }?.value ?? ""
            let list = authorization.components(separatedBy: "SignedHeaders=").last?.components(separatedBy: ",").first ?? ""
            return list.components(separatedBy: ";")
        }
        func contentHash(_ prepared: S3Client.Prepared) -> [String] {
            prepared.headers.filter { $0.name.lowercased() == "x-amz-content-sha256" }.map(\.value)
        }
        let body = Array("tensor bytes".utf8)
        let put = client.prepare("PUT", key: "blobs/x", query: "", headers: [], body: body, payloadHash: nil)
        #expect(contentHash(put) == [SigV4Signer.hex(SHA256.hash(data: body))], "the body's own SHA-256, once")
        #expect(signedHeaders(put).contains("x-amz-content-sha256") && signedHeaders(put).contains("host"))
        // A blob's PUT signs with its digest, known before sending: S3 then refuses damaged bytes.
        let digest = String(repeating: "ab", count: 32)
        let blob = client.prepare("PUT", key: "blobs/y", query: "", headers: [], body: body, payloadHash: digest)
        #expect(contentHash(blob) == [digest] && signedHeaders(blob).contains("x-amz-content-sha256"))
        let get = client.prepare("GET", key: "blobs/x", query: "", headers: [("Range", "bytes=0-3")], body: nil, payloadHash: nil)
        #expect(contentHash(get) == [SigV4Signer.emptyPayloadHash] && signedHeaders(get).contains("x-amz-content-sha256"))
        #expect(signedHeaders(get).contains("range"), "the headers given are signed too")
    }

    @Test("put, ranged get, head, delete, paged listing and multipart upload, against a real S3 protocol server")
    func objects() async throws {
        let moto = try MotoServer()
        defer { moto.stop() }
        let location = S3Location(bucket: "graft-test", prefix: "reg", endpoint: moto.url)
        let client = S3Client(location: location, credentials: Self.credentials)
        try await client.createBucket()
        try await client.createBucket()  // ours already: fine

        var generator = SeededGenerator(seed: 3)
        let bytes = randomBytes(100_000, using: &generator)
        let key = location.key("sha256/aa/" + sha256Hex(bytes))
        try await client.put(key, body: bytes, sha256: sha256Hex(bytes))
        #expect(try await client.get(key) == bytes)
        #expect(try await client.get(key, range: 10...19) == Array(bytes[10...19]))
        #expect(try await client.get(key, range: 99_990...99_999) == Array(bytes[99_990...]))
        #expect(try await client.head(key) == 100_000)
        #expect(try await client.head(location.key("missing")) == nil)
        #expect(try await client.get(location.key("missing")) == nil)

        // Listing: every key under the prefix, across pages; nothing outside it.
        try await client.put("elsewhere/x", body: [1])
        for index in 0..<7 { try await client.put(location.key("many/\(index)"), body: [UInt8](repeating: UInt8(index), count: index)) }
        let listed = try await client.list(prefix: location.key("many/"), pageSize: 3)
        #expect(listed.map(\.key) == (0..<7).map { location.key("many/\($0)") })
        #expect(listed.map(\.size) == Array(0..<7) && listed.allSatisfy { abs($0.lastModified.timeIntervalSinceNow) < 600 })
        #expect(try await client.list(prefix: location.key("")).count == 8)

        try await client.delete(key)
        #expect(try await client.head(key) == nil)
        try await client.delete(key)  // already gone: fine

        // Multipart: two 5 MiB parts and a short last one, assembled in order.
        let big = randomBytes(11 << 20, using: &generator)
        let bigKey = location.key("big")
        let upload = try await client.createMultipartUpload(bigKey)
        var etags: [String] = []
        for (number, start) in stride(from: 0, to: big.count, by: 5 << 20).enumerated() {
            etags.append(
                try await client.uploadPart(
                    bigKey, uploadID: upload, number: number + 1, body: Array(big[start..<min(start + (5 << 20), big.count)])))
        }
        #expect(try await client.head(bigKey) == nil, "nothing visible before completion")
        try await client.completeMultipartUpload(bigKey, uploadID: upload, parts: etags)
        #expect(try await client.head(bigKey) == big.count)
        #expect(try await client.get(bigKey, range: (5 << 20) - 4...(5 << 20) + 3) == Array(big[((5 << 20) - 4)...((5 << 20) + 3)]))
        // An abandoned upload leaves nothing; a part too small (not the last) is refused by the protocol.
        let abandoned = try await client.createMultipartUpload(location.key("abandoned"))
        _ = try await client.uploadPart(location.key("abandoned"), uploadID: abandoned, number: 1, body: [1, 2, 3])
        try await client.abortMultipartUpload(location.key("abandoned"), uploadID: abandoned)
        #expect(try await client.head(location.key("abandoned")) == nil)
        let small = try await client.createMultipartUpload(location.key("small"))
        let parts = [
            try await client.uploadPart(location.key("small"), uploadID: small, number: 1, body: [1]),
            try await client.uploadPart(location.key("small"), uploadID: small, number: 2, body: [2]),
        ]
        await #expect(throws: S3Error.self) {
            try await client.completeMultipartUpload(location.key("small"), uploadID: small, parts: parts)
        }
    }

    @Test("errors carry S3's status and code; an unreachable endpoint is a retryable error")
    func errors() async throws {
        let moto = try MotoServer()
        defer { moto.stop() }
        let client = S3Client(
            location: S3Location(bucket: "no-such-bucket", endpoint: moto.url), credentials: Self.credentials, client: Self.quickClient)
        do {
            try await client.put("k", body: [1])
            Issue.record("a put into a missing bucket succeeded")
        } catch {
            #expect(error == .service(status: 404, code: "NoSuchBucket", message: error.message) && !error.isRetryable)
        }
        moto.stop()
        do {
            _ = try await client.head("k")
            Issue.record("a stopped server answered")
        } catch {
            guard case .unreachable = error else { Issue.record("\(error)"); return }
            #expect(error.isRetryable)
        }
    }
}

extension S3Error {
    var message: String {
        if case .service(_, _, let message) = self { return message }
        return ""
    }
}
