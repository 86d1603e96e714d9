#if canImport(Glibc)
    import Glibc
#endif
import GRDB
import SafeTensors

/// A Graft registry: tensor blobs on disk and metadata in SQLite, under one root directory.
///
/// Open one with ``open(at:)`` (it must exist) or ``create(at:)``; every operation is
/// `async` and safe to call from many tasks. Several processes may use one registry at once:
/// writes serialise on SQLite's write lock (`BEGIN IMMEDIATE`, 30 s busy timeout).
///
/// ```swift
/// let registry = try await Registry.create(at: "./registry").registry
/// let result = try await registry.addBase(name: try ModelName("tiny-cnn"), file: "tiny.safetensors")
/// print(result.checkpoint, result.bytesStored)
/// ```
public final class Registry: Sendable {
    /// How hard a commit works to survive power loss.
    public enum Durability: Sendable {
        /// Every acknowledged commit is on stable storage (`synchronous=FULL`). The default.
        case full
        /// Commits reach the OS at once and the disk at checkpoints (`synchronous=NORMAL`): a
        /// power cut may lose the last commits, never corrupt the registry. For bulk loads.
        case relaxed
    }

    public let layout: RegistryLayout
    /// Tensors smaller than this many bytes are stored inside SQLite rather than as files.
    public static let defaultInlineThreshold = 4096
    /// How long a write waits for another process's write lock before failing with
    /// ``GraftError/busy``, in seconds.
    public static let defaultBusyTimeout = 30.0
    let pool: DatabasePool
    /// Tensor bytes: the blob store, and the hashing lanes that stream bytes to and from it.
    let blobs: BlobTransfer

    private init(layout: RegistryLayout, pool: DatabasePool, inlineThreshold: Int) {
        self.layout = layout
        self.pool = pool
        self.blobs = BlobTransfer(store: LocalBlobStore(layout: layout), inlineThreshold: inlineThreshold)
    }

    /// Opens the registry at `root`.
    ///
    /// - Throws: ``GraftError/notARegistry(path:reason:)`` when `root` holds no registry,
    ///   ``GraftError/newerSchema(path:version:newestKnown:)`` when a newer Graft wrote it.
    public static func open(
        at root: String, inlineThreshold: Int = Registry.defaultInlineThreshold, durability: Durability = .full,
        busyTimeout: Double = Registry.defaultBusyTimeout
    ) async throws(GraftError) -> Registry {
        let layout = RegistryLayout(root: root)
        guard FileSystem.isDirectory(layout.root) else {
            throw .notARegistry(path: layout.root, reason: "no such directory")
        }
        guard FileSystem.fileExists(layout.database) else {
            throw .notARegistry(path: layout.root, reason: "it has no graft.sqlite")
        }
        for directory in [layout.blobs, layout.sha256, layout.tmp] where !FileSystem.isDirectory(directory) {
            throw .notARegistry(path: layout.root, reason: "\(directory) is missing")
        }
        return try await connect(layout, inlineThreshold: inlineThreshold, durability: durability, busyTimeout: busyTimeout)
    }

    /// Creates a registry at `root`, or opens the one already there.
    ///
    /// `root` may be missing, empty, or hold only a `README.md` or `.gitignore` (as the
    /// repository's `registry/` folder does); anything else is refused.
    /// - Returns: the registry, and whether it was created now.
    public static func create(
        at root: String, inlineThreshold: Int = Registry.defaultInlineThreshold, durability: Durability = .full,
        busyTimeout: Double = Registry.defaultBusyTimeout
    ) async throws(GraftError) -> (registry: Registry, created: Bool) {
        let layout = RegistryLayout(root: root)
        if FileSystem.fileExists(layout.database) {
            return (try await open(at: root, inlineThreshold: inlineThreshold, durability: durability, busyTimeout: busyTimeout), false)
        }
        if FileSystem.fileExists(layout.root) {
            guard FileSystem.isDirectory(layout.root) else {
                throw .notARegistry(path: layout.root, reason: "it is a file, not a directory")
            }
            let allowed: Set<String> = ["README.md", ".gitignore", "blobs", "tmp"]
            let stray = try FileSystem.contentsOfDirectory(layout.root).filter { !allowed.contains($0) && !$0.hasPrefix("graft.sqlite") }
            guard stray.isEmpty else {
                throw .notARegistry(path: layout.root, reason: "the directory is not empty (it holds \(stray.sorted().prefix(3).joined(separator: ", "))); choose an empty or new directory")
            }
        } else {
            try makeDirectories(layout.root)
        }
        for directory in [layout.blobs, layout.sha256, layout.tmp] { try FileSystem.makeDirectory(directory) }
        let created = try publishNewDatabase(layout, busyTimeout: busyTimeout)
        let registry = try await connect(layout, inlineThreshold: inlineThreshold, durability: durability, busyTimeout: busyTimeout)
        return (registry, created)
    }

    /// Builds the database under `tmp/` — WAL mode switched on, every migration applied — and
    /// only then links it into place as `graft.sqlite`, so that no process ever opens a database
    /// still in rollback mode. Switching a database to WAL takes an exclusive lock *without*
    /// SQLite's busy handler: a process that opened the new file while another was switching
    /// it got "database is locked" at once (exit 69 long before the 30 s busy timeout). With
    /// the file published complete, concurrent `init`s each build one and the first link wins;
    /// the others find it in place.
    /// - Returns: whether this call's database was the one published.
    private static func publishNewDatabase(_ layout: RegistryLayout, busyTimeout: Double) throws(GraftError) -> Bool {
        let staging = layout.tmp + "/" + FileSystem.uniqueName(suffix: ".sqlite")
        defer { for suffix in ["", "-wal", "-shm"] { FileSystem.remove(staging + suffix) } }
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

    private static func makeDirectories(_ path: String) throws(GraftError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            try FileSystem.makeDirectory(current)
        }
    }

    private static func connect(
        _ layout: RegistryLayout, inlineThreshold: Int, durability: Durability, busyTimeout: Double
    ) async throws(GraftError) -> Registry {
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
            return Registry(layout: layout, pool: pool, inlineThreshold: inlineThreshold)
        } catch {
            throw mapError(error, path: layout.database)
        }
    }

    /// Runs `body` in a read transaction, mapping errors.
    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(GraftError) -> T {
        do {
            return try await pool.read(body)
        } catch {
            throw Self.mapError(error, path: layout.database)
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
            throw Self.mapError(error, path: layout.database)
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

    func cachedOne<T: DatabaseValueConvertible & StatementColumnConvertible>(_ type: T.Type, sql: String, arguments: StatementArguments = []) throws -> T? {
        try T.fetchOne(cachedStatement(sql: sql), arguments: arguments)
    }

    func cachedAll<T: DatabaseValueConvertible & StatementColumnConvertible>(_ type: T.Type, sql: String, arguments: StatementArguments = []) throws -> [T] {
        try T.fetchAll(cachedStatement(sql: sql), arguments: arguments)
    }
}
