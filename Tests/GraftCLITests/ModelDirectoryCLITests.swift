import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Testing

/// Model directories (issue 24): sharded weights with their index, configs, tokenizers and
/// subfolders in; the same tree out, byte for byte; every refusal with nothing written.
@Suite("model directories: import, export, refusals")
struct ModelDirectoryCLITests {
    /// Writes a model directory: the synthetic base's tensors in shards of `perShard` tensors
    /// (one `model.safetensors` when nil) with their index, a config, a tokenizer and a
    /// sentence-transformers pooling folder. `change` edits tensors before they are written.
    @discardableResult
    func writeModel(
        _ path: String, perShard: Int?, prefix: String = "", seed: UInt64 = 7, change: (inout [TensorData]) -> Void = { _ in }
    ) throws -> [TensorData] {
        try FileManager.default.createDirectory(atPath: path + "/1_Pooling", withIntermediateDirectories: true)
        var tensors = SyntheticBase.tensors(seed: seed).map { tensor in
            TensorData(name: prefix + tensor.name, dtype: tensor.dtype, shape: tensor.shape, bytes: tensor.bytes)
        }
        change(&tensors)
        if let perShard {
            let groups = stride(from: 0, to: tensors.count, by: perShard).map { Array(tensors[$0..<min($0 + perShard, tensors.count)]) }
            var map: [String: String] = [:]
            for (index, group) in groups.enumerated() {
                let name = String(format: "model-%05d-of-%05d.safetensors", index + 1, groups.count)
                try SafeTensorsWriter.write(group, metadata: ["format": "pt"], to: path + "/" + name)
                for tensor in group { map[tensor.name] = name }
            }
            let index: [String: Any] = ["metadata": ["total_size": tensors.reduce(0) { $0 + $1.bytes.count }], "weight_map": map]
            try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys])
                .write(to: URL(fileURLWithPath: path + "/model.safetensors.index.json"))
        } else {
            try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: path + "/model.safetensors")
        }
        try writeFile(path + "/config.json", Array("{\"model_type\": \"cnn\", \"num_labels\": 10}\n".utf8))
        var generator = SeededGenerator(seed: 3)
        try writeFile(path + "/tokenizer.json", randomBytes(9000, using: &generator))
        try writeFile(path + "/modules.json", Array("[{\"idx\": 0, \"path\": \"1_Pooling\"}]".utf8))
        try writeFile(path + "/1_Pooling/config.json", Array("{\"pooling_mode_mean_tokens\": true}".utf8))
        return tensors
    }

    /// The relative paths where two trees differ: present on one side only, or other bytes.
    func differences(_ a: String, _ b: String) -> [String] {
        let (left, right) = (filesUnder(a), filesUnder(b))
        var differ = Set(left).symmetricDifference(right).sorted()
        for path in Set(left).intersection(right).sorted()
        where FileManager.default.contents(atPath: a + "/" + path) != FileManager.default.contents(atPath: b + "/" + path) {
            differ.append(path)
        }
        return differ
    }

    func setup() throws -> CLI {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        return cli
    }

    @Test("a sharded directory with subfolders exports byte-identically; show lists its files; verify is clean")
    func roundTrip() throws {
        let cli = try setup()
        let model = cli.directory.file("model")
        try writeModel(model, perShard: 5)
        let added = try cli.json(["base", "add", model, "--name", "st"]) as! [String: Any]
        #expect(added["files"] as? Int == filesUnder(model).count)
        let shown = try cli.json(["show", "st@1"]) as! [String: Any]
        let files = shown["files"] as! [[String: Any]]
        #expect(files.map { $0["path"] as! String } == filesUnder(model))
        let shards = files.filter { $0["kind"] as? String == "shard" }
        #expect(shards.count == filesUnder(model).filter { $0.hasSuffix(".safetensors") }.count && shards.count > 2)
        #expect(shards.allSatisfy { $0["tensors"] as? Int ?? 0 > 0 && $0["digest"] == nil })
        for file in files {
            let size = try FileManager.default.attributesOfItem(atPath: model + "/" + (file["path"] as! String))[.size] as! Int
            #expect(file["bytes"] as? Int == size, "\(file)")
        }
        let out = cli.directory.file("out")
        let export = try cli.run(["export", "st", "-o", out])
        #expect(export.status == 0, "\(export.stderr)")
        #expect(differences(model, out) == [])
        #expect(!FileManager.default.fileExists(atPath: cli.directory.file(".out")))
        // The output is not replaced without --force, and is replaced whole with it.
        let again = try cli.run(["export", "st", "-o", out])
        #expect(again.status == 67)
        try writeFile(out + "/stray.txt", [1])
        #expect(try cli.run(["export", "st", "-o", out, "--force"]).status == 0)
        #expect(differences(model, out) == [])
        #expect(try cli.run(["verify", "--read-data"]).status == 0)
    }

    @Test("files survive gc, and go with their model; a student with other shards shares every frozen blob")
    func dedupAndGarbage() throws {
        let cli = try setup()
        let model = cli.directory.file("model")
        let base = try writeModel(model, perShard: 5)
        #expect(try cli.run(["base", "add", model, "--name", "st"]).status == 0)
        #expect(try cli.run(["gc", "--grace", "0"]).status == 0)
        #expect(try cli.run(["verify", "--read-data"]).status == 0)
        let out = cli.directory.file("out")
        #expect(try cli.run(["export", "st", "-o", out]).status == 0)
        #expect(differences(model, out) == [])

        #expect(try cli.run(["student", "create", "ft", "--from", "st@1", "--freeze", "features"]).status == 0)
        let tuned = cli.directory.file("tuned")
        var changed = 0
        try writeModel(tuned, perShard: 3) { tensors in
            let index = tensors.firstIndex { $0.name == "classifier.weight" }!
            tensors[index].bytes[0] ^= 1
            changed = tensors[index].bytes.count
        }
        let commit = try cli.json(["checkpoint", "add", "ft", tuned]) as! [String: Any]
        // The changed tensor is stored, and the new index (other shards); every other tensor and file was there already.
        let index = try FileManager.default.attributesOfItem(atPath: tuned + "/model.safetensors.index.json")[.size] as! Int
        #expect(commit["bytes_stored"] as? Int == changed + index)
        let diff = try cli.json(["diff", "st@1", "ft@1"]) as! [String: Any]
        let changedTensors = (diff["tensors"] as? [[String: Any]])?.filter { $0["status"] as? String == "changed" }
        #expect(changedTensors?.map { $0["name"] as? String } == ["classifier.weight"])
        // The checkpoint digest covers the files: the same tensors with another config are another checkpoint.
        let config = Array("{\"model_type\": \"cnn\", \"num_labels\": 3}\n".utf8)
        try writeFile(tuned + "/config.json", config)
        let recommit = try cli.json(["checkpoint", "add", "ft", tuned]) as! [String: Any]
        #expect(recommit["digest"] as? String != commit["digest"] as? String)
        #expect(recommit["bytes_stored"] as? Int == config.count, "only the new config's bytes")
        _ = base

        let before = try cli.json(["stats"]) as! [String: Any]
        #expect(try cli.run(["model", "rm", "ft"]).status == 0)
        #expect(try cli.run(["model", "rm", "st"]).status == 0)
        let after = try cli.json(["stats"]) as! [String: Any]
        #expect(before["blobs"] as! Int > 0 && after["blobs"] as? Int == 0)
    }

    @Test("a Hugging Face cache snapshot: symlinks into blobs/ are followed, the source recorded")
    func cacheSnapshot() throws {
        let cli = try setup()
        let cache = cli.directory.file("hub/models--org--tiny")
        let plain = cli.directory.file("plain")
        try writeModel(plain, perShard: nil)
        try FileManager.default.createDirectory(atPath: cache + "/blobs", withIntermediateDirectories: true)
        let snapshot = cache + "/snapshots/0123abc"
        for path in filesUnder(plain) {
            let bytes = FileManager.default.contents(atPath: plain + "/" + path)!
            let blob = sha256Hex(Array(bytes))
            try bytes.write(to: URL(fileURLWithPath: cache + "/blobs/" + blob))
            let link = snapshot + "/" + path
            try FileManager.default.createDirectory(
                atPath: (link as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let depth = path.split(separator: "/").count + 1
            let target = String(repeating: "../", count: depth) + "blobs/" + blob
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        }
        let add = try cli.run(["base", "add", snapshot, "--name", "tiny"])
        #expect(add.status == 0, "\(add.stderr)")
        let shown = try cli.json(["show", "tiny"]) as! [String: Any]
        #expect(
            (shown["model"] as? [String: Any]).flatMap { ($0["provenance"] as? [String: Any])?["source"] as? String }
                == "hf://org/tiny@0123abc")
        let out = cli.directory.file("out")
        #expect(try cli.run(["export", "tiny", "-o", out]).status == 0)
        #expect(differences(plain, out) == [])
        // A student's card names the Hub repository, not the local name.
        #expect(try cli.run(["student", "create", "tiny-ft", "--from", "tiny@1"]).status == 0)
        #expect(try cli.run(["card", "tiny-ft"]).stdout.contains("base_model: org/tiny"))
    }

    @Test("refusals name the reason, exit 65, and write nothing")
    func refusals() throws {
        let cli = try setup()
        var cases: [(String, String, (String) throws -> Void, [String])] = []
        func add(_ label: String, _ expected: String, extra: [String] = [], _ prepare: @escaping (String) throws -> Void) {
            cases.append((label, expected, prepare, extra))
        }
        add("pickled weights", "pytorch_model.bin") { try writeFile($0 + "/pytorch_model.bin", [0x80, 0x02]) }
        add("a symlink that leaves", "leaves the directory") {
            try writeFile(cli.directory.file("outside.txt"), [1])
            try FileManager.default.createSymbolicLink(atPath: $0 + "/escape.txt", withDestinationPath: cli.directory.file("outside.txt"))
        }
        add("a FIFO", "not a regular file") { path in
            #expect(mkfifo(path + "/pipe", 0o600) == 0)
        }
        add("a missing shard", "which is missing") { path in
            try FileManager.default.removeItem(atPath: path + "/" + filesUnder(path).first { $0.hasPrefix("model-00002-of-") }!)
        }
        add("a tensor in two shards", "is in two files") { path in
            try SafeTensorsWriter.write(
                [TensorData(name: "classifier.bias", dtype: .f32, shape: [1], bytes: [0, 0, 0, 0])], to: path + "/extra.safetensors")
        }
        add("an index that lies", "does not hold it") { path in
            let url = URL(fileURLWithPath: path + "/model.safetensors.index.json")
            var index = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            var map = index["weight_map"] as! [String: String]
            map["features.0.weight"] = map["classifier.weight"]
            index["weight_map"] = map
            try JSONSerialization.data(withJSONObject: index).write(to: url)
        }
        add("an index that leaves a tensor out", "does not list") { path in
            let url = URL(fileURLWithPath: path + "/model.safetensors.index.json")
            var index = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            var map = index["weight_map"] as! [String: String]
            map["classifier.bias"] = nil
            index["weight_map"] = map
            try JSONSerialization.data(withJSONObject: index).write(to: url)
        }
        add("shards without their index", "no *.safetensors.index.json") {
            try FileManager.default.removeItem(atPath: $0 + "/model.safetensors.index.json")
        }
        add("no weights", "no safetensors weights") { path in
            for shard in filesUnder(path) where shard.hasSuffix(".safetensors") {
                try FileManager.default.removeItem(atPath: path + "/" + shard)
            }
            try FileManager.default.removeItem(atPath: path + "/model.safetensors.index.json")
        }
        add("too many files", "more than 5 files", extra: ["--max-files", "5"]) { _ in }
        add("a file over the cap", "tokenizer.json", extra: ["--max-file-mib", "1"]) { path in
            try writeFile(path + "/tokenizer.json", [UInt8](repeating: 7, count: (1 << 20) + 1))
        }
        for (index, (label, expected, prepare, extra)) in cases.enumerated() {
            let model = cli.directory.file("model\(index)")
            try writeModel(model, perShard: 5)
            try prepare(model)
            let result = try cli.run(["base", "add", model, "--name", "m\(index)"] + extra)
            #expect(result.status == 65, "\(label): \(result.stderr)")
            #expect(result.stderr.contains(expected) && result.stderr.contains("nothing was written"), "\(label): \(result.stderr)")
        }
        #expect((try cli.json(["list"]) as! [Any]).isEmpty)
        #expect((try cli.json(["stats"]) as! [String: Any])["blobs"] as? Int == 0)
        // Excluding the pickle lets the rest in; the pickle is not kept.
        let model = cli.directory.file("model0")
        let excluded = try cli.run(["base", "add", model, "--name", "ok", "--exclude", "*.bin"])
        #expect(excluded.status == 0, "\(excluded.stderr)")
        let files = ((try cli.json(["show", "ok@1"]) as! [String: Any])["files"] as! [[String: Any]]).map { $0["path"] as! String }
        #expect(!files.contains("pytorch_model.bin") && files.contains("1_Pooling/config.json"))
        // One shard or the index alone is explained, not read as a whole model.
        let first = filesUnder(cli.directory.file("model3")).first { $0.hasPrefix("model-00001-of-") }!
        let shard = try cli.run(["base", "add", cli.directory.file("model3/" + first), "--name", "s"])
        #expect(shard.status == 65 && shard.stderr.contains("shard 1 of"), "\(shard.stderr)")
        let index = try cli.run(["base", "add", cli.directory.file("model3/model.safetensors.index.json"), "--name", "s"])
        #expect(index.status == 65 && index.stderr.contains("index of a sharded model"), "\(index.stderr)")
    }

    @Test("a task model's prefix: rules in its names find the base's tensors, frozen ones are enforced and shared")
    func prefix() throws {
        let cli = try setup()
        let model = cli.directory.file("model")
        try writeModel(model, perShard: 5) { tensors in
            tensors.append(TensorData(name: "features.position_ids", dtype: .i64, shape: [2], bytes: [UInt8](repeating: 0, count: 16)))
        }
        #expect(try cli.run(["base", "add", model, "--name", "st"]).status == 0)
        let created = try cli.json(["student", "create", "clf", "--from", "st@1", "--freeze", "net.features"]) as! [String: Any]
        let entries = (created["manifest"] as! [String: Any])["entries"] as! [[String: Any]]
        #expect(entries.allSatisfy { ($0["name"] as! String).hasPrefix("net.") })
        #expect(entries.contains { $0["name"] as? String == "net.features.0.weight" && $0["state"] as? String == "frozen" })
        // The task model saves the base under `net.`, without the old position_ids buffer.
        let tuned = cli.directory.file("tuned")
        try writeModel(tuned, perShard: 4, prefix: "net.") { tensors in
            let index = tensors.firstIndex { $0.name == "net.classifier.weight" }!
            tensors[index].bytes[0] ^= 1
        }
        let commit = try cli.run(["checkpoint", "add", "clf", tuned, "--json"])
        #expect(commit.status == 0, "\(commit.stderr)")
        let stored = try JSONSerialization.jsonObject(with: Data(commit.stdout.utf8)) as! [String: Any]
        let classifier = SyntheticBase.tensors(seed: 7).first { $0.name == "classifier.weight" }!.bytes.count
        let index = try FileManager.default.attributesOfItem(atPath: tuned + "/model.safetensors.index.json")[.size] as! Int
        #expect(stored["bytes_stored"] as? Int == classifier + index)
        let drifted = cli.directory.file("drifted")
        try writeModel(drifted, perShard: 4, prefix: "net.") { tensors in
            let index = tensors.firstIndex { $0.name == "net.features.0.weight" }!
            tensors[index].bytes[0] ^= 1
        }
        let refused = try cli.run(["checkpoint", "add", "clf", drifted])
        #expect(refused.status == 79 && refused.stderr.contains("net.features.0.weight"), "\(refused.stderr)")
        // A student made in the base's names, given the task model's checkpoint: one line says why.
        #expect(try cli.run(["student", "create", "bare", "--from", "st@1", "--freeze", "features"]).status == 0)
        let prefixed = try cli.run(["checkpoint", "add", "bare", tuned])
        #expect(
            prefixed.status == 79 && prefixed.stderr.contains("under `net.`") && prefixed.stderr.contains("nothing was written"),
            "\(prefixed.stderr)")
        #expect(prefixed.stderr.split(separator: "\n").count == 1)
        // A student with the prefix, given the bare base model's checkpoint: the same, the other way round.
        let bare = try cli.run(["checkpoint", "add", "clf", model])
        #expect(bare.status == 79 && bare.stderr.contains("without `net.`"), "\(bare.stderr)")
        // An explicit prefix must be a layer path ending in `.`.
        let bad = try cli.run(["student", "create", "x", "--from", "st@1", "--prefix", "net*"])
        #expect(bad.status != 0 && bad.stderr.contains("prefix"), "\(bad.stderr)")
    }
}

@Suite("model directories over HTTP: upload of only the missing blobs, download, idempotent commits")
struct RemoteModelDirectoryTests {
    @Test("a directory registered and committed remotely has the local digests and exports the same tree")
    func remoteDirectories() throws {
        let served = try Served(registerBase: false)
        let helper = ModelDirectoryCLITests()
        let model = served.cli.directory.file("model")
        try helper.writeModel(model, perShard: 5)
        let added = try served.remote(["base", "add", model, "--name", "st", "--json"], token: served.write)
        #expect(added.status == 0, "\(added.stderr)")
        let base = try JSONSerialization.jsonObject(with: Data(added.stdout.utf8)) as! [String: Any]
        #expect(base["files"] as? Int == filesUnder(model).count)
        // The same directory imported locally elsewhere gets the same checkpoint digest.
        let local = CLI()
        #expect(try local.run(["init"]).status == 0)
        let localBase = try local.json(["base", "add", model, "--name", "st"]) as! [String: Any]
        #expect(localBase["digest"] as? String == base["digest"] as? String)

        #expect(try served.remote(["student", "create", "ft", "--from", "st@1", "--freeze", "features"], token: served.write).status == 0)
        let tuned = served.cli.directory.file("tuned")
        var changed = 0
        try helper.writeModel(tuned, perShard: 3) { tensors in
            let index = tensors.firstIndex { $0.name == "classifier.weight" }!
            tensors[index].bytes[0] ^= 1
            changed = tensors[index].bytes.count
        }
        let commit = try served.remote(["checkpoint", "add", "ft", tuned, "--json"], token: served.write)
        #expect(commit.status == 0, "\(commit.stderr)")
        let result = try JSONSerialization.jsonObject(with: Data(commit.stdout.utf8)) as! [String: Any]
        let index = try FileManager.default.attributesOfItem(atPath: tuned + "/model.safetensors.index.json")[.size] as! Int
        let logical = result["logical_bytes"] as! Int
        // Only the changed tensor and the new index travel as blobs; the rest is the proposal's digests.
        #expect(result["bytes_stored"] as? Int == changed + index)
        #expect((result["bytes_sent"] as! Int) < changed + index + 32 * 1024 && (result["bytes_sent"] as! Int) < logical / 2, "\(result)")

        for (reference, source) in [("st@1", model), ("ft@1", tuned)] {
            let out = served.cli.directory.file("out-" + reference)
            let export = try served.remote(["export", reference, "-o", out], token: served.read)
            #expect(export.status == 0, "\(export.stderr)")
            #expect(helper.differences(source, out) == [], "\(reference)")
        }
        // A proposed file path is checked as a local walk checks names: nothing a client sends becomes a path.
        let weights = try SafeTensorsMemory([TensorData(name: "w", dtype: .u8, shape: [4], bytes: [1, 2, 3, 4])])
        func propose(_ path: String) throws -> HTTPAnswer {
            let proposal: [String: Any] = [
                "header": "", "tensors": [["name": "w", "digest": "sha256:" + sha256Hex([1, 2, 3, 4]), "length": 4]],
                "files": [
                    ["path": "model.safetensors", "shard_header": Data(weights.headerBytes).base64EncodedString()],
                    ["path": path, "digest": "sha256:" + sha256Hex([7]), "length": 1],
                ],
            ]
            return try served.server.request(
                "POST", "/v1/bases/hostile/proposal", token: served.write, headers: ["Content-Type": "application/json"],
                body: Array(try JSONSerialization.data(withJSONObject: proposal)))
        }
        #expect(try propose("tokenizer.json").status == 200, "the same proposal with a plain path is fine")
        for hostile in ["../escape.json", "/etc/passwd", "a//b", ".hidden", "sub/../x", "tab\tname"] {
            let answer = try propose(hostile)
            #expect(answer.status == 400 && answer.text.contains("file"), "\(hostile): \(answer.text)")
        }
        let missing = try served.server.request("GET", "/v1/checkpoints/st@1/file?path=nope.json", token: served.read)
        #expect(missing.status == 404)
        let config = try served.server.request("GET", "/v1/checkpoints/st@1/file?path=1_Pooling%2Fconfig.json", token: served.read)
        #expect(config.status == 200 && config.body == Array(FileManager.default.contents(atPath: model + "/1_Pooling/config.json")!))
        // The web checkpoint page lists the files, each a link to its bytes.
        let page = try served.server.request("GET", "/checkpoints/st@1", token: served.read)
        let link = "/checkpoints/st@1/file?path=1_Pooling%2Fconfig.json"
        #expect(page.status == 200 && page.text.contains("href=\"\(link)\"") && page.text.contains("tokenizer.json"))
        let fetched = try served.server.request("GET", link, token: served.read)
        #expect(fetched.status == 200 && fetched.body == config.body)
    }

    @Test("a commit sent twice with one idempotency key is committed once; the key cannot name another checkpoint")
    func idempotentCommit() throws {
        let served = try Served()
        func body(_ value: UInt8, key: String) throws -> [UInt8] {
            let tensors = [TensorData(name: "w", dtype: .u8, shape: [4], bytes: [value, 1, 2, 3])]
            let input = try SafeTensorsMemory(tensors)
            let proposal: [String: Any] = [
                "header": Data(input.headerBytes).base64EncodedString(),
                "tensors": [
                    [
                        "name": "w", "digest": "sha256:" + sha256Hex(tensors[0].bytes), "length": 4,
                        "data": Data(tensors[0].bytes).base64EncodedString(),
                    ]
                ],
            ]
            return Array(try JSONSerialization.data(withJSONObject: ["proposal": proposal, "idempotency_key": key]))
        }
        let headers = ["Content-Type": "application/json"]
        let first = try served.server.request(
            "POST", "/v1/models/cnn/checkpoints", token: served.write, headers: headers, body: try body(9, key: "run-1:step-10"))
        let again = try served.server.request(
            "POST", "/v1/models/cnn/checkpoints", token: served.write, headers: headers, body: try body(9, key: "run-1:step-10"))
        #expect(first.status == 201 && again.status == 201, "\(first.text) \(again.text)")
        let a = try JSONSerialization.jsonObject(with: Data(first.body)) as! [String: Any]
        let b = try JSONSerialization.jsonObject(with: Data(again.body)) as! [String: Any]
        #expect(
            a["checkpoint"] as? String == "cnn@2" && b["checkpoint"] as? String == "cnn@2"
                && a["digest"] as? String == b["digest"] as? String)
        #expect((try served.cli.json(["checkpoint", "list", "cnn"]) as! [Any]).count == 2)
        let other = try served.server.request(
            "POST", "/v1/models/cnn/checkpoints", token: served.write, headers: headers, body: try body(7, key: "run-1:step-10"))
        #expect(other.status == 400 && other.text.contains("another checkpoint"), "\(other.text)")
        // A confined token learns nothing of what hidden models hold: no small blob is "present" for it.
        let confined = try served.token("other-only", "write", models: "other*")
        let (proposalBody, _) = try served.proposal(try served.cli.base("again.safetensors"))
        let plan = try served.server.request("POST", "/v1/bases/other/proposal", token: confined, body: proposalBody)
        let open = try served.server.request("POST", "/v1/bases/other/proposal", token: served.write, body: proposalBody)
        #expect(plan.status == 200 && (plan.object["inline_present"] as? [String] ?? ["x"]).isEmpty, "\(plan.text)")
        #expect(!(open.object["inline_present"] as? [String] ?? []).isEmpty, "an unconfined token is told")
        let bad = try served.server.request(
            "POST", "/v1/models/cnn/checkpoints", token: served.write, headers: headers, body: try body(7, key: "no spaces"))
        #expect(bad.status == 400)
        #expect((try served.cli.json(["checkpoint", "list", "cnn"]) as! [Any]).count == 2)
    }
}

@Suite("namespaced model names (ORG/NAME)")
struct NamespacedNameTests {
    @Test("ORG/NAME works in the CLI, over HTTP (the `/` percent-encoded) and in references; more levels are refused")
    func namespaces() throws {
        let served = try Served(registerBase: false)
        let base = try served.cli.base()
        #expect(try served.remote(["base", "add", base, "--name", "google/cnn"], token: served.write).status == 0)
        let created = try served.remote(
            ["student", "create", "acme/cnn-ft", "--from", "google/cnn@1", "--freeze", "features"], token: served.write)
        #expect(created.status == 0, "\(created.stderr)")
        let lineage = try served.remote(["lineage", "acme/cnn-ft"], token: served.read)
        #expect(lineage.stdout.contains("google/cnn (base)") && lineage.stdout.contains("acme/cnn-ft"), "\(lineage.stdout)")
        let answer = try served.server.request("GET", "/v1/models/acme%2Fcnn-ft", token: served.read)
        #expect(answer.status == 200 && (answer.object["model"] as? [String: Any])?["name"] as? String == "acme/cnn-ft")
        #expect(try served.server.request("GET", "/v1/models/acme/cnn-ft", token: served.read).status == 404)
        let download = try served.server.request("GET", "/v1/checkpoints/google%2Fcnn@1/safetensors", token: served.read)
        #expect(download.status == 200 && download.headers["content-disposition"]?.contains("google--cnn-1.safetensors") == true)
        // A token confined to one namespace sees only it.
        let confined = try served.token("acme-only", "read", models: "acme/*")
        #expect(try served.remote(["show", "google/cnn"], token: confined).status == 66)
        #expect(try served.remote(["show", "acme/cnn-ft"], token: confined).status == 0)
        for bad in ["a/b/c", "org/", "/cnn", "org/.x"] {
            #expect(try served.cli.run(["base", "add", base, "--name", bad]).status == 64, "\(bad)")
        }
    }
}

@Suite("model directories under SIGKILL")
struct ModelDirectoryCrashTests {
    @Test("killed at every k-th durable step of a directory import or export: all or nothing, verify clean, no partial tree")
    func killed() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        let helper = ModelDirectoryCLITests()
        let model = cli.directory.file("model")
        try helper.writeModel(model, perShard: 5)
        var killedImports = 0, killedExports = 0
        for step in 1...24 {
            let name = "m\(step)"
            let result = try cli.run(["base", "add", model, "--name", name], environment: ["GRAFT_CRASH_AT": "\(step)"])
            if result.status == 128 + SIGKILL {
                killedImports += 1
            } else {
                #expect(result.status == 0, "step \(step): \(result.status) \(result.stderr)")
            }
            #expect(try cli.run(["verify", "--read-data"]).status == 0, "after a kill at step \(step)")
            // Either the whole model is there (and exports the same tree) or nothing of it is.
            let shown = try cli.run(["show", name + "@1"])
            if shown.status == 0 {
                let out = cli.directory.file("check-\(step)")
                #expect(try cli.run(["export", name, "-o", out]).status == 0)
                #expect(helper.differences(model, out) == [], "step \(step)")
            } else {
                #expect(shown.status == 66)
            }
        }
        #expect(try cli.run(["base", "add", model, "--name", "whole"]).status == 0)
        for step in stride(from: 1, through: 60, by: 3) {
            let out = cli.directory.file("export-\(step)")
            let result = try cli.run(["export", "whole", "-o", out], environment: ["GRAFT_CRASH_AT": "\(step)"])
            if result.status == 128 + SIGKILL {
                killedExports += 1
                #expect(
                    !FileManager.default.fileExists(atPath: out) || helper.differences(model, out) == [], "a partial tree at step \(step)")
            } else {
                #expect(result.status == 0 && helper.differences(model, out) == [], "\(result.stderr)")
            }
        }
        #expect(killedImports > 3 && killedExports > 3, "the kills landed: \(killedImports) imports, \(killedExports) exports")
        // What killed imports left (blobs with no row, temporary files) is gc's, and only that.
        #expect(try cli.run(["gc", "--grace", "0"]).status == 0)
        let report = try cli.json(["verify", "--read-data"]) as! [String: Any]
        #expect(report["ok"] as? Bool == true && report["orphan_files"] as? Int == 0, "\(report)")
    }
}
