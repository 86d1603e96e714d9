public import ArgumentParser
import Graft

extension GraftCommand {
    struct Student: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Derive students from bases or other students.", subcommands: [Create.self])
    }
}

extension Relation: ExpressibleByArgument {}

extension GraftCommand.Student {
    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a student of a parent checkpoint, with its frozen-layer manifest.",
            discussion: """
                Patterns match tensor names: a name, a layer prefix (`encoder` matches every tensor
                under `encoder.`), or a glob (`*`, `?`, `[…]`). --freeze-through PREFIX.N freezes
                PREFIX.0 to PREFIX.N (numeric order: layer.2 before layer.10). Where rules overlap,
                the most specific pattern (most literal characters) wins; on a tie, drop beats
                reinit beats train beats freeze. --reinit replaces the parent's tensors with new
                ones of the student's own (a fresh head): they are recorded as `new` and not
                checked against the parent. Tensors no rule covers are trainable; a rule that matches
                nothing is an error. Every checkpoint the student commits is checked against it.

                A task model names its base's tensors under a prefix (`bert.embeddings…` in
                BertForSequenceClassification for the base's `embeddings…`). --prefix bert. says
                so; without it, a rule that matches nothing is tried under the prefix its pattern
                starts with, so `--freeze bert.embeddings` finds the base's `embeddings`. Frozen
                tensors are then checked and shared through the prefix.

                --adapter makes an adapter student (transfer mode `adapter`, relation `adapter`):
                every parent tensor is frozen and none is stored with its checkpoints, which are
                PEFT adapter directories (adapter_model.safetensors and adapter_config.json, as
                save_pretrained writes them). Each commit checks that the config parses and that
                every LoRA tensor sits on a parent module with the shapes its rank gives; copies
                of modules_to_save are the adapter's own tensors. `graft export REF --merged`
                writes the parent with the adapter merged in. An adapter's checkpoint has no
                students of its own (stacked adapters are refused).
                """)

        @Argument(help: ArgumentHelp("The student's name.", valueName: "name"))
        var name: String
        @Option(help: ArgumentHelp("The parent checkpoint (NAME means its latest).", valueName: "ref"))
        var from: String
        @Option(help: "finetune, adapter, distillation, merge or quantized.")
        var relation: Relation = .finetune
        @Option(help: ArgumentHelp("Freeze the tensors PATTERN matches (repeatable).", valueName: "pattern"))
        var freeze: [String] = []
        @Option(help: ArgumentHelp("Train the tensors PATTERN matches (repeatable).", valueName: "pattern"))
        var train: [String] = []
        @Option(help: ArgumentHelp("Drop the tensors PATTERN matches (repeatable).", valueName: "pattern"))
        var drop: [String] = []
        @Option(
            help: ArgumentHelp("Re-initialise the tensors PATTERN matches: the student brings new ones (repeatable).", valueName: "pattern")
        )
        var reinit: [String] = []
        @Option(name: .customLong("freeze-through"), help: ArgumentHelp("Freeze PREFIX.0 through PREFIX.N.", valueName: "layer"))
        var freezeThrough: String?
        @Option(
            help: ArgumentHelp(
                "The student names the parent's tensors under this prefix, e.g. `bert.` (inferred from the rules when absent).",
                valueName: "prefix"))
        var prefix: String?
        @Flag(help: "An adapter student (PEFT/LoRA): its checkpoints hold the adapter only; no other rule applies.")
        var adapter = false
        @Option(help: "A one-line description.")
        var description: String?
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func validate() throws {
            guard adapter else { return }
            guard freeze.isEmpty, train.isEmpty, drop.isEmpty, reinit.isEmpty, freezeThrough == nil, prefix == nil else {
                throw ValidationError(
                    "--adapter freezes every parent tensor: it takes no --freeze, --train, --drop, --reinit, --freeze-through or --prefix")
            }
            guard relation == .finetune || relation == .adapter else {
                throw ValidationError("--adapter makes an `adapter` relation; leave --relation out")
            }
        }

        func run() async throws {
            let name = try parseName(self.name)
            let parent = try parseReference(from)
            let rules =
                freeze.map { ManifestRule(.freeze, $0) } + train.map { ManifestRule(.train, $0) } + drop.map { ManifestRule(.drop, $0) }
                + reinit.map { ManifestRule(.reinit, $0) } + (prefix.map { [ManifestRule(.prefix, $0)] } ?? [])
            try await GraftCLI.run { () throws(GraftError) in
                let result = try await options.open().createStudent(
                    name: name, from: parent, relation: relation,
                    manifest: adapter ? .adapter : .rules(rules, freezeThrough: freezeThrough),
                    description: description)
                if output.json { return try emitJSON(result) }
                print(
                    """
                    created student \(result.model) from \(result.manifest.parent) (\(result.manifest.relation.rawValue),\
                     \(result.manifest.mode.rawValue))
                    """
                )
                printManifestCounts(result.manifest)
            }
        }
    }
}

func printManifestCounts(_ manifest: ManifestSummary) {
    print(
        table(
            ["STATE", "TENSORS", "PARAMETERS"],
            TensorState.allCases.map { state in
                let count = manifest.count(state)
                return [state.rawValue, formatCount(count.tensors), formatCount(count.parameters)]
            }, right: [1, 2]))
}

/// The manifest grouped by layer: each layer's state (or "mixed") and parameter count.
func printManifest(_ manifest: ManifestSummary) {
    print("student of \(manifest.parent) (\(manifest.relation.rawValue)), mode \(manifest.mode.rawValue)")
    printManifestCounts(manifest)
    var layers: [String: [ManifestEntry]] = [:]
    for entry in manifest.entries {
        let layer = entry.name.lastIndex(of: ".").map { String(entry.name[..<$0]) } ?? entry.name
        layers[layer, default: []].append(entry)
    }
    let rows = layers.keys.sorted(by: numericAwareLess).map { layer -> [String] in
        let entries = layers[layer]!
        let states = Set(entries.map(\.state.rawValue))
        let state = states.count == 1 ? states.first! : "mixed (" + states.sorted().joined(separator: ", ") + ")"
        return [layer, state, String(entries.count), formatCount(entries.reduce(0) { $0 + $1.parameters })]
    }
    print("")
    print(table(["LAYER", "STATE", "TENSORS", "PARAMETERS"], rows, right: [2, 3]))
}
