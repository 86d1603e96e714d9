import ArgumentParser
import Foundation
import Graft

extension GraftCommand {
    struct Compact: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Store blobs smaller, losslessly: byte planes + zstd, or XOR deltas against the parent.",
            discussion: """
                Re-encodes stored blobs that earlier runs have not tried: each tensor split into
                byte planes by its dtype width and each plane zstd-compressed (bg-zstd), or first
                XORed with the same tensor of the nearest lineage ancestor (xor-bg-zstd), whichever
                is smallest and saves at least 5% over the next simpler form. Digests, exports and
                downloads do not change: every read decodes and is checked against the digest.
                Each blob is decoded and checked before it replaces the stored one; a kill at any
                point leaves every blob readable, and a re-run resumes. Imports stay raw: run this
                off the import path (a nightly cron line, or `graft serve --compact-idle`).
                """)

        @Option(help: ArgumentHelp("Only the blobs of this model and its descendants.", valueName: "name"))
        var under: String?
        @Flag(name: .customLong("dry-run"), help: "Encode and report the saving; write nothing.")
        var dryRun = false
        @Option(help: ArgumentHelp("Threads encoding each blob's chunks (default: every core).", valueName: "n"))
        var threads: Int?
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            var damaged = false
            try await GraftCLI.run { () throws(GraftError) in
                let scope = try under.map { (name) throws(GraftError) in try ModelName(name) }
                if let threads, threads < 1 || threads > 256 { throw .badRequest("--threads \(threads): expected 1 to 256") }
                let lanes = threads ?? ProcessInfo.processInfo.activeProcessorCount
                let registry = try await options.openLocal()
                let reporter = ProgressLines("compact")
                let result = try await registry.compact(
                    under: scope, dryRun: dryRun, lanes: lanes,
                    progress: { progress in
                        reporter.report(
                            done: progress.rawBytes, total: progress.totalRawBytes,
                            "\(progress.blobs)/\(progress.totalBlobs) blobs, \(formatBytes(progress.rawBytes)) read")
                    })
                reporter.finish()
                if output.json { return try emitJSON(result) }
                let verb = dryRun ? "would store" : "stored"
                print(
                    "examined \(result.examined) blob(s) of \(formatBytes(result.rawBytes)): \(verb) \(formatBytes(result.storedBytes))"
                        + " (\(String(format: "%.1f%%", 100 * result.saving)) saved) in \(String(format: "%.1f", result.seconds)) s")
                for usage in result.encoded where usage.blobs > 0 {
                    let bytes = "\(formatBytes(usage.rawBytes)) → \(formatBytes(usage.storedBytes))"
                    print("  \(usage.codec.rawValue): \(usage.blobs) blob(s), \(bytes)")
                }
                for skipped in result.skipped { printError("skipped \(skipped)") }
                damaged = !result.skipped.isEmpty
            }
            // A blob that could not be encoded is damaged (or was removed meanwhile): `verify` says which.
            if damaged { throw ExitCode(ErrorKind.damage.exitCode) }
        }
    }
}
