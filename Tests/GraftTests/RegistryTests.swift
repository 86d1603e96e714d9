import Foundation
import GRDB
import GraftTestSupport
import SafeTensors
import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal
@testable import GraftSQLite

@Suite("Registry: create, import, export")
struct RegistryTests {
    @Test("create makes the layout; a second create opens the same registry")
    func createAndReopen() async throws {
        let directory = TemporaryDirectory()
        let root = directory.file("nested/registry")
        let (registry, created) = try await Registry.create(at: root)
        #expect(created)
        for path in [registry.layout.database, registry.layout.sha256, registry.layout.tmp] {
            #expect(FileManager.default.fileExists(atPath: path))
        }
        let again = try await Registry.create(at: root)
        #expect(!again.created)
        _ = try await Registry.open(at: root)
    }

    @Test("a directory holding only README.md can become a registry; other contents are refused")
    func createInExistingDirectory() async throws {
        let directory = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory.file("ok"), withIntermediateDirectories: true)
        try writeFile(directory.file("ok/README.md"), Array("hi".utf8))
        #expect(try await Registry.create(at: directory.file("ok")).created)
        try FileManager.default.createDirectory(atPath: directory.file("busy"), withIntermediateDirectories: true)
        try writeFile(directory.file("busy/photo.jpg"), [1])
        await #expect {
            _ = try await Registry.create(at: directory.file("busy"))
        } throws: { error in
            guard case GraftError.notARegistry(_, let reason) = error else { return false }
            return reason.contains("photo.jpg")
        }
        #expect(filesUnder(directory.file("busy")) == ["photo.jpg"])
        try writeFile(directory.file("plainfile"), [1])
        await #expect { _ = try await Registry.create(at: directory.file("plainfile")) } throws: { error in
            if case GraftError.notARegistry = error { true } else { false }
        }
    }

    @Test("open refuses a missing directory and a directory that is not a registry")
    func openRefusesNonRegistry() async throws {
        let directory = TemporaryDirectory()
        for path in [directory.file("absent"), directory.path] {
            await #expect { _ = try await Registry.open(at: path) } throws: { error in
                guard case GraftError.notARegistry(_, let reason) = error else { return false }
                return reason == "no such directory" || reason == "it has no graft.sqlite"
            }
        }
        try FileManager.default.createDirectory(atPath: directory.file("fake/blobs/sha256"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: directory.file("fake/tmp"), withIntermediateDirectories: true)
        try writeFile(directory.file("fake/graft.sqlite"), Array(String(repeating: "not a database ", count: 100).utf8))
        await #expect { _ = try await Registry.open(at: directory.file("fake")) } throws: { error in
            if case GraftError.corruptDatabase = error { true } else { false }
        }
    }

    @Test("a base imports as NAME@1; a second import of the same tensors stores nothing new")
    func importAndDedup() async throws {
        let test = try await TestRegistry()
        let path = try test.writeBase()
        let size = try fileBytes(path).count
        let first = try await test.registry.addBase(
            name: ModelName("cnn"), file: path,
            provenance: Provenance(
                source: "https://example.org/cnn", license: "mit", dataset: "fashion-mnist", architecture: "cnn-small",
                task: "classification"))
        #expect(first.checkpoint == "cnn@1")
        #expect(first.tensors == 11)
        #expect(first.parameters == baseTensors(seed: 1).reduce(0) { $0 + $1.bytes.count / ($1.dtype == .i64 ? 8 : 4) })
        #expect(first.logicalBytes == size)
        #expect(first.bytesStored == baseTensors(seed: 1).reduce(0) { $0 + $1.bytes.count })
        #expect(first.bytesAlreadyPresent == 0)
        let second = try await test.registry.addBase(name: ModelName("cnn-copy"), file: path)
        #expect(second.bytesStored == 0)
        #expect(second.bytesAlreadyPresent == first.bytesStored)
        #expect(second.digest == first.digest)
        #expect(try test.rows("SELECT count(*) FROM blobs") == 11)
        #expect(!test.storedFiles.contains { $0.hasPrefix("tmp/") }, "no temp files left")
        let detail = try await test.registry.model(ModelName("cnn"))
        #expect(detail.model.provenance.license == "mit")
        #expect(detail.model.provenance.dataset == "fashion-mnist")
        #expect(detail.checkpoints.map(\.ref) == ["cnn@1"])
        #expect(detail.latest?.layers.map(\.layer) == ["classifier", "features.0", "features.1", "features.4", "features.10"])
        #expect(detail.latest?.checkpoint.metadata == ["format": "pt"])
    }

    @Test("the registry is private whatever the umask: directories 0700, the database and its WAL and SHM 0600, blobs 0400")
    func privateFiles() async throws {
        let directory = TemporaryDirectory()
        // The permissive umask a shared machine's account may have; restored for other tests.
        let previous = umask(0)
        let created: (registry: Registry, created: Bool)
        do {
            defer { umask(previous) }
            created = try await Registry.create(at: directory.file("parent/registry"))
            _ = try await created.registry.addBase(name: ModelName("cnn"), file: try TestRegistry.base(in: directory))
        }
        let registry = created.registry
        func mode(_ path: String) throws -> Int {
            try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int ?? -1
        }
        let root = registry.layout.root
        #expect(try mode(directory.file("parent")) == 0o755, "a parent the user named is made as mkdir -p would")
        for path in [root, root + "/blobs", root + "/blobs/sha256", root + "/tmp"] { #expect(try mode(path) == 0o700, "\(path)") }
        // The database holds token hashes; its WAL and SHM (present while it is open) too.
        _ = try await registry.createToken(name: "t", scope: .read, models: nil)
        for suffix in ["", "-wal", "-shm"] {
            #expect(try mode(root + "/graft.sqlite" + suffix) == 0o600, "graft.sqlite\(suffix)")
        }
        let blobs = filesUnder(root + "/blobs/sha256")
        #expect(!blobs.isEmpty)
        for blob in blobs {
            #expect(try mode(root + "/blobs/sha256/" + blob) == 0o400)
            #expect(try mode((root + "/blobs/sha256/" + blob).components(separatedBy: "/").dropLast().joined(separator: "/")) == 0o700)
        }
    }

    @Test("small tensors live inline in SQLite, large ones as read-only blob files")
    func inlineThreshold() async throws {
        let test = try await TestRegistry()
        let path = try test.writeBase()
        _ = try await test.registry.addBase(name: ModelName("cnn"), file: path)
        let large = baseTensors(seed: 1).filter { $0.bytes.count >= Registry.defaultInlineThreshold }
        #expect(test.storedFiles.count == large.count)
        for tensor in large {
            let digest = sha256Hex(tensor.bytes)
            let file = test.root + "/blobs/sha256/\(digest.prefix(2))/\(digest)"
            #expect(try fileBytes(file) == Data(tensor.bytes))
            let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
            #expect(mode == 0o400, "read-only, to the owner alone")
        }
        #expect(try test.rows("SELECT count(*) FROM blobs WHERE inline_data IS NOT NULL") == 11 - large.count)

        let noInline = try await TestRegistry(inlineThreshold: 0)
        _ = try await noInline.registry.addBase(name: ModelName("cnn"), file: try noInline.writeBase())
        #expect(noInline.storedFiles.count == 11)
    }

    @Test("export is byte-identical to the imported file, also for a file the reference library wrote")
    func exportByteIdentical() async throws {
        let test = try await TestRegistry()
        let path = try test.writeBase(metadata: ["format": "pt", "note": "x"])
        _ = try await test.registry.addBase(name: ModelName("cnn"), file: path)
        let out = test.directory.file("out.safetensors")
        let result = try await test.registry.export(.model(ModelName("cnn")), to: out)
        #expect(try fileBytes(out) == fileBytes(path))
        #expect(result.bytes == (try fileBytes(path).count))

        // A file written by the reference implementation, with padding and metadata of its own.
        let tensors = randomTensors(dtypes: [.f32, .bf16, .f16, .i64, .u8, .f8e4m3], seed: 9)
        let spec: [String: Any] = [
            "metadata": ["format": "pt"],
            "tensors": tensors.map {
                [
                    "name": $0.name, "dtype": $0.dtype.rawValue, "shape": $0.shape,
                    "hex": $0.bytes.map { String(format: "%02x", $0) }.joined(),
                ]
            },
        ]
        let specPath = test.directory.file("spec.json")
        try JSONSerialization.data(withJSONObject: spec).write(to: URL(fileURLWithPath: specPath))
        let reference = test.directory.file("reference.safetensors")
        _ = try ReferencePython.run(["write", specPath, reference])
        _ = try await test.registry.addBase(name: ModelName("ref"), file: reference)
        let out2 = test.directory.file("ref-out.safetensors")
        _ = try await test.registry.export(try Reference(parsing: "ref@1"), to: out2)
        #expect(try fileBytes(out2) == fileBytes(reference))
    }

    @Test("export refuses to overwrite unless asked")
    func exportOverwrite() async throws {
        let test = try await TestRegistry()
        _ = try await test.registry.addBase(name: ModelName("cnn"), file: try test.writeBase())
        let out = test.directory.file("exists.safetensors")
        try writeFile(out, [1, 2, 3])
        await expectGraftError("outputExists") { _ = try await test.registry.export(.model(ModelName("cnn")), to: out) }
        #expect(try fileBytes(out) == Data([1, 2, 3]))
        _ = try await test.registry.export(.model(ModelName("cnn")), to: out, overwrite: true)
        #expect(try fileBytes(out).count > 3)
    }

    @Test("every hostile file is refused with its error, leaving no rows, blobs or temp files", arguments: hostileCases)
    func hostileImport(_ hostile: HostileCase) async throws {
        let test = try await TestRegistry()
        _ = try await test.registry.addBase(name: ModelName("existing"), file: try test.writeBase())
        let before = test.storedFiles
        let path = test.directory.file("hostile.safetensors")
        try writeFile(path, hostile.bytes)
        await #expect {
            _ = try await test.registry.addBase(name: ModelName("hostile"), file: path)
        } throws: { error in
            guard case GraftError.invalidFile(_, let cause) = error else { return false }
            return hostile.expect(cause)
        }
        #expect(test.storedFiles == before)
        #expect(try test.rows("SELECT count(*) FROM models") == 1)
        #expect(try test.rows("SELECT count(*) FROM checkpoints") == 1)
        #expect(try test.rows("SELECT count(*) FROM blobs") == 11)
    }

    @Test("a taken name is refused before anything is written")
    func nameTaken() async throws {
        let test = try await TestRegistry()
        _ = try await test.registry.addBase(name: ModelName("cnn"), file: try test.writeBase())
        let before = test.storedFiles
        let other = try test.writeBase("other.safetensors", seed: 2)
        await #expect { _ = try await test.registry.addBase(name: ModelName("cnn"), file: other) } throws: { error in
            if case GraftError.modelExists(let name) = error { name.value == "cnn" } else { false }
        }
        #expect(test.storedFiles == before)
    }

    @Test("a missing input file is an input error, and nothing is written")
    func missingInput() async throws {
        let test = try await TestRegistry()
        await #expect { _ = try await test.registry.addBase(name: ModelName("x"), file: test.directory.file("nope.safetensors")) } throws: {
            error in
            if case GraftError.cannotReadInput = error { true } else { false }
        }
        #expect(try test.rows("SELECT count(*) FROM models") == 0)
    }

    @Test("several imports at once from many tasks all commit")
    func concurrentImports() async throws {
        let test = try await TestRegistry()
        let paths = try (0..<6).map { try test.writeBase("b\($0).safetensors", seed: UInt64($0 % 3)) }
        try await withThrowingTaskGroup(of: ImportResult.self) { group in
            for (index, path) in paths.enumerated() {
                group.addTask { try await test.registry.addBase(name: ModelName("m\(index)"), file: path) }
            }
            for try await _ in group {}
        }
        #expect(try await test.registry.models().count == 6)
        #expect(try test.rows("SELECT count(*) FROM blobs") == 33, "three distinct bases, shared by digest")
        #expect(try await test.registry.verify(readData: true).ok)
    }

    @Test("commits are synchronous=FULL by default; a relaxed bulk load uses NORMAL")
    func durability() async throws {
        let test = try await TestRegistry()
        #expect(
            try await (test.registry.metadata as! SQLiteMetadataStore).pool.read { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
                == 2)
        let relaxed = try await Registry.open(at: test.root, durability: .relaxed)
        #expect(
            try await (relaxed.metadata as! SQLiteMetadataStore).pool.read { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") } == 1)
        #expect(
            try await (relaxed.metadata as! SQLiteMetadataStore).pool.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
                == "wal")
    }

    @Test("stats: logical is the sum of file sizes, physical counts each blob once")
    func stats() async throws {
        let test = try await TestRegistry()
        #expect(try await test.registry.stats().dedupRatio == 1)
        let path = try test.writeBase()
        _ = try await test.registry.addBase(name: ModelName("a"), file: path)
        _ = try await test.registry.addBase(name: ModelName("b"), file: path)
        let stats = try await test.registry.stats()
        let size = try fileBytes(path).count
        let data = baseTensors(seed: 1).reduce(0) { $0 + $1.bytes.count }
        #expect(stats.models == 2 && stats.bases == 2 && stats.checkpoints == 2 && stats.tensors == 22 && stats.blobs == 11)
        #expect(stats.logicalBytes == 2 * size)
        #expect(stats.physicalBytes == data + 2 * (size - data))
        #expect(stats.dedupRatio > 1.9)
    }
}
