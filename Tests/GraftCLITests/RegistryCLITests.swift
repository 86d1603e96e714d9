import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Testing
import Yams

@Suite("graft metric, best, lineage, advisory, affected, card")
struct RegistryCLITests {
    /// base (with provenance) ── ft (student, two checkpoints with metrics) ── ft2
    func setup() throws -> CLI {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        let base = try cli.base()
        #expect(
            try cli.run([
                "base", "add", base, "--name", "base", "--license", "mit", "--dataset", "fashion-mnist", "--task", "image-classification",
            ]).status == 0)
        #expect(try cli.run(["student", "create", "ft", "--from", "base", "--freeze", "features"]).status == 0)
        // Each checkpoint a different file (its head changed), so an export shows which one it is.
        #expect(
            try cli.run([
                "checkpoint", "add", "ft", try headVariant(cli, 1), "--metric", "val/accuracy=0.7", "--metric", "val/loss=0.9", "--split",
                "val",
            ]).status == 0)
        #expect(
            try cli.run([
                "checkpoint", "add", "ft", try headVariant(cli, 2), "--metric", "val/accuracy=0.8", "--metric", "val/loss=0.5", "--split",
                "val",
            ]).status == 0)
        #expect(try cli.run(["student", "create", "ft2", "--from", "ft@2", "--relation", "distillation"]).status == 0)
        #expect(
            try cli.run(["checkpoint", "add", "ft2", try headVariant(cli, 3), "--metric", "val/accuracy=0.9", "--split", "val"]).status == 0
        )
        return cli
    }

    @Test("metric log, metric import from a file and stdin, and metrics")
    func metrics() throws {
        let cli = try setup()
        #expect(try cli.run(["metric", "log", "ft@1", "test/accuracy=0.66", "--split", "test"]).stdout.contains("for ft@1 (split test)"))
        #expect(try cli.run(["metric", "log", "ft", "--step", "10", "loss=0.4"]).status == 0)
        let csv = cli.directory.file("curve.csv")
        try writeFile(csv, Array("step,loss\n20,0.3\n30,0.2\n".utf8))
        #expect(try cli.run(["metric", "import", "ft", csv]).stdout.contains("imported 2 point(s)"))
        let piped = try runProcess(
            graftBinary, ["metric", "import", "ft", "-", "--registry", cli.registry], input: Data("{\"step\": 40, \"loss\": 0.1}\n".utf8))
        #expect(piped.status == 0, "\(piped.stderr)")
        let report = try #require(try cli.json(["metrics", "ft"]) as? [String: Any])
        let curves = try #require(report["curves"] as? [[String: Any]])
        #expect(curves.first?["points"] as? Int == 4 && curves.first?["last_value"] as? Double == 0.1)
        let bad = try cli.run(["metric", "log", "ft", "loss=inf"])
        #expect(bad.status == 64 && bad.stderr.contains("NaN and infinities"))
        #expect(try cli.run(["metric", "log", "ft", "loss"]).status == 64)
        #expect(try cli.run(["metric", "log", "ghost", "loss=1"]).status == 66)
        let badCSV = cli.directory.file("bad.csv")
        try writeFile(badCSV, Array("step,loss\n1,nan\n".utf8))
        let refused = try cli.run(["metric", "import", "ft", badCSV])
        #expect(refused.status == 64 && refused.stderr.contains("line 2"))
    }

    @Test("best: inferred direction, --under, flags left out and counted, --export")
    func best() throws {
        let cli = try setup()
        let out = try cli.run(["best", "--metric", "val/accuracy", "--split", "val", "--under", "base"])
        #expect(out.stdout.contains("best ft2@1") && out.stdout.contains("max, from the metric's name"))
        #expect(
            try cli.run(["best", "--metric", "val/loss", "--model", "ft"]).status == 66, "no split given: those metrics were logged on val")
        let loss = try #require(try cli.json(["best", "--metric", "val/loss", "--split", "val", "--model", "ft"]) as? [String: Any])
        #expect(loss["direction"] as? String == "min" && (loss["checkpoint"] as? [String: Any])?["ref"] as? String == "ft@2")
        #expect(try cli.run(["advisory", "add", "ft@2", "--id", "GRAFT-9", "--severity", "high", "--note", "poisoned"]).status == 0)
        let flagged = try #require(try cli.json(["best", "--metric", "val/accuracy", "--split", "val"]) as? [String: Any])
        #expect((flagged["checkpoint"] as? [String: Any])?["ref"] as? String == "ft@1")
        #expect(flagged["excluded_flagged"] as? Int == 2)
        let file = cli.directory.file("best.safetensors")
        #expect(try cli.run(["best", "--metric", "val/accuracy", "--split", "val", "--include-flagged", "--export", file]).status == 0)
        #expect(FileManager.default.contentsEqual(atPath: file, andPath: try headVariant(cli, 3)), "ft2@1's file, byte for byte")
        let unflagged = cli.directory.file("best-unflagged.safetensors")
        #expect(try cli.run(["best", "--metric", "val/accuracy", "--split", "val", "--export", unflagged]).status == 0)
        #expect(FileManager.default.contentsEqual(atPath: unflagged, andPath: try headVariant(cli, 1)), "ft@1: the best not flagged")
        #expect(try cli.run(["best", "--metric", "val/accuracy", "--max", "--min"]).status == 64)
        // "wer" inside "answer" is not a word of the name: the highest answer_accuracy wins.
        #expect(try cli.run(["metric", "log", "ft@1", "answer_accuracy=0.4"]).status == 0)
        #expect(try cli.run(["metric", "log", "ft@2", "answer_accuracy=0.6"]).status == 0)
        let answer = try cli.run(["best", "--metric", "answer_accuracy", "--model", "ft", "--include-flagged"])
        #expect(answer.stdout.contains("best ft@2") && answer.stdout.contains("max, from the metric's name"), "\(answer.stdout)")
        let unknown = try cli.run(["best", "--metric", "acc"])
        #expect(unknown.status == 66 && unknown.stderr.contains("val/accuracy"))
    }

    @Test("lineage as tree, JSON, DOT and Mermaid; advisories and affected")
    func lineageAndAdvisories() throws {
        let cli = try setup()
        #expect(
            try cli.run(["advisory", "add", "base", "--id", "CVE-2018-1", "--severity", "critical", "--url", "https://example.org"]).status
                == 0)
        let tree = try cli.run(["lineage", "base", "--metric", "val/accuracy"])
        #expect(tree.stdout.contains("└─ ft (partial-finetune) finetune of base@1 best val/accuracy 0.8 FLAGGED CVE-2018-1"))
        let json = try #require(try cli.json(["lineage", "ft2"]) as? [String: Any])
        #expect((json["ancestors"] as? [[String: Any]])?.map { $0["name"] as? String } == ["ft", "base"])
        #expect(try cli.run(["lineage", "ft2", "--format", "json"]).stdout.contains("\"ancestors\""))
        let dot = try cli.run(["lineage", "base", "--format", "dot"]).stdout
        #expect(dot.hasPrefix("digraph lineage {") && dot.contains("\"ft\" -> \"ft2\" [label=\"distillation from @2\"]"))
        let mermaid = try cli.run(["lineage", "base", "--format", "mermaid", "--descendants"]).stdout
        #expect(mermaid.hasPrefix("graph TD") && mermaid.contains("-->|finetune from @1|"))
        #expect(try cli.run(["show", "ft2"]).stdout.contains("FLAGGED      CVE-2018-1"))
        let affected = try cli.run(["affected", "base"]).stdout
        #expect(affected.contains("ft2  [CVE-2018-1]  via base@1 → ft@2 → ft2"))
        #expect(try cli.run(["advisory", "list"]).stdout.contains("CVE-2018-1"))
        #expect(try cli.run(["advisory", "add", "base", "--id", "CVE-2018-1", "--severity", "low"]).status == 67)
        #expect(try cli.run(["advisory", "add", "base", "--id", "x", "--severity", "severe"]).status == 64)
        #expect(try cli.run(["advisory", "resolve", "CVE-2018-1"]).status == 0)
        #expect(try cli.run(["affected", "base"]).stdout.contains("no descendant"))
        #expect(try cli.run(["advisory", "resolve", "GHOST"]).status == 66)
    }

    @Test("the card's YAML parses back with base_model, relation, license, datasets and model-index")
    func card() throws {
        let cli = try setup()
        let output = try cli.run(["card", "ft2"])
        #expect(output.status == 0)
        let yaml = output.stdout.split(separator: "\n").dropFirst().prefix { $0 != "---" }.joined(separator: "\n")
        let card = try #require(try Yams.load(yaml: yaml) as? [String: Any])
        #expect(card["base_model"] as? String == "ft")
        #expect(card["base_model_relation"] as? String == "finetune")
        #expect(card["license"] as? String == "mit")
        // A student's datasets and task are its own, never its base's pretraining corpus.
        #expect(card["datasets"] == nil && card["pipeline_tag"] == nil)
        #expect(card["graft_checkpoint"] as? String == "ft2@1")
        let index = try #require((card["model-index"] as? [[String: Any]])?.first)
        let result = try #require((index["results"] as? [[String: Any]])?.first)
        let metric = try #require((result["metrics"] as? [[String: Any]])?.first)
        #expect(metric["type"] as? String == "val/accuracy" && metric["value"] as? Double == 0.9)
        // The model-index reports the best checkpoint, not the newest.
        #expect(
            try cli.run(["checkpoint", "add", "ft2", try headVariant(cli, 4), "--metric", "val/accuracy=0.5", "--split", "val"]).status == 0
        )
        let later = try cli.run(["card", "ft2"]).stdout
        #expect(later.contains("graft_checkpoint: ft2@1") && later.contains("0.9") && !later.contains("0.5"), "\(later)")

        let readme = cli.directory.file("README.md")
        try writeFile(
            readme, Array("---\nlicense: apache-2.0\ndatasets:\n  - imagenet-1k\npipeline_tag: image-classification\n---\n# A model\n".utf8)
        )
        #expect(try cli.run(["base", "add", try cli.base("b2.safetensors", seed: 8), "--name", "carded", "--card", readme]).status == 0)
        let detail = try #require(try cli.json(["show", "carded"]) as? [String: Any])
        let provenance = try #require((detail["model"] as? [String: Any])?["provenance"] as? [String: Any])
        #expect(provenance["license"] as? String == "apache-2.0" && provenance["dataset"] as? String == "imagenet-1k")
        try writeFile(readme, Array("# no front matter\n".utf8))
        #expect(try cli.run(["base", "add", try cli.base("b3.safetensors", seed: 9), "--name", "nocard", "--card", readme]).status == 65)
    }
}
