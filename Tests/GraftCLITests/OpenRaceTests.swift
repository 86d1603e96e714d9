import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Testing

/// Rounds from the environment, so `make soak` can run the race longer.
private let raceRounds = ProcessInfo.processInfo.environment["GRAFT_RACE_ROUNDS"].flatMap(Int.init) ?? 25

/// Runs every command at once (one process each) and returns their outputs in order.
private func together(_ cli: CLI, _ commands: [[String]]) async throws -> [ProcessOutput] {
    try await withThrowingTaskGroup(of: (Int, ProcessOutput).self) { group in
        for (index, command) in commands.enumerated() {
            group.addTask { (index, try cli.run(command, registry: false)) }
        }
        var outputs = [ProcessOutput?](repeating: nil, count: commands.count)
        for try await (index, output) in group { outputs[index] = output }
        return outputs.map { $0! }
    }
}

@Suite("Opening one registry from many processes at once")
struct OpenRaceTests {
    /// The mechanism behind the fix, checked directly: from the first moment `graft.sqlite`
    /// exists it is a whole SQLite database in WAL mode (file-format bytes 18 and 19 both 2), so
    /// no other process can catch it empty or in rollback mode. The race test below shows the
    /// consequence; this one fails every time the database is created in place.
    @Test("a new registry's database appears whole and already in WAL mode")
    func publishedWhole() throws {
        let cli = CLI()
        for round in 0..<5 {
            let root = cli.directory.file("whole\(round)")
            let database = root + "/graft.sqlite"
            let process = try ChildProcess(
                graftBinary, ["init", "--registry", root], stderr: .file(cli.directory.file("init\(round).err")))
            // Poll as tightly as we can for the file's first appearance, then read its header.
            var first: [UInt8]? = nil
            let deadline = Date().addingTimeInterval(20)
            while first == nil, Date() < deadline {
                let fd = open(database, O_RDONLY)
                if fd >= 0 {
                    var bytes = [UInt8](repeating: 0, count: 100)
                    let count = read(fd, &bytes, 100)
                    close(fd)
                    first = Array(bytes.prefix(max(0, count)))
                }
            }
            let termination = process.wait()
            let header = try #require(first, "round \(round): graft.sqlite never appeared")
            #expect(
                header.count == 100 && header.starts(with: Array("SQLite format 3\0".utf8)),
                "round \(round): \(header.count) bytes at first sight")
            #expect(header.count == 100 && header[18] == 2 && header[19] == 2, "round \(round): not in WAL mode at first sight")
            #expect(
                termination == .exited(0), "\((try? String(contentsOfFile: cli.directory.file("init\(round).err"), encoding: .utf8)) ?? "")"
            )
        }
    }

    /// `docs/CLI.md` promises exit 69 ("busy") only after the 30 s busy timeout. SQLite answers
    /// BUSY at once, without waiting, where waiting could deadlock (a transaction that began by
    /// reading asks to write while another connection writes) and while the journal mode
    /// changes; opening a registry used to do both (WAL switch, and GRDB's WAL-file bootstrap
    /// write). Each round: a new registry created by several `init`s while importers wait for it
    /// to appear, then — every connection closed, so the WAL file is gone again — importers and
    /// readers opening it at the same moment.
    @Test("processes creating, opening and writing one registry at the same moment never see 'busy'")
    func noBusyOnOpen() async throws {
        let cli = CLI()
        let base = try cli.base()
        var failures: [String] = []
        for round in 0..<raceRounds {
            let root = cli.directory.file("race\(round)")
            var commands: [[String]] = []
            for index in 0..<3 {
                commands.append(["init", "--registry", root])
                commands.append(["base", "add", base, "--name", "a\(index)", "--registry", root])
            }
            // Importers may start before any `init` has made the registry: they retry only on
            // "not a registry" (73), never on busy.
            let first = try await withThrowingTaskGroup(of: ProcessOutput.self) { group in
                for command in commands {
                    group.addTask {
                        var output = try cli.run(command, registry: false)
                        for _ in 0..<400 where output.status == 73 && command[0] == "base" {
                            try await Task.sleep(for: .milliseconds(5))
                            output = try cli.run(command, registry: false)
                        }
                        return output
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            // Every process has exited: the next ones open a registry with no WAL file.
            let second = try await together(
                cli,
                [
                    ["base", "add", base, "--name", "b0", "--registry", root],
                    ["base", "add", base, "--name", "b1", "--registry", root],
                    ["checkpoint", "list", "a0", "--registry", root],
                    ["base", "add", base, "--name", "b2", "--registry", root],
                    ["list", "--registry", root],
                ])
            for output in first + second where output.status != 0 {
                failures.append("round \(round): exit \(output.status): \(output.stderr)")
            }
            if !failures.isEmpty { break }
            let list = try #require(
                try JSONSerialization.jsonObject(
                    with: Data(try cli.run(["list", "--json", "--registry", root], registry: false).stdout.utf8)) as? [[String: Any]])
            #expect(Set(list.compactMap { $0["name"] as? String }) == ["a0", "a1", "a2", "b0", "b1", "b2"], "round \(round)")
        }
        #expect(failures.isEmpty, "\(failures.prefix(5))")
        print("open race: \(raceRounds) rounds, \(failures.count) failures")
    }
}
