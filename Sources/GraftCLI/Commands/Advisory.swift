import ArgumentParser
import Graft

extension GraftCommand {
    struct AdvisoryCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "advisory", abstract: "Record known weaknesses; every descendant inherits them.",
            subcommands: [Add.self, ListAdvisories.self, Resolve.self])
    }

    struct Affected: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List every descendant that inherits an open advisory, with its path of inheritance and its exposure.",
            discussion:
                """
                Exposure is the share of the flagged checkpoint's tensor bytes the descendant's newest checkpoint still holds\
                 byte for byte under the same name (from digests alone); drift is the relative L2 distance ‖D − A‖ / ‖A‖ of\
                 what changed, read from the blobs once per pair and cached. Exposure 0 does not mean safe: a full fine-tune\
                 holds none of its teacher's bytes and still starts from them.
                """)

        @Argument(help: ArgumentHelp("A model, or a checkpoint (then only students derived from it).", valueName: "ref"))
        var ref: String
        @Option(help: "none, digests (metadata only; cached drift) or drift (reads changed tensors once, then cached).")
        var exposure: ExposureChoice = .drift
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let reference = try parseReference(ref)
            try await GraftCLI.run { () throws(GraftError) in
                let affected = try await options.open().affected(reference, exposure: exposure.detail)
                if output.json { return try emitJSON(affected) }
                if affected.isEmpty { print("no descendant of \(reference) inherits an open advisory") }
                for model in affected {
                    print("\(model.model)  [\(model.advisories.joined(separator: ", "))]  via \(model.path.joined(separator: " → "))")
                    print("  checkpoints: \(model.checkpoints.isEmpty ? "none" : model.checkpoints.joined(separator: ", "))")
                    if let line = exposureLine(model) { print("  " + line) }
                }
            }
        }
    }

    enum ExposureChoice: String, ExpressibleByArgument, CaseIterable {
        case none, digests, drift
        var detail: ExposureDetail? { self == .none ? nil : ExposureDetail(rawValue: rawValue) }
    }

    struct ExposureCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "exposure", abstract: "How much of an ancestor checkpoint a checkpoint still carries, layer by layer.",
            discussion:
                """
                Exposure: bytes of the ancestor's tensors held under the same name with the same digest, over all its tensor\
                 bytes. frozen_depth: leading layers held whole. Drift: ‖D − A‖ / ‖A‖ over floating-point tensors of the same\
                 dtype and shape (identical ones count as 0; an adapter's low-rank pairs as scale·B·A). A bare NAME is its newest\
                 checkpoint. Exposure 0 is not safety: a descendant that changed every tensor still started from them.
                """)

        @Argument(help: ArgumentHelp("The descendant (a checkpoint; NAME is its newest).", valueName: "ref"))
        var ref: String
        @Option(help: ArgumentHelp("The ancestor checkpoint (NAME is its newest).", valueName: "ref"))
        var to: String
        @Flag(help: "Read digests only: no tensor data (drift only where it is cached).")
        var digestsOnly = false
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let (descendant, ancestor) = (try parseReference(ref), try parseReference(to))
            try await GraftCLI.run { () throws(GraftError) in
                let measured = try await options.open().exposure(of: descendant, to: ancestor, detail: digestsOnly ? .digests : .drift)
                if output.json { return try emitJSON(measured) }
                print("\(measured.checkpoint) against \(measured.ancestor)")
                print(
                    table(
                        ["LAYER", "BYTES", "HELD", "DRIFT"],
                        measured.layers.map { layer in
                            [
                                layer.name, formatBytes(layer.bytes),
                                layer.identical ? "identical" : layer.adapted == true ? "adapted" : "changed",
                                layer.drift.map { String(format: "%.4f", $0) } ?? "–",
                            ]
                        }, right: [1, 3]))
                print(
                    exposureSummary(
                        exposure: measured.exposure, ancestor: measured.ancestor, frozenDepth: measured.frozenDepth,
                        layers: measured.layers.count, drift: measured.drift))
            }
        }
    }
}

/// One line for a measured exposure; at 0 it says what is still inherited, never "safe".
func exposureSummary(exposure: Double, ancestor: String, frozenDepth: Int, layers: Int, drift: Double?) -> String {
    let share = String(format: "%.1f%%", exposure * 100)
    let depth = "frozen depth \(frozenDepth) of \(layers) layers"
    let moved = drift.map { String(format: "drift %.4f", $0) } ?? "drift not measured"
    if exposure == 0 {
        return "exposure \(share): holds none of \(ancestor)'s bytes unchanged, but started from them (\(depth), \(moved))"
    }
    return "exposure \(share) of \(ancestor) (\(depth), \(moved))"
}

func exposureLine(_ model: AffectedModel) -> String? {
    guard let exposure = model.exposure, let ancestor = model.ancestor, let layers = model.layers else { return nil }
    var line = exposureSummary(
        exposure: exposure, ancestor: ancestor, frozenDepth: model.frozenDepth ?? 0, layers: layers.count, drift: model.drift)
    if let measured = model.measured { line += " at \(measured)" }
    let changed = layers.filter { !$0.identical }.map { layer in
        layer.name + (layer.drift.map { String(format: " %.3f", $0) } ?? "")
    }
    if !changed.isEmpty, changed.count < layers.count { line += "\n  changed: " + changed.joined(separator: ", ") }
    return line
}

extension GraftCommand.AdvisoryCommand {
    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Flag a model (NAME) or one checkpoint (NAME@N).")

        @Argument(help: ArgumentHelp("The model or checkpoint.", valueName: "ref"))
        var ref: String
        @Option(help: "An id, e.g. CVE-2024-1234 or GRAFT-0001.")
        var id: String
        @Option(help: "low, medium, high or critical.")
        var severity: Severity
        @Option(help: "What is wrong.")
        var note: String?
        @Option(help: "Where to read more.")
        var url: String?
        @OptionGroup var options: RegistryOptions

        func run() async throws {
            let reference = try parseReference(ref)
            try await GraftCLI.run { () throws(GraftError) in
                let advisory = try await options.open().addAdvisory(on: reference, id: id, severity: severity, note: note, url: url)
                print(
                    """
                    advisory \(advisory.id) (\(advisory.severity.rawValue)) on \(advisory.checkpoint ?? advisory.model); descendants\
                     inherit it
                    """
                )
            }
        }
    }

    struct ListAdvisories: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List open advisories (--all: resolved ones too).")

        @Flag(help: "Include resolved advisories.")
        var all = false
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            try await GraftCLI.run { () throws(GraftError) in
                let advisories = try await options.open().advisories(includeResolved: all)
                if output.json { return try emitJSON(advisories) }
                if advisories.isEmpty { print("no open advisories"); return }
                print(
                    table(
                        ["ID", "SEVERITY", "ON", "STATUS", "NOTE"],
                        advisories.map {
                            [
                                $0.id, $0.severity.rawValue, $0.checkpoint ?? $0.model, $0.resolvedAt == nil ? "open" : "resolved",
                                $0.note ?? "",
                            ]
                        }))
            }
        }
    }

    struct Resolve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Mark an advisory resolved.")

        @Argument(help: ArgumentHelp("The advisory id.", valueName: "id"))
        var id: String
        @OptionGroup var options: RegistryOptions

        func run() async throws {
            try await GraftCLI.run { () throws(GraftError) in
                try await options.open().resolveAdvisory(id)
                print("resolved \(id)")
            }
        }
    }
}

extension GraftCommand {
    struct Card: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print Hugging Face model-card front matter (YAML) for a model, with its lineage.",
            discussion:
                """
                base_model and base_model_relation come from the lineage, license and datasets from the model or its root base, and\
                 model-index from the newest checkpoint's evaluations.
                """
        )

        @Argument(help: ArgumentHelp("The model.", valueName: "name"))
        var name: String
        @OptionGroup var options: RegistryOptions

        func run() async throws {
            let name = try parseName(self.name)
            try await GraftCLI.run { () throws(GraftError) in
                print(try await options.open().card(name), terminator: "")
            }
        }
    }
}
