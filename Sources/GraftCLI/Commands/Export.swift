import ArgumentParser
import Graft

extension GraftCommand {
    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a checkpoint as a safetensors file.",
            discussion: """
                The file is byte-identical to the one that was imported. Every blob is rehashed on
                the way out; a damaged store fails the export (exit 2) rather than write bad bytes.
                """)

        @Argument(help: ArgumentHelp("The checkpoint (a bare NAME means its latest).", valueName: "ref"))
        var ref: String
        @Option(name: .shortAndLong, help: ArgumentHelp("Where to write the file.", valueName: "file"))
        var output: String
        @Flag(help: "Overwrite the output file if it exists.")
        var force = false
        @OptionGroup var options: RegistryOptions
        @OptionGroup var format: OutputOptions

        func run() async throws {
            let reference = try parseReference(ref)
            try await GraftCLI.run { () throws(GraftError) in
                let result = try await options.open().export(reference, to: output, overwrite: force)
                if format.json { return try emitJSON(result) }
                print("exported \(result.checkpoint) (\(formatBytes(result.bytes))) to \(result.path)")
            }
        }
    }
}
