import Crypto
import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Synchronization
import Testing

/// A registry with a base `cnn` (registered locally), tokens of each scope, and a running server.
struct Served {
    let cli = CLI()
    let server: TestServer
    var admin = "", write = "", read = ""

    init(serverArguments: [String] = [], registerBase: Bool = true) throws {
        #expect(try cli.run(["init"]).status == 0)
        if registerBase { #expect(try cli.run(["base", "add", try cli.base(), "--name", "cnn"]).status == 0) }
        server = try TestServer(registry: cli.registry, arguments: serverArguments, logDirectory: cli.directory.path)
        admin = try token("admin-t", "admin")
        write = try token("write-t", "write")
        read = try token("read-t", "read")
    }

    /// Creates a token with the local CLI; its secret is the last line of stdout.
    func token(_ name: String, _ scope: String, models: String? = nil) throws -> String {
        let output = try cli.run(["token", "create", name, "--scope", scope] + (models.map { ["--models", $0] } ?? []))
        guard output.status == 0, let last = output.stdout.split(separator: "\n").last else {
            throw HelperError("token create: \(output.stderr)")
        }
        return String(last)
    }

    /// Runs graft against the server with `token`.
    @discardableResult
    func remote(_ arguments: [String], token: String, input: Data? = nil) throws -> ProcessOutput {
        try cli.run(arguments + ["--registry", server.url], registry: false, environment: ["GRAFT_TOKEN": token], input: input)
    }

    /// A checkpoint of `cnn` with only the classifier changed, and one with a frozen buffer changed too.
    func tunedFiles() throws -> (tuned: String, drifted: String) {
        var tensors = SyntheticBase.tensors(seed: 7)
        tensors[tensors.firstIndex { $0.name == "classifier.weight" }!].bytes[0] ^= 1
        let tuned = cli.directory.file("tuned.safetensors")
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: tuned)
        tensors[tensors.firstIndex { $0.name == "features.4.weight" }!].bytes[5] ^= 1
        tensors[tensors.firstIndex { $0.name == "features.5.running_mean" }!].bytes[0] ^= 1
        let drifted = cli.directory.file("drifted.safetensors")
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: drifted)
        return (tuned, drifted)
    }

    func json(_ arguments: [String]) throws -> Any {
        let output = try cli.run(arguments + ["--json"])
        guard output.status == 0 else { throw HelperError("graft \(arguments): \(output.stderr)") }
        return try JSONSerialization.jsonObject(with: Data(output.stdout.utf8))
    }

    /// A proposal body for a safetensors file, as the client computes it.
    func proposal(_ path: String) throws -> (body: [UInt8], proposal: UploadProposal) {
        let proposal = try UploadProposal.of(try SafeTensorsReader(path: path), inlineBelow: 4096)
        return (Array(try GraftJSON.encoder().encode(proposal)), proposal)
    }
}

func jsonBody(_ value: some Encodable) throws -> [UInt8] { Array(try GraftJSON.encoder().encode(value)) }

@Suite("graft serve: tokens, scopes and confinement")
struct ServerAccessTests {
    @Test("/healthz answers without a token; every other route needs a valid, unrevoked bearer token (401)")
    func tokens() throws {
        let served = try Served()
        defer { served.server.stop() }
        let server = served.server
        #expect(try server.request("GET", "/healthz").status == 200)
        let none = try server.request("GET", "/v1/models")
        #expect(none.status == 401)
        #expect(none.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
        #expect(none.object["error"] as? String == "unauthorized")
        #expect(try server.request("GET", "/v1/models", headers: ["Authorization": "Basic YWRtaW46cGFzc3dvcmQxMjM0"]).status == 401)
        #expect(try server.request("GET", "/v1/models", token: "graft_short").status == 401)
        #expect(try server.request("GET", "/v1/models", token: "graft_" + String(repeating: "A", count: 43)).status == 401)
        #expect(try server.request("GET", "/v1/openapi.json").status == 401)
        let listed = try server.request("GET", "/v1/models", token: served.read)
        #expect(listed.status == 200 && listed.headers["content-type"] == "application/json", "JSON answers say so")
        #expect(none.headers["content-type"] == "application/json", "errors too")
        // The scheme is case-insensitive (RFC 9110); any other scheme, or none with a token, is not.
        for header in ["bearer \(served.read)", "BEARER \(served.read)", "Bearer  \(served.read)"] {
            #expect(try server.request("GET", "/v1/models", headers: ["Authorization": header]).status == 200, "\(header.prefix(8))")
        }
        for header in [served.read, "Token \(served.read)", "Bearer", "Bearer "] {
            #expect(try server.request("GET", "/v1/models", headers: ["Authorization": header]).status == 401)
        }
        // Revoked from the command line while the server runs: refused from the next request on.
        #expect(try served.cli.run(["token", "revoke", "read-t"]).status == 0)
        #expect(try server.request("GET", "/v1/models", token: served.read).status == 401)
        // The secret is stored only as its hash.
        let database = try Data(contentsOf: URL(fileURLWithPath: served.cli.registry + "/graft.sqlite"))
        #expect(database.range(of: Data(served.admin.utf8)) == nil)
        let list = try served.cli.run(["token", "list"])
        #expect(list.stdout.contains("admin-t") && !list.stdout.contains(served.admin))
        #expect(server.log.contains("GET /v1/models 401") && server.log.contains("token=-"))
        #expect(server.log.contains("GET /v1/models 200") && server.log.contains("token=read-t"))
        #expect(!server.log.contains(served.admin) && !server.log.contains(served.read), "secrets never reach the log")
        // The remote CLI exits as a refused request should.
        #expect(try served.remote(["list"], token: "graft_nonsense").status == 81)
    }

    @Test("read reads, write also commits, admin also removes: each scope refused past its reach (403)")
    func scopes() throws {
        let served = try Served()
        defer { served.server.stop() }
        let (tuned, _) = try served.tunedFiles()
        let student = try served.remote(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features"], token: served.read)
        #expect(student.status == 81)
        #expect(student.stderr.contains("scope read; this needs write"))
        #expect(try served.remote(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features"], token: served.write).status == 0)
        #expect(try served.remote(["checkpoint", "add", "ft", tuned, "--metric", "acc=0.5"], token: served.read).status == 81)
        #expect(try served.remote(["checkpoint", "add", "ft", tuned, "--metric", "acc=0.5"], token: served.write).status == 0)
        #expect(try served.remote(["tag", "ft@1", "good"], token: served.write).status == 0)
        #expect(try served.remote(["advisory", "add", "cnn", "--id", "leak-1", "--severity", "high"], token: served.write).status == 81)
        #expect(try served.remote(["checkpoint", "rm", "ft@1"], token: served.write).status == 81)
        #expect(try served.remote(["gc"], token: served.write).status == 81)
        #expect(try served.remote(["advisory", "add", "cnn", "--id", "leak-1", "--severity", "high"], token: served.admin).status == 0)
        // A protected removal answers 409 with each reason in `details`; the remote CLI exits 80.
        let refused = try served.server.request("DELETE", "/v1/checkpoints/cnn@1", token: served.admin)
        #expect(refused.status == 409 && refused.object["error"] as? String == "protected")
        #expect(refused.object["details"] as? [String] == ["students derive from it (ft)", "it is the base's registered checkpoint"])
        #expect(try served.remote(["model", "rm", "cnn"], token: served.admin).status == 80)
        // Reads work with every scope.
        let best = try served.remote(["best", "--metric", "acc", "--under", "cnn", "--include-flagged"], token: served.read)
        #expect(best.status == 0, "\(best.stderr)")
        #expect(best.stdout.contains("best ft@1"))
        #expect(try served.remote(["untag", "ft", "good"], token: served.write).status == 0)
    }

    @Test("a token confined by --models neither reads nor learns of other models: lists, digests and blobs")
    func confinement() throws {
        let served = try Served()
        defer { served.server.stop() }
        let (tuned, _) = try served.tunedFiles()
        #expect(
            try served.remote(["student", "create", "sweep-a", "--from", "cnn@1", "--freeze", "features"], token: served.write).status == 0)
        #expect(try served.remote(["checkpoint", "add", "sweep-a", tuned], token: served.write).status == 0)
        let confined = try served.token("sweep", "write", models: "sweep-*")
        let list = try served.remote(["list", "--json"], token: confined)
        let names = (try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]] ?? []).compactMap {
            $0["name"] as? String
        }
        #expect(names == ["sweep-a"])
        let hidden = try served.remote(["show", "cnn"], token: confined)
        #expect(hidden.status == 66)
        #expect(hidden.stderr.contains("no model named `cnn`"))
        // A digest reference to the base's checkpoint answers as if it did not exist.
        let base = try served.json(["show", "cnn@1"]) as? [String: Any]
        let digest = ((base?["checkpoint"] as? [String: Any])?["digest"] as? String) ?? ""
        let byDigest = try served.server.request("GET", "/v1/checkpoints/\(digest)", token: confined)
        #expect(byDigest.status == 404)
        #expect(try served.server.request("GET", "/v1/checkpoints/\(digest)", token: served.read).status == 200)
        // Lineage from the student leaves out the base it cannot see.
        let lineage = try served.server.request("GET", "/v1/models/sweep-a/lineage", token: confined)
        #expect(lineage.status == 200)
        #expect(!lineage.text.contains("\"name\":\"cnn\""))
        #expect(try served.server.request("GET", "/v1/stats", token: confined).status == 403)
        // Blob existence: a blob only the base holds is "missing" to a confined proposal, and GET refuses it.
        let other = try served.cli.base("other.safetensors", seed: 99)
        #expect(try served.cli.run(["base", "add", other, "--name", "secret-base"]).status == 0)
        let (body, proposal) = try served.proposal(other)
        let plan = try served.server.request("POST", "/v1/bases/sweep-b/proposal", token: confined, body: body)
        #expect(plan.status == 200)
        let missing = (plan.object["missing"] as? [[String: Any]] ?? []).count
        #expect(missing == proposal.tensors.filter { $0.length >= 4096 }.count)
        let unconfined = try served.server.request("POST", "/v1/bases/sweep-b/proposal", token: served.write, body: body)
        #expect((unconfined.object["missing"] as? [[String: Any]] ?? []).isEmpty)
        let blob = proposal.tensors.first { $0.length >= 4096 }!.digest
        #expect(try served.server.request("GET", "/v1/blobs/\(blob)", token: confined).status == 404)
        #expect(try served.server.request("GET", "/v1/blobs/\(blob)", token: served.read).status == 200)
        // Writing outside the pattern is refused as not found.
        #expect(try served.remote(["student", "create", "other-ft", "--from", "cnn@1"], token: confined).status == 66)
        // best ranks and counts only the models the token sees, and suggests no metric name of the others.
        #expect(try served.remote(["metric", "log", "sweep-a@1", "acc=0.5"], token: served.write).status == 0)
        #expect(
            try served.remote(["student", "create", "hidden-ft", "--from", "cnn@1", "--freeze", "features"], token: served.write).status
                == 0)
        #expect(
            try served.remote(
                ["checkpoint", "add", "hidden-ft", tuned, "--metric", "acc=0.9", "--metric", "hidden_secret=1"], token: served.write
            ).status == 0)
        func best(_ arguments: [String], token: String) throws -> (ref: String?, candidates: Int?) {
            let output = try served.remote(["best", "--json"] + arguments, token: token)
            let object = try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any]
            return ((object?["checkpoint"] as? [String: Any])?["ref"] as? String, object?["candidates"] as? Int)
        }
        #expect(try best(["--metric", "acc"], token: served.read) == ("hidden-ft@1", 2))
        #expect(try best(["--metric", "acc"], token: confined) == ("sweep-a@1", 1))
        #expect(try best(["--metric", "acc", "--model", "sweep-a"], token: confined) == ("sweep-a@1", 1))
        let underHidden = try served.remote(["best", "--metric", "acc", "--under", "cnn"], token: confined)
        #expect(underHidden.status == 66 && !underHidden.stderr.contains("did you mean"))
        let unknown = try served.remote(["best", "--metric", "nothing"], token: confined)
        #expect(unknown.status == 66 && !unknown.stderr.contains("hidden_secret"), "\(unknown.stderr)")
        #expect(
            try served.remote(["best", "--metric", "nothing"], token: served.read).stderr.contains("hidden_secret"),
            "what the test would catch")
    }

    @Test("a confined token is suggested only names it sees, and a refusal over hidden models does not name them")
    func confinedErrors() throws {
        let served = try Served()
        defer { served.server.stop() }
        let (tuned, _) = try served.tunedFiles()
        for name in ["sweep-a", "sweepa"] {
            #expect(
                try served.remote(["student", "create", name, "--from", "cnn@1", "--freeze", "features"], token: served.write).status == 0)
        }
        #expect(try served.remote(["checkpoint", "add", "sweep-a", tuned], token: served.write).status == 0)
        let confined = try served.token("sweep", "admin", models: "sweep-*")
        // A visible name that does not exist: the hidden `sweepa` is close, and not suggested.
        let everyone = try served.remote(["show", "sweep-b"], token: served.read)
        #expect(everyone.status == 66 && everyone.stderr.contains("`sweepa`"), "what the test would catch: \(everyone.stderr)")
        let missing = try served.remote(["show", "sweep-b"], token: confined)
        #expect(missing.status == 66 && missing.stderr.contains("`sweep-a`") && !missing.stderr.contains("sweepa"), "\(missing.stderr)")
        let api = try served.server.request("GET", "/v1/models/sweep-b", token: confined)
        #expect(api.status == 404 && !api.text.contains("sweepa"))
        let page = try served.server.request("GET", "/models/sweep-b", token: confined)
        #expect(page.status == 404 && !page.text.contains("sweepa"))
        // A hidden student derives from sweep-a@1: removal is refused without naming it.
        #expect(
            try served.remote(["student", "create", "hidden-ft", "--from", "sweep-a@1", "--freeze", "features"], token: served.write)
                .status == 0)
        let refused = try served.server.request("DELETE", "/v1/checkpoints/sweep-a@1", token: confined)
        #expect(refused.status == 409)
        #expect(!refused.text.contains("hidden-ft"), "\(refused.text)")
        #expect((refused.object["details"] as? [String] ?? []).contains { $0.contains("1 model(s) outside this token's models") })
        let admin = try served.server.request("DELETE", "/v1/checkpoints/sweep-a@1", token: served.admin)
        #expect(admin.status == 409 && admin.text.contains("hidden-ft"), "what the test would catch")
        let cascade = try served.server.request("DELETE", "/v1/models/sweep-a", token: confined)
        #expect(cascade.status == 409 && !cascade.text.contains("hidden-ft"), "\(cascade.text)")
    }

    @Test("a confined write token that knows a hidden blob's digest reaches its bytes only by sending them; a PUT never tells")
    func confinedBlobs() throws {
        let served = try Served()
        defer { served.server.stop() }
        let server = served.server
        // The base `cnn` is hidden from the token; its tensors' digests and lengths leak (say).
        let confined = try served.token("sweep", "write", models: "sweep-*")
        let (body, proposal) = try served.proposal(try served.cli.base())
        let large = proposal.tensors.filter { $0.length >= 4096 }
        let target = large[0]
        let plan = try server.request("POST", "/v1/bases/sweep-copy/proposal", token: confined, body: body)
        #expect((plan.object["missing"] as? [[String: Any]] ?? []).count == large.count, "stored blobs count as absent to it")
        // Committing by digest alone is refused, naming every hidden blob; nothing is committed.
        let early = try server.request(
            "POST", "/v1/bases/sweep-copy", token: confined, body: try jsonBody(UploadCommit(proposal: proposal)))
        #expect(early.status == 409, "\(early.text)")
        #expect(Set(early.object["details"] as? [String] ?? []) == Set(large.map(\.digest.description)))
        #expect(try server.request("GET", "/v1/blobs/\(target.digest)", token: confined).status == 404)
        // Wrong bytes of the right length: 400, exactly as for a blob the store lacks.
        let bytes = SyntheticBase.tensors(seed: 7).first { $0.name == target.name }!.bytes
        var wrong = bytes
        wrong[0] ^= 1
        let guessed = try server.request("PUT", "/v1/blobs/\(target.digest)", token: confined, body: wrong)
        #expect(guessed.status == 400, "a stored blob must not accept wrong bytes: that would say it exists")
        // Every blob sent, checked: the commit lands, and the token reads what it proved it holds.
        for tensor in large {
            let data = SyntheticBase.tensors(seed: 7).first { $0.name == tensor.name }!.bytes
            #expect(try server.request("PUT", "/v1/blobs/\(tensor.digest)", token: confined, body: data).status == 201)
        }
        let commit = try server.request(
            "POST", "/v1/bases/sweep-copy", token: confined, body: try jsonBody(UploadCommit(proposal: proposal)))
        #expect(commit.status == 201, "\(commit.text)")
        let read = try server.request("GET", "/v1/blobs/\(target.digest)", token: confined)
        #expect(read.status == 200 && read.body == bytes)
        // Another confined token gains nothing from the first one's proof.
        let other = try served.token("sweep2", "write", models: "sweep-other*")
        let again = try server.request(
            "POST", "/v1/bases/sweep-other", token: other, body: try jsonBody(UploadCommit(proposal: proposal)))
        #expect(again.status == 409)
    }
}

@Suite("graft serve: uploads, downloads and the remote CLI")
struct ServerUploadTests {
    @Test("remote base add and student commit: same digests as locally, only changed tensors travel, byte-exact download")
    func uploadOnlyWhatChanged() throws {
        let served = try Served(registerBase: false)
        defer { served.server.stop() }
        let base = try served.cli.base()
        let added = try served.remote(["base", "add", base, "--name", "cnn", "--license", "mit", "--json"], token: served.write)
        #expect(added.status == 0, "\(added.stderr)")
        let baseResult = try JSONSerialization.jsonObject(with: Data(added.stdout.utf8)) as? [String: Any] ?? [:]
        let size = try FileManager.default.attributesOfItem(atPath: base)[.size] as! Int
        #expect((baseResult["bytes_sent"] as? Int ?? 0) >= size - 4096)
        let (tuned, _) = try served.tunedFiles()
        #expect(try served.remote(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features"], token: served.write).status == 0)
        let commit = try served.remote(
            ["checkpoint", "add", "ft", tuned, "--step", "3", "--metric", "acc=0.9", "--json"], token: served.write)
        #expect(commit.status == 0, "\(commit.stderr)")
        let result = try JSONSerialization.jsonObject(with: Data(commit.stdout.utf8)) as? [String: Any] ?? [:]
        let classifier = SyntheticBase.tensors(seed: 7).first { $0.name == "classifier.weight" }!.bytes.count
        let sent = result["bytes_sent"] as? Int ?? 0
        // The changed classifier, the small tensors inline and the JSON around them; never the frozen features.
        #expect(sent > classifier && sent < classifier + 40_000, "sent \(sent) for a \(classifier)-byte change")
        // The text output names the bytes sent.
        let again = try served.remote(["checkpoint", "add", "ft", tuned], token: served.write)
        #expect(again.stdout.contains("sent"))
        // The same file imported locally into a fresh registry gets the same checkpoint digest.
        let local = CLI()
        #expect(try local.run(["init"]).status == 0)
        #expect(try local.run(["base", "add", base, "--name", "cnn"]).status == 0)
        #expect(try local.run(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features"]).status == 0)
        let localCommit = try local.json(["checkpoint", "add", "ft", tuned]) as? [String: Any]
        #expect(localCommit?["digest"] as? String == result["digest"] as? String)
        // Exposure through the server: the same answer as the local registry holding the same files.
        let remoteExposure = try served.remote(["exposure", "ft@1", "--to", "cnn@1", "--json"], token: served.read)
        #expect(remoteExposure.status == 0, "\(remoteExposure.stderr)")
        #expect(remoteExposure.stdout == (try local.run(["exposure", "ft@1", "--to", "cnn@1", "--json"])).stdout)
        #expect(remoteExposure.stdout.contains("\"frozen_depth\""))
        #expect(
            baseResult["digest"] as? String
                == (try local.json(["show", "cnn@1"]) as? [String: Any]).flatMap {
                    ($0["checkpoint"] as? [String: Any])?["digest"] as? String
                })
        // Download: byte-exact, ETag the digest, one range, If-None-Match.
        let download = try served.server.request("GET", "/v1/checkpoints/ft@1/safetensors", token: served.read)
        #expect(download.status == 200)
        #expect(download.body == Array(try Data(contentsOf: URL(fileURLWithPath: tuned))))
        #expect(download.headers["etag"] == "\"\(result["digest"] as? String ?? "")\"")
        #expect(download.headers["accept-ranges"] == "bytes", "a client may resume with a range")
        let range = try served.server.request(
            "GET", "/v1/checkpoints/ft@1/safetensors", token: served.read, headers: ["Range": "bytes=100-4195"])
        #expect(range.status == 206)
        #expect(range.body == Array(download.body[100...4195]))
        #expect(range.headers["content-range"] == "bytes 100-4195/\(download.body.count)")
        let notModified = try served.server.request(
            "GET", "/v1/checkpoints/ft@1/safetensors", token: served.read, headers: ["If-None-Match": download.headers["etag"] ?? ""])
        #expect(notModified.status == 304)
        for other in ["\"sha256:0\"", "W/\"x\""] {
            let changed = try served.server.request(
                "GET", "/v1/checkpoints/ft@1/safetensors", token: served.read, headers: ["If-None-Match": other])
            #expect(changed.status == 200 && changed.body == download.body, "another ETag: the bytes")
        }
        let any = try served.server.request("GET", "/v1/checkpoints/ft@1/safetensors", token: served.read, headers: ["If-None-Match": "*"])
        #expect(any.status == 304)
        let head = try served.server.request("HEAD", "/v1/checkpoints/ft@1/safetensors", token: served.read)
        #expect(head.status == 200 && head.body.isEmpty)
        #expect(head.headers["content-length"] == String(download.body.count) && head.headers["etag"] == download.headers["etag"])
        #expect(head.headers["accept-ranges"] == "bytes")
        #expect(try served.server.request("HEAD", "/v1/checkpoints/ft@9/safetensors", token: served.read).status == 404)
        let exported = served.cli.directory.file("exported.safetensors")
        #expect(try served.remote(["export", "ft@1", "--output", exported], token: served.read).status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: exported)) == Data(download.body))
        // A blob by digest, verified as it streams.
        let blob = (try served.proposal(tuned)).proposal.tensors.first { $0.name == "classifier.weight" }!
        let fetched = try served.server.request("GET", "/v1/blobs/\(blob.digest)", token: served.read)
        #expect(fetched.status == 200 && Digest.of(fetched.body) == blob.digest)
        // Standard input works remotely too.
        let piped = try served.remote(
            ["checkpoint", "add", "ft", "-"], token: served.write, input: try Data(contentsOf: URL(fileURLWithPath: tuned)))
        #expect(piped.status == 0, "\(piped.stderr)")
        #expect(piped.stdout.contains("committed ft@3"))
    }

    @Test("a frozen tensor changed: 409 naming every tensor before any data moves, nothing stored; exit 79 remotely")
    func manifestViolation() throws {
        let served = try Served()
        defer { served.server.stop() }
        let (_, drifted) = try served.tunedFiles()
        #expect(try served.remote(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features"], token: served.write).status == 0)
        let blobsBefore = filesUnder(served.cli.registry + "/blobs").count
        let (body, _) = try served.proposal(drifted)
        let answer = try served.server.request("POST", "/v1/models/ft/checkpoints/proposal", token: served.write, body: body)
        #expect(answer.status == 409)
        #expect(answer.object["error"] as? String == "manifest_violation")
        let details = answer.object["details"] as? [String] ?? []
        #expect(details.count == 2)
        #expect(details.contains { $0.hasPrefix("features.4.weight: frozen, but changed") })
        #expect(details.contains { $0.hasPrefix("features.5.running_mean: frozen, but changed") })
        // The same, typed: one entry per tensor with the rule and both digests.
        let violations = answer.object["violations"] as? [[String: Any]] ?? []
        #expect(violations.compactMap { $0["tensor"] as? String }.sorted() == ["features.4.weight", "features.5.running_mean"])
        #expect(violations.allSatisfy { $0["rule"] as? String == "changed" })
        let proposed = Dictionary(uniqueKeysWithValues: try served.proposal(drifted).1.tensors.map { ($0.name, $0.digest.description) })
        for violation in violations {
            let tensor = violation["tensor"] as? String ?? ""
            #expect(violation["found"] as? String == proposed[tensor], "the digest proposed for \(tensor)")
            #expect(
                (violation["expected"] as? String)?.hasPrefix("sha256:") == true && violation["expected"] as? String != proposed[tensor])
        }
        let cli = try served.remote(["checkpoint", "add", "ft", drifted], token: served.write)
        #expect(cli.status == 79)
        #expect(cli.stderr.contains("features.4.weight: frozen, but changed"))
        #expect(filesUnder(served.cli.registry + "/blobs").count == blobsBefore)
        #expect(try served.remote(["checkpoint", "list", "ft"], token: served.read).stdout.contains("no checkpoints"))
        // A dropped tensor present is refused the same way.
        #expect(
            try served.remote(["student", "create", "dropper", "--from", "cnn@1", "--drop", "classifier"], token: served.write).status == 0)
        let dropped = try served.server.request("POST", "/v1/models/dropper/checkpoints/proposal", token: served.write, body: body)
        #expect(dropped.status == 409)
        #expect((dropped.object["details"] as? [String] ?? []).contains { $0.contains("classifier.weight") })
        let typed = dropped.object["violations"] as? [[String: Any]] ?? []
        #expect(typed.contains { $0["tensor"] as? String == "classifier.weight" && $0["rule"] as? String == "dropped_present" })
    }

    @Test("blobs: only what a proposal announced, rehashed (400 and nothing kept on mismatch); a commit missing blobs is refused whole")
    func blobUploads() throws {
        let served = try Served()
        defer { served.server.stop() }
        let server = served.server
        let (tuned, _) = try served.tunedFiles()
        #expect(try served.remote(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features"], token: served.write).status == 0)
        var (body, proposal) = try served.proposal(tuned)
        let classifier = proposal.tensors.first { $0.name == "classifier.weight" }!
        let bytes = SyntheticBase.tensors(seed: 7).first { $0.name == "classifier.weight" }!.bytes.enumerated().map {
            $0 == 0 ? $1 ^ 1 : $1
        }
        // Not announced yet: refused, whatever the client says its length is.
        let unannounced = try server.request("PUT", "/v1/blobs/\(classifier.digest)", token: served.write, body: bytes)
        #expect(unannounced.status == 400)
        #expect((unannounced.object["message"] as? String ?? "").contains("propose the checkpoint first"))
        let plan = try server.request("POST", "/v1/models/ft/checkpoints/proposal", token: served.write, body: body)
        #expect(plan.status == 200)
        #expect((plan.object["missing"] as? [[String: Any]])?.compactMap { $0["digest"] as? String } == [classifier.digest.description])
        // A commit before the blob arrives is refused, naming it; nothing is committed.
        let early = try server.request(
            "POST", "/v1/models/ft/checkpoints", token: served.write, body: try jsonBody(UploadCommit(proposal: proposal)))
        #expect(early.status == 409)
        #expect(early.object["details"] as? [String] == [classifier.digest.description])
        // Wrong bytes, too few, too many, a lying Content-Length: 400, and nothing kept.
        var wrong = bytes
        wrong[9] ^= 0xFF
        #expect(try server.request("PUT", "/v1/blobs/\(classifier.digest)", token: served.write, body: wrong).status == 400)
        #expect(
            try server.request("PUT", "/v1/blobs/\(classifier.digest)", token: served.write, body: Array(bytes.dropLast())).status == 400)
        #expect(try server.request("PUT", "/v1/blobs/\(classifier.digest)", token: served.write, body: bytes + [0]).status == 400)
        #expect(try server.request("PUT", "/v1/blobs/\(classifier.digest)", token: served.read, body: bytes).status == 403)
        #expect(filesUnder(served.cli.registry + "/blobs").allSatisfy { !$0.contains(classifier.digest.hex) })
        // The right bytes: stored; then the commit lands.
        let put = try server.request("PUT", "/v1/blobs/\(classifier.digest)", token: served.write, body: bytes)
        #expect(put.status == 201)
        #expect(put.object["digest"] as? String == classifier.digest.description)
        // A small tensor the registry lacks must come with the commit…
        var biased = SyntheticBase.tensors(seed: 7)
        biased[biased.firstIndex { $0.name == "classifier.weight" }!].bytes[0] ^= 1
        biased[biased.firstIndex { $0.name == "classifier.bias" }!].bytes[0] ^= 1
        let biasedPath = served.cli.directory.file("biased.safetensors")
        try SafeTensorsWriter.write(biased, metadata: ["format": "pt"], to: biasedPath)
        let newSmall = try UploadProposal.of(try SafeTensorsReader(path: biasedPath), inlineBelow: 0)
        let bare = try server.request(
            "POST", "/v1/models/ft/checkpoints", token: served.write, body: try jsonBody(UploadCommit(proposal: newSmall)))
        #expect(bare.status == 400)
        #expect((bare.object["message"] as? String ?? "").contains("must come with the commit"))
        // …while those the plan says it holds (`inline_present`) may be left out: the commit lands.
        let held = plan.object["inline_present"] as? [String] ?? []
        let small = proposal.tensors.filter { $0.length < 4096 }.map(\.digest.description)
        #expect(!small.isEmpty && Set(small).isSubset(of: held))
        let withoutData = try UploadProposal.of(try SafeTensorsReader(path: tuned), inlineBelow: 0)
        let commit = try server.request(
            "POST", "/v1/models/ft/checkpoints", token: served.write, body: try jsonBody(UploadCommit(proposal: withoutData, step: 1)))
        #expect(commit.status == 201, "\(commit.text)")
        #expect(commit.object["checkpoint"] as? String == "ft@1")
        (body, proposal) = try served.proposal(tuned)
        #expect(try served.cli.run(["verify", "--read-data"]).status == 0)
        // A proposal whose tensors disagree with its header: 400, one line.
        var bad = proposal
        bad.tensors[0].length += 1
        let invalid = try server.request("POST", "/v1/models/ft/checkpoints/proposal", token: served.write, body: try jsonBody(bad))
        #expect(invalid.status == 400)
        #expect(!(invalid.object["message"] as? String ?? "\n").contains("\n"))
    }

    @Test("an upload cut off or stalled mid-blob leaves nothing that survives gc, commits nothing, and a retry succeeds")
    func interruptedUploads() throws {
        let served = try Served(serverArguments: ["--idle-timeout", "1"])
        defer { served.server.stop() }
        let server = served.server
        let (tuned, _) = try served.tunedFiles()
        #expect(try served.remote(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features"], token: served.write).status == 0)
        let (body, proposal) = try served.proposal(tuned)
        #expect(try server.request("POST", "/v1/models/ft/checkpoints/proposal", token: served.write, body: body).status == 200)
        let classifier = proposal.tensors.first { $0.name == "classifier.weight" }!
        let bytes = SyntheticBase.tensors(seed: 7).first { $0.name == "classifier.weight" }!.bytes.enumerated().map {
            $0 == 0 ? $1 ^ 1 : $1
        }
        let head = requestBytes(
            method: "PUT", path: "/v1/blobs/\(classifier.digest)", token: served.write, headers: [:], body: nil, contentLength: bytes.count)
        // Cut: half the body, then the client goes away.
        do {
            let connection = try Connection(port: server.port)
            connection.send(head + bytes.prefix(bytes.count / 2))
            usleep(200_000)
        }
        // Stall: half the body, then silence past the idle timeout: the server closes.
        let stalled = try Connection(port: server.port)
        stalled.send(head + bytes.prefix(bytes.count / 2))
        let start = Date()
        let answer = stalled.receiveAll()
        #expect(Date().timeIntervalSince(start) < 15)
        #expect(!String(decoding: answer, as: UTF8.self).hasPrefix("HTTP/1.1 201"))
        usleep(300_000)
        #expect(filesUnder(served.cli.registry + "/blobs").allSatisfy { !$0.contains(classifier.digest.hex) })
        let commit = try server.request(
            "POST", "/v1/models/ft/checkpoints", token: served.write, body: try jsonBody(UploadCommit(proposal: proposal)))
        #expect(commit.status == 409)
        // gc leaves no temporary bytes behind.
        #expect(try served.cli.run(["gc", "--grace", "0"]).status == 0)
        #expect(filesUnder(served.cli.registry + "/tmp").isEmpty)
        // The retry succeeds.
        let retry = try served.remote(["checkpoint", "add", "ft", tuned], token: served.write)
        #expect(retry.status == 0, "\(retry.stderr)")
        #expect(try served.cli.run(["verify", "--read-data"]).status == 0)
    }

    @Test("graft train on a training machine: reads its parent from the server and commits every epoch through it")
    func remoteTrain() throws {
        let served = try Served(registerBase: false)
        defer { served.server.stop() }
        let data = try separable(served.cli)
        let base = try served.remote(
            [
                "train", "--scratch", "--architecture", "linear:8,relu", "--register-as", "tabular", "--data", data, "--classes", "0-1",
                "--epochs", "2", "--val-per-class", "20",
            ],
            token: served.write)
        #expect(base.status == 0, "\(base.stderr)")
        let student = try served.remote(
            [
                "train", "fe", "--from", "tabular@latest", "--mode", "feature-extraction", "--data", data, "--classes", "0-2", "--epochs",
                "2", "--val-per-class", "20", "--json",
            ],
            token: served.write)
        #expect(student.status == 0, "\(student.stderr)")
        let reports = try #require(try JSONSerialization.jsonObject(with: Data(student.stdout.utf8)) as? [[String: Any]])
        #expect(reports.last?["checkpoint"] as? String == "fe@2")
        // What landed is on the server's registry, manifest enforced, blobs intact.
        let checkpoints = (try served.json(["checkpoint", "list", "fe"]) as? [[String: Any]] ?? []).compactMap { $0["ref"] as? String }
        #expect(checkpoints == ["fe@1", "fe@2"])
        #expect(served.server.log.contains("POST /v1/models/fe/checkpoints 201"))
        #expect(served.server.log.contains("GET /v1/checkpoints/tabular@2/safetensors 200"))
        #expect(try served.cli.run(["verify", "--read-data"]).status == 0)
        // A read token cannot train.
        let refused = try served.remote(
            ["train", "fe2", "--from", "tabular@latest", "--mode", "feature-extraction", "--data", data, "--epochs", "1"],
            token: served.read)
        #expect(refused.status == 81)
    }

    @Test("concurrent commits to one student from several remote clients are numbered without gaps")
    func concurrentCommits() async throws {
        let served = try Served()
        defer { served.server.stop() }
        let (tuned, _) = try served.tunedFiles()
        #expect(try served.remote(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features"], token: served.write).status == 0)
        let (clients, commits) = (4, 4)
        let failures = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<clients {
                group.addTask {
                    var failed = 0
                    for _ in 0..<commits where try served.remote(["checkpoint", "add", "ft", tuned], token: served.write).status != 0 {
                        failed += 1
                    }
                    return failed
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(failures == 0)
        let numbers = (try served.json(["checkpoint", "list", "ft"]) as? [[String: Any]] ?? []).compactMap { $0["number"] as? Int }
        #expect(numbers == Array(1...(clients * commits)))
    }
}

@Suite("graft serve: bad input, limits and shutdown")
struct ServerAbuseTests {
    @Test("names and references validated as locally; URL segments decoded once and never a path")
    func segments() throws {
        let served = try Served()
        defer { served.server.stop() }
        let server = served.server
        for path in [
            "/v1/models/..%2F..%2Fetc", "/v1/models/%2e%2e", "/v1/models/a%00b", "/v1/checkpoints/cnn@0",
            "/v1/checkpoints/..%2Fgraft.sqlite", "/v1/blobs/sha256:zz",
        ] {
            let answer = try server.request("GET", path, token: served.read)
            #expect(answer.status == 400, "\(path): \(answer.status) \(answer.text)")
            #expect(answer.object["error"] as? String == "usage")
        }
        // Decoded once: %252F stays the three characters `%2F`, which no name may hold.
        #expect(try server.request("GET", "/v1/models/cnn%252F", token: served.read).status == 400)
        #expect(try server.request("GET", "/v1/models/c%6En", token: served.read).status == 200)
        #expect(try server.request("GET", "/v1/no-such-route", token: served.read).status == 404)
    }

    @Test("malformed JSON is 400 with one line; bodies past a route's cap are 413; an oversized header is refused")
    func limits() throws {
        let served = try Served()
        defer { served.server.stop() }
        let server = served.server
        let malformed = try server.request("POST", "/v1/students", token: served.write, body: Array("{\"name\": ".utf8))
        #expect(malformed.status == 400)
        #expect((malformed.object["message"] as? String ?? "").hasPrefix("malformed JSON"))
        let missingField = try server.request("POST", "/v1/students", token: served.write, body: Array("{\"name\": \"x\"}".utf8))
        #expect(missingField.status == 400)
        #expect((missingField.object["message"] as? String ?? "").contains("parent"))
        let big = [UInt8](repeating: 0x20, count: (1 << 20) + 10)
        #expect(try server.request("POST", "/v1/students", token: served.write, body: big).status == 413)
        let header = try server.request(
            "GET", "/v1/models", token: served.read, headers: ["X-Filler": String(repeating: "a", count: 200_000)])
        #expect([400, 413, 431].contains(header.status))
        #expect(try server.request("GET", "/healthz").status == 200)
        #expect(try server.request("GET", "/v1/best?metric=acc&direction=sideways", token: served.read).status == 400)
    }

    @Test("SIGTERM during commits: the server exits 0, every acknowledged commit is intact and verify is clean")
    func gracefulShutdown() async throws {
        let served = try Served()
        let (tuned, _) = try served.tunedFiles()
        #expect(try served.remote(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features"], token: served.write).status == 0)
        let acknowledged = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    var done = 0
                    for _ in 0..<20 {
                        let output = try served.remote(["checkpoint", "add", "ft", tuned], token: served.write)
                        if output.status != 0 { break }
                        done += 1
                    }
                    return done
                }
            }
            try await Task.sleep(for: .milliseconds(800))
            #expect(served.server.stop() == .exited(0))
            return try await group.reduce(0, +)
        }
        let numbers = (try served.json(["checkpoint", "list", "ft"]) as? [[String: Any]] ?? []).compactMap { $0["number"] as? Int }
        #expect(numbers.count >= acknowledged)
        #expect(numbers == Array(1...max(numbers.count, 1)).prefix(numbers.count).map { $0 })
        #expect(try served.cli.run(["verify", "--read-data"]).status == 0)
        #expect(served.server.log.contains("POST /v1/models/ft/checkpoints 201"))
    }

    @Test("a malformed chunked body is 400, not 500; free text with a NUL or an escape is refused whole, nothing created")
    func malformedBodiesAndText() throws {
        let served = try Served()
        defer { served.server.stop() }
        for size in ["zz", "-5", "ffffffffffffffffffff"] {
            let connection = try Connection(port: served.server.port)
            var head = "POST /v1/bases/x/proposal HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            head += "Authorization: Bearer \(served.write)\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            connection.send(Array((head + "\(size)\r\n{}\r\n0\r\n\r\n").utf8))
            let answer = try parseAnswer(connection.receiveAll())
            #expect(answer.status == 400, "chunk size \(size): \(answer.text)")
            #expect(answer.object["error"] as? String == "usage")
        }
        for (field, text) in [("description", "before\u{0}after"), ("description", "\u{1B}]0;owned\u{7}")] {
            let body = try jsonBody(["name": "s", "parent": "cnn@1", field: text])
            let answer = try served.server.request("POST", "/v1/students", token: served.write, body: body)
            #expect(answer.status == 400 && answer.object["error"] as? String == "invalid_input", "\(answer.text)")
            #expect((answer.object["message"] as? String ?? "").contains("control character"))
        }
        #expect(try served.remote(["show", "s"], token: served.read).status == 66, "nothing was created")
        let fine = try jsonBody(["name": "s", "parent": "cnn@1", "description": "tabs\tand\nlines, ünïcode ✓"])
        #expect(try served.server.request("POST", "/v1/students", token: served.write, body: fine).status == 201)
        // A base's provenance through an upload is checked the same way, before anything is stored.
        let (_, proposal) = try served.proposal(try served.cli.base("b2.safetensors", seed: 3))
        let commit = UploadCommit(proposal: proposal, provenance: Provenance(license: "mit\u{0}"))
        let refused = try served.server.request("POST", "/v1/bases/b2", token: served.write, body: try jsonBody(commit))
        #expect(refused.status == 400 && (refused.object["message"] as? String ?? "").contains("provenance license"), "\(refused.text)")
    }

    @Test("memory stays bounded: a body past the cap is refused as it arrives, and large bodies are processed two at a time")
    func boundedMemory() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        #expect(try cli.run(["base", "add", try cli.base(), "--name", "cnn"]).status == 0)
        let token = try cli.run(["token", "create", "w", "--scope", "write"]).stdout.split(separator: "\n").last.map(String.init) ?? ""
        let server = try TestServer(registry: cli.registry, arguments: ["--max-body-mib", "2"], logDirectory: cli.directory.path)
        defer { server.stop() }
        func peakMiB() -> Int {
            let status = (try? String(contentsOfFile: "/proc/\(server.process.pid)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1) / 1024
        }
        // 120 MB announced, or sent chunked with no length (3 MiB here, past the 2 MiB cap; the
        // server stops reading there): 413 once the cap is passed.
        let announced = try Connection(port: server.port)
        announced.send(
            requestBytes(
                method: "POST", path: "/v1/models/cnn/curves/import", token: token, headers: [:], body: nil, contentLength: 120_000_000))
        #expect(try parseAnswer(announced.receiveAll()).status == 413)
        let connection = try Connection(port: server.port)
        var head = "POST /v1/models/cnn/curves/import HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        head += "Authorization: Bearer \(token)\r\nTransfer-Encoding: chunked\r\n\r\n"
        connection.send(Array(head.utf8))
        let chunk = Array(String(repeating: "1,0.5\n", count: 1 << 17).utf8)
        for _ in 0..<4 { connection.send(Array((String(chunk.count, radix: 16) + "\r\n").utf8) + chunk + Array("\r\n".utf8)) }
        #expect(try parseAnswer(connection.receiveAll()).status == 413)
        // Eight clients at once, each a curve file at the cap: each imported or told to retry
        // (503), and the server's peak stays bounded (how many run at once: BodyGateTests).
        var csv = "step,loss,accuracy\n"
        var step = 0
        while csv.utf8.count < (2 << 20) - 64 {
            csv += "\(step),0.\(step % 9973),0.\(step % 7919)\n"
            step += 1
        }
        let body = Array(csv.utf8)
        let statuses = Mutex<[Int]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            let status = (try? server.request("POST", "/v1/models/cnn/curves/import", token: token, body: body))?.status ?? -1
            statuses.withLock { $0.append(status) }
        }
        let answered = statuses.withLock { $0 }
        #expect(answered.allSatisfy { $0 == 200 || $0 == 503 }, "\(answered)")
        #expect(answered.filter { $0 == 200 }.count >= 2, "\(answered)")
        #expect(peakMiB() > 0 && peakMiB() < 256, "peak RSS \(peakMiB()) MiB")
    }

    @Test("HTTPS with --tls-cert/--tls-key")
    func tls() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        let (cert, key) = (cli.directory.file("cert.pem"), cli.directory.file("key.pem"))
        let made = try runProcess(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1",
            ])
        #expect(made.status == 0, "\(made.stderr)")
        let server = try TestServer(
            registry: cli.registry, arguments: ["--tls-cert", cert, "--tls-key", key], logDirectory: cli.directory.path)
        defer { server.stop() }
        #expect(server.url.hasPrefix("https://"))
        let health = try runProcess("/usr/bin/curl", ["-s", "--cacert", cert, server.url + "/healthz"])
        #expect(health.stdout.contains("\"status\":\"ok\""))
        // The remote CLI trusts the server's own certificate through GRAFT_CA_FILE, and no other.
        let token = try cli.run(["token", "create", "t", "--scope", "read"]).stdout.split(separator: "\n").last.map(String.init) ?? ""
        let trusted = try cli.run(
            ["list", "--registry", server.url], registry: false, environment: ["GRAFT_TOKEN": token, "GRAFT_CA_FILE": cert])
        #expect(trusted.status == 0, "\(trusted.stderr)")
        let untrusted = try cli.run(["list", "--registry", server.url], registry: false, environment: ["GRAFT_TOKEN": token])
        #expect(untrusted.status == 69)
        // Under TLS the session cookie is Secure.
        let login = try runProcess(
            "/usr/bin/curl",
            ["-s", "-D", "-", "-o", "/dev/null", "--cacert", cert, "--data-urlencode", "token=\(token)", server.url + "/login"])
        #expect(
            login.stdout.contains("Set-Cookie: graft_session=graftsession_")
                && login.stdout.contains("; Path=/; HttpOnly; SameSite=Strict; Secure"),
            "\(login.stdout)")
        // Plain HTTP to the TLS port gets no answer.
        #expect((try? server.request("GET", "/healthz"))?.status != 200)
        // Every answer, errors included, carries HSTS.
        let headers = try runProcess("/usr/bin/curl", ["-s", "-D", "-", "-o", "/dev/null", "--cacert", cert, server.url + "/v1/models"])
        #expect(
            headers.stdout.contains("HTTP/1.1 401") && headers.stdout.lowercased().contains("strict-transport-security: max-age=31536000"))
        // TLS 1.2 is the floor: a client offering at most 1.1 (its own floor lowered) is refused.
        let port = String(server.url.split(separator: ":").last ?? "")
        func handshake(_ version: String) throws -> ProcessOutput {
            try runProcess(
                "/usr/bin/openssl",
                ["s_client", "-connect", "127.0.0.1:\(port)", version, "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", cert], input: Data())
        }
        let old = try handshake("-tls1_1")
        #expect(old.stdout.contains("Cipher is (NONE)") && old.stderr.contains("alert protocol version"), "\(old.stdout)\(old.stderr)")
        let current = try handshake("-tls1_2")
        #expect(current.stdout.contains("New, TLSv1.2, Cipher is"), "what the test would catch: \(current.stdout)\(current.stderr)")
    }

    @Test("listening beyond loopback without TLS warns at start; loopback does not")
    func plainHTTPWarning() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        let loopback = try TestServer(registry: cli.registry, logDirectory: cli.directory.path)
        let quiet = loopback.log
        loopback.stop()
        #expect(!quiet.contains("without TLS"))
        // An address of TEST-NET-1 (RFC 5737), never this machine's: the warning comes before the
        // bind, which then fails, so no test server ever listens beyond loopback.
        let open = try cli.run(["serve", "--listen", "192.0.2.1:0"])
        #expect(open.stderr.contains("warning: listening on 192.0.2.1 without TLS"), "\(open.stderr)")
        #expect(open.status == 69 && open.stderr.contains("cannot serve on 192.0.2.1:0"))
    }
}
