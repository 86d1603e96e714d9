import Foundation
import GraftCore
import Hummingbird

// `/models/NAME/lineage`: the family from its root base. Each edge names its exact parent
// checkpoint; nodes are coloured by transfer mode; a flagged model shows the path its advisory
// came down; the best checkpoint of the family (for a chosen metric) is highlighted.
//
// A family of any size: the page draws at most `nodeBudget` nodes — breadth first from the
// node in focus (`?at=`), to `depth` levels, `fanout` children per node — and every node with
// more below it offers to expand (a link that refocuses; `graft.js` fetches the same subtree
// as a fragment and inserts it in place). `?q=` searches the whole family by name.
extension Web {
    static let nodeBudget = 300
    static let fanout = 50
    static let searchLimit = 50

    /// The metric a family is ranked by unless one is chosen: a validation accuracy if there is
    /// one, else any accuracy, else the first recorded.
    static func defaultMetric(_ keys: [MetricKey]) -> MetricKey? {
        func validation(_ key: MetricKey) -> Bool {
            key.split == "val" || key.split == "validation" || key.name.lowercased().hasPrefix("val")
        }
        func accuracy(_ key: MetricKey) -> Bool { key.name.lowercased().contains("acc") }
        return keys.first { validation($0) && accuracy($0) } ?? keys.first(where: accuracy) ?? keys.first
    }

    /// Where a lineage page looks without `at`: the root, unless the page's model lies deep
    /// below it (a long chain), then its grandparent — the model in view, with its context.
    static func defaultFocus(_ family: Family, page: String) -> String {
        guard let path = family.path(from: family.root, to: page), path.count > 32 else { return family.root }
        return path[path.count - 3]
    }

    struct LineageOptions {
        var at: String?
        var search: String?
        var metric: MetricKey?
        var depth: Int
        var fragment: Bool

        init(_ request: Request) throws(GraftError) {
            try self.init { query(request, $0) }
        }

        /// From the query parameters `value(NAME)` gives.
        init(_ value: (String) -> String?) throws(GraftError) {
            at = value("at").flatMap { $0.isEmpty ? nil : $0 }
            if let at { _ = try ModelName(at) }
            search = searchText(value("q"))
            if let text = value("m"), !text.isEmpty {
                let parts = text.split(separator: ",", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                try MetricAssignment.checkName(parts[0])
                let split = parts.count > 1 && !parts[1].isEmpty ? parts[1] : nil
                if let split { try MetricAssignment.checkName(split) }
                metric = MetricKey(name: parts[0], split: split)
            }
            guard let depth = Int(value("depth") ?? "3"), (1...8).contains(depth) else { throw .badRequest("depth must be 1 to 8") }
            self.depth = depth
            fragment = try flag("fragment", value("fragment"))
        }

        func parameters(at: String?) -> [(String, String?)] {
            [("at", at), ("m", metric.map { $0.name + "," + ($0.split ?? "") }), ("depth", depth == 3 ? nil : String(depth))]
        }
    }

    /// A family in memory: nodes by name, children in the report's order, subtree sizes.
    struct Family {
        var nodes: [String: LineageNode] = [:]
        var children: [String: [String]] = [:]
        /// The nearest visible ancestor (a model hidden from a confined token is skipped).
        var parent: [String: String] = [:]
        var size: [String: Int] = [:]
        var order: [String] = []
        let root: String

        init(root: LineageNode, descendants: [LineageNode], visible: (String) -> Bool) {
            self.root = root.name
            nodes[root.name] = root
            order.append(root.name)
            var up: [String: String] = [:]
            for node in descendants {
                if let parent = node.parentReference?.modelName?.value { up[node.name] = parent }
            }
            for node in descendants where visible(node.name) {
                var above = up[node.name]
                while let candidate = above, candidate != root.name, !visible(candidate) { above = up[candidate] }
                guard let above else { continue }
                nodes[node.name] = node
                parent[node.name] = above
                children[above, default: []].append(node.name)
                order.append(node.name)
            }
            for name in order.reversed() {
                size[name, default: 0] += 0
                if let above = parent[name] { size[above, default: 0] += 1 + size[name]! }
            }
        }

        /// Names from `top` down to `name` (nil when `name` is not under `top`).
        func path(from top: String, to name: String) -> [String]? {
            var names = [name]
            var current = name
            while current != top {
                guard let above = parent[current] else { return nil }
                names.append(above)
                current = above
            }
            return names.reversed()
        }
    }

    func registerLineage(on routes: RouteTable) {
        let registry = self.registry
        let api = self.api
        routes.get("/models/{name}/lineage", .model(.read)) { request, context, grant in
            let (name, token) = (try modelName(context), grant.token)
            let options = try LineageOptions(request)
            // The root: the topmost ancestor the token sees without a gap.
            var root = name
            for ancestor in try await registry.lineage(name, parts: .ancestors).ancestors {
                guard token.covers(nameOf(ancestor.name)) else { break }
                root = nameOf(ancestor.name)
            }
            let keys = try await registry.metricKeys(under: root, visibility: token.visibility)
            let metric = options.metric ?? Self.defaultMetric(keys)
            let report = try await registry.lineage(root, metric: metric?.name, direction: nil, parts: .descendants)
            let family = Family(root: report.model, descendants: report.descendants) { token.covers(nameOf($0)) }
            let focus = options.at ?? Self.defaultFocus(family, page: name.value)
            guard family.nodes[focus] != nil else {
                throw GraftError.badRequest("\(quotedParameter(focus)) is not in the family of \(root.value)")
            }
            var best: BestResult? = nil
            var bestNote: String? = nil
            if let metric {
                do {
                    best = try await api.best(
                        metric: metric.name, direction: nil, split: metric.split, scope: .under(root), includeFlagged: false, token: token)
                } catch let error as GraftError {
                    switch error {
                    case .unknownMetric, .allCandidatesFlagged: bestNote = error.description
                    default: throw error
                    }
                }
            }
            let open = try await registry.advisories(includeResolved: false)
            let origins = Dictionary(open.map { ($0.id, $0.model) }, uniquingKeysWith: { a, _ in a })
            // How much of each advisory's flagged checkpoint each descendant in this family holds
            // (digests, and drift where cached): one `affected` per advisory raised inside the family.
            var exposure: [String: [String: AffectedModel]] = [:]
            for advisory in open where family.nodes[advisory.model] != nil {
                let reference = try Reference(parsing: advisory.checkpoint ?? advisory.model)
                let reached = try await registry.affected(reference, exposure: .digests).filter { $0.advisories.contains(advisory.id) }
                exposure[advisory.id] = Dictionary(reached.map { ($0.model, $0) }, uniquingKeysWith: { a, _ in a })
            }
            let view = LineageView(
                family: family, page: name.value, focus: focus, options: options, best: best, origins: origins, exposure: exposure)
            if options.fragment { return Self.htmlResponse(view.subtree(focus)) }
            return Self.page(
                "\(name.value) · lineage", token: token,
                body: view.body(keys: keys, metric: metric, direction: report.direction, bestNote: bestNote))
        }
    }

    struct LineageView {
        let family: Family
        let page: String
        let focus: String
        let options: LineageOptions
        let best: BestResult?
        /// Each open advisory's model.
        let origins: [String: String]
        /// Each open advisory's reach in the family, with exposure, by model.
        var exposure: [String: [String: AffectedModel]] = [:]

        var base: String { "/models/\(percentEncode(page))/lineage" }

        func focusLink(_ name: String) -> String { link(base, options.parameters(at: name == family.root ? nil : name)) }

        func body(keys: [MetricKey], metric: MetricKey?, direction: Direction?, bestNote: String?) -> Markup {
            let total = family.size[family.root] ?? 0
            var out: Markup = """
                <h1>Lineage of \(modelLink(page))</h1>
                <p class="muted">Family of \(modelLink(family.root)): \(number(total)) descendants. Each edge names the exact parent\
                 checkpoint.</p>
                """
            // Controls: metric, depth, search (a GET form: the page works without script).
            let metricOptions = keys.map { key -> Markup in
                let value = key.name + "," + (key.split ?? "")
                let label = key.name + (key.split.map { " [\($0)]" } ?? "")
                return "<option value=\"\(value)\"\(Markup(raw: key == metric ? " selected" : ""))>\(label)</option>"
            }.joined()
            let depthOptions = (1...8).map { "<option\(Markup(raw: $0 == options.depth ? " selected" : ""))>\($0)</option>" as Markup }
                .joined()
            let hiddenAt: Markup = focus == family.root ? .empty : "<input type=\"hidden\" name=\"at\" value=\"\(focus)\">"
            out += """
                <form class="filters" method="get" action="\(base)">\(hiddenAt)
                <label>best by <select name="m" aria-label="metric">\(metricOptions)</select></label>
                <label>depth <select name="depth">\(depthOptions)</select></label>
                <input type="search" name="q" value="\(options.search ?? "")" placeholder="find a model in this family"\
                 aria-label="search the family">
                <button type="submit">Show</button></form>
                """
            out += legend
            if let best {
                let dir = direction.map { " (\($0.rawValue))" } ?? ""
                out += """
                    <p class="best-summary" id="best">Best \(best.metric)\(best.split.map { " [\($0)]" } ?? "")\(dir):
                    \(checkpointLink(best.checkpoint.ref)) = \(formatted(best.value)) among \(number(best.candidates))\
                     checkpoints\(best.excludedFlagged > 0 ? ", \(best.excludedFlagged) flagged left out" : "").</p>
                    """
            } else if let bestNote {
                out += "<p class=\"muted\" id=\"best\">\(bestNote)</p>"
            }
            if let search = options.search { out += searchResults(search) }
            // Where the focus lies, from the root.
            if focus != family.root, let path = family.path(from: family.root, to: focus) {
                out += "<nav class=\"crumbs\" aria-label=\"path from the root\">\(crumbs(path))</nav>"
            }
            out += "<div class=\"lineage\">\(tree())</div>"
            return out
        }

        func formatted(_ value: Double) -> String { Web.metric(value) }

        var legend: Markup {
            let modes = ["base"] + TransferMode.allCases.map(\.rawValue)
            let items = modes.map { "<li><span class=\"swatch mode-\($0)\"></span>\($0)</li>" as Markup }.joined()
            return
                """
                <ul class=\"legend modes\">\(items)<li><span class=\"flag\">⚑</span> flagged</li><li><span class=\"swatch\
                 best\"></span> best</li></ul>
                """
        }

        /// A path as links to each node's focus; a long one keeps its two first and three last names.
        func crumbs(_ path: [String]) -> Markup {
            var parts: [Markup] = []
            for (index, name) in path.enumerated() {
                if path.count > 8, index >= 2, index < path.count - 3 {
                    if index == 2 { parts.append("<span class=\"muted\">… \(path.count - 5) more …</span>") }
                    continue
                }
                parts.append("<a href=\"\(focusLink(name))\">\(name)</a>")
            }
            return parts.joined(separator: " › ")
        }

        func searchResults(_ text: String) -> Markup {
            let found = family.order.filter { $0.range(of: text, options: .caseInsensitive) != nil }
            let items = found.prefix(searchLimit).map { name -> Markup in
                let path = family.path(from: family.root, to: name) ?? [name]
                return
                    """
                    <li>\(modelLink(name)) <a class=\"focus\" href=\"\(focusLink(name))\">show in the tree</a> <span\
                     class=\"muted\">\(crumbs(path))</span></li>
                    """
            }.joined()
            let more: Markup =
                found.count > searchLimit ? "<p class=\"muted\">The first \(searchLimit) of \(number(found.count)).</p>" : .empty
            return
                """
                <section class=\"search\" id=\"search-results\"><h2>Models matching “\(text)”:\
                 \(number(found.count))</h2><ul>\(items)</ul>\(more)</section>
                """
        }

        /// The nodes drawn: breadth first from `top`, to `options.depth` levels and `fanout`
        /// children a node, within `nodeBudget`; plus the way down to the page's model and to
        /// the best checkpoint's model, so both are always in view.
        func chosen(from top: String) -> Set<String> {
            var chosen: Set<String> = [top]
            var level = [top]
            for _ in 0..<options.depth {
                var next: [String] = []
                for name in level {
                    for child in (family.children[name] ?? []).prefix(fanout) where chosen.count < nodeBudget {
                        chosen.insert(child)
                        next.append(child)
                    }
                }
                level = next
            }
            for target in [page, best.map { $0.checkpoint.model.value }].compactMap({ $0 }) {
                if let path = family.path(from: top, to: target), path.count <= 64 { chosen.formUnion(path) }
            }
            return chosen
        }

        func tree() -> Markup {
            let shown = chosen(from: focus)
            return "<ul class=\"tree\" data-nodes=\"\(shown.count)\">\(node(focus, shown: shown))</ul>"
        }

        /// The children of `name` as a fragment (what `graft.js` inserts when a node expands).
        func subtree(_ name: String) -> Markup {
            let shown = chosen(from: name)
            return children(name, shown: shown)
        }

        func children(_ name: String, shown: Set<String>) -> Markup {
            let all = family.children[name] ?? []
            let drawn = all.filter(shown.contains)
            var out = Markup.empty
            for child in drawn { out += node(child, shown: shown) }
            let hidden = all.count - drawn.count
            if hidden > 0 {
                let below = all.filter { !shown.contains($0) }.reduce(0) { $0 + 1 + (family.size[$1] ?? 0) }
                out += """
                    <li class="more"><a class="expand" href="\(focusLink(name))"\
                     data-fragment="\(link(base, options.parameters(at: name) + [("fragment", "1")]))">+ \(number(hidden)) more\
                     \(hidden == 1 ? "child" : "children") (\(number(below)) models)</a></li>
                    """
            }
            return out.text.isEmpty ? .empty : "<ul>\(out)</ul>"
        }

        func node(_ name: String, shown: Set<String>) -> Markup {
            guard let node = family.nodes[name] else { return .empty }
            var classes = ["node", "mode-\(node.mode?.rawValue ?? node.kind)"]
            let flags = node.advisories
            if !flags.isEmpty { classes.append("flagged") }
            if name == page { classes.append("current") }
            let isBest = best?.checkpoint.model.value == name
            if isBest { classes.append("best") }
            var edge = Markup.empty
            if let parent = node.parent, name != family.root {
                if family.parent[name] == nodeParentName(node) {
                    edge = "<span class=\"edge\">from \(checkpointLink(parent))\(node.relation.map { " · \($0.rawValue)" } ?? "")</span>"
                } else {
                    edge = "<span class=\"edge muted\">from a model outside this token's scope</span>"
                }
            }
            var facts: [Markup] = ["<span class=\"muted\">\(number(node.checkpoints)) ckpt</span>"]
            if let value = node.best { facts.append("<span class=\"value\">\(formatted(value))</span>") }
            if isBest, let best { facts.append("<span class=\"best-mark\">★ best: \(checkpointLink(best.checkpoint.ref))</span>") }
            var flagMarkup = Markup.empty
            if !flags.isEmpty {
                let items = flags.map { label -> Markup in
                    if label.contains("@") { return "<li>\(label): this checkpoint is flagged</li>" }
                    guard let origin = origins[label] else { return "<li>\(label)</li>" }
                    if origin == name { return "<li>\(label) (on this model)</li>" }
                    let path = family.path(from: origin, to: name) ?? [origin, name]
                    let held = exposure[label]?[name].map { " · " + Web.exposureText($0) } ?? ""
                    return "<li>\(label) via \(path.map { Markup("\($0)") }.joined(separator: " → "))\(held)</li>"
                }.joined()
                flagMarkup = "<span class=\"flag\">⚑</span><ul class=\"inheritance\">\(items)</ul>"
            }
            let below = family.size[name] ?? 0
            let count: Markup = below > 0 ? "<span class=\"muted\">\(number(below)) below</span>" : .empty
            let focusMarkup: Markup =
                name == focus ? .empty : "<a class=\"focus\" href=\"\(focusLink(name))\" title=\"focus on this subtree\">⤢</a>"
            return """
                <li class="\(classes.joined(separator: " "))" data-name="\(name)"><div class="box">\(edge)<a class="name"\
                 href="/models/\(percentEncode(name))">\(name)</a>
                \(modeBadge(kind: node.kind, mode: node.mode)) \(facts.joined(separator: " ")) \(count)\
                 \(focusMarkup)\(flagMarkup)</div>\(children(name, shown: shown))</li>
                """
        }

        func nodeParentName(_ node: LineageNode) -> String? { node.parentReference?.modelName?.value }
    }
}
