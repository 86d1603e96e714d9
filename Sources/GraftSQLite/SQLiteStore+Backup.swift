import Foundation
import GRDB
package import GraftCore
import GraftLocal

extension SQLiteMetadataStore {
    /// Copies the database, as of one moment, to a new file at `path` with SQLite's online
    /// backup API (one read transaction on this pool: writers go on meanwhile, in WAL), switches
    /// the copy to WAL as a registry's database is, flushes it, and returns the blobs stored as
    /// files that the copy refers to (its `blobs` rows without inline bytes).
    /// - Throws: ``GraftError/outputExists(path:)`` when `path` exists; the store's errors.
    package func snapshot(to path: String) async throws(GraftError) -> [(digest: Digest, length: Int)] {
        if FileSystem.fileExists(path) { throw .outputExists(path: path) }
        let pool = self.pool
        return try await offload { () throws(GraftError) -> [(digest: Digest, length: Int)] in
            do {
                let copy = try DatabaseQueue(path: path)
                try pool.backup(to: copy)
                try copy.writeWithoutTransaction { db in _ = try String.fetchOne(db, sql: "PRAGMA journal_mode = WAL") }
                let rows = try copy.read { db in
                    try Row.fetchAll(db, sql: "SELECT digest, byte_length FROM blobs WHERE inline_data IS NULL ORDER BY digest")
                }
                try copy.close()
                return try rows.map { row in (try Digest(parsing: row["digest"]), row["byte_length"]) }
            } catch {
                throw Self.mapError(error, path: path)
            }
        }
    }
}
