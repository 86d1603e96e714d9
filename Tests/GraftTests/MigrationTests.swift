import Foundation
@testable import Graft
import GraftTestSupport
import GRDB
import Testing

@Suite("Schema migrations")
struct MigrationTests {
    @Test("a new registry records every shipped migration with its checksum")
    func ledger() async throws {
        let test = try await TestRegistry()
        let rows = try DatabaseQueue(path: test.registry.layout.database).read { db in
            try Row.fetchAll(db, sql: "SELECT version, name, checksum FROM graft_migrations ORDER BY version")
        }
        #expect(rows.map { $0["version"] as Int } == Migration.all.map(\.version))
        #expect(rows.first?["name"] as String? == "initial")
        let sql = try String(contentsOfFile: packageRoot + "/migrations/0001_initial.sql", encoding: .utf8)
        #expect(rows.first?["checksum"] as String? == sha256Hex(Array(sql.utf8)))
    }

    @Test("every file in migrations/ is embedded, numbered in order")
    func embedded() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: packageRoot + "/migrations").filter { $0.hasSuffix(".sql") }.sorted()
        #expect(Migration.all.count == files.count)
        #expect(Migration.all.map(\.version) == Array(1...files.count))
    }

    @Test("a registry from a newer Graft is refused with the versions named")
    func newerSchemaRefused() async throws {
        let test = try await TestRegistry()
        try await DatabaseQueue(path: test.registry.layout.database).write { db in
            try db.execute(sql: "INSERT INTO graft_migrations VALUES (9999, 'future', 'x', 'now')")
        }
        await #expect { _ = try await Registry.open(at: test.root) } throws: { error in
            guard case GraftError.newerSchema(_, let version, let known) = error else { return false }
            return version == 9999 && known == Migration.newest && error.localizedDescription.isEmpty == false
        }
    }

    @Test("a registry whose applied migration differs from the shipped one is refused")
    func changedMigrationRefused() async throws {
        let test = try await TestRegistry()
        try await DatabaseQueue(path: test.registry.layout.database).write { db in
            try db.execute(sql: "UPDATE graft_migrations SET checksum = 'edited' WHERE version = 1")
        }
        await #expect { _ = try await Registry.open(at: test.root) } throws: { error in
            if case GraftError.migrationMismatch(1, _) = error { true } else { false }
        }
    }

    @Test("a registry made at schema version 1 is brought up to date on open, its data intact")
    func upgradesOnOpen() async throws {
        let directory = TemporaryDirectory()
        let root = directory.file("old")
        for folder in ["blobs/sha256", "tmp"] {
            try FileManager.default.createDirectory(atPath: root + "/" + folder, withIntermediateDirectories: true)
        }
        let first = try #require(Migration.all.first)
        try await DatabaseQueue(path: root + "/graft.sqlite").write { db in
            try db.execute(sql: SchemaMigrator.createLedger)
            try db.execute(sql: first.sql)
            try db.execute(sql: "INSERT INTO graft_migrations VALUES (1, 'initial', ?, 'then')", arguments: [first.checksum])
            try db.execute(sql: "INSERT INTO models (name, kind, license, created_at) VALUES ('old-base', 'base', 'mit', 'then')")
        }
        let registry = try await Registry.open(at: root)
        #expect(try await registry.models().map(\.name.value) == ["old-base"])
        let versions = try await DatabaseQueue(path: root + "/graft.sqlite").read { db in
            try Int.fetchAll(db, sql: "SELECT version FROM graft_migrations ORDER BY version")
        }
        #expect(versions == Migration.all.map(\.version))
    }

    @Test("the schema has an index for every lookup path used by these commands")
    func queryPlans() async throws {
        let test = try await TestRegistry()
        let plans = try await DatabaseQueue(path: test.registry.layout.database).read { db in
            try [
                "SELECT id FROM models WHERE name = 'x'",
                "SELECT * FROM checkpoints c WHERE c.digest >= 'ab' AND c.digest < 'abg'",
                "SELECT * FROM checkpoints c WHERE c.model_id = 1 AND c.number = 2",
                "SELECT * FROM checkpoint_tensors WHERE checkpoint_id = 1 ORDER BY position",
                "SELECT 1 FROM checkpoint_tensors t WHERE t.blob_digest = 'x'",
                "SELECT 1 FROM checkpoints WHERE header_digest = 'x'",
                "SELECT * FROM model_parents WHERE parent_model_id = 1",
                "SELECT * FROM model_parents WHERE parent_checkpoint_id = 1",
                "SELECT * FROM manifest_entries WHERE model_id = 1",
                "SELECT * FROM aliases WHERE model_id = 1 AND alias = 'x'",
                "SELECT * FROM aliases WHERE checkpoint_id = 1",
            ].map { sql in try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql).map { $0["detail"] as String }.joined(separator: "; ") }
        }
        for plan in plans {
            #expect(!plan.contains("SCAN"), "full scan: \(plan)")
        }
    }
}
