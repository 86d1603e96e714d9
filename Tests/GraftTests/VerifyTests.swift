import Foundation
import GRDB
import GraftTestSupport
import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal
@testable import GraftSQLite

@Suite("verify and damaged stores")
struct VerifyTests {
    /// A registry with two checkpoints sharing blobs, and the path of its largest blob file.
    func damagedSetup() async throws -> (TestRegistry, String, String) {
        let test = try await TestRegistry()
        let path = try test.writeBase()
        _ = try await test.registry.addBase(name: ModelName("a"), file: path)
        _ = try await test.registry.addBase(name: ModelName("b"), file: path)
        let largest = baseTensors(seed: 1).max { $0.bytes.count < $1.bytes.count }!
        let digest = sha256Hex(largest.bytes)
        return (test, test.root + "/blobs/sha256/\(digest.prefix(2))/\(digest)", digest)
    }

    @Test("a clean registry verifies, with and without reading data")
    func clean() async throws {
        let (test, _, _) = try await damagedSetup()
        let quick = try await test.registry.verify()
        #expect(quick.ok && quick.checkpoints == 2 && quick.blobs == 11 && quick.bytesRead == 0)
        let full = try await test.registry.verify(readData: true)
        #expect(full.ok && full.bytesRead == baseTensors(seed: 1).reduce(0) { $0 + $1.bytes.count })
    }

    @Test("a deleted blob is reported missing, naming every checkpoint that uses it")
    func deletedBlob() async throws {
        let (test, file, digest) = try await damagedSetup()
        try FileManager.default.removeItem(atPath: file)
        let report = try await test.registry.verify()
        #expect(report.problems.map(\.kind) == [.missing])
        #expect(report.problems.first?.digest.hex == digest)
        #expect(report.damagedCheckpoints == ["a@1", "b@1"])
    }

    @Test("stray files among the blobs fail verify; a well-placed orphan (an interrupted import's) is counted, not damage")
    func strayFiles() async throws {
        let (test, _, _) = try await damagedSetup()
        let orphan = sha256Hex(Array("orphan".utf8))
        try FileManager.default.createDirectory(atPath: test.root + "/blobs/sha256/\(orphan.prefix(2))", withIntermediateDirectories: true)
        try writeFile(test.root + "/blobs/sha256/\(orphan.prefix(2))/\(orphan)", [1])
        let withOrphan = try await test.registry.verify()
        #expect(withOrphan.ok && withOrphan.orphanFiles == 1 && withOrphan.strayFiles.isEmpty)
        try? FileManager.default.createDirectory(atPath: test.root + "/blobs/sha256/zz", withIntermediateDirectories: true)
        try writeFile(test.root + "/blobs/notes.txt", [1])
        try writeFile(test.root + "/blobs/sha256/\(orphan.prefix(2))/copy.bin", [1])
        let report = try await test.registry.verify(readData: true)
        #expect(!report.ok && report.problems.isEmpty)
        #expect(report.strayFiles == ["blobs/notes.txt", "blobs/sha256/\(orphan.prefix(2))/copy.bin", "blobs/sha256/zz"])
        _ = try await test.registry.gc(grace: 0)
        #expect(try await test.registry.verify().orphanFiles == 0)
    }

    @Test("a lineage record that disagrees with the edges and checkpoints it is kept from fails verify, naming the model")
    func lineageRecord() async throws {
        let (test, _, _) = try await damagedSetup()
        _ = try await test.registry.createStudent(
            name: ModelName("s"), from: Reference(parsing: "a@1"), manifest: .rules([], freezeThrough: nil))
        _ = try await test.registry.addCheckpoint(model: ModelName("s"), file: try test.writeBase())
        _ = try await test.registry.createStudent(
            name: ModelName("t"), from: Reference(parsing: "s"), manifest: .rules([], freezeThrough: nil))
        #expect(try await test.registry.verify().lineageProblems == [])
        // Moved under another base, a count off by one, an edge copy that lies, a summary that
        // lost a checkpoint and one for a metric nobody has.
        try await test.registry.logMetrics(Reference(parsing: "s@1"), [try MetricAssignment(parsing: "acc=0.5")])
        #expect(try await test.registry.verify().lineageProblems == [])
        try await DatabaseQueue(path: test.registry.layout.database).write { db in
            try db.execute(sql: "UPDATE metric_summaries SET count = 2 WHERE name = 'acc'")
            try db.execute(sql: "INSERT INTO metric_summaries SELECT model_id, 'ghost', '', lineage_path, 1, 1, 1 FROM metric_summaries")
            try db.execute(sql: "UPDATE models SET lineage_path = '/2/' || id || '/' WHERE name = 's'")
            try db.execute(sql: "UPDATE models SET checkpoint_count = 5 WHERE name = 'b'")
            try db.execute(sql: "UPDATE models SET relation = 'merge' WHERE name = 't'")
        }
        let report = try await test.registry.verify()
        #expect(!report.ok && report.problems.isEmpty)
        #expect(report.lineageProblems.map { String($0.prefix { $0 != ":" }) } == ["b", "s", "s", "s", "t", "t"])
        #expect(report.lineageProblems.contains("s: summary of acc: max 0.5, min 0.5 over 2, but max 0.5, min 0.5 over 1 checkpoints"))
        #expect(report.lineageProblems.contains("s: summary of ghost, a metric none of its checkpoints has"))
        #expect(report.lineageProblems.contains { $0.hasPrefix("b: checkpoint count 5, but 1 checkpoints") })
        #expect(report.lineageProblems.contains { $0.hasPrefix("s: lineage path /2/3/, expected /1/3/") })
        #expect(report.lineageProblems.contains { $0.hasPrefix("t: parent edge copied as merge") })
        #expect(
            report.lineageProblems.contains { $0.hasPrefix("t: lineage path /1/3/4/, expected /2/3/4/") },
            "a child's path follows its parent's")
    }

    @Test("a truncated blob is reported by size even without reading data")
    func truncatedBlob() async throws {
        let (test, file, _) = try await damagedSetup()
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file)
        try writeFile(file, [1, 2, 3])
        #expect(try await test.registry.verify().problems.map(\.kind) == [.wrongSize])
    }

    @Test("a flipped byte is found only by rehashing, and export refuses to write the damaged file")
    func flippedByte() async throws {
        let (test, file, _) = try await damagedSetup()
        var bytes = try fileBytes(file)
        bytes[bytes.count / 2] ^= 0x01
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file)
        try bytes.write(to: URL(fileURLWithPath: file))
        #expect(try await test.registry.verify().ok)
        let report = try await test.registry.verify(readData: true)
        #expect(report.problems.map(\.kind) == [.wrongDigest])
        #expect(report.damagedCheckpoints == ["a@1", "b@1"])

        let out = test.directory.file("out.safetensors")
        await #expect { _ = try await test.registry.export(.model(ModelName("a")), to: out) } throws: { error in
            if case GraftError.damagedBlob = error { true } else { false }
        }
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(filesUnder(test.directory.path).filter { $0.hasSuffix(".tmp") }.isEmpty, "no partial export left behind")
    }

    @Test("re-importing a file whose blob went missing stores it again (hash-first falls back to writing)")
    func reimportHeals() async throws {
        let (test, file, _) = try await damagedSetup()
        try FileManager.default.removeItem(atPath: file)
        let result = try await test.registry.addBase(name: ModelName("c"), file: test.directory.file("base.safetensors"))
        let largest = baseTensors(seed: 1).max { $0.bytes.count < $1.bytes.count }!
        #expect(result.bytesStored == largest.bytes.count, "only the missing blob is written again")
        #expect(FileManager.default.fileExists(atPath: file))
        #expect(try await test.registry.verify(readData: true).ok)
    }

    @Test("export of a checkpoint with a missing blob fails and leaves no file")
    func exportMissingBlob() async throws {
        let (test, file, _) = try await damagedSetup()
        try FileManager.default.removeItem(atPath: file)
        let out = test.directory.file("out.safetensors")
        await #expect { _ = try await test.registry.export(.model(ModelName("b")), to: out) } throws: { error in
            if case GraftError.damagedBlob(_, let reason) = error { reason.contains("missing") } else { false }
        }
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(filesUnder(test.directory.path).filter { $0.hasSuffix(".tmp") }.isEmpty)
    }

    @Test("damaged inline bytes are found by rehashing")
    func inlineDamage() async throws {
        let (test, _, _) = try await damagedSetup()
        try await DatabaseQueue(path: test.registry.layout.database).write { db in
            try db.execute(
                sql:
                    """
                    UPDATE blobs SET inline_data = zeroblob(byte_length) WHERE digest = (SELECT min(digest) FROM blobs WHERE\
                     inline_data IS NOT NULL)
                    """
            )
        }
        let report = try await test.registry.verify(readData: true)
        #expect(report.problems.map(\.kind) == [.wrongDigest])
        #expect(report.damagedCheckpoints == ["a@1", "b@1"])
    }
}
