import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Testing

/// A binary built beside `graft`.
private func sibling(_ name: String) -> String {
    URL(fileURLWithPath: graftBinary).deletingLastPathComponent().appendingPathComponent(name).path
}

/// Runs one SQL query on the registry's database with the sqlite3 shell (read-only).
private func sql(_ cli: CLI, _ query: String) throws -> String {
    let result = try runProcess("/usr/bin/sqlite3", ["file:\(cli.registry)/graft.sqlite?mode=ro", query])
    guard result.status == 0 else { throw HelperError("sqlite3: \(result.stderr)") }
    return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Counts from the environment, so `make soak` can run the same harness longer.
func setting(_ name: String, _ fallback: Int) -> Int {
    ProcessInfo.processInfo.environment[name].flatMap(Int.init) ?? fallback
}

/// Starts a process with its output in files; returns it running.
func start(_ executable: String, _ arguments: [String], output: String, environment: [String: String] = [:]) throws -> ChildProcess {
    try ChildProcess(
        executable, arguments, environment: ProcessInfo.processInfo.environment.merging(environment) { _, new in new },
        stdout: .file(output), stderr: .file(output + ".err"))
}

/// Tensors of a base big enough that an import takes a while (1.5 MiB).
private func harnessTensors(seed: UInt64) -> [TensorData] {
    var generator = SeededGenerator(seed: seed)
    return (0..<6).map { index in
        TensorData(name: "features.\(index).weight", dtype: .f32, shape: [64, 1024], bytes: generator.bytes(64 * 1024 * 4))
    } + [TensorData(name: "classifier.weight", dtype: .f32, shape: [10, 64], bytes: generator.bytes(10 * 64 * 4))]
}

@Suite("Harnesses: crashes and concurrent writers", .serialized)
struct HarnessTests {
    @Test(
        """
        SIGKILL at random moments during base add and checkpoint add: verify clean, nothing partial, acknowledged checkpoints intact,\
         gc leaves no orphan
        """
    )
    func crashes() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        let files = try (0..<3).map { seed -> String in
            let path = cli.directory.file("base\(seed).safetensors")
            try SafeTensorsWriter.write(harnessTensors(seed: UInt64(seed)), metadata: ["format": "pt"], to: path)
            return path
        }
        #expect(try cli.run(["base", "add", files[0], "--name", "b"]).status == 0)
        #expect(try cli.run(["student", "create", "s", "--from", "b@1", "--freeze", "features.[0-3].*"]).status == 0)
        var generator = SeededGenerator(seed: 77)
        func studentFile(_ trial: Int) throws -> String {
            var tensors = harnessTensors(seed: 0)
            for index in tensors.indices
            where !["features.0.weight", "features.1.weight", "features.2.weight", "features.3.weight"].contains(tensors[index].name) {
                tensors[index].bytes = generator.bytes(tensors[index].bytes.count)
            }
            let path = cli.directory.file("student.safetensors")
            try SafeTensorsWriter.write(tensors, metadata: ["format": "pt", "trial": "\(trial)"], to: path)
            return path
        }
        // How long an import runs here, to spread the kills over it.
        let started = Date()
        #expect(try cli.run(["checkpoint", "add", "s", try studentFile(0)]).status == 0)
        let span = max(Date().timeIntervalSince(started), 0.02) * 1.3
        var acknowledged: [String: String] = [:]
        for ref in ["b@1", "s@1"] {
            let detail = try #require(try cli.json(["show", ref]) as? [String: Any])
            acknowledged[ref] = detail["digest"] as? String
        }
        let trials = setting("GRAFT_CRASH_TRIALS", 80)
        // Kills are counted by who sent them: the harness (from outside, at a random moment) or
        // the injection point (the process itself). Any other death — SIGSEGV, a Swift trap
        // (SIGILL/SIGTRAP), an abort — is a failure, never a "kill".
        var externalKills = 0, injectedKills = 0, externalMidWrite = 0, midWrite = 0
        // When the harness kills, after start: random around a delay that adapts to where this
        // machine's commands write (start-up is most of a short command).
        var delay = span / 2
        for trial in 1...trials {
            // Even trials register a base (every fourth one a file the store holds already, so the
            // re-import path is cut too); odd trials commit a student checkpoint.
            var baseFile = files[trial % 3]
            if trial % 2 == 0, trial % 8 != 0 {
                baseFile = cli.directory.file("new-base.safetensors")
                try SafeTensorsWriter.write(harnessTensors(seed: UInt64(1000 + trial)), metadata: ["format": "pt"], to: baseFile)
            }
            let arguments =
                trial % 2 == 0
                ? ["base", "add", baseFile, "--name", "c\(trial)", "--json"]
                : ["checkpoint", "add", "s", try studentFile(trial), "--json"]
            let output = cli.directory.file("trial.out")
            // Odd trials of each kind die at an injected step (every k-th write, fsync, rename or
            // commit, k cycling); the others are killed from outside at a random moment.
            let injected = (trial / 2) % 2 == 0
            let process = try start(
                graftBinary, arguments + ["--registry", cli.registry], output: output,
                environment: injected ? ["GRAFT_CRASH_AT": "\(1 + (trial / 4) % 24)"] : [:])
            // Outside kills: every other one the moment a temp file shows in tmp/ (so some surely
            // land mid-write, whatever the load), the rest after the adaptive delay.
            let onSight = !injected && (trial / 2) % 4 == 1
            if onSight {
                let deadline = Date().addingTimeInterval(5)
                while process.isRunning, Date() < deadline {
                    if let entries = try? FileManager.default.contentsOfDirectory(atPath: cli.registry + "/tmp"), !entries.isEmpty { break }
                    usleep(100)
                }
                process.signal(SIGKILL)
            } else if !injected {
                usleep(useconds_t(delay * Double.random(in: 0.7..<1.3, using: &generator) * 1e6))
                process.signal(SIGKILL)
            }
            let termination = process.wait()
            // Traces of a command cut mid-way: a temp file, or blob files written but never committed.
            let tempLeft = !filesUnder(cli.registry + "/tmp").isEmpty
            let blobsBefore = Set(filesUnder(cli.registry + "/blobs").map { String($0.split(separator: "/").last!) })
            let committedBlobs = Set(
                try sql(cli, "SELECT digest FROM blobs WHERE inline_data IS NULL").split(separator: "\n").map(String.init))
            let cutMidWay = tempLeft || !blobsBefore.subtracting(committedBlobs).isEmpty
            if case .killed(let signal) = termination {
                if !injected, !onSight {
                    // Steer the next outside kill towards the write window: later if this one
                    // came before any blob was written, earlier if the command had finished.
                    delay *= cutMidWay ? 1.0 : 1.15
                }
                if signal != SIGKILL {
                    Issue.record(
                        """
                        trial \(trial): graft died of signal \(signal), not the harness's SIGKILL:\
                         \((try? String(contentsOfFile: output + ".err", encoding: .utf8)) ?? "")
                        """
                    )
                } else if injected {
                    injectedKills += 1
                } else {
                    externalKills += 1
                    if cutMidWay { externalMidWrite += 1 }
                }
            } else if termination == .exited(0) {
                if !injected, !onSight { delay *= 0.85 }
                // An acknowledged commit must say what it committed; one that does not fails the trial.
                let json = try? JSONSerialization.jsonObject(with: try Data(contentsOf: URL(fileURLWithPath: output))) as? [String: Any]
                if let ref = json?["checkpoint"] as? String, let digest = json?["digest"] as? String, digest.hasPrefix("sha256:") {
                    acknowledged[ref] = digest
                } else {
                    Issue.record(
                        """
                        trial \(trial): graft exited 0 without a checkpoint and digest in its JSON:\
                         \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
                        """
                    )
                }
            } else {
                Issue.record(
                    """
                    trial \(trial): graft exited \(termination.status):\
                     \((try? String(contentsOfFile: output + ".err", encoding: .utf8)) ?? "")
                    """
                )
            }
            if tempLeft { midWrite += 1 }
            let verify = try cli.run(["verify", "--read-data"])
            #expect(verify.status == 0, "trial \(trial): \(verify.stdout)\(verify.stderr)")
            #expect(
                try sql(
                    cli,
                    """
                    SELECT count(*) FROM checkpoints c WHERE tensor_count != (SELECT count(*) FROM checkpoint_tensors t WHERE\
                     t.checkpoint_id = c.id)
                    """
                ) == "0")
            let present = Dictionary(
                uniqueKeysWithValues: try sql(
                    cli, "SELECT m.name || '@' || c.number || ' ' || c.digest FROM checkpoints c JOIN models m ON m.id = c.model_id"
                )
                .split(separator: "\n").map { line in (String(line.split(separator: " ")[0]), String(line.split(separator: " ")[1])) })
            for (ref, digest) in acknowledged {
                #expect(present[ref].map { "sha256:" + $0 } == digest, "trial \(trial): \(ref) changed or vanished")
            }
            #expect(try cli.run(["gc", "--grace", "0"]).status == 0)
            #expect(filesUnder(cli.registry + "/tmp").isEmpty, "trial \(trial): temp files left")
            let stored = Set(filesUnder(cli.registry + "/blobs").map { String($0.split(separator: "/").last!) })
            let referenced = Set(
                try sql(
                    cli,
                    """
                    SELECT DISTINCT t.blob_digest FROM checkpoint_tensors t JOIN blobs b ON b.digest = t.blob_digest WHERE\
                     b.inline_data IS NULL
                    """
                ).split(separator: "\n").map(String.init))
            #expect(stored == referenced, "trial \(trial): orphan or missing blob files")
            if !(stored == referenced) { break }
        }
        // The kills must have landed, the harness's own among them in the middle of writing blobs
        // (not only before the process touched the registry, nor only at injection points).
        #expect(externalKills >= trials / 8, "only \(externalKills) of \(trials / 2) outside kills landed before graft finished")
        #expect(injectedKills >= trials / 8, "only \(injectedKills) injected kills")
        #expect(
            externalMidWrite >= max(1, trials / 16),
            "only \(externalMidWrite) outside kills landed between the first blob write and the commit")
        print(
            """
            crash harness: \(trials) trials, \(externalKills) killed from outside (\(externalMidWrite) between the first blob write\
             and the commit) and \(injectedKills) at injection points; \(midWrite) left a temp file for gc; \(acknowledged.count)\
             acknowledged checkpoints intact
            """
        )
    }

    @Test(
        """
        8 writers (two per student) and 4 readers on one registry: no error, every commit present, integrity ok; then again with gc\
         --grace 0 in a loop
        """,
        arguments: [false, true])
    func concurrency(withGC: Bool) throws {
        let cli = CLI()
        let commits = setting("GRAFT_STRESS_COMMITS", 200)
        #expect(try cli.run(["init"]).status == 0)
        let base = cli.directory.file("base.safetensors")
        try SafeTensorsWriter.write(
            harnessTensors(seed: 9).map { tensor in
                var small = tensor
                if small.bytes.count > 65536 { small.shape = [16, 1024]; small.bytes = Array(small.bytes.prefix(16 * 1024 * 4)) }
                return small
            }, metadata: ["format": "pt"], to: base)
        #expect(try cli.run(["base", "add", base, "--name", "base"]).status == 0)
        for student in 0..<4 {
            #expect(try cli.run(["student", "create", "s\(student)", "--from", "base@1", "--freeze", "features"]).status == 0)
        }
        let stop = cli.directory.file("stop")
        let stress = sibling("graft-stress")
        var writers: [ChildProcess] = [], others: [ChildProcess] = []
        for writer in 0..<8 {
            writers.append(
                try start(
                    stress, ["write", cli.registry, "s\(writer % 4)", "\(commits)", "\(writer + 1)"],
                    output: cli.directory.file("w\(writer)")))
        }
        for reader in 0..<4 {
            others.append(try start(stress, ["read", cli.registry, "base", stop], output: cli.directory.file("r\(reader)")))
        }
        if withGC { others.append(try start(stress, ["gc", cli.registry, stop], output: cli.directory.file("gc"))) }
        for process in writers { process.wait() }
        try writeFile(stop, [])
        for process in others { process.wait() }
        for (index, process) in (writers + others).enumerated() {
            let name = index < 8 ? "w\(index)" : index < 12 ? "r\(index - 8)" : "gc"
            let errors = (try? String(contentsOfFile: cli.directory.file(name) + ".err", encoding: .utf8)) ?? ""
            #expect(process.wait() == .exited(0) && errors.isEmpty, "\(name): \(errors)")
        }
        #expect(
            try sql(cli, "SELECT count(*) FROM checkpoints c JOIN models m ON m.id = c.model_id WHERE m.kind = 'student'")
                == "\(8 * commits)")
        #expect(try sql(cli, "SELECT count(*) FROM metrics") == "\(8 * commits)")
        for student in 0..<4 {
            #expect(
                try sql(cli, "SELECT max(number) FROM checkpoints c JOIN models m ON m.id = c.model_id WHERE m.name = 's\(student)'")
                    == "\(2 * commits)")
        }
        #expect(try sql(cli, "PRAGMA integrity_check") == "ok")
        #expect(try cli.run(["verify", "--read-data"]).status == 0)
        let reads = (0..<4).compactMap { try? String(contentsOfFile: cli.directory.file("r\($0)"), encoding: .utf8) }.joined(
            separator: "; ")
        print("concurrency harness\(withGC ? " with gc" : ""): 8 writers × \(commits) commits, readers: \(reads)")
    }
}
