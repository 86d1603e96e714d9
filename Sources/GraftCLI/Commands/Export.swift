import ArgumentParser
import Graft

extension GraftCommand {
    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a checkpoint as a safetensors file, or as the model directory it was imported from.",
            discussion: """
                The file is byte-identical to the one that was imported; a checkpoint imported
                from a model directory is written as that directory (-o names it): every shard,
                index, config, tokenizer and other file, byte for byte. Every blob is rehashed on
                the way out; a damaged store fails the export (exit 2) rather than write bad bytes.
                The output appears whole or not at all (written beside it, then renamed).

                An adapter's checkpoint exports as its PEFT directory (adapter_model.safetensors,
                adapter_config.json), which PeftModel.from_pretrained(base, DIR) loads. With
                --merged it exports as its parent's model directory with the LoRA merged in (each
                targeted weight W + scale·B·A in W's dtype, as PEFT's merge_and_unload does),
                which from_pretrained loads. From a server, the adapter and its parent are
                downloaded beside the output and merged there (the parent's size again on disk
                while it runs). Other adapter types than LoRA (and DoRA) are refused (exit 65).
                """)

        @Argument(help: ArgumentHelp("The checkpoint (a bare NAME means its latest).", valueName: "ref"))
        var ref: String
        @Option(
            name: .shortAndLong, help: ArgumentHelp("Where to write the file (or the directory, for a model directory).", valueName: "path")
        )
        var output: String
        @Flag(help: "Replace the output file or directory if it exists.")
        var force = false
        @Flag(help: "For an adapter's checkpoint: write its parent with the adapter merged in.")
        var merged = false
        @Flag(help: "Leave out the checkpoint's signature (model.sig beside the files, or FILE.sig beside a file).")
        var noSignature = false
        @OptionGroup var options: RegistryOptions
        @OptionGroup var format: OutputOptions

        func run() async throws {
            let reference = try parseReference(ref)
            try await GraftCLI.run { () throws(GraftError) in
                let registry = try await options.open()
                var result: ExportResult
                if merged {
                    result = try await MergedExport.export(from: registry, reference, to: output, overwrite: force)
                } else {
                    result = try await registry.export(reference, to: output, overwrite: force)
                    if !noSignature, let bundle = try await registry.signatureBundle(try Reference(parsing: result.checkpoint)) {
                        result.signature = try SignedExport.write(bundle, besideExport: result.path, directory: result.files != nil)
                    }
                }
                if format.json { return try emitJSON(result) }
                let files = result.files.map { ", \($0) files" } ?? ""
                print("exported \(result.checkpoint) (\(formatBytes(result.bytes))\(files)) to \(result.path)")
                if let signature = result.signature { print("signature written to \(signature)") }
            }
        }
    }
}
