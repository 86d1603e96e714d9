import ArgumentParser
import Foundation
import Graft

/// `--registry PATH`, shared by every command.
struct RegistryOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Registry root (default: $GRAFT_REGISTRY, else ./registry).", valueName: "path"))
    var registry: String?

    var root: String { RegistryLayout.resolveRoot(option: registry, environment: ProcessInfo.processInfo.environment) }

    /// Opens the registry. `GRAFT_INLINE_THRESHOLD` (bytes) overrides the inline threshold;
    /// it exists for the benchmarks, which compare thresholds. `GRAFT_BUSY_TIMEOUT` (seconds)
    /// is how long a write waits for another process's lock before exit 69.
    func open() async throws(GraftError) -> Registry {
        let environment = ProcessInfo.processInfo.environment
        var threshold = Registry.defaultInlineThreshold
        if let text = environment["GRAFT_INLINE_THRESHOLD"] {
            guard let value = Int(text), value >= 0 else {
                throw .invalidName(text, reason: "GRAFT_INLINE_THRESHOLD must be a non-negative number of bytes")
            }
            threshold = value
        }
        return try await Registry.open(at: root, inlineThreshold: threshold, busyTimeout: try busyTimeout())
    }

    /// `GRAFT_BUSY_TIMEOUT`, else the library's 30 s.
    func busyTimeout() throws(GraftError) -> Double {
        guard let text = ProcessInfo.processInfo.environment["GRAFT_BUSY_TIMEOUT"] else { return Registry.defaultBusyTimeout }
        guard let seconds = Double(text), seconds.isFinite, seconds > 0, seconds <= 86_400 else {
            throw .invalidName(text, reason: "GRAFT_BUSY_TIMEOUT must be a number of seconds above 0 and at most 86400")
        }
        return seconds
    }
}

/// `--max`, `--min` and `--split`: how `best` and `prune --keep-best` rank a metric.
struct RankingOptions: ParsableArguments {
    @Flag(help: "Higher is better.")
    var max = false
    @Flag(help: "Lower is better.")
    var min = false
    @Option(help: "Only evaluations on this split.")
    var split: String?

    func validate() throws {
        if max && min { throw ValidationError("--max and --min exclude each other") }
    }

    /// The direction asked for; nil lets the metric's name decide.
    var direction: Direction? { max ? .max : min ? .min : nil }
}

/// `--json`, shared by every read command.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print JSON (schema in docs/JSON.md) instead of text.")
    var json = false
}

/// Parses a user-typed name, turning a bad one into a usage error.
func parseName(_ text: String) throws -> ModelName {
    do { return try ModelName(text) } catch { throw fail(error) }
}

func parseReference(_ text: String) throws -> Reference {
    do { return try Reference(parsing: text) } catch { throw fail(error) }
}
