import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Testing

@Suite("graft student, checkpoint add, tag, diff")
struct StudentCLITests {
    /// A registry with base `cnn` and the path of a checkpoint that changes only the classifier.
    func setup() throws -> (CLI, String, String) {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        let base = try cli.base()
        #expect(try cli.run(["base", "add", base, "--name", "cnn"]).status == 0)
        var tensors = SyntheticBase.tensors(seed: 7)
        let classifier = tensors.firstIndex { $0.name == "classifier.weight" }!
        tensors[classifier].bytes[0] ^= 1
        let tuned = cli.directory.file("tuned.safetensors")
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: tuned)
        let bn = tensors.firstIndex { $0.name == "features.1.running_mean" }!
        tensors[bn].bytes[0] ^= 1
        let drifted = cli.directory.file("drifted.safetensors")
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: drifted)
        return (cli, tuned, drifted)
    }

    @Test("create a student, commit checkpoints, refuse a drifted frozen buffer with exit 79")
    func studentFlow() throws {
        let (cli, tuned, drifted) = try setup()
        let create = try cli.run([
            "student", "create", "cnn-ft", "--from", "cnn@1", "--freeze-through", "features.5", "--relation", "finetune", "--description",
            "partial",
        ])
        #expect(create.status == 0, "\(create.stderr)")
        #expect(create.stdout.contains("partial-finetune"))
        let add = try cli.run(["checkpoint", "add", "cnn-ft", tuned, "--step", "10", "--epoch", "1"])
        #expect(add.status == 0, "\(add.stderr)")
        #expect(add.stdout.contains("committed cnn-ft@1"))
        let refused = try cli.run(["checkpoint", "add", "cnn-ft", drifted])
        #expect(refused.status == 79)
        #expect(refused.stderr.contains("features.1.running_mean: frozen, but changed (sha256:"))
        let show = try cli.run(["show", "cnn-ft"])
        #expect(show.stdout.contains("student of cnn@1 (finetune), mode partial-finetune"))
        #expect(show.stdout.contains("features.1") && show.stdout.contains("frozen"))
        let detail = try #require(try cli.json(["show", "cnn-ft"]) as? [String: Any])
        let manifest = try #require(detail["manifest"] as? [String: Any])
        #expect(manifest["mode"] as? String == "partial-finetune")
        #expect(try cli.run(["student", "create", "x", "--from", "cnn", "--freeze", "nope"]).status == 64)
        #expect(try cli.run(["student", "create", "x", "--from", "cnn", "--relation", "cousin"]).status == 64)
        #expect(try cli.run(["student", "create", "x", "--from", "missing@1"]).status == 66)
    }

    @Test("tag and untag move NAME@ALIAS; diff summarises by layer")
    func tagAndDiff() throws {
        let (cli, tuned, _) = try setup()
        #expect(try cli.run(["checkpoint", "add", "cnn", tuned]).status == 0)
        #expect(try cli.run(["tag", "cnn@1", "production"]).stdout.contains("cnn@production → cnn@1"))
        #expect(try cli.run(["tag", "cnn@2", "production"]).stdout.contains("(was cnn@1)"))
        let out = cli.directory.file("prod.safetensors")
        #expect(try cli.run(["export", "cnn@production", "-o", out]).status == 0)
        #expect(FileManager.default.contentsEqual(atPath: out, andPath: tuned))
        #expect(try cli.run(["untag", "cnn", "production"]).status == 0)
        #expect(try cli.run(["untag", "cnn", "production"]).status == 66)
        #expect(try cli.run(["tag", "cnn@1", "7"]).status == 64)
        let diff = try #require(try cli.json(["diff", "cnn@1", "cnn@2"]) as? [String: Any])
        let tensors = try #require(diff["tensors"] as? [[String: Any]])
        #expect(tensors.filter { $0["status"] as? String == "changed" }.map { $0["name"] as? String } == ["classifier.weight"])
        #expect(try cli.run(["diff", "cnn@1", "cnn@2"]).stdout.contains("changed  classifier.weight"))
    }
}
