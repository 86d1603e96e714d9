/// One schema migration (a file of `migrations/`, or of `migrations/postgres/` for the
/// PostgreSQL store), embedded at build time by the `EmbedMigrations` plugin.
package struct Migration: Sendable {
    package let version: Int
    package let name: String
    package let sql: String
    /// SHA-256 of the SQL text; a database that recorded another checksum is refused.
    package let checksum: String

    /// The migrations of a store's embedded files (`NNNN_description.sql`), in order.
    package static func list(_ embedded: [(file: String, sql: String)]) -> [Migration] {
        embedded.map { file, sql in
            let stem = file.hasSuffix(".sql") ? file.dropLast(4) : Substring(file)
            let parts = stem.split(separator: "_", maxSplits: 1)
            let version = Int(parts[0]) ?? 0
            let name = parts.count > 1 ? String(parts[1]) : String(stem)
            return Migration(version: version, name: name, sql: sql, checksum: Digest.of(Array(sql.utf8)).hex)
        }.sorted { $0.version < $1.version }
    }

    /// The first of `known` not yet applied, after checking the ledger's rows against them:
    /// a version this build does not know means a newer Graft wrote the database, a changed
    /// checksum means a different one did.
    /// - Throws: ``GraftError/newerSchema(path:version:newestKnown:)``, ``GraftError/migrationMismatch(version:name:)``.
    package static func pending(applied: [(version: Int, name: String, checksum: String)], known: [Migration], location: String)
        throws(GraftError) -> Migration?
    {
        var done = Set<Int>()
        for row in applied {
            guard let migration = known.first(where: { $0.version == row.version }) else {
                throw .newerSchema(
                    path: location, version: applied.map(\.version).max() ?? row.version, newestKnown: known.last?.version ?? 0)
            }
            guard migration.checksum == row.checksum else { throw .migrationMismatch(version: row.version, name: row.name) }
            done.insert(row.version)
        }
        return known.first { !done.contains($0.version) }
    }
}
