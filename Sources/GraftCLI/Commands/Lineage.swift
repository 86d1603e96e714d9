import ArgumentParser
import Graft

extension GraftCommand {
    struct Best: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Find the best checkpoint by a metric: of one model, under a base (any depth), or overall.",
            discussion: """
                Without --max/--min the direction comes from the name: loss, error, perplexity (and
                mse, mae, wer, cer) minimise, others maximise. Checkpoints without the metric are not
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
            if let model { scope = .model(try parseName(model)) } else if let under { scope = .under(try parseName(under)) } else { scope = .all }
            try await GraftCLI.run { () throws(GraftError) in
                let registry = try await options.open()
                let best = try await registry.best(metric: metric, direction: ranking.direction, split: ranking.split, scope: scope, includeFlagged: includeFlagged)
                if let export { try await registry.export(best.checkpoint.reference, to: export) }
                if output.json { return try emitJSON(best) }
                let how = best.directionInferred ? "\(best.direction.rawValue), from the metric's name" : best.direction.rawValue
                print("best \(best.checkpoint.ref)  \(best.metric)\(best.split.map { " (\($0))" } ?? "") = \(formatMetric(best.value))  [\(how)]")
                print("  \(best.candidates) candidate(s); \(best.excludedFlagged) left out for open advisories" + (best.excludedFlagged > 0 ? " (--include-flagged to consider them)" : ""))
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
                let report = try await options.open().lineage(name, metric: metric, parts: parts)
                switch format {
                case .json: try emitJSON(report)
                case .tree: print(renderTree(report))
                case .dot: print(renderDOT(report))
                case .mermaid: print(renderMermaid(report))
                }
            }
        }
    }
}

private func label(_ node: LineageNode, metric: String?) -> String {
    var parts = [node.name, "(\(node.mode?.rawValue ?? node.kind))"]
    if let relation = node.relation, let parent = node.parent { parts.append("\(relation.rawValue) of \(parent)") }
    if let metric, let best = node.best { parts.append("best \(metric) \(formatMetric(best))") }
    if !node.advisories.isEmpty { parts.append("FLAGGED " + node.advisories.joined(separator: ",")) }
    return parts.joined(separator: " ")
}

func renderTree(_ report: LineageReport) -> String {
    var lines: [String] = []
    for (index, node) in report.ancestors.reversed().enumerated() {
        lines.append(String(repeating: "  ", count: index) + (index == 0 ? "" : "└─ ") + label(node, metric: report.metric))
    }
    let base = report.ancestors.count
    lines.append(String(repeating: "  ", count: base) + (base == 0 ? "" : "└─ ") + "* " + label(report.model, metric: report.metric))
    for node in report.descendants {
        lines.append(String(repeating: "  ", count: base + node.depth) + "└─ " + label(node, metric: report.metric))
    }
    return lines.joined(separator: "\n")
}

private func nodes(_ report: LineageReport) -> [LineageNode] { report.ancestors.reversed() + [report.model] + report.descendants }

private func edges(_ report: LineageReport) -> [(from: String, to: String, label: String)] {
    nodes(report).compactMap { node in
        guard let parent = node.parent, let relation = node.relation else { return nil }
        let parentModel = String(parent[..<parent.lastIndex(of: "@")!])
        guard nodes(report).contains(where: { $0.name == parentModel }) else { return nil }
        return (parentModel, node.name, "\(relation.rawValue) from @\(parent[parent.index(after: parent.lastIndex(of: "@")!)...])")
    }
}

func renderDOT(_ report: LineageReport) -> String {
    var lines = ["digraph lineage {", "  rankdir=TB;", "  node [shape=box, fontname=\"Helvetica\"];"]
    for node in nodes(report) {
        let text = label(node, metric: report.metric).replacingOccurrences(of: "\"", with: "\\\"")
        let style = node.advisories.isEmpty ? "" : ", color=red, fontcolor=red"
        let bold = node.name == report.model.name ? ", penwidth=2" : ""
        lines.append("  \"\(node.name)\" [label=\"\(text)\"\(style)\(bold)];")
    }
    for edge in edges(report) { lines.append("  \"\(edge.from)\" -> \"\(edge.to)\" [label=\"\(edge.label)\"];") }
    lines.append("}")
    return lines.joined(separator: "\n")
}

func renderMermaid(_ report: LineageReport) -> String {
    // Mermaid ids must be simple: number the nodes.
    let all = nodes(report)
    var ids: [String: String] = [:]
    for (index, node) in all.enumerated() { ids[node.name] = "n\(index)" }
    var lines = ["graph TD"]
    for node in all {
        let text = label(node, metric: report.metric).replacingOccurrences(of: "\"", with: "#quot;")
        lines.append("  \(ids[node.name]!)[\"\(text)\"]")
        if !node.advisories.isEmpty { lines.append("  style \(ids[node.name]!) stroke:#d00,color:#d00") }
    }
    for edge in edges(report) { lines.append("  \(ids[edge.from]!) -->|\(edge.label)| \(ids[edge.to]!)") }
    return lines.joined(separator: "\n")
}
