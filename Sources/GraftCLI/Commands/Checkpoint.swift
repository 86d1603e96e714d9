import ArgumentParser
import Graft

extension GraftCommand {
    struct CheckpointCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "checkpoint", abstract: "Work with a model's checkpoints.", subcommands: [ListCheckpoints.self])
    }
}

extension GraftCommand.CheckpointCommand {
    struct ListCheckpoints: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List a model's checkpoints, oldest first.")

        @Argument(help: ArgumentHelp("The model.", valueName: "name"))
        var name: String
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let name = try parseName(self.name)
            try await GraftCLI.run { () throws(GraftError) in
                let checkpoints = try await options.open().checkpoints(of: name)
                if output.json { return try emitJSON(checkpoints) }
                if checkpoints.isEmpty { print("\(name) has no checkpoints") } else { printCheckpointTable(checkpoints) }
            }
        }
    }
}
