import ArgumentParser
import Graft

extension GraftCommand {
    struct Best: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Find the best checkpoint by a metric: of one model, under a base (any depth), or overall.",
            discussion: """
                Without --max/--min the direction comes from the name's words (split at / _ - . and
                case changes): loss, error, err, perplexity, ppl, mse, mae, rmse, wer, cer, nll, bpc,
                fid and latency minimise, others maximise (answer_accuracy maximises). Checkpoints without the metric are not
                candidates; ties go to the earliest (model name, then checkpoint number). Checkpoints
                with an open advisory on them or an ancestor are left out unless --include-flagged.
                """)

        @Option(help: "The metric to rank by.")
        var metric: String
        @OptionGroup var ranking: RankingOptions
        @Option(help: ArgumentHelp("Only this model's checkpoints.", valueName: "name"))
        var model: String?
        @Option(help: ArgumentHelp("This model's checkpoints and every descendant's.", valueName: "name"))
        var under: String?
        @Flag(name: .customLong("include-flagged"), help: "Consider checkpoints that carry an open advisory.")
        var includeFlagged = false
        @Option(help: ArgumentHelp("Also write the best checkpoint as a safetensors file.", valueName: "file"))
        var export: String?
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func validate() throws {
            if model != nil && under != nil { throw ValidationError("--model and --under exclude each other") }
        }

        func run() async throws {
            let scope: BestScope
            if let model {
                scope = .model(try parseName(model))
            } else if let under {
                scope = .under(try parseName(under))
            } else {
                scope = .all
            }
            try await GraftCLI.run { () throws(GraftError) in
                let registry = try await options.open()
                let best = try await registry.best(
                    metric: metric, direction: ranking.direction, split: ranking.split, scope: scope, includeFlagged: includeFlagged)
                if let export { _ = try await registry.export(best.checkpoint.reference, to: export, overwrite: false) }
                if output.json { return try emitJSON(best) }
                let how = best.directionInferred ? "\(best.direction.rawValue), from the metric's name" : best.direction.rawValue
                print(
                    """
                    best \(best.checkpoint.ref)  \(best.metric)\(best.split.map { " (\($0))" } ?? "") = \(formatMetric(best.value)) \
                     [\(how)]
                    """
                )
                print(
                    "  \(best.candidates) candidate(s); \(best.excludedFlagged) left out for open advisories"
                        + (best.excludedFlagged > 0 ? " (--include-flagged to consider them)" : ""))
                if let export { print("  exported to \(export)") }
            }
        }
    }

    struct Lineage: AsyncParsableCommand {
        enum Format: String, ExpressibleByArgument, CaseIterable { case tree, json, dot, mermaid }

        static let configuration = CommandConfiguration(
            abstract: "Show a model's ancestry up to its root base and every descendant below it.",
            discussion: "DOT renders with Graphviz (`dot -Tsvg`); Mermaid renders in Markdown viewers.")

        @Argument(help: ArgumentHelp("The model.", valueName: "name"))
        var name: String
        @Flag(help: "Only the chain up to the root base.")
        var ancestors = false
        @Flag(help: "Only the tree below.")
        var descendants = false
        @Option(help: "tree, json, dot or mermaid.")
        var format: Format = .tree
        @Option(help: "Show each model's best value of this metric.")
        var metric: String?
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let format = output.json ? .json : self.format
            let name = try parseName(self.name)
            try await GraftCLI.run { () throws(GraftError) in
                let parts: Registry.LineageParts = ancestors == descendants ? .both : ancestors ? .ancestors : .descendants
                let report = try await options.open().lineage(name, metric: metric, direction: nil, parts: parts)
                switch format {
                case .json: try emitJSON(report)
                case .tree: print(report.tree)
                case .dot: print(report.dot)
                case .mermaid: print(report.mermaid)
                }
            }
        }
    }
}
