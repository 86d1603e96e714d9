import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `graft compact` (issue 27): blobs stored smaller (byte planes + zstd, XOR deltas against the
/// parent) while every answer, export and download stays byte for byte what was imported;
/// damage still found; delta bases kept while needed; a kill anywhere loses nothing.
@Suite("graft compact: stored encodings")
struct CompactCLITests {
    /// Weight-like values: a sum of uniforms scaled to about ±0.05 (a narrow exponent range).
    static func weights(_ count: Int, generator: inout SeededGenerator) -> [Float] {
        (0..<count).map { _ in
            var sum: Float = 0
            for _ in 0..<4 { sum += Float(generator.next() >> 40) / Float(1 << 24) - 0.5 }
            return sum * 0.05
        }
    }

    /// A base: F32 tensors (one past a 4 MiB chunk), a BF16 one, one of random bytes (no codec
    /// saves 5% on it: it stays raw), and a tensor small enough to be inline.
    static func baseTensors() -> [TensorData] {
        var generator = SeededGenerator(seed: 27)
        func f32(_ name: String, _ shape: [Int]) -> TensorData {
            TensorData(
                name: name, dtype: .f32, shape: shape,
                bytes: weights(shape.reduce(1, *), generator: &generator).withUnsafeBytes { Array($0) })
        }
        let bf16 = weights(256 * 256, generator: &generator).flatMap { value -> [UInt8] in
            let bits = value.bitPattern >> 16
            return [UInt8(truncatingIfNeeded: bits), UInt8(truncatingIfNeeded: bits >> 8)]
        }
        return [
            f32("encoder.weight", [1100, 1024]), f32("encoder.bias", [300, 64]),
            TensorData(name: "adapter.weight", dtype: .bf16, shape: [256, 256], bytes: bf16), f32("head.bias", [10]),
            TensorData(name: "noise", dtype: .u8, shape: [65536], bytes: randomBytes(65536, using: &generator)),
        ]
    }

    /// A full fine-tune of `base`: every float nudged in its low mantissa bits (a small learning rate).
    static func tuned(_ base: [TensorData], seed: UInt64) -> [TensorData] {
        var generator = SeededGenerator(seed: seed)
        return base.map { tensor in
            var tensor = tensor
            let width = tensor.dtype == .bf16 ? 2 : 4
            for index in stride(from: 0, to: tensor.bytes.count, by: width) { tensor.bytes[index] ^= UInt8(generator.next() & 0x07) }
            return tensor
        }
    }

    /// A registry with `base` and its full fine-tune `ft@1`; returns the two source files.
    func family(_ cli: CLI) throws -> (base: String, tuned: String) {
        let base = cli.directory.file("base.safetensors"), tuned = cli.directory.file("tuned.safetensors")
        try SafeTensorsWriter.write(Self.baseTensors(), metadata: ["format": "pt"], to: base)
        try SafeTensorsWriter.write(Self.tuned(Self.baseTensors(), seed: 1), metadata: ["format": "pt"], to: tuned)
        #expect(try cli.run(["init"]).status == 0)
        #expect(try cli.run(["base", "add", base, "--name", "base"]).status == 0)
        #expect(try cli.run(["student", "create", "ft", "--from", "base@1"]).status == 0)
        let added = try cli.run(["checkpoint", "add", "ft", tuned])
        #expect(added.status == 0, "\(added.stderr)")
        return (base, tuned)
    }

    func exportMatches(_ cli: CLI, _ ref: String, _ source: String, registry: [String] = [], label: String = "") throws {
        let out = cli.directory.file("out-\(UInt32.random(in: 0 ... .max)).safetensors")
        let exported = try cli.run(["export", ref, "-o", out] + registry, registry: registry.isEmpty)
        #expect(exported.status == 0, "\(label) \(ref): \(exported.stderr)")
        let same = FileManager.default.contents(atPath: out) == FileManager.default.contents(atPath: source)
        #expect(same, "\(label) \(ref): export differs from what was imported")
        try? FileManager.default.removeItem(atPath: out)
    }

    func codecs(_ cli: CLI) throws -> [String: [String: Int]] {
        let stats = try #require(try cli.json(["stats"]) as? [String: Any])
        var out: [String: [String: Int]] = [:]
        for entry in try #require(stats["codecs"] as? [[String: Any]]) {
            out[entry["codec"] as! String] = [
                "blobs": entry["blobs"] as! Int, "raw": entry["raw_bytes"] as! Int, "stored": entry["stored_bytes"] as! Int,
            ]
        }
        return out
    }

    /// Every stored blob file with its bytes.
    func blobFiles(_ cli: CLI, registry: String? = nil) throws -> [String: Data] {
        var files: [String: Data] = [:]
        let root = (registry ?? cli.registry) + "/blobs/sha256"
        for directory in try FileManager.default.contentsOfDirectory(atPath: root) {
            for name in try FileManager.default.contentsOfDirectory(atPath: root + "/" + directory) {
                files[name] = FileManager.default.contents(atPath: root + "/" + directory + "/" + name)
            }
        }
        return files
    }

    @Test("compact stores the base as byte planes and the fine-tune as deltas; every read, export and download stays byte-identical")
    func compactsFamily() throws {
        let cli = CLI()
        let (base, tuned) = try family(cli)
        let before = try blobFiles(cli)
        let raw = try codecs(cli)
        #expect(raw["raw"]?["blobs"] == 8 && raw["bg-zstd"]?["blobs"] == 0, "\(raw)")

        // A dry run reports the saving and writes nothing.
        let dry = try #require(try cli.json(["compact", "--dry-run"]) as? [String: Any])
        #expect(dry["dry_run"] as? Bool == true && dry["examined"] as? Int == 8)
        #expect((dry["saving"] as? Double ?? 0) > 0.15, "\(dry)")
        #expect(try blobFiles(cli) == before && (try codecs(cli)) == raw, "a dry run changed nothing")

        let result = try #require(try cli.json(["compact"]) as? [String: Any])
        #expect(result["examined"] as? Int == 8 && (result["skipped"] as? [Any])?.isEmpty == true)
        #expect(result["stored_bytes"] as? Int == dry["stored_bytes"] as? Int, "the dry run predicted the bytes exactly")
        let after = try codecs(cli)
        // The base's three weight blobs as planes; its random bytes stay raw (and are not tried
        // again); the fine-tune's four as deltas against them — random bytes nudged included.
        #expect(after["bg-zstd"]?["blobs"] == 3 && after["xor-bg-zstd"]?["blobs"] == 4 && after["raw"]?["blobs"] == 1, "\(after)")
        let xor = try #require(after["xor-bg-zstd"]), planes = try #require(after["bg-zstd"])
        #expect(Double(xor["raw"]!) / Double(xor["stored"]!) > 1.8, "deltas of a small change: \(xor)")
        #expect(Double(planes["raw"]!) / Double(planes["stored"]!) > 1.2, "weight-like planes: \(planes)")
        let files = try blobFiles(cli)
        #expect(Set(files.keys) == Set(before.keys), "same digests, same names")
        #expect(files.values.reduce(0) { $0 + $1.count } == after.values.reduce(0) { $0 + $1["stored"]! }, "stats tell the stored bytes")
        let stats = try #require(try cli.json(["stats"]) as? [String: Any])
        let physical = try #require(stats["physical_bytes"] as? Int), rawBytes = try #require(raw["raw"]?["raw"])
        #expect(physical < rawBytes, "physical bytes are what the store holds")
        let table = try cli.run(["stats"])
        #expect(table.stdout.contains("xor-bg-zstd") && table.stdout.contains("saved"), "\(table.stdout)")

        // Reads: exports, verify with data, the lineage's drift (reads both blobs), a second run finds nothing new.
        try exportMatches(cli, "base@1", base)
        try exportMatches(cli, "ft@1", tuned)
        let verify = try cli.run(["verify", "--read-data"])
        #expect(verify.status == 0, "\(verify.stdout) \(verify.stderr)")
        let again = try #require(try cli.json(["compact"]) as? [String: Any])
        #expect(again["examined"] as? Int == 0)

        // A checkpoint added later: only its new blobs are examined, and they become deltas too.
        let later = cli.directory.file("later.safetensors")
        try SafeTensorsWriter.write(Self.tuned(Self.baseTensors(), seed: 2), metadata: ["format": "pt"], to: later)
        #expect(try cli.run(["checkpoint", "add", "ft", later]).status == 0)
        let incremental = try #require(try cli.json(["compact", "--under", "ft"]) as? [String: Any])
        #expect(incremental["examined"] as? Int == 4, "\(incremental)")
        try exportMatches(cli, "ft@2", later)

        // A student of the student: its tensors are taken against the base's blobs (ft@1's are
        // deltas, and a delta is never taken against a delta), so a read touches two blobs at most.
        let grandchild = cli.directory.file("grandchild.safetensors")
        try SafeTensorsWriter.write(Self.tuned(Self.baseTensors(), seed: 3), metadata: ["format": "pt"], to: grandchild)
        #expect(try cli.run(["student", "create", "ft2", "--from", "ft@1"]).status == 0)
        #expect(try cli.run(["checkpoint", "add", "ft2", grandchild]).status == 0)
        let third = try #require(try cli.json(["compact", "--under", "ft2"]) as? [String: Any])
        let thirdCodecs = try #require(third["encoded"] as? [[String: Any]])
        #expect(thirdCodecs.first { $0["codec"] as? String == "xor-bg-zstd" }?["blobs"] as? Int == 4, "\(third)")
        try exportMatches(cli, "ft2@1", grandchild)
        #expect(try cli.run(["verify", "--read-data"]).status == 0)

        // Through `graft serve`: a remote export downloads every blob decoded, byte-identical.
        let token = try cli.run(["token", "create", "reader", "--scope", "read"]).lastLine
        let server = try TestServer(registry: cli.registry, logDirectory: cli.directory.path)
        defer { server.stop() }
        let out = cli.directory.file("remote.safetensors")
        let remote = try cli.run(
            ["export", "ft@1", "-o", out, "--registry", server.url], registry: false, environment: ["GRAFT_TOKEN": token])
        #expect(remote.status == 0, "\(remote.stderr)")
        #expect(FileManager.default.contents(atPath: out) == FileManager.default.contents(atPath: tuned))
    }

    @Test("an encoded blob damaged on disk is found by verify and refused by export; a bad scope is refused before anything")
    func damage() throws {
        let cli = CLI()
        _ = try family(cli)
        let unknown = try cli.run(["compact", "--under", "nope"])
        #expect(unknown.status != 0 && unknown.stderr.contains("nope"))
        #expect(try cli.run(["compact", "--threads", "0"]).status == 64)
        #expect(try codecs(cli)["raw"]?["blobs"] == 8, "nothing compacted by refused runs")
        #expect(try cli.run(["compact"]).status == 0)
        // Flip a byte inside a delta's frames (past its 64-byte header and table).
        let encoder = try #require(Self.tuned(Self.baseTensors(), seed: 1).first { $0.name == "encoder.weight" })
        let hex = Digest.of(encoder.bytes).hex
        let path = cli.registry + "/blobs/sha256/\(hex.prefix(2))/\(hex)"
        chmod(path, 0o644)
        var bytes = try #require(FileManager.default.contents(atPath: path))
        bytes[bytes.count - 100] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: path))
        let verify = try cli.run(["verify", "--read-data"])
        #expect(verify.status == 2 && verify.stdout.contains(String(hex.prefix(12))), "\(verify.stdout) \(verify.stderr)")
        let out = cli.directory.file("out.safetensors")
        let export = try cli.run(["export", "ft@1", "-o", out])
        #expect(export.status == 2 && !FileManager.default.fileExists(atPath: out), "\(export.stderr)")
        // Cut short: the stored object is neither the raw bytes nor a whole encoding.
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: path))
        let cut = try cli.run(["verify"])
        #expect(cut.status == 2, "\(cut.stdout)")
    }

    @Test("a delta's base outlives the models that held it while the delta is used, and goes with the delta")
    func basesKept() throws {
        let cli = CLI()
        let (_, tuned) = try family(cli)
        // The fine-tune's bytes also registered as a base of their own: the same blobs, a second user.
        #expect(try cli.run(["base", "add", tuned, "--name", "twin"]).status == 0)
        #expect(try cli.run(["compact"]).status == 0)
        #expect(try codecs(cli)["xor-bg-zstd"]?["blobs"] == 4)
        let removed = try cli.run(["model", "rm", "base", "--cascade"])
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(try cli.run(["gc", "--grace", "0"]).status == 0)
        // The base model's blobs stay: twin's deltas decode against them.
        try exportMatches(cli, "twin@1", tuned)
        let verify = try cli.run(["verify", "--read-data"])
        #expect(verify.status == 0, "\(verify.stdout) \(verify.stderr)")
        #expect(try blobFiles(cli).count == 8, "twin's four, and the four bases its deltas need")
        // twin removed: its deltas go, and the bases with them.
        #expect(try cli.run(["model", "rm", "twin"]).status == 0)
        #expect(try cli.run(["gc", "--grace", "0"]).status == 0)
        #expect(try blobFiles(cli).isEmpty)
        #expect(try cli.run(["verify"]).status == 0)
    }

    @Test("a copy of a compacted registry sends decoded bytes (a delta's base need not travel) and stores them raw")
    func copyOfCompacted() throws {
        let cli = CLI()
        let (base, tuned) = try family(cli)
        #expect(try cli.run(["compact"]).status == 0)
        // Only the student: its deltas' bases stay behind, so the blobs must travel decoded.
        let target = cli.directory.file("copy")
        let copied = try cli.run(["copy", "ft", "--with-ancestors", "--to", target])
        #expect(copied.status == 0, "\(copied.stderr)")
        let printed = try cli.run(["stats", "--json", "--registry", target], registry: false)
        let stats = try #require(try JSONSerialization.jsonObject(with: Data(printed.stdout.utf8)) as? [String: Any])
        let codecs = try #require(stats["codecs"] as? [[String: Any]])
        #expect(codecs.allSatisfy { $0["codec"] as? String == "raw" || $0["blobs"] as? Int == 0 }, "stored raw: \(codecs)")
        let rawBytes = codecs.reduce(0) { $0 + ($1["raw_bytes"] as? Int ?? 0) }
        #expect(try blobFiles(cli, registry: target).values.reduce(0) { $0 + $1.count } == rawBytes, "the files hold raw bytes")
        try exportMatches(cli, "ft@1", tuned, registry: ["--registry", target])
        try exportMatches(cli, "base@1", base, registry: ["--registry", target])
        #expect(try cli.run(["verify", "--read-data", "--registry", target], registry: false).status == 0)
    }

    @Test("exports and verify running while compact re-encodes their blobs read the imported bytes, and report no damage")
    func concurrentReads() throws {
        let cli = CLI()
        let (base, tuned) = try family(cli)
        // Several fine-tunes, so compaction lasts while the readers run.
        for seed in 2...5 {
            let file = cli.directory.file("tuned-\(seed).safetensors")
            try SafeTensorsWriter.write(Self.tuned(Self.baseTensors(), seed: UInt64(seed)), metadata: ["format": "pt"], to: file)
            #expect(try cli.run(["checkpoint", "add", "ft", file]).status == 0)
        }
        let compact = try start(
            graftBinary, ["compact", "--threads", "1", "--registry", cli.registry], output: cli.directory.file("compact.out"))
        defer { if compact.isRunning { compact.signal(SIGKILL) } }
        var reads = 0
        while compact.isRunning, reads < 100 {
            try exportMatches(cli, "base@1", base, label: "read \(reads)")
            try exportMatches(cli, "ft@1", tuned, label: "read \(reads)")
            let verify = try cli.run(["verify", "--read-data"])
            #expect(verify.status == 0, "read \(reads): \(verify.stdout) \(verify.stderr)")
            reads += 1
        }
        #expect(compact.wait() == .exited(0))
        #expect(reads >= 1, "the readers ran while compact did")
        #expect(try codecs(cli)["xor-bg-zstd"]?["blobs"] == 4 * 5)
    }

    @Test("graft serve --compact-idle compacts once the server is quiet, and serves the same bytes after")
    func compactIdle() throws {
        let cli = CLI()
        let (_, tuned) = try family(cli)
        let refused = try cli.run(["serve", "--compact-idle", "--compact-after", "0"])
        #expect(refused.status == 64 && refused.stderr.contains("--compact-after"), "\(refused.stderr)")
        let token = try cli.run(["token", "create", "reader", "--scope", "read"]).lastLine
        let server = try TestServer(
            registry: cli.registry, arguments: ["--compact-idle", "--compact-after", "1"], logDirectory: cli.directory.path)
        defer { server.stop() }
        // A request, then quiet: the server compacts in the background (stats read the registry directly).
        let out = cli.directory.file("remote.safetensors")
        #expect(
            try cli.run(["export", "ft@1", "-o", out, "--registry", server.url], registry: false, environment: ["GRAFT_TOKEN": token])
                .status == 0)
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, try codecs(cli)["xor-bg-zstd"]?["blobs"] != 4 { usleep(200_000) }
        #expect(try codecs(cli)["xor-bg-zstd"]?["blobs"] == 4, "compacted within 60 s: \(server.log)")
        #expect(server.log.contains("compact: examined 8 blob(s)"), "\(server.log)")
        try FileManager.default.removeItem(atPath: out)
        let again = try cli.run(
            ["export", "ft@1", "-o", out, "--registry", server.url], registry: false, environment: ["GRAFT_TOKEN": token])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(FileManager.default.contents(atPath: out) == FileManager.default.contents(atPath: tuned))
        #expect(server.stop() == .exited(0), "a SIGTERM ends the server and its background compaction")
    }

    @Test("a dry run over three generations predicts the real run exactly (it plans as the run would)")
    func dryRunThreeGenerations() throws {
        let cli = CLI()
        _ = try family(cli)
        let grandchild = cli.directory.file("grandchild.safetensors")
        try SafeTensorsWriter.write(Self.tuned(Self.baseTensors(), seed: 3), metadata: ["format": "pt"], to: grandchild)
        #expect(try cli.run(["student", "create", "ft2", "--from", "ft@1"]).status == 0)
        #expect(try cli.run(["checkpoint", "add", "ft2", grandchild]).status == 0)
        let dry = try #require(try cli.json(["compact", "--dry-run"]) as? [String: Any])
        let real = try #require(try cli.json(["compact"]) as? [String: Any])
        #expect(dry["stored_bytes"] as? Int == real["stored_bytes"] as? Int, "dry \(dry), real \(real)")
        let counts = { (result: [String: Any]) in (result["encoded"] as? [[String: Any]] ?? []).map { "\($0["codec"]!)=\($0["blobs"]!)" } }
        #expect(counts(dry) == counts(real) && counts(real).contains("xor-bg-zstd=8"), "\(counts(dry)) \(counts(real))")
    }

    @Test("compact killed at any step leaves every blob readable; a re-run finishes the job with the same result")
    func killed() throws {
        let cli = CLI()
        let (base, tuned) = try family(cli)
        let pristine = cli.directory.file("pristine")
        try FileManager.default.copyItem(atPath: cli.registry, toPath: pristine)
        let reference = try #require(try cli.json(["compact"]) as? [String: Any])
        let expected = try codecs(cli)
        var died = 0
        for step in 1...40 {
            try FileManager.default.removeItem(atPath: cli.registry)
            try FileManager.default.copyItem(atPath: pristine, toPath: cli.registry)
            let run = try cli.run(["compact"], environment: ["GRAFT_CRASH_AT": "\(step)"])
            guard run.status == 128 + SIGKILL else {
                #expect(run.status == 0, "step \(step): \(run.stderr)")
                break
            }
            died += 1
            // Whatever the kill left: every checkpoint exports as imported, verify finds no damage.
            try exportMatches(cli, "base@1", base, label: "step \(step)")
            try exportMatches(cli, "ft@1", tuned, label: "step \(step)")
            let verify = try cli.run(["verify", "--read-data"])
            #expect(verify.status == 0, "step \(step): \(verify.stdout) \(verify.stderr)")
            let rerun = try cli.run(["compact"])
            #expect(rerun.status == 0, "step \(step): \(rerun.stderr)")
            #expect(try codecs(cli) == expected, "step \(step)")
            try exportMatches(cli, "ft@1", tuned, label: "step \(step), re-run")
        }
        #expect(died >= 8, "the kill should land at many steps (blob writes, renames, commits): \(died)")
        #expect(reference["examined"] as? Int == 8)
    }
}
