import Crypto
import Foundation

/// What a token may do. Each scope includes the ones before it.
public enum TokenScope: String, Sendable, Codable, CaseIterable, Comparable {
    /// Lists, shows, downloads, best, lineage: everything that reads.
    case read
    /// Also creates models, commits checkpoints, logs metrics and curves, tags.
    case write
    /// Also removes, prunes, runs gc and manages advisories.
    case admin

    public static func < (a: TokenScope, b: TokenScope) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// A token as `graft token list` shows it: never its secret, which is stored only as a hash.
public struct TokenInfo: Sendable, Codable, Equatable {
    public var name: String
    public var scope: TokenScope
    /// A glob over model names (`sweep-*`): the token sees only the models it matches.
    /// `nil`: every model.
    public var models: String?
    public var createdAt: String

    package init(name: String, scope: TokenScope, models: String?, createdAt: String) {
        (self.name, self.scope, self.models, self.createdAt) = (name, scope, models, createdAt)
    }

    /// What the token may see: every model, or those its pattern matches.
    public var visibility: ModelVisibility { ModelVisibility(pattern: models) }

    /// Whether the token may see (and, with the scope, act on) this model.
    public func covers(_ model: ModelName) -> Bool { visibility.shows(model.value) }
}

/// What `graft token create` answers: the token, and its secret, shown this once.
public struct CreatedToken: Sendable, Codable, Equatable {
    public var name: String
    public var scope: TokenScope
    public var models: String?
    /// `graft_` and 43 characters of base64url: 256 random bits.
    public var token: String
}

/// How secrets are made and stored. A secret carries 256 random bits, so one SHA-256 is enough
/// to store it (no salt or slow hash is needed against guessing: there is nothing to guess
/// from); the database never holds a secret in clear.
package enum TokenSecret {
    static let prefix = "graft_"
    /// A web session's id: as random as a token, and never accepted as one.
    static let sessionPrefix = "graftsession_"

    static func generate(prefix: String = prefix) -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        let base64 = Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        return prefix + base64
    }

    /// The stored form of a secret, or `nil` for text that cannot be a secret (checked before
    /// any lookup, so malformed tokens cost no query).
    package static func hash(_ secret: String, prefix: String = prefix) -> [UInt8]? {
        let utf8 = Array(secret.utf8)
        guard utf8.count == prefix.utf8.count + 43, secret.hasPrefix(prefix),
            utf8.dropFirst(prefix.utf8.count).allSatisfy({ isBase64URL($0) })
        else { return nil }
        return Array(SHA256.hash(data: utf8))
    }

    private static func isBase64URL(_ byte: UInt8) -> Bool {
        (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x2D || byte == 0x5F
    }
}

extension Registry {
    /// Creates a token for `graft serve`: its secret is returned this once and stored hashed.
    ///
    /// - Parameters:
    ///   - name: a label (same rules as a model name), unique among active tokens.
    ///   - models: a glob over model names confining the token; `nil` for every model.
    /// - Throws: ``GraftError/tokenExists(_:)``, ``GraftError/invalidName(_:reason:)``.
    public func createToken(name: String, scope: TokenScope, models: String? = nil) async throws(GraftError) -> CreatedToken {
        _ = try ModelName(name)
        if let models {
            guard !models.isEmpty, models.utf8.count <= 200, models.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
            else {
                throw .invalidName(models, reason: "a model pattern is 1 to 200 printable characters (a glob such as `sweep-*`)")
            }
        }
        let secret = TokenSecret.generate()
        let info = TokenInfo(name: name, scope: scope, models: models, createdAt: timestamp())
        try await metadata.insertToken(info, hash: TokenSecret.hash(secret)!)
        return CreatedToken(name: name, scope: scope, models: models, token: secret)
    }

    /// The active tokens, by name (never their secrets).
    public func tokens() async throws(GraftError) -> [TokenInfo] {
        try await metadata.tokens()
    }

    /// Revokes a token at once: the next request that presents it is refused.
    /// - Throws: ``GraftError/tokenNotFound(_:)``.
    public func revokeToken(_ name: String) async throws(GraftError) {
        guard try await metadata.revokeToken(named: name, at: timestamp()) else { throw .tokenNotFound(name) }
    }

    /// The active token with this secret, or `nil` (unknown, revoked or malformed).
    public func authenticate(_ secret: String) async throws(GraftError) -> TokenInfo? {
        guard let hash = TokenSecret.hash(secret) else { return nil }
        return try await metadata.token(hash: hash)
    }
}

/// How long a web session lives: `idle` since its last request, `lifetime` since it opened.
public struct SessionExpiry: Sendable, Equatable {
    public var idle: Double
    public var lifetime: Double
    /// Eight hours idle, seven days in all.
    public init(idle: Double = 8 * 3600, lifetime: Double = 7 * 86400) { (self.idle, self.lifetime) = (idle, lifetime) }

    /// Whether a session opened at `created` and last used at `lastSeen` is live at `now`.
    package func isLive(created: Double, lastSeen: Double, now: Double) -> Bool {
        now - lastSeen < idle && now - created < lifetime
    }
}

extension Registry {
    /// Signs in with a token's secret: opens a session for it and answers the session's id
    /// (random, stored only as its SHA-256), or `nil` when the token is unknown, revoked or
    /// malformed. The id is what the browser keeps; it is never an API credential.
    public func openSession(secret: String, expiry: SessionExpiry, now: Double? = nil) async throws(GraftError) -> String? {
        guard let tokenHash = TokenSecret.hash(secret) else { return nil }
        let id = TokenSecret.generate(prefix: TokenSecret.sessionPrefix)
        let hash = TokenSecret.hash(id, prefix: TokenSecret.sessionPrefix)!
        let opened = try await metadata.insertSession(
            hash: hash, tokenHash: tokenHash, now: now ?? Date().timeIntervalSince1970, expiry: expiry)
        return opened ? id : nil
    }

    /// The token of a live session, or `nil` (unknown, expired, signed out, token revoked).
    public func session(_ id: String, expiry: SessionExpiry, now: Double? = nil) async throws(GraftError) -> TokenInfo? {
        let now = now ?? Date().timeIntervalSince1970
        guard let hash = TokenSecret.hash(id, prefix: TokenSecret.sessionPrefix) else { return nil }
        return try await metadata.session(hash: hash, now: now, expiry: expiry)
    }

    /// Signs a session out.
    public func closeSession(_ id: String) async throws(GraftError) {
        guard let hash = TokenSecret.hash(id, prefix: TokenSecret.sessionPrefix) else { return }
        try await metadata.deleteSession(hash: hash)
    }
}
