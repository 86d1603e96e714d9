import ArgumentParser
import Foundation
import Graft
import SafeTensors

/// Errors become exit codes in one table, ``ErrorKind/exitCode`` (GraftCore), locally and
/// against a server alike; docs/CLI.md lists them. This file adds only the command line's words.
/// Prints `error` on stderr as one line — the library's message, then the command-line advice —
/// and returns the exit to throw.
func fail(_ error: GraftError) -> ExitCode {
    printError(error.commandLineDescription + (error.commandLineHint.map { "; " + $0 } ?? ""))
    return ExitCode(error.kind.exitCode)
}

extension GraftError {
    /// The library's message, with a manifest rule named as the flag that gave it.
    var commandLineDescription: String {
        if case .patternMatchesNothing(let rule) = self { return "--\(rule) matches no tensor of the parent checkpoint" }
        return description
    }

    /// What to run next, in the CLI's words (the library's messages name no command or flag).
    var commandLineHint: String? {
        switch self {
        case .notARegistry(let path, let reason) where reason.hasPrefix("no such directory") || reason.hasPrefix("it has no graft.sqlite"):
            "create one with `graft init --registry \(path)`"
        case .modelNotFound(_, let suggestions) where suggestions.isEmpty: "`graft list` shows the models"
        case .outputExists: "pass --force to overwrite it"
        case .damagedBlob: "run `graft verify --read-data`"
        case .patternMatchesNothing: "`graft show PARENT` lists its tensors"
        case .allCandidatesFlagged: "`graft advisory list` shows them, --include-flagged considers them"
        case .advisoryNotFound: "`graft advisory list` shows them"
        case .protected(_, let reasons) where reasons.contains(where: { if case .descendants = $0 { true } else { false } }):
            "--cascade removes them too"
        case .blobVanished: "run the command again"
        case .invalidDirectory(_, let reason) where reason.contains("pickle-based") || reason.contains("holds more than"):
            "--exclude GLOB leaves files out"
        case .invalidDirectory(_, let reason) where reason.contains("bytes; files other than weights"): "--max-file-mib raises the cap"
        default: nil
        }
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data("graft: error: \(Terminal.escaped(message))\n".utf8))
}

/// Runs a command body, mapping registry errors to their message and exit code.
func run(_ body: () async throws(GraftError) -> Void) async throws {
    do {
        try await body()
    } catch {
        throw fail(error)
    }
}

/// Runs a registry call that returns a value, mapping its error to a message and exit code.
func registryCall<R>(_ body: () async throws(GraftError) -> R) async throws -> R {
    do { return try await body() } catch { throw fail(error) }
}
