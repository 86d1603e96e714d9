import GRDB
import GraftCore
import GraftLocal

extension Migration {
    /// Every migration of `migrations/` this build knows, in order.
    static let all: [Migration] = Migration.list(embeddedMigrations)
    static var newest: Int { all.last?.version ?? 0 }
}

/// Applies migrations, one transaction each, recording version, name and checksum.
///
/// Every step takes the write lock first (`BEGIN IMMEDIATE`), so two processes opening a new
/// registry at once serialise: the second finds the work done.
enum SchemaMigrator {
    static let createLedger = """
        CREATE TABLE IF NOT EXISTS graft_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            checksum   TEXT NOT NULL,
            applied_at TEXT NOT NULL
        )
        """

    /// Brings the database up to date, or refuses a registry from a newer or different build.
    static func migrate(_ pool: DatabasePool, path: String) throws {
        // Read first: an up-to-date registry needs no write lock (and may be read-only).
        let upToDate = try pool.read { db -> Bool in
            guard try db.tableExists("graft_migrations") else { return false }
            return try pending(db, path: path) == nil
        }
        if upToDate { return }
        while true {
            let applied = try pool.writeWithoutTransaction { db -> Bool in
                var didApply = false
                // A migration that rebuilds a table (SQLite's documented procedure) runs with
                // foreign keys off, which only takes effect outside a transaction; every
                // reference is checked before the migration commits.
                try db.execute(sql: "PRAGMA foreign_keys = OFF")
                defer { try? db.execute(sql: "PRAGMA foreign_keys = ON") }
                try db.inTransaction(.immediate) {
                    try db.execute(sql: createLedger)
                    guard let next = try pending(db, path: path) else { return .commit }
                    try db.execute(sql: next.sql)
                    if let broken = try Row.fetchOne(db, sql: "PRAGMA foreign_key_check") {
                        throw DatabaseError(
                            resultCode: .SQLITE_CONSTRAINT_FOREIGNKEY,
                            message: "migration \(next.version) breaks a foreign key of table \(broken[0] as String? ?? "?")")
                    }
                    try db.execute(
                        sql: "INSERT INTO graft_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                        arguments: [next.version, next.name, next.checksum, timestamp()])
                    didApply = true
                    return .commit
                }
                return didApply
            }
            if !applied { return }
        }
    }

    /// The first migration not yet applied, after checking the applied ones.
    private static func pending(_ db: Database, path: String) throws -> Migration? {
        let rows = try Row.fetchAll(db, sql: "SELECT version, name, checksum FROM graft_migrations ORDER BY version")
        return try Migration.pending(
            applied: rows.map { (version: $0["version"], name: $0["name"], checksum: $0["checksum"]) }, known: Migration.all, location: path
        )
    }
}
