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

    /// `best --under` without sorting every candidate: each model's top value and count come
    /// from its metric summary (migration 0005), the subtree's summaries being one range of an
    /// index; the best eligible model wins (ties: the earliest name), then its best checkpoint.
    /// Exact when no checkpoint carries an advisory of its own (whole models are flagged or
    /// not); returns `nil` otherwise, and the general path runs.
    static func bestPerModel(
        _ db: Database, metric: String, split: String?, root: Int64, direction: Direction, explicit: Bool, includeFlagged: Bool
    ) throws -> BestResult? {
        let anyOpen = try hasOpenAdvisories(db)
        if anyOpen, !includeFlagged, !(try flaggedCheckpoints(db).isEmpty) { return nil }
        let flagged = anyOpen && !includeFlagged ? try flaggedModels(db, within: root) : [:]
        var candidates = 0, excluded = 0
        var top: Double? = nil
        var leaders: [Int64] = []  // the eligible models at the top value
        try stepRows(db, sql: bestPerModelSQL(direction), arguments: [root, metric, split ?? ""]) { handle in
            let id = sqlite3_column_int64(handle, 0), value = sqlite3_column_double(handle, 1), count = Int(sqlite3_column_int64(handle, 2))
            candidates += count
            if flagged[id] != nil {
                excluded += count
                return
            }
            if let current = top, value != current {
                guard direction == .max ? value > current : value < current else { return }
                leaders.removeAll(keepingCapacity: true)
            }
            top = value
            leaders.append(id)
        }
        guard candidates > 0 else { return nil }  // no candidate: the general path reports the unknown metric
        guard let top else { throw GraftError.allCandidatesFlagged(metric: metric, candidates: candidates) }
        // Ties between models go to the earliest name (binary order, as SQLite compares).
        let winner = leaders.count == 1 ? leaders[0] : try db.cachedOne(
            Int64.self, sql: "SELECT id FROM models WHERE id IN (SELECT value FROM json_each(?)) ORDER BY name LIMIT 1",
            arguments: ["[" + leaders.map(String.init).joined(separator: ",") + "]"]) ?? leaders[0]
        guard let row = try db.cachedRows(
            sql: """
                SELECT \(checkpointColumns), mt.value AS metric_value FROM metrics mt JOIN checkpoints c ON c.id = mt.checkpoint_id
                JOIN models m ON m.id = c.model_id WHERE mt.model_id = ? AND mt.name = ? AND mt.split = ? AND mt.value = ? ORDER BY c.number LIMIT 1
                """, arguments: [winner, metric, split ?? "", top]
        ).first else { return nil }
        return BestResult(
            checkpoint: checkpointSummary(row), metric: metric, split: split, value: row["metric_value"], direction: direction,
            directionInferred: !explicit, candidates: candidates, excludedFlagged: excluded)
    }

    /// Each model of a subtree (root, metric, split) with its best value of the metric and how
    /// many checkpoints have it: one range of the metric summaries' (name, split, lineage path)
    /// index, covering, nothing sorted.
    static func bestPerModelSQL(_ direction: Direction) -> String {
        """
        SELECT s.model_id, s.\(direction == .max ? "max_value" : "min_value"), s.count
        FROM models r CROSS JOIN metric_summaries s
        WHERE r.id = ? AND s.name = ? AND s.split = ? AND \(withinSubtree("s.lineage_path"))
        """
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
        return try await read { db in
            let path = try Self.lineagePath(db, model: id)
            let open = try Self.openAdvisories(db)
            let ownFlags = try Self.checkpointAdvisoriesByModel(db)
            // The chain up: the ids of the model's lineage path, nearest first (json_each's key
            // is the depth), each with its own parent edge; a row's parent is the next row.
            // (Without ancestors, still the parent: the model's own node names it.)
            let chain = parts == .descendants ? Array(Self.pathIDs(path).suffix(2)) : Self.pathIDs(path)
            var up = try Self.lineageRows(db, sql: Self.ancestorsSQL, arguments: ["[" + chain.reversed().map(String.init).joined(separator: ",") + "]"])
            for index in up.indices.dropLast() where up[index].relation != nil {
                (up[index].link, up[index].parentName) = (up[index + 1].id, up[index + 1].name)
            }
            // The tree below: one range of the lineage-path index, each model with its parent
            // edge; a parent's name is its node's.
            var down = parts == .ancestors ? [] : try Self.lineageRows(db, sql: Self.descendantsSQL, arguments: [id])
            // Flags for the model and the tree below (from the rows, no further query), and the
            // chain above (each ancestor's own inheritance, below).
            var flags = Self.propagateFlags(down, root: id, inherited: try Self.inheritedAdvisories(db, model: id, open: open), open: open)
            var names: [Int64: String] = [id: name.value]
            for row in down { names[row.id] = row.name }
            for index in down.indices { down[index].parentName = down[index].link.flatMap { names[$0] } }
            if !open.isEmpty, up.count > 1 {
                // Each ancestor inherits from the ones above it: fold down the chain once. up[k]
                // derives from up[k + 1] through checkpoint up[k].via.
                var modelLevel: [Int64: [String]] = [:], checkpointLevel: [Int64: [String]] = [:]
                for advisory in open {
                    if let checkpoint = advisory.checkpoint {
                        checkpointLevel[checkpoint, default: []].append(advisory.id)
                    } else {
                        modelLevel[advisory.model, default: []].append(advisory.id)
                    }
                }
                var inherited = Set<String>()
                for (index, row) in up.enumerated().reversed() {
                    if let via = row.via { inherited.formUnion(checkpointLevel[via] ?? []) }
                    inherited.formUnion(modelLevel[row.id] ?? [])
                    if index > 0 { flags[row.id] = inherited }
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
                model: node(up[0], depth: 0), ancestors: parts == .descendants ? [] : up.dropFirst().map { node($0, depth: $0.depth) },
                descendants: descendants,
                metric: metric, direction: chosen)
        }
    }

    /// The columns of a lineage query (see ``lineageRows(_:sql:arguments:)``) for model `m`:
    /// all in the lineage-path index, so a range of it is read without a lookup per model.
    private static let lineageColumns = """
        m.lineage_path, m.parent_checkpoint_id, m.id, m.name, m.kind, m.transfer_mode, m.relation, m.parent_checkpoint_number, m.checkpoint_count
        """

    /// A model's ancestors and itself, from a JSON array of ids nearest first. The path is not
    /// read (NULL in its place): deep in a chain it is long, and the order gives the parents.
    static let ancestorsSQL = """
        SELECT j.key, \(lineageColumns.replacingOccurrences(of: "m.lineage_path", with: "NULL"))
        FROM json_each(?) j JOIN models m ON m.id = j.value ORDER BY j.key
        """

    /// Every descendant of a model, any depth: the models whose lineage path extends its own,
    /// in path order (every parent before its children).
    static let descendantsSQL = """
        SELECT 0, \(lineageColumns) FROM \(subtreeJoin) WHERE r.id = ?1 AND m.id <> ?1 ORDER BY m.lineage_path
        """

    /// One model of a lineage query, decoded by column position (name lookups in GRDB rows
    /// lowercase the column names on every access, which dominated trees of 10,000 models).
    struct LineageRow {
        var depth: Int
        /// The parent model's id (absent for a base).
        var link: Int64?
        /// The parent checkpoint's id.
        var via: Int64?
        var id: Int64
        var name: String
        var kind: String
        var mode: String?
        var relation: String?
        var parentNumber: Int?
        var checkpoints: Int
        /// Filled in from the parent's row.
        var parentName: String? = nil
    }

    /// Runs a lineage query whose columns are: depth, lineage path, parent checkpoint id,
    /// id, name, kind, transfer mode, relation, parent checkpoint number, checkpoint count.
    /// Steps the statement through SQLite's C API: a tree of 10,000 models spent most of its
    /// time in per-row decoding otherwise.
    static func lineageRows(_ db: Database, sql: String, arguments: [any DatabaseValueConvertible]) throws -> [LineageRow] {
        var rows: [LineageRow] = []
        try stepRows(db, sql: sql, arguments: arguments) { handle in
            func text(_ column: Int32) -> String? {
                guard sqlite3_column_type(handle, column) != SQLITE_NULL, let bytes = sqlite3_column_text(handle, column) else { return nil }
                return String(cString: bytes)
            }
            func integer(_ column: Int32) -> Int64? {
                sqlite3_column_type(handle, column) == SQLITE_NULL ? nil : sqlite3_column_int64(handle, column)
            }
            /// The parent's id: the next-to-last id of the path, read in place.
            func parent(_ column: Int32) -> Int64? {
                guard let bytes = sqlite3_column_text(handle, column) else { return nil }
                var end = Int(sqlite3_column_bytes(handle, column)) - 1  // the final '/'
                while end > 0, bytes[end - 1] != UInt8(ascii: "/") { end -= 1 }  // before the model's own id
                guard end > 0 else { return nil }
                var index = end - 1, value: Int64 = 0, scale: Int64 = 1
                while index > 0, bytes[index - 1] != UInt8(ascii: "/") {
                    value += Int64(bytes[index - 1] &- UInt8(ascii: "0")) * scale
                    scale *= 10
                    index -= 1
                }
                return scale == 1 ? nil : value
            }
            rows.append(LineageRow(
                depth: Int(sqlite3_column_int64(handle, 0)), link: parent(1), via: integer(2), id: sqlite3_column_int64(handle, 3),
                name: text(4) ?? "", kind: text(5) ?? "", mode: text(6), relation: text(7), parentNumber: integer(8).map(Int.init),
                checkpoints: Int(sqlite3_column_int64(handle, 9))))
        }
        return rows
    }

    /// Runs a cached statement through SQLite's C API, calling `body` with the statement at
    /// each row: for the large reads, where GRDB's per-row decoding dominated.
    static func stepRows(_ db: Database, sql: String, arguments: [any DatabaseValueConvertible], _ body: (OpaquePointer) throws -> Void) throws {
        let handle = try db.cachedStatement(sql: sql).sqliteStatement
        sqlite3_reset(handle)
        for (index, argument) in arguments.enumerated() {
            switch argument.databaseValue.storage {
            case .int64(let value): sqlite3_bind_int64(handle, Int32(index + 1), value)
            case .string(let value): sqlite3_bind_text(handle, Int32(index + 1), value, -1, unsafeBitCast(-1, to: sqlite3_destructor_type.self))  // SQLITE_TRANSIENT: SQLite copies it
            default: preconditionFailure("these queries take integers and text")
            }
        }
        defer { sqlite3_reset(handle) }
        while true {
            let code = sqlite3_step(handle)
            if code == SQLITE_DONE { return }
            guard code == SQLITE_ROW else {
                throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
            }
            try body(handle)
        }
    }

    /// Whether any advisory is open: when none is, flag computations are skipped.
    static func hasOpenAdvisories(_ db: Database) throws -> Bool {
        try db.cachedOne(Bool.self, sql: "SELECT EXISTS (SELECT 1 FROM advisories WHERE resolved_at IS NULL)") ?? false
    }

    // MARK: Lineage paths

    /// `models r` (the subtree's root, bound by `r.id`) joined to every model `m` of its
    /// subtree, itself included: one range of the lineage-path index ('0' sorts right after '/').
    static let subtreeJoin = "models r JOIN models m ON \(withinSubtree("m.lineage_path"))"

    /// SQL: `column` (a lineage path) lies in the subtree of `models r`.
    static func withinSubtree(_ column: String) -> String {
        "\(column) >= r.lineage_path AND \(column) < substr(r.lineage_path, 1, length(r.lineage_path) - 1) || '0'"
    }

    /// SQL selecting a model (the one argument) and every descendant's id, any depth.
    static let subtreeSQL = "SELECT m.id FROM \(subtreeJoin) WHERE r.id = ?"

    /// A model's lineage path: `/root/…/parent/self/`.
    static func lineagePath(_ db: Database, model: Int64) throws -> String {
        try db.cachedOne(String.self, sql: "SELECT lineage_path FROM models WHERE id = ?", arguments: [model]) ?? ""
    }

    /// The ids of a lineage path, root first.
    static func pathIDs(_ path: String) -> [Int64] {
        path.utf8.split(separator: UInt8(ascii: "/")).compactMap { Int64(Substring($0)) }
    }

    /// Whether `path` is `ancestor` or lies below it.
    static func isWithin(_ path: String, _ ancestor: String) -> Bool {
        path.utf8.starts(with: ancestor.utf8)
    }

    // MARK: Advisories and what they flag

    /// An open advisory and where it sits.
    struct OpenAdvisory {
        var id: String
        var model: Int64
        /// Set when the advisory is on one checkpoint rather than the whole model.
        var checkpoint: Int64?
        /// Its model's lineage path.
        var path: String
    }

    /// Every open advisory. They are few (a registry records known weaknesses, not events), so
    /// the flag computations below work from this list rather than from a walk of the tree.
    static func openAdvisories(_ db: Database) throws -> [OpenAdvisory] {
        try db.cachedRows(sql: """
                SELECT a.id, a.model_id, a.checkpoint_id, m.lineage_path FROM advisories a JOIN models m ON m.id = a.model_id
                WHERE a.resolved_at IS NULL ORDER BY a.id
                """
        ).map { OpenAdvisory(id: $0[0], model: $0[1], checkpoint: $0[2], path: $0[3]) }
    }

    /// The flags of a model (`root`, which carries or inherits `inherited`) and of its
    /// descendants, given as lineage rows with every parent before its children: each model
    /// inherits its parent's flags, those of open advisories on the parent checkpoint it
    /// derives from, and adds its own model-level ones. No query: the tree is already read.
    static func propagateFlags(_ rows: [LineageRow], root: Int64, inherited: Set<String>, open: [OpenAdvisory]) -> [Int64: Set<String>] {
        var result: [Int64: Set<String>] = inherited.isEmpty ? [:] : [root: inherited]
        guard !open.isEmpty else { return result }
        var onModel: [Int64: [String]] = [:], onCheckpoint: [Int64: [String]] = [:]
        for advisory in open {
            if let checkpoint = advisory.checkpoint { onCheckpoint[checkpoint, default: []].append(advisory.id) } else { onModel[advisory.model, default: []].append(advisory.id) }
        }
        for row in rows {
            var flags = row.link.flatMap { result[$0] } ?? []
            if let via = row.via, let ids = onCheckpoint[via] { flags.formUnion(ids) }
            if let ids = onModel[row.id] { flags.formUnion(ids) }
            if !flags.isEmpty { result[row.id] = flags }
        }
        return result
    }

    /// Models flagged as a whole, each with the open advisories it carries or inherits: an
    /// advisory on a model flags it and all its descendants; one on a checkpoint flags every
    /// student derived from that checkpoint, and theirs. With `root`, only the models of its
    /// subtree.
    static func flaggedModels(_ db: Database, within root: Int64? = nil, open: [OpenAdvisory]? = nil) throws -> [Int64: Set<String>] {
        let open = try open ?? openAdvisories(db)
        guard !open.isEmpty else { return [:] }
        var result: [Int64: Set<String>] = [:]
        let rootPath = try root.map { try lineagePath(db, model: $0) }
        // Seeds: model-level advisories flag their model, checkpoint-level ones the students of
        // that checkpoint; within a subtree only seeds inside it. Each seed flags its subtree.
        var seeds: [(model: Int64, advisory: String)] = []
        for advisory in open {
            if let rootPath, !isWithin(advisory.path, rootPath) { continue }
            if let checkpoint = advisory.checkpoint {
                for student in try db.cachedAll(Int64.self, sql: "SELECT model_id FROM model_parents WHERE parent_checkpoint_id = ?", arguments: [checkpoint]) {
                    seeds.append((student, advisory.id))
                }
            } else {
                seeds.append((advisory.model, advisory.id))
            }
        }
        for (model, advisory) in seeds {
            for id in try db.cachedAll(Int64.self, sql: subtreeSQL, arguments: [model]) { result[id, default: []].insert(advisory) }
        }
        // What the root inherits from above flags its whole subtree.
        if let root {
            let inherited = try inheritedAdvisories(db, model: root, open: open)
            if !inherited.isEmpty {
                for model in try db.cachedAll(Int64.self, sql: subtreeSQL, arguments: [root]) { result[model, default: []].formUnion(inherited) }
            }
        }
        return result
    }

    /// Open advisories a model inherits as a whole: model-level ones on itself or an ancestor,
    /// and checkpoint-level ones on a checkpoint its line of descent passes through.
    static func inheritedAdvisories(_ db: Database, model: Int64, open: [OpenAdvisory]? = nil) throws -> Set<String> {
        let open = try open ?? openAdvisories(db)
        guard !open.isEmpty else { return [] }
        let path = try lineagePath(db, model: model)
        let chain = pathIDs(path)
        var result = Set<String>()
        for advisory in open where isWithin(path, advisory.path) {
            guard let checkpoint = advisory.checkpoint else {
                result.insert(advisory.id)
                continue
            }
            // On a checkpoint of an ancestor: inherited when the next model down the line
            // derives from that very checkpoint.
            guard let index = chain.firstIndex(of: advisory.model), index + 1 < chain.count else { continue }
            let via = try db.cachedOne(Int64.self, sql: "SELECT parent_checkpoint_id FROM models WHERE id = ?", arguments: [chain[index + 1]])
            if via == checkpoint { result.insert(advisory.id) }
        }
        return result
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
