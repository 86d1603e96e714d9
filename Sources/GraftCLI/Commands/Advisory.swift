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
            abstract: "List every descendant that inherits an open advisory, with its path of inheritance.")

        @Argument(help: ArgumentHelp("A model, or a checkpoint (then only students derived from it).", valueName: "ref"))
        var ref: String
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let reference = try parseReference(ref)
            try await GraftCLI.run { () throws(GraftError) in
                let affected = try await options.open().affected(reference)
                if output.json { return try emitJSON(affected) }
                if affected.isEmpty { print("no descendant of \(reference) inherits an open advisory") }
                for model in affected {
                    print("\(model.model)  [\(model.advisories.joined(separator: ", "))]  via \(model.path.joined(separator: " → "))")
                    print("  checkpoints: \(model.checkpoints.isEmpty ? "none" : model.checkpoints.joined(separator: ", "))")
                }
            }
        }
    }
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
