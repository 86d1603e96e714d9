public import ArgumentParser
import Foundation
import Graft

extension Direction: ExpressibleByArgument {}
extension Severity: ExpressibleByArgument {}

/// Parses `KEY=VALUE` arguments, turning a bad one into a usage error.
func parseAssignments(_ texts: [String]) throws -> [MetricAssignment] {
    var result: [MetricAssignment] = []
    for text in texts {
        do { result.append(try MetricAssignment(parsing: text)) } catch { throw fail(error) }
    }
    return result
}

extension GraftCommand {
    struct Metric: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Record metrics.", subcommands: [Log.self, Import.self])
    }

    struct Metrics: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List metrics: a checkpoint's evaluations, or for a model every checkpoint's and its training curves.")

        @Argument(help: ArgumentHelp("A model or checkpoint.", valueName: "ref"))
        var ref: String
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let reference = try parseReference(ref)
            try await GraftCLI.run { () throws(GraftError) in
                let report = try await options.open().metrics(reference)
                if output.json { return try emitJSON(report) }
                let rows = report.checkpoints.flatMap { entry in
                    entry.metrics.map { [entry.checkpoint, $0.name, $0.split ?? "-", formatMetric($0.value)] }
                }
                if rows.isEmpty && report.curves.isEmpty { print("no metrics recorded") }
                if !rows.isEmpty { print(table(["CHECKPOINT", "METRIC", "SPLIT", "VALUE"], rows, right: [3])) }
                if !report.curves.isEmpty {
                    if !rows.isEmpty { print("") }
                    print(
                        table(
                            ["CURVE", "POINTS", "STEPS", "LAST", "MIN", "MAX"],
                            report.curves.map {
                                [
                                    $0.name, formatCount($0.points), "\($0.firstStep)–\($0.lastStep)", formatMetric($0.lastValue),
                                    formatMetric($0.minimum), formatMetric($0.maximum),
                                ]
                            },
                            right: [1, 3, 4, 5]))
                }
            }
        }
    }
}

extension GraftCommand.Metric {
    struct Log: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Log metrics: evaluations of a checkpoint, or with --step a training-curve point of a model.",
            discussion: "graft metric log resnet18-ft@3 accuracy=0.91 --split test;  graft metric log resnet18-ft --step 200 loss=0.42")

        @Argument(help: ArgumentHelp("A checkpoint (a bare NAME means its latest), or the model with --step.", valueName: "ref"))
        var ref: String
        @Argument(help: ArgumentHelp("Metrics as KEY=VALUE.", valueName: "key=value"))
        var values: [String]
        @Option(help: "The split or dataset the evaluation ran on.")
        var split: String?
        @Option(help: "Log training-curve points at this step instead.")
        var step: Int?
        @OptionGroup var options: RegistryOptions

        func run() async throws {
            let reference = try parseReference(ref)
            let assignments = try parseAssignments(values)
            guard !assignments.isEmpty else { throw ValidationError("give at least one KEY=VALUE") }
            if step != nil, split != nil { throw ValidationError("--split applies to evaluations, not to curve points (--step)") }
            try await GraftCLI.run { () throws(GraftError) in
                let registry = try await options.open()
                if let step {
                    guard case .model(let name) = reference else {
                        throw GraftError.invalidReference(
                            ref, reason: "curve points (--step) belong to a model: give NAME, not a checkpoint")
                    }
                    try await registry.logCurve(model: name, step: step, assignments)
                    print("logged \(assignments.count) point(s) at step \(step) for \(name)")
                } else {
                    let checkpoint = try await registry.logMetrics(reference, assignments, split: split)
                    print("logged \(assignments.count) metric(s) for \(checkpoint)" + (split.map { " (split \($0))" } ?? ""))
                }
            }
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Import training curves from CSV or JSON lines (a file, or - for stdin).",
            discussion: """
                CSV: a header with a `step` column and one column per metric (or `step,name,value`).
                JSON lines: {"step": 10, "loss": 0.4} per line (or {"step", "name", "value"}).
                All rows go in one transaction; NaN and infinities are refused with their line.
                """)

        @Argument(help: ArgumentHelp("The model.", valueName: "name"))
        var name: String
        @Argument(help: ArgumentHelp("CSV or JSON-lines file; - reads stdin.", valueName: "file"))
        var file: String
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let name = try parseName(self.name)
            let data: Data
            if file == "-" {
                data = FileHandle.standardInput.readDataToEndOfFile()
            } else {
                guard let contents = FileManager.default.contents(atPath: file) else {
                    throw fail(.cannotReadInput(path: file, .io(operation: "cannot read", path: file, errno: ENOENT)))
                }
                data = contents
            }
            try await GraftCLI.run { () throws(GraftError) in
                let result = try await options.open().importCurves(model: name, bytes: Array(data))
                if output.json { return try emitJSON(result) }
                print("imported \(formatCount(result.rows)) point(s) into \(result.curves.joined(separator: ", ")) for \(name)")
            }
        }
    }
}
