import GRDB

/// Which way a metric improves.
public enum Direction: String, Sendable, Codable {
    case max, min

    /// Metrics named like a loss, an error or a perplexity minimise; the rest maximise.
    public static func inferred(for metric: String) -> Direction {
        let lower = metric.lowercased()
        return ["loss", "error", "perplexity", "ppl", "mse", "mae", "rmse", "wer", "cer"].contains { lower.contains($0) } ? .min : .max
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
    /// any ancestor are left out unless `includeFlagged`.
    ///
    /// - Throws: ``GraftError/unknownMetric(_:known:)`` when no candidate has the metric.
    public func best(
        metric: String, direction: Direction? = nil, split: String? = nil, scope: BestScope = .all, includeFlagged: Bool = false
    ) async throws(GraftError) -> BestResult {
        try MetricAssignment.checkName(metric)
        if let split { try MetricAssignment.checkName(split) }
        let chosen = direction ?? Direction.inferred(for: metric)
        // The scope as a SQL condition on c.model_id, with its one argument.
        var scopeClause = ""
        var scopeArgument: Int64? = nil
        switch scope {
        case .all:
            break
        case .model(let name):
            guard let id = try await modelID(name) else { throw try await notFound(name) }
            scopeClause = " AND c.model_id = ?"
            scopeArgument = id
        case .under(let name):
            guard let id = try await modelID(name) else { throw try await notFound(name) }
            scopeClause = " AND c.model_id IN (\(Self.subtreeSQL))"
            scopeArgument = id
        }
        let order = chosen == .max ? "DESC" : "ASC"
        let (clause, argument) = (scopeClause, scopeArgument)
        let (rows, flaggedModels, flaggedCheckpoints, known) = try await read { db in
            var sql = """
                SELECT \(Self.checkpointColumns), mt.value AS metric_value, c.model_id AS model_id
                FROM metrics mt JOIN checkpoints c ON c.id = mt.checkpoint_id JOIN models m ON m.id = c.model_id
                WHERE mt.name = ? AND mt.split = ?
                """
            var arguments: StatementArguments = [metric, split ?? ""]
            if let argument { arguments += [argument] }
            sql += clause + " ORDER BY mt.value \(order), m.name, c.number"
            let rows = try Row.fetchAll(db, sql: sql, arguments: arguments).map {
                (summary: Self.checkpointSummary($0), id: $0["id"] as Int64, model: $0["model_id"] as Int64, value: $0["metric_value"] as Double)
            }
            let known = rows.isEmpty ? try String.fetchAll(db, sql: "SELECT DISTINCT name FROM metrics ORDER BY name LIMIT 20") : []
            return (rows, Set(try Self.flaggedModels(db).keys), try Self.flaggedCheckpoints(db), known)
        }
        guard !rows.isEmpty else { throw .unknownMetric(metric + (split.map { " (split \($0))" } ?? ""), known: known) }
        let isFlagged = { (row: (summary: CheckpointSummary, id: Int64, model: Int64, value: Double)) in
            flaggedModels.contains(row.model) || flaggedCheckpoints.contains(row.id)
        }
        let eligible = includeFlagged ? rows : rows.filter { !isFlagged($0) }
        let excluded = includeFlagged ? 0 : rows.count - eligible.count
        guard let winner = eligible.first else {
            throw .allCandidatesFlagged(metric: metric, candidates: rows.count)
        }
        return BestResult(
            checkpoint: winner.summary, metric: metric, split: split, value: winner.value, direction: chosen, directionInferred: direction == nil,
            candidates: rows.count, excludedFlagged: excluded)
    }

    /// The ancestors (up to the root base) and descendants (any depth) of a model.
    public func lineage(_ name: ModelName, metric: String? = nil, direction: Direction? = nil) async throws(GraftError) -> LineageReport {
        guard let id = try await modelID(name) else { throw try await notFound(name) }
        if let metric { try MetricAssignment.checkName(metric) }
        let chosen = metric.map { direction ?? Direction.inferred(for: $0) }
        return try await read { db in
            let flags = try Self.flaggedModels(db)
            let ownFlags = try Self.checkpointAdvisoriesByModel(db)
            func node(_ modelID: Int64, depth: Int) throws -> LineageNode {
                let row = try Row.fetchOne(
                    db, sql: """
                        SELECT m.name, m.kind, m.transfer_mode, p.relation, pm.name AS parent_name, pc.number AS parent_number,
                               (SELECT count(*) FROM checkpoints c WHERE c.model_id = m.id) AS checkpoints
                        FROM models m LEFT JOIN model_parents p ON p.model_id = m.id
                        LEFT JOIN checkpoints pc ON pc.id = p.parent_checkpoint_id LEFT JOIN models pm ON pm.id = pc.model_id
                        WHERE m.id = ? LIMIT 1
                        """, arguments: [modelID])!
                var best: Double? = nil
                if let metric, let chosen {
                    best = try Double.fetchOne(
                        db, sql: "SELECT \(chosen == .max ? "max" : "min")(mt.value) FROM metrics mt JOIN checkpoints c ON c.id = mt.checkpoint_id WHERE c.model_id = ? AND mt.name = ?",
                        arguments: [modelID, metric])
                }
                let parentName: String? = row["parent_name"]
                return LineageNode(
                    name: row["name"], kind: row["kind"], mode: (row["transfer_mode"] as String?).flatMap(TransferMode.init(rawValue:)),
                    relation: (row["relation"] as String?).flatMap(Relation.init(rawValue:)),
                    parent: parentName.map { "\($0)@\(row["parent_number"] as Int)" }, depth: depth, checkpoints: row["checkpoints"],
                    advisories: (flags[modelID] ?? []).sorted() + (ownFlags[modelID] ?? []).sorted(), best: best)
            }
            var ancestors: [LineageNode] = []
            var current = id
            var depth = 0
            while let parent = try Int64.fetchOne(db, sql: "SELECT parent_model_id FROM model_parents WHERE model_id = ? ORDER BY created_at LIMIT 1", arguments: [current]) {
                depth += 1
                ancestors.append(try node(parent, depth: depth))
                current = parent
            }
            var descendants: [LineageNode] = []
            var visited: Set<Int64> = [id]
            func walk(_ parent: Int64, depth: Int) throws {
                let children = try Row.fetchAll(
                    db, sql: "SELECT p.model_id, m.name FROM model_parents p JOIN models m ON m.id = p.model_id WHERE p.parent_model_id = ?",
                    arguments: [parent]
                ).map { ($0["model_id"] as Int64, $0["name"] as String) }.sorted { numericAwareLess($0.1, $1.1) }
                for (child, _) in children where visited.insert(child).inserted {
                    descendants.append(try node(child, depth: depth))
                    try walk(child, depth: depth + 1)
                }
            }
            try walk(id, depth: 1)
            return LineageReport(model: try node(id, depth: 0), ancestors: ancestors, descendants: descendants, metric: metric, direction: chosen)
        }
    }

    /// SQL selecting a model (the one argument) and every descendant's id, any depth.
    static let subtreeSQL = """
        WITH RECURSIVE tree(model_id) AS (
            SELECT ? UNION SELECT p.model_id FROM model_parents p JOIN tree t ON p.parent_model_id = t.model_id
        ) SELECT model_id FROM tree
        """

    /// Models flagged as a whole, each with the open advisories it carries or inherits: an
    /// advisory on a model flags it and all its descendants; one on a checkpoint flags every
    /// student derived from that checkpoint, and theirs.
    static func flaggedModels(_ db: Database) throws -> [Int64: Set<String>] {
        var result: [Int64: Set<String>] = [:]
        for row in try Row.fetchAll(
            db, sql: """
                WITH RECURSIVE flagged(model_id, advisory) AS (
                    SELECT model_id, id FROM advisories WHERE resolved_at IS NULL AND checkpoint_id IS NULL
                    UNION
                    SELECT p.model_id, a.id FROM advisories a JOIN model_parents p ON p.parent_checkpoint_id = a.checkpoint_id
                    WHERE a.resolved_at IS NULL AND a.checkpoint_id IS NOT NULL
                    UNION
                    SELECT p.model_id, f.advisory FROM model_parents p JOIN flagged f ON p.parent_model_id = f.model_id
                ) SELECT model_id, advisory FROM flagged
                """)
        {
            result[row["model_id"], default: []].insert(row["advisory"])
        }
        return result
    }

    /// Checkpoints that carry an open advisory of their own.
    static func flaggedCheckpoints(_ db: Database) throws -> Set<Int64> {
        Set(try Int64.fetchAll(db, sql: "SELECT checkpoint_id FROM advisories WHERE resolved_at IS NULL AND checkpoint_id IS NOT NULL"))
    }

    /// Open checkpoint-level advisories by model, as `ID@N`.
    static func checkpointAdvisoriesByModel(_ db: Database) throws -> [Int64: [String]] {
        var result: [Int64: [String]] = [:]
        for row in try Row.fetchAll(
            db, sql: "SELECT a.id, c.model_id, c.number FROM advisories a JOIN checkpoints c ON c.id = a.checkpoint_id WHERE a.resolved_at IS NULL")
        {
            result[row["model_id"], default: []].append("\(row["id"] as String)@\(row["number"] as Int)")
        }
        return result
    }
}
