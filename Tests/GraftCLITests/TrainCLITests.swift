import Foundation
import Graft
import GraftTestSupport
import Testing

/// Two well-separated classes of 6 features (plus a third), as CSV.
func separable(_ cli: CLI) throws -> String {
    var generator = SeededGenerator(seed: 9)
    var lines = ["label,f0,f1,f2,f3,f4,f5"]
    for index in 0..<240 {
        let label = index % 3
        let values = (0..<6).map { feature in Double(feature == label * 2 ? 3 : 0) + Double.random(in: -1...1, using: &generator) }
        lines.append("\(label)," + values.map { String(format: "%.4f", $0) }.joined(separator: ","))
    }
    let path = cli.directory.file("data.csv")
    try writeFile(path, Array(lines.joined(separator: "\n").utf8))
    return path
}

@Suite("graft train")
struct TrainCLITests {
    @Test("train a base from scratch, derive a feature-extraction student with --from/--mode, find the best under the base")
    func flow() throws {
        let cli = CLI()
        let data = try separable(cli)
        #expect(try cli.run(["init"]).status == 0)
        let base = try cli.run([
            "train", "--scratch", "--architecture", "linear:8,relu", "--register-as", "tabular", "--data", data, "--classes", "0-1",
            "--epochs", "2", "--val-per-class", "20", "--license", "mit",
        ])
        #expect(base.status == 0, "\(base.stderr)")
        #expect(base.stderr.contains("epoch 2/2") && base.stderr.contains("tabular@2"))
        let show = try #require(try cli.json(["show", "tabular"]) as? [String: Any])
        let model = try #require(show["model"] as? [String: Any])
        let provenance = try #require(model["provenance"] as? [String: Any])
        #expect(provenance["license"] as? String == "mit")
        let student = try cli.run([
            "train", "fe", "--from", "tabular@latest", "--mode", "feature-extraction", "--data", data, "--classes", "0-2", "--epochs", "2",
            "--val-per-class", "20", "--json",
        ])
        #expect(student.status == 0, "\(student.stderr)")
        let reports = try #require(try JSONSerialization.jsonObject(with: Data(student.stdout.utf8)) as? [[String: Any]])
        #expect(reports.count == 2)
        #expect(reports.last?["checkpoint"] as? String == "fe@2")
        #expect(reports.last?["trainable_parameters"] as? Int == 8 * 3 + 3)
        let best = try #require(try cli.json(["best", "--metric", "val/accuracy", "--under", "tabular"]) as? [String: Any])
        #expect(best["value"] as? Double ?? 0 > 0.8)
        // A partial fine-tune of a one-block network freezes that block: only the head trains.
        let partial = try cli.run([
            "train", "p", "--from", "tabular@1", "--mode", "partial-finetune", "--freeze-blocks", "1", "--data", data, "--epochs", "1",
            "--val-per-class", "20",
        ])
        #expect(partial.status == 0, "\(partial.stderr)")
        let diff = try #require(try cli.json(["diff", "tabular@1", "p@1"]) as? [String: Any])
        let status = Dictionary(
            uniqueKeysWithValues: (diff["tensors"] as? [[String: Any]] ?? []).map { ($0["name"] as! String, $0["status"] as! String) })
        #expect(status["features.0.weight"] == "same" && status["features.0.bias"] == "same", "the frozen block: \(status)")
        #expect(status["classifier.weight"] == "changed" && status["classifier.bias"] == "changed", "the head trains: \(status)")
    }

    @Test(
        "bad input: each a one-line error, its exit code, nothing written",
        arguments: [
            (["train", "x", "--data", "/nonexistent"], 65, "does not exist"),
            (["train", "--scratch", "--data", "DATA"], 64, "--architecture"),
            (["train", "x", "--data", "DATA", "--architecture", "mlp"], 64, "--scratch"),
            (["train", "x", "--data", "DATA", "--from", "tabular"], 64, "--mode"),
            (["train", "tabular", "--data", "DATA"], 64, "is a base"),
            (["train", "nobody", "--data", "DATA"], 66, "nobody"),
            (["train", "--scratch", "--architecture", "linear:4,warp", "--register-as", "n", "--data", "DATA"], 64, "unknown layer"),
            (["train", "--scratch", "--architecture", "mlp", "--register-as", "tabular", "--data", "DATA"], 67, "exists"),
            (["train", "--scratch", "--architecture", "mlp", "--register-as", "n", "--data", "DATA", "--classes", "7-9"], 65, "class 7"),
            (["train", "--scratch", "--architecture", "mlp", "--register-as", "n", "--data", "DATA", "--epochs", "0"], 64, "--epochs"),
            (
                ["train", "--scratch", "--architecture", "mlp", "--register-as", "n", "--data", "DATA", "--lr-scale", "nothing=0.1"], 64,
                "matches no tensor"
            ),
            (["train", "--scratch", "--architecture", "mlp", "--register-as", "../n", "--data", "DATA"], 64, "../n"),
        ])
    func refusals(_ arguments: [String], _ code: Int32, _ message: String) throws {
        let cli = CLI()
        let data = try separable(cli)
        #expect(try cli.run(["init"]).status == 0)
        #expect(
            try cli.run([
                "train", "--scratch", "--architecture", "linear:4,relu", "--register-as", "tabular", "--data", data, "--epochs", "1",
                "--val-per-class", "10",
            ]).status == 0)
        let before = try cli.run(["stats", "--json"]).stdout
        let result = try cli.run(arguments.map { $0 == "DATA" ? data : $0 })
        #expect(result.status == code, "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
        // One line says what is wrong (ArgumentParser adds the usage after its own errors).
        #expect(result.stderr.split(separator: "\n").first?.contains(message) == true, "\(result.stderr)")
        #expect(try cli.run(["stats", "--json"]).stdout == before)
    }
}

@Suite("graft prune, gc, checkpoint rm, model rm")
struct RetentionCLITests {
    @Test("protected removals exit 80 with the reason; prune says what it kept and why; gc --dry-run deletes nothing")
    func retention() throws {
        let cli = CLI()
        let data = try separable(cli)
        #expect(try cli.run(["init"]).status == 0)
        #expect(
            try cli.run([
                "train", "--scratch", "--architecture", "linear:4,relu", "--register-as", "b", "--data", data, "--epochs", "4",
                "--val-per-class", "10",
            ]).status == 0)
        #expect(try cli.run(["tag", "b@2", "prod"]).status == 0)
        let registered = try cli.run(["checkpoint", "rm", "b@1"])
        #expect(registered.status == 80 && registered.stderr.contains("registered checkpoint"), "\(registered.stderr)")
        let aliased = try cli.run(["checkpoint", "rm", "b@2"])
        #expect(aliased.status == 80 && aliased.stderr.contains("b@prod"), "\(aliased.stderr)")
        let dry = try cli.run(["prune", "b", "--keep-last", "1", "--dry-run"])
        #expect(dry.status == 0 && dry.stdout.contains("would remove 1 checkpoint(s): b@3"), "\(dry.stdout)")
        let pruned = try cli.run(["prune", "b", "--keep-last", "1", "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(pruned.stdout.utf8)) as? [String: Any])
        #expect(report["checkpoints"] as? [String] == ["b@3"])
        #expect((report["bytes_freed"] as? Int ?? 0) > 0)
        let kept = try #require(report["kept"] as? [[String: Any]])
        #expect(kept.map { $0["checkpoint"] as? String } == ["b@1", "b@2", "b@4"])
        #expect(try cli.run(["prune", "b", "--keep-best", "1"]).status == 64)
        #expect(try cli.run(["prune", "b", "--keep-best", "1", "--metric", "val/accuracy", "--max", "--min"]).status == 64)
        let gc = try #require(try cli.json(["gc", "--dry-run", "--grace", "0"]) as? [String: Any])
        #expect(gc["dry_run"] as? Bool == true)
        #expect(try cli.run(["gc", "--grace", "soon"]).status == 64)
        #expect(try cli.run(["model", "rm", "b"]).status == 0)
        #expect(try cli.run(["verify", "--read-data"]).status == 0)
    }
}
