import Foundation
import GRDB
import GraftTestSupport
import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal
@testable import GraftSQLite

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
        let files = try FileManager.default.contentsOfDirectory(atPath: packageRoot + "/migrations").filter { $0.hasSuffix(".sql") }
            .sorted()
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

    @Test("a registry at schema version 3 gets lineage paths, parent-edge copies, checkpoint counts and metric summaries on open")
    func lineagePathsBackfilled() async throws {
        let directory = TemporaryDirectory()
        let root = directory.file("v3")
        for folder in ["blobs/sha256", "tmp"] {
            try FileManager.default.createDirectory(atPath: root + "/" + folder, withIntermediateDirectories: true)
        }
        // base ─┬─ a (from base@1) ── a1 (distillation of a@2)
        //       └─ b (from base@2)
        // other (a second base, no students)
        try await DatabaseQueue(path: root + "/graft.sqlite").write { db in
            try db.execute(sql: SchemaMigrator.createLedger)
            for migration in Migration.all.prefix(3) {
                try db.execute(sql: migration.sql)
                try db.execute(
                    sql: "INSERT INTO graft_migrations VALUES (?, ?, ?, 'then')",
                    arguments: [migration.version, migration.name, migration.checksum])
            }
            let digest = String(repeating: "0", count: 64)
            func model(_ name: String, _ kind: String) throws -> Int64 {
                try db.execute(sql: "INSERT INTO models (name, kind, created_at) VALUES (?, ?, 'then')", arguments: [name, kind])
                return db.lastInsertedRowID
            }
            func checkpoint(_ model: Int64, _ number: Int) throws -> Int64 {
                try db.execute(
                    sql: """
                        INSERT INTO checkpoints (model_id, number, digest, header, header_digest, tensor_count, parameter_count,\
                         data_bytes, file_bytes, created_at)
                        VALUES (?, ?, ?, x'00', ?, 0, 0, 0, 8, 'then')
                        """, arguments: [model, number, digest, digest])
                return db.lastInsertedRowID
            }
            func edge(_ student: Int64, _ parent: Int64, _ via: Int64, _ relation: String) throws {
                try db.execute(sql: "INSERT INTO model_parents VALUES (?, ?, ?, ?, 'then')", arguments: [student, via, parent, relation])
            }
            let base = try model("base", "base"), other = try model("other", "base")
            let (base1, base2) = (try checkpoint(base, 1), try checkpoint(base, 2))
            _ = try checkpoint(other, 1)
            let a = try model("a", "student"), b = try model("b", "student"), a1 = try model("a1", "student")
            try edge(a, base, base1, "finetune")
            try edge(b, base, base2, "finetune")
            let a1st = try checkpoint(a, 1)
            let a2 = try checkpoint(a, 2)
            try edge(a1, a, a2, "distillation")
            for (checkpoint, value) in [(a1st, 0.6), (a2, 0.9)] {
                try db.execute(sql: "INSERT INTO metrics VALUES (?, ?, 'accuracy', 'val', ?, 'then')", arguments: [checkpoint, a, value])
            }
        }
        let registry = try await Registry.open(at: root)
        let rows = try DatabaseQueue(path: root + "/graft.sqlite").read { db in
            try Row.fetchAll(
                db, sql: "SELECT name, lineage_path, relation, parent_checkpoint_number, checkpoint_count FROM models ORDER BY id")
        }
        #expect(rows.map { $0[1] as String } == ["/1/", "/2/", "/1/3/", "/1/4/", "/1/3/5/"])
        #expect(rows.map { $0[2] as String? } == [nil, nil, "finetune", "finetune", "distillation"])
        #expect(rows.map { $0[3] as Int? } == [nil, nil, 1, 2, 2])
        #expect(rows.map { $0[4] as Int } == [2, 1, 2, 0, 0])
        let summaries = try DatabaseQueue(path: root + "/graft.sqlite").read { db in
            try Row.fetchAll(db, sql: "SELECT model_id, name, split, lineage_path, max_value, min_value, count FROM metric_summaries")
        }
        #expect(
            summaries.map {
                """
                \($0[0] as Int) \($0[1] as String) \($0[2] as String) \($0[3] as String) \($0[4] as Double) \($0[5] as Double)\
                 \($0[6] as Int)
                """
            }
                == ["3 accuracy val /1/3/ 0.9 0.6 2"])
        #expect(try await registry.best(metric: "accuracy", split: "val", scope: .under(ModelName("base"))).checkpoint.ref == "a@2")
        #expect(try await registry.verify().lineageProblems == [])
        // The views read them: parents, relations and counts as recorded.
        let lineage = try await registry.lineage(ModelName("base"))
        #expect(
            lineage.descendants.map { "\($0.name) \($0.parent ?? "-") \($0.relation?.rawValue ?? "-") \($0.depth) \($0.checkpoints)" }
                == ["a base@1 finetune 1 2", "a1 a@2 distillation 2 0", "b base@2 finetune 1 0"])
        #expect(try await registry.lineage(ModelName("a1")).ancestors.map(\.name) == ["a", "base"])
        #expect(try await registry.lineage(ModelName("other")).descendants.isEmpty)
        // The counts follow checkpoints in and out (triggers).
        try await DatabaseQueue(path: root + "/graft.sqlite").write { db in
            try db.execute(sql: "DELETE FROM checkpoints WHERE model_id = 3 AND number = 1")
        }
        #expect(try await registry.lineage(ModelName("a")).model.checkpoints == 1)
        #expect(try await registry.verify().lineageProblems == [])
    }

    @Test("version 9 rebuilds models (for the adapter mode) with every row, edge, count and trigger intact")
    func modelsRebuildKeepsEverything() async throws {
        let test = try await TestRegistry()
        let registry = test.registry
        _ = try await registry.addBase(name: try ModelName("base"), file: try test.writeBase())
        _ = try await registry.createStudent(
            name: try ModelName("fe"), from: try Reference(parsing: "base@1"),
            manifest: .rules([ManifestRule(.freeze, "features")], freezeThrough: nil))
        _ = try await registry.addCheckpoint(model: try ModelName("fe"), file: try test.writeBase())
        _ = try await registry.logMetrics(try Reference(parsing: "fe@1"), [try MetricAssignment(name: "accuracy", value: 0.7)], split: nil)
        try await registry.addAdvisory(on: try Reference(parsing: "base@1"), id: "ADV-9", severity: .high)
        let before = (
            try await registry.models(), try await registry.lineage(try ModelName("base"), metric: nil, direction: nil, parts: .both),
            try await registry.affected(try Reference(parsing: "base@1"))
        )
        func dump() throws -> [String] {
            try DatabaseQueue(path: test.registry.layout.database).read { db in
                try ["models", "model_parents", "manifest_entries", "checkpoints", "metrics", "metric_summaries", "advisories"].map {
                    table in
                    try Row.fetchAll(db, sql: "SELECT * FROM \(table) ORDER BY 1, 2").map(\.description).joined(separator: "\n")
                }
            }
        }
        let rows = try dump()
        // Back to version 8 in the ledger: opening applies version 9 again, to a registry holding data.
        try await DatabaseQueue(path: registry.layout.database).write { db in
            try db.execute(sql: "DELETE FROM graft_migrations WHERE version = 9")
        }
        let reopened = try await Registry.open(at: test.root)
        #expect(try dump() == rows)
        #expect(try await reopened.models() == before.0)
        #expect(try await reopened.lineage(try ModelName("base"), metric: nil, direction: nil, parts: .both) == before.1)
        #expect(try await reopened.affected(try Reference(parsing: "base@1")) == before.2)
        // The triggers on checkpoints and metrics still keep the rebuilt table's counts and summaries.
        _ = try await reopened.addCheckpoint(
            model: try ModelName("fe"), file: try test.writeBase(), metrics: [try MetricAssignment(name: "accuracy", value: 0.9)])
        #expect(try test.rows("SELECT checkpoint_count FROM models WHERE name = 'fe'") == 2)
        #expect(try test.rows("SELECT count FROM metric_summaries") == 2)
        #expect(try test.rows("SELECT count(*) FROM pragma_foreign_key_check") == 0)
        #expect(try test.rows("SELECT count(*) FROM sqlite_master WHERE name = 'models_by_lineage_path'") == 1)
        // And the store refuses a removal the foreign keys forbid, as before.
        await #expect(throws: GraftError.self) { try await reopened.removeModel(try ModelName("base"), cascade: false, dryRun: false) }
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
                // graft serve: every request's token lookup, a name's active token, a confined
                // token's blob visibility.
                "SELECT name, scope FROM tokens WHERE secret_hash = x'00' AND revoked_at IS NULL",
                "SELECT 1 FROM tokens WHERE name = 'x' AND revoked_at IS NULL",
                """
                SELECT DISTINCT ct.blob_digest, m.name FROM checkpoint_tensors ct JOIN checkpoints c ON c.id = ct.checkpoint_id
                JOIN models m ON m.id = c.model_id WHERE ct.blob_digest IN ('a', 'b')
                """,
            ].map { sql in try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql).map { $0["detail"] as String }.joined(separator: "; ") }
        }
        for plan in plans {
            #expect(!plan.contains("SCAN"), "full scan: \(plan)")
        }
    }
}
