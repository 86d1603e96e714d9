import Foundation

// Text renderings of a lineage report, shared by the CLI and `graft serve`
// (`GET /v1/models/NAME/lineage?format=dot`).

extension LineageReport {
    /// An indented text tree: ancestors, the model (`*`), then descendants.
    public var tree: String {
        let report = self
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

    /// Graphviz DOT (`dot -Tsvg`); flagged models in red.
    public var dot: String {
        let report = self
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

    /// A Mermaid flowchart (renders in Markdown viewers); flagged models in red.
    public var mermaid: String {
        let report = self
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
}

private func label(_ node: LineageNode, metric: String?) -> String {
    var parts = [node.name, "(\(node.mode?.rawValue ?? node.kind))"]
    if let relation = node.relation, let parent = node.parent { parts.append("\(relation.rawValue) of \(parent)") }
    if let metric, let best = node.best { parts.append("best \(metric) \(formatMetric(best))") }
    if !node.advisories.isEmpty { parts.append("FLAGGED " + node.advisories.joined(separator: ",")) }
    return parts.joined(separator: " ")
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

/// A metric value for text output: as entered when short (`0.91`, `12`), else six significant
/// digits (`0.896667`, not `0.8966666666666666`). JSON keeps full precision.
public func formatMetric(_ value: Double) -> String {
    let plain = "\(value)"
    return plain.count <= 8 ? plain : String(format: "%.6g", value)
}
