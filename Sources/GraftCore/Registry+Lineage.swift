/// Which way a metric improves.
public enum Direction: String, Sendable, Codable {
    case max, min

    /// The words of a metric name that mean lower is better: losses, errors and their rates,
    /// perplexities, distances and latencies.
    public static let minimisingWords: Set<String> = [
        "loss", "error", "err", "perplexity", "ppl", "mse", "mae", "rmse", "wer", "cer", "nll", "bpc", "fid", "latency",
    ]

    /// The direction a metric's name implies: `.min` when one of its words is in
    /// ``minimisingWords``, else `.max`.
    ///
    /// The name is split into words at `/`, `_`, `-`, `.`, spaces and lower-to-upper case changes,
    /// and whole words are compared case-insensitively, so `val/loss` and `evalLoss` minimise
    /// while `answer_accuracy` (which contains "wer") and `cancer_auc` (which contains "cer")
    /// maximise.
    public static func inferred(for metric: String) -> Direction {
        words(of: metric).contains { minimisingWords.contains($0) } ? .min : .max
    }

    /// A metric name's words, lowercased (see ``inferred(for:)``).
    static func words(of metric: String) -> [String] {
        var words: [String] = []
        var current = ""
        var previousWasLower = false
        for character in metric {
            if character == "/" || character == "_" || character == "-" || character == "." || character.isWhitespace {
                if !current.isEmpty { words.append(current) }
                current = ""
                previousWasLower = false
                continue
            }
            if character.isUppercase, previousWasLower, !current.isEmpty {
                words.append(current)
                current = ""
            }
            current += character.lowercased()
            previousWasLower = character.isLowercase
        }
        if !current.isEmpty { words.append(current) }
        return words
    }
}

/// A model in a lineage view.
public struct LineageNode: Sendable, Codable, Equatable {
    public var name: String
    public var kind: String
    public var mode: TransferMode?
    /// How it derives from its parent (absent for a base).
    public var relation: Relation?
    /// The exact parent checkpoint, `NAME@N` (absent for a base).
    public var parent: String?
    /// Distance from the model asked about (ancestors count up, descendants down).
    public var depth: Int
    public var checkpoints: Int
    /// Open advisories this model carries or inherits; `ID@N` marks one on its own checkpoint N.
    public var advisories: [String]
    /// With a metric: the model's best value of it.
    public var best: Double?

    /// The parent checkpoint as a typed reference, to pass back to the registry.
    public var parentReference: Reference? { parent.flatMap { try? Reference(parsing: $0) } }
}

/// The chain up to the root base and the tree below a model.
public struct LineageReport: Sendable, Codable, Equatable {
    public var model: LineageNode
    /// Nearest first, ending at the root base.
    public var ancestors: [LineageNode]
    /// Depth-first, parents before children.
    public var descendants: [LineageNode]
    public var metric: String?
    public var direction: Direction?
}

/// The best checkpoint for a metric, and how it was chosen.
public struct BestResult: Sendable, Codable, Equatable {
    public var checkpoint: CheckpointSummary
    public var metric: String
    public var split: String?
    public var value: Double
    public var direction: Direction
    /// Whether the direction came from the metric's name.
    public var directionInferred: Bool
    /// Checkpoints in scope that have the metric.
    public var candidates: Int
    /// Candidates left out for an open advisory on them or an ancestor.
    public var excludedFlagged: Int
}

/// Where `best` looks.
public enum BestScope: Sendable, Equatable {
    /// Every checkpoint in the registry.
    case all
    /// One model's checkpoints.
    case model(ModelName)
    /// A model's checkpoints and those of every descendant, any depth.
    case under(ModelName)
}

extension Registry {
    /// The best checkpoint by `metric` (and `split`) in `scope`.
    ///
    /// Checkpoints without the metric are not candidates. Ties go to the earliest: by model
    /// name, then checkpoint number. Checkpoints with an open advisory on them, their model or
    /// any ancestor are left out unless `includeFlagged`. Models `visibility` hides are as if
    /// they did not exist: never candidates, never counted, and no metric name of theirs is
    /// suggested (a confined token's `best` is this same call).
    ///
    /// - Throws: ``GraftError/unknownMetric(_:known:)`` when no candidate has the metric.
    public func best(
        metric: String, direction: Direction? = nil, split: String? = nil, scope: BestScope = .all, includeFlagged: Bool = false,
        visibility: ModelVisibility = .all
    ) async throws(GraftError) -> BestResult {
        try MetricAssignment.checkName(metric)
        if let split { try MetricAssignment.checkName(split) }
        switch scope {
        case .model(let name), .under(let name):
            if !visibility.shows(name.value) { throw .modelNotFound(name, suggestions: []) }
        case .all: break
        }
        let chosen = direction ?? Direction.inferred(for: metric)
        let query = BestQuery(
            metric: metric, split: split, scope: scope, direction: chosen, includeFlagged: includeFlagged, visibility: visibility)
        guard let outcome = try await metadata.best(query) else {
            // Only a scope that names a model can miss it.
            switch scope {
            case .model(let name), .under(let name):
                throw visibility.showsAll ? try await notFound(name) : .modelNotFound(name, suggestions: [])
            case .all: throw .unknownMetric(metric, known: [])
            }
        }
        switch outcome {
        case .noCandidates(let known):
            // Metric names in use may be a hidden model's: suggested only to who sees everything.
            throw .unknownMetric(metric + (split.map { " (split \($0))" } ?? ""), known: visibility.showsAll ? known : [])
        case .allFlagged(let candidates):
            throw .allCandidatesFlagged(metric: metric, candidates: candidates)
        case .found(let winner, let candidates, let excluded):
            return BestResult(
                checkpoint: winner.checkpoint, metric: metric, split: split, value: winner.value, direction: chosen,
                directionInferred: direction == nil, candidates: candidates, excludedFlagged: excluded)
        }
    }

    /// ``RegistryAPI``'s `best`: every model visible.
    public func best(metric: String, direction: Direction?, split: String?, scope: BestScope, includeFlagged: Bool) async throws(GraftError)
        -> BestResult
    {
        try await best(metric: metric, direction: direction, split: split, scope: scope, includeFlagged: includeFlagged, visibility: .all)
    }

    /// Which parts of a lineage to read.
    public enum LineageParts: Sendable {
        case both, ancestors, descendants
    }

    /// The ancestors (up to the root base) and descendants (any depth) of a model; with
    /// `parts`, only one of them (the other is left empty and not read).
    public func lineage(
        _ name: ModelName, metric: String? = nil, direction: Direction? = nil, parts: LineageParts = .both
    ) async throws(GraftError) -> LineageReport {
        guard let id = try await modelID(name) else { throw try await notFound(name) }
        if let metric { try MetricAssignment.checkName(metric) }
        let chosen = metric.map { direction ?? Direction.inferred(for: $0) }
        let snapshot = try await metadata.lineage(model: id, parts: parts, metric: metric, direction: chosen)
        let (up, open) = (snapshot.up, snapshot.open)
        guard !up.isEmpty else { throw try await notFound(name) }
        var down = snapshot.down
        // Flags for the model and the tree below (from the rows), and for the chain above
        // (each ancestor inherits from the ones above it).
        var flags = AdvisoryInheritance.propagate(
            down, root: id, inherited: AdvisoryInheritance.inherited(chain: up, open: open), open: open)
        for (model, inherited) in AdvisoryInheritance.ancestorFlags(chain: up, open: open) { flags[model] = inherited }
        var names: [Int64: String] = [id: name.value]
        for row in down { names[row.id] = row.name }
        for index in down.indices { down[index].parentName = down[index].link.flatMap { names[$0] } }
        func node(_ row: LineageRow, depth: Int) -> LineageNode {
            LineageNode(
                name: row.name, kind: row.kind, mode: row.mode.flatMap(TransferMode.init(rawValue:)),
                relation: row.relation.flatMap(Relation.init(rawValue:)),
                parent: row.parentName.map { "\($0)@\(row.parentNumber ?? 0)" }, depth: depth, checkpoints: row.checkpoints,
                advisories: (flags[row.id] ?? []).sorted() + (snapshot.checkpointLabels[row.id] ?? []).sorted(), best: snapshot.best[row.id]
            )
        }
        // Depth-first order of the tree, children by name.
        var children: [Int64: [Int]] = [:]
        for (index, row) in down.enumerated() { children[row.link ?? -1, default: []].append(index) }
        var descendants: [LineageNode] = []
        descendants.reserveCapacity(down.count)
        func walk(_ parent: Int64, depth: Int) {
            for index in (children[parent] ?? []).sorted(by: { numericAwareLess(down[$0].name, down[$1].name) }) {
                descendants.append(node(down[index], depth: depth))
                walk(down[index].id, depth: depth + 1)
            }
        }
        walk(id, depth: 1)
        return LineageReport(
            model: node(up[0], depth: 0),
            ancestors: parts == .descendants ? [] : up.dropFirst().enumerated().map { node($1, depth: $0 + 1) },
            descendants: descendants, metric: metric, direction: chosen)
    }
}
