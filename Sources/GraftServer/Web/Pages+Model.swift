import Foundation
import GraftCore
import Hummingbird

// `/models/NAME`: provenance and card, manifest, aliases, checkpoints with their metrics, and
// the training curves plotted — with `?overlay=1`, every student of the same teacher overlaid.
extension Web {
    /// Overlaid students are capped (the model itself always among them): a chart stays legible.
    static let overlayLimit = 12
    /// Newest checkpoints listed on a model page.
    static let checkpointRows = 200

    func registerModel(on routes: RouteTable) {
        let registry = self.registry
        routes.get("/models/{name}", .model(.read)) { request, context, grant in
            let (name, token) = (try modelName(context), grant.token)
            let overlay = try flag(request, "overlay")
            let detail = try await registry.model(name)
            let card = try await registry.card(name)
            // The charts' series: this model's, or each student of its teacher's.
            var members = [name]
            var teacher: ModelName? = nil
            if overlay {
                let chosen =
                    detail.manifest.map { nameOf(String($0.parent[..<($0.parent.lastIndex(of: "@") ?? $0.parent.endIndex)])) } ?? name
                teacher = chosen
                let students = try await registry.lineage(chosen, parts: .descendants).descendants
                    .filter { $0.depth == 1 && token.covers(nameOf($0.name)) }.map { nameOf($0.name) }
                members = ([name] + students.filter { $0 != name }).prefix(Self.overlayLimit).map { $0 }
                if chosen != name, !students.contains(name) { members = [name] + members.filter { $0 != name } }
            }
            var charts = ChartSet()
            for member in members {
                let memberDetail = member == name ? detail : try await registry.model(member)
                let report = try await registry.metrics(.model(member))
                charts.add(
                    model: member.value, checkpoints: memberDetail.checkpoints, report: report,
                    curves: try await registry.curves(of: member))
            }
            let metrics = try await registry.metrics(.model(name))
            let body = Self.modelBody(
                detail: detail, card: card, metrics: metrics, charts: charts, overlay: overlay, teacher: teacher, overlaid: members.count)
            return Self.page(name.value, token: token, body: body)
        }
    }

    /// Charts by metric: each a title, an axis label and one series per model.
    struct ChartSet {
        var charts: [String: (xLabel: String, series: [ChartSeries])] = [:]

        mutating func add(model: String, checkpoints: [CheckpointSummary], report: MetricsReport, curves: [CurveSeries]) {
            var steps: [String: Int] = [:]
            for checkpoint in checkpoints { steps[checkpoint.ref] = checkpoint.step ?? checkpoint.number }
            var byKey: [MetricKey: ChartSeries] = [:]
            for entry in report.checkpoints {
                guard let x = steps[entry.checkpoint] else { continue }
                for value in entry.metrics {
                    let key = MetricKey(name: value.name, split: value.split)
                    byKey[key, default: ChartSeries(label: model, x: [], y: [])].x.append(Double(x))
                    byKey[key]!.y.append(value.value)
                }
            }
            for (key, series) in byKey {
                let title = "\(key.name)" + (key.split.map { " · split \($0)" } ?? "") + " (checkpoints)"
                charts[title, default: ("step (checkpoint number where none was given)", [])].series.append(series)
            }
            for curve in curves {
                charts["\(curve.name) (curve)", default: ("step", [])].series.append(
                    ChartSeries(label: model, x: curve.steps.map(Double.init), y: curve.values))
            }
        }

        var markup: Markup {
            charts.keys.sorted().map { title in LineChart(title: title, xLabel: charts[title]!.xLabel, series: charts[title]!.series).markup
            }.joined()
        }
    }

    static func modelBody(
        detail: ModelDetail, card: String, metrics: MetricsReport, charts: ChartSet, overlay: Bool, teacher: ModelName?, overlaid: Int
    ) -> Markup {
        let model = detail.model
        let name = model.name.value
        var out: Markup = """
            <h1>\(name) \(modeBadge(kind: model.kind, mode: detail.manifest?.mode))</h1>
            <p class="links"><a href="/models/\(percentEncode(name))/lineage">Lineage</a></p>
            """
        if !detail.advisories.isEmpty {
            let items = detail.advisories.map { id -> Markup in "<li><a href=\"/advisories#\(percentEncode(id))\">\(id)</a></li>" }.joined()
            out += "<section class=\"advisories flagged\"><h2>⚑ Open advisories</h2><ul>\(items)</ul></section>"
        }
        // Provenance.
        let provenance = model.provenance
        var facts: [(String, String)] = [
            ("source", provenance.source), ("license", provenance.license), ("dataset", provenance.dataset),
            ("architecture", provenance.architecture), ("task", provenance.task), ("description", provenance.description),
        ].compactMap { key, value in value.map { (key, $0) } }
        facts += provenance.metadata.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        facts.append(("created", model.createdAt))
        var provenanceRows = facts.map { key, value -> Markup in "<div><dt>\(key)</dt><dd>\(value)</dd></div>" }.joined()
        if let manifest = detail.manifest {
            provenanceRows =
                """
                <div><dt>parent checkpoint</dt><dd class=\"edge\">\(checkpointLink(manifest.parent))\
                 (\(manifest.relation.rawValue))</dd></div>
                """
                + provenanceRows
        }
        out += "<section><h2>Provenance</h2><dl class=\"facts\">\(provenanceRows)</dl></section>"

        // The manifest.
        if let manifest = detail.manifest {
            let counts = Dictionary(grouping: manifest.entries, by: \.state).mapValues(\.count)
            let summary = [TensorState.frozen, .trainable, .new, .dropped].map { state -> Markup in
                "<span class=\"state state-\(state.rawValue)\">\(state.rawValue) \(counts[state] ?? 0)</span>"
            }.joined(separator: " ")
            let rows = manifest.entries.map { entry -> Markup in
                """
                <tr><td><code>\(entry.name)</code></td><td><span class=\"state\
                 state-\(entry.state.rawValue)\">\(entry.state.rawValue)</span></td><td\
                 class=\"num\">\(number(entry.parameters))</td></tr>
                """
            }.joined()
            out += """
                <section><h2>Manifest</h2><p>\(summary)</p><details><summary>\(manifest.entries.count) tensors</summary>
                <table><thead><tr><th>tensor</th><th>state</th><th\
                 class="num">parameters</th></tr></thead><tbody>\(rows)</tbody></table></details></section>
                """
        }
        // Aliases.
        if !detail.aliases.isEmpty {
            let rows = detail.aliases.sorted { $0.key < $1.key }.map { alias, ref -> Markup in
                "<tr><td>\(alias)</td><td>\(checkpointLink(ref))</td></tr>"
            }.joined()
            out += "<section><h2>Aliases</h2><table class=\"aliases\"><tbody>\(rows)</tbody></table></section>"
        }
        // Curves.
        let toggle: Markup =
            overlay
            ? "<a href=\"/models/\(percentEncode(name))\">show this model alone</a>"
            : """
            <a href=\"/models/\(percentEncode(name))?overlay=1\" id=\"overlay\">overlay the students of\
             \(detail.manifest == nil ? "this base" : "the same teacher")</a>
            """
        let note: Markup =
            teacher.map { "<p class=\"muted\">\(overlaid) students of \(modelLink($0.value)) overlaid (at most \(overlayLimit)).</p>" }
            ?? .empty
        let chartMarkup = charts.charts.isEmpty ? Markup("<p class=\"muted\">No metrics or curves yet.</p>") : charts.markup
        out +=
            """
            <section class=\"curves\"><h2>Training curves and metrics</h2><p class=\"links\">\(toggle)</p>\(note)<div\
             class=\"charts\">\(chartMarkup)</div></section>
            """

        // Checkpoints, newest first, with their metrics.
        var metricsByRef: [String: [MetricValue]] = [:]
        for entry in metrics.checkpoints { metricsByRef[entry.checkpoint] = entry.metrics }
        let byCheckpoint = Dictionary(grouping: detail.aliases, by: \.value).mapValues { $0.map(\.key).sorted() }
        let newest = detail.checkpoints.reversed().prefix(checkpointRows)
        let rows = newest.map { checkpoint -> Markup in
            let values = (metricsByRef[checkpoint.ref] ?? []).map { value -> Markup in
                "<span class=\"metric\">\(value.name)\(value.split.map { "[\($0)]" } ?? "")=\(metric(value.value))</span>"
            }.joined(separator: " ")
            let aliases = (byCheckpoint[checkpoint.ref] ?? []).map { Markup("<span class=\"alias\">\($0)</span>") }.joined(separator: " ")
            return """
                <tr><td>\(checkpointLink(checkpoint.ref)) \(aliases)</td><td class="num">\(checkpoint.step.map(String.init) ?? "")</td>
                <td class="num">\(checkpoint.epoch.map(String.init) ?? "")</td><td class="num">\(number(checkpoint.tensorCount))</td>
                <td class="num">\(number(checkpoint.parameterCount))</td><td class="num">\(formatBytes(checkpoint.fileBytes))</td>
                <td>\(values)</td><td><code>\(String(checkpoint.digest.description.prefix(19)))</code></td></tr>
                """
        }
        let more: Markup =
            detail.checkpoints.count > checkpointRows
            ? "<p class=\"muted\">The newest \(checkpointRows) of \(number(detail.checkpoints.count)) checkpoints.</p>" : .empty
        out += """
            <section><h2>Checkpoints (\(number(detail.checkpoints.count)))</h2>\(more)
            <table class="checkpoints"><thead><tr><th>checkpoint</th><th class="num">step</th><th class="num">epoch</th><th\
             class="num">tensors</th>
            <th class="num">parameters</th><th\
             class="num">size</th><th>metrics</th><th>digest</th></tr></thead><tbody>\(rows)</tbody></table></section>
            """
        out +=
            """
            <section><details class=\"card\"><summary>Model card (Hugging Face front\
             matter)</summary><pre>\(card)</pre></details></section>
            """
        return out
    }
}
