import Foundation
import GRDB
package import GraftCore

extension SQLiteMetadataStore {
    package func insertToken(_ token: TokenInfo, hash: [UInt8]) async throws(GraftError) {
        try await write { db in
            if try db.cachedOne(Bool.self, sql: "SELECT 1 FROM tokens WHERE name = ? AND revoked_at IS NULL", arguments: [token.name])
                != nil
            {
                throw GraftError.tokenExists(token.name)
            }
            try db.execute(
                sql: "INSERT INTO tokens (name, secret_hash, scope, models, created_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [token.name, Data(hash), token.scope.rawValue, token.models, token.createdAt])
        }
    }

    package func tokens() async throws(GraftError) -> [TokenInfo] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT name, scope, models, created_at FROM tokens WHERE revoked_at IS NULL ORDER BY name").map(
                Self.token)
        }
    }

    package func revokeToken(named name: String, at time: String) async throws(GraftError) -> Bool {
        try await write { db in
            try db.execute(sql: "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", arguments: [time, name])
            let revoked = db.changesCount > 0
            // Its sessions end with it (a lookup also requires an active token).
            try db.execute(
                sql: "DELETE FROM sessions WHERE token_id IN (SELECT id FROM tokens WHERE name = ? AND revoked_at = ?)",
                arguments: [name, time])
            return revoked
        }
    }

    package func token(hash: [UInt8]) async throws(GraftError) -> TokenInfo? {
        try await read { db in
            try Row.fetchOne(
                db, sql: "SELECT name, scope, models, created_at FROM tokens WHERE secret_hash = ? AND revoked_at IS NULL",
                arguments: [Data(hash)]
            ).map(Self.token)
        }
    }

    package func insertSession(hash: [UInt8], tokenHash: [UInt8], now: Double, expiry: SessionExpiry) async throws(GraftError) -> Bool {
        try await write { db in
            try db.execute(
                sql: "DELETE FROM sessions WHERE last_seen <= ? OR created_at <= ?", arguments: [now - expiry.idle, now - expiry.lifetime])
            try db.execute(
                sql: """
                    INSERT INTO sessions (id_hash, token_id, created_at, last_seen)
                    SELECT ?, id, ?, ? FROM tokens WHERE secret_hash = ? AND revoked_at IS NULL
                    """, arguments: [Data(hash), now, now, Data(tokenHash)])
            return db.changesCount > 0
        }
    }

    package func session(hash: [UInt8], now: Double, expiry: SessionExpiry) async throws(GraftError) -> TokenInfo? {
        let found = try await read { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT t.name, t.scope, t.models, t.created_at, s.created_at AS opened, s.last_seen
                    FROM sessions s JOIN tokens t ON t.id = s.token_id WHERE s.id_hash = ? AND t.revoked_at IS NULL
                    """, arguments: [Data(hash)]
            ).map { row in (token: Self.token(row), opened: row["opened"] as Double, lastSeen: row["last_seen"] as Double) }
        }
        guard let found, expiry.isLive(created: found.opened, lastSeen: found.lastSeen, now: now) else { return nil }
        // The last use moves at most once a minute: a page view is not a write each time.
        if now - found.lastSeen >= 60 {
            try await write { db in
                try db.execute(sql: "UPDATE sessions SET last_seen = ? WHERE id_hash = ?", arguments: [now, Data(hash)])
            }
        }
        return found.token
    }

    package func deleteSession(hash: [UInt8]) async throws(GraftError) {
        try await write { db in try db.execute(sql: "DELETE FROM sessions WHERE id_hash = ?", arguments: [Data(hash)]) }
    }

    package func inlineBytes(_ digests: [Digest]) async throws(GraftError) -> [Digest: [UInt8]] {
        guard !digests.isEmpty else { return [:] }
        return try await read { db in
            var found: [Digest: [UInt8]] = [:]
            for start in stride(from: 0, to: digests.count, by: 500) {
                let batch = digests[start..<min(start + 500, digests.count)]
                let placeholders = Array(repeating: "?", count: batch.count).joined(separator: ",")
                let rows = try Row.fetchAll(
                    db, sql: "SELECT digest, inline_data FROM blobs WHERE inline_data IS NOT NULL AND digest IN (\(placeholders))",
                    arguments: StatementArguments(batch.map(\.hex)))
                for row in rows {
                    if let digest = try? Digest(parsing: row["digest"] as String), let data = row["inline_data"] as Data? {
                        found[digest] = Array(data)
                    }
                }
            }
            return found
        }
    }

    package func digests(_ digests: [Digest], referencedByModelsMatching models: String) async throws(GraftError) -> Set<Digest> {
        guard !digests.isEmpty else { return [] }
        let pattern = Array(models.unicodeScalars)
        return try await read { db in
            var visible = Set<Digest>()
            // In batches under SQLite's bound-parameter limit; each digest is one index probe.
            for start in stride(from: 0, to: digests.count, by: 500) {
                let batch = digests[start..<min(start + 500, digests.count)]
                let placeholders = Array(repeating: "?", count: batch.count).joined(separator: ",")
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT DISTINCT ct.blob_digest AS digest, m.name AS name
                        FROM blob_references ct JOIN checkpoints c ON c.id = ct.checkpoint_id JOIN models m ON m.id = c.model_id
                        WHERE ct.blob_digest IN (\(placeholders))
                        """, arguments: StatementArguments(batch.map(\.hex)))
                for row in rows where Glob.matches(pattern, Array((row["name"] as String).unicodeScalars)) {
                    if let digest = try? Digest(parsing: row["digest"] as String) { visible.insert(digest) }
                }
            }
            return visible
        }
    }

    private static func token(_ row: Row) -> TokenInfo {
        TokenInfo(
            name: row["name"], scope: TokenScope(rawValue: row["scope"]) ?? .read, models: row["models"], createdAt: row["created_at"])
    }
}
