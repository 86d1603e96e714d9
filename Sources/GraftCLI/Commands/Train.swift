public import ArgumentParser
import Foundation
import Graft
public import Trainer

extension OptimizerKind: ExpressibleByArgument {}
extension TransferMode: ExpressibleByArgument {}

extension GraftCommand {
    struct Train: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train a student (or a new base) and commit a checkpoint every epoch.",
            discussion: """
                NAME is a student: its manifest decides what trains. Frozen tensors stay
                bit-identical (frozen BatchNorm layers run in inference mode) and the registry checks
                it on every commit; `new` tensors (the head) are freshly initialised for the selected
                classes; the rest fine-tune from the parent's values. Layers below the first trainable
                one are run once per dataset and their outputs reused.

                With --from REF --mode, the student is created first with the per-tensor manifest the
                engine applies: feature-extraction (only the new head trains), partial-finetune (the
                first --freeze-blocks blocks of `features` frozen; a block is a conv2d or linear layer
                with the layers after it), full-finetune (everything trains; the head is new), or
                adapter (LoRA: the parent frozen whole, a pair of rank --rank on each conv2d and linear
                layer of `features` --target names, scaled by --alpha / --rank; only the pairs and the
                new head train, and each epoch commits the PEFT directory — the parent is never stored
                again; `graft export NAME --merged` writes the merged network).

                With --scratch --architecture SPEC --register-as NAME, a new network trains from
                scratch and is registered as a base (NAME@1 after the first epoch). SPEC is a preset
                (cnn-small, mlp) or layers such as `conv:8:3,bn,relu,pool:2,flatten,linear:64,relu`;
                the head `classifier` is added.

                --data is a directory of IDX files (train-images-idx3-ubyte[.gz], …) or a CSV file
                (label, then features). Each epoch commits NAME@N with val/accuracy, val/loss,
                train/loss, train/accuracy, train/samples_per_s and train/epoch_seconds.
                """)

        @Argument(help: ArgumentHelp("The student to train.", valueName: "name"))
        var name: String?
        @Option(help: ArgumentHelp("IDX directory or CSV file.", valueName: "path"))
        var data: String
        @Option(help: "Epochs to train (one checkpoint each).")
        var epochs = 5
        @Option(name: .customLong("batch-size"), help: "Samples per optimiser step.")
        var batchSize = 64
        @Option(name: .customLong("lr"), help: "Learning rate.")
        var learningRate: Float = 0.05
        @Option(help: "sgd or adam.")
        var optimizer: OptimizerKind = .sgd
        @Option(help: "SGD momentum.")
        var momentum: Float = 0.9
        @Option(name: .customLong("weight-decay"), help: "L2 weight decay.")
        var weightDecay: Float = 0
        @Option(help: "Seeds initialisation, shuffling, dropout and the data split.")
        var seed: UInt64 = 0
        @Option(help: ArgumentHelp("Source labels to use, e.g. 5-9 or 0,2,4 (relabelled 0…k−1).", valueName: "labels"))
        var classes: String?
        @Option(name: .customLong("per-class"), help: ArgumentHelp("Label budget: training samples per class.", valueName: "k"))
        var perClass: Int?
        @Option(name: .customLong("val-per-class"), help: "Samples per class held out for validation.")
        var validationPerClass = 300
        @Option(
            name: .customLong("lr-scale"),
            help: ArgumentHelp("Scale the learning rate of the tensors PATTERN matches (repeatable).", valueName: "pattern=x"))
        var learningRateScales: [String] = []
        @Option(help: ArgumentHelp("Create the student first, from this parent checkpoint.", valueName: "ref"))
        var from: String?
        @Option(help: "With --from: feature-extraction, partial-finetune, full-finetune or adapter.")
        var mode: TransferMode?
        @Option(help: ArgumentHelp("With --mode adapter: LoRA's rank (default 8).", valueName: "r"))
        var rank: Int?
        @Option(help: ArgumentHelp("With --mode adapter: LoRA's alpha; the update is scaled by alpha / rank (default 8).", valueName: "a"))
        var alpha: Double?
        @Option(
            name: .customLong("target"),
            help: ArgumentHelp(
                "With --mode adapter: layers to adapt, a name or glob (repeatable; default: every conv2d and linear of `features`).",
                valueName: "pattern"))
        var targets: [String] = []
        @Option(
            name: .customLong("freeze-blocks"),
            help: ArgumentHelp("With --mode partial-finetune: blocks of `features` to freeze.", valueName: "n"))
        var freezeBlocks: Int?
        @Flag(help: "Train a new network from scratch and register it as a base.")
        var scratch = false
        @Option(help: ArgumentHelp("With --scratch: a preset or layer spec.", valueName: "spec"))
        var architecture: String?
        @Option(name: .customLong("register-as"), help: ArgumentHelp("With --scratch: the new base's name.", valueName: "name"))
        var registerAs: String?
        @Option(help: "With --scratch: the base's license.")
        var license: String?
        @Option(help: "With --scratch: the dataset's name, for the base's provenance (default: the --data path).")
        var dataset: String?
        @Option(help: "OpenBLAS threads (default: all cores).")
        var threads: Int?
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func validate() throws {
            if scratch {
                guard architecture != nil, registerAs != nil else {
                    throw ValidationError("--scratch needs --architecture SPEC and --register-as NAME")
                }
                guard name == nil || name == registerAs else {
                    throw ValidationError("with --scratch, name the base with --register-as only")
                }
                guard from == nil, mode == nil else {
                    throw ValidationError("--scratch trains a new base; --from and --mode derive a student")
                }
            } else {
                guard name != nil else { throw ValidationError("name the student to train (or use --scratch)") }
                guard architecture == nil, registerAs == nil else {
                    throw ValidationError("--architecture and --register-as go with --scratch")
                }
                guard (from == nil) == (mode == nil) else { throw ValidationError("--from and --mode go together") }
                if freezeBlocks != nil, mode != .partialFinetune {
                    throw ValidationError("--freeze-blocks goes with --mode partial-finetune")
                }
                if rank != nil || alpha != nil || !targets.isEmpty, mode != .adapter, from != nil {
                    throw ValidationError("--rank, --alpha and --target go with --mode adapter")
                }
            }
        }

        func run() async throws {
            if let threads { BLAS.setThreads(threads) }
            let settings = TrainingSettings(
                epochs: epochs, batchSize: batchSize,
                optimizer: OptimizerSettings(kind: optimizer, learningRate: learningRate, momentum: momentum, weightDecay: weightDecay),
                seed: seed, learningRateScales: try learningRateScales.map(parseScale))
            let selection = DataSelection(
                classes: try classes.map { text in try trainerCall { () throws(TrainerError) in try DataSelection.parseClasses(text) } },
                perClass: perClass, validationPerClass: validationPerClass, seed: seed)
            if let perClass, perClass < 1 { throw failUsage("--per-class must be at least 1") }
            let modelName = try parseName(scratch ? registerAs! : name!)
            let registry: any RegistryAPI
            do { registry = try await options.open() } catch { throw fail(error) }
            let samples = try trainerCall { () throws(TrainerError) in try Dataset.load(data) }
            let json = output.json
            let progress: (EpochReport) -> Void = { report in
                guard !json else { return }
                let line = String(
                    format: "epoch %d/%d  train/loss %.4f  val/loss %.4f  val/accuracy %.4f  %.0f samples/s  %.1f s  → %@ (%@ new)",
                    report.epoch, settings.epochs, report.trainLoss, report.validationLoss, report.validationAccuracy,
                    report.samplesPerSecond,
                    report.seconds, report.checkpoint ?? "?", formatBytes(report.bytesStored ?? 0))
                FileHandle.standardError.write(Data((line + "\n").utf8))
            }
            let reports: [EpochReport]
            if scratch {
                let provenance = Provenance(
                    source: "trained from scratch by graft train (seed \(seed))", license: license, dataset: dataset ?? data,
                    architecture: architecture,
                    task: "\((selection.classes ?? samples.classes).count)-class classification")
                reports = try await trainerCall { () async throws(TrainerError) in
                    try await Engine.trainBase(
                        modelName, architecture: architecture!, in: registry, data: samples, selection: selection, settings: settings,
                        provenance: provenance, progress: progress)
                }
            } else {
                if let from, let mode {
                    let parent = try parseReference(from)
                    let created: StudentResult
                    if mode == .adapter {
                        created = try await trainerCall { () async throws(TrainerError) in
                            try await Engine.deriveAdapter(modelName, from: parent, in: registry)
                        }
                    } else {
                        let plan: TransferPlan =
                            switch mode {
                            case .featureExtraction: .featureExtraction
                            case .fullFinetune: .fullFinetune
                            case .partialFinetune, .adapter: .freezeBlocks(freezeBlocks ?? 1)
                            }
                        created = try await trainerCall { () async throws(TrainerError) in
                            try await Engine.deriveStudent(modelName, from: parent, plan: plan, in: registry)
                        }
                    }
                    if !json {
                        print("created student \(created.model) from \(created.manifest.parent) (\(created.manifest.mode.rawValue))")
                    }
                }
                let isAdapter: Bool
                do { isAdapter = try await registry.manifest(of: modelName)?.mode == .adapter } catch { throw fail(error) }
                if isAdapter {
                    let adapter = AdapterSettings(rank: rank ?? 8, alpha: alpha ?? 8, targets: targets)
                    reports = try await trainerCall { () async throws(TrainerError) in
                        try await Engine.trainAdapter(
                            modelName, in: registry, data: samples, selection: selection, settings: settings, adapter: adapter,
                            progress: progress)
                    }
                } else {
                    if rank != nil || alpha != nil || !targets.isEmpty {
                        throw failUsage("--rank, --alpha and --target train an adapter student; \(modelName) is not one")
                    }
                    reports = try await trainerCall { () async throws(TrainerError) in
                        try await Engine.trainStudent(
                            modelName, in: registry, data: samples, selection: selection, settings: settings, progress: progress)
                    }
                }
            }
            if json { return try printJSON(reports) }
            if let best = reports.max(by: { $0.validationAccuracy < $1.validationAccuracy }) {
                print(
                    """
                    trained \(modelName): \(reports.count) checkpoints; best val/accuracy\
                     \(String(format: "%.4f", best.validationAccuracy)) at \(best.checkpoint ?? "?")
                    """
                )
            }
        }

        private func parseScale(_ text: String) throws -> (pattern: String, scale: Float) {
            guard let equals = text.lastIndex(of: "="), let scale = Float(text[text.index(after: equals)...]), !text[..<equals].isEmpty
            else {
                throw failUsage("--lr-scale takes PATTERN=FACTOR, e.g. features=0.1; not `\(text)`")
            }
            return (String(text[..<equals]), scale)
        }
    }
}

/// Runs an engine call, mapping its error to a message and exit code.
func trainerCall<R>(_ body: () async throws(TrainerError) -> R) async throws -> R {
    do { return try await body() } catch { throw fail(error) }
}

func trainerCall<R>(_ body: () throws(TrainerError) -> R) throws -> R {
    do { return try body() } catch { throw fail(error) }
}

func fail(_ error: TrainerError) -> ExitCode {
    if case .registry(let cause) = error { return fail(cause) }
    printError(error.description)
    switch error {
    case .data, .state: return ExitCode(ErrorKind.invalidInput.exitCode)
    case .architecture, .configuration, .registry: return ExitCode(ErrorKind.usage.exitCode)
    }
}

func failUsage(_ message: String) -> ExitCode {
    printError(message)
    return ExitCode(ErrorKind.usage.exitCode)
}
