import Foundation
import Graft
import GraftRemote
import GraftS3
import GraftTestSupport
import SafeTensors
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A registry whose metadata lives in PostgreSQL (a throwaway cluster) and whose blobs live in
/// an S3 bucket (moto's server), shared by several `graft serve` processes, each with its own
/// local directory as another machine would have: the CLI end to end, many writers across two
/// servers, a server killed mid-commit, and the database restarted under load.
@Suite("PostgreSQL + S3: the CLI, two servers and 8 writers, SIGKILL mid-commit, a database restart", .serialized)
struct PostgresCLITests {
    /// The services, an initialised registry with a base and two students, and write/read tokens.
    final class Shared: @unchecked Sendable {
        let cluster: PostgresCluster
        let moto: MotoServer
        let cli = CLI()
        let environment: [String: String]
        let writer: String
        let reader: String

        init(students: [String] = ["kid-a", "kid-b"]) throws {
            cluster = try PostgresCluster()
            moto = try MotoServer()
            environment = [
                "GRAFT_METADATA": cluster.url(), "GRAFT_BLOBS": "s3://graft-pg/team?endpoint=\(moto.url.absoluteString)",
                "AWS_ACCESS_KEY_ID": "graft-test", "AWS_SECRET_ACCESS_KEY": "graft-test-secret",
            ]
            try cli.ok(["init"], environment: environment)
            try cli.ok(["base", "add", try cli.base(), "--name", "cnn"], environment: environment)
            for student in students {
                try cli.ok(["student", "create", student, "--from", "cnn", "--freeze", "features.*"], environment: environment)
            }
            writer = try cli.ok(["token", "create", "w", "--scope", "write"], environment: environment).lastLine
            reader = try cli.ok(["token", "create", "r", "--scope", "read"], environment: environment).lastLine
        }

        /// A server with its own local directory (another machine's).
        func server(_ index: Int) throws -> TestServer {
            try TestServer(
                registry: cli.directory.file("machine-\(index)"), environment: environment, logDirectory: cli.directory.path)
        }

        /// Runs graft on machine `index`'s directory.
        func graft(_ arguments: [String], machine index: Int = 0) throws -> ProcessOutput {
            try cli.run(arguments + ["--registry", cli.directory.file("machine-\(index)")], registry: false, environment: environment)
        }

        deinit {
            moto.stop()
            cluster.stop()
        }
    }

    /// A checkpoint of the synthetic base whose classifier carries `(writer, index)`: new bytes
    /// for the one trainable tensor that is a blob, the frozen features unchanged.
    static func checkpoint(writer: Int, index: Int) throws -> SafeTensorsMemory {
        var tensors = SyntheticBase.tensors(seed: 7)
        let classifier = tensors.firstIndex { $0.name == "classifier.weight" }!
        for (offset, byte) in withUnsafeBytes(of: (UInt32(writer).littleEndian, UInt32(index).littleEndian), Array.init).enumerated() {
            tensors[classifier].bytes[offset] = byte
        }
        return try SafeTensorsMemory(tensors)
    }

    /// What a writer was told: each acknowledged commit's reference and digest; and the
    /// errors it saw, by kind.
    struct WriterLog: Sendable {
        var acknowledged: [(ref: String, digest: Digest)] = []
        var errors: [String] = []
    }

    /// Commits `count` checkpoints of `model` through `url`, at most `seconds` in all; a
    /// retryable failure (the server or database unavailable) is retried after a pause, any
    /// other ends the writer.
    static func write(
        url: String, token: String, model: String, writer: Int, count: Int, seconds: Double, retry: Bool, counter: Counter? = nil
    ) async -> WriterLog {
        var log = WriterLog()
        guard let remote = try? RemoteRegistry(url: url, token: token) else {
            log.errors.append("no client")
            return log
        }
        let deadline = Date().addingTimeInterval(seconds)
        var index = 0
        while index < count, Date() < deadline {
            guard let input = try? checkpoint(writer: writer, index: index) else {
                log.errors.append("no input")
                return log
            }
            do throws(GraftError) {
                let result = try await remote.addCheckpoint(
                    model: ModelName(trusted: model), input: input, step: index, epoch: nil,
                    metrics: [try MetricAssignment(name: "acc", value: Double(writer * 1000 + index) / 1e5)], split: nil, progress: nil)
                log.acknowledged.append((result.checkpoint, result.digest))
                counter?.increment()
                index += 1
            } catch {
                log.errors.append("\(error.kind.rawValue): \(error)")
                guard retry, [ErrorKind.unavailable, .busy, .conflict].contains(error.kind) else { return log }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        return log
    }

    @Test(
        "the CLI end to end on PostgreSQL + S3: bad locations refused before anything is written, a second machine sees the same registry")
    func endToEnd() async throws {
        let cluster = try PostgresCluster()
        defer { cluster.stop() }
        let moto = try MotoServer()
        defer { moto.stop() }
        let cli = CLI()
        let blobs = "s3://graft-pg-cli/reg?endpoint=\(moto.url.absoluteString)"
        let env = ["AWS_ACCESS_KEY_ID": "graft-test", "AWS_SECRET_ACCESS_KEY": "graft-test-secret"]
        func machine(_ index: Int) -> String { cli.directory.file("machine-\(index)") }

        // Refused before anything is written: a malformed URL, an unknown option, no schema yet.
        for (bad, message) in [
            ("mysql://u@h/db", "postgresql://"), ("postgresql://127.0.0.1:\(cluster.port)/postgres", "no user"),
            ("\(cluster.url())?pool=9", "unknown option"), ("postgresql://u@h/a;b", "database name"),
        ] {
            let refused = try cli.run(["init", "--metadata", bad, "--registry", machine(1)], registry: false, environment: env)
            #expect(refused.status == 64 && refused.stderr.contains(message), "\(bad): \(refused.stderr)")
            #expect(!FileManager.default.fileExists(atPath: machine(1)))
        }
        let noSchema = try cli.run(["list", "--metadata", cluster.url(), "--registry", machine(1)], registry: false, environment: env)
        #expect(noSchema.status == 73 && noSchema.stderr.contains("graft init"), "\(noSchema.stderr)")
        let asked = Date()
        let unreachable = try cli.run(
            ["list", "--metadata", "postgresql://postgres@127.0.0.1:\(try PostgresCluster.freePort())/postgres", "--registry", machine(1)],
            registry: false, environment: env)
        #expect(unreachable.status == 69 && unreachable.stderr.contains("127.0.0.1"), "unreachable is retryable: \(unreachable.stderr)")
        #expect(Date().timeIntervalSince(asked) < 30, "told within the lease timeout (5 s), not after the pool's minute of retries")

        // init prepares the schema and records the bucket; a second init finds it ready.
        let first = try cli.run(
            ["init", "--metadata", cluster.url(), "--blobs", blobs, "--registry", machine(1)], registry: false, environment: env)
        #expect(
            first.status == 0 && first.stdout.contains("created registry at postgresql://postgres@127.0.0.1"),
            "\(first.stdout)\(first.stderr)")
        let again = try cli.run(["init", "--metadata", cluster.url(), "--registry", machine(2)], registry: false, environment: env)
        #expect(again.status == 0 && again.stdout.contains("already initialised"), "\(again.stdout)\(again.stderr)")
        #expect(try cluster.psql("SELECT value FROM graft_settings WHERE key = 'blobs'") == blobs + "\n")

        // Machine 1 imports; machine 2 (another directory, found through GRAFT_METADATA) sees
        // everything and exports byte-exact from the bucket.
        let on1 = env.merging(["GRAFT_METADATA": cluster.url()]) { a, _ in a }
        func run(_ arguments: [String], machine index: Int) throws -> ProcessOutput {
            try cli.run(arguments + ["--registry", machine(index)], registry: false, environment: on1)
        }
        #expect(try run(["base", "add", try cli.base(), "--name", "cnn"], machine: 1).status == 0)
        #expect(try run(["student", "create", "kid", "--from", "cnn", "--freeze", "features.*"], machine: 1).status == 0)
        var tensors = SyntheticBase.tensors(seed: 7)
        tensors[tensors.firstIndex { $0.name == "features.0.weight" }!].bytes[0] ^= 1
        let frozenChanged = cli.directory.file("frozen.safetensors")
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: frozenChanged)
        let violation = try run(["checkpoint", "add", "kid", frozenChanged], machine: 2)
        #expect(violation.status == 79, "the manifest is enforced from any machine: \(violation.stderr)")
        tensors = SyntheticBase.tensors(seed: 7)
        tensors[tensors.firstIndex { $0.name == "classifier.weight" }!].bytes[0] ^= 1
        let tuned = cli.directory.file("tuned.safetensors")
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: tuned)
        #expect(try run(["checkpoint", "add", "kid", tuned, "--metric", "val/accuracy=0.9"], machine: 2).status == 0)
        let best = try run(["best", "--metric", "val/accuracy", "--under", "cnn"], machine: 1)
        #expect(best.status == 0 && best.stdout.contains("kid@1"), "\(best.stdout)\(best.stderr)")
        #expect(try run(["advisory", "add", "cnn", "--id", "ADV-PG", "--severity", "high"], machine: 2).status == 0)
        let affected = try run(["affected", "cnn"], machine: 1)
        #expect(affected.stdout.contains("kid"), "advisories flow down: \(affected.stdout)")
        let exported = cli.directory.file("out.safetensors")
        #expect(try run(["export", "kid@1", "--output", exported], machine: 1).status == 0)
        #expect(FileManager.default.contents(atPath: exported) == FileManager.default.contents(atPath: tuned))
        let verify = try run(["verify", "--read-data"], machine: 2)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        // Compacted from one machine (encodings recorded in PostgreSQL, objects replaced in the
        // bucket), read from the other: the same bytes.
        let compacted = try run(["compact"], machine: 1)
        #expect(compacted.status == 0 && compacted.stdout.contains("bg-zstd"), "\(compacted.stdout)\(compacted.stderr)")
        let stats = try run(["stats"], machine: 2)
        #expect(stats.stdout.contains("compaction"), "\(stats.stdout)")
        try FileManager.default.removeItem(atPath: exported)
        #expect(try run(["export", "kid@1", "--output", exported], machine: 2).status == 0)
        #expect(FileManager.default.contents(atPath: exported) == FileManager.default.contents(atPath: tuned))
        #expect(try run(["verify", "--read-data"], machine: 1).status == 0)
        // Nothing of the registry's is in the machines' directories but temporary space.
        #expect((try? FileManager.default.contentsOfDirectory(atPath: machine(1) + "/blobs/sha256"))?.isEmpty == true)

        // Another bucket, or a directory holding a SQLite registry, is refused.
        let other = try run(["list", "--blobs", "s3://elsewhere"], machine: 1)
        #expect(other.status == 64 && other.stderr.contains(blobs), "\(other.stderr)")
        #expect(try cli.run(["init"]).status == 0)
        let mixed = try cli.run(["list", "--metadata", cluster.url()], environment: env)
        #expect(mixed.status == 64 && mixed.stderr.contains("graft.sqlite"), "\(mixed.stderr)")

        // Removal deletes the student's own blob from the bucket (its classifier); gc then
        // finds nothing left over; the registry stays clean.
        let client = S3Client(
            location: try S3Location(parsing: blobs),
            credentials: AWSCredentials(accessKeyID: "graft-test", secretAccessKey: "graft-test-secret"))
        let before = try await client.list(prefix: "reg/blobs/").count
        #expect(try run(["model", "rm", "kid"], machine: 1).status == 0)
        #expect(try await client.list(prefix: "reg/blobs/").count == before - 1)
        let gc = try run(["gc", "--grace", "0"], machine: 2)
        #expect(gc.status == 0 && gc.stdout.contains("removed 0 unreferenced blob(s), 0 orphan file(s)"), "\(gc.stdout)")
        #expect(try run(["verify", "--read-data"], machine: 1).status == 0)
    }

    @Test(
        """
        two servers on one PostgreSQL + S3, 8 writers across them × 100 commits to shared students: no error, numbers without gaps,\
         verify clean
        """
    )
    func severalServers() async throws {
        let shared = try Shared()
        let servers = [try shared.server(1), try shared.server(2)]
        defer { servers.forEach { $0.stop() } }
        let count = 100
        let logs = await withTaskGroup(of: (Int, WriterLog).self) { group in
            for writer in 0..<8 {
                // Writers alternate between the servers; writers 0-3 share kid-a, 4-7 kid-b.
                let url = servers[writer % 2].url, model = writer < 4 ? "kid-a" : "kid-b", token = shared.writer
                group.addTask {
                    (
                        writer,
                        await Self.write(url: url, token: token, model: model, writer: writer, count: count, seconds: 240, retry: false)
                    )
                }
            }
            var logs: [Int: WriterLog] = [:]
            for await (writer, log) in group { logs[writer] = log }
            return logs
        }
        let errors = logs.values.flatMap(\.errors)
        #expect(errors.isEmpty, "\(errors.prefix(5))")
        #expect(logs.values.map(\.acknowledged.count) == Array(repeating: count, count: 8))
        let reader = try RemoteRegistry(url: servers[1].url, token: shared.reader)
        for model in ["kid-a", "kid-b"] {
            let stored = try await reader.checkpoints(of: ModelName(trusted: model))
            #expect(stored.map(\.number) == Array(1...(4 * count)), "\(model): numbered 1…\(4 * count) without gaps or repeats")
            let acknowledged = logs.values.flatMap(\.acknowledged).filter { $0.ref.hasPrefix(model + "@") }
            let byRef = Dictionary(uniqueKeysWithValues: stored.map { ($0.ref, $0.digest) })
            #expect(acknowledged.allSatisfy { byRef[$0.ref] == $0.digest }, "every acknowledged commit is the checkpoint its number names")
        }
        let verify = try shared.graft(["verify", "--read-data"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }

    @Test("a server killed (SIGKILL) in the middle of commits: every acknowledged commit intact, nothing partial, no orphan after gc")
    func killedServer() async throws {
        let shared = try Shared()
        let victim = try shared.server(1), survivor = try shared.server(2)
        defer { victim.stop(); survivor.stop() }
        let counter = Counter()
        // Four writers on the victim, two on the survivor, each up to 200 commits in 120 s.
        let killer = Task {
            let deadline = Date().addingTimeInterval(60)
            while counter.value < 40, Date() < deadline { try? await Task.sleep(for: .milliseconds(10)) }
            victim.process.signal(SIGKILL)
        }
        let logs = await withTaskGroup(of: WriterLog.self) { group in
            for writer in 0..<6 {
                let url = writer < 4 ? victim.url : survivor.url, token = shared.writer, model = writer % 2 == 0 ? "kid-a" : "kid-b"
                group.addTask {
                    var log = WriterLog()
                    guard let remote = try? RemoteRegistry(url: url, token: token) else { return log }
                    for index in 0..<200 where log.errors.isEmpty {
                        do {
                            let result = try await remote.addCheckpoint(
                                model: ModelName(trusted: model), input: try Self.checkpoint(writer: writer, index: index), step: index,
                                epoch: nil,
                                metrics: [], split: nil, progress: nil)
                            log.acknowledged.append((result.checkpoint, result.digest))
                            if writer < 4 { counter.increment() }
                        } catch {
                            log.errors.append("\(error)")
                        }
                        if writer >= 4, index >= 60 { break }
                    }
                    return log
                }
            }
            var logs: [WriterLog] = []
            for await log in group { logs.append(log) }
            return logs
        }
        await killer.value
        #expect(victim.process.wait() == .killed(signal: SIGKILL), "the victim was killed, not stopped")
        let acknowledged = logs.flatMap(\.acknowledged)
        #expect(acknowledged.count >= 40)
        #expect(logs.contains { !$0.errors.isEmpty }, "writers on the killed server saw it go")
        // Every acknowledged commit is there, as acknowledged; numbers have no gaps.
        let reader = try RemoteRegistry(url: survivor.url, token: shared.reader)
        for model in ["kid-a", "kid-b"] {
            let stored = try await reader.checkpoints(of: ModelName(trusted: model))
            #expect(stored.map(\.number) == Array(1..<(stored.count + 1)), "\(model): no gaps")
            let byRef = Dictionary(uniqueKeysWithValues: stored.map { ($0.ref, $0.digest) })
            #expect(acknowledged.filter { $0.ref.hasPrefix(model + "@") }.allSatisfy { byRef[$0.ref] == $0.digest })
        }
        // Nothing partial: verify is clean before gc (an interrupted upload's blob is only an orphan).
        let before = try shared.graft(["verify", "--read-data"])
        #expect(before.status == 0, "\(before.stdout)\(before.stderr)")
        // No orphan after gc: every object under the prefix is a blob some checkpoint uses.
        #expect(try shared.graft(["gc", "--grace", "0"]).status == 0)
        let stats = try JSONSerialization.jsonObject(with: Data(try shared.graft(["stats", "--json"]).stdout.utf8)) as? [String: Any]
        let client = S3Client(
            location: try S3Location(parsing: shared.environment["GRAFT_BLOBS"]!),
            credentials: AWSCredentials(accessKeyID: "graft-test", secretAccessKey: "graft-test-secret"))
        let objects = try await client.list(prefix: "team/blobs/").count
        let storedBlobs = (stats?["blobs"] as? Int ?? -1) - (stats?["inline_blobs"] as? Int ?? 0)
        #expect(objects == storedBlobs, "\(objects) objects for \(storedBlobs) blob rows")
        let after = try shared.graft(["verify", "--read-data"])
        #expect(after.status == 0, "\(after.stdout)\(after.stderr)")
    }

    @Test("the database restarted under load: writers see a clear retryable error, retry, and nothing acknowledged is lost")
    func databaseRestart() async throws {
        let shared = try Shared(students: ["kid-a"])
        let server = try shared.server(1)
        defer { server.stop() }
        let counter = Counter()
        let restarter = Task.detached {
            let deadline = Date().addingTimeInterval(60)
            while counter.value < 20, Date() < deadline { usleep(10_000) }
            try shared.cluster.restart(downFor: 7)
        }
        let logs = await withTaskGroup(of: WriterLog.self) { group in
            for writer in 0..<4 {
                let url = server.url, token = shared.writer
                group.addTask {
                    await Self.write(
                        url: url, token: token, model: "kid-a", writer: writer, count: 40, seconds: 180, retry: true, counter: counter)
                }
            }
            var logs: [WriterLog] = []
            for await log in group { logs.append(log) }
            return logs
        }
        try await restarter.value
        let errors = logs.flatMap(\.errors)
        #expect(!errors.isEmpty, "the restart was seen")
        #expect(
            errors.allSatisfy { $0.hasPrefix("unavailable") || $0.hasPrefix("busy") },
            "only retryable errors: \(errors.filter { !$0.hasPrefix("unavailable") }.prefix(3))")
        #expect(logs.map(\.acknowledged.count) == [40, 40, 40, 40], "every writer finished after retrying: \(logs.map(\.errors))")
        let stored = try await RemoteRegistry(url: server.url, token: shared.reader).checkpoints(of: ModelName(trusted: "kid-a"))
        #expect(stored.map(\.number) == Array(1..<(stored.count + 1)), "no gaps")
        let byRef = Dictionary(uniqueKeysWithValues: stored.map { ($0.ref, $0.digest) })
        #expect(logs.flatMap(\.acknowledged).allSatisfy { byRef[$0.ref] == $0.digest }, "nothing acknowledged is lost")
        let verify = try shared.graft(["verify", "--read-data"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }
}

/// A counter shared between a load and what watches it.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func increment() { lock.withLock { count += 1 } }
    func set(_ value: Int) { lock.withLock { count = value } }
}

extension CLI {
    /// Runs graft and fails the test's setup unless it exits 0.
    @discardableResult
    func ok(_ arguments: [String], environment: [String: String]) throws -> ProcessOutput {
        let output = try run(arguments, environment: environment)
        guard output.status == 0 else { throw HelperError("graft \(arguments.joined(separator: " ")): \(output.stderr)") }
        return output
    }
}

extension ProcessOutput {
    var lastLine: String { stdout.split(separator: "\n").last.map(String.init) ?? "" }
}
