import GRDB
package import GraftCore
import GraftLocal
import SafeTensors

#if canImport(Glibc)
    import Glibc
#endif

/// The metadata store of a local registry: one SQLite database (`ROOT/graft.sqlite`, WAL mode)
/// through GRDB, with the migrations of `migrations/` applied and checksummed at open.
///
/// Writes serialise on SQLite's write lock (`BEGIN IMMEDIATE`, with a busy timeout); reads run
/// on a pool of connections, each query shape in one read transaction. The large reads (a
/// subtree of 10,000 models, bulk curve inserts) step statements through SQLite's C API.
package final class SQLiteMetadataStore: MetadataStore {
    package let path: String
    let root: String
    let pool: DatabasePool
    /// Upload announcements live in this process's memory: one server serves a directory.
    let announcements = UploadAnnouncements()

    package var location: String { path }

    private init(path: String, root: String, pool: DatabasePool) {
        self.path = path
        self.root = root
        self.pool = pool
    }

    /// Opens the database of the registry at `layout`, applying pending migrations.
    ///
    /// - Throws: ``GraftError/newerSchema(path:version:newestKnown:)``, ``GraftError/migrationMismatch(version:name:)``,
    ///   ``GraftError/corruptDatabase(path:message:)`` and the errors of opening a file.
    package static func open(_ layout: RegistryLayout, durability: Registry.Durability, busyTimeout: Double) throws(GraftError)
        -> SQLiteMetadataStore
    {
        var configuration = Configuration()
        configuration.busyMode = .timeout(busyTimeout)
        configuration.foreignKeysEnabled = true
        configuration.label = "graft"
        let synchronous = durability == .full ? "FULL" : "NORMAL"
        configuration.prepareDatabase { db in
            // Acknowledged commits must survive power loss (unless a bulk load relaxed it).
            try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
            // A 32 MiB page cache per connection (SQLite's default is 2 MiB): large lineage and
            // best queries otherwise re-read their pages through pread on every call. An upper
            // bound, filled only as used. (mmap_size was tried too: no better here.)
            try db.execute(sql: "PRAGMA cache_size = -32768")
        }
        do {
            let pool = try DatabasePool(path: layout.database, configuration: configuration)
            try SchemaMigrator.migrate(pool, path: layout.root)
            return SQLiteMetadataStore(path: layout.database, root: layout.root, pool: pool)
        } catch {
            throw mapError(error, path: layout.database)
        }
    }

    /// Builds the database under `tmp/` — WAL mode switched on, every migration applied — and
    /// only then links it into place as `graft.sqlite`, so that no process ever opens a database
    /// still in rollback mode. Switching a database to WAL takes an exclusive lock *without*
    /// SQLite's busy handler: a process that opened the new file while another was switching
    /// it got "database is locked" at once (exit 69 long before the 30 s busy timeout). With
    /// the file published complete, concurrent `init`s each build one and the first link wins;
    /// the others find it in place.
    /// - Returns: whether this call's database was the one published.
    package static func publishNew(_ layout: RegistryLayout, busyTimeout: Double) throws(GraftError) -> Bool {
        let staging = layout.tmp + "/" + FileSystem.uniqueName(suffix: ".sqlite")
        defer { for suffix in ["", "-wal", "-shm"] { FileSystem.remove(staging + suffix) } }
        // Created empty and private first (it will hold token hashes): SQLite opens an empty
        // file as a new database and gives its -wal and -shm files the database's mode.
        _ = try FileDescriptor(path: staging, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600, exact: true)
        do {
            var configuration = Configuration()
            configuration.busyMode = .timeout(busyTimeout)
            let pool = try DatabasePool(path: staging, configuration: configuration)
            try SchemaMigrator.migrate(pool, path: layout.root)
            // Closing the last connection checkpoints the WAL into the file and removes it.
            try pool.close()
        } catch {
            throw mapError(error, path: staging)
        }
        try FileDescriptor(path: staging, flags: O_RDONLY).sync()
        guard link(staging, layout.database) == 0 else {
            if errno == EEXIST { return false }
            throw GraftError.fromErrno(errno, operation: "cannot create", path: layout.database)
        }
        try FileSystem.syncDirectory(layout.root)
        return true
    }

    package func announceUploads(_ blobs: [ProposedTensor], window: Duration) async throws(GraftError) {
        try await announcements.announce(blobs, window: window)
    }

    package func announcedLength(of digest: Digest) async throws(GraftError) -> Int? {
        await announcements.length(of: digest)
    }

    package func recordUploadProof(_ digest: Digest, token: String, window: Duration) async throws(GraftError) {
        try await announcements.prove(digest, token: token, window: window)
    }

    package func uploadProofs(_ digests: [Digest], token: String) async throws(GraftError) -> Set<Digest> {
        await announcements.proven(digests, token: token)
    }

    /// Runs `body` in a read transaction, mapping errors.
    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(GraftError) -> T {
        do {
            return try await pool.read(body)
        } catch {
            throw Self.mapError(error, path: path)
        }
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction, mapping errors.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(GraftError) -> T {
        do {
            return try await pool.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(db)
                    CrashPoint.tick()
                    return .commit
                }
                CrashPoint.tick()
                return result!
            }
        } catch {
            throw Self.mapError(error, path: path)
        }
    }

    /// Turns any error from SQLite or the store into the ``GraftError`` a user should see.
    static func mapError(_ error: any Error, path: String) -> GraftError {
        if let error = error as? GraftError { return error }
        if let error = error as? DatabaseError {
            switch error.resultCode {
            case .SQLITE_BUSY, .SQLITE_LOCKED: return .busy
            case .SQLITE_READONLY, .SQLITE_PERM: return .readOnly(path: path)
            case .SQLITE_CANTOPEN where !FileSystem.isWritable(path): return .readOnly(path: path)
            case .SQLITE_FULL: return .diskFull(path: path)
            case .SQLITE_CORRUPT, .SQLITE_NOTADB: return .corruptDatabase(path: path, message: error.message ?? "unreadable")
            default: return .database(code: error.extendedResultCode.rawValue, message: error.message ?? "unknown error")
            }
        }
        return .database(code: -1, message: String(describing: error))
    }
}

extension FileSystem {
    /// Whether the directory holding `path` can be written.
    static func isWritable(_ path: String) -> Bool {
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return access(directory.isEmpty ? "." : directory, W_OK) == 0
    }
}

/// Queries through prepared statements cached on the connection: on the hot read paths
/// (best, lineage, affected) preparing recursive queries costs more than running them.
extension Database {
    func cachedRows(sql: String, arguments: StatementArguments = []) throws -> [Row] {
        try Row.fetchAll(cachedStatement(sql: sql), arguments: arguments)
    }

    func cachedCursor(sql: String, arguments: StatementArguments = []) throws -> RowCursor {
        try Row.fetchCursor(cachedStatement(sql: sql), arguments: arguments)
    }

    func cachedOne<T: DatabaseValueConvertible & StatementColumnConvertible>(
        _ type: T.Type, sql: String, arguments: StatementArguments = []
    ) throws -> T? {
        try T.fetchOne(cachedStatement(sql: sql), arguments: arguments)
    }

    func cachedAll<T: DatabaseValueConvertible & StatementColumnConvertible>(
        _ type: T.Type, sql: String, arguments: StatementArguments = []
    ) throws -> [T] {
        try T.fetchAll(cachedStatement(sql: sql), arguments: arguments)
    }
}
