import GRDB
import GRDBSQLite
package import GraftCore
import GraftLocal
import SafeTensors

// Lineage rows and best candidates: ranges of the lineage-path index (migration 0004) and of
// the metric summaries (0005), stepped through SQLite's C API where rows are many.
extension SQLiteMetadataStore {
    package func chain(model: Int64, full: Bool) async throws(GraftError) -> [LineageRow] {
        try await read { db in try Self.chain(db, model: model, full: full) }
    }

    /// The model and its ancestors, nearest first: the ids of its lineage path, each row with its
    /// own parent edge; a row's parent is the next row.
    static func chain(_ db: Database, model: Int64, full: Bool) throws -> [LineageRow] {
        let path = try lineagePath(db, model: model)
        let ids = full ? pathIDs(path) : Array(pathIDs(path).suffix(2))
        var up = try lineageRows(db, sql: ancestorsSQL, arguments: ["[" + ids.reversed().map(String.init).joined(separator: ",") + "]"])
        for index in up.indices.dropLast() where up[index].relation != nil {
            (up[index].link, up[index].parentName) = (up[index + 1].id, up[index + 1].name)
        }
        return up
    }

    package func lineage(model: Int64, parts: Registry.LineageParts, metric: String?, direction: Direction?) async throws(GraftError)
        -> LineageSnapshot
    {
        try await read { db in
            // Without ancestors, still the model's parent (its node names it) — and the whole
            // chain when an advisory is open, for what the model inherits from above.
            let open = try Self.openAdvisories(db)
            let up = try Self.chain(db, model: model, full: parts != .descendants || !open.isEmpty)
            let down = parts == .ancestors ? [] : try Self.lineageRows(db, sql: Self.descendantsSQL, arguments: [model])
            var best: [Int64: Double] = [:]
            if let metric, let direction {
                let ids = (up + down).map(\.id)
                for chunk in stride(from: 0, to: ids.count, by: 500).map({ Array(ids[$0..<min($0 + 500, ids.count)]) }) {
                    let rows = try db.cachedRows(
                        sql:
                            """
                            SELECT model_id, \(direction == .max ? "max" : "min")(value) AS best FROM metrics WHERE name = ? AND\
                             model_id IN (\(chunk.map { _ in "?" }.joined(separator: ","))) GROUP BY model_id
                            """,
                        arguments: StatementArguments([metric]) + StatementArguments(chunk))
                    for row in rows { best[row["model_id"]] = row["best"] }
                }
            }
            return LineageSnapshot(
                up: up, down: down, open: open, checkpointLabels: try Self.checkpointAdvisoryLabels(db), best: best)
        }
    }

    package func affectedRows(model: Int64) async throws(GraftError) -> (
        open: [OpenAdvisory], chain: [LineageRow], descendants: [LineageRow]
    ) {
        try await read { db in
            let open = try Self.openAdvisories(db)
            guard !open.isEmpty else { return ([], [], []) }
            let chain = try Self.chain(db, model: model, full: true)
            guard !AdvisoryInheritance.inherited(chain: chain, open: open).isEmpty || AdvisoryInheritance.anyWithin(open, model: model)
            else {
                return (open, chain, [])
            }
            return (open, chain, try Self.lineageRows(db, sql: Self.descendantsSQL, arguments: [model]))
        }
    }

    package func checkpointNumbers(models: [Int64]) async throws(GraftError) -> [Int64: [Int]] {
        try await read { db in
            // Each model's from the (model, number) index, in order, in one statement.
            var checkpoints: [Int64: [Int]] = [:]
            try Self.stepRows(
                db,
                sql:
                    "SELECT model_id, number FROM checkpoints WHERE model_id IN (SELECT value FROM json_each(?)) ORDER BY model_id, number",
                arguments: ["[" + models.map(String.init).joined(separator: ",") + "]"]
            ) { handle in
                checkpoints[sqlite3_column_int64(handle, 0), default: []].append(Int(sqlite3_column_int64(handle, 1)))
            }
            return checkpoints
        }
    }

    package func modelOf(checkpoint: Int64) async throws(GraftError) -> Int64? {
        try await read { db in try db.cachedOne(Int64.self, sql: "SELECT model_id FROM checkpoints WHERE id = ?", arguments: [checkpoint]) }
    }

    // MARK: Best

    /// Model names by id (ties between models go to the earliest name).
    static func names(_ db: Database, of models: [Int64]) throws -> [Int64: String] {
        var names: [Int64: String] = [:]
        for row in try db.cachedRows(
            sql: "SELECT id, name FROM models WHERE id IN (SELECT value FROM json_each(?))",
            arguments: ["[" + models.map(String.init).joined(separator: ",") + "]"])
        {
            names[row[0]] = row[1]
        }
        return names
    }

    /// The earliest checkpoint of a model with exactly `value` of the metric.
    static func checkpoint(_ db: Database, model: Int64, metric: String, split: String?, value: Double) throws -> RankedCandidate? {
        try db.cachedRows(
            sql: """
                SELECT \(Self.checkpointColumns), mt.value AS metric_value FROM metrics mt JOIN checkpoints c ON c.id = mt.checkpoint_id
                JOIN models m ON m.id = c.model_id
                WHERE mt.model_id = ? AND mt.name = ? AND mt.split = ? AND mt.value = ? ORDER BY c.number LIMIT 1
                """, arguments: [model, metric, split ?? "", value]
        ).first.map { RankedCandidate(checkpoint: Self.checkpointSummary($0), value: $0["metric_value"]) }
    }

    /// Walks a scope's candidates best first (the rank order of ``BestSelection/ranksBefore(_:_:direction:)``)
    /// to the first one `filter` leaves eligible. Without a filter the first row wins and a
    /// count is the candidates; with one, every row is tallied once (hidden ones not counted).
    static func walkCandidates(
        _ db: Database, metric: String, split: String?, scope: CandidateScope, direction: Direction, filter: CandidateFilter
    ) throws -> CandidateWalk {
        let (clause, argument): (String, Int64?) =
            switch scope {
            case .all: ("", nil)
            case .model(let id): (" AND mt.model_id = ?", id)
            case .subtree(let id): (" AND mt.model_id IN (\(Self.subtreeSQL))", id)
            }
        let from = """
            FROM metrics mt JOIN checkpoints c ON c.id = mt.checkpoint_id JOIN models m ON m.id = c.model_id
            WHERE mt.name = ? AND mt.split = ?\(clause)
            """
        var arguments: StatementArguments = [metric, split ?? ""]
        if let argument { arguments += [argument] }
        let candidates: Int, excluded: Int
        if filter.passesEverything {
            (candidates, excluded) = (try db.cachedOne(Int.self, sql: "SELECT count(*) " + from, arguments: arguments) ?? 0, 0)
        } else {
            var rows: [(model: Int64, checkpoint: Int64, name: String)] = []
            let all = try db.cachedCursor(sql: "SELECT c.id, c.model_id, m.name " + from, arguments: arguments)
            while let row = try all.next() { rows.append((row[1], row[0], row[2])) }
            (candidates, excluded) = filter.tally(rows)
        }
        guard candidates > excluded else { return CandidateWalk(candidates: candidates, winner: nil, excluded: excluded) }
        // Only ineligible candidates are skipped, so this stops early.
        let cursor = try db.cachedCursor(
            sql: "SELECT \(Self.checkpointColumns), mt.value AS metric_value, c.model_id AS model_id " + from
                + " ORDER BY " + BestSelection.sqlOrder(Self.rankColumn, direction: direction), arguments: arguments)
        while let row = try cursor.next() {
            guard filter.standing(model: row["model_id"], checkpoint: row["id"], name: row["name"]) == .eligible else { continue }
            return CandidateWalk(
                candidates: candidates, winner: RankedCandidate(checkpoint: Self.checkpointSummary(row), value: row["metric_value"]),
                excluded: excluded)
        }
        return CandidateWalk(candidates: candidates, winner: nil, excluded: excluded)
    }

    /// The column of each rank key in the candidate walk (`mt` metrics, `m` models, `c` checkpoints).
    static func rankColumn(_ key: BestSelection.SortKey) -> String {
        switch key {
        case .value: "mt.value"
        case .modelName: "m.name"
        case .checkpointNumber: "c.number"
        }
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

    // MARK: Lineage rows

    /// The columns of a lineage query (see ``lineageRows(_:sql:arguments:)``) for model `m`:
    /// all in the lineage-path index, so a range of it is read without a lookup per model.
    private static let lineageColumns = """
        m.lineage_path, m.parent_checkpoint_id, m.id, m.name, m.kind, m.transfer_mode, m.relation, m.parent_checkpoint_number,\
         m.checkpoint_count
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

    /// Runs a lineage query whose columns are: depth, lineage path, parent checkpoint id,
    /// id, name, kind, transfer mode, relation, parent checkpoint number, checkpoint count.
    /// Steps the statement through SQLite's C API: a tree of 10,000 models spent most of its
    /// time in per-row decoding otherwise.
    static func lineageRows(_ db: Database, sql: String, arguments: [any DatabaseValueConvertible]) throws -> [LineageRow] {
        var rows: [LineageRow] = []
        try stepRows(db, sql: sql, arguments: arguments) { handle in
            func text(_ column: Int32) -> String? {
                guard sqlite3_column_type(handle, column) != SQLITE_NULL, let bytes = sqlite3_column_text(handle, column) else {
                    return nil
                }
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
            rows.append(
                LineageRow(
                    link: parent(1), via: integer(2), id: sqlite3_column_int64(handle, 3),
                    name: text(4) ?? "", kind: text(5) ?? "", mode: text(6), relation: text(7), parentNumber: integer(8).map(Int.init),
                    checkpoints: Int(sqlite3_column_int64(handle, 9))))
        }
        return rows
    }

    /// Runs a cached statement through SQLite's C API, calling `body` with the statement at
    /// each row: for the large reads, where GRDB's per-row decoding dominated.
    static func stepRows(_ db: Database, sql: String, arguments: [any DatabaseValueConvertible], _ body: (OpaquePointer) throws -> Void)
        throws
    {
        let handle = try db.cachedStatement(sql: sql).sqliteStatement
        sqlite3_reset(handle)
        for (index, argument) in arguments.enumerated() {
            switch argument.databaseValue.storage {
            case .int64(let value): sqlite3_bind_int64(handle, Int32(index + 1), value)
            case .string(let value):
                // SQLITE_TRANSIENT (-1): SQLite copies the text.
                sqlite3_bind_text(handle, Int32(index + 1), value, -1, unsafeBitCast(-1, to: sqlite3_destructor_type.self))
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
}

// The best checkpoint of a scope, in one read transaction: at this size each round trip counts
// (a read costs ~0.15 ms; the query itself ~0.1 ms). The decisions are the core's policies.
extension SQLiteMetadataStore {
    package func best(_ query: BestQuery) async throws(GraftError) -> BestOutcome? {
        let (metric, split, direction) = (query.metric, query.split, query.direction)
        return try await read { db -> BestOutcome? in
            var candidateScope = CandidateScope.all
            switch query.scope {
            case .all: break
            case .model(let name), .under(let name):
                guard let id = try db.cachedOne(Int64.self, sql: "SELECT id FROM models WHERE name = ?", arguments: [name.value]) else {
                    return nil
                }
                if case .model = query.scope { candidateScope = .model(id) } else { candidateScope = .subtree(id) }
            }
            let open = query.includeFlagged ? [] : try Self.openAdvisories(db)
            let flaggedCheckpoints = AdvisoryInheritance.flaggedCheckpoints(open)
            if case .subtree(let root) = candidateScope, flaggedCheckpoints.isEmpty, query.visibility.showsAll,
                BestSelection.rankingByModelSummaries
            {
                // Without checkpoint-level flags whole models are flagged or not: rank each model
                // by its best value (one range of the metric summaries), then take the winner's
                // best checkpoint.
                let flagged = open.isEmpty ? [:] : try Self.flaggedModels(db, open, within: root)
                var perModel: [ModelBest] = []
                try Self.stepRows(db, sql: Self.bestPerModelSQL(direction), arguments: [root, metric, split ?? ""]) { handle in
                    perModel.append(
                        ModelBest(
                            model: sqlite3_column_int64(handle, 0), value: sqlite3_column_double(handle, 1),
                            count: Int(sqlite3_column_int64(handle, 2))))
                }
                let ranked = BestSelection.leaders(perModel, direction: direction) { flagged[$0] != nil }
                if ranked.candidates > 0 {
                    guard let top = ranked.top else { return .allFlagged(candidates: ranked.candidates) }
                    let winner =
                        ranked.leaders.count == 1
                        ? ranked.leaders[0] : BestSelection.earliest(try Self.names(db, of: ranked.leaders)) ?? ranked.leaders[0]
                    if let found = try Self.checkpoint(db, model: winner, metric: metric, split: split, value: top) {
                        return .found(found, candidates: ranked.candidates, excluded: ranked.excluded)
                    }
                }
            }
            var flaggedModels: Set<Int64> = []
            if !open.isEmpty {
                switch candidateScope {
                case .model(let id):
                    // One model: flagged as a whole only by what it carries or inherits.
                    if !AdvisoryInheritance.inherited(chain: try Self.chain(db, model: id, full: true), open: open).isEmpty {
                        flaggedModels = [id]
                    }
                case .subtree(let root): flaggedModels = Set(try Self.flaggedModels(db, open, within: root).keys)
                case .all: flaggedModels = Set(try Self.flaggedModels(db, open, within: nil).keys)
                }
            }
            let filter = CandidateFilter(flaggedModels: flaggedModels, flaggedCheckpoints: flaggedCheckpoints, visibility: query.visibility)
            let walk = try Self.walkCandidates(
                db, metric: metric, split: split, scope: candidateScope, direction: direction, filter: filter)
            guard walk.candidates > 0 else {
                return .noCandidates(known: try db.cachedAll(String.self, sql: "SELECT DISTINCT name FROM metrics ORDER BY name LIMIT 20"))
            }
            guard let winner = walk.winner else { return .allFlagged(candidates: walk.candidates) }
            return .found(winner, candidates: walk.candidates, excluded: walk.excluded)
        }
    }

    /// Models flagged as a whole, with the open advisories each carries or inherits (see
    /// ``AdvisoryInheritance``); with `root`, only the models of its subtree.
    static func flaggedModels(_ db: Database, _ open: [OpenAdvisory], within root: Int64?) throws -> [Int64: Set<String>] {
        let plan = AdvisoryInheritance.FlagPlan(open, within: root)
        guard !plan.isEmpty else { return [:] }
        var students: [Int64: [Int64]] = [:]
        for checkpoint in plan.seedCheckpoints {
            students[checkpoint] = try db.cachedAll(
                Int64.self, sql: "SELECT model_id FROM model_parents WHERE parent_checkpoint_id = ?", arguments: [checkpoint])
        }
        let rootChain = try root.map { try Self.chain(db, model: $0, full: true) } ?? []
        var subtrees: [Int64: [Int64]] = [:]
        for model in plan.subtreeRoots(students: students, rootChain: rootChain) {
            subtrees[model] = try db.cachedAll(Int64.self, sql: subtreeSQL, arguments: [model])
        }
        return plan.flags(students: students, rootChain: rootChain, subtrees: subtrees)
    }
}

/// Which checkpoints `walkCandidates` ranks.
enum CandidateScope: Sendable, Equatable {
    case all
    case model(Int64)
    /// A model and its descendants, any depth.
    case subtree(Int64)
}

/// What a walk of candidates found.
struct CandidateWalk: Sendable {
    /// Candidates in scope (checkpoints with the metric).
    var candidates: Int
    /// The best candidate not flagged.
    var winner: RankedCandidate?
    /// Flagged candidates (all of them, not only those ranked above the winner).
    var excluded: Int
    init(candidates: Int, winner: RankedCandidate?, excluded: Int) {
        self.candidates = candidates
        self.winner = winner
        self.excluded = excluded
    }
}

// MARK: Exposure

extension SQLiteMetadataStore {
    package func exposureRows(models: [Int64], checkpoints: [Int64]) async throws(GraftError) -> ExposureRows {
        try await read { db in
            var rows = ExposureRows()
            // SQLite returns the bare columns of the row that holds max(number).
            try Self.stepRows(
                db,
                sql: """
                    SELECT model_id, id, max(number) FROM checkpoints WHERE model_id IN (SELECT value FROM json_each(?))\
                     GROUP BY model_id
                    """,
                arguments: ["[" + models.map(String.init).joined(separator: ",") + "]"]
            ) { handle in
                rows.newest[sqlite3_column_int64(handle, 0)] = (sqlite3_column_int64(handle, 1), Int(sqlite3_column_int64(handle, 2)))
            }
            let wanted = Set(checkpoints).union(rows.newest.values.map(\.id))
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT checkpoint_id, name, dtype, shape, element_count, byte_length, blob_digest FROM checkpoint_tensors\
                     WHERE checkpoint_id IN (SELECT value FROM json_each(?)) ORDER BY checkpoint_id, position
                    """,
                arguments: ["[" + wanted.map(String.init).joined(separator: ",") + "]"])
            {
                rows.tensors[row["checkpoint_id"], default: []].append(
                    TensorEntry(
                        name: row["name"], dtype: DType(rawValue: row["dtype"]) ?? .u8, shape: decodeShape(row["shape"]),
                        parameters: row["element_count"], bytes: row["byte_length"],
                        digest: try Digest(parsing: row["blob_digest"] as String)))
            }
            return rows
        }
    }

    package func driftSums(_ pairs: [DriftPair]) async throws(GraftError) -> [DriftPair: DriftSums] {
        guard !pairs.isEmpty else { return [:] }
        return try await read { db in
            var sums: [DriftPair: DriftSums] = [:]
            for pair in pairs {
                if let row = try Row.fetchOne(
                    db.cachedStatement(
                        sql: """
                            SELECT difference, magnitude FROM tensor_drift WHERE ancestor_digest = ? AND descendant_digest = ? AND dtype = ?
                            """),
                    arguments: [pair.ancestor.hex, pair.descendant.hex, pair.dtype.rawValue])
                {
                    sums[pair] = DriftSums(difference: row["difference"], magnitude: row["magnitude"])
                }
            }
            return sums
        }
    }

    package func recordDriftSums(_ sums: [DriftPair: DriftSums]) async throws(GraftError) {
        guard !sums.isEmpty else { return }
        try await write { db in
            for (pair, value) in sums {
                try db.cachedStatement(
                    sql: """
                        INSERT INTO tensor_drift (ancestor_digest, descendant_digest, dtype, difference, magnitude) VALUES (?, ?, ?, ?, ?)\
                         ON CONFLICT DO NOTHING
                        """
                ).execute(arguments: [pair.ancestor.hex, pair.descendant.hex, pair.dtype.rawValue, value.difference, value.magnitude])
            }
        }
    }
}
