import ArgumentParser
import Graft

extension GraftCommand {
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a model (provenance, checkpoints, tensors) or one checkpoint.",
            discussion: "REF is NAME, NAME@N, NAME@latest or sha256:DIGEST (12+ hex digits).")

        @Argument(help: ArgumentHelp("A model or checkpoint reference.", valueName: "ref"))
        var ref: String
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let reference = try parseReference(ref)
            try await GraftCLI.run { () throws(GraftError) in
                let registry = try await options.open()
                if case .model(let name) = reference {
                    let detail = try await registry.model(name)
                    if output.json { return try emitJSON(detail) }
                    printModel(detail, adapter: try await adapterSummary(detail.latest, registry))
                } else {
                    let detail = try await registry.checkpoint(reference)
                    if output.json { return try emitJSON(detail) }
                    printCheckpoint(detail, adapter: try await adapterSummary(detail, registry))
                }
            }
        }

        /// What a PEFT adapter checkpoint's config says (`LORA rank 8, alpha 16 … on query, value`).
        func adapterSummary(_ detail: CheckpointDetail?, _ registry: any RegistryAPI) async throws(GraftError) -> String? {
            guard let detail, detail.files.contains(where: { $0.path == AdapterConfig.fileName && $0.kind == "file" }) else { return nil }
            let bytes = try await registry.smallFile(detail.checkpoint.reference, path: AdapterConfig.fileName, limit: 1 << 20)
            return (try? AdapterConfig.parse(bytes))?.summary
        }

        func printModel(_ detail: ModelDetail, adapter: String? = nil) {
            let model = detail.model
            let p = model.provenance
            var lines = [("model", "\(model.name) (\(model.kind))")]
            for (label, value) in [
                ("description", p.description), ("source", p.source), ("license", p.license), ("dataset", p.dataset),
                ("architecture", p.architecture), ("task", p.task),
            ] {
                if let value { lines.append((label, value)) }
            }
            for (key, value) in p.metadata.sorted(by: { $0.key < $1.key }) { lines.append(("meta." + key, value)) }
            if !detail.advisories.isEmpty {
                lines.append(("FLAGGED", detail.advisories.joined(separator: ", ") + " (graft advisory list)"))
            }
            lines.append(("created", model.createdAt))
            lines.append(("checkpoints", String(model.checkpointCount)))
            let width = lines.map(\.0.count).max() ?? 0
            for (label, value) in lines { print(label + String(repeating: " ", count: width - label.count) + "  " + value) }
            if !detail.aliases.isEmpty {
                lines = detail.aliases.sorted { $0.key < $1.key }.map { ("@" + $0.key, $0.value) }
                for (label, value) in lines { print(label + String(repeating: " ", count: max(0, width - label.count)) + "  " + value) }
            }
            if let manifest = detail.manifest {
                print("")
                printManifest(manifest)
            }
            if !detail.checkpoints.isEmpty {
                print("")
                printCheckpointTable(detail.checkpoints)
            }
            if let latest = detail.latest {
                print("")
                printCheckpoint(latest, adapter: adapter)
            }
        }

        func printCheckpoint(_ detail: CheckpointDetail, adapter: String? = nil) {
            let c = detail.checkpoint
            print("checkpoint \(c.ref)  \(c.digest)")
            if let adapter { print("  adapter \(adapter)") }
            print(
                """
                  \(formatCount(c.tensorCount)) tensors, \(formatCount(c.parameterCount)) parameters, \(formatBytes(c.fileBytes)),\
                 created \(c.createdAt)
                """
            )
            for (key, value) in c.metadata.sorted(by: { $0.key < $1.key }) { print("  metadata \(key) = \(value)") }
            if let signature = detail.signature { print("  signature " + describe(signature)) }
            if !detail.files.isEmpty {
                let shards = detail.files.filter { $0.kind == "shard" }.count
                print("")
                print("model directory: \(detail.files.count) files, \(shards) of them safetensors weights")
                print(
                    table(
                        ["FILE", "KIND", "BYTES", "CONTENT"],
                        detail.files.map { file in
                            [
                                file.path, file.kind, formatBytes(file.bytes),
                                file.tensors.map { "\(formatCount($0)) tensors" } ?? file.digest.map { $0.short } ?? "",
                            ]
                        }, right: [2]))
            }
            var rows: [[String]] = []
            for layer in detail.layers {
                rows.append([layer.layer, "", "", formatCount(layer.parameters), formatBytes(layer.bytes)])
                for tensor in layer.tensors {
                    let leaf = tensor.name.hasPrefix(layer.layer + ".") ? String(tensor.name.dropFirst(layer.layer.count + 1)) : tensor.name
                    rows.append([
                        "  ." + leaf, tensor.dtype.rawValue, shapeText(tensor.shape), formatCount(tensor.parameters),
                        formatBytes(tensor.bytes),
                    ])
                }
            }
            print("")
            print(table(["LAYER / TENSOR", "DTYPE", "SHAPE", "PARAMETERS", "BYTES"], rows, right: [3, 4]))
        }
    }
}

func printCheckpointTable(_ checkpoints: [CheckpointSummary]) {
    print(
        table(
            ["CHECKPOINT", "DIGEST", "TENSORS", "PARAMETERS", "SIZE", "CREATED"],
            checkpoints.map { c in
                [c.ref, c.digest.short, formatCount(c.tensorCount), formatCount(c.parameterCount), formatBytes(c.fileBytes), c.createdAt]
            }, right: [2, 3, 4]))
}
