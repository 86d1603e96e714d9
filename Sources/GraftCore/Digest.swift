import Crypto

/// A SHA-256 digest, written `sha256:` followed by 64 lowercase hex digits.
///
/// ```swift
/// let digest = try Digest(parsing: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
/// print(digest.hex.prefix(12))
/// ```
public struct Digest: Sendable, Hashable, Comparable, CustomStringConvertible, Codable {
    /// The 64 lowercase hex digits.
    public let hex: String

    /// Parses `sha256:<64 hex>` (or the bare 64 hex digits).
    ///
    /// - Throws: ``GraftError/invalidReference(_:reason:)`` for anything else.
    public init(parsing text: String) throws(GraftError) {
        let body = text.hasPrefix("sha256:") ? String(text.dropFirst(7)) : text
        guard body.utf8.count == 64, body.utf8.allSatisfy(isLowerHex) else {
            throw .invalidReference(text, reason: "a digest is `sha256:` followed by 64 lowercase hex digits")
        }
        hex = body
    }

    package init(bytes: some Sequence<UInt8>) {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        hex = String(decoding: out, as: UTF8.self)
    }

    init(_ digest: SHA256.Digest) { self.init(bytes: digest) }

    /// The digest of `bytes`.
    public static func of(_ bytes: some Sequence<UInt8>) -> Digest {
        var hasher = SHA256()
        hasher.update(data: Array(bytes))
        return Digest(hasher.finalize())
    }

    /// The 32 raw bytes.
    var rawBytes: [UInt8] {
        let utf8 = Array(hex.utf8)
        return (0..<32).map { i in hexValue(utf8[2 * i]) << 4 | hexValue(utf8[2 * i + 1]) }
    }

    public var description: String { "sha256:" + hex }
    /// `sha256:` and the first 12 hex digits, for display.
    public var short: String { "sha256:" + hex.prefix(12) }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.hex < rhs.hex }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        self = try Digest(parsing: text)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

func isLowerHex(_ byte: UInt8) -> Bool {
    (byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x66)
}

private func hexValue(_ byte: UInt8) -> UInt8 {
    byte <= 0x39 ? byte - 0x30 : byte - 0x61 + 10
}
