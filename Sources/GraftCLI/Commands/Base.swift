import ArgumentParser
import Foundation
import Graft
import Synchronization

extension GraftCommand {
    struct Base: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register pretrained bases.", subcommands: [Add.self])
    }
}

extension GraftCommand.Base {
    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register a safetensors file as a pretrained base (its checkpoint NAME@1).",
            discussion: """
                The file is validated before anything is written. Pickle-based checkpoints
                (.pt, .bin, .ckpt) are refused and never loaded: convert them to safetensors.
                Tensors the registry already holds are not stored again.
                """)

        @Argument(help: ArgumentHelp("The safetensors file; `-` reads it from standard input (a pipe), in one pass.", valueName: "file"))
        var file: String
        @Option(help: "Model name: letters, digits, '-', '_', '.'; not starting with '.' or '-'.")
        var name: String
        @Option(help: "Where the weights come from (URL or text).")
        var source: String?
        @Option(help: "License identifier, e.g. apache-2.0.")
        var license: String?
        @Option(help: "Pretraining dataset.")
        var dataset: String?
        @Option(help: "Architecture, e.g. resnet18.")
        var architecture: String?
        @Option(help: "The task the base was trained for.")
        var task: String?
        @Option(help: "A one-line description.")
        var description: String?
        @Option(
            help: ArgumentHelp(
                "A Hugging Face model card (README.md): license, datasets and pipeline_tag are read from its front matter; flags win.",
                valueName: "file"))
        var card: String?
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let name = try parseName(self.name)
            var fields = CardFields()
            if let card {
                guard let data = FileManager.default.contents(atPath: card) else {
                    throw fail(.cannotReadInput(path: card, .io(operation: "cannot read", path: card, errno: ENOENT)))
                }
                do throws(GraftError) { fields = try ModelCard.parse(String(decoding: data, as: UTF8.self)) } catch { throw fail(error) }
            }
            let cardFields = fields
            try await GraftCLI.run { () throws(GraftError) in
                let registry = try await options.open()
                let provenance = Provenance(
                    source: source, license: license ?? cardFields.license,
                    dataset: dataset ?? (cardFields.datasets.isEmpty ? nil : cardFields.datasets.joined(separator: ",")),
                    architecture: architecture, task: task ?? cardFields.task, description: description)
                let progress = ProgressLine(label: "importing \(file)")
                let report: @Sendable (Int, Int) -> Void = { done, total in progress.update(done: done, total: total) }
                let result =
                    file == "-"
                    ? try await registry.addBase(name: name, input: try standardInput(), provenance: provenance, progress: report)
                    : try await registry.addBase(name: name, file: file, provenance: provenance, progress: report)
                progress.finish()
                if output.json {
                    do { try printJSON(result) } catch { throw GraftError.io(operation: "cannot print", path: "stdout", errno: 5) }
                    return
                }
                print("registered \(result.checkpoint)  \(result.digest.short)")
                print(
                    table(
                        ["", ""],
                        [
                            ["tensors", formatCount(result.tensors)],
                            ["parameters", formatCount(result.parameters)],
                            ["file size", formatBytes(result.logicalBytes)],
                            ["bytes stored", formatBytes(result.bytesStored)],
                            ["already present", formatBytes(result.bytesAlreadyPresent)],
                        ] + (result.bytesSent.map { [["sent to the server", formatBytes($0)]] } ?? [])
                    ).split(separator: "\n").dropFirst().map { "  " + $0 }.joined(separator: "\n"))
            }
        }
    }
}

/// A progress line on stderr, shown only for inputs over 100 MB and redrawn at most per percent.
final class ProgressLine: Sendable {
    static let threshold = 100_000_000
    let label: String
    private let state = Mutex<(shown: Bool, percent: Int)>((false, -1))

    init(label: String) { self.label = label }

    func update(done: Int, total: Int) {
        guard total > Self.threshold else { return }
        let percent = done * 100 / total
        let draw = state.withLock { state -> Bool in
            guard percent != state.percent else { return false }
            state = (true, percent)
            return true
        }
        if draw {
            FileHandle.standardError.write(Data("\r\(label): \(percent)% of \(formatBytes(total))".utf8))
        }
    }

    func finish() {
        if state.withLock({ $0.shown }) { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
