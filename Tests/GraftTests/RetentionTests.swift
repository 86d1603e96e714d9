import Foundation
import GraftTestSupport
import SafeTensors
import Synchronization
import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal
@testable import GraftSQLite

/// A base and a student with three checkpoints, each changing the student's features.4 and
/// classifier; epoch metrics `acc` 0.5, 0.9, 0.7.
private func family(_ t: TestRegistry) async throws -> (base: ModelName, student: ModelName) {
    let base = try ModelName("base"), student = try ModelName("student")
    _ = try await t.registry.addBase(name: base, file: try t.writeBase())
    _ = try await t.registry.createStudent(
        name: student, from: try Reference(parsing: "base@1"), manifest: .rules([ManifestRule(.freeze, "features.0")], freezeThrough: nil))
    for (index, accuracy) in [0.5, 0.9, 0.7].enumerated() {
        var tensors = baseTensors(seed: 1)
        let changed = baseTensors(seed: UInt64(50 + index))
        for i in tensors.indices where tensors[i].name == "features.4.weight" || tensors[i].name == "classifier.weight" {
            tensors[i] = changed[i]
        }
        let path = t.directory.file("s\(index).safetensors")
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: path)
        _ = try await t.registry.addCheckpoint(model: student, file: path, metrics: [try MetricAssignment(name: "acc", value: accuracy)])
    }
    return (base, student)
}

/// features.4.weight and classifier.weight of one student checkpoint: the bytes only it holds.
private let perCheckpointBytes = 32 * 16 * 9 * 4 + 10 * 512 * 4

@Suite("Retention: gc, prune, rm")
struct RetentionTests {
    @Test("prune keeps the newest N, the best K and protected checkpoints, says why, and frees exactly the bytes only the others used")
    func prune() async throws {
        let t = try await TestRegistry()
        let (_, student) = try await family(t)
        _ = try await t.registry.createStudent(
            name: try ModelName("grandchild"), from: try Reference(parsing: "student@1"), manifest: .rules([], freezeThrough: nil))
        let dry = try await t.registry.prune(student, keepLast: 0, keepBest: 1, metric: "acc", dryRun: true)
        #expect(dry.checkpoints == ["student@3"] && dry.bytesFreed == perCheckpointBytes)
        #expect(try await t.registry.checkpoints(of: student).count == 3)
        let report = try await t.registry.prune(student, keepLast: 0, keepBest: 1, metric: "acc")
        #expect(report.checkpoints == ["student@3"])
        #expect(report.kept.map(\.checkpoint) == ["student@1", "student@2"])
        #expect(report.kept[0].reasons.joined().contains("grandchild"))
        #expect(report.kept[1].reasons.joined().contains("best 1 by acc"))
        #expect(report.bytesFreed == perCheckpointBytes)
        #expect(try await t.registry.checkpoints(of: student).map(\.number) == [1, 2])
        #expect(try await t.registry.verify(readData: true).ok)
        // Everything left is referenced: gc finds nothing.
        let gc = try await t.registry.gc(grace: 0)
        #expect(gc.blobsRemoved == 0 && gc.orphanFilesRemoved == 0 && gc.bytesFreed == 0)
        await expectGraftError("unknownMetric") { try await t.registry.prune(student, keepLast: 1, keepBest: 1, metric: "nope") }
    }

    @Test("checkpoint rm refuses a parent of students, an aliased checkpoint and a base's registered one, and changes nothing")
    func protectedRemovals() async throws {
        let t = try await TestRegistry()
        let (base, student) = try await family(t)
        _ = try await t.registry.tag(try Reference(parsing: "student@2"), alias: "prod")
        _ = try await t.registry.createStudent(
            name: try ModelName("child"), from: try Reference(parsing: "student@3"), manifest: .rules([], freezeThrough: nil))
        for (reference, reason) in [("base@1", "students derive from it"), ("student@2", "student@prod"), ("student@3", "child")] {
            await #expect { try await t.registry.removeCheckpoint(try Reference(parsing: reference)) } throws: { error in
                guard case GraftError.protected(_, let reasons) = error else { return false }
                return reasons.map(\.description).joined().contains(reason)
            }
        }
        let removed = try await t.registry.removeCheckpoint(try Reference(parsing: "student@1"))
        #expect(removed.checkpoints == ["student@1"] && removed.bytesFreed == perCheckpointBytes)
        #expect(try await t.registry.checkpoints(of: student).map(\.number) == [2, 3])
        #expect(try await t.registry.checkpoints(of: base).count == 1)
        #expect(try await t.registry.verify(readData: true).ok)
    }

    @Test("model rm is refused while descendants exist; --cascade removes the subtree, its metrics and its blobs")
    func removeModel() async throws {
        let t = try await TestRegistry()
        let (base, _) = try await family(t)
        await #expect { try await t.registry.removeModel(base) } throws: {
            "\($0)".contains("student") && "\($0)".contains("descendant(s)") && !"\($0)".contains("--")
        }
        let dry = try await t.registry.removeModel(base, cascade: true, dryRun: true)
        #expect(dry.models == ["student", "base"] && dry.checkpoints.count == 4)
        #expect(try await t.registry.models().count == 2)
        let report = try await t.registry.removeModel(base, cascade: true)
        #expect(report.models == ["student", "base"])
        #expect(try await t.registry.models().isEmpty)
        #expect(try t.rows("SELECT count(*) FROM blobs") == 0)
        #expect(try t.rows("SELECT count(*) FROM metrics") == 0)
        #expect(filesUnder(t.root + "/blobs").isEmpty, "\(filesUnder(t.root + "/blobs"))")
        #expect(report.bytesFreed == dry.bytesFreed && report.bytesFreed > 0)
    }

    @Test("gc removes orphan blob files and stale temp files only past the grace period; --dry-run removes nothing")
    func gc() async throws {
        let t = try await TestRegistry()
        _ = try await family(t)
        let orphan = Digest.of(Array("orphan".utf8))
        let orphanDirectory = t.root + "/blobs/sha256/" + orphan.hex.prefix(2)
        try? FileManager.default.createDirectory(atPath: orphanDirectory, withIntermediateDirectories: true)
        try writeFile(orphanDirectory + "/" + orphan.hex, Array(repeating: 1, count: 5000))
        try writeFile(t.root + "/tmp/123-abandoned.blob", Array(repeating: 2, count: 100))
        let young = try await t.registry.gc(grace: 3600)
        #expect(young.orphanFilesRemoved == 0 && young.temporaryFilesRemoved == 0 && young.keptForGrace == 2)
        let dry = try await t.registry.gc(grace: 0, dryRun: true)
        #expect(dry.orphanFilesRemoved == 1 && dry.temporaryFilesRemoved == 1 && dry.bytesFreed == 5000)
        #expect(FileManager.default.fileExists(atPath: orphanDirectory + "/" + orphan.hex))
        let report = try await t.registry.gc(grace: 0)
        #expect(report.orphanFilesRemoved == 1 && report.temporaryFilesRemoved == 1)
        #expect(!FileManager.default.fileExists(atPath: orphanDirectory + "/" + orphan.hex))
        #expect(!FileManager.default.fileExists(atPath: t.root + "/tmp/123-abandoned.blob"))
        #expect(try await t.registry.verify(readData: true).ok)
    }

    @Test("a blob that gc removes between an import's write and its commit is written again: the import succeeds")
    func vanishedBlobRetry() async throws {
        let t = try await TestRegistry()
        let path = try t.writeBase()
        let layout = t.registry.layout
        let stored = baseTensors(seed: 1).filter { $0.bytes.count >= Registry.defaultInlineThreshold }.map { Digest.of($0.bytes) }
        let removed = Mutex<Digest?>(nil)
        let result = try await t.registry.addBase(name: try ModelName("raced"), file: path) { _, _ in
            // In the first attempt, once a blob is in place but not committed, remove it, as
            // gc --grace 0 would.
            removed.withLock { taken in
                guard taken == nil, let digest = stored.first(where: { FileSystem.fileExists(layout.blobPath($0)) }) else { return }
                FileSystem.remove(layout.blobPath(digest))
                taken = digest
            }
        }
        let digest = try #require(removed.withLock { $0 })
        #expect(result.checkpoint == "raced@1")
        #expect(FileSystem.fileExists(layout.blobPath(digest)))
        #expect(try await t.registry.verify(readData: true).ok)
    }
}
