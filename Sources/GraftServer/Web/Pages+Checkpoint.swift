import Foundation
import GraftCore
import Hummingbird

// `/checkpoints/REF`: tensors grouped by layer with their manifest state, bytes of its own vs
// shared, a per-layer diff against the parent checkpoint, a download link.
// `/advisories`: open advisories and every model each one reaches, with the path.
extension Web {
    /// Models listed under one advisory; the count says how many more it reaches.
    static let reachLimit = 200

    func registerCheckpoint(on routes: RouteTable) {
        let registry = self.registry
        let api = self.api
        routes.get("/checkpoints/{ref}", .checkpoint(.read)) { request, _, grant in
            let (token, reference) = (grant.token, try grant.checkpoint())
            let detail = try await registry.checkpoint(reference)
            let summary = detail.checkpoint
            let manifest = try await registry.manifest(of: summary.model)
            // What it is compared with: `?against=REF`, else the student's parent checkpoint,
            // else the model's previous checkpoint.
            var against: Reference? = nil
            if let text = query(request, "against"), !text.isEmpty {
                against = try await grant.visible(try Reference(parsing: text))
            } else if let manifest, let parent = try? Reference(parsing: manifest.parent), let model = parent.modelName, token.covers(model)
            {
                against = parent
            } else if summary.number > 1 {
                against = .number(summary.model, summary.number - 1)
            }
            let diff = try await against.asyncMap { (reference) async throws(GraftError) in
                try await registry.diff(reference, summary.reference)
            }
            let body = Self.checkpointBody(detail: detail, manifest: manifest, diff: diff)
            return Self.page(summary.ref, token: token, body: body)
        }
        routes.get("/checkpoints/{ref}/download", .checkpoint(.read)) { request, _, grant in
            try await api.download(try grant.checkpoint(), request: request)
        }
        routes.get("/checkpoints/{ref}/file", .checkpoint(.read)) { request, _, grant in
            try await api.downloadFile(try grant.checkpoint(), request: request)
        }
    }

    static func checkpointBody(detail: CheckpointDetail, manifest: ManifestSummary?, diff: DiffResult?) -> Markup {
        let summary = detail.checkpoint
        let states = Dictionary(manifest?.entries.map { ($0.name, $0.state) } ?? [], uniquingKeysWith: { a, _ in a })
        let status = Dictionary(diff?.tensors.map { ($0.name, $0.status) } ?? [], uniquingKeysWith: { a, _ in a })
        let layerDiff = Dictionary(diff?.layers.map { ($0.layer, $0) } ?? [], uniquingKeysWith: { a, _ in a })
        let tensors = detail.layers.flatMap(\.tensors)
        let own = tensors.filter { status[$0.name] != .same }.reduce(0) { $0 + $1.bytes }
        let shared = tensors.filter { status[$0.name] == .same }.reduce(0) { $0 + $1.bytes }
        let model = summary.model.value
        var out: Markup = """
            <h1>\(model)@\(summary.number)</h1>
            <p class="links">\(modelLink(model)) · <a href="/models/\(percentEncode(model))/lineage">lineage</a> ·
            <a class="download" href="/checkpoints/\(percentEncode(summary.ref, keepAt: true))/download" download>download safetensors\
             (\(formatBytes(summary.fileBytes)))</a></p>
            <dl class="facts"><div><dt>digest</dt><dd><code>\(summary.digest.description)</code></dd></div>
            <div><dt>step</dt><dd>\(summary.step.map(String.init) ?? "—")</dd></div>\
            <div><dt>epoch</dt><dd>\(summary.epoch.map(String.init) ?? "—")</dd></div>
            <div><dt>tensors</dt><dd>\(number(summary.tensorCount))</dd></div>\
            <div><dt>parameters</dt><dd>\(number(summary.parameterCount))</dd></div>
            <div><dt>logical bytes</dt><dd id="logical-bytes">\(number(summary.fileBytes))</dd></div>
            """
        if let diff {
            out += """
                <div><dt>tensor bytes of its own</dt><dd id="own-bytes">\(number(own))</dd></div>
                <div><dt>tensor bytes shared with \(diff.from)</dt><dd id="shared-bytes">\(number(shared))</dd></div>
                """
        }
        out += "<div><dt>created</dt><dd>\(summary.createdAt)</dd></div>"
        if let signature = detail.signature {
            // Verified or not, and by which key: the key hint is what `model_signing` and `graft verify-signature` match.
            let state = signature.verified ? "verified" : "signed, not verified"
            let source = signature.origin == "graft" ? "signed by graft sign" : "came with the directory"
            out += """
                <div><dt>signature</dt><dd id="signature">\(state) · key <code title="\(signature.keyHint ?? "")">\
                \(signature.keyHint.map { String($0.prefix(16)) + "…" } ?? "no hint")</code> · \(number(signature.files)) files · \
                \(source), \(signature.signedAt)</dd></div>
                """
        }
        out += "</dl>"
        if !detail.files.isEmpty {
            out += """
                <h2>Model directory</h2><p>\(number(detail.files.count)) files as imported (the download above is its tensors as one \
                safetensors file).</p><table id="files"><thead><tr><th>file</th><th>kind</th><th class="num">bytes</th><th>content</th>\
                </tr></thead><tbody>
                """
            for file in detail.files {
                let content = file.tensors.map { "\(number($0)) tensors" } ?? file.digest.map { $0.short } ?? ""
                let link = "/checkpoints/\(percentEncode(summary.ref, keepAt: true))/file?path=\(percentEncode(file.path))"
                out += """
                    <tr><td><a class="file" href="\(link)" download><code>\(file.path)</code></a></td><td>\(file.kind)</td>\
                    <td class="num">\(number(file.bytes))</td><td>\(content)</td></tr>
                    """
            }
            out += "</tbody></table>"
        }
        if let diff {
            out +=
                """
                <p id=\"diff-against\">Compared with \(checkpointLink(diff.from)): per layer, <span class=\"same\">same</span> or\
                 <span class=\"changed\">changed</span>.</p>
                """
        } else {
            out += "<p class=\"muted\" id=\"diff-against\">The first checkpoint of a base: nothing to compare with.</p>"
        }
        if !states.isEmpty {
            let counts = Dictionary(grouping: tensors) { states[$0.name] ?? .new }.mapValues(\.count)
            out +=
                "<p>Manifest: "
                + [TensorState.frozen, .trainable, .new].map { state -> Markup in
                    "<span class=\"state state-\(state.rawValue)\">\(state.rawValue) \(counts[state] ?? 0)</span>"
                }.joined(separator: " ") + "</p>"
        }
        var rows = Markup.empty
        for layer in detail.layers {
            var layerStatus = Markup.empty
            if let entry = layerDiff[layer.layer] {
                let changed = entry.changed + entry.added + entry.removed > 0
                layerStatus =
                    changed
                    ? """
                    <span class=\"changed\">changed</span> <span class=\"muted\">(\(entry.changed) changed, \(entry.added) added,\
                     \(entry.same) same)</span>
                    """
                    : "<span class=\"same\">same</span>"
            }
            rows += """
                <tr class="layer" data-layer="\(layer.layer)"><th colspan="4">\(layer.layer)</th><td\
                 class="num">\(number(layer.parameters))</td>
                <td class="num">\(formatBytes(layer.bytes))</td><td>\(layerStatus)</td></tr>
                """
            for tensor in layer.tensors {
                let state: Markup =
                    states.isEmpty
                    ? .empty
                    : """
                    <span class=\"state\
                     state-\((states[tensor.name] ?? .new).rawValue)\">\((states[tensor.name] ?? .new).rawValue)</span>
                    """
                let change: Markup = status[tensor.name].map { "<span class=\"\($0.rawValue)\">\($0.rawValue)</span>" } ?? .empty
                rows += """
                    <tr class="tensor"><td><code>\(tensor.name)</code></td><td>\(tensor.dtype.rawValue)</td>\
                    <td>[\(tensor.shape.map(String.init).joined(separator: ", "))]</td>
                    <td>\(state)</td><td class="num">\(number(tensor.parameters))</td><td\
                     class="num">\(formatBytes(tensor.bytes))</td><td>\(change)</td></tr>
                    """
            }
        }
        out += """
            <table class="tensors"><thead><tr><th>tensor</th><th>dtype</th><th>shape</th><th>manifest</th><th class="num">parameters</th>
            <th class="num">bytes</th><th>vs parent</th></tr></thead><tbody>\(rows)</tbody></table>
            """
        let dropped = manifest?.entries.filter { $0.state == .dropped } ?? []
        if !dropped.isEmpty {
            let items = dropped.map { "<li><code>\($0.name)</code></li>" as Markup }.joined()
            out += "<section><h2>Dropped from the parent</h2><ul class=\"dropped\">\(items)</ul></section>"
        }
        return out
    }

    func registerAdvisories(on routes: RouteTable) {
        let registry = self.registry
        routes.get("/advisories", .scope(.read)) { request, _, grant in
            let token = grant.token
            let all = try flag(request, "all")
            let advisories = try await registry.advisories(includeResolved: all).filter { token.covers(nameOf($0.model)) }
            var sections: [Markup] = []
            for advisory in advisories {
                var reach: [AffectedModel] = []
                if advisory.resolvedAt == nil {
                    let reference = try Reference(parsing: advisory.checkpoint ?? advisory.model)
                    reach = try await registry.affected(reference, exposure: .digests).filter {
                        $0.advisories.contains(advisory.id) && token.covers(nameOf($0.model))
                    }
                }
                sections.append(Self.advisorySection(advisory, reach: reach))
            }
            let toggle: Markup = all ? "<a href=\"/advisories\">open ones only</a>" : "<a href=\"/advisories?all=1\">resolved ones too</a>"
            let list = sections.isEmpty ? Markup("<p class=\"muted\">No open advisory.</p>") : sections.joined()
            return Self.page("Advisories", token: token, body: "<h1>Advisories</h1><p class=\"links\">\(toggle)</p>\(list)")
        }
    }

    static func advisorySection(_ advisory: Advisory, reach: [AffectedModel]) -> Markup {
        let target = advisory.checkpoint.map { checkpointLink($0) } ?? modelLink(advisory.model)
        var url = Markup.empty
        if let text = advisory.url {
            // Only web links become links: a `javascript:` URL stays text.
            url =
                text.hasPrefix("https://") || text.hasPrefix("http://")
                ? " · <a href=\"\(text)\" rel=\"noopener noreferrer\">\(text)</a>" : " · \(text)"
        }
        let state: Markup =
            advisory.resolvedAt.map { "<span class=\"muted\">resolved \($0)</span>" } ?? "<span class=\"flag\">⚑ open</span>"
        let rows = reach.prefix(reachLimit).map { model -> Markup in
            let path = model.path.map { "\($0)" as Markup }.joined(separator: " → ")
            return
                """
                <tr data-model=\"\(model.model)\"><td>\(modelLink(model.model))</td><td\
                 class=\"num\">\(model.checkpoints.count)</td><td class=\"num exposure\">\(percentText(model.exposure))</td><td\
                 class=\"num\">\(depthText(model))</td><td class=\"num drift\">\(driftText(model.drift))</td><td\
                 class=\"path\">\(path)</td></tr>
                """
        }.joined()
        let more: Markup = reach.count > reachLimit ? "<p class=\"muted\">The first \(reachLimit) of \(number(reach.count)).</p>" : .empty
        let reached: Markup =
            advisory.resolvedAt != nil
            ? .empty
            : reach.isEmpty
                ? "<p class=\"muted\">It reaches no descendant.</p>"
                : """
                <p>Reaches <b class="reach-count">\(number(reach.count))</b> \(reach.count == 1 ? "model" : "models") below it:</p>
                <table class="reach"><thead><tr><th>model</th><th class="num">checkpoints</th><th class="num"\
                 title="share of the flagged checkpoint's bytes held unchanged">exposure</th><th class="num">frozen depth</th><th\
                 class="num" title="relative L2 distance of what changed; – until measured">drift</th><th>path of\
                 inheritance</th></tr></thead><tbody>\(rows)</tbody></table>\(more)<p class="muted">Exposure is the share of the\
                 flagged checkpoint's bytes a model still holds unchanged; 0% is not safe (a full fine-tune starts from\
                 them). Drift shows once measured (<code>graft affected</code> or <code>graft exposure</code>).</p>
                """
        return """
            <section class="advisory severity-\(advisory.severity.rawValue)" id="\(advisory.id)"><h2>\(advisory.id) <span\
             class="badge">\(advisory.severity.rawValue)</span> \(state)</h2>
            <p>On \(target), since \(advisory.createdAt). \(advisory.note ?? "")\(url)</p>\(reached)</section>
            """
    }
}

func percentText(_ value: Double?) -> String { value.map { String(format: "%.1f%%", $0 * 100) } ?? "–" }
func driftText(_ value: Double?) -> String { value.map { String(format: "%.3f", $0) } ?? "–" }
func depthText(_ model: AffectedModel) -> String {
    guard let depth = model.frozenDepth, let layers = model.layers else { return "–" }
    return "\(depth) of \(layers.count)"
}

extension Web {
    /// An affected model's exposure in one phrase, for the lineage page.
    static func exposureText(_ model: AffectedModel) -> String {
        guard let exposure = model.exposure else { return "" }
        return "exposure \(percentText(exposure)), frozen depth \(depthText(model)), drift \(driftText(model.drift))"
    }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws(GraftError) -> T) async throws(GraftError) -> T? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
