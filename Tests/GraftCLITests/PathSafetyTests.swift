import Foundation
import Graft
import GraftTestSupport
import Testing

/// Names that must never become anything but a refusal: path tricks, separators, control and
/// direction characters, look-alikes, overlong. (A NUL cannot cross exec; the library tests
/// refuse it.) Metric names are data, never identifiers or paths: `val/accuracy` is legal.
private let hostileNames = [
    "../evil", "..", "/etc/passwd", "a/b/c", "org/../evil", "org/", "a\\b", "line\nbreak", "bell\u{7}", "rtl\u{202E}gpj", "zw\u{200B}sp",
    "раз", "ｆｕｌｌ", "café", String(repeating: "x", count: 129), ".hidden", "-flag", "~root", "a b",
]

@Suite("Path safety")
struct PathSafetyTests {
    @Test(
        "hostile names, aliases, references and advisory ids are refused by every command; nothing outside the registry is touched",
        arguments: hostileNames)
    func refused(_ hostile: String) throws {
        let cli = CLI()
        let base = try cli.base()
        #expect(try cli.run(["init"]).status == 0)
        #expect(try cli.run(["base", "add", base, "--name", "base"]).status == 0)
        let outside = cli.directory.path
        let before = Set(filesUnder(outside))
        // Beyond the test's own directory: where `../..`-style or absolute names would land.
        let parent = URL(fileURLWithPath: outside).deletingLastPathComponent().path
        let watched = ["/etc/passwd", "/etc/passwd.safetensors", parent + "/evil", parent + "/evil.safetensors", "/evil", "/tmp/evil"]
        let watchedBefore = watched.map { FileSystemState(path: $0) }
        let commands: [[String]] = [
            ["base", "add", base, "--name", hostile],
            ["student", "create", hostile, "--from", "base@1"],
            ["student", "create", "s", "--from", hostile],
            ["tag", "base@1", hostile],
            ["tag", "base@1", "ok-alias"], ["untag", "base", hostile],
            ["show", hostile], ["show", "base@\(hostile)"], ["export", "base@\(hostile)", "-o", cli.directory.file("out.safetensors")],
            ["advisory", "add", "base", "--id", hostile, "--severity", "low"], ["advisory", "resolve", hostile],
            ["lineage", hostile], ["affected", hostile],
            ["checkpoint", "rm", "base@\(hostile)"], ["model", "rm", hostile], ["prune", hostile, "--keep-last", "1"],
            ["train", "--scratch", "--architecture", "mlp", "--register-as", hostile, "--data", base],
        ]
        for command in commands {
            let result = try cli.run(command)
            if command == ["tag", "base@1", "ok-alias"] { continue }
            // Refused as a usage error for the right reason: the name or reference, or (for a
            // leading `-`) the argument parser reading it as an option.
            #expect(result.status == 64, "\(command): exit \(result.status) \(result.stderr)")
            let reason = ["invalid name", "invalid reference", "Missing value", "Missing expected argument", "Unknown option"]
            #expect(reason.contains { result.stderr.contains($0) }, "\(command): \(result.stderr)")
            #expect(result.stderr.count < 2000, "\(command): \(result.stderr)")
        }
        // Only the registry changed (the alias), nothing appeared beside it, and nothing outside.
        let after = Set(filesUnder(outside))
        #expect(after.subtracting(before).allSatisfy { $0.hasPrefix("registry/") }, "\(after.subtracting(before))")
        #expect(watched.map { FileSystemState(path: $0) } == watchedBefore, "a path outside the test's directory changed")
        #expect(try cli.run(["verify"]).status == 0)
        let models = try #require(try cli.json(["list"]) as? [[String: Any]])
        #expect(models.map { $0["name"] as? String } == ["base"])
    }
}

/// Whether a path exists, with its size and modification time.
private struct FileSystemState: Equatable {
    let exists: Bool, size: Int, modified: Double
    init(path: String) {
        var info = stat()
        exists = stat(path, &info) == 0
        size = exists ? Int(info.st_size) : 0
        modified = exists ? Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9 : 0
    }
}
