import ArgumentParser
import Graft

extension GraftCommand {
    struct CheckpointCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "checkpoint", abstract: "Work with a model's checkpoints.",
            subcommands: [AddCheckpoint.self, ListCheckpoints.self, RemoveCheckpoint.self])
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

extension GraftCommand.CheckpointCommand {
    struct AddCheckpoint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add",
            abstract: "Commit a safetensors file or a model directory as the model's next checkpoint.",
            discussion: """
                For a student, the frozen-layer manifest is enforced first: a frozen tensor that
                changed, a dropped one present or a kept one missing refuses the whole commit
                (exit 79), naming each tensor, and nothing is written. Tensors unchanged from the
                parent are its blobs and cost nothing, whatever the shard size they were saved with.
                A directory is kept whole (weights, config, tokenizer, other files), as for
                `graft base add`.
                """)

        @Argument(help: ArgumentHelp("The model.", valueName: "name"))
        var name: String
        @Argument(
            help: ArgumentHelp(
                "The safetensors file or model directory; `-` reads a file from standard input (a pipe), in one pass.", valueName: "path"))
        var file: String
        @Option(help: "Training step of this checkpoint.")
        var step: Int?
        @Option(help: "Epoch of this checkpoint.")
        var epoch: Int?
        @Option(help: ArgumentHelp("An evaluation metric, KEY=VALUE (repeatable).", valueName: "key=value"))
        var metric: [String] = []
        @Option(help: "The split or dataset the metrics were measured on.")
        var split: String?
        @OptionGroup var directoryOptions: DirectoryImportOptions
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let name = try parseName(self.name)
            let metrics = try parseAssignments(metric)
            try await GraftCLI.run { () throws(GraftError) in
                let progress = ProgressLine(label: "committing \(file)")
                let report: @Sendable (Int, Int) -> Void = { done, total in progress.update(done: done, total: total) }
                let directory = try directoryOptions.directory(file)
                let registry = try await options.open()
                let result =
                    if let directory {
                        try await registry.addCheckpoint(
                            model: name, directory: directory, step: step, epoch: epoch, metrics: metrics, split: split, progress: report)
                    } else if file == "-" {
                        try await registry.addCheckpoint(
                            model: name, input: try standardInput(), step: step, epoch: epoch, metrics: metrics, split: split,
                            progress: report)
                    } else {
                        try await registry.addCheckpoint(
                            model: name, file: file, step: step, epoch: epoch, metrics: metrics, split: split, progress: report)
                    }
                progress.finish()
                if output.json { return try emitJSON(result) }
                print("committed \(result.checkpoint)  \(result.digest.short)")
                print(
                    "  new bytes stored \(formatBytes(result.bytesStored)) of \(formatBytes(result.logicalBytes)) logical"
                        + (result.newTensors.isEmpty ? "" : "; new tensors: \(result.newTensors.joined(separator: ", "))"))
                if let sent = result.bytesSent { print("  sent \(formatBytes(sent)) to the server") }
            }
        }
    }
}
