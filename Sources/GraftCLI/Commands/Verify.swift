import ArgumentParser
import Graft

extension GraftCommand {
    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check that every checkpoint's tensor blobs are present and intact.",
            discussion:
                """
                Exits 2 when anything is damaged, naming each blob and the checkpoints that use it, when a stray file sits among the\
                 blobs, or when a model's lineage record disagrees with its parent edge or checkpoints. Orphan blob files (an\
                 interrupted import's) are counted, not damage: `graft gc` removes them.
                """
        )

        @Flag(name: .customLong("read-data"), help: "Rehash every blob (reads all stored bytes).")
        var readData = false
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            var damaged = false
            try await GraftCLI.run { () throws(GraftError) in
                let report = try await options.open().verify(readData: readData)
                damaged = !report.ok
                if output.json { return try emitJSON(report) }
                let what = readData ? "rehashed \(formatBytes(report.bytesRead))" : "checked sizes (use --read-data to rehash)"
                print("\(report.checkpoints) checkpoint(s), \(report.blobs) blob(s): \(what)")
                for problem in report.problems {
                    print("DAMAGED \(problem.digest.short) \(problem.kind.rawValue): \(problem.detail)")
                    print("  used by \(problem.checkpoints.joined(separator: ", "))")
                }
                for stray in report.strayFiles { print("STRAY \(stray): not a blob of this registry (move it out)") }
                for problem in report.lineageProblems { print("LINEAGE \(problem)") }
                if report.orphanFiles > 0 {
                    print("\(report.orphanFiles) orphan blob file(s) from interrupted imports: `graft gc` removes them")
                }
                var verdict: [String] = []
                if !report.problems.isEmpty {
                    verdict.append(
                        "\(report.damagedCheckpoints.count) damaged checkpoint(s): \(report.damagedCheckpoints.joined(separator: ", "))")
                }
                if !report.strayFiles.isEmpty { verdict.append("\(report.strayFiles.count) stray file(s)") }
                if !report.lineageProblems.isEmpty {
                    verdict.append("\(report.lineageProblems.count) model(s) with an inconsistent lineage record")
                }
                print(report.ok ? "ok" : verdict.joined(separator: "; "))
            }
            if damaged { throw ExitCode(ErrorKind.damage.exitCode) }
        }
    }
}
