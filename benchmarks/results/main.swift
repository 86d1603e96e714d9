// `make results`: a Yosinski-style transferability experiment (NIPS 2014, "How transferable are
// features in deep neural networks?") with Graft's engine, every run a model in a registry.
//
// Teacher: cnn-small on Fashion-MNIST classes 0-4. Students on classes 5-9 with 10, 100 and all
// labels per class: feature extraction (all three blocks frozen), the first n blocks frozen
// (n = 1, 2), full fine-tuning (n = 0), and from scratch; 3 seeds each. Writes docs/RESULTS.md
// (mean ± sd test accuracy of the best-by-validation checkpoint, steps to 90% of the run's best,
// wall time) and docs/results.svg.
import ExperimentSupport
import Foundation
import Graft
import SafeTensors
import Trainer

let registryPath = option("--registry", "results-registry")
let dataPath = option("--data", "/usr/share/datasets/fashion-mnist")
let seeds = Int(option("--seeds", "3"))!
let budgets: [Int?] = option("--budgets", "10,100,all").split(separator: ",").map { $0 == "all" ? nil : Int($0)! }
let outputDirectory = option("--out", "docs")
let teacherEpochs = Int(option("--teacher-epochs", "4"))!
BLAS.setThreads(1)

/// Epochs per budget: small budgets take more passes so every run gets a fair number of steps.
func epochs(for budget: Int?) -> Int {
    switch budget {
    case nil: 3
    case let k? where k <= 10: 30
    case let k? where k <= 100: 15
    default: 6
    }
}

let configs = [
    Recipe(key: "fe", label: "feature extraction (3 blocks frozen)", plan: .featureExtraction),
    Recipe(key: "freeze2", label: "first 2 blocks frozen", plan: .freezeBlocks(2)),
    Recipe(key: "freeze1", label: "first block frozen", plan: .freezeBlocks(1)),
    Recipe(key: "full", label: "full fine-tune", plan: .fullFinetune),
    Recipe(key: "lora", label: "adapter (LoRA rank 4, Adam)", adapter: AdapterSettings(rank: 4, alpha: 8)),
    Recipe(key: "scratch", label: "from scratch"),
]

struct Run: Codable {
    var config: String
    var budget: Int?
    var seed: Int
    var testAccuracy: Double
    var bestValidation: Double
    var stepsTo90: Int
    var seconds: Double
    /// Parameters the optimiser updated, and bytes the run's checkpoints added to the registry
    /// (absent from runs made before adapters).
    var trainable: Int?
    var stored: Int?
}

/// Everything the report is made from, kept as docs/results.json so it can be rewritten
/// (`--report docs/results.json`) without training again.
struct Outcome: Codable {
    var minutes: Double
    var date: String
    var teacherCheckpoint: String
    var teacherValidation: Double
    var teacherEpochs: Int
    var seeds: Int
    var budgets: [Int?]
    var runs: [Run]
}

func train() async throws -> Outcome {
    let started = Date()
    try? FileManager.default.removeItem(atPath: registryPath)
    let registry = try await Registry.create(at: registryPath).registry
    let train = try Dataset.load(dataPath)
    let test = try DataSelection(classes: Array(5...9), validationPerClass: 0).split(try Dataset.load(dataPath, test: true)).train

    let teacher = try ModelName("teacher")
    print("teacher: cnn-small on classes 0-4, all labels, \(teacherEpochs) epochs")
    let teacherReports = try await Engine.trainBase(
        teacher, architecture: "cnn-small", in: registry, data: train,
        selection: DataSelection(classes: Array(0...4), validationPerClass: 300),
        settings: TrainingSettings(epochs: teacherEpochs, batchSize: 32, optimizer: OptimizerSettings(learningRate: 0.03)),
        provenance: Provenance(source: "graft-results", license: "mit", dataset: "Fashion-MNIST classes 0-4", architecture: "cnn-small"))
    let teacherBest = teacherReports.max { $0.validationAccuracy < $1.validationAccuracy }!
    let parent = try Reference(parsing: teacherBest.checkpoint!)
    print(String(format: "teacher best %@ val/accuracy %.4f", teacherBest.checkpoint!, teacherBest.validationAccuracy))

    var runs: [Run] = []
    for budget in budgets {
        for seed in 0..<seeds {
            for config in configs {
                let name = try ModelName("k\(budget.map(String.init) ?? "all")-\(config.key)-s\(seed)")
                let selection = DataSelection(classes: Array(5...9), perClass: budget, validationPerClass: 300, seed: UInt64(100 + seed))
                let settings = TrainingSettings(
                    epochs: epochs(for: budget), batchSize: 32, optimizer: OptimizerSettings(learningRate: 0.03), seed: UInt64(seed))
                let reports = try await config.train(
                    name, from: parent, in: registry, data: train, selection: selection, settings: settings, architecture: "cnn-small",
                    source: "graft-results (scratch baseline)")
                let best = reports.max { $0.validationAccuracy < $1.validationAccuracy }!
                let network = try await config.network(try Reference(parsing: best.checkpoint!), in: registry, scratch: registryPath)
                let accuracy = try TrainingLoop(network: network, settings: TrainingSettings()).evaluate(test).accuracy
                let target = 0.9 * best.validationAccuracy
                let run = Run(
                    config: config.key, budget: budget, seed: seed, testAccuracy: accuracy, bestValidation: best.validationAccuracy,
                    stepsTo90: reports.first { $0.validationAccuracy >= target }!.steps, seconds: reports.reduce(0) { $0 + $1.seconds },
                    trainable: reports.last!.trainableParameters, stored: reports.reduce(0) { $0 + ($1.bytesStored ?? 0) })
                runs.append(run)
                print(
                    String(
                        format: "%-22@ test %.4f  best val %.4f  steps to 90%% %5d  %6.1f s", name.value, run.testAccuracy,
                        run.bestValidation, run.stepsTo90, run.seconds))
            }
        }
    }

    return Outcome(
        minutes: Date().timeIntervalSince(started) / 60, date: ISO8601DateFormatter().string(from: Date()),
        teacherCheckpoint: teacherBest.checkpoint!,
        teacherValidation: teacherBest.validationAccuracy, teacherEpochs: teacherEpochs, seeds: seeds, budgets: budgets, runs: runs)
}

let outcome: Outcome
if let index = CommandLine.arguments.firstIndex(of: "--report") {
    outcome = try JSONDecoder().decode(Outcome.self, from: Data(contentsOf: URL(fileURLWithPath: CommandLine.arguments[index + 1])))
} else {
    outcome = try await train()
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(outcome).write(to: URL(fileURLWithPath: "\(outputDirectory)/results.json"))
}
let runs = outcome.runs
let budgetsRun = outcome.budgets

// MARK: Report
func budgetLabel(_ budget: Int?) -> String { budget.map { "\($0)" } ?? "all (≈5,700)" }
var markdown = """
    # Results: how transferable are the teacher's features?

    Generated by `make results` (benchmarks/results/main.swift) on \(outcome.date),
    \(String(format: "%.0f", outcome.minutes)) minutes on this machine (2 cores, OpenBLAS on one thread). The raw runs are in
    [results.json](results.json); `graft-results --report docs/results.json` rewrites this page from them.

    A Yosinski-style experiment (NIPS 2014) with Graft's engine. The teacher, `cnn-small`
    (conv 8 → BN → ReLU → pool, conv 16 → BN → ReLU → pool, linear 64 → ReLU; 3 blocks, 52k
    parameters), trains on Fashion-MNIST classes 0–4 (T-shirt, trouser, pullover, dress, coat),
    all labels, \(outcome.teacherEpochs) epochs; its best checkpoint (\(outcome.teacherCheckpoint), validation accuracy
    \(String(format: "%.4f", outcome.teacherValidation))) is the parent of every student. Students learn classes 5–9
    (sandal, shirt, sneaker, bag, ankle boot) with 10, 100 or all labels per class; 300 per class
    are held out for validation. Each student's head is new; "first n blocks frozen" freezes the
    first n blocks (BatchNorm statistics included) and fine-tunes the rest. SGD, lr 0.03,
    momentum 0.9, batch 32; 30 / 15 / 3 epochs for 10 / 100 / all labels. The adapter (issue 25)
    freezes the whole teacher, puts a LoRA pair of rank 4 (alpha 8) on each of its conv2d and linear
    layers and trains those and a new head with Adam (lr 0.01); it is evaluated merged into the
    teacher (`graft export --merged`). Each run is a model in the registry (`\(registryPath)`), one
    checkpoint per epoch. **Stored** is what seed 0's checkpoints added to the registry, all epochs.

    **Accuracy** is on the 5,000 held-out test images of classes 5–9, for the checkpoint with the best
    validation accuracy (mean ± sd over \(outcome.seeds) seeds). **Steps to 90%** is the number of optimiser
    steps until validation accuracy first reached 90% of that run's best. **Time** is the
    training and validation wall time of the run.


    """
// What it shows, computed from the runs.
markdown += "## What it shows\n\n"
for budget in budgetsRun {
    let means = configs.filter { config in runs.contains { $0.config == config.key } }.map { config in
        (config, mean(runs.filter { $0.config == config.key && $0.budget == budget }.map(\.testAccuracy)))
    }
    let best = means.max { $0.1 < $1.1 }!
    let scratch = means.first { $0.0.key == "scratch" }!.1
    let fe = means.first { $0.0.key == "fe" }!.1
    let time = { (key: String) in mean(runs.filter { $0.config == key && $0.budget == budget }.map(\.seconds)) }
    markdown += String(
        format:
            """
            - **%@ labels per class:** best is %@ at %.4f, %+.1f points over training from scratch (%.4f); feature extraction reaches\
             %.4f (%+.1f points). Freezing the first two blocks costs %.0f%% of a full fine-tune's time.\n
            """,
        budgetLabel(budget), best.0.label, best.1, (best.1 - scratch) * 100, scratch, fe, (fe - scratch) * 100,
        100 * time("freeze2") / time("full"))
    let adapter = runs.filter { $0.config == "lora" && $0.budget == budget }
    let full = runs.filter { $0.config == "full" && $0.budget == budget }
    if !adapter.isEmpty, !full.isEmpty, let trainable = adapter.first?.trainable, let stored = adapter.first?.stored,
        let fullStored = full.first?.stored
    {
        markdown += String(
            format: "  The adapter reaches %.4f training %@ parameters and storing %@ (a full fine-tune: %.4f, %@).\n",
            mean(adapter.map(\.testAccuracy)), formatCount(trainable), formatBytes(stored), mean(full.map(\.testAccuracy)),
            formatBytes(fullStored))
    }
}
markdown += """

    Caveats: one small architecture, one pair of class splits (clothes → shoes and bags, which
    share little), three seeds; "steps to 90%" is measured at epoch ends, so with all labels
    every mode reaches it in the first epoch and the column says nothing there.

    """
for budget in budgetsRun {
    markdown += """

        ## \(budgetLabel(budget)) labels per class

        | mode | test accuracy | steps to 90% of best | time (s) | trainable parameters | stored (all epochs) |
        |---|---:|---:|---:|---:|---:|

        """
    for config in configs {
        let cell = runs.filter { $0.config == config.key && $0.budget == budget }
        guard !cell.isEmpty else { continue }
        markdown += String(
            format: "| %@ | %.4f ± %.4f | %.0f | %.1f | %@ | %@ |\n", config.label, mean(cell.map(\.testAccuracy)),
            sd(cell.map(\.testAccuracy)), mean(cell.map { Double($0.stepsTo90) }), mean(cell.map(\.seconds)),
            cell.first?.trainable.map(formatCount) ?? "–", cell.first?.stored.map(formatBytes) ?? "–")
    }
}
markdown += "\n![test accuracy by labels per class](results.svg)\n"

// SVG: test accuracy against labels per class, one line per mode, error bars ±1 sd.
let width = 640.0, height = 400.0, left = 60.0, right = 230.0, top = 20.0, bottom = 50.0
let accuracies = runs.map(\.testAccuracy)
let low = max(0, (accuracies.min() ?? 0) - 0.05), high = min(1, (accuracies.max() ?? 1) + 0.02)
func x(_ index: Int) -> Double {
    left + (width - left - right) * (budgetsRun.count == 1 ? 0.5 : Double(index) / Double(budgetsRun.count - 1))
}
func y(_ value: Double) -> Double { top + (height - top - bottom) * (1 - (value - low) / (high - low)) }
let colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#e6ab02", "#666666"]
var svg =
    """
    <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\"\
     font-size=\"12\">\n
    """
svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
svg +=
    """
    <line x1=\"\(left)\" y1=\"\(y(low))\" x2=\"\(width - right)\" y2=\"\(y(low))\" stroke=\"black\"/><line x1=\"\(left)\"\
     y1=\"\(y(low))\" x2=\"\(left)\" y2=\"\(top)\" stroke=\"black\"/>\n
    """
for tick in stride(from: (low * 20).rounded(.up) / 20, through: high, by: 0.05) {
    svg += String(
        format:
            """
            <line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%.1f\"\
             text-anchor=\"end\">%.2f</text>\n
            """,
        left, y(tick), width - right, y(tick), left - 6, y(tick) + 4, tick)
}
for (index, budget) in budgetsRun.enumerated() {
    svg += String(
        format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%@</text>\n", x(index), height - bottom + 18,
        budget.map { "\($0)" } ?? "all")
}
svg += String(
    format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">labels per class (classes 5–9)</text>\n", (left + width - right) / 2,
    height - 12)
svg += String(
    format: "<text x=\"14\" y=\"%.1f\" transform=\"rotate(-90 14 %.1f)\" text-anchor=\"middle\">test accuracy</text>\n",
    (top + height - bottom) / 2, (top + height - bottom) / 2)
for (c, config) in configs.enumerated() where runs.contains(where: { $0.config == config.key }) {
    var points: [String] = []
    for (index, budget) in budgetsRun.enumerated() {
        let cell = runs.filter { $0.config == config.key && $0.budget == budget }.map(\.testAccuracy)
        let (mu, sigma) = (mean(cell), sd(cell))
        points.append(String(format: "%.1f,%.1f", x(index), y(mu)))
        svg += String(
            format:
                """
                <line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%@\"/><circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\"\
                 fill=\"%@\"/>\n
                """,
            x(index), y(mu - sigma), x(index), y(mu + sigma), colors[c], x(index), y(mu), colors[c])
    }
    svg += "<polyline fill=\"none\" stroke=\"\(colors[c])\" stroke-width=\"2\" points=\"\(points.joined(separator: " "))\"/>\n"
    svg += String(
        format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"3\" fill=\"%@\"/><text x=\"%.1f\" y=\"%.1f\">%@</text>\n",
        width - right + 12, top + 10 + Double(c) * 20, colors[c], width - right + 30, top + 15 + Double(c) * 20, config.label)
}
svg += "</svg>\n"
// The vulnerability experiment's section (`make results-vulnerability`) is kept as it is.
if let existing = try? String(contentsOfFile: "\(outputDirectory)/RESULTS.md", encoding: .utf8),
    let start = existing.range(of: "<!-- vulnerability"), let end = existing.range(of: "<!-- /vulnerability -->\n")
{
    markdown += "\n" + existing[start.lowerBound..<end.upperBound]
}
try markdown.write(toFile: "\(outputDirectory)/RESULTS.md", atomically: false, encoding: .utf8)
try svg.write(toFile: "\(outputDirectory)/results.svg", atomically: false, encoding: .utf8)
print("wrote \(outputDirectory)/RESULTS.md and \(outputDirectory)/results.svg")
