import Foundation
import GraftTestSupport
import Testing

@testable import GraftCore
@testable import GraftPostgres

/// migrations/postgres/0001_initial.sql on a throwaway cluster: it applies, and the derived data
/// the PostgreSQL store will lean on (issue 14) is kept by the database itself — checkpoint
/// counts, metric summaries, the lineage array and its GIN queries, one active token per name —
/// while the constraints refuse what the SQLite schema refuses.
@Suite("The PostgreSQL schema: applies, keeps its derived data, refuses bad rows")
struct PostgresSchemaTests {
    static let schema = packageRoot + "/migrations/postgres/0001_initial.sql"

    func cluster() throws -> PostgresCluster {
        let cluster = try PostgresCluster()
        try cluster.psql("CREATE DATABASE graft")
        try cluster.psql(try String(contentsOfFile: Self.schema, encoding: .utf8), database: "graft")
        return cluster
    }

    @Test("counts, summaries and the lineage array kept by the database; subtree and ancestors by GIN key")
    func derivedData() throws {
        let cluster = try cluster()
        defer { cluster.stop() }
        @discardableResult func sql(_ text: String) throws -> String {
            try cluster.psql(text, database: "graft").trimmingCharacters(in: .newlines)
        }
        let base = try sql("INSERT INTO models (name, kind, created_at, lineage) VALUES ('base', 'base', 't', '{}') RETURNING id")
        try sql("UPDATE models SET lineage = ARRAY[id] WHERE id = \(base)")
        let digest = String(repeating: "a", count: 64)
        try sql("INSERT INTO blobs VALUES ('\(digest)', 1, '\\x01', 't')")
        let checkpoint = try sql(
            """
            INSERT INTO checkpoints (model_id, number, digest, header, header_digest, tensor_count, parameter_count, data_bytes,\
             file_bytes, created_at)
            VALUES (\(base), 1, '\(digest)', '\\x00', '\(digest)', 1, 1, 1, 9, 't') RETURNING id
            """)
        #expect(try sql("SELECT checkpoint_count FROM models WHERE id = \(base)") == "1")
        // A student and its student: the lineage array is the parent's plus the model's own id.
        var ids = [base]
        for (name, parent) in [("kid", base), ("grandkid", "")] {
            let from = parent.isEmpty ? ids.last! : parent
            let id = try sql(
                """
                INSERT INTO models (name, kind, created_at, relation, transfer_mode, parent_checkpoint_id, parent_checkpoint_number,\
                 lineage)
                SELECT '\(name)', 'student', 't', 'finetune', 'feature-extraction', \(checkpoint), 1, lineage FROM models WHERE id =\
                 \(from) RETURNING id
                """)
            try sql("UPDATE models SET lineage = lineage || id WHERE id = \(id)")
            ids.append(id)
        }
        #expect(
            try sql("SELECT string_agg(name, ',' ORDER BY name) FROM models WHERE lineage @> ARRAY[\(ids[1])::bigint]") == "grandkid,kid")
        #expect(
            try sql("SELECT string_agg(name, ',' ORDER BY name) FROM models WHERE lineage @> ARRAY[\(base)::bigint]") == "base,grandkid,kid"
        )
        #expect(
            try sql(
                """
                SELECT string_agg(m.name, ',' ORDER BY a.n) FROM unnest((SELECT lineage FROM models WHERE name = 'grandkid')) WITH\
                 ORDINALITY a(id, n) JOIN models m ON m.id = a.id
                """
            )
                == "base,kid,grandkid")
        // Metric summaries follow inserts, updates and deletes.
        let second = try sql(
            """
            INSERT INTO checkpoints (model_id, number, digest, header, header_digest, tensor_count, parameter_count, data_bytes,\
             file_bytes, created_at)
            VALUES (\(base), 2, '\(digest)', '\\x00', '\(digest)', 1, 1, 1, 9, 't') RETURNING id
            """)
        #expect(try sql("SELECT checkpoint_count FROM models WHERE id = \(base)") == "2")
        try sql("INSERT INTO metrics VALUES (\(checkpoint), \(base), 'acc', 'val', 0.5, 't'), (\(second), \(base), 'acc', 'val', 0.9, 't')")
        #expect(
            try sql("SELECT max_value || ' ' || min_value || ' ' || count || ' ' || lineage::text FROM metric_summaries")
                == "0.9 0.5 2 {\(base)}")
        try sql("UPDATE metrics SET value = 0.1 WHERE checkpoint_id = \(second)")
        #expect(try sql("SELECT max_value || ' ' || min_value FROM metric_summaries") == "0.5 0.1")
        try sql("DELETE FROM metrics WHERE checkpoint_id = \(second)")
        #expect(try sql("SELECT max_value || ' ' || min_value || ' ' || count FROM metric_summaries") == "0.5 0.5 1")
        try sql("DELETE FROM metrics")
        #expect(try sql("SELECT count(*) FROM metric_summaries") == "0")
        try sql("DELETE FROM checkpoints WHERE id = \(second)")
        #expect(try sql("SELECT checkpoint_count FROM models WHERE id = \(base)") == "1")
    }

    @Test("what the SQLite schema refuses, this refuses: kinds, digests, states, scopes, a second active token of one name")
    func constraints() throws {
        let cluster = try cluster()
        defer { cluster.stop() }
        @discardableResult func sql(_ text: String) throws -> String { try cluster.psql(text, database: "graft") }
        for bad in [
            "INSERT INTO models (name, kind, created_at, lineage) VALUES ('x', 'teacher', 't', '{}')",
            "INSERT INTO models (name, kind, created_at, lineage, relation) VALUES ('x', 'base', 't', '{}', 'finetune')",
            "INSERT INTO models (name, kind, created_at, lineage) VALUES ('x', 'base', 't', '{}'), ('x', 'base', 't', '{}')",
            "INSERT INTO blobs VALUES ('abc', 1, NULL, 't')",
            "INSERT INTO blobs VALUES ('\(String(repeating: "b", count: 64))', 2, '\\x01', 't')",
            "INSERT INTO tokens (name, secret_hash, scope, created_at) VALUES ('t', '\\x01', 'read', 't')",
            "INSERT INTO tokens (name, secret_hash, scope, created_at) VALUES ('t', decode(repeat('00', 32), 'hex'), 'root', 't')",
        ] {
            #expect(throws: (any Error).self, "\(bad)") { try sql(bad) }
        }
        let hash = { (byte: String) in "decode(repeat('\(byte)', 32), 'hex')" }
        try sql("INSERT INTO tokens (name, secret_hash, scope, created_at) VALUES ('ci', \(hash("01")), 'write', 't')")
        #expect(throws: (any Error).self) {
            try sql("INSERT INTO tokens (name, secret_hash, scope, created_at) VALUES ('ci', \(hash("02")), 'write', 't')")
        }
        try sql("UPDATE tokens SET revoked_at = 't' WHERE name = 'ci'")
        try sql("INSERT INTO tokens (name, secret_hash, scope, created_at) VALUES ('ci', \(hash("02")), 'write', 't')")
        #expect(try sql("SELECT count(*) FROM tokens WHERE name = 'ci'") == "2\n")
    }
}

/// The PostgreSQL store's migration runner: the ledger, checksums, newer schemas, a database
/// without the schema, and the statement splitter the runner sends files through.
@Suite("The PostgreSQL store's migrations: applied once, checksummed, newer ones refused")
struct PostgresMigrationTests {
    @Test("init applies every migration once and records it; open checks the ledger; a changed or newer one is refused")
    func ledger() async throws {
        let cluster = try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(with: Result { try PostgresCluster() }) }
        }
        defer { cluster.stop() }
        let url = cluster.url()
        await expectGraftError("notARegistry") { _ = try await PostgresMetadataStore.open(url: url, leaseTimeout: .seconds(120)) }
        let (_, created) = try await PostgresMetadataStore.create(url: url, leaseTimeout: .seconds(120))
        #expect(created)
        let (_, again) = try await PostgresMetadataStore.create(url: url, leaseTimeout: .seconds(120))
        #expect(!again, "a second init finds the schema in place")
        let ledger = try cluster.psql("SELECT version || ' ' || name || ' ' || checksum FROM graft_migrations ORDER BY version")
        #expect(ledger == Migration.postgres.map { "\($0.version) \($0.name) \($0.checksum)\n" }.joined())
        _ = try await PostgresMetadataStore.open(url: url, leaseTimeout: .seconds(120))

        try cluster.psql("UPDATE graft_migrations SET checksum = 'changed' WHERE version = 1")
        await expectGraftError("migrationMismatch") { _ = try await PostgresMetadataStore.open(url: url, leaseTimeout: .seconds(120)) }
        try cluster.psql("UPDATE graft_migrations SET checksum = '\(Migration.postgres[0].checksum)' WHERE version = 1")
        try cluster.psql("INSERT INTO graft_migrations VALUES (9999, 'future', 'x', 't')")
        await expectGraftError("newerSchema") { _ = try await PostgresMetadataStore.open(url: url, leaseTimeout: .seconds(120)) }
    }

    @Test("migration files split at semicolons outside quotes, comments and dollar-quoted bodies")
    func splitter() {
        let sql = """
            -- a comment; with a semicolon
            CREATE TABLE a (x text DEFAULT 'it''s; fine');
            CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RETURN NEW; -- inside the body
            END $$;
            CREATE FUNCTION g() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;
            -- only a comment
            """
        let statements = SQLStatements.split(sql)
        #expect(statements.count == 3, "\(statements)")
        #expect(statements[0].hasSuffix("DEFAULT 'it''s; fine')"))
        #expect(statements[1].hasSuffix("END $$") && statements[1].contains("RETURN NEW; -- inside the body"))
        #expect(statements[2].hasSuffix("$body$ SELECT 1; $body$"))
        #expect(
            SQLStatements.split(try! String(contentsOfFile: packageRoot + "/migrations/postgres/0001_initial.sql", encoding: .utf8)).count
                > 20)
    }
}
