import ArgumentParser
import Foundation
import Graft
import Trainer

extension GraftCommand {
    struct Demo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the quick-start demo on a registry (default ./registry).",
            discussion: """
                Transfer learning end to end, through the registry: pretrains a small CNN teacher
                (with BatchNorm) on Fashion-MNIST classes 0–4 and registers it as a base with its
                provenance; derives three students for classes 5–9 with a small label budget
                (feature-extraction, partial-finetune, full-finetune) and trains a from-scratch
                baseline beside them, committing every epoch; then prints the lineage tree, a results
                table, the best checkpoint under the teacher and the registry's dedup figures.
                Running it again is safe: the teacher is reused and new students get a run suffix.
                Fashion-MNIST comes from Debian's dataset-fashion-mnist package (make demo installs it).
                """)

        @OptionGroup var options: RegistryOptions
        @Option(help: ArgumentHelp("Fashion-MNIST IDX directory.", valueName: "path"))
        var data = "/usr/share/datasets/fashion-mnist"
        @Option(help: "Epochs per student.")
        var epochs = 8
        @Option(
            name: .customLong("per-class"), help: ArgumentHelp("The students' label budget: training images per class.", valueName: "k"))
        var perClass = 100
        @Flag(help: "A reduced run (small data, one or two epochs), for tests.")
        var quick = false

        static let teacherName = "fmnist-teacher"

        struct Row {
            var name: String
            var mode: String
            var trainable: Int
            var stored: Int
            var best: Double
            var seconds: Double
        }

        func run() async throws {
            let started = Date()
            let root = options.root
            let registryArguments = ["--registry", root]
            BLAS.setThreads(1)  // the GEMMs here are small: one thread is as fast, without spinning the other core

            section("1. Open the registry at \(root)")
            try await Init.parse(registryArguments).run()
            let registry: Registry
            do { registry = try await options.openLocal() } catch { throw fail(error) }
            let samples = try trainerCall { () throws(TrainerError) in try Dataset.load(data) }
            let studentSettings = TrainingSettings(
                epochs: quick ? 2 : epochs, batchSize: 32, optimizer: OptimizerSettings(kind: .sgd, learningRate: 0.03))
            // LoRA trains two small factors per layer: Adam, as PEFT users train it.
            let adapterSettings = TrainingSettings(
                epochs: quick ? 2 : epochs, batchSize: 32, optimizer: OptimizerSettings(kind: .adam, learningRate: 0.01))
            let validation = quick ? 40 : 300
            let report: (EpochReport) -> Void = { report in
                print(
                    String(
                        format: "  epoch %d  train/loss %.3f  val/accuracy %.3f  %6.0f samples/s  → %@ (%@ new)", report.epoch,
                        report.trainLoss,
                        report.validationAccuracy, report.samplesPerSecond, report.checkpoint ?? "?", formatBytes(report.bytesStored ?? 0)))
            }

            section("2. Pretrain the teacher on Fashion-MNIST classes 0–4 and register it as a base")
            let teacher = try parseName(Self.teacherName)
            let exists = try await registryCall { () throws(GraftError) in try await registry.models().contains { $0.name == teacher } }
            if exists {
                print("\(teacher) is registered already (demo run before); reusing it")
            } else {
                let teacherSettings = TrainingSettings(
                    epochs: quick ? 1 : 3, batchSize: 32, optimizer: OptimizerSettings(kind: .sgd, learningRate: 0.03))
                _ = try await trainerCall { () async throws(TrainerError) in
                    try await Engine.trainBase(
                        teacher, architecture: "cnn-small", in: registry, data: samples,
                        selection: DataSelection(classes: Array(0...4), perClass: quick ? 60 : 2000, validationPerClass: validation),
                        settings: teacherSettings,
                        provenance: Provenance(
                            source: "pretrained by graft demo (seed 0)", license: "mit",
                            dataset: "Fashion-MNIST, classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat)", architecture: "cnn-small",
                            task: "5-class image classification"),
                        progress: report)
                }
            }
            let teacherBest = try await registryCall { () throws(GraftError) in
                try await registry.best(metric: "val/accuracy", direction: .max, scope: .model(teacher), includeFlagged: true)
            }
            let parent = try parseReference(teacherBest.checkpoint.ref)
            print("students derive from \(parent) (val/accuracy \(String(format: "%.3f", teacherBest.value)))")

            section("3. Derive students for classes 5–9 with \(quick ? 20 : perClass) labels per class, and train them")
            let taken = try await registryCall { () throws(GraftError) in Set(try await registry.models().map(\.name.value)) }
            let suffix = (1...).lazy.map { $0 == 1 ? "" : "-r\($0)" }.first { suffix in
                ["fe", "partial", "full", "lora", "scratch"].allSatisfy { !taken.contains("fmnist-5to9-\($0)\(suffix)") }
            }!
            let selection = DataSelection(classes: Array(5...9), perClass: quick ? 20 : perClass, validationPerClass: validation, seed: 1)
            var rows: [Row] = []
            let plans: [(String, TransferPlan)] = [("fe", .featureExtraction), ("partial", .freezeBlocks(2)), ("full", .fullFinetune)]
            for (short, plan) in plans {
                let name = try parseName("fmnist-5to9-\(short)\(suffix)")
                let created = try await trainerCall { () async throws(TrainerError) in
                    try await Engine.deriveStudent(
                        name, from: parent, plan: plan, in: registry, description: "Fashion-MNIST 5-9, \(plan.label)")
                }
                print(
                    """
                    \(name): \(created.manifest.mode.rawValue) — \(created.manifest.count(.frozen).tensors) tensors frozen,\
                     \(created.manifest.count(.trainable).tensors) trainable, \(created.manifest.count(.new).tensors) new
                    """
                )
                let reports = try await trainerCall { () async throws(TrainerError) in
                    try await Engine.trainStudent(
                        name, in: registry, data: samples, selection: selection, settings: studentSettings, progress: report)
                }
                rows.append(Self.row(name.value, created.manifest.mode.rawValue, reports))
            }
            // The fourth mode: the teacher frozen whole, a rank-4 LoRA on every layer, a new head;
            // each checkpoint stores the adapter only.
            let loraName = try parseName("fmnist-5to9-lora\(suffix)")
            _ = try await trainerCall { () async throws(TrainerError) in
                try await Engine.deriveAdapter(loraName, from: parent, in: registry, description: "Fashion-MNIST 5-9, LoRA rank 4")
            }
            print("\(loraName): adapter — the teacher frozen whole, LoRA rank 4 on every conv2d and linear layer, a new head")
            let loraReports = try await trainerCall { () async throws(TrainerError) in
                try await Engine.trainAdapter(
                    loraName, in: registry, data: samples, selection: selection, settings: adapterSettings,
                    adapter: AdapterSettings(rank: 4, alpha: 8), progress: report)
            }
            rows.append(Self.row(loraName.value, "adapter", loraReports))
            let scratchName = try parseName("fmnist-5to9-scratch\(suffix)")
            print("\(scratchName): from scratch, the baseline (a base of its own)")
            let scratchReports = try await trainerCall { () async throws(TrainerError) in
                try await Engine.trainBase(
                    scratchName, architecture: "cnn-small", in: registry, data: samples, selection: selection, settings: studentSettings,
                    provenance: Provenance(
                        source: "trained from scratch by graft demo (baseline)", license: "mit", dataset: "Fashion-MNIST, classes 5-9",
                        architecture: "cnn-small", task: "5-class image classification"),
                    progress: report)
            }
            rows.append(Self.row(scratchName.value, "from scratch", scratchReports))

            section("4. Lineage of the teacher")
            try await Lineage.parse([Self.teacherName, "--metric", "val/accuracy"] + registryArguments).run()

            section("5. Results (classes 5–9, \(quick ? 20 : perClass) labels per class)")
            print(
                table(
                    ["MODEL", "MODE", "TRAINABLE", "STORED", "BEST VAL ACC", "TIME"],
                    rows.map {
                        [
                            $0.name, $0.mode, formatCount($0.trainable), formatBytes($0.stored), String(format: "%.3f", $0.best),
                            String(format: "%.1f s", $0.seconds),
                        ]
                    },
                    right: [2, 3, 4, 5]))

            section("6. The best checkpoint under the teacher")
            try await Best.parse(["--metric", "val/accuracy", "--under", Self.teacherName] + registryArguments).run()

            section("7. Registry totals: frozen layers are stored once")
            try await Stats.parse(registryArguments).run()

            // What a flaw found in the teacher would reach, and how much of it each student holds.
            section("8. How much of the teacher each student still carries")
            var exposures: [[String]] = []
            for row in rows {
                let measured = try await registryCall { () throws(GraftError) in
                    try await registry.exposure(of: .model(try ModelName(row.name)), to: parent, detail: .drift)
                }
                exposures.append([
                    row.name, row.mode, String(format: "%.1f%%", measured.exposure * 100),
                    "\(measured.frozenDepth) of \(measured.layers.count)",
                    measured.drift.map { String(format: "%.3f", $0) } ?? "–",
                ])
            }
            print(table(["MODEL", "MODE", "EXPOSURE", "FROZEN DEPTH", "DRIFT"], exposures, right: [2, 4]))
            print(
                """
                exposure: the share of \(parent)'s bytes a student holds unchanged; drift: how far the rest moved (0 is none).
                Neither is safety: flag the teacher (`graft advisory add \(Self.teacherName) --id ID --severity high`) and\
                 `graft affected \(Self.teacherName)` lists every descendant that inherits it, with these numbers.
                """
            )
            print(
                String(
                    format: "\ndemo complete in %.0f s; explore with `graft lineage %@ --registry %@`", Date().timeIntervalSince(started),
                    Self.teacherName, root))
            print(
                """
                or in a browser: `graft token create me --scope read --registry \(root)`, `graft serve --registry \(root)`, then\
                 http://127.0.0.1:8470/
                """
            )
        }

        static func row(_ name: String, _ mode: String, _ reports: [EpochReport]) -> Row {
            Row(
                name: name, mode: mode, trainable: reports.last?.trainableParameters ?? 0,
                stored: reports.reduce(0) { $0 + ($1.bytesStored ?? 0) },
                best: reports.map(\.validationAccuracy).max() ?? 0, seconds: reports.reduce(0) { $0 + $1.seconds })
        }

        private func section(_ title: String) {
            print("\n== \(title) ==")
        }
    }
}
