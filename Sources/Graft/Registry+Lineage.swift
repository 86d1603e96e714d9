import GRDB
import GRDBSQLite

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
        // The scope as a SQL condition on the metric's model, and the model it names.
        let (clause, scopeName): (String, ModelName?) =
            switch scope {
            case .all: ("", nil)
            case .model(let name): (" AND mt.model_id = ?", name)
            case .under(let name): (" AND mt.model_id IN (\(Self.subtreeSQL))", name)
            }
        let order = chosen == .max ? "DESC" : "ASC"
        // One read transaction for the whole query: at this size, each round trip counts.
        let result = try await read { db -> BestResult? in
            var argument: Int64? = nil
            if let scopeName {
                guard let id = try db.cachedOne(Int64.self, sql: "SELECT id FROM models WHERE name = ?", arguments: [scopeName.value]) else { return nil }
                argument = id
            }
            // Candidates: checkpoints in scope with the metric. A checkpoint is flagged when it
            // carries an open advisory or its model is flagged (inherited; see flaggedModels).
            let from = """
                FROM metrics mt JOIN checkpoints c ON c.id = mt.checkpoint_id JOIN models m ON m.id = c.model_id
                WHERE mt.name = ? AND mt.split = ?\(clause)
                """
            var arguments: StatementArguments = [metric, split ?? ""]
            if let argument { arguments += [argument] }
            if case .under = scope, let argument, let result = try Self.bestPerModel(
                db, metric: metric, split: split, root: argument, direction: chosen, explicit: direction != nil, includeFlagged: includeFlagged)
            {
                return result
            }
            let candidates = try db.cachedOne(Int.self, sql: "SELECT count(*) " + from, arguments: arguments) ?? 0
            guard candidates > 0 else {
                let known = try db.cachedAll(String.self, sql: "SELECT DISTINCT name FROM metrics ORDER BY name LIMIT 20")
                throw GraftError.unknownMetric(metric + (split.map { " (split \($0))" } ?? ""), known: known)
            }
            let anyOpen = try Self.hasOpenAdvisories(db)
            var flaggedModels: [Int64: Set<String>] = [:]
            if anyOpen, case .model = scope, let argument {
                // One model: flagged as a whole only by what it carries or inherits.
                let inherited = try Self.inheritedAdvisories(db, model: argument)
                if !inherited.isEmpty { flaggedModels[argument] = inherited }
            } else if anyOpen {
                flaggedModels = try Self.flaggedModels(db, within: argument)
            }
            let flaggedCheckpoints = anyOpen ? try Self.flaggedCheckpoints(db) : []
            // Walk candidates best first; only flagged ones are skipped, so this stops early.
            let cursor = try db.cachedCursor(sql: "SELECT \(Self.checkpointColumns), mt.value AS metric_value, c.model_id AS model_id " + from
                    + " ORDER BY mt.value \(order), m.name, c.number", arguments: arguments)
            var excluded = 0
            while let row = try cursor.next() {
                let id: Int64 = row["id"], model: Int64 = row["model_id"]
                if !includeFlagged, flaggedModels[model] != nil || flaggedCheckpoints.contains(id) {
                    excluded += 1
                    continue
                }
                // Count every flagged candidate, not only those ranked above the winner.
                if !includeFlagged {
                    excluded = try Self.countFlagged(db, from: from, arguments: arguments, models: Set(flaggedModels.keys), checkpoints: flaggedCheckpoints)
                }
                return BestResult(
                    checkpoint: Self.checkpointSummary(row), metric: metric, split: split, value: row["metric_value"], direction: chosen,
                    directionInferred: direction == nil, candidates: candidates, excludedFlagged: excluded)
            }
            throw GraftError.allCandidatesFlagged(metric: metric, candidates: candidates)
        }
        guard let result else { throw try await notFound(scopeName!) }
        return result
    }

    /// `best --under` without sorting every candidate: each model's top value comes from the
    /// (model, name, split, value) index, the best eligible model wins, then its best
    /// checkpoint. Exact when no checkpoint carries an advisory of its own (whole models are
    /// flagged or not); returns `nil` otherwise, and the general path runs.
    static func bestPerModel(
        _ db: Database, metric: String, split: String?, root: Int64, direction: Direction, explicit: Bool, includeFlagged: Bool
    ) throws -> BestResult? {
        let anyOpen = try hasOpenAdvisories(db)
        if anyOpen, !includeFlagged, !(try flaggedCheckpoints(db).isEmpty) { return nil }
        let aggregate = direction == .max ? "max" : "min"
        let rows = try db.cachedRows(
            sql: """
                SELECT mt.model_id, m.name, \(aggregate)(mt.value) AS top, count(*) AS n FROM metrics mt JOIN models m ON m.id = mt.model_id
                WHERE mt.name = ? AND mt.split = ? AND mt.model_id IN (\(subtreeSQL)) GROUP BY mt.model_id
                """, arguments: [metric, split ?? "", root])
        guard !rows.isEmpty else { return nil }  // the general path reports the unknown metric
        let flagged = anyOpen && !includeFlagged ? try flaggedModels(db, within: root) : [:]
        var candidates = 0, excluded = 0
        var winner: (id: Int64, name: String, top: Double)? = nil
        for row in rows {
            let id: Int64 = row["model_id"], name: String = row["name"], top: Double = row["top"], count: Int = row["n"]
            candidates += count
            if flagged[id] != nil {
                excluded += count
                continue
            }
            if let current = winner {
                let better = direction == .max ? top > current.top : top < current.top
                if !better && !(top == current.top && name.utf8.lexicographicallyPrecedes(current.name.utf8)) { continue }
            }
            winner = (id, name, top)
        }
        guard let winner else { throw GraftError.allCandidatesFlagged(metric: metric, candidates: candidates) }
        guard let row = try db.cachedRows(
            sql: """
                SELECT \(checkpointColumns), mt.value AS metric_value FROM metrics mt JOIN checkpoints c ON c.id = mt.checkpoint_id
                JOIN models m ON m.id = c.model_id WHERE mt.model_id = ? AND mt.name = ? AND mt.split = ? AND mt.value = ? ORDER BY c.number LIMIT 1
                """, arguments: [winner.id, metric, split ?? "", winner.top]
        ).first else { return nil }
        return BestResult(
            checkpoint: checkpointSummary(row), metric: metric, split: split, value: row["metric_value"], direction: direction,
            directionInferred: !explicit, candidates: candidates, excludedFlagged: excluded)
    }

    /// How many candidates (rows of `from`) are flagged.
    static func countFlagged(_ db: Database, from: String, arguments: StatementArguments, models: Set<Int64>, checkpoints: Set<Int64>) throws -> Int {
        guard !models.isEmpty || !checkpoints.isEmpty else { return 0 }
        var count = 0
        let cursor = try db.cachedCursor(sql: "SELECT c.id, c.model_id " + from, arguments: arguments)
        while let row = try cursor.next() {
            if models.contains(row[1]) || checkpoints.contains(row[0]) { count += 1 }
        }
        return count
    }

    /// The ancestors (up to the root base) and descendants (any depth) of a model.
    public func lineage(_ name: ModelName, metric: String? = nil, direction: Direction? = nil) async throws(GraftError) -> LineageReport {
        guard let id = try await modelID(name) else { throw try await notFound(name) }
        if let metric { try MetricAssignment.checkName(metric) }
        let chosen = metric.map { direction ?? Direction.inferred(for: $0) }
        return try await read { db in
            // Flags for the tree below and the chain above (each ancestor's own inheritance).
            var flags = try Self.flaggedModels(db, within: id)
            let ownFlags = try Self.checkpointAdvisoriesByModel(db)
            // One query for the chain up, one for the tree down; each returns a node's fields.
            // The chain up: each row carries its model's own parent edge, found once by the
            // (model_id, …) primary key; a row's parent is the next row.
            var up = try Self.lineageRows(db, sql: """
                    WITH RECURSIVE up(model_id, via, relation, parent, depth) AS (
                        SELECT s.id, p.parent_checkpoint_id, p.relation, p.parent_model_id, 0
                        FROM (SELECT ? AS id) s LEFT JOIN model_parents p ON p.model_id = s.id
                        UNION ALL
                        SELECT up.parent, p.parent_checkpoint_id, p.relation, p.parent_model_id, up.depth + 1
                        FROM up LEFT JOIN model_parents p ON p.model_id = up.parent WHERE up.parent IS NOT NULL
                    )
                    SELECT up.depth, up.via, m.id, m.name, m.kind, m.transfer_mode, up.relation, NULL, pc.number,
                        (SELECT count(*) FROM checkpoints c WHERE c.model_id = m.id)
                    FROM up JOIN models m ON m.id = up.model_id LEFT JOIN checkpoints pc ON pc.id = up.via
                    ORDER BY up.depth
                    """, arguments: [id])
            for index in up.indices.dropLast() where up[index].link != nil { up[index].parentName = up[index + 1].name }
            // The tree below: the edge's relation and parent checkpoint ride along in the
            // recursion (no join back to model_parents), and a parent's name is its node's.
            // UNION ALL: every student has one parent edge, so the walk meets each model once.
            var down = try Self.lineageRows(db, sql: """
                    WITH RECURSIVE down(model_id, parent_id, via, relation, depth) AS (
                        SELECT ?, NULL, NULL, NULL, 0
                        UNION ALL
                        SELECT p.model_id, p.parent_model_id, p.parent_checkpoint_id, p.relation, down.depth + 1
                        FROM model_parents p JOIN down ON p.parent_model_id = down.model_id
                    )
                    SELECT down.depth, down.parent_id, m.id, m.name, m.kind, m.transfer_mode, down.relation, NULL, pc.number,
                        (SELECT count(*) FROM checkpoints c WHERE c.model_id = m.id)
                    FROM down JOIN models m ON m.id = down.model_id LEFT JOIN checkpoints pc ON pc.id = down.via
                    WHERE down.depth > 0
                    """, arguments: [id])
            var names: [Int64: String] = [id: name.value]
            for row in down { names[row.id] = row.name }
            for index in down.indices { down[index].parentName = down[index].link.flatMap { names[$0] } }
            if try Self.hasOpenAdvisories(db), up.count > 1 {
                // Each ancestor inherits from the ones above it: fold down the chain once.
                var modelLevel: [Int64: [String]] = [:], checkpointLevel: [Int64: [String]] = [:]
                for row in try db.cachedRows(sql: "SELECT id, model_id, checkpoint_id FROM advisories WHERE resolved_at IS NULL") {
                    if let checkpoint = row["checkpoint_id"] as Int64? {
                        checkpointLevel[checkpoint, default: []].append(row["id"])
                    } else {
                        modelLevel[row["model_id"], default: []].append(row["id"])
                    }
                }
                var inherited = Set<String>()
                for (index, row) in up.enumerated().reversed() {
                    let model = row.id
                    if let via = row.link { inherited.formUnion(checkpointLevel[via] ?? []) }
                    inherited.formUnion(modelLevel[model] ?? [])
                    if index > 0 { flags[model] = inherited }
                }
            }
            var best: [Int64: Double] = [:]
            if let metric, let chosen {
                let ids = (up + down).map(\.id)
                for chunk in stride(from: 0, to: ids.count, by: 500).map({ Array(ids[$0..<min($0 + 500, ids.count)]) }) {
                    let rows = try db.cachedRows(sql: "SELECT model_id, \(chosen == .max ? "max" : "min")(value) AS best FROM metrics WHERE name = ? AND model_id IN (\(chunk.map { _ in "?" }.joined(separator: ","))) GROUP BY model_id",
                        arguments: StatementArguments([metric]) + StatementArguments(chunk))
                    for row in rows { best[row["model_id"]] = row["best"] }
                }
            }
            func node(_ row: LineageRow, depth: Int) -> LineageNode {
                LineageNode(
                    name: row.name, kind: row.kind, mode: row.mode.flatMap(TransferMode.init(rawValue:)), relation: row.relation.flatMap(Relation.init(rawValue:)),
                    parent: row.parentName.map { "\($0)@\(row.parentNumber ?? 0)" }, depth: depth, checkpoints: row.checkpoints,
                    advisories: (flags[row.id] ?? []).sorted() + (ownFlags[row.id] ?? []).sorted(), best: best[row.id])
            }
            // Depth-first order of the tree, children by name; a model reached twice (a merge) once.
            var children: [Int64: [Int]] = [:]
            for (index, row) in down.enumerated() { children[row.link ?? -1, default: []].append(index) }
            var descendants: [LineageNode] = []
            descendants.reserveCapacity(down.count)
            var visited: Set<Int64> = [id]
            func walk(_ parent: Int64, depth: Int) {
                for index in (children[parent] ?? []).sorted(by: { numericAwareLess(down[$0].name, down[$1].name) }) {
                    let row = down[index]
                    guard visited.insert(row.id).inserted else { continue }
                    descendants.append(node(row, depth: depth))
                    walk(row.id, depth: depth + 1)
                }
            }
            walk(id, depth: 1)
            return LineageReport(
                model: node(up[0], depth: 0), ancestors: up.dropFirst().map { node($0, depth: $0.depth) }, descendants: descendants,
                metric: metric, direction: chosen)
        }
    }

    /// One model of a lineage query, decoded by column position (name lookups in GRDB rows
    /// lowercase the column names on every access, which dominated trees of 10,000 models).
    struct LineageRow {
        var depth: Int
        /// Up: the parent checkpoint the model derives from; down: the parent model's id.
        var link: Int64?
        var id: Int64
        var name: String
        var kind: String
        var mode: String?
        var relation: String?
        var parentName: String?
        var parentNumber: Int?
        var checkpoints: Int
    }

    /// Runs a lineage query whose columns are: depth, link, id, name, kind, transfer mode,
    /// relation, parent name, parent checkpoint number, checkpoint count. Steps the statement
    /// through SQLite's C API: a tree of 10,000 models spent most of its time in per-row
    /// decoding otherwise.
    static func lineageRows(_ db: Database, sql: String, arguments: [Int64]) throws -> [LineageRow] {
        let statement = try db.cachedStatement(sql: sql)
        let handle = statement.sqliteStatement
        sqlite3_reset(handle)
        for (index, argument) in arguments.enumerated() { sqlite3_bind_int64(handle, Int32(index + 1), argument) }
        defer { sqlite3_reset(handle) }
        func text(_ column: Int32) -> String? {
            guard sqlite3_column_type(handle, column) != SQLITE_NULL, let bytes = sqlite3_column_text(handle, column) else { return nil }
            return String(cString: bytes)
        }
        func integer(_ column: Int32) -> Int64? {
            sqlite3_column_type(handle, column) == SQLITE_NULL ? nil : sqlite3_column_int64(handle, column)
        }
        var rows: [LineageRow] = []
        while true {
            let code = sqlite3_step(handle)
            if code == SQLITE_DONE { break }
            guard code == SQLITE_ROW else {
                throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
            }
            rows.append(LineageRow(
                depth: Int(sqlite3_column_int64(handle, 0)), link: integer(1), id: sqlite3_column_int64(handle, 2), name: text(3) ?? "",
                kind: text(4) ?? "", mode: text(5), relation: text(6), parentName: text(7), parentNumber: integer(8).map(Int.init),
                checkpoints: Int(sqlite3_column_int64(handle, 9))))
        }
        return rows
    }

    /// Whether any advisory is open: when none is, flag computations are skipped.
    static func hasOpenAdvisories(_ db: Database) throws -> Bool {
        try db.cachedOne(Bool.self, sql: "SELECT EXISTS (SELECT 1 FROM advisories WHERE resolved_at IS NULL)") ?? false
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
    static func flaggedModels(_ db: Database, within root: Int64? = nil) throws -> [Int64: Set<String>] {
        guard try hasOpenAdvisories(db) else { return [:] }
        var result: [Int64: Set<String>] = [:]
        // Seeds: model-level advisories flag their model; checkpoint-level ones the students of
        // that checkpoint. Within a subtree only seeds inside it matter (found by walking up from
        // each open advisory, which is cheap: advisories are few, subtrees can be huge), plus what
        // the root inherits from above, which flags the whole subtree.
        var seeds: [(model: Int64, advisory: String)] = []
        for row in try db.cachedRows(sql: "SELECT id, model_id, checkpoint_id FROM advisories WHERE resolved_at IS NULL") {
            let model: Int64 = row["model_id"], advisory: String = row["id"]
            if let root, !(try isAncestor(db, root, of: model)) { continue }
            if let checkpoint = row["checkpoint_id"] as Int64? {
                for student in try db.cachedAll(Int64.self, sql: "SELECT model_id FROM model_parents WHERE parent_checkpoint_id = ?", arguments: [checkpoint]) {
                    seeds.append((student, advisory))
                }
            } else {
                seeds.append((model, advisory))
            }
        }
        for (model, advisory) in seeds {
            for id in try db.cachedAll(Int64.self, sql: subtreeSQL, arguments: [model]) { result[id, default: []].insert(advisory) }
        }
        if let root {
            let inherited = try inheritedAdvisories(db, model: root)
            if !inherited.isEmpty {
                for model in try db.cachedAll(Int64.self, sql: subtreeSQL, arguments: [root]) { result[model, default: []].formUnion(inherited) }
            }
        }
        return result
    }

    /// Whether `ancestor` is `model` or one of its ancestors.
    static func isAncestor(_ db: Database, _ ancestor: Int64, of model: Int64) throws -> Bool {
        try db.cachedOne(
            Bool.self, sql: """
                WITH RECURSIVE up(model_id) AS (
                    SELECT ? UNION SELECT p.parent_model_id FROM model_parents p JOIN up ON p.model_id = up.model_id
                ) SELECT EXISTS (SELECT 1 FROM up WHERE model_id = ?)
                """, arguments: [model, ancestor]) ?? false
    }

    /// Open advisories a model inherits as a whole: model-level ones on itself or an ancestor,
    /// and checkpoint-level ones on a checkpoint its line of descent passes through.
    static func inheritedAdvisories(_ db: Database, model: Int64) throws -> Set<String> {
        Set(try db.cachedAll(String.self, sql: """
                WITH RECURSIVE up(model_id, via_checkpoint) AS (
                    SELECT ?, NULL
                    UNION
                    SELECT p.parent_model_id, p.parent_checkpoint_id FROM model_parents p JOIN up ON p.model_id = up.model_id
                )
                SELECT a.id FROM up JOIN advisories a ON a.model_id = up.model_id AND a.resolved_at IS NULL
                    AND (a.checkpoint_id IS NULL OR a.checkpoint_id = up.via_checkpoint)
                """, arguments: [model]))
    }

    /// Checkpoints that carry an open advisory of their own.
    static func flaggedCheckpoints(_ db: Database) throws -> Set<Int64> {
        Set(try db.cachedAll(Int64.self, sql: "SELECT checkpoint_id FROM advisories WHERE resolved_at IS NULL AND checkpoint_id IS NOT NULL"))
    }

    /// Open checkpoint-level advisories by model, as `ID@N`.
    static func checkpointAdvisoriesByModel(_ db: Database) throws -> [Int64: [String]] {
        var result: [Int64: [String]] = [:]
        for row in try db.cachedRows(sql: "SELECT a.id, c.model_id, c.number FROM advisories a JOIN checkpoints c ON c.id = a.checkpoint_id WHERE a.resolved_at IS NULL")
        {
            result[row["model_id"], default: []].append("\(row["id"] as String)@\(row["number"] as Int)")
        }
        return result
    }
}
