import ArgumentParser
import Graft

extension GraftCommand {
    struct Tag: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Point NAME@ALIAS at a checkpoint (moving it atomically if set).")

        @Argument(help: ArgumentHelp("The checkpoint.", valueName: "ref"))
        var ref: String
        @Argument(help: ArgumentHelp("The alias, e.g. production.", valueName: "alias"))
        var alias: String
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let reference = try parseReference(ref)
            try await GraftCLI.run { () throws(GraftError) in
                let result = try await options.open().tag(reference, alias: alias)
                if output.json { return try emitJSON(result) }
                print("\(result.alias) → \(result.checkpoint)" + (result.previous.map { " (was \($0))" } ?? ""))
            }
        }
    }

    struct Untag: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove NAME@ALIAS.")

        @Argument(help: ArgumentHelp("The model.", valueName: "name"))
        var name: String
        @Argument(help: ArgumentHelp("The alias.", valueName: "alias"))
        var alias: String
        @OptionGroup var options: RegistryOptions

        func run() async throws {
            let name = try parseName(self.name)
            try await GraftCLI.run { () throws(GraftError) in
                try await options.open().untag(model: name, alias: alias)
                print("removed \(name)@\(alias)")
            }
        }
    }

    struct Diff: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Compare two checkpoints tensor by tensor, summarised by layer.")

        @Argument(help: ArgumentHelp("The first checkpoint.", valueName: "ref"))
        var first: String
        @Argument(help: ArgumentHelp("The second checkpoint.", valueName: "ref"))
        var second: String
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let a = try parseReference(first), b = try parseReference(second)
            try await GraftCLI.run { () throws(GraftError) in
                let result = try await options.open().diff(a, b)
                if output.json { return try emitJSON(result) }
                print("\(result.from) → \(result.to)")
                print(
                    table(
                        ["LAYER", "SAME", "CHANGED", "ADDED", "REMOVED"],
                        result.layers.map { [$0.layer, String($0.same), String($0.changed), String($0.added), String($0.removed)] },
                        right: [1, 2, 3, 4]))
                let changes = result.tensors.filter { $0.status != .same }
                if !changes.isEmpty { print("") }
                for change in changes {
                    let detail: String
                    switch change.status {
                    case .changed: detail = "\(change.from?.short ?? "?")… → \(change.to?.short ?? "?")…"
                    case .added: detail = change.to?.short ?? ""
                    case .removed: detail = change.from?.short ?? ""
                    case .same: detail = ""
                    }
                    print("\(change.status.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)) \(change.name)  \(detail)")
                }
            }
        }
    }
}
