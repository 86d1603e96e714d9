import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Testing

/// `graft backup` (issue 28, item 4): a consistent copy of a registry in use, a registry of its
/// own that `verify --read-data` finds clean, with the same history as the source had at the
/// snapshot.
@Suite("graft backup: a consistent copy of a registry in use")
struct BackupCLITests {
    /// A registry with a base, a student with three checkpoints and metrics, an alias, an
    /// advisory and a signature.
    func populated() throws -> CLI {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        #expect(try cli.run(["base", "add", try cli.base(), "--name", "cnn"]).status == 0)
        #expect(try cli.run(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features"]).status == 0)
        for step in 1...3 {
            var tensors = SyntheticBase.tensors(seed: 7)
            tensors[tensors.firstIndex { $0.name == "classifier.weight" }!].bytes[step] ^= 0x5A
            let file = cli.directory.file("ft-\(step).safetensors")
            try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: file)
            let added = try cli.run(["checkpoint", "add", "ft", file, "--step", "\(step)", "--metric", "acc=0.\(step)"])
            #expect(added.status == 0, "\(added.stderr)")
        }
        #expect(try cli.run(["tag", "ft@2", "production"]).status == 0)
        #expect(try cli.run(["advisory", "add", "cnn", "--id", "ADV-1", "--severity", "high"]).status == 0)
        return cli
    }

    func answers(_ cli: CLI, registry: String) throws -> [String] {
        try [
            ["lineage", "cnn", "--format", "json"], ["show", "ft@production", "--json"], ["affected", "cnn", "--json"],
            ["metrics", "ft", "--json"], ["advisory", "list", "--json"], ["checkpoint", "list", "ft", "--json"],
        ].map { arguments in
            let output = try cli.run(arguments + ["--registry", registry], registry: false)
            #expect(output.status == 0, "\(arguments): \(output.stderr)")
            return output.stdout
        }
    }

    @Test("the copy answers as the source did, verifies clean, links blobs on one file system; an existing target is refused")
    func sameFileSystem() throws {
        let cli = try populated()
        let copy = cli.directory.file("copy")
        let result = try cli.json(["backup", copy]) as? [String: Any]
        #expect(result?["linked"] as? Int == result?["blobs"] as? Int && (result?["blobs"] as? Int ?? 0) > 0)
        #expect(result?["copied"] as? Int == 0)
        let verified = try cli.run(["verify", "--read-data", "--registry", copy], registry: false)
        #expect(verified.status == 0, "\(verified.stdout) \(verified.stderr)")
        #expect(try answers(cli, registry: copy) == (try answers(cli, registry: cli.registry)))
        // Byte-identical exports from both.
        let (a, b) = (cli.directory.file("a.safetensors"), cli.directory.file("b.safetensors"))
        #expect(try cli.run(["export", "ft@3", "-o", a]).status == 0)
        #expect(try cli.run(["export", "ft@3", "-o", b, "--registry", copy], registry: false).status == 0)
        #expect(FileManager.default.contents(atPath: a) == FileManager.default.contents(atPath: b))
        // Hard links: the same inode, two names.
        let blob = try #require(filesUnder(copy + "/blobs/sha256").first)
        let (source, linked) = (
            try FileManager.default.attributesOfItem(atPath: cli.registry + "/blobs/sha256/" + blob),
            try FileManager.default.attributesOfItem(atPath: copy + "/blobs/sha256/" + blob)
        )
        #expect(source[.systemFileNumber] as? Int == linked[.systemFileNumber] as? Int)
        // The copy is a registry of its own: writing to it leaves the source alone.
        #expect(try cli.run(["tag", "ft@1", "production", "--registry", copy], registry: false).status == 0)
        #expect(
            (try cli.json(["show", "ft@production"]) as? [String: Any]).flatMap { ($0["checkpoint"] as? [String: Any])?["ref"] as? String }
                == "ft@2")

        let again = try cli.run(["backup", copy])
        #expect(again.status == 67 && again.stderr.contains("exists already"), "\(again.stderr)")
        let remote = try cli.run(["backup", cli.directory.file("x"), "--registry", "http://127.0.0.1:9"], registry: false)
        #expect(remote.status == 64)
        #expect(!FileManager.default.fileExists(atPath: cli.directory.file("x")))
        // Nothing is left beside the copy (the staging name was renamed into place).
        #expect(try FileManager.default.contentsOfDirectory(atPath: cli.directory.path).filter { $0.hasPrefix(".copy.") }.isEmpty)
    }

    @Test("across file systems blobs are copied and flushed; the copy verifies clean")
    func otherFileSystem() throws {
        guard FileManager.default.isWritableFile(atPath: "/dev/shm") else { return }
        let cli = try populated()
        let target = "/dev/shm/graft-backup-\(UInt32.random(in: 0 ... .max))"
        defer { try? FileManager.default.removeItem(atPath: target) }
        let result = try cli.json(["backup", target]) as? [String: Any]
        let sameDevice =
            (try? FileManager.default.attributesOfFileSystem(forPath: cli.registry))?[.systemNumber] as? Int
            == (try? FileManager.default.attributesOfFileSystem(forPath: "/dev/shm"))?[.systemNumber] as? Int
        if !sameDevice { #expect(result?["copied"] as? Int == result?["blobs"] as? Int && result?["linked"] as? Int == 0) }
        #expect(try cli.run(["verify", "--read-data", "--registry", target], registry: false).status == 0)
        #expect(try answers(cli, registry: target) == (try answers(cli, registry: cli.registry)))
    }

    @Test("taken while commits land: the copy holds a prefix of the history, complete and clean")
    func whileInUse() async throws {
        let cli = try populated()
        let files = try (4...13).map { step in
            var tensors = SyntheticBase.tensors(seed: 7)
            tensors[tensors.firstIndex { $0.name == "classifier.weight" }!].bytes[step] ^= 0x33
            let file = cli.directory.file("live-\(step).safetensors")
            try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: file)
            return file
        }
        let writer = Task.detached {
            for file in files { _ = try cli.run(["checkpoint", "add", "ft", file]) }
        }
        var copies: [String] = []
        for index in 0..<3 {
            let copy = cli.directory.file("live-copy-\(index)")
            let made = try cli.run(["backup", copy])
            #expect(made.status == 0, "\(made.stderr)")
            copies.append(copy)
        }
        try await writer.value
        let all = try cli.json(["checkpoint", "list", "ft"]) as? [[String: Any]] ?? []
        #expect(all.count == 13)
        for copy in copies {
            #expect(try cli.run(["verify", "--read-data", "--registry", copy], registry: false).status == 0)
            let listed = try cli.run(["checkpoint", "list", "ft", "--json", "--registry", copy], registry: false)
            let held = (try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]]) ?? []
            #expect(held.count >= 3 && held.count <= 13)
            // A prefix of the source's history, checkpoint for checkpoint.
            #expect(held.map { $0["digest"] as? String } == all.prefix(held.count).map { $0["digest"] as? String })
        }
    }
}
