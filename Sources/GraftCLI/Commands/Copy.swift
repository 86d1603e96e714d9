import ArgumentParser
import Foundation
import Graft
import GraftRemote

extension GraftCommand {
    struct Copy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy models with their whole history to another registry; run again to send only what changed.",
            discussion: """
                Copies the models named (none: every model) from --registry to the destination,
                parents before children: each checkpoint with its number, step, epoch, creation
                time, tensors, files and signature; metrics and curves; aliases; the student's
                manifest and parent edge; advisories, open and resolved, with their ids. Only blobs
                the destination lacks are sent. A model the destination holds with the same history
                so far is brought up to date; one with another history is refused (exit 67, nothing
                of it or its descendants written) unless copied under a new name with --rename.
                Every checkpoint is one commit at the destination, so a copy interrupted anywhere
                (even by kill -9) completes when run again, with nothing duplicated.
                The destination is a registry directory (created when missing), a PostgreSQL
                registry (--to-metadata, created when missing) with its blobs in S3 (--to-blobs)
                or in the --to directory, or a `graft serve` (--to http(s)://HOST:PORT with an
                admin token in $GRAFT_TO_TOKEN: the server checks and commits what it is sent).
                The source is --registry as for every command; a server there needs an unconfined
                read token in $GRAFT_TOKEN. Progress goes to stderr for copies over a few seconds.
                """)

        @Argument(help: ArgumentHelp("Models to copy (default: every model).", valueName: "model"))
        var models: [String] = []
        @Option(
            help: ArgumentHelp(
                "The destination: a registry directory (created when missing; with --to-metadata, its local one) or a server URL.",
                valueName: "path|url"))
        var to: String?
        @Option(
            help: ArgumentHelp(
                "The destination's PostgreSQL metadata store, postgresql://USER@HOST:PORT/DATABASE (password from $PGPASSWORD, "
                    + "or the URL's own).",
                valueName: "postgresql-url"))
        var toMetadata: String?
        @Option(
            help: ArgumentHelp(
                "The destination's S3 blob store, s3://BUCKET/PREFIX?endpoint=URL&region=R (as `graft init --blobs`).",
                valueName: "s3-url"))
        var toBlobs: String?
        @Flag(help: "Also copy every ancestor of the models named (a student needs its parent at the destination).")
        var withAncestors = false
        @Flag(help: "Also copy every descendant of the models named.")
        var withDescendants = false
        @Flag(help: "Report what would be copied; write nothing.")
        var dryRun = false
        @Option(help: ArgumentHelp("Copy model OLD under the name NEW at the destination (repeatable).", valueName: "old=new"))
        var rename: [String] = []
        @OptionGroup var options: RegistryOptions
        @OptionGroup var format: OutputOptions

        func validate() throws {
            if to == nil, toMetadata == nil { throw ValidationError("name the destination: --to PATH, or --to-metadata URL") }
            if to == nil, toBlobs == nil {
                throw ValidationError(
                    "a PostgreSQL destination needs --to DIR (this machine's directory for it, and its blobs unless --to-blobs)")
            }
            if (withAncestors || withDescendants), models.isEmpty {
                throw ValidationError(
                    "--with-ancestors and --with-descendants widen the models named; with none named, every model is copied")
            }
        }

        func run() async throws {
            try await GraftCLI.run { () throws(GraftError) in
                let remoteDestination = to.map { RemoteRegistry.isURL($0) } ?? false
                if options.isRemote, remoteDestination {
                    throw .badRequest("graft copy needs one end on this machine: run it where one of the two registries is")
                }
                if remoteDestination, toMetadata != nil || toBlobs != nil {
                    throw .badRequest("--to-metadata and --to-blobs apply to a registry directory; a server chooses its own stores")
                }
                let names = try models.map { (text) throws(GraftError) in try ModelName(text) }
                var renames: [String: ModelName] = [:]
                for pair in rename {
                    guard let equals = pair.firstIndex(of: "=") else { throw .badRequest("--rename \(pair): expected OLD=NEW") }
                    let old = try ModelName(String(pair[..<equals])), new = try ModelName(String(pair[pair.index(after: equals)...]))
                    guard renames.updateValue(new, forKey: old.value) == nil else { throw .badRequest("--rename names \(old) twice") }
                }
                var scratch: String?
                defer { if let scratch { try? FileManager.default.removeItem(atPath: scratch) } }
                let reporter = ProgressLines("copy")
                let request = CopyRequest(
                    models: names, withAncestors: withAncestors, withDescendants: withDescendants, dryRun: dryRun, renames: renames)
                let open = { () async throws(GraftError) -> Registry in
                    let opened = try await openDestination()
                    scratch = opened.scratch
                    return opened.registry
                }
                let result: CopyResult
                if options.isRemote {
                    let source = try await options.open()
                    guard let server = source as? RemoteRegistry else { throw .badRequest("\(options.root) is not a server") }
                    result = try await Registry.copy(from: server, to: open, request, progress: { reporter.report($0) })
                } else if let to, remoteDestination {
                    let token = ProcessInfo.processInfo.environment["GRAFT_TO_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
                    let server = try RemoteRegistry(url: to, token: token)
                    result = try await server.copy(from: try await options.openLocal(), request, progress: { reporter.report($0) })
                } else {
                    result = try await options.openLocal().copy(to: open, request, progress: { reporter.report($0) })
                }
                reporter.finish()
                if format.json {
                    try emitJSON(result)
                } else {
                    printCopy(result)
                }
                if let refused = result.models.first(where: { $0.action == "refused" }) {
                    throw GraftError.historyDiffers(refused.to, reason: refused.reason ?? "")
                }
            }
        }

        /// The destination, created when missing (a dry run reads one not there yet as an empty
        /// registry in a temporary directory, so that nothing is written); and a scratch
        /// directory to remove afterwards.
        func openDestination() async throws(GraftError) -> (registry: Registry, scratch: String?) {
            func temporary() -> String { FileManager.default.temporaryDirectory.path + "/graft-copy-" + UUID().uuidString }
            let exists = to.map { FileManager.default.fileExists(atPath: $0) } ?? false
            var configuration = RegistryConfiguration(root: to ?? "")
            (configuration.blobs, configuration.metadata) = (toBlobs, toMetadata)
            let scratch = to == nil || (dryRun && !exists) ? temporary() : nil
            if let scratch { configuration.root = scratch }
            guard dryRun else { return (try await Registry.create(configuration).registry, scratch) }
            do {
                return (try await Registry.open(configuration), scratch)
            } catch .notARegistry {
                let empty = scratch ?? temporary()
                return (try await Registry.create(at: empty).registry, empty)
            }
        }

        func printCopy(_ result: CopyResult) {
            for model in result.models {
                let name = model.model == model.to ? model.model : "\(model.model) → \(model.to)"
                if model.action == "refused" {
                    print("\(name): refused (\(model.reason ?? ""))")
                    continue
                }
                var parts: [String] = []
                if !model.checkpoints.isEmpty { parts.append("\(model.checkpoints.count) checkpoint(s)") }
                if model.metrics > 0 { parts.append("\(model.metrics) metric value(s)") }
                if model.curvePoints > 0 { parts.append("\(formatCount(model.curvePoints)) curve point(s)") }
                if model.aliases > 0 { parts.append("\(model.aliases) alias(es)") }
                if model.advisories > 0 { parts.append("\(model.advisories) advisory(ies)") }
                let what = parts.isEmpty ? "" : ": " + parts.joined(separator: ", ")
                print("\(name): \(result.dryRun && model.action != "unchanged" ? "would be " : "")\(model.action)\(what)")
            }
            let verb = result.dryRun ? "would copy" : "copied"
            print(
                "\(verb) \(result.checkpoints) checkpoint(s) of \(result.models.count - result.refused) model(s), sending "
                    + "\(formatCount(result.blobs)) blob(s), \(formatBytes(result.bytes))"
                    + (result.refused > 0 ? "; \(result.refused) refused" : ""))
        }
    }
}

extension ProgressLines {
    func report(_ progress: CopyProgress) {
        report(
            done: progress.checkpoints, total: progress.checkpointsTotal,
            "\(progress.checkpoints)/\(progress.checkpointsTotal) checkpoints, \(formatBytes(progress.bytes)) sent")
    }
}
