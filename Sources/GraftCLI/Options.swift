import ArgumentParser
import Foundation
import Graft

/// `--registry PATH`, shared by every command.
struct RegistryOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Registry root (default: $GRAFT_REGISTRY, else ./registry).", valueName: "path"))
    var registry: String?

    var root: String { RegistryLayout.resolveRoot(option: registry, environment: ProcessInfo.processInfo.environment) }

    func open() async throws(GraftError) -> Registry { try await Registry.open(at: root) }
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
