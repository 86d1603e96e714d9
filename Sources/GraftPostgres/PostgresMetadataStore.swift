import Foundation
package import GraftCore
import Logging
import NIOCore
import PostgresNIO

/// The metadata store of a registry in PostgreSQL (issue 14): the schema of
/// `migrations/postgres/`, applied and checksummed like SQLite's, through PostgresNIO's
/// connection pool. Several `graft serve` processes on several machines share one database.
///
/// Each method is one transaction. Reads of more than one statement run in a `REPEATABLE READ
/// READ ONLY` transaction (one snapshot); writes run in `READ COMMITTED` with explicit locks
/// where SQLite's single write lock used to give the guarantee:
/// - a checkpoint's number: the model's row is locked (`FOR NO KEY UPDATE`) before `max(number)`,
///   so concurrent commits to one model number 1, 2, 3… without gaps or duplicates;
/// - blobs: commits that record blobs hold a shared transaction-level advisory lock, removals
///   and gc an exclusive one, so a blob gc or a removal deletes is never one a commit in flight
///   has just checked (`stillStored`) and is about to reference;
/// - names: inserts are `ON CONFLICT DO NOTHING`, so a duplicate is a clear `exists` error.
/// Deadlocks and serialisation failures are ``GraftError/busy``; a database that cannot be
/// reached (or restarts) is ``GraftError/unreachable(url:reason:)``. Both are retryable.
package final class PostgresMetadataStore: MetadataStore {
    package let location: String
    let client: PostgresClient
    let logger: Logger
    /// How long a request waits for a connection before ``GraftError/unreachable(url:reason:)``.
    let leaseTimeout: Duration
    private let runner: Task<Void, Never>

    /// The advisory lock key of blob references (see the type's comment): "GRAFTBLB".
    static let blobLock: Int64 = 0x4752_4146_5442_4C42
    /// The advisory lock key under which migrations are applied.
    static let migrationLock: Int64 = 0x4752_4146_544D_4947

    private init(location: PostgresLocation, leaseTimeout: Duration) {
        self.location = location.description
        self.leaseTimeout = leaseTimeout
        logger = Logger(label: "graft.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
        var configuration = PostgresClient.Configuration(
            host: location.host, port: location.port, username: location.user, password: location.password, database: location.database,
            tls: location.tls)
        configuration.options.connectTimeout = .seconds(5)
        configuration.options.maximumConnections = 16
        configuration.options.keepAliveBehavior = nil
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.client = client
        runner = Task { await client.run() }
    }

    deinit { runner.cancel() }

    /// Connects to the database of a `postgresql://` URL and checks its schema: applies
    /// migrations this build adds, refuses a database a newer or different Graft wrote.
    /// - Throws: ``GraftError/notARegistry(path:reason:)`` when the database has no Graft schema (`graft init` prepares it).
    package static func open(url: String, leaseTimeout: Duration = defaultLeaseTimeout) async throws(GraftError) -> PostgresMetadataStore {
        let store = PostgresMetadataStore(location: try PostgresLocation(parsing: url), leaseTimeout: leaseTimeout)
        try await store.migrate(create: false)
        return store
    }

    /// Connects and prepares the schema when the database has none (`graft init`).
    /// - Returns: the store, and whether the schema was created now.
    package static func create(url: String, leaseTimeout: Duration = defaultLeaseTimeout) async throws(GraftError) -> (
        PostgresMetadataStore, created: Bool
    ) {
        let store = PostgresMetadataStore(location: try PostgresLocation(parsing: url), leaseTimeout: leaseTimeout)
        let created = try await store.migrate(create: true)
        return (store, created)
    }

    // MARK: Settings

    /// A registry-wide setting (`blobs`: the blob location chosen at init).
    package func setting(_ key: String) async throws(GraftError) -> String? {
        try await read { connection in
            try await connection.one("SELECT value FROM graft_settings WHERE key = \(key)", logger: self.logger).map { row throws in
                try row[0] as String
            }
        }
    }

    /// Records a setting unless one is recorded; returns the value in force.
    package func recordSetting(_ key: String, _ value: String) async throws(GraftError) -> String {
        try await write { connection in
            try await connection.run(
                "INSERT INTO graft_settings (key, value) VALUES (\(key), \(value)) ON CONFLICT (key) DO NOTHING", logger: self.logger)
            return try await connection.one("SELECT value FROM graft_settings WHERE key = \(key)", logger: self.logger).map { row throws in
                try row[0] as String
            } ?? value
        }
    }

    // MARK: Migrations

    /// Applies pending migrations, each in its transaction under an advisory lock (so several
    /// servers starting at once apply each step once); checks the applied ones' checksums.
    @discardableResult
    func migrate(create: Bool) async throws(GraftError) -> Bool {
        let known = Migration.postgres
        let location = self.location
        return try await withConnection { connection in
            let hasLedger =
                try await connection.one("SELECT to_regclass('graft_migrations') IS NOT NULL", logger: self.logger).map { row throws in
                    try row[0] as Bool
                } ?? false
            if !hasLedger, !create {
                throw GraftError.notARegistry(
                    path: location, reason: "the database has no Graft schema (graft init --metadata URL prepares it)")
            }
            var created = false
            while true {
                try await connection.run("BEGIN", logger: self.logger)
                do {
                    try await connection.run("SELECT pg_advisory_xact_lock(\(Self.migrationLock))", logger: self.logger)
                    try await connection.run(
                        """
                        CREATE TABLE IF NOT EXISTS graft_migrations (version integer PRIMARY KEY, name text NOT NULL, checksum text NOT\
                         NULL,
                            applied_at text NOT NULL)
                        """, logger: self.logger)
                    let applied = try await connection.all(
                        "SELECT version, name, checksum FROM graft_migrations ORDER BY version", logger: self.logger
                    )
                    .map { row throws in (version: try row[0] as Int, name: try row[1] as String, checksum: try row[2] as String) }
                    guard let next = try Migration.pending(applied: applied, known: known, location: location) else {
                        try await connection.run("COMMIT", logger: self.logger)
                        return created
                    }
                    if next.version == known.first?.version { created = true }
                    // PostgresNIO speaks the extended protocol only: one statement per query.
                    for statement in SQLStatements.split(next.sql) {
                        try await connection.run(PostgresQuery(unsafeSQL: statement), logger: self.logger)
                    }
                    try await connection.run(
                        """
                        INSERT INTO graft_migrations (version, name, checksum, applied_at) VALUES (\(next.version), \(next.name),\
                         \(next.checksum), \(timestamp()))
                        """,
                        logger: self.logger)
                    try await connection.run("COMMIT", logger: self.logger)
                } catch {
                    _ = try? await connection.run("ROLLBACK", logger: self.logger)
                    throw error
                }
            }
        }
    }

    // MARK: Transactions

    /// How long a request waits for a connection by default: the pool retries a database that
    /// is down for a minute before giving up, far longer than a client should wait to learn it.
    package static let defaultLeaseTimeout: Duration = .seconds(5)

    /// Runs `body` on a pooled connection, mapping errors. A connection not leased within
    /// ``leaseTimeout`` (the database down or restarting) is ``GraftError/unreachable(url:reason:)``.
    func withConnection<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws(GraftError) -> T {
        let client = self.client, leaseTimeout = self.leaseTimeout
        do {
            return try await withThrowingTaskGroup(of: T?.self) { group in
                let leased = Flag()
                group.addTask {
                    try await client.withConnection { connection in
                        leased.set()
                        return try await body(connection)
                    }
                }
                group.addTask {
                    try await Task.sleep(for: leaseTimeout)
                    if !leased.isSet { throw LeaseTimeout() }
                    return nil
                }
                while let result = try await group.next() {
                    if let result {
                        group.cancelAll()
                        return result
                    }
                }
                throw LeaseTimeout()
            }
        } catch is LeaseTimeout {
            throw .unreachable(url: location, reason: "no database connection within \(leaseTimeout) (is the server up?); retry")
        } catch {
            throw mapError(error)
        }
    }

    /// Runs `body` in one read-only snapshot (`REPEATABLE READ`).
    func read<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws(GraftError) -> T {
        try await transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)
    }

    /// Runs `body` in one read-write transaction (`READ COMMITTED`; see the type's comment for its locks).
    func write<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws(GraftError) -> T {
        try await transaction("BEGIN", body)
    }

    private func transaction<T: Sendable>(_ begin: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T)
        async throws(GraftError) -> T
    {
        try await withConnection { connection in
            try await connection.run(PostgresQuery(unsafeSQL: begin), logger: self.logger)
            do {
                let result = try await body(connection)
                try await connection.run("COMMIT", logger: self.logger)
                return result
            } catch {
                // A failed ROLLBACK leaves a connection the pool closes; the first error is the one to report.
                if !connection.isClosed { _ = try? await connection.run("ROLLBACK", logger: self.logger) }
                throw error
            }
        }
    }

    /// Turns any error of PostgresNIO or the store into the ``GraftError`` a user should see.
    func mapError(_ error: any Error) -> GraftError {
        if let error = error as? GraftError { return error }
        if let error = error as? PSQLError {
            if error.code == .server, let state = error.serverInfo?[.sqlState] {
                let message = error.serverInfo?[.message] ?? "unknown error"
                switch state {
                case "40001", "40P01", "55P03": return .busy
                case "53100": return .diskFull(path: location)
                case "25006": return .readOnly(path: location)
                case "28000", "28P01": return .unreachable(url: location, reason: "the database refused the login: \(message)")
                case "3D000": return .notARegistry(path: location, reason: message)
                default:
                    // Connection exceptions, shutdowns and "cannot connect now" (a restart).
                    if state.hasPrefix("08") || state.hasPrefix("57P") || state.hasPrefix("53") {
                        return .unreachable(url: location, reason: "\(message) (SQLSTATE \(state)); retry")
                    }
                    return .database(code: -1, message: "\(message) (SQLSTATE \(state))")
                }
            }
            switch error.code {
            case .server, .messageDecodingFailure, .unexpectedBackendMessage, .invalidCommandTag, .tooManyParameters:
                return .database(code: -1, message: String(describing: error))
            default:
                return .unreachable(
                    url: location,
                    reason: "\(error.code) \(error.underlying.map { String(describing: $0) } ?? ""); retry".replacingOccurrences(
                        of: "  ", with: " "))
            }
        }
        if error is CancellationError { return .unreachable(url: location, reason: "the request was cancelled") }
        if let error = error as? ConnectionLost { return .unreachable(url: location, reason: "\(error); retry") }
        if error is PostgresDecodingError { return .database(code: -1, message: "unexpected column type: \(error)") }
        return .unreachable(url: location, reason: String(describing: error))
    }
}

extension Migration {
    /// Every migration of `migrations/postgres/` this build knows, in order.
    static let postgres: [Migration] = Migration.list(embeddedMigrations)
}

/// Where a PostgreSQL registry's metadata lives: `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE]`.
/// A password may come from `PGPASSWORD` instead; it is never shown (`description` leaves it out).
package struct PostgresLocation: Sendable, CustomStringConvertible {
    package var user: String
    package var password: String?
    package var host: String
    package var port: Int
    package var database: String
    package var sslMode: String

    package init(parsing text: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(GraftError) {
        func refuse(_ reason: String) -> GraftError { .badRequest("invalid metadata location \(Self.redacted(text)): \(reason)") }
        guard text.hasPrefix("postgresql://") || text.hasPrefix("postgres://"), let url = URLComponents(string: text) else {
            throw refuse("expected postgresql://USER@HOST:PORT/DATABASE")
        }
        guard let user = url.user, !user.isEmpty else { throw refuse("it names no user") }
        guard let host = url.host, !host.isEmpty else { throw refuse("it names no host") }
        let database = String(url.path.dropFirst())
        guard !database.isEmpty, database.count <= 63, database.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
            throw refuse("the database name must be 1-63 letters, digits, '_' or '-'")
        }
        let port = url.port ?? 5432
        guard (1...65535).contains(port) else { throw refuse("port \(port) is out of range") }
        var sslMode = "prefer"
        for item in url.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let value = item.value, ["disable", "prefer", "require", "verify-full"].contains(value) else {
                    throw refuse("sslmode is one of disable, prefer, require, verify-full")
                }
                sslMode = value
            default: throw refuse("unknown option \(item.name) (known: sslmode)")
            }
        }
        (self.user, self.host, self.port, self.database, self.sslMode) = (
            user.removingPercentEncoding ?? user, host, port, database, sslMode
        )
        password = url.password?.removingPercentEncoding ?? environment["PGPASSWORD"]
    }

    /// The URL without its password.
    package var description: String {
        "postgresql://\(user)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)"
            + (sslMode == "prefer" ? "" : "?sslmode=\(sslMode)")
    }

    var tls: PostgresClient.Configuration.TLS {
        switch sslMode {
        case "disable": .disable
        case "require":
            // Encrypted, without checking the server's certificate (as libpq's `require`).
            {
                var configuration = TLSConfiguration.makeClientConfiguration(); configuration.certificateVerification = .none;
                return .require(configuration)
            }()
        case "verify-full": .require(.makeClientConfiguration())
        default:
            {
                var configuration = TLSConfiguration.makeClientConfiguration(); configuration.certificateVerification = .none;
                return .prefer(configuration)
            }()
        }
    }

    /// `text` with any password replaced, for messages.
    static func redacted(_ text: String) -> String {
        guard var url = URLComponents(string: text), url.password != nil else { return text }
        url.password = "***"
        return url.string ?? "postgresql://…"
    }
}

/// Splits a migration file into its statements at each `;` outside quotes, dollar-quoted
/// bodies (`$$ … $$`, `$tag$ … $tag$`) and comments.
enum SQLStatements {
    static func split(_ sql: String) -> [String] {
        let characters = Array(sql.unicodeScalars)
        var statements: [String] = [], current = String.UnicodeScalarView(), index = 0
        func flush() {
            let text = String(current).trimmingCharacters(in: .whitespacesAndNewlines)
            if !text.isEmpty, !text.split(separator: "\n").allSatisfy({ $0.trimmingCharacters(in: .whitespaces).hasPrefix("--") }) {
                statements.append(text)
            }
            current = String.UnicodeScalarView()
        }
        func starts(_ text: String, at position: Int) -> Bool {
            let scalars = Array(text.unicodeScalars)
            return position + scalars.count <= characters.count && Array(characters[position..<(position + scalars.count)]) == scalars
        }
        while index < characters.count {
            let character = characters[index]
            if character == "-", starts("--", at: index) {
                while index < characters.count, characters[index] != "\n" { current.append(characters[index]); index += 1 }
            } else if character == "'" {
                current.append(character); index += 1
                while index < characters.count {
                    current.append(characters[index]); index += 1
                    if characters[index - 1] == "'" { break }
                }
            } else if character == "$", let end = characters[(index + 1)...].firstIndex(of: "$"),
                characters[(index + 1)..<end].allSatisfy({ $0 == "_" || $0.properties.isAlphabetic })
            {
                let tag = String(String.UnicodeScalarView(characters[index...end]))
                current.append(contentsOf: tag.unicodeScalars); index = end + 1
                while index < characters.count, !starts(tag, at: index) { current.append(characters[index]); index += 1 }
                if index < characters.count { current.append(contentsOf: tag.unicodeScalars); index += tag.unicodeScalars.count }
            } else if character == ";" {
                flush(); index += 1
            } else {
                current.append(character); index += 1
            }
        }
        flush()
        return statements
    }
}

// MARK: Query helpers

private struct LeaseTimeout: Error {}

/// Set once, read from another task.
private final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

/// A row read by column name or position (`try row["name"] as String`).
struct Row {
    let cells: PostgresRandomAccessRow
    init(_ row: PostgresRow) { cells = row.makeRandomAccess() }
    subscript<T: PostgresDecodable>(_ column: String) -> T { get throws { try cells[column].decode(T.self) } }
    subscript<T: PostgresDecodable>(_ index: Int) -> T { get throws { try cells[index].decode(T.self) } }
    /// A bytea column's bytes (nil for NULL).
    func bytes(_ column: String) throws -> [UInt8]? { try (cells[column].decode(ByteBuffer?.self)).map { Array($0.readableBytesView) } }
}

extension PostgresConnection {
    /// How long one statement may take before its connection is given up as lost.
    static let statementDeadline: TimeAmount = .seconds(60)

    /// Runs a statement, discarding rows.
    func run(_ query: PostgresQuery, logger: Logger) async throws {
        _ = try await all(query, logger: logger)
    }

    /// Runs a statement ending in `RETURNING` and counts the rows it returned.
    func changes(_ query: PostgresQuery, logger: Logger) async throws -> Int {
        try await all(query, logger: logger).count
    }

    func one(_ query: PostgresQuery, logger: Logger) async throws -> Row? {
        try await all(query, logger: logger).first
    }

    /// Runs a statement and reads its rows. A statement on a connection already closed (the
    /// server restarted) fails at once, and one unanswered within ``statementDeadline`` closes
    /// its connection and fails: PostgresNIO can leave a query on a closed connection waiting
    /// for ever (vapor/postgres-nio#487, reverted in #501), which would hang the request.
    func all(_ query: PostgresQuery, logger: Logger) async throws -> [Row] {
        guard !isClosed else { throw ConnectionLost() }
        let once = Once()
        return try await withCheckedThrowingContinuation { continuation in
            let work = Task {
                do {
                    let rows = try await self.query(query, logger: logger).collect().map(Row.init)
                    if once.claim() { continuation.resume(returning: rows) }
                } catch {
                    if once.claim() { continuation.resume(throwing: error) }
                }
            }
            let timer = eventLoop.scheduleTask(in: Self.statementDeadline) {
                guard once.claim() else { return }
                work.cancel()
                let _: EventLoopFuture<Void> = self.close()
                continuation.resume(throwing: ConnectionLost())
            }
            Task {
                _ = await work.result
                timer.cancel()
            }
        }
    }
}

/// A connection that closed under a statement, or never answered it.
struct ConnectionLost: Error, CustomStringConvertible {
    var description: String { "the database connection was lost" }
}

/// Claimed once, by whichever of several racers comes first.
private final class Once: @unchecked Sendable {
    private let lock = NSLock()
    private var claimed = false
    func claim() -> Bool {
        lock.withLock {
            defer { claimed = true }; return !claimed
        }
    }
}
