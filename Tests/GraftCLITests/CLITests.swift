import Foundation
import GRDB
import Graft
import GraftTestSupport
import SafeTensors
import Testing

@Suite("graft commands")
struct CLITests {
    @Test("the happy path: init, base add, list, show, checkpoint list, export, verify, stats")
    func happyPath() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).stdout.contains("created registry"))
        #expect(try cli.run(["init"]).stdout.contains("already initialised"))
        let base = try cli.base()
        let add = try cli.run([
            "base", "add", base, "--name", "cnn", "--license", "mit", "--source", "https://example.org/w", "--dataset", "imagenet",
            "--architecture", "cnn-small", "--task", "vision",
        ])
        #expect(add.status == 0, "\(add.stderr)")
        #expect(add.stdout.contains("registered cnn@1"))
        #expect(add.stderr.isEmpty, "no progress line for small files")

        let list = try #require(try cli.json(["list"]) as? [[String: Any]])
        #expect(list.count == 1)
        #expect(list.first?["name"] as? String == "cnn")
        #expect(list.first?["kind"] as? String == "base")
        #expect((list.first?["provenance"] as? [String: Any])?["license"] as? String == "mit")

        let show = try cli.run(["show", "cnn"])
        for text in ["cnn (base)", "https://example.org/w", "imagenet", "cnn-small", "features.0", ".running_mean", "classifier"] {
            #expect(show.stdout.contains(text), "show lacks \(text)")
        }
        let detail = try #require(try cli.json(["show", "cnn@1"]) as? [String: Any])
        let layers = try #require(detail["layers"] as? [[String: Any]])
        #expect(layers.contains { $0["layer"] as? String == "features.1" && ($0["tensors"] as? [Any])?.count == 5 })

        let checkpoints = try #require(try cli.json(["checkpoint", "list", "cnn"]) as? [[String: Any]])
        #expect(checkpoints.map { $0["ref"] as? String } == ["cnn@1"])
        let digest = try #require(checkpoints.first?["digest"] as? String)

        let out = cli.directory.file("out.safetensors")
        #expect(try cli.run(["export", String(digest.prefix(19)), "-o", out]).status == 0)
        #expect(FileManager.default.contentsEqual(atPath: out, andPath: base))

        let verify = try cli.run(["verify", "--read-data"])
        #expect(verify.status == 0 && verify.stdout.contains("ok"))
        let stats = try #require(try cli.json(["stats"]) as? [String: Any])
        #expect(stats["models"] as? Int == 1)
        #expect(stats["logical_bytes"] as? Int == (try Data(contentsOf: URL(fileURLWithPath: base))).count)
    }

    @Test("`-` reads a safetensors file from standard input: base add and checkpoint add; a cut stream is exit 65, nothing stored")
    func standardInput() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        let base = try cli.base()
        let bytes = try Data(contentsOf: URL(fileURLWithPath: base))
        let add = try cli.run(["base", "add", "-", "--name", "piped"], input: bytes)
        #expect(add.status == 0 && add.stdout.contains("registered piped@1"), "\(add.stderr)")
        #expect(try cli.run(["student", "create", "s", "--from", "piped@1", "--freeze", "features"]).status == 0)
        let commit = try cli.run(["checkpoint", "add", "s", "-", "--step", "3"], input: bytes)
        #expect(commit.status == 0 && commit.stdout.contains("committed s@1"), "\(commit.stderr)")
        let out = cli.directory.file("out.safetensors")
        #expect(try cli.run(["export", "s@1", "-o", out]).status == 0)
        #expect(FileManager.default.contentsEqual(atPath: out, andPath: base))
        let cut = try cli.run(["checkpoint", "add", "s", "-"], input: bytes.prefix(bytes.count - 100))
        #expect(cut.status == 65 && cut.stderr.contains("standard input: truncated"), "\(cut.stderr)")
        #expect((try cli.json(["checkpoint", "list", "s"]) as? [[String: Any]])?.count == 1, "the cut commit left no checkpoint")
    }

    @Test("GRAFT_REGISTRY is used when --registry is absent; ./registry when neither is given")
    func registryResolution() throws {
        let cli = CLI()
        let viaEnv = cli.directory.file("env-registry")
        #expect(try cli.run(["init"], registry: false, environment: ["GRAFT_REGISTRY": viaEnv]).status == 0)
        #expect(FileManager.default.fileExists(atPath: viaEnv + "/graft.sqlite"))
        #expect(try cli.run(["init"], registry: false).status == 0)
        #expect(FileManager.default.fileExists(atPath: cli.directory.file("registry/graft.sqlite")))
        // --registry wins over the environment.
        let flag = cli.directory.file("flag-registry")
        #expect(try cli.run(["init", "--registry", flag], registry: false, environment: ["GRAFT_REGISTRY": viaEnv]).status == 0)
        #expect(FileManager.default.fileExists(atPath: flag + "/graft.sqlite"))
    }

    @Test("errors are one line on stderr with their documented exit code")
    func errorExitCodes() throws {
        let cli = CLI()
        func expectFailure(_ arguments: [String], code: Int32, mentions text: String, sourceLocation: SourceLocation = #_sourceLocation)
            throws
        {
            let output = try cli.run(arguments)
            #expect(output.status == code, "graft \(arguments.joined(separator: " ")): \(output.stderr)", sourceLocation: sourceLocation)
            #expect(output.stderr.contains(text), "stderr: \(output.stderr)", sourceLocation: sourceLocation)
            #expect(output.stderr.split(separator: "\n").count == 1, "one line: \(output.stderr)", sourceLocation: sourceLocation)
        }
        try expectFailure(["list"], code: 73, mentions: "graft init")
        #expect(try cli.run(["init"]).status == 0)
        let base = try cli.base()
        try expectFailure(["base", "add", base, "--name", "../evil"], code: 64, mentions: "invalid name")
        try expectFailure(
            ["base", "add", cli.directory.file("missing.safetensors"), "--name", "x"], code: 66, mentions: "missing.safetensors")
        let pickle = cli.directory.file("model.pt")
        try writeFile(pickle, [0x80, 0x02] + Array("cnumpy\n".utf8))
        try expectFailure(["base", "add", pickle, "--name", "p"], code: 65, mentions: "pickle is never loaded")
        let truncated = cli.directory.file("truncated.safetensors")
        try writeFile(truncated, Array(try Data(contentsOf: URL(fileURLWithPath: base)).dropLast(10)))
        try expectFailure(["base", "add", truncated, "--name", "t"], code: 65, mentions: "truncated")
        #expect(try cli.run(["base", "add", base, "--name", "cnn"]).status == 0)
        try expectFailure(["base", "add", base, "--name", "cnn"], code: 67, mentions: "exists already")
        try expectFailure(["show", "cnm"], code: 66, mentions: "did you mean `cnn`")
        try expectFailure(["show", "cnn@7"], code: 66, mentions: "checkpoints 1–1")
        try expectFailure(["show", "cnn@x/y"], code: 64, mentions: "invalid reference")
        try expectFailure(["show", "sha256:123"], code: 64, mentions: "12 to 64")
        let out = cli.directory.file("exists.safetensors")
        try writeFile(out, [1])
        try expectFailure(["export", "cnn", "-o", out], code: 67, mentions: "--force")
        #expect(try cli.run(["export", "cnn", "-o", out, "--force"]).status == 0)
        // --force replaces a directory at the output too (a file checkpoint exported where a tree was).
        let tree = cli.directory.file("tree")
        try FileManager.default.createDirectory(atPath: tree + "/sub", withIntermediateDirectories: true)
        try writeFile(tree + "/sub/x", [1])
        try expectFailure(["export", "cnn", "-o", tree], code: 67, mentions: "--force")
        #expect(try cli.run(["export", "cnn", "-o", tree, "--force"]).status == 0)
        #expect(FileManager.default.contents(atPath: tree) == FileManager.default.contents(atPath: base))
        #expect(try FileManager.default.contentsOfDirectory(atPath: cli.directory.path).filter { $0.hasPrefix(".tree.") }.isEmpty)

        let models = try DatabaseQueue(path: cli.registry + "/graft.sqlite").read { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM models")
        }
        #expect(models == 1, "failed commands wrote nothing")
        #expect(filesUnder(cli.registry + "/tmp").isEmpty)
    }

    @Test("verify exits 2 and names the damaged checkpoints")
    func verifyDamage() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        #expect(try cli.run(["base", "add", try cli.base(), "--name", "cnn"]).status == 0)
        let blob = try #require(filesUnder(cli.registry + "/blobs").first)
        try FileManager.default.removeItem(atPath: cli.registry + "/blobs/" + blob)
        let output = try cli.run(["verify"])
        #expect(output.status == 2)
        #expect(output.stdout.contains("DAMAGED") && output.stdout.contains("cnn@1"))
        let json = try cli.run(["verify", "--json"])
        #expect(json.status == 2)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(report["ok"] as? Bool == false)
        #expect(report["damaged_checkpoints"] as? [String] == ["cnn@1"])
    }

    @Test("human output never passes a control character to the terminal: escape sequences in stored text are shown escaped")
    func controlCharactersEscaped() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        #expect(try cli.run(["base", "add", try cli.base(), "--name", "cnn", "--description", "clean"]).status == 0)
        // Text written before the registry refused control characters, or sent by a hostile server.
        try DatabaseQueue(path: cli.registry + "/graft.sqlite").write { db in
            try db.execute(sql: "UPDATE models SET description = 'a' || char(27) || ']0;owned' || char(7) || 'b' || char(13) || 'c'")
        }
        let show = try cli.run(["show", "cnn"])
        #expect(show.status == 0)
        #expect(!show.stdout.unicodeScalars.contains { $0.value == 27 || $0.value == 7 || $0.value == 13 }, "\(show.stdout)")
        #expect(show.stdout.contains("a\\u{1B}]0;owned\\u{7}b\\u{D}c"), "\(show.stdout)")
        let json = try cli.run(["show", "cnn", "--json"])
        #expect(!json.stdout.unicodeScalars.contains { $0.value == 27 } && json.stdout.contains("\\u001b"), "JSON escapes it its own way")
        // New text with a control character is refused, naming it.
        let refused = try cli.run(["student", "create", "s", "--from", "cnn@1", "--description", "x\u{1B}[2J"])
        #expect(refused.status != 0 && refused.stderr.contains("control character U+001B"), "\(refused.stderr)")
    }

    @Test("verify exits 2 when a model's lineage record disagrees with its checkpoints")
    func verifyLineage() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        #expect(try cli.run(["base", "add", try cli.base(), "--name", "cnn"]).status == 0)
        try DatabaseQueue(path: cli.registry + "/graft.sqlite").write { db in
            try db.execute(sql: "UPDATE models SET checkpoint_count = 3")
        }
        let output = try cli.run(["verify"])
        #expect(output.status == 2)
        #expect(output.stdout.contains("LINEAGE cnn: checkpoint count 3, but 1 checkpoints"))
        #expect(output.stdout.contains("1 model(s) with an inconsistent lineage record"))
        let json = try cli.run(["verify", "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(json.status == 2 && report["ok"] as? Bool == false)
        #expect((report["lineage_problems"] as? [String])?.count == 1)
        #expect(report["stray_files"] as? [String] == [] && report["orphan_files"] as? Int == 0)
    }

    @Test("a registry from a newer graft is refused with exit 76")
    func newerSchema() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        try DatabaseQueue(path: cli.registry + "/graft.sqlite").write { db in
            try db.execute(sql: "INSERT INTO graft_migrations VALUES (42, 'future', 'x', 'now')")
        }
        let output = try cli.run(["list"])
        #expect(output.status == 76)
        #expect(output.stderr.contains("schema version 42"))
    }

    @Test("processes creating one registry and importing at the same moment do not race")
    func concurrentProcesses() async throws {
        let cli = CLI()
        let base = try cli.base()
        let results = try await withThrowingTaskGroup(of: ProcessOutput.self) { group in
            for index in 0..<4 {
                group.addTask { try cli.run(["init"]) }
                group.addTask {
                    // Import as soon as the registry exists (its database is linked into place complete).
                    for _ in 0..<400 where !FileManager.default.fileExists(atPath: cli.registry + "/graft.sqlite") {
                        try await Task.sleep(for: .milliseconds(5))
                    }
                    return try cli.run(["base", "add", base, "--name", "m\(index)"])
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        for result in results { #expect(result.status == 0, "\(result.stderr)") }
        let list = try #require(try cli.json(["list"]) as? [[String: Any]])
        #expect(list.count == 4)
        #expect(try cli.run(["verify", "--read-data"]).status == 0)
    }

    @Test(
        "the demo (reduced) trains a teacher, its students in the four modes and a baseline through the registry, and is safe to run again")
    func demo() throws {
        let cli = CLI()
        let first = try cli.run(["demo", "--quick"])
        #expect(first.status == 0, "\(first.stderr)")
        for expected in [
            "fmnist-teacher@1", "fmnist-5to9-fe@2", "fmnist-5to9-partial@2", "fmnist-5to9-full@2", "fmnist-5to9-lora@2",
            "fmnist-5to9-scratch@2", "BEST VAL ACC", "as full copies",
            "dedup ratio", "best fmnist-5to9-",
        ] {
            #expect(first.stdout.contains(expected), "\(expected)")
        }
        let lineage = try #require(try cli.json(["lineage", "fmnist-teacher"]) as? [String: Any])
        let descendants = try #require(lineage["descendants"] as? [[String: Any]])
        #expect(
            Set(descendants.compactMap { $0["mode"] as? String }) == ["feature-extraction", "partial-finetune", "full-finetune", "adapter"])
        let second = try cli.run(["demo", "--quick"])
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.stdout.contains("registered already"))
        #expect(second.stdout.contains("fmnist-5to9-fe-r2@2"))
        let stats = try #require(try cli.json(["stats"]) as? [String: Any])
        #expect(stats["models"] as? Int == 11)
        #expect(stats["adapter_models"] as? Int == 2)
        #expect((stats["dedup_ratio"] as? Double ?? 0) > 1.0)
        #expect(try cli.run(["verify", "--read-data"]).status == 0)

        // Exposure on the demo registry: the feature extractor holds nearly all the teacher, the
        // full fine-tune none of it — and is never called safe.
        #expect(first.stdout.contains("EXPOSURE") && first.stdout.contains("FROZEN DEPTH"))
        #expect(try cli.run(["advisory", "add", "fmnist-teacher", "--id", "ADV-1", "--severity", "high"]).status == 0)
        let affected = try cli.run(["affected", "fmnist-teacher"])
        #expect(affected.status == 0)
        let text = affected.stdout
        #expect(text.contains("exposure 0.0%: holds none of fmnist-teacher@"), "\(text)")
        #expect(!text.lowercased().contains("safe") && !text.lowercased().contains("not affected"))
        let reached = try #require(try cli.json(["affected", "fmnist-teacher"]) as? [[String: Any]])
        let byName = Dictionary(uniqueKeysWithValues: reached.map { ($0["model"] as? String ?? "", $0) })
        let fe = try #require(byName["fmnist-5to9-fe"])
        #expect((fe["exposure"] as? Double ?? 0) > 0.9 && (fe["frozen_depth"] as? Int ?? 0) > 0)
        #expect((fe["layers"] as? [[String: Any]])?.last?["identical"] as? Bool == false, "the head is new")
        let full = try #require(byName["fmnist-5to9-full"])
        #expect(full["exposure"] as? Double == 0 && (full["drift"] as? Double ?? 0) > 0)
        #expect(byName["fmnist-5to9-lora"]?["exposure"] as? Double ?? 0 > 0.9, "an adapter holds its parent's tensors")
        let pair = try #require(try cli.json(["exposure", "fmnist-5to9-partial", "--to", "fmnist-teacher"]) as? [String: Any])
        #expect(pair["frozen_depth"] as? Int == 4 && pair["ancestor"] as? String != nil)
    }
}
