import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Testing

/// `graft copy` (issue 28): models with their whole history between registries — faithful
/// (every read answers the same on both sides, exports byte-identical), or refused; incremental;
/// complete after being killed anywhere and run again.
@Suite("graft copy: models with their history between registries")
struct CopyCLITests {
    /// Three generations under a base: `cnn` → `ft` (four checkpoints, the second pruned, so
    /// numbers have a gap; metrics on two splits, curve points, two aliases) → `ft2` (a student
    /// of ft@3); an open advisory on the base, a resolved one on ft, one on the checkpoint ft2@1.
    func family() throws -> CLI {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        #expect(try cli.run(["base", "add", try cli.base(), "--name", "cnn", "--license", "mit"]).status == 0)
        #expect(try cli.run(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features"]).status == 0)
        for step in 1...4 { try commit(cli, "ft", step: step) }
        #expect(try cli.run(["metric", "log", "ft@3", "acc=0.75", "--split", "test"]).status == 0)
        #expect(try cli.run(["metric", "log", "ft", "--step", "100", "loss=0.5"]).status == 0)
        #expect(try cli.run(["metric", "log", "ft", "--step", "200", "loss=0.25"]).status == 0)
        #expect(try cli.run(["student", "create", "ft2", "--from", "ft@3", "--freeze", "features"]).status == 0)
        try commit(cli, "ft2", step: 9)
        #expect(try cli.run(["tag", "ft@3", "production"]).status == 0)
        #expect(try cli.run(["tag", "ft@4", "candidate"]).status == 0)
        let pruned = try cli.run(["checkpoint", "rm", "ft@2"])
        #expect(pruned.status == 0, "\(pruned.stderr)")
        #expect(try cli.run(["advisory", "add", "cnn", "--id", "ADV-1", "--severity", "high", "--note", "poisoned"]).status == 0)
        #expect(try cli.run(["advisory", "add", "ft", "--id", "ADV-2", "--severity", "low"]).status == 0)
        #expect(try cli.run(["advisory", "resolve", "ADV-2"]).status == 0)
        #expect(try cli.run(["advisory", "add", "ft2@1", "--id", "ADV-3", "--severity", "medium"]).status == 0)
        return cli
    }

    /// Commits a checkpoint of `model` whose classifier differs by step.
    func commit(_ cli: CLI, _ model: String, step: Int, registry: String? = nil) throws {
        var tensors = SyntheticBase.tensors(seed: 7)
        tensors[tensors.firstIndex { $0.name == "classifier.weight" }!].bytes[step] ^= 0x5A
        let file = cli.directory.file("\(model)-\(step).safetensors")
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt", "step": "\(step)"], to: file)
        let added = try cli.run(
            ["checkpoint", "add", model, file, "--step", "\(step)", "--metric", "acc=0.\(step)"]
                + (registry.map { ["--registry", $0] } ?? []),
            registry: registry == nil)
        #expect(added.status == 0, "\(added.stderr)")
    }

    /// What a user reads about the family, every answer as JSON.
    func answers(_ cli: CLI, registry: String) throws -> [String] {
        func name(_ model: String) -> String { model }
        var commands: [[String]] = [
            ["lineage", name("cnn"), "--format", "json"], ["advisory", "list", "--all", "--json"],
            ["best", "--metric", "acc", "--under", name("cnn"), "--include-flagged", "--json"], ["stats", "--json"],
        ]
        for model in ["cnn", "ft", "ft2"].map(name) {
            commands += [
                ["show", model, "--json"], ["affected", model, "--json"], ["metrics", model, "--json"],
                ["checkpoint", "list", model, "--json"],
            ]
        }
        for ref in ["cnn@1", "ft@1", "ft@3", "ft@4", "ft@production", "ft2@1"] {
            let (model, rest) = (String(ref.split(separator: "@")[0]), ref.split(separator: "@")[1])
            commands.append(["show", "\(name(model))@\(rest)", "--json"])
        }
        return try commands.map { arguments in
            let output = try cli.run(arguments + ["--registry", registry], registry: false)
            #expect(output.status == 0, "\(arguments): \(output.stderr)")
            // The database's own size is the one figure a copy need not share.
            return output.stdout.replacing(/"database_bytes" : \d+/, with: "")
        }
    }

    func exportsMatch(_ cli: CLI, _ refs: [String], from source: String, to destination: String) throws {
        for (index, ref) in refs.enumerated() {
            let (a, b) = (cli.directory.file("a\(index).safetensors"), cli.directory.file("b\(index).safetensors"))
            #expect(try cli.run(["export", ref, "-o", a, "--registry", source], registry: false).status == 0)
            #expect(try cli.run(["export", ref, "-o", b, "--registry", destination], registry: false).status == 0)
            #expect(
                FileManager.default.contents(atPath: a) != nil
                    && FileManager.default.contents(atPath: a) == FileManager.default.contents(atPath: b))
        }
    }

    @Test("everything, to a new registry: the same answers, byte-identical exports, verify clean; a re-run sends nothing")
    func faithful() throws {
        let cli = try family()
        let target = cli.directory.file("copy")
        let dry = try cli.json(["copy", "--to", target, "--dry-run"]) as? [String: Any]
        #expect(dry?["checkpoints"] as? Int == 5 && (dry?["blobs"] as? Int ?? 0) > 0)
        #expect(!FileManager.default.fileExists(atPath: target), "a dry run writes nothing")
        let result = try cli.json(["copy", "--to", target]) as? [String: Any]
        #expect(result?["checkpoints"] as? Int == 5)
        #expect(result?["bytes"] as? Int == dry?["bytes"] as? Int && result?["blobs"] as? Int == dry?["blobs"] as? Int)
        let models = (result?["models"] as? [[String: Any]]) ?? []
        #expect(models.map { $0["model"] as? String } == ["cnn", "ft", "ft2"], "parents before children")
        #expect(models.map { $0["action"] as? String } == ["created", "created", "created"])
        #expect(models.first { $0["model"] as? String == "ft" }?["checkpoints"] as? [Int] == [1, 3, 4])
        #expect(try answers(cli, registry: target) == (try answers(cli, registry: cli.registry)))
        try exportsMatch(cli, ["cnn@1", "ft@1", "ft@3", "ft@4", "ft2@1"], from: cli.registry, to: target)
        let verified = try cli.run(["verify", "--read-data", "--registry", target], registry: false)
        #expect(verified.status == 0, "\(verified.stdout) \(verified.stderr)")
        // On one file system the blobs are shared, not copied: one inode, two names.
        let blob = try #require(filesUnder(target + "/blobs/sha256").first)
        let (a, b) = (
            try FileManager.default.attributesOfItem(atPath: cli.registry + "/blobs/sha256/" + blob),
            try FileManager.default.attributesOfItem(atPath: target + "/blobs/sha256/" + blob)
        )
        #expect(a[.systemFileNumber] as? Int == b[.systemFileNumber] as? Int)
        // Numbers go on from where the source's would: after the gap, past the newest.
        try commit(cli, "ft", step: 5, registry: target)
        #expect(try cli.run(["show", "ft@5", "--registry", target], registry: false).status == 0)

        let again = try cli.json(["copy", "--to", cli.directory.file("copy2")]) as? [String: Any]
        #expect(again?["checkpoints"] as? Int == 5)
        let rerun = try cli.json(["copy", "--to", cli.directory.file("copy2")]) as? [String: Any]
        #expect(rerun?["checkpoints"] as? Int == 0 && rerun?["blobs"] as? Int == 0)
        #expect((rerun?["models"] as? [[String: Any]])?.allSatisfy { $0["action"] as? String == "unchanged" } == true)
    }

    @Test("a re-run sends only what changed: new checkpoints, metrics, curve points, aliases moved, advisories added or resolved")
    func incremental() throws {
        let cli = try family()
        let target = cli.directory.file("copy")
        #expect(try cli.run(["copy", "--to", target]).status == 0)
        try commit(cli, "ft2", step: 11)
        #expect(try cli.run(["metric", "log", "ft@4", "f1=0.5"]).status == 0)
        #expect(try cli.run(["metric", "log", "ft", "--step", "300", "loss=0.125"]).status == 0)
        #expect(try cli.run(["tag", "ft@4", "production"]).status == 0)
        #expect(try cli.run(["untag", "ft", "candidate"]).status == 0)
        #expect(try cli.run(["advisory", "resolve", "ADV-1"]).status == 0)
        #expect(try cli.run(["advisory", "add", "ft2", "--id", "ADV-4", "--severity", "critical"]).status == 0)
        let result = try cli.json(["copy", "--to", target]) as? [String: Any]
        let models = Dictionary(
            uniqueKeysWithValues: ((result?["models"] as? [[String: Any]]) ?? []).map { ($0["model"] as? String ?? "", $0) })
        #expect(result?["checkpoints"] as? Int == 1)
        // One new checkpoint whose only new tensor is the classifier (small tensors live inline).
        #expect((result?["blobs"] as? Int ?? 99) <= 1)
        #expect(models["ft2"]?["checkpoints"] as? [Int] == [2])
        #expect(models["ft"]?["metrics"] as? Int == 1 && models["ft"]?["curve_points"] as? Int == 1)
        #expect(models["ft"]?["aliases"] as? Int == 2)
        #expect(models["cnn"]?["advisories"] as? Int == 1 && models["ft2"]?["advisories"] as? Int == 1)
        #expect(models["cnn"]?["action"] as? String == "updated")
        #expect(try answers(cli, registry: target) == (try answers(cli, registry: cli.registry)))
        try exportsMatch(cli, ["ft2@2"], from: cli.registry, to: target)
    }

    @Test("another history under a name is refused with its descendants, nothing written; --rename copies beside it")
    func refusedAndRenamed() throws {
        let cli = try family()
        let target = cli.directory.file("other")
        // The destination has its own `ft`: a student of the same base, with other checkpoints.
        #expect(try cli.run(["copy", "cnn", "--to", target]).status == 0)
        #expect(
            try cli.run(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features", "--registry", target], registry: false)
                .status == 0)
        try commit(cli, "ft", step: 7, registry: target)
        let refused = try cli.run(["copy", "--to", target, "--json"])
        #expect(refused.status == 67, "\(refused.stderr)")
        #expect(refused.stderr.contains("--rename ft=NEW"), "\(refused.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(refused.stdout.utf8)) as? [String: Any]
        let actions = ((report?["models"] as? [[String: Any]]) ?? []).map { "\($0["model"] ?? ""):\($0["action"] ?? "")" }
        #expect(actions == ["cnn:unchanged", "ft:refused", "ft2:refused"])
        let held = try cli.run(["checkpoint", "list", "ft", "--json", "--registry", target], registry: false)
        #expect((try JSONSerialization.jsonObject(with: Data(held.stdout.utf8)) as? [Any])?.count == 1, "its ft is untouched")
        #expect(try cli.run(["show", "ft2", "--registry", target], registry: false).status == 66)

        let renamed = try cli.run(["copy", "ft", "ft2", "--to", target, "--rename", "ft=ft-upstream", "--json"])
        #expect(renamed.status == 0, "\(renamed.stderr)")
        let manifest = try cli.run(["show", "ft2", "--json", "--registry", target], registry: false)
        #expect(manifest.stdout.contains("ft-upstream@3"), "ft2's parent edge follows the rename")
        for (here, there) in [("ft", "ft-upstream"), ("ft2", "ft2")] {
            for command in [["show"], ["metrics"], ["checkpoint", "list"]] {
                let (a, b) = (
                    try cli.run(command + [here, "--json"]),
                    try cli.run(command + [there, "--json", "--registry", target], registry: false)
                )
                #expect(a.status == 0 && a.stdout == b.stdout.replacing("ft-upstream", with: "ft"), "\(command) \(here)")
            }
        }
        try exportsMatch(cli, ["ft2@1"], from: cli.registry, to: target)

        // A student alone: its parent must be there first.
        let lone = cli.directory.file("lone")
        let alone = try cli.run(["copy", "ft2", "--to", lone])
        #expect(alone.status == 67 && alone.stdout.contains("--with-ancestors"), "\(alone.stdout) \(alone.stderr)")
        let widened = try cli.json(["copy", "ft2", "--with-ancestors", "--to", lone]) as? [String: Any]
        #expect(((widened?["models"] as? [[String: Any]]) ?? []).map { $0["model"] as? String } == ["cnn", "ft", "ft2"])
        let down = try cli.json(["copy", "ft", "--with-descendants", "--to", lone, "--dry-run"]) as? [String: Any]
        #expect(
            ((down?["models"] as? [[String: Any]]) ?? []).map { "\($0["model"] ?? ""):\($0["action"] ?? "")" } == [
                "ft:unchanged", "ft2:unchanged",
            ])
    }

    @Test("a source blob whose bytes no longer match its digest stops the copy (exit 2) before any checkpoint names it")
    func damagedSource() throws {
        let cli = try family()
        // The classifier blob of ft@4, damaged in place.
        let blobs = filesUnder(cli.registry + "/blobs/sha256")
        let sizes = try blobs.map {
            ($0, try FileManager.default.attributesOfItem(atPath: cli.registry + "/blobs/sha256/" + $0)[.size] as? Int ?? 0)
        }
        let victim = try #require(sizes.min { $0.1 < $1.1 }?.0)
        let path = cli.registry + "/blobs/sha256/" + victim
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        var bytes = try #require(FileManager.default.contents(atPath: path))
        bytes[0] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: path))
        for target in [cli.directory.file("same-disk"), "/dev/shm/graft-copy-\(UInt32.random(in: 0 ... .max))"] {
            defer { if target.hasPrefix("/dev/shm") { try? FileManager.default.removeItem(atPath: target) } }
            guard !target.hasPrefix("/dev/shm") || FileManager.default.isWritableFile(atPath: "/dev/shm") else { continue }
            let copied = try cli.run(["copy", "--to", target])
            #expect(copied.status == 2, "\(target): \(copied.stderr)")
            #expect(!FileManager.default.fileExists(atPath: target + "/blobs/sha256/" + victim), "the damaged blob is not kept")
            let verified = try cli.run(["verify", "--registry", target], registry: false)
            #expect(verified.status == 0, "what was copied is sound: \(verified.stdout)")
        }
    }

    @Test("bad requests are refused before anything is written")
    func badRequests() throws {
        let cli = try family()
        let target = cli.directory.file("t")
        let unknown = try cli.run(["copy", "fx", "--to", target])
        #expect(unknown.status == 66 && unknown.stderr.contains("ft"), "\(unknown.stderr)")
        let rename = try cli.run(["copy", "--to", target, "--rename", "nope"])
        #expect(rename.status == 64)
        let notCopied = try cli.run(["copy", "cnn", "--to", target, "--rename", "ft=x"])
        #expect(notCopied.status == 64 && notCopied.stderr.contains("not among"), "\(notCopied.stderr)")
        let clash = try cli.run(["copy", "--to", target, "--rename", "ft=cnn"])
        #expect(clash.status == 64)
        let itself = try cli.run(["copy", "--to", cli.registry])
        #expect(itself.status == 64, "\(itself.stderr)")
        let bothRemote = try cli.run(["copy", "--registry", "http://127.0.0.1:9", "--to", "http://127.0.0.1:9"], registry: false)
        #expect(bothRemote.status == 64)
        #expect(!FileManager.default.fileExists(atPath: target))
    }

    @Test("to a server (admin token): the same answers there, only missing blobs PUT, re-runs send nothing; other tokens refused")
    func toServer() throws {
        let cli = try family()
        let remoteRoot = cli.directory.file("server")
        #expect(try cli.run(["init", "--registry", remoteRoot], registry: false).status == 0)
        let admin = try cli.run(["token", "create", "a", "--scope", "admin", "--registry", remoteRoot], registry: false).lastLine
        let writer = try cli.run(["token", "create", "w", "--scope", "write", "--registry", remoteRoot], registry: false).lastLine
        let server = try TestServer(registry: remoteRoot, logDirectory: cli.directory.path)
        defer { server.stop() }

        let denied = try cli.run(["copy", "--to", server.url], environment: ["GRAFT_TO_TOKEN": writer])
        #expect(denied.status == 81, "a write token may not write history as given: \(denied.stderr)")
        let dry = try cli.run(["copy", "--to", server.url, "--dry-run", "--json"], environment: ["GRAFT_TO_TOKEN": admin])
        #expect(dry.status == 0 && dry.stdout.contains("\"checkpoints\" : 5"), "\(dry.stdout) \(dry.stderr)")
        let listed = try cli.run(["list", "--json", "--registry", remoteRoot], registry: false)
        #expect((try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [Any])?.isEmpty == true, "a dry run writes nothing")
        let planned = try JSONSerialization.jsonObject(with: Data(dry.stdout.utf8)) as? [String: Any]

        let copied = try cli.run(["copy", "--to", server.url, "--json"], environment: ["GRAFT_TO_TOKEN": admin])
        #expect(copied.status == 0, "\(copied.stderr)")
        let result = try JSONSerialization.jsonObject(with: Data(copied.stdout.utf8)) as? [String: Any]
        #expect(result?["checkpoints"] as? Int == 5 && (result?["blobs"] as? Int ?? 0) > 0)
        #expect(result?["blobs"] as? Int == planned?["blobs"] as? Int && result?["bytes"] as? Int == planned?["bytes"] as? Int)
        #expect(try answers(cli, registry: remoteRoot) == (try answers(cli, registry: cli.registry)))
        try exportsMatch(cli, ["cnn@1", "ft@4", "ft2@1"], from: cli.registry, to: remoteRoot)

        // Incremental: a new checkpoint's one new blob, a moved alias, a resolved advisory.
        try commit(cli, "ft2", step: 13)
        #expect(try cli.run(["tag", "ft@1", "production"]).status == 0)
        #expect(try cli.run(["advisory", "resolve", "ADV-1"]).status == 0)
        let again = try cli.run(["copy", "--to", server.url, "--json"], environment: ["GRAFT_TO_TOKEN": admin])
        let second = try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any]
        #expect(again.status == 0 && second?["checkpoints"] as? Int == 1 && (second?["blobs"] as? Int ?? 9) <= 1, "\(again.stdout)")
        #expect(try answers(cli, registry: remoteRoot) == (try answers(cli, registry: cli.registry)))
        let rerun = try cli.run(["copy", "--to", server.url, "--json"], environment: ["GRAFT_TO_TOKEN": admin])
        let third = try JSONSerialization.jsonObject(with: Data(rerun.stdout.utf8)) as? [String: Any]
        #expect(third?["checkpoints"] as? Int == 0 && third?["blobs"] as? Int == 0)
    }

    @Test("a server checks every history it is sent before writing: times, data against digests, contents against the digest")
    func serverChecksWhatItIsSent() async throws {
        let cli = try family()
        let remoteRoot = cli.directory.file("server")
        #expect(try cli.run(["init", "--registry", remoteRoot], registry: false).status == 0)
        let admin = try cli.run(["token", "create", "a", "--scope", "admin", "--registry", remoteRoot], registry: false).lastLine
        let server = try TestServer(registry: remoteRoot, logDirectory: cli.directory.path)
        defer { server.stop() }
        #expect(try cli.run(["copy", "cnn", "ft", "--to", server.url], environment: ["GRAFT_TO_TOKEN": admin]).status == 0)

        let source = try await Registry.open(at: cli.registry)
        let parent = try #require(try await source.history(of: ModelName("ft")))
        var history = try #require(try await source.history(of: ModelName("ft2")))
        history.contents = try await source.contents(of: ModelName("ft2"), numbers: [1])
        let small = try #require(history.contents[0].proposal.tensors.firstIndex { $0.data != nil })
        func post(_ sent: ModelHistory) throws -> Int {
            let body = try GraftJSON.encoder().encode(CopyBatch(models: ["ft2"], histories: [sent, parent], renames: [:], dryRun: false))
            return try server.request("POST", "/v1/copy", token: admin, headers: ["Content-Type": "application/json"], body: Array(body))
                .status
        }
        var badTime = history
        badTime.checkpoints[0].createdAt = "yesterday"
        var badData = history
        var bytes = try #require(Data(base64Encoded: badData.contents[0].proposal.tensors[small].data ?? ""))
        bytes[0] ^= 1
        badData.contents[0].proposal.tensors[small].data = bytes.base64EncodedString()
        var badDigest = history
        badDigest.checkpoints[0].digest = Digest.of([1, 2, 3])
        var badAdvisory = history
        badAdvisory.advisories[0].model = "cnn"
        for (label, sent) in [("time", badTime), ("data", badData), ("digest", badDigest), ("advisory", badAdvisory)] {
            let status = try post(sent)
            #expect(status == 400, "\(label): \(status)")
        }
        let listed = try cli.run(["show", "ft2", "--registry", remoteRoot], registry: false)
        #expect(listed.status == 66, "nothing of ft2 was written")
        // Sent whole (its blobs first), the same history is taken.
        let copied = try cli.run(["copy", "ft2", "--to", server.url], environment: ["GRAFT_TO_TOKEN": admin])
        #expect(copied.status == 0, "\(copied.stderr)")
        #expect(try cli.run(["show", "ft2@1", "--registry", remoteRoot], registry: false).status == 0)
    }

    @Test("a copy to a server cut off at random moments (the client killed), then run again: complete, clean, nothing twice")
    func cutOffFromServer() throws {
        let cli = try family()
        for step in 20..<24 { try commit(cli, "ft2", step: step) }
        let expected = try answers(cli, registry: cli.registry)
        var generator = SeededGenerator(seed: 29)
        var span = 0.0
        var cut = 0
        let trials = setting("GRAFT_COPY_CUT_TRIALS", 5)
        for trial in 1...trials {
            let remoteRoot = cli.directory.file("server-\(trial)")
            #expect(try cli.run(["init", "--registry", remoteRoot], registry: false).status == 0)
            let admin = try cli.run(["token", "create", "a", "--scope", "admin", "--registry", remoteRoot], registry: false).lastLine
            let server = try TestServer(registry: remoteRoot, logDirectory: cli.directory.path)
            defer { server.stop() }
            let environment = ProcessInfo.processInfo.environment.merging(["GRAFT_TO_TOKEN": admin]) { _, new in new }
            let started = Date()
            let process = try ChildProcess(
                graftBinary, ["copy", "--to", server.url, "--registry", cli.registry], environment: environment,
                stdout: .file(cli.directory.file("cut.out")), stderr: .file(cli.directory.file("cut.err")))
            if span > 0 {
                usleep(useconds_t(span * Double.random(in: 0.05..<0.6, using: &generator) * 1e6))
                process.signal(SIGKILL)
            }
            let ended = process.wait()
            if span == 0 { span = Date().timeIntervalSince(started) }  // The first trial runs whole: how long a copy takes.
            if case .killed = ended { cut += 1 }
            let verified = try cli.run(["verify", "--registry", remoteRoot], registry: false)
            #expect(verified.status == 0, "trial \(trial): \(verified.stdout)")
            let rerun = try cli.run(["copy", "--to", server.url], environment: ["GRAFT_TO_TOKEN": admin])
            #expect(rerun.status == 0, "trial \(trial): \(rerun.stderr)")
            #expect(try answers(cli, registry: remoteRoot) == expected, "trial \(trial)")
        }
        // The first trial runs whole (to learn how long a copy takes); of the others, timing
        // decides which are cut mid-copy, and some must be.
        #expect(cut >= 1, "no copy was cut off in \(trials - 1) tries")
    }

    @Test("from a server (unconfined read token) to a new local registry: the same answers; a confined token is refused")
    func fromServer() throws {
        let cli = try family()
        let reader = try cli.run(["token", "create", "r", "--scope", "read"]).lastLine
        let confined = try cli.run(["token", "create", "c", "--scope", "read", "--models", "ft*"]).lastLine
        let server = try TestServer(registry: cli.registry, logDirectory: cli.directory.path)
        defer { server.stop() }
        let target = cli.directory.file("local")
        let refused = try cli.run(
            ["copy", "--registry", server.url, "--to", target], registry: false, environment: ["GRAFT_TOKEN": confined])
        #expect(refused.status == 81, "\(refused.stderr)")
        let copied = try cli.run(
            ["copy", "--registry", server.url, "--to", target, "--json"], registry: false, environment: ["GRAFT_TOKEN": reader])
        #expect(copied.status == 0, "\(copied.stderr)")
        #expect(try answers(cli, registry: target) == (try answers(cli, registry: cli.registry)))
        try exportsMatch(cli, ["cnn@1", "ft@3", "ft2@1"], from: cli.registry, to: target)
        #expect(try cli.run(["verify", "--read-data", "--registry", target], registry: false).status == 0)
        let rerun = try cli.run(
            ["copy", "--registry", server.url, "--to", target, "--json"], registry: false, environment: ["GRAFT_TOKEN": reader])
        #expect(rerun.status == 0 && rerun.stdout.contains("\"blobs\" : 0") && rerun.stdout.contains("\"checkpoints\" : 0"))
    }

    @Test("killed at random moments (SIGKILL, and at injected writes and commits), then run again: complete, clean, nothing twice")
    func killed() throws {
        let cli = try family()
        // More history, so that kills land among many commits.
        for step in 20..<26 { try commit(cli, "ft2", step: step) }
        var generator = SeededGenerator(seed: 28)
        let started = Date()
        #expect(try cli.run(["copy", "--to", cli.directory.file("timing")]).status == 0)
        let span = max(Date().timeIntervalSince(started), 0.05)
        /// What must match after every trial: the totals (no row twice, none missing), every
        /// advisory, a student's metrics.
        func fingerprint(_ registry: String) throws -> [String] {
            try [
                ["stats", "--json"], ["advisory", "list", "--all", "--json"], ["metrics", "ft2", "--json"],
                ["lineage", "cnn", "--format", "json"],
            ]
            .map { arguments in
                let output = try cli.run(arguments + ["--registry", registry], registry: false)
                return output.stdout.replacing(/"database_bytes" : \d+/, with: "")
            }
        }
        let expected = try fingerprint(cli.registry)
        let trials = setting("GRAFT_COPY_KILL_TRIALS", 20)
        var killed = 0
        for trial in 1...trials {
            let target = cli.directory.file("copy-\(trial)")
            // Half the trials die at an injected step (a blob write, fsync, rename or commit,
            // spread over the copy); the others are killed from outside at a random moment.
            let injected = trial % 2 == 0
            let process = try start(
                graftBinary, ["copy", "--to", target, "--registry", cli.registry], output: cli.directory.file("trial.out"),
                environment: injected ? ["GRAFT_CRASH_AT": "\(1 + (trial * 7) % 60)"] : [:])
            if !injected {
                usleep(useconds_t(span * Double.random(in: 0.2..<1.0, using: &generator) * 1e6))
                process.signal(SIGKILL)
            }
            if case .killed = process.wait() { killed += 1 }
            // Whatever the kill left, the destination opens and verifies clean.
            if FileManager.default.fileExists(atPath: target + "/graft.sqlite") {
                let verified = try cli.run(["verify", "--registry", target], registry: false)
                #expect(verified.status == 0, "trial \(trial): \(verified.stdout) \(verified.stderr)")
            }
            let rerun = try cli.run(["copy", "--to", target])
            #expect(rerun.status == 0, "trial \(trial): \(rerun.stderr)")
            #expect(try fingerprint(target) == expected, "trial \(trial)")
            try? FileManager.default.removeItem(atPath: target)
        }
        #expect(killed > trials / 2, "most trials should die mid-copy")
        let target = cli.directory.file("copy-final")
        #expect(try cli.run(["copy", "--to", target]).status == 0)
        #expect(try answers(cli, registry: target) == (try answers(cli, registry: cli.registry)))
        #expect(try cli.run(["verify", "--read-data", "--registry", target], registry: false).status == 0)
        try exportsMatch(cli, ["ft2@7"], from: cli.registry, to: target)
    }
}
