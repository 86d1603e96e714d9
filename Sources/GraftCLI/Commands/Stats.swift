import ArgumentParser
import Foundation
import Graft

extension GraftCommand {
    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show totals: models, checkpoints, logical and physical bytes, dedup ratio.")

        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            try await GraftCLI.run { () throws(GraftError) in
                let stats = try await options.open().stats()
                if output.json { return try emitJSON(stats) }
                print(
                    table(
                        ["", ""],
                        [
                            ["models", "\(stats.models) (\(stats.bases) base)"],
                            ["checkpoints", formatCount(stats.checkpoints)],
                            ["tensors", formatCount(stats.tensors)],
                            ["blobs", "\(formatCount(stats.blobs)) (\(formatCount(stats.inlineBlobs)) inline in the metadata)"],
                            ["logical bytes", formatBytes(stats.logicalBytes)],
                            ["physical bytes", formatBytes(stats.physicalBytes)],
                            ["dedup ratio", String(format: "%.2f×", stats.dedupRatio)],
                            ["database", formatBytes(stats.databaseBytes)],
                        ]
                            + adapterRow(stats) + codecRows(stats)
                    ).split(separator: "\n").dropFirst().joined(separator: "\n"))
            }
        }
    }
}

/// What adapters cost against full copies of their parents; none when there are no adapters.
private func adapterRow(_ stats: RegistryStats) -> [[String]] {
    guard stats.adapterModels > 0 else { return [] }
    let share = 100 * Double(stats.adapterBytes) / Double(max(stats.adapterParentBytes, 1))
    return [
        [
            "adapters",
            "\(stats.adapterModels) (\(formatCount(stats.adapterCheckpoints)) checkpoints): \(formatBytes(stats.adapterBytes)) against "
                + "\(formatBytes(stats.adapterParentBytes)) as full copies (\(String(format: "%.1f%%", share)))",
        ]
    ]
}

/// Stored blobs by codec (`graft compact`): raw and stored bytes and the saving; none before any
/// blob was encoded.
private func codecRows(_ stats: RegistryStats) -> [[String]] {
    guard stats.codecs.contains(where: { $0.codec != .raw && $0.blobs > 0 }) else { return [] }
    let raw = stats.codecs.reduce(0) { $0 + $1.rawBytes }, stored = stats.codecs.reduce(0) { $0 + $1.storedBytes }
    let saved = String(format: "%.1f%%", 100 * (1 - Double(stored) / Double(max(raw, 1))))
    let rows = stats.codecs.filter { $0.blobs > 0 }.map { usage in
        [
            "  \(usage.codec.rawValue)",
            "\(formatCount(usage.blobs)) blob(s): \(formatBytes(usage.rawBytes)) raw, \(formatBytes(usage.storedBytes)) stored",
        ]
    }
    return rows + [["compaction", "\(formatBytes(raw)) → \(formatBytes(stored)) (\(saved) saved)"]]
}
