import Crypto
import Foundation
import Testing

@testable import GraftS3

/// One case of AWS's SigV4 test suite (sigv4-suite/README.md): the request and what signing
/// it must produce.
struct SuiteCase: CustomStringConvertible {
    let name: String
    let directory: URL
    var description: String { name }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("sigv4-suite")

    static var all: [SuiteCase] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return names.filter { FileManager.default.fileExists(atPath: root.appendingPathComponent($0 + "/request.txt").path) }.sorted()
            .map { SuiteCase(name: $0, directory: root.appendingPathComponent($0)) }
    }

    func text(_ file: String) throws -> String { try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8) }

    /// `request.txt`: `METHOD PATH[?QUERY] HTTP/1.1`, headers (a line starting with whitespace
    /// continues the previous value), a blank line, the body.
    func request() throws -> (method: String, path: String, query: String, headers: [(name: String, value: String)], body: Data) {
        let raw = try text("request.txt")
        let (head, body) = raw.range(of: "\n\n").map { (String(raw[..<$0.lowerBound]), String(raw[$0.upperBound...])) } ?? (raw, "")
        var lines = head.components(separatedBy: "\n")
        let requestLine = lines.removeFirst()
        let target = requestLine.split(separator: " ").dropFirst().dropLast().joined(separator: " ")
        let (path, query) =
            target.firstIndex(of: "?").map { (String(target[..<$0]), String(target[target.index(after: $0)...])) } ?? (target, "")
        var headers: [(name: String, value: String)] = []
        for line in lines where !line.isEmpty {
            if line.first == " " || line.first == "\t", !headers.isEmpty {
                headers[headers.count - 1].value += " " + line.trimmingCharacters(in: .whitespaces)
            } else if let colon = line.firstIndex(of: ":") {
                headers.append((String(line[..<colon]), String(line[line.index(after: colon)...])))
            }
        }
        return (String(requestLine.split(separator: " ")[0]), path, query, headers, Data(body.utf8))
    }

    func context() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(try text("context.json").utf8)) as? [String: Any] ?? [:]
    }
}

@Suite("AWS Signature Version 4: the published test suite, and S3's documented examples")
struct SigV4Tests {
    @Test("the suite is all here")
    func suitePresent() {
        #expect(SuiteCase.all.count == 38)
    }

    @Test("canonical request, string to sign, signature and Authorization header, byte for byte", arguments: SuiteCase.all)
    func suite(_ testCase: SuiteCase) throws {
        let context = try testCase.context()
        let credentials = context["credentials"] as? [String: Any] ?? [:]
        let signer = SigV4Signer(
            credentials: AWSCredentials(
                accessKeyID: credentials["access_key_id"] as? String ?? "",
                secretAccessKey: credentials["secret_access_key"] as? String ?? "",
                sessionToken: credentials["token"] as? String),
            region: context["region"] as? String ?? "", service: context["service"] as? String ?? "",
            normalizePath: context["normalize"] as? Bool ?? true, signSessionToken: !(context["omit_session_token"] as? Bool ?? false))
        let request = try testCase.request()
        let date = ISO8601DateFormatter().date(from: context["timestamp"] as? String ?? "")!
        let payloadHash = SigV4Signer.hex(SHA256.hash(data: request.body))
        let signed = signer.sign(
            method: request.method, path: request.path, query: request.query, headers: request.headers, payloadHash: payloadHash,
            date: date,
            addContentHash: context["sign_body"] as? Bool ?? false)
        #expect(signed.canonicalRequest == (try testCase.text("header-canonical-request.txt")))
        #expect(signed.stringToSign == (try testCase.text("header-string-to-sign.txt")))
        #expect(signed.signature == (try testCase.text("header-signature.txt")).trimmingCharacters(in: .whitespacesAndNewlines))
        let expectedAuthorization = try testCase.text("header-signed-request.txt").components(separatedBy: "\n")
            .first { $0.hasPrefix("Authorization:") }.map { String($0.dropFirst("Authorization:".count)) }
        #expect(signed.authorization == expectedAuthorization)
    }

    /// The GET Object example of the S3 documentation ("Signature Calculations for the
    /// Authorization Header: Transferring Payload in a Single Chunk"): the first ten bytes of
    /// `test.txt` from `examplebucket`, with the documentation's example credentials.
    @Test("S3's documented GET Object example: a ranged read, path not normalised, the empty payload's hash")
    func s3GetObject() {
        let signer = SigV4Signer.s3(
            credentials: AWSCredentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            region: "us-east-1")
        let date = ISO8601DateFormatter().date(from: "2013-05-24T00:00:00Z")!
        let signed = signer.sign(
            method: "GET", path: "/test.txt", headers: [("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9")],
            payloadHash: SigV4Signer.emptyPayloadHash, date: date, addContentHash: true)
        #expect(
            signed.canonicalRequest == """
                GET
                /test.txt

                host:examplebucket.s3.amazonaws.com
                range:bytes=0-9
                x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                x-amz-date:20130524T000000Z

                host;range;x-amz-content-sha256;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """)
        #expect(signed.stringToSign.hasSuffix("7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"))
        #expect(signed.signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        #expect(signed.headers.map(\.name) == ["X-Amz-Date", "X-Amz-Content-Sha256", "Authorization"])
    }

    @Test("credentials come from the environment, the session token optional; a missing key or secret is none")
    func environment() {
        #expect(
            AWSCredentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "s"])
                == AWSCredentials(accessKeyID: "id", secretAccessKey: "s"))
        #expect(
            AWSCredentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"])?
                .sessionToken == "t")
        #expect(AWSCredentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "id"]) == nil)
        #expect(AWSCredentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "s"]) == nil)
    }

    @Test("percent-encoding keeps only the unreserved characters, as UTF-8 bytes in upper-case hex")
    func encoding() {
        #expect(SigV4Signer.encode("a-b_c.d~e") == "a-b_c.d~e")
        #expect(SigV4Signer.encode("a b/c+d=é") == "a%20b%2Fc%2Bd%3D%C3%A9")
        #expect(SigV4Signer.canonicalQuery("b=2&a=%20x&a=1&c") == "a=%20x&a=1&b=2&c=")
    }
}
