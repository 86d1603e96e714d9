import Foundation
import Graft
import GraftTestSupport
import Testing

/// docs/DEPLOYMENT.md, "Moving from one machine to a shared server": the commands between its
/// `walkthrough` markers, run as written with bash against a throwaway PostgreSQL cluster and
/// moto's S3 server, move the demo registry; every read then answers the same on both sides,
/// directly and through `graft serve`, and a second run catches up what changed.
@Suite("DEPLOYMENT.md: the demo registry moved to PostgreSQL + S3 as the walkthrough says", .serialized)
struct DeploymentWalkthroughTests {
    /// The shell block between the walkthrough markers.
    static func walkthrough() throws -> String {
        let text = try String(contentsOfFile: packageRoot + "/docs/DEPLOYMENT.md", encoding: .utf8)
        let begin = try #require(text.range(of: "<!-- walkthrough: begin -->"))
        let end = try #require(text.range(of: "<!-- walkthrough: end -->"))
        let block = String(text[begin.upperBound..<end.lowerBound])
        return block.replacing("```sh", with: "").replacing("```", with: "")
    }

    @Test("the walkthrough's commands move the demo registry: same answers, byte-identical exports, served, caught up")
    func moveDemoRegistry() async throws {
        let cluster = try PostgresCluster()
        defer { cluster.stop() }
        let moto = try MotoServer()
        defer { moto.stop() }
        let cli = CLI()
        let demo = try cli.run(["demo", "--quick"])
        #expect(demo.status == 0, "\(demo.stderr)")
        // What the demo does not make: an alias, an open and a resolved advisory.
        #expect(try cli.run(["tag", "fmnist-5to9-fe@1", "production"]).status == 0)
        #expect(try cli.run(["advisory", "add", "fmnist-teacher", "--id", "CVE-1", "--severity", "high"]).status == 0)
        #expect(try cli.run(["advisory", "add", "fmnist-5to9-full@2", "--id", "OLD-1", "--severity", "low"]).status == 0)
        #expect(try cli.run(["advisory", "resolve", "OLD-1"]).status == 0)

        let serverDirectory = cli.directory.file("server")
        let credentials = ["AWS_ACCESS_KEY_ID": "graft-test", "AWS_SECRET_ACCESS_KEY": "graft-test-secret"]
        var environment = ProcessInfo.processInfo.environment.merging(credentials) { _, new in new }
        environment.removeValue(forKey: "GRAFT_REGISTRY")
        environment["PATH"] =
            URL(fileURLWithPath: graftBinary).deletingLastPathComponent().path + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        environment["DATABASE"] = cluster.url()
        environment["BUCKET"] = "s3://graft-move/team?endpoint=\(moto.url.absoluteString)"
        environment["SERVER_DIR"] = serverDirectory
        let script = "set -euo pipefail\n" + (try Self.walkthrough())
        let ran = try runProcess("/bin/bash", ["-c", script], environment: environment, directory: cli.directory.path)
        #expect(ran.status == 0, "\(ran.stdout)\n\(ran.stderr)")
        #expect(ran.stdout.contains("would be created") && ran.stdout.contains("fmnist-teacher: created"), "\(ran.stdout)")
        let token = try #require(ran.stdout.split(separator: "\n").last.map(String.init))

        let there = ["--registry", serverDirectory, "--metadata", cluster.url()]
        func read(_ arguments: [String], at location: [String]) throws -> String {
            let output = try cli.run(arguments + location, registry: false, environment: credentials)
            #expect(output.status == 0, "\(arguments) \(location): \(output.stderr)")
            return output.stdout
        }
        let models = ((try cli.json(["list"]) as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String }
        #expect(models.count == 6)
        var refs: [String] = []
        for model in models {
            for command in [
                ["show", model, "--json"], ["lineage", model, "--format", "json"], ["metrics", model, "--json"],
                ["affected", model, "--json"], ["checkpoint", "list", model, "--json"],
            ] {
                #expect(try read(command, at: there) == (try read(command, at: ["--registry", cli.registry])), "\(command)")
            }
            let listed = try cli.json(["checkpoint", "list", model]) as? [[String: Any]] ?? []
            refs += listed.compactMap { $0["ref"] as? String }
        }
        #expect(
            try read(["advisory", "list", "--all", "--json"], at: there)
                == (try read(["advisory", "list", "--all", "--json"], at: ["--registry", cli.registry])))
        // Byte-identical exports, files and directories alike (an adapter is a directory).
        for (index, ref) in refs.enumerated() {
            let (a, b) = (cli.directory.file("export-\(index)-a"), cli.directory.file("export-\(index)-b"))
            #expect(try cli.run(["export", ref, "-o", a]).status == 0)
            #expect(try cli.run(["export", ref, "-o", b] + there, registry: false, environment: credentials).status == 0)
            let compared = try runProcess("/usr/bin/diff", ["-r", a, b], environment: [:], directory: cli.directory.path)
            #expect(compared.status == 0, "\(ref): \(compared.stdout)")
        }
        #expect(refs.count == 11)

        // Served: the team reads the same lineage through `graft serve` with the new token.
        let served = try TestServer(
            registry: serverDirectory, environment: credentials.merging(["GRAFT_METADATA": cluster.url()]) { a, _ in a },
            logDirectory: cli.directory.path)
        defer { served.stop() }
        let remote = try cli.run(
            ["lineage", "fmnist-teacher", "--format", "json", "--registry", served.url], registry: false,
            environment: ["GRAFT_TOKEN": token])
        #expect(
            try remote.status == 0
                && remote.stdout == (read(["lineage", "fmnist-teacher", "--format", "json"], at: ["--registry", cli.registry])))

        // Catching up: a job still writing to ./registry; the same copy again sends only that.
        #expect(try cli.run(["metric", "log", "fmnist-5to9-lora@2", "f1=0.5"]).status == 0)
        #expect(try cli.run(["advisory", "resolve", "CVE-1"]).status == 0)
        let again = try cli.run(
            ["copy", "--to", serverDirectory, "--to-metadata", cluster.url(), "--to-blobs", environment["BUCKET"]!, "--json"],
            environment: credentials)
        #expect(again.status == 0, "\(again.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any]
        #expect(report?["checkpoints"] as? Int == 0 && report?["blobs"] as? Int == 0)
        let actions = Dictionary(
            uniqueKeysWithValues: ((report?["models"] as? [[String: Any]]) ?? []).map {
                ($0["model"] as? String ?? "", $0["action"] as? String)
            })
        #expect(
            actions["fmnist-5to9-lora"] == "updated" && actions["fmnist-teacher"] == "updated" && actions["fmnist-5to9-fe"] == "unchanged")
        #expect(
            try read(["metrics", "fmnist-5to9-lora", "--json"], at: there)
                == (try read(["metrics", "fmnist-5to9-lora", "--json"], at: ["--registry", cli.registry])))
        #expect(
            try read(["advisory", "list", "--all", "--json"], at: there)
                == (try read(["advisory", "list", "--all", "--json"], at: ["--registry", cli.registry])))
    }
}
