import Crypto
public import Foundation

/// AWS credentials: from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, for temporary
/// credentials, `AWS_SESSION_TOKEN`.
public struct AWSCredentials: Sendable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        (self.accessKeyID, self.secretAccessKey, self.sessionToken) = (accessKeyID, secretAccessKey, sessionToken)
    }

    /// The credentials of the environment, or `nil` when the key id or the secret is missing.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> AWSCredentials? {
        guard let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty, let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty
        else { return nil }
        let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        return AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
    }
}

/// AWS Signature Version 4 for requests signed in the `Authorization` header
/// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html):
/// a canonical request (method, canonical path, sorted query, lower-cased sorted headers with
/// trimmed values, the signed header names, the payload's SHA-256), a string to sign over its
/// hash with the date and scope, and an HMAC-SHA256 chain from the secret through date,
/// region, service and `aws4_request`. Proved against AWS's published test suite (`SigV4Tests`).
public struct SigV4Signer: Sendable {
    public var credentials: AWSCredentials
    public var region: String
    public var service: String
    /// Remove `.`/`..` segments and repeated slashes from the path before encoding it (every
    /// service but S3; S3 signs the path exactly as sent).
    public var normalizePath: Bool
    /// Sign `x-amz-security-token` (false: it is added to the request unsigned, as STS wants).
    public var signSessionToken: Bool

    public init(credentials: AWSCredentials, region: String, service: String, normalizePath: Bool = true, signSessionToken: Bool = true) {
        (self.credentials, self.region, self.service) = (credentials, region, service)
        (self.normalizePath, self.signSessionToken) = (normalizePath, signSessionToken)
    }

    /// A signer for S3: no path normalisation.
    public static func s3(credentials: AWSCredentials, region: String) -> SigV4Signer {
        SigV4Signer(credentials: credentials, region: region, service: "s3", normalizePath: false)
    }

    /// What signing produced: the headers to add, and the intermediate strings (for tests and
    /// for debugging a refused signature).
    public struct Signed: Sendable, Equatable {
        /// `x-amz-date`, `x-amz-security-token` (when there is one), `x-amz-content-sha256`
        /// (when asked for) and `Authorization`, in that order.
        public var headers: [(name: String, value: String)]
        public var canonicalRequest: String
        public var stringToSign: String
        public var signature: String
        public var authorization: String

        public static func == (a: Signed, b: Signed) -> Bool {
            a.headers.map { "\($0.name):\($0.value)" } == b.headers.map { "\($0.name):\($0.value)" }
                && a.canonicalRequest == b.canonicalRequest
                && a.signature == b.signature
        }
    }

    /// The hash an empty payload signs with.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    /// What S3 accepts in place of the payload's hash (the body is then not covered by the signature).
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"

    /// Signs a request.
    /// - Parameters:
    ///   - path: the path as it goes on the wire, not yet percent-encoded (`/bucket/key`).
    ///   - query: the raw query string (`a=1&b=2`, percent-encoded or not; decoded, then
    ///     re-encoded canonically).
    ///   - headers: the request's headers, `Host` included (repeated names allowed).
    ///   - payloadHash: the body's SHA-256 in hex, or ``unsignedPayload``.
    ///   - addContentHash: also send and sign `x-amz-content-sha256` (S3 requires it).
    public func sign(
        method: String, path: String, query: String = "", headers: [(name: String, value: String)], payloadHash: String, date: Date,
        addContentHash: Bool
    ) -> Signed {
        let (stamp, day) = Self.timestamps(date)
        var added: [(name: String, value: String)] = [("X-Amz-Date", stamp)]
        var signedInput = headers + added
        if let token = credentials.sessionToken {
            added.append(("X-Amz-Security-Token", token))
            if signSessionToken { signedInput.append(("X-Amz-Security-Token", token)) }
        }
        if addContentHash {
            added.append(("X-Amz-Content-Sha256", payloadHash))
            signedInput.append(("X-Amz-Content-Sha256", payloadHash))
        }
        // Headers: lower-cased names, sorted; values trimmed, inner runs of spaces collapsed;
        // a repeated name's values joined by commas in their order.
        var values: [String: [String]] = [:]
        for (name, value) in signedInput { values[name.lowercased(), default: []].append(Self.trimmed(value)) }
        let names = values.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(values[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        let canonicalRequest = [
            method, Self.canonicalPath(path, normalize: normalizePath), Self.canonicalQuery(query), canonicalHeaders, signedHeaders,
            payloadHash,
        ].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = ["AWS4-HMAC-SHA256", stamp, scope, Self.hex(SHA256.hash(data: Data(canonicalRequest.utf8)))].joined(
            separator: "\n")
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: signingKey(day: day)))
        let authorization =
            "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
        added.append(("Authorization", authorization))
        return Signed(
            headers: added, canonicalRequest: canonicalRequest, stringToSign: stringToSign, signature: signature,
            authorization: authorization)
    }

    /// HMAC("AWS4" + secret, day) → region → service → "aws4_request".
    func signingKey(day: String) -> SymmetricKey {
        var key = SymmetricKey(data: Data(("AWS4" + credentials.secretAccessKey).utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        return key
    }

    /// `20150830T123600Z` and `20150830`, in UTC.
    static func timestamps(_ date: Date) -> (String, String) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        let day = String(format: "%04d%02d%02d", c.year!, c.month!, c.day!)
        return (day + String(format: "T%02d%02d%02dZ", c.hour!, c.minute!, c.second!), day)
    }

    static func trimmed(_ value: String) -> String {
        var out = ""
        var space = false
        for character in value.trimmingCharacters(in: .whitespaces) {
            if character == " " || character == "\t" {
                space = true
                continue
            }
            if space, !out.isEmpty { out.append(" ") }
            space = false
            out.append(character)
        }
        return out
    }

    /// The path, normalised if asked, each segment percent-encoded (unreserved kept, `/` kept).
    static func canonicalPath(_ path: String, normalize: Bool) -> String {
        var text = path.isEmpty ? "/" : path
        if normalize {
            var segments: [Substring] = []
            for segment in text.split(separator: "/", omittingEmptySubsequences: true) {
                switch segment {
                case ".": continue
                case "..": _ = segments.popLast()
                default: segments.append(segment)
                }
            }
            let trailing = text.hasSuffix("/") || text.hasSuffix("/.") || text.hasSuffix("/..")
            text = "/" + segments.joined(separator: "/") + (trailing && !segments.isEmpty ? "/" : "")
        }
        return text.split(separator: "/", omittingEmptySubsequences: false).map { encode(String($0)) }.joined(separator: "/")
    }

    /// Parameters decoded, re-encoded strictly, sorted by name then value, joined with `&`.
    static func canonicalQuery(_ query: String) -> String {
        guard !query.isEmpty else { return "" }
        var pairs: [(String, String)] = []
        for item in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let value = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
            pairs.append((encode(name), encode(value)))
        }
        return pairs.sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }

    /// RFC 3986 percent-encoding: everything but `A–Z a–z 0–9 - . _ ~`, as UTF-8 bytes, upper-case hex.
    public static func encode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
