import Foundation
import Graft
import Testing

@testable import GraftServer

@Suite("the web view's parts: escaping, links, login input, charts, the lineage window")
struct WebTests {
    @Test("interpolated text is escaped, markup is not, and nothing is escaped twice")
    func markup() {
        let typed = #"<script>alert("x")</script> & 'quotes'"#
        let cell: Markup = "<td title=\"\(typed)\">\(typed)</td>"
        #expect(
            cell.text
                == """
                <td title=\"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp;\
                 &#39;quotes&#39;\">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quotes&#39;</td>
                """
        )
        let nested: Markup = "<tr>\(cell)</tr>"
        #expect(nested.text == "<tr>" + cell.text + "</tr>", "markup inside markup stays as it is")
        #expect(escapeHTML("plain-name_1.0") == "plain-name_1.0")
        #expect(
            link("/models/x/lineage", [("q", "a b&c=d/é"), ("at", nil), ("m", "val/acc,")])
                == "/models/x/lineage?q=a%20b%26c%3Dd%2F%C3%A9&m=val%2Facc%2C")
        #expect(percentEncode("model@3", keepAt: true) == "model@3" && percentEncode("model@3") == "model%403")
    }

    @Test("after login, only a local path: never another host, a scheme or control characters")
    func nextTarget() {
        #expect(Web.safeNext("/models/a?overlay=1") == "/models/a?overlay=1")
        for hostile in [
            "//evil.example/", "/\\evil.example", "https://evil.example/", "javascript:alert(1)", "models/a", "/a\r\nSet-Cookie: x=1",
            "/a b", nil,
        ] {
            #expect(Web.safeNext(hostile) == "/", "\(String(describing: hostile))")
        }
    }

    @Test("form fields and the session cookie are read exactly")
    func formAndCookie() {
        let fields = Web.form(Array("token=graft_a%2Bb&next=%2Fmodels%2Fx&note=two+words&empty=".utf8))
        #expect(fields == ["token": "graft_a+b", "next": "/models/x", "note": "two words", "empty": ""])
        #expect(Web.form(Array("bad=%ZZ&ok=1".utf8)) == ["ok": "1"], "an undecodable field is left out")
    }

    @Test("a chart has one series per line, thins long curves to their extremes, and pads a flat line")
    func chart() {
        let long = ChartSeries(
            label: "loss", x: (0..<100_000).map(Double.init), y: (0..<100_000).map { $0 == 51_234 ? 99 : Double($0 % 7) })
        let thinned = LineChart.thinned(long)
        #expect(thinned.x.count <= LineChart.maximumPoints && thinned.x == thinned.x.sorted())
        #expect(thinned.y.contains(99) && thinned.y.contains(0), "the spike and the floor survive")
        let short = ChartSeries(label: "acc", x: [1, 2, 3], y: [0.5, 0.5, 0.5])
        let text = LineChart(title: "t", xLabel: "step", series: [long, short, ChartSeries(label: "<b>", x: [1], y: [1])]).markup.text
        #expect(text.components(separatedBy: "<g class=\"series").count - 1 == 3)
        #expect(text.contains("data-series=\"&lt;b&gt;\""))
        #expect(text.components(separatedBy: "<circle").count - 1 == 4, "dots on the short series only (3 + 1)")
        #expect(LineChart.padded(0.5, 0.5) == (0.475, 0.525))
        #expect(LineChart(title: "empty", xLabel: "step", series: []).markup.text.contains("no points"))
        #expect(
            LineChart.ticks(0, 1) == [0, 0.2, 0.4, 0.6000000000000001, 0.8, 1]
                || LineChart.ticks(0, 1).map { ($0 * 10).rounded() } == [0, 2, 4, 6, 8, 10])
        #expect(LineChart.ticks(3.84, 8.16) == [4, 5, 6, 7, 8])
    }

    /// A family as `lineage --json` would give it: `root` with `wide` children, the first of
    /// which has `deep` children; `n0-k0` carries an advisory inherited from `n0`.
    func family(wide: Int, deep: Int) throws -> Web.Family {
        var nodes: [[String: Any]] = []
        for index in 0..<wide {
            nodes.append([
                "name": "n\(index)", "kind": "student", "mode": "partial-finetune", "parent": "root@1", "depth": 1, "checkpoints": 1,
                "advisories": index == 0 ? ["ADV"] : [],
            ])
            if index == 0 {
                for kid in 0..<deep {
                    nodes.append([
                        "name": "n0-k\(kid)", "kind": "student", "mode": "feature-extraction", "parent": "n0@1", "depth": 2,
                        "checkpoints": 1, "advisories": ["ADV"],
                    ])
                }
            }
        }
        let decoder = GraftJSON.decoder()
        let root = try decoder.decode(
            LineageNode.self,
            from: JSONSerialization.data(withJSONObject: ["name": "root", "kind": "base", "depth": 0, "checkpoints": 1, "advisories": []]))
        let below = try decoder.decode([LineageNode].self, from: JSONSerialization.data(withJSONObject: nodes))
        return Web.Family(root: root, descendants: below) { _ in true }
    }

    @Test("a large family is drawn a window at a time: a node budget, a fanout, the page's model always in view, the rest one click away")
    func lineageWindow() throws {
        let family = try family(wide: 120, deep: 400)
        #expect(
            family.size["root"] == 520 && family.size["n0"] == 400 && family.path(from: "root", to: "n0-k399") == ["root", "n0", "n0-k399"])
        let options = try Web.LineageOptions { _ in nil }
        let reached = try GraftJSON.decoder().decode(
            AffectedModel.self,
            from: Data(
                #"""
                {"model": "n0-k399", "checkpoints": ["n0-k399@1"], "advisories": ["ADV"], "path": ["n0@1", "n0-k399"],
                 "exposure": 0, "frozen_depth": 0, "drift": 0.25, "layers": [{"name": "w", "identical": false, "bytes": 4}]}
                """#.utf8))
        let view = Web.LineageView(
            family: family, page: "n0-k399", focus: "root", options: options, best: nil, origins: ["ADV": "n0"],
            exposure: ["ADV": ["n0-k399": reached]])
        let chosen = view.chosen(from: "root")
        #expect(chosen.count <= Web.nodeBudget + 3 && chosen.contains("n0-k399"), "bounded, and the page's model is in view")
        #expect(chosen.filter { family.parent[$0] == "root" }.count == Web.fanout)
        let tree = view.tree().text
        #expect(tree.contains("+ 70 more children (70 models)"), "the root's other children, counted")
        #expect(tree.contains("data-fragment=\"/models/n0-k399/lineage?at=n0&amp;fragment=1\""), "n0's hidden children expand in place")
        #expect(tree.contains("ADV via n0 → n0-k399 · exposure 0.0%, frozen depth 0 of 1, drift 0.250"), "the path, and how much it holds")
        #expect(!tree.contains("safe"))
        let section = Web.advisorySection(
            Advisory(id: "ADV", model: "n0", severity: .high, createdAt: "2026-12-07T00:00:00Z"), reach: [reached]
        ).text
        #expect(section.contains("<td class=\"num exposure\">0.0%</td>") && section.contains("<td class=\"num drift\">0.250</td>"))
        #expect(section.contains("0% is not safe"))
        #expect(tree.components(separatedBy: "<li class=\"node").count - 1 == chosen.count)
        // The fragment for one node: its children only, a window again.
        let fragment = view.subtree("n0").text
        #expect(fragment.hasPrefix("<ul>") && !fragment.contains("data-name=\"n0\""))
        #expect(
            fragment.components(separatedBy: "<li class=\"node").count - 1 == Web.fanout + 1,
            "its first children, and the page's model beyond them")
    }

    @Test("an adapter student is drawn in the lineage graph with its own mode, badge and legend entry")
    func adapterInLineage() throws {
        let decoder = GraftJSON.decoder()
        let root = try decoder.decode(
            LineageNode.self,
            from: JSONSerialization.data(withJSONObject: ["name": "root", "kind": "base", "depth": 0, "checkpoints": 1, "advisories": []]))
        let lora = try decoder.decode(
            [LineageNode].self,
            from: JSONSerialization.data(withJSONObject: [
                [
                    "name": "lora", "kind": "student", "mode": "adapter", "relation": "adapter", "parent": "root@1", "depth": 1,
                    "checkpoints": 2,
                    "advisories": [],
                ]
            ]))
        #expect(lora.first?.mode == .adapter)
        let family = Web.Family(root: root, descendants: lora) { _ in true }
        let view = Web.LineageView(
            family: family, page: "lora", focus: "root", options: try Web.LineageOptions { _ in nil }, best: nil, origins: [:])
        let tree = view.tree().text
        #expect(tree.contains("mode-adapter"), "\(tree)")
        #expect(Web.modeBadge(kind: "student", mode: .adapter).text.contains(">adapter<"))
        #expect(String(decoding: PackageResources.graft_css, as: UTF8.self).contains(".badge.mode-adapter"))
    }

    @Test("a deep model's lineage page opens at its grandparent, a shallow one's at the root")
    func deepFocus() throws {
        let decoder = GraftJSON.decoder()
        let root = try decoder.decode(
            LineageNode.self, from: Data(#"{"name":"base","kind":"base","depth":0,"checkpoints":1,"advisories":[]}"#.utf8))
        let chain: [[String: Any]] = (0..<40).map { depth in
            [
                "name": "c\(depth)", "kind": "student", "parent": depth == 0 ? "base@1" : "c\(depth - 1)@1", "depth": depth + 1,
                "checkpoints": 1, "advisories": [],
            ]
        }
        let family = Web.Family(
            root: root, descendants: try decoder.decode([LineageNode].self, from: JSONSerialization.data(withJSONObject: chain))
        ) { _ in true }
        #expect(Web.defaultFocus(family, page: "c39") == "c37")
        #expect(Web.defaultFocus(family, page: "c5") == "base")
        let options = try Web.LineageOptions { _ in nil }
        let view = Web.LineageView(family: family, page: "c39", focus: "c37", options: options, best: nil, origins: [:])
        #expect(view.tree().text.contains("data-name=\"c39\""))
    }

    @Test("a hidden model (a confined token) is skipped: its children hang from the nearest visible ancestor and its name never shows")
    func hiddenModels() throws {
        let decoder = GraftJSON.decoder()
        let root = try decoder.decode(
            LineageNode.self, from: Data(#"{"name":"team-root","kind":"base","depth":0,"checkpoints":1,"advisories":[]}"#.utf8))
        let below = try decoder.decode(
            [LineageNode].self,
            from: Data(
                #"""
                [{"name":"secret","kind":"student","parent":"team-root@1","depth":1,"checkpoints":1,"advisories":[]},
                 {"name":"team-kid","kind":"student","parent":"secret@1","depth":2,"checkpoints":1,"advisories":[]}]
                """#.utf8))
        let family = Web.Family(root: root, descendants: below) { $0.hasPrefix("team-") }
        #expect(family.parent["team-kid"] == "team-root" && family.nodes["secret"] == nil)
        let options = try Web.LineageOptions { _ in nil }
        let text = Web.LineageView(family: family, page: "team-root", focus: "team-root", options: options, best: nil, origins: [:]).tree()
            .text
        #expect(!text.contains("secret") && text.contains("from a model outside this token's scope"))
    }
}
