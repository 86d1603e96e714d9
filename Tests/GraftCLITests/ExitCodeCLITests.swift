import Foundation
import GRDB
import Graft
import GraftTestSupport
import SafeTensors
import Testing

/// Runs `arguments` and checks the documented exit code, one line on stderr naming `text`.
@discardableResult
private func expectExit(
    _ cli: CLI, _ arguments: [String], _ code: Int32, mentions text: String, environment: [String: String] = [:],
    sourceLocation: SourceLocation = #_sourceLocation
) throws -> ProcessOutput {
    let output = try cli.run(arguments, environment: environment)
    #expect(output.status == code, "graft \(arguments.joined(separator: " ")): \(output.stderr)", sourceLocation: sourceLocation)
    #expect(output.stderr.contains(text), "stderr: \(output.stderr)", sourceLocation: sourceLocation)
    #expect(output.stderr.split(separator: "\n").count == 1, "one line: \(output.stderr)", sourceLocation: sourceLocation)
    return output
}

/// A registry with base `cnn` and student `ft` (features frozen) with two checkpoints, and
/// `ft2` derived from ft@2.
private func family() throws -> CLI {
    let cli = CLI()
    #expect(try cli.run(["init"]).status == 0)
    let base = try cli.base()
    #expect(try cli.run(["base", "add", base, "--name", "cnn"]).status == 0)
    #expect(try cli.run(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features"]).status == 0)
    for step in 1...2 {
        #expect(try cli.run(["checkpoint", "add", "ft", try headVariant(cli, step)]).status == 0)
    }
    #expect(try cli.run(["student", "create", "ft2", "--from", "ft@2"]).status == 0)
    #expect(try cli.run(["checkpoint", "add", "ft2", try headVariant(cli, 3)]).status == 0)
    return cli
}

/// The synthetic base with its classifier changed by `variant`: a distinct file per variant.
func headVariant(_ cli: CLI, _ variant: Int) throws -> String {
    var tensors = SyntheticBase.tensors(seed: 7)
    let head = tensors.firstIndex { $0.name == "classifier.weight" }!
    tensors[head].bytes[0] ^= UInt8(variant)
    tensors[head].bytes[1] ^= UInt8(variant)
    let path = cli.directory.file("head\(variant).safetensors")
    try SafeTensorsWriter.write(tensors, metadata: ["format": "pt", "variant": "\(variant)"], to: path)
    return path
}

private func database(_ cli: CLI) throws -> DatabaseQueue { try DatabaseQueue(path: cli.registry + "/graft.sqlite") }

private func count(_ cli: CLI, _ sql: String) throws -> Int {
    try database(cli).read { db in try Int.fetchOne(db, sql: sql) ?? -1 }
}

@Suite("Exit codes and rarely used commands through the CLI")
struct ExitCodeCLITests {
    @Test("help lists exactly the commands docs/CLI.md documents, subcommands included")
    func helpMatchesDocs() throws {
        func subcommands(_ arguments: [String]) throws -> [String] {
            let help = try CLI().run(arguments + ["--help"], registry: false).stdout
            guard let section = help.components(separatedBy: "SUBCOMMANDS:\n").dropFirst().first else { return [] }
            return section.split(separator: "\n").compactMap { line in
                // Entries are indented two spaces; wrapped abstracts are indented further.
                guard line.hasPrefix("  "), !line.hasPrefix("   "), let word = line.split(separator: " ").first else { return nil }
                return word.allSatisfy({ $0.isLowercase || $0 == "-" }) ? String(word) : nil
            }
        }
        var listed = Set<String>()
        for command in try subcommands([]) {
            let nested = try subcommands([command])
            if nested.isEmpty { listed.insert(command) } else { for sub in nested { listed.insert("\(command) \(sub)") } }
        }
        let docs = try String(contentsOfFile: packageRoot + "/docs/CLI.md", encoding: .utf8)
        let groups = Set(listed.compactMap { $0.contains(" ") ? String($0.split(separator: " ")[0]) : nil })
        var documented = Set<String>()
        let pattern = try NSRegularExpression(pattern: "`graft ([a-z-]+)(?: ([a-z-]+))?")
        for match in pattern.matches(in: docs, range: NSRange(docs.startIndex..., in: docs)) {
            let first = String(docs[Range(match.range(at: 1), in: docs)!])
            if groups.contains(first), let second = Range(match.range(at: 2), in: docs) {
                documented.insert("\(first) \(docs[second])")
            } else if !groups.contains(first) {
                documented.insert(first)
            }
        }
        #expect(listed.count >= 27, "\(listed.sorted())")
        #expect(
            listed == documented,
            "in help only: \(listed.subtracting(documented).sorted()); in docs only: \(documented.subtracting(listed).sorted())")
    }

    @Test("exit 1: an unexpected database error (a table gone) is one line, never a crash")
    func internalError() throws {
        let cli = try family()
        try database(cli).write { db in try db.execute(sql: "PRAGMA foreign_keys = OFF; DROP TABLE advisories") }
        try expectExit(cli, ["advisory", "list"], 1, mentions: "database error")
    }

    @Test("exit 2: export refuses a damaged blob and writes no output file; other checkpoints still export")
    func exportDamaged() throws {
        let cli = try family()
        // ft2@1's head is its own blob (the features are cnn's, shared by every checkpoint).
        let detail = try #require(try cli.json(["show", "ft2@1"]) as? [String: Any])
        let tensors = (detail["layers"] as? [[String: Any]] ?? []).flatMap { $0["tensors"] as? [[String: Any]] ?? [] }
        let digest = try #require(tensors.first { $0["name"] as? String == "classifier.weight" }?["digest"] as? String)
        let hex = String(digest.dropFirst("sha256:".count))
        let path = cli.registry + "/blobs/sha256/" + hex.prefix(2) + "/" + hex
        chmod(path, 0o644)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count / 2] ^= 0xFF
        try writeFile(path, bytes)
        let out = cli.directory.file("out.safetensors")
        try expectExit(cli, ["export", "ft2@1", "-o", out], 2, mentions: "is damaged")
        #expect(!FileManager.default.fileExists(atPath: out), "no partial output")
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: cli.directory.path).allSatisfy { !$0.hasPrefix("out.safetensors") },
            "no temporary output either")
        #expect(try cli.run(["export", "ft@2", "-o", out]).status == 0, "a checkpoint without the damaged blob exports")
        #expect(FileManager.default.contentsEqual(atPath: out, andPath: try headVariant(cli, 2)))
    }

    @Test("exit 69 only after the busy timeout: a write waits for another process's lock, then fails with nothing written")
    func busy() throws {
        let cli = try family()
        let python = "/usr/bin/python3"
        guard FileManager.default.isExecutableFile(atPath: python) else {
            Issue.record("\(python) is needed to hold the registry's write lock")
            return
        }
        // Another process holds SQLite's write lock until its stdin closes.
        let holder = try ChildProcess(
            python,
            [
                "-c",
                """
                import sqlite3,sys\nc=sqlite3.connect(sys.argv[1], isolation_level=None)\nc.execute('BEGIN\
                 IMMEDIATE')\nprint('locked', flush=True)\nsys.stdin.read()
                """,
                cli.registry + "/graft.sqlite",
            ],
            stdin: .pipe, stdout: .pipe)
        defer {
            try? holder.input?.close()
            holder.wait()
        }
        let announced = String(decoding: holder.output?.availableData ?? Data(), as: UTF8.self)
        #expect(announced.contains("locked"))
        let started = Date()
        let refused = try expectExit(
            cli, ["base", "add", try cli.base("other.safetensors", seed: 99), "--name", "late"], 69, mentions: "busy",
            environment: ["GRAFT_BUSY_TIMEOUT": "1.5"])
        let waited = Date().timeIntervalSince(started)
        #expect(waited >= 1.4, "exit \(refused.status) after \(waited) s: before the busy timeout")
        #expect(waited < 15, "GRAFT_BUSY_TIMEOUT=1.5 was not honoured: \(waited) s (the default is 30 s)")
        #expect(filesUnder(cli.registry + "/tmp").isEmpty)
        try? holder.input?.close()
        holder.wait()
        #expect(try count(cli, "SELECT count(*) FROM models WHERE name = 'late'") == 0)
        // Released, the same command goes through.
        #expect(try cli.run(["base", "add", try cli.base("other.safetensors", seed: 99), "--name", "late"]).status == 0)
        try expectExit(cli, ["list"], 64, mentions: "GRAFT_BUSY_TIMEOUT", environment: ["GRAFT_BUSY_TIMEOUT": "soon"])
    }

    @Test("exit 73 for a database that is not SQLite; exit 76 for a migration that differs from the shipped one")
    func damagedAndIncompatible() throws {
        let cli = try family()
        try database(cli).write { db in try db.execute(sql: "UPDATE graft_migrations SET checksum = 'x' WHERE version = 2") }
        try expectExit(cli, ["list"], 76, mentions: "differs from the one this graft ships")
        let other = CLI()
        #expect(try other.run(["init"]).status == 0)
        for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: other.registry + "/graft.sqlite" + suffix) }
        try writeFile(other.registry + "/graft.sqlite", Array(repeating: 0x5A, count: 8192))
        try expectExit(other, ["list"], 73, mentions: "damaged or not SQLite")
        try expectExit(other, ["base", "add", try other.base(), "--name", "x"], 73, mentions: "damaged or not SQLite")
        #expect(filesUnder(other.registry + "/blobs").isEmpty, "nothing stored into a registry it cannot index")
    }

    @Test("model rm: exit 80 with descendants; --dry-run changes nothing; --cascade removes the subtree and its metrics")
    func modelRemoval() throws {
        let cli = try family()
        #expect(try cli.run(["metric", "log", "ft2@1", "acc=0.5"]).status == 0)
        try expectExit(cli, ["model", "rm", "ft"], 80, mentions: "ft2")
        try expectExit(cli, ["model", "rm", "ft"], 80, mentions: "--cascade removes them too")
        let before = try count(cli, "SELECT count(*) FROM checkpoints")
        let dry = try #require(try cli.json(["model", "rm", "ft", "--cascade", "--dry-run"]) as? [String: Any])
        #expect(dry["dry_run"] as? Bool == true)
        #expect(dry["models"] as? [String] == ["ft2", "ft"], "deepest descendant first")
        #expect(Set(dry["checkpoints"] as? [String] ?? []) == ["ft@1", "ft@2", "ft2@1"])
        #expect(try count(cli, "SELECT count(*) FROM checkpoints") == before, "dry run removed nothing")
        let text = try cli.run(["model", "rm", "ft", "--cascade", "--dry-run"])
        #expect(text.stdout.contains("would remove model(s): ft2, ft"))
        let removed = try cli.run(["model", "rm", "ft", "--cascade"])
        #expect(removed.status == 0 && removed.stdout.contains("removed model(s): ft2, ft"), "\(removed.stderr)")
        #expect(try count(cli, "SELECT count(*) FROM models") == 1)
        #expect(try count(cli, "SELECT count(*) FROM metrics") == 0)
        #expect(try cli.run(["verify", "--read-data"]).status == 0)
        #expect(try cli.run(["gc", "--grace", "0"]).status == 0)
        #expect(try cli.run(["export", "cnn", "-o", cli.directory.file("still.safetensors")]).status == 0, "the base's blobs stay")
    }

    @Test("checkpoint rm --dry-run changes nothing; then rm frees what only that checkpoint used")
    func checkpointRemoval() throws {
        let cli = try family()
        let dry = try #require(try cli.json(["checkpoint", "rm", "ft@1", "--dry-run"]) as? [String: Any])
        #expect(dry["dry_run"] as? Bool == true && dry["checkpoints"] as? [String] == ["ft@1"])
        #expect((dry["bytes_freed"] as? Int ?? 0) > 0)
        #expect(try count(cli, "SELECT count(*) FROM checkpoints c JOIN models m ON m.id = c.model_id WHERE m.name = 'ft'") == 2)
        try expectExit(cli, ["checkpoint", "rm", "ft@2"], 80, mentions: "ft2")
        let removed = try #require(try cli.json(["checkpoint", "rm", "ft@1"]) as? [String: Any])
        #expect(removed["dry_run"] as? Bool == false && removed["bytes_freed"] as? Int == dry["bytes_freed"] as? Int)
        #expect(try cli.json(["checkpoint", "list", "ft"]) as? [[String: Any]] != nil)
        #expect(try count(cli, "SELECT count(*) FROM checkpoints c JOIN models m ON m.id = c.model_id WHERE m.name = 'ft'") == 1)
    }

    @Test("advisory list --all shows resolved advisories; lineage --ancestors shows only the way up")
    func advisoryListAllAndAncestors() throws {
        let cli = try family()
        #expect(try cli.run(["advisory", "add", "cnn", "--id", "OLD-1", "--severity", "low"]).status == 0)
        #expect(try cli.run(["advisory", "add", "ft@1", "--id", "NEW-1", "--severity", "high"]).status == 0)
        #expect(try cli.run(["advisory", "resolve", "OLD-1"]).status == 0)
        let open = try #require(try cli.json(["advisory", "list"]) as? [[String: Any]])
        #expect(open.map { $0["id"] as? String } == ["NEW-1"])
        let all = try #require(try cli.json(["advisory", "list", "--all"]) as? [[String: Any]])
        #expect(Set(all.compactMap { $0["id"] as? String }) == ["OLD-1", "NEW-1"])
        let text = try cli.run(["advisory", "list", "--all"]).stdout
        #expect(text.contains("OLD-1") && text.contains("resolved") && text.contains("NEW-1") && text.contains("open"))
        let up = try #require(try cli.json(["lineage", "ft2", "--ancestors"]) as? [String: Any])
        #expect((up["ancestors"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == ["ft", "cnn"])
        #expect((up["descendants"] as? [Any])?.isEmpty ?? true)
        let down = try #require(try cli.json(["lineage", "ft", "--descendants"]) as? [String: Any])
        #expect((down["ancestors"] as? [Any])?.isEmpty ?? true)
        #expect((down["descendants"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == ["ft2"])
    }

    @Test("--freeze, --train, --drop and --reinit through the CLI: the manifest's states, ties by action")
    func manifestFlags() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        #expect(try cli.run(["base", "add", try cli.base(), "--name", "cnn"]).status == 0)
        func states(_ flags: [String]) throws -> [String: String] {
            let name = "s\(Int.random(in: 0..<1_000_000))"
            let created = try cli.run(["student", "create", name, "--from", "cnn@1"] + flags)
            guard created.status == 0 else { throw HelperError(created.stderr) }
            let detail = try #require(try cli.json(["show", name]) as? [String: Any])
            let entries = try #require((detail["manifest"] as? [String: Any])?["entries"] as? [[String: Any]])
            return Dictionary(uniqueKeysWithValues: entries.map { ($0["name"] as! String, $0["state"] as! String) })
        }
        let s = try states(["--freeze", "features", "--train", "features.4", "--drop", "classifier.bias", "--reinit", "classifier.weight"])
        #expect(s["features.0.weight"] == "frozen" && s["features.1.running_mean"] == "frozen")
        #expect(s["features.4.weight"] == "trainable" && s["features.4.bias"] == "trainable")
        #expect(s["classifier.bias"] == "dropped" && s["classifier.weight"] == "new")
        // Ties of specificity, each pair given in both orders.
        for (flags, expected) in [
            (["--freeze", "classifier", "--train", "classifier"], "trainable"),
            (["--train", "classifier", "--reinit", "classifier"], "new"),
            (["--reinit", "classifier", "--drop", "classifier"], "dropped"),
        ] {
            #expect(try states(flags)["classifier.weight"] == expected, "\(flags)")
            let swapped = [flags[2], flags[3], flags[0], flags[1]]
            #expect(try states(swapped)["classifier.weight"] == expected, "\(swapped)")
        }
        // A glob with as many literal characters as a plain prefix ties; the action decides.
        #expect(try states(["--freeze", "features.1*", "--train", "features.1"])["features.1.running_mean"] == "trainable")
        let refused = try cli.run(["student", "create", "bad", "--from", "cnn@1", "--drop", "head"])
        #expect(refused.status == 64 && refused.stderr.contains("--drop head matches no tensor"))
    }

    @Test("a file over 100 MB shows a progress line on stderr; smaller ones do not")
    func progressLine() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        let big = cli.directory.file("big.safetensors")
        let elements = 26_000_000  // 104 MB of float32
        try SafeTensorsWriter.write(
            [TensorData(name: "w", dtype: .f32, shape: [elements], bytes: [UInt8](repeating: 1, count: elements * 4))], metadata: nil,
            to: big)
        let output = try cli.run(["base", "add", big, "--name", "big"])
        #expect(output.status == 0, "\(output.stderr)")
        #expect(output.stderr.contains("importing \(big): 100% of"), "\(output.stderr.suffix(200))")
        #expect(output.stderr.hasSuffix("\n"))
        try FileManager.default.removeItem(atPath: big)
        let small = try cli.run(["base", "add", try cli.base(), "--name", "small"])
        #expect(small.status == 0 && small.stderr.isEmpty)
    }
}
