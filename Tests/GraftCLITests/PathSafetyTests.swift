import Foundation
import Graft
import GraftTestSupport
import Testing

/// Names that must never become anything but a refusal: path tricks, separators, control and
/// direction characters, look-alikes, overlong. (A NUL cannot cross exec; the library tests
/// refuse it.) Metric names are data, never identifiers or paths: `val/accuracy` is legal.
private let hostileNames = [
    "../evil", "..", "/etc/passwd", "a/b", "a\\b", "line\nbreak", "bell\u{7}", "rtl\u{202E}gpj", "zw\u{200B}sp",
    "раз", "ｆｕｌｌ", "café", String(repeating: "x", count: 129), ".hidden", "-flag", "~root", "a b",
]

@Suite("Path safety")
struct PathSafetyTests {
    @Test("hostile names, aliases, references and advisory ids are refused by every command; nothing outside the registry is touched", arguments: hostileNames)
    func refused(_ hostile: String) throws {
        let cli = CLI()
        let base = try cli.base()
        #expect(try cli.run(["init"]).status == 0)
        #expect(try cli.run(["base", "add", base, "--name", "base"]).status == 0)
        let outside = cli.directory.path
        let before = Set(filesUnder(outside))
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
            #expect(result.status != 0, "\(command) was accepted")
            #expect(!result.stderr.isEmpty && result.stderr.count < 2000, "\(command): \(result.stderr)")
        }
        // Only the registry changed (the alias), and nothing appeared beside it.
        let after = Set(filesUnder(outside))
        #expect(after.subtracting(before).allSatisfy { $0.hasPrefix("registry/") }, "\(after.subtracting(before))")
        #expect(try cli.run(["verify"]).status == 0)
    }
}
