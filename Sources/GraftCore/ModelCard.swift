import Yams

/// Fields Graft reads from a Hugging Face model card's YAML front matter.
public struct CardFields: Sendable, Equatable {
    public var license: String?
    public var datasets: [String]
    /// `pipeline_tag`, used as the task.
    public var task: String?
    public var baseModel: String?

    public init(license: String? = nil, datasets: [String] = [], task: String? = nil, baseModel: String? = nil) {
        self.license = license
        self.datasets = datasets
        self.task = task
        self.baseModel = baseModel
    }
}

/// Hugging Face model cards: YAML front matter between `---` lines at the top of README.md.
public enum ModelCard {
    /// Reads the front matter of a model card.
    ///
    /// - Throws: ``GraftError/invalidCard(_:)`` when there is no front matter or it is not YAML.
    public static func parse(_ markdown: String) throws(GraftError) -> CardFields {
        let lines = markdown.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        guard lines.first?.trimmingCharacters(in: .whitespaces) == "---",
            let end = lines.dropFirst().firstIndex(where: { $0.trimmingCharacters(in: .whitespaces) == "---" })
        else { throw .invalidCard("no YAML front matter (a block between `---` lines at the top of the file)") }
        let yaml = lines[1..<end].joined(separator: "\n")
        let node: Node?
        do { node = try Yams.compose(yaml: yaml) } catch { throw .invalidCard("the front matter is not valid YAML: \(error)") }
        guard let mapping = node?.mapping else { throw .invalidCard("the front matter is not a YAML mapping") }
        func string(_ key: String) -> String? { mapping[key]?.string }
        let datasets: [String] =
            mapping["datasets"].map { value in
                if let sequence = value.sequence { return sequence.compactMap(\.string) }
                return value.string.map { [$0] } ?? []
            } ?? []
        return CardFields(license: string("license"), datasets: datasets, task: string("pipeline_tag"), baseModel: string("base_model"))
    }
}

extension Registry {
    /// `ORG/NAME` of a Hub source (`hf://ORG/NAME@REVISION`, `https://huggingface.co/ORG/NAME…`), else `nil`.
    static func hubRepository(_ source: String?) -> String? {
        guard let source else { return nil }
        let rest: Substring
        if source.hasPrefix("hf://") {
            rest = source.dropFirst("hf://".count)
        } else if source.hasPrefix("https://huggingface.co/") {
            rest = source.dropFirst("https://huggingface.co/".count)
        } else {
            return nil
        }
        let path = rest.split(separator: "@").first.map { $0.split(separator: "/") } ?? []
        guard path.count >= 2, path.prefix(2).allSatisfy({ !$0.isEmpty && !$0.contains(":") }) else { return nil }
        return path.prefix(2).joined(separator: "/")
    }

    /// The checkpoint a card reports: the model's best by the metric most of its checkpoints
    /// record (ties to the name first in byte order; direction inferred from the name), with
    /// that checkpoint's evaluations; `nil` when none has metrics.
    func cardCheckpoint(_ detail: ModelDetail) async throws(GraftError) -> MetricsReport.Entry? {
        guard !detail.checkpoints.isEmpty else { return nil }
        let report = try await metrics(.model(detail.model.name))
        // Keyed "split\u{0}name", so that the byte order puts metrics without a split first.
        var counts: [String: (name: String, split: String?, count: Int)] = [:]
        for entry in report.checkpoints {
            for metric in entry.metrics {
                let key = (metric.split ?? "") + "\u{0}" + metric.name
                counts[key, default: (metric.name, metric.split, 0)].count += 1
            }
        }
        let ranked = counts.sorted { a, b in
            a.value.count != b.value.count ? a.value.count > b.value.count : a.key.utf8.lexicographicallyPrecedes(b.key.utf8)
        }
        guard let (metric, split, _) = ranked.first?.value else { return nil }
        let best = try await self.best(metric: metric, split: split, scope: .model(detail.model.name), includeFlagged: true)
        return report.checkpoints.first { $0.checkpoint == best.checkpoint.ref }
    }

    /// Hugging Face model-card front matter (YAML, between `---` lines) for a model: its parent
    /// as `base_model` and `base_model_relation`, the license and datasets (a student inherits
    /// its root base's; a student's datasets and task are only its own), and the evaluations of
    /// its best checkpoint (``cardCheckpoint(_:)``) in `model-index` form.
    public func card(_ name: ModelName) async throws(GraftError) -> String {
        let detail = try await model(name)
        let lineage = try await lineage(name, parts: .ancestors)
        let root = lineage.ancestors.last?.name ?? name.value
        let rootProvenance = root == name.value ? detail.model.provenance : try await model(ModelName(trusted: root)).model.provenance
        let provenance = detail.model.provenance
        let isStudent = detail.manifest != nil
        let shown = try await cardCheckpoint(detail)
        let metrics =
            shown.map { MetricsReport(checkpoints: [$0], curves: []) } ?? MetricsReport(checkpoints: [], curves: [])
        var pairs: [(Node, Node)] = []
        func add(_ key: String, _ value: Node) { pairs.append((Node(key), value)) }
        if let parent = detail.manifest?.parent, let relation = detail.manifest?.relation {
            let parentName = String(parent[..<parent.lastIndex(of: "@")!])
            // A base from the Hub is named as the Hub names it, so the card links to it there.
            let hub = Self.hubRepository(try await model(ModelName(trusted: parentName)).model.provenance.source)
            add("base_model", Node(hub ?? parentName))
            // The Hub knows adapter, merge, quantized and finetune; a distillation is a fine-tune of the teacher.
            add("base_model_relation", Node(relation == .distillation ? "finetune" : relation.rawValue))
        }
        if let license = provenance.license ?? rootProvenance.license { add("license", Node(license)) }
        // Datasets and the task are a model's own: a classifier is not its base's feature extractor,
        // nor trained on its base's pretraining corpus.
        if let dataset = provenance.dataset ?? (isStudent ? nil : rootProvenance.dataset) { add("datasets", Node([Node(dataset)])) }
        if let task = provenance.task ?? (isStudent ? nil : rootProvenance.task) { add("pipeline_tag", Node(task)) }
        var tags = [Node("graft")]
        if let mode = detail.manifest?.mode { tags.append(Node(mode.rawValue)) }
        add("tags", Node(tags))
        let evaluations = metrics.checkpoints.last?.metrics ?? []
        if !evaluations.isEmpty {
            let bySplit = Dictionary(grouping: evaluations) { $0.split ?? "evaluation" }
            let results: [Node] = bySplit.keys.sorted().map { split in
                Node([
                    (Node("task"), Node([(Node("type"), Node(provenance.task ?? (isStudent ? nil : rootProvenance.task) ?? "other"))])),
                    (
                        Node("dataset"),
                        Node([(Node("name"), Node(split)), (Node("type"), Node(provenance.dataset ?? split))])
                    ),
                    (
                        Node("metrics"),
                        Node(
                            bySplit[split]!.map { metric in
                                Node([(Node("type"), Node(metric.name)), (Node("value"), Node(String(metric.value), Tag(.float)))])
                            })
                    ),
                ])
            }
            add("model-index", Node([Node([(Node("name"), Node(name.value)), (Node("results"), Node(results))])]))
            if let shown { add("graft_checkpoint", Node(shown.checkpoint)) }
        }
        do {
            return "---\n" + (try Yams.serialize(node: Node(pairs))) + "---\n"
        } catch {
            throw .invalidCard("cannot write YAML: \(error)")
        }
    }
}
