import ArgumentParser
import Foundation
import Graft

/// Parses `1h`, `30m`, `45s`, `2d` or a number of seconds.
func parseDuration(_ text: String) throws -> Double {
    let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
    var number = Substring(text), scale = 1.0
    if let last = text.last, let unit = units[last] {
        number = text.dropLast()
        scale = unit
    }
    guard let value = Double(number), value >= 0, value.isFinite else {
        throw failUsage("a duration is a number with s, m, h or d (e.g. 1h, 30m, 0), not `\(text)`")
    }
    return value * scale
}

func printRemoval(_ report: RemovalReport) {
    let verb = report.dryRun ? "would remove" : "removed"
    if !report.models.isEmpty { print("\(verb) model(s): \(report.models.joined(separator: ", "))") }
    for kept in report.kept { print("kept \(kept.checkpoint): \(kept.reasons.joined(separator: "; "))") }
    print(
        "\(verb) \(report.checkpoints.count) checkpoint(s)"
            + (report.checkpoints.isEmpty ? "" : ": \(report.checkpoints.joined(separator: ", "))"))
    print("\(report.dryRun ? "would free" : "freed") \(formatBytes(report.bytesFreed))")
}

extension GraftCommand {
    struct GC: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gc", abstract: "Delete blobs no checkpoint uses, and stale temporary files.",
            discussion: """
                Only what is older than the grace period (by modification time) goes, so an import
                in flight never loses its blobs; gc deletes under the registry's write lock and a
                commit re-checks its blobs under the same lock (and retries if one went).
                """)

        @Option(help: ArgumentHelp("Keep anything younger than this (e.g. 1h, 30m, 0).", valueName: "duration"))
        var grace = "1h"
        @Flag(name: .customLong("dry-run"), help: "Report what would go; delete nothing.")
        var dryRun = false
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let seconds = try parseDuration(grace)
            try await GraftCLI.run { () throws(GraftError) in
                let report = try await options.open().gc(grace: seconds, dryRun: dryRun)
                if output.json { return try emitJSON(report) }
                let verb = dryRun ? "would remove" : "removed"
                print(
                    """
                    \(verb) \(report.blobsRemoved) unreferenced blob(s), \(report.orphanFilesRemoved) orphan file(s),\
                     \(report.temporaryFilesRemoved) temporary file(s)
                    """
                )
                print(
                    """
                    \(dryRun ? "would free" : "freed") \(formatBytes(report.bytesFreed)); \(report.keptForGrace) kept as younger than\
                     \(grace)
                    """
                )
            }
        }
    }

    struct Prune: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a model's checkpoints outside a retention policy.",
            discussion: """
                Keeps the newest --keep-last N and the best --keep-best K by --metric, and never
                removes a checkpoint a student derives from, one an alias points at, or a base's
                registered checkpoint (NAME@1). Prints what it kept and why, and the bytes freed.
                """)

        @Argument(help: ArgumentHelp("The model.", valueName: "name"))
        var name: String
        @Option(name: .customLong("keep-last"), help: "Keep the newest N checkpoints.")
        var keepLast = 0
        @Option(name: .customLong("keep-best"), help: "Keep the best K checkpoints by --metric.")
        var keepBest = 0
        @Option(help: "The metric --keep-best ranks by.")
        var metric: String?
        @OptionGroup var ranking: RankingOptions
        @Flag(name: .customLong("dry-run"), help: "Report what would go; delete nothing.")
        var dryRun = false
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func validate() throws {
            if keepBest > 0 && metric == nil { throw ValidationError("--keep-best needs --metric KEY") }
            if keepLast < 0 || keepBest < 0 { throw ValidationError("--keep-last and --keep-best are counts ≥ 0") }
        }

        func run() async throws {
            let name = try parseName(self.name)
            try await GraftCLI.run { () throws(GraftError) in
                let report = try await options.open().prune(
                    name, keepLast: keepLast, keepBest: keepBest, metric: metric, direction: ranking.direction, split: ranking.split,
                    dryRun: dryRun)
                if output.json { return try emitJSON(report) }
                printRemoval(report)
            }
        }
    }

    struct ModelCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "model", abstract: "Work with whole models.", subcommands: [RemoveModel.self])
    }
}

extension GraftCommand.ModelCommand {
    struct RemoveModel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Remove a model with its checkpoints, metrics, aliases and advisories.",
            discussion: "Refused while the model has descendants, unless --cascade, which removes them too (listed first; try --dry-run).")

        @Argument(help: ArgumentHelp("The model.", valueName: "name"))
        var name: String
        @Flag(help: "Also remove every descendant.")
        var cascade = false
        @Flag(name: .customLong("dry-run"), help: "Report what would go; delete nothing.")
        var dryRun = false
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let name = try parseName(self.name)
            try await GraftCLI.run { () throws(GraftError) in
                let report = try await options.open().removeModel(name, cascade: cascade, dryRun: dryRun)
                if output.json { return try emitJSON(report) }
                printRemoval(report)
            }
        }
    }
}

extension GraftCommand.CheckpointCommand {
    struct RemoveCheckpoint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Remove one checkpoint and the blobs only it used.",
            discussion:
                """
                Refused, with the reason, for a checkpoint a student derives from, one an alias points at, or a base's registered\
                 checkpoint.
                """
        )

        @Argument(help: ArgumentHelp("The checkpoint (NAME@N, NAME@ALIAS is refused: move the alias first).", valueName: "ref"))
        var reference: String
        @Flag(name: .customLong("dry-run"), help: "Report what would go; delete nothing.")
        var dryRun = false
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let reference = try parseReference(self.reference)
            try await GraftCLI.run { () throws(GraftError) in
                let report = try await options.open().removeCheckpoint(reference, dryRun: dryRun)
                if output.json { return try emitJSON(report) }
                printRemoval(report)
            }
        }
    }
}
