import Foundation
import Graft
import GraftS3
import GraftTestSupport
import SafeTensors
import Testing

/// The CLI on a registry whose blobs live in an S3-compatible bucket (moto's server on
/// loopback): `init --blobs` records the location, every command then uses it, and the
/// behaviours users rely on hold as on local blobs.
@Suite("graft with --blobs s3://: init, import, export byte-exact, verify, gc; a wrong location refused", .serialized)
struct S3CLITests {
    static let credentials = ["AWS_ACCESS_KEY_ID": "graft-test", "AWS_SECRET_ACCESS_KEY": "graft-test-secret"]

    @Test("a registry with its blobs in S3, end to end through the CLI")
    func endToEnd() async throws {
        let server = try MotoServer()
        defer { server.stop() }
        let cli = CLI()
        let blobs = "s3://graft-cli/team/reg?endpoint=\(server.url.absoluteString)"
        let env = Self.credentials
        // No credentials: refused before anything is written.
        let bare = try cli.run(["init", "--blobs", blobs], environment: ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""])
        #expect(bare.status == 64 && bare.stderr.contains("AWS_ACCESS_KEY_ID") && !FileManager.default.fileExists(atPath: cli.registry))
        let badLocation = try cli.run(["init", "--blobs", "s3://Bad_Bucket"], environment: env)
        #expect(
            badLocation.status == 64 && badLocation.stderr.contains("bucket name") && !FileManager.default.fileExists(atPath: cli.registry))
        #expect(try cli.run(["init", "--blobs", blobs], environment: env).status == 0)

        let base = try cli.base()
        #expect(try cli.run(["base", "add", base, "--name", "cnn"], environment: env).status == 0)
        #expect(try cli.run(["student", "create", "kid", "--from", "cnn", "--freeze", "features.*"], environment: env).status == 0)
        var tensors = SyntheticBase.tensors(seed: 7)
        tensors[tensors.firstIndex { $0.name == "classifier.weight" }!].bytes[0] ^= 1
        let tuned = cli.directory.file("tuned.safetensors")
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: tuned)
        #expect(try cli.run(["checkpoint", "add", "kid", tuned, "--metric", "acc=0.9"], environment: env).status == 0)

        // The blobs are in the bucket, under the prefix, named by digest; none under the root.
        let client = S3Client(
            location: try S3Location(parsing: blobs),
            credentials: AWSCredentials(accessKeyID: "graft-test", secretAccessKey: "graft-test-secret"))
        let keys = try await client.list(prefix: "team/reg/blobs/").map(\.key)
        #expect(!keys.isEmpty && keys.allSatisfy { $0.hasPrefix("team/reg/blobs/sha256/") })
        #expect((try? FileManager.default.contentsOfDirectory(atPath: cli.registry + "/blobs/sha256"))?.isEmpty == true)

        // Export is byte-identical to what went in; verify rereads every blob from the bucket.
        let exported = cli.directory.file("out.safetensors")
        #expect(try cli.run(["export", "kid@1", "--output", exported], environment: env).status == 0)
        #expect(FileManager.default.contents(atPath: exported) == FileManager.default.contents(atPath: tuned))
        let verify = try cli.run(["verify", "--read-data"], environment: env)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        // Compacted in the bucket (each object replaced by its encoding in one PUT): the export is
        // still byte-identical and verify decodes and rehashes every blob.
        let compacted = try cli.run(["compact", "--json"], environment: env)
        #expect(compacted.status == 0, "\(compacted.stderr)")
        let saving = (try JSONSerialization.jsonObject(with: Data(compacted.stdout.utf8)) as? [String: Any])?["saving"] as? Double
        #expect((saving ?? 0) > 0.05, "\(compacted.stdout)")
        try FileManager.default.removeItem(atPath: exported)
        #expect(try cli.run(["export", "kid@1", "--output", exported], environment: env).status == 0)
        #expect(FileManager.default.contents(atPath: exported) == FileManager.default.contents(atPath: tuned))
        let reverified = try cli.run(["verify", "--read-data"], environment: env)
        #expect(reverified.status == 0, "\(reverified.stdout)\(reverified.stderr)")
        // Damage in the bucket is found.
        let victim = try #require(keys.first)
        try await client.put(victim, body: [0, 1, 2])
        #expect(try cli.run(["verify", "--read-data"], environment: env).status != 0)

        // A different location, or one given to a local registry, is refused with the recorded one named.
        let other = try cli.run(["list", "--blobs", "s3://elsewhere"], environment: env)
        #expect(other.status == 64 && other.stderr.contains("s3://graft-cli/team/reg"))
        // GRAFT_BLOBS is the option's environment twin.
        #expect(try cli.run(["list"], environment: env.merging(["GRAFT_BLOBS": blobs]) { a, _ in a }).status == 0)

        // graft serve over the same registry: a remote commit's blobs go through the server into the bucket.
        let served = try TestServer(registry: cli.registry, environment: env, logDirectory: cli.directory.path)
        defer { served.stop() }
        let writer =
            try cli.run(["token", "create", "w", "--scope", "write"], environment: env).stdout.split(separator: "\n").last.map(String.init)
            ?? ""
        tensors[tensors.firstIndex { $0.name == "classifier.weight" }!].bytes[1] ^= 1
        let second = cli.directory.file("second.safetensors")
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: second)
        let remote = try cli.run(
            ["checkpoint", "add", "kid", second, "--registry", served.url], registry: false, environment: ["GRAFT_TOKEN": writer])
        #expect(remote.status == 0, "\(remote.stderr)")
        #expect(try await client.list(prefix: "team/reg/blobs/").count == keys.count + 1, "one new blob: the classifier changed again")
        let back = cli.directory.file("back.safetensors")
        #expect(try cli.run(["export", "kid@2", "--output", back], environment: env).status == 0)
        #expect(FileManager.default.contents(atPath: back) == FileManager.default.contents(atPath: second))
        served.stop()

        // Removing the student and collecting garbage deletes its own blobs from the bucket.
        #expect(try cli.run(["model", "rm", "kid"], environment: env).status == 0)
        #expect(try cli.run(["gc", "--grace", "0"], environment: env).status == 0)
        let left = try await client.list(prefix: "team/reg/blobs/").count
        #expect(left < keys.count, "\(left) of \(keys.count) blobs left")
    }
}
