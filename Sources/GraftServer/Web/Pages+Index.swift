import Foundation
import GraftCore
import Hummingbird

// `/`: every model the token sees, searched and filtered; counts and the registry's totals.
extension Web {
    static let pageSize = 100

    struct IndexFilter: Equatable {
        var text: String?
        var kind: String?
        var mode: TransferMode?
        var flagged: Bool
        var page: Int

        init(_ request: Request) throws(GraftError) {
            text = searchText(query(request, "q"))
            switch query(request, "kind") {
            case nil, "": kind = nil
            case "base", "student": kind = query(request, "kind")
            case let other?: throw .badRequest("kind must be base or student, not \(quotedParameter(other))")
            }
            switch query(request, "mode") {
            case nil, "": mode = nil
            case let text?:
                guard let parsed = TransferMode(rawValue: text) else {
                    throw .badRequest("mode must be feature-extraction, partial-finetune or full-finetune, not \(quotedParameter(text))")
                }
                mode = parsed
            }
            flagged = try flag(request, "flagged")
            guard let page = Int(query(request, "page") ?? "1"), page >= 1, page <= 1_000_000 else {
                throw .badRequest("page must be a number from 1")
            }
            self.page = page
        }

        func matches(_ entry: ModelIndexEntry) -> Bool {
            if let kind, entry.kind != kind { return false }
            if let mode, entry.mode != mode { return false }
            if flagged, !entry.flagged { return false }
            if let text, entry.name.range(of: text, options: .caseInsensitive) == nil,
                entry.description?.range(of: text, options: .caseInsensitive) == nil
            {
                return false
            }
            return true
        }

        func parameters(page: Int? = nil) -> [(String, String?)] {
            [("q", text), ("kind", kind), ("mode", mode?.rawValue), ("flagged", flagged ? "1" : nil), ("page", page.map(String.init))]
        }
    }

    func registerIndex(on routes: RouteTable) {
        let registry = self.registry
        routes.get("/", .scope(.read)) { request, _, grant in
            let token = grant.token
            let filter = try IndexFilter(request)
            let visible = try await registry.modelIndex().filter { token.covers(nameOf($0.name)) }
            let matching = visible.filter(filter.matches)
            let stats = token.models == nil ? try await registry.stats() : nil
            return Self.page(
                "Models", token: token, body: Self.indexBody(visible: visible, matching: matching, filter: filter, stats: stats))
        }
    }

    static func indexBody(visible: [ModelIndexEntry], matching: [ModelIndexEntry], filter: IndexFilter, stats: RegistryStats?) -> Markup {
        let bases = visible.count { $0.kind == "base" }
        let flagged = visible.count(where: \.flagged)
        var summary: Markup = """
            <dl class="totals"><div><dt>models</dt><dd id="count-models">\(number(visible.count))</dd></div>
            <div><dt>bases</dt><dd>\(number(bases))</dd></div><div><dt>students</dt><dd>\(number(visible.count - bases))</dd></div>
            <div><dt>flagged</dt><dd id="count-flagged">\(number(flagged))</dd></div>
            """
        if let stats {
            summary += """
                <div><dt>checkpoints</dt><dd>\(number(stats.checkpoints))</dd></div>
                <div><dt>logical bytes</dt><dd title="\(number(stats.logicalBytes)) bytes">\(formatBytes(stats.logicalBytes))</dd></div>
                <div><dt>physical bytes</dt><dd title="\(number(stats.physicalBytes)) bytes">\(formatBytes(stats.physicalBytes))</dd></div>
                <div><dt>dedup ratio</dt><dd id="dedup-ratio">\(String(format: "%.2f×", stats.dedupRatio))</dd></div>
                """
        }
        summary += "</dl>"

        func option(_ value: String, _ label: String, selected: Bool) -> Markup {
            "<option value=\"\(value)\"\(Markup(raw: selected ? " selected" : ""))>\(label)</option>"
        }
        let kinds = [("", "any kind"), ("base", "bases"), ("student", "students")].map {
            option($0.0, $0.1, selected: (filter.kind ?? "") == $0.0)
        }
        let modes = [("", "any transfer mode")] + TransferMode.allCases.map { ($0.rawValue, $0.rawValue) }
        let modeOptions = modes.map { option($0.0, $0.1, selected: (filter.mode?.rawValue ?? "") == $0.0) }
        let form: Markup = """
            <form class="filters" method="get" action="/" role="search">
            <input type="search" name="q" value="\(filter.text ?? "")" placeholder="search names and descriptions" aria-label="search">
            <select name="kind" aria-label="kind">\(kinds)</select><select name="mode" aria-label="transfer mode">\(modeOptions)</select>
            <label><input type="checkbox" name="flagged" value="1"\(Markup(raw: filter.flagged ? " checked" : ""))> flagged only</label>
            <button type="submit">Filter</button></form>
            """

        let pages = max(1, (matching.count + pageSize - 1) / pageSize)
        let page = min(filter.page, pages)
        let shown = matching.dropFirst((page - 1) * pageSize).prefix(pageSize)
        let rows = shown.map { entry -> Markup in
            let parent: Markup = entry.parent.map { checkpointLink($0) } ?? "<span class=\"muted\">—</span>"
            return """
                <tr class="\(entry.flagged ? "flagged" : "")" data-model="\(entry.name)"><td>\(modelLink(entry.name))</td>
                <td>\(modeBadge(kind: entry.kind, mode: entry.mode))</td><td>\(parent)</td><td class="num">\(number(entry.checkpoints))</td>
                <td>\(flagMark(entry.advisories))</td><td class="muted">\(entry.description ?? "")</td></tr>
                """
        }
        var pager = Markup.empty
        if pages > 1 {
            let previous: Markup =
                page > 1 ? "<a rel=\"prev\" href=\"\(link("/", filter.parameters(page: page - 1)))\">← previous</a>" : .empty
            let next: Markup = page < pages ? "<a rel=\"next\" href=\"\(link("/", filter.parameters(page: page + 1)))\">next →</a>" : .empty
            pager = "<nav class=\"pager\">\(previous) <span>page \(page) of \(pages)</span> \(next)</nav>"
        }
        let table: Markup =
            matching.isEmpty
            ? "<p class=\"muted\" id=\"no-match\">No model matches.</p>"
            : """
            <table class="models"><thead><tr><th>model</th><th>kind / mode</th><th>parent checkpoint</th><th class="num">checkpoints</th>
            <th>advisories</th><th>description</th></tr></thead><tbody>\(rows)</tbody></table>\(pager)
            """
        return """
            <h1>Models</h1>\(summary)\(form)
            <p class="count" id="count-matching">\(number(matching.count)) of \(number(visible.count)) models match.</p>\(table)
            """
    }
}
