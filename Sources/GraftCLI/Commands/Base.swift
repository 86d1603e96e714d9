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
            abstract: "Register a safetensors file or a model directory as a pretrained base (its checkpoint NAME@1).",
            discussion: """
                The input is validated before anything is written. Pickle-based checkpoints
                (.pt, .bin, .ckpt) are refused and never loaded: convert them to safetensors.
                Tensors the registry already holds are not stored again.

                A directory (a Hugging Face save_pretrained or sentence-transformers directory,
                or a Hugging Face cache snapshot) is kept whole: its safetensors weights, one
                file or shards with their index, as tensors, and every other file (config,
                tokenizer, card, subfolders) byte for byte; `graft export` writes the same tree.
                Its README.md front matter fills the provenance (license, datasets,
                pipeline_tag, base_model) where flags do not; a cache snapshot's path gives the
                source (hf://ORG/NAME@REVISION).
                """)

        @Argument(
            help: ArgumentHelp(
                "The safetensors file or model directory; `-` reads a file from standard input (a pipe), in one pass.", valueName: "path"))
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
        @OptionGroup var directoryOptions: DirectoryImportOptions
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
            } else if file != "-", DirectoryInput.isDirectory(file),
                let data = FileManager.default.contents(atPath: file + "/README.md"),
                let found = try? ModelCard.parse(String(decoding: data, as: UTF8.self))
            {
                // A directory's own card, when it has front matter; a card without any is just a README.
                fields = found
            }
            let cardFields = fields
            try await GraftCLI.run { () throws(GraftError) in
                let directory = try directoryOptions.directory(file)
                let registry = try await options.open()
                var metadata: [String: String] = [:]
                if let base = cardFields.baseModel { metadata["base_model"] = base }
                let provenance = Provenance(
                    source: source ?? (directory == nil ? nil : Self.hubSource(file)), license: license ?? cardFields.license,
                    dataset: dataset ?? (cardFields.datasets.isEmpty ? nil : cardFields.datasets.joined(separator: ",")),
                    architecture: architecture, task: task ?? cardFields.task, description: description, metadata: metadata)
                let progress = ProgressLine(label: "importing \(file)")
                let report: @Sendable (Int, Int) -> Void = { done, total in progress.update(done: done, total: total) }
                let result =
                    if let directory {
                        try await registry.addBase(name: name, directory: directory, provenance: provenance, progress: report)
                    } else if file == "-" {
                        try await registry.addBase(name: name, input: try standardInput(), provenance: provenance, progress: report)
                    } else {
                        try await registry.addBase(name: name, file: file, provenance: provenance, progress: report)
                    }
                progress.finish()
                if output.json {
                    do { try printJSON(result) } catch { throw GraftError.io(operation: "cannot print", path: "stdout", errno: 5) }
                    return
                }
                print("registered \(result.checkpoint)  \(result.digest.short)")
                if let signature = result.signature {
                    // The registry's verdict (against a server requiring signed bases, the server's).
                    let key = signature.keyHint.map { " with key " + $0.prefix(12) + "…" } ?? ""
                    print(
                        signature.verified
                            ? "  model.sig verified\(key) and kept" : "  model.sig kept: signed, not verified (--public-key verifies it)")
                }
                print(
                    table(
                        ["", ""],
                        [
                            ["tensors", formatCount(result.tensors)],
                            ["parameters", formatCount(result.parameters)],
                            [result.files == nil ? "file size" : "directory size", formatBytes(result.logicalBytes)],
                            ["bytes stored", formatBytes(result.bytesStored)],
                            ["already present", formatBytes(result.bytesAlreadyPresent)],
                        ] + (result.files.map { [["files", formatCount($0)]] } ?? [])
                            + (result.bytesSent.map { [["sent to the server", formatBytes($0)]] } ?? [])
                    ).split(separator: "\n").dropFirst().map { "  " + $0 }.joined(separator: "\n"))
            }
        }
    }
}

extension GraftCommand.Base.Add {
    /// A Hugging Face cache snapshot's origin, `hf://ORG/NAME@REVISION`, from its path
    /// (`…/models--ORG--NAME/snapshots/REVISION`); `nil` for any other directory.
    static func hubSource(_ path: String) -> String? {
        let parts = path.split(separator: "/")
        guard parts.count >= 3, parts[parts.count - 2] == "snapshots", parts[parts.count - 3].hasPrefix("models--") else { return nil }
        let repository = parts[parts.count - 3].dropFirst("models--".count).split(separator: "--", omittingEmptySubsequences: false)
        guard !repository.isEmpty, repository.allSatisfy({ !$0.isEmpty }) else { return nil }
        return "hf://" + repository.joined(separator: "/") + "@" + parts[parts.count - 1]
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
