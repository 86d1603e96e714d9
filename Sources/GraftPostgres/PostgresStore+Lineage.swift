package import GraftCore
import PostgresNIO
import SafeTensors

// Lineage rows, best candidates and what the web view reads. A subtree is one key of the
// lineage array's GIN index (`lineage @> ARRAY[root]`); ancestors are the array itself
// (docs/ARCHITECTURE.md, "PostgreSQL lineage", and `make bench-pg-lineage`).
extension PostgresMetadataStore {
    package func chain(model: Int64, full: Bool) async throws(GraftError) -> [LineageRow] {
        try await read { connection in try await self.chain(connection, model: model, full: full) }
    }

    /// The model and its ancestors, nearest first, each row with its own parent edge; a row's
    /// parent is the next row.
    func chain(_ connection: PostgresConnection, model: Int64, full: Bool) async throws -> [LineageRow] {
        let rows = try await connection.all(
            """
            SELECT a.depth, \(unescaped: Self.lineageColumns) FROM models s
            CROSS JOIN LATERAL unnest(s.lineage) WITH ORDINALITY AS a(id, depth) JOIN models m ON m.id = a.id
            WHERE s.id = \(model) AND a.depth > \(unescaped: full ? "0" : "cardinality(s.lineage) - 2")
            ORDER BY a.depth DESC
            """, logger: logger)
        var up = try rows.map(Self.lineageRow)
        for index in up.indices.dropLast() where up[index].relation != nil {
            (up[index].link, up[index].parentName) = (up[index + 1].id, up[index + 1].name)
        }
        return up
    }

    /// Every descendant of a model, any depth, parents before children (array order is
    /// element-wise, so a prefix sorts before its extensions).
    func descendants(_ connection: PostgresConnection, of model: Int64) async throws -> [LineageRow] {
        try await connection.all(
            """
            SELECT 0, \(unescaped: Self.lineageColumns) FROM models m
            WHERE m.lineage @> ARRAY[\(model)]::bigint[] AND m.id <> \(model) ORDER BY m.lineage
            """, logger: logger
        ).map(Self.lineageRow)
    }

    package func lineage(model: Int64, parts: Registry.LineageParts, metric: String?, direction: Direction?) async throws(GraftError)
        -> LineageSnapshot
    {
        try await read { connection in
            let open = try await self.openAdvisories(connection)
            let up = try await self.chain(connection, model: model, full: parts != .descendants || !open.isEmpty)
            let down = parts == .ancestors ? [] : try await self.descendants(connection, of: model)
            var best: [Int64: Double] = [:]
            if let metric, let direction {
                let ids = (up + down).map(\.id)
                for row in try await connection.all(
                    """
                    SELECT model_id, \(unescaped: direction == .max ? "max(max_value)" : "min(min_value)") FROM metric_summaries
                    WHERE name = \(metric) AND model_id = ANY(\(ids)) GROUP BY model_id
                    """, logger: self.logger)
                {
                    best[try row[0]] = try row[1]
                }
            }
            return LineageSnapshot(
                up: up, down: down, open: open, checkpointLabels: try await self.checkpointAdvisoryLabels(connection), best: best)
        }
    }

    package func affectedRows(model: Int64) async throws(GraftError) -> (
        open: [OpenAdvisory], chain: [LineageRow], descendants: [LineageRow]
    ) {
        try await read { connection in
            let open = try await self.openAdvisories(connection)
            guard !open.isEmpty else { return ([], [], []) }
            let chain = try await self.chain(connection, model: model, full: true)
            guard !AdvisoryInheritance.inherited(chain: chain, open: open).isEmpty || AdvisoryInheritance.anyWithin(open, model: model)
            else {
                return (open, chain, [])
            }
            return (open, chain, try await self.descendants(connection, of: model))
        }
    }

    package func checkpointNumbers(models: [Int64]) async throws(GraftError) -> [Int64: [Int]] {
        try await withConnection { connection in
            var checkpoints: [Int64: [Int]] = [:]
            for row in try await connection.all(
                "SELECT model_id, number FROM checkpoints WHERE model_id = ANY(\(models)) ORDER BY model_id, number", logger: self.logger)
            {
                checkpoints[try row[0], default: []].append(try row[1])
            }
            return checkpoints
        }
    }

    package func modelOf(checkpoint: Int64) async throws(GraftError) -> Int64? {
        try await withConnection { connection in
            try await connection.one("SELECT model_id FROM checkpoints WHERE id = \(checkpoint)", logger: self.logger).map { row throws in
                try row[0] as Int64
            }
        }
    }

    // MARK: Lineage rows

    /// The columns of a lineage query after its first (depth): the parent's id (the lineage
    /// array's next-to-last element), parent checkpoint, id, name, kind, mode, relation, parent
    /// checkpoint number and checkpoint count of model `m`.
    static let lineageColumns = """
        m.lineage[cardinality(m.lineage) - 1], m.parent_checkpoint_id, m.id, m.name, m.kind, m.transfer_mode, m.relation,
        m.parent_checkpoint_number, m.checkpoint_count
        """

    static func lineageRow(_ row: Row) throws -> LineageRow {
        LineageRow(
            link: try row[1], via: try row[2], id: try row[3], name: try row[4], kind: try row[5], mode: try row[6], relation: try row[7],
            parentNumber: try row[8], checkpoints: try row[9])
    }

    // MARK: Browsing (the web view)

    package func modelIndex() async throws(GraftError) -> [ModelIndexEntry] {
        try await read { connection in
            let flagged = try await self.flaggedModels(connection, try await self.openAdvisories(connection), within: nil)
            return try await connection.all(
                """
                SELECT m.id, m.name, m.kind, m.transfer_mode, m.relation, p.name, m.parent_checkpoint_number, m.checkpoint_count,\
                 m.description, m.created_at
                FROM models m LEFT JOIN model_parents mp ON mp.model_id = m.id LEFT JOIN models p ON p.id = mp.parent_model_id
                ORDER BY m.name
                """, logger: self.logger
            ).map { row throws in
                let id: Int64 = try row[0]
                let parentName: String? = try row[5]
                let parentNumber: Int? = try row[6]
                return ModelIndexEntry(
                    name: try row[1], kind: try row[2], mode: (try row[3] as String?).flatMap(TransferMode.init(rawValue:)),
                    relation: (try row[4] as String?).flatMap(Relation.init(rawValue:)),
                    parent: parentName.map { "\($0)@\(parentNumber ?? 0)" },
                    checkpoints: try row[7], description: try row[8], createdAt: try row[9],
                    advisories: flagged[id].map { $0.sorted() } ?? [])
            }
        }
    }

    package func curvePoints(model: Int64) async throws(GraftError) -> [CurveSeries] {
        try await withConnection { connection in
            var series: [CurveSeries] = []
            for row in try await connection.all(
                """
                SELECT k.name, p.step, p.value FROM curves k JOIN curve_points p ON p.curve_id = k.id WHERE k.model_id = \(model)\
                 ORDER BY k.name, p.step
                """,
                logger: self.logger)
            {
                let name: String = try row[0]
                if series.last?.name != name { series.append(CurveSeries(name: name, steps: [], values: [])) }
                series[series.count - 1].steps.append(try row[1])
                series[series.count - 1].values.append(try row[2])
            }
            return series
        }
    }

    package func metricKeys(subtree: Int64, limit: Int, visibility: ModelVisibility) async throws(GraftError) -> [MetricKey] {
        try await withConnection { connection in
            // The subtree's first `limit` models in lineage order (the model itself first).
            var keys: [MetricKey] = []
            for row in try await connection.all(
                """
                SELECT s.name, s.split, t.name FROM (SELECT m.id, m.name FROM models m WHERE m.lineage @> ARRAY[\(subtree)]::bigint[]\
                 ORDER BY m.lineage LIMIT \(limit)) t
                JOIN metric_summaries s ON s.model_id = t.id ORDER BY s.name, s.split
                """, logger: self.logger)
            where visibility.shows(try row[2] as String) {
                let key = MetricKey(name: try row[0], split: (try row[1] as String).nilIfEmpty)
                if keys.last != key { keys.append(key) }
            }
            return keys
        }
    }

    // MARK: Best

    package func best(_ query: BestQuery) async throws(GraftError) -> BestOutcome? {
        let (metric, split, direction, scope) = (query.metric, query.split, query.direction, query.scope)
        return try await read { connection -> BestOutcome? in
            var candidateScope = CandidateScope.all
            switch scope {
            case .all: break
            case .model(let name), .under(let name):
                guard let row = try await connection.one("SELECT id FROM models WHERE name = \(name.value)", logger: self.logger) else {
                    return nil
                }
                let id: Int64 = try row[0]
                if case .model = scope { candidateScope = .model(id) } else { candidateScope = .subtree(id) }
            }
            let open = query.includeFlagged ? [] : try await self.openAdvisories(connection)
            let flaggedCheckpoints = AdvisoryInheritance.flaggedCheckpoints(open)
            if case .subtree(let root) = candidateScope, flaggedCheckpoints.isEmpty, query.visibility.showsAll,
                BestSelection.rankingByModelSummaries
            {
                // Without checkpoint-level flags whole models are flagged or not: rank each model
                // by its best value (the summaries of one GIN key), then take the winner's best checkpoint.
                let flagged = open.isEmpty ? [:] : try await self.flaggedModels(connection, open, within: root)
                let perModel = try await connection.all(
                    """
                    SELECT model_id, \(unescaped: direction == .max ? "max_value" : "min_value"), count FROM metric_summaries
                    WHERE name = \(metric) AND split = \(split ?? "") AND lineage @> ARRAY[\(root)]::bigint[]
                    """, logger: self.logger
                ).map { row throws in ModelBest(model: try row[0], value: try row[1], count: try row[2]) }
                let ranked = BestSelection.leaders(perModel, direction: direction) { flagged[$0] != nil }
                if ranked.candidates > 0 {
                    guard let top = ranked.top else { return .allFlagged(candidates: ranked.candidates) }
                    var winner = ranked.leaders[0]
                    if ranked.leaders.count > 1 {
                        var names: [Int64: String] = [:]
                        for row in try await connection.all(
                            "SELECT id, name FROM models WHERE id = ANY(\(ranked.leaders))", logger: self.logger)
                        {
                            names[try row[0]] = try row[1]
                        }
                        winner = BestSelection.earliest(names) ?? winner
                    }
                    if let found = try await connection.one(
                        """
                        SELECT \(unescaped: Self.checkpointColumns), mt.value AS metric_value FROM metrics mt JOIN checkpoints c ON c.id\
                         = mt.checkpoint_id
                        JOIN models m ON m.id = c.model_id
                        WHERE mt.model_id = \(winner) AND mt.name = \(metric) AND mt.split = \(split ?? "") AND mt.value = \(top) ORDER\
                         BY c.number LIMIT 1
                        """, logger: self.logger)
                    {
                        return .found(
                            RankedCandidate(checkpoint: try Self.checkpointSummary(found), value: try found["metric_value"]),
                            candidates: ranked.candidates,
                            excluded: ranked.excluded)
                    }
                }
            }
            var flaggedModels: Set<Int64> = []
            if !open.isEmpty {
                switch candidateScope {
                case .model(let id):
                    if !AdvisoryInheritance.inherited(chain: try await self.chain(connection, model: id, full: true), open: open).isEmpty {
                        flaggedModels = [id]
                    }
                case .subtree(let root): flaggedModels = Set(try await self.flaggedModels(connection, open, within: root).keys)
                case .all: flaggedModels = Set(try await self.flaggedModels(connection, open, within: nil).keys)
                }
            }
            let filter = CandidateFilter(flaggedModels: flaggedModels, flaggedCheckpoints: flaggedCheckpoints, visibility: query.visibility)
            return try await self.walkCandidates(
                connection, metric: metric, split: split, scope: candidateScope, direction: direction, filter: filter)
        }
    }

    /// Ranks a scope's candidates best first (``BestSelection``'s order) to the first one
    /// `filter` leaves eligible. Without a filter the first row wins and a count is the
    /// candidates; with one, every row is tallied once (hidden ones not counted).
    private func walkCandidates(
        _ connection: PostgresConnection, metric: String, split: String?, scope: CandidateScope, direction: Direction,
        filter: CandidateFilter
    ) async throws -> BestOutcome {
        let clause: String =
            switch scope {
            case .all: ""
            case .model(let id): " AND mt.model_id = \(id)"
            case .subtree(let id): " AND mt.model_id IN (SELECT id FROM models WHERE lineage @> ARRAY[\(id)]::bigint[])"
            }
        let from = """
            FROM metrics mt JOIN checkpoints c ON c.id = mt.checkpoint_id JOIN models m ON m.id = c.model_id
            WHERE mt.name = $1 AND mt.split = $2\(clause)
            """
        func query(_ select: String) -> PostgresQuery {
            var binds = PostgresBindings()
            binds.append(metric)
            binds.append(split ?? "")
            return PostgresQuery(unsafeSQL: select + " " + from, binds: binds)
        }
        let candidates: Int, excluded: Int
        if filter.passesEverything {
            (candidates, excluded) = (
                try await connection.one(query("SELECT count(*)"), logger: logger).map { row throws in try row[0] as Int } ?? 0, 0
            )
        } else {
            let rows = try await connection.all(query("SELECT c.id, c.model_id, m.name"), logger: logger).map { row throws in
                (model: try row[1] as Int64, checkpoint: try row[0] as Int64, name: try row[2] as String)
            }
            (candidates, excluded) = filter.tally(rows)
        }
        guard candidates > 0 else {
            let known = try await connection.all("SELECT DISTINCT name FROM metrics ORDER BY name LIMIT 20", logger: logger).map {
                row throws in try row[0] as String
            }
            return .noCandidates(known: known)
        }
        guard candidates > excluded else { return .allFlagged(candidates: candidates) }
        // Candidates in rank order, a thousand at a time: with few ineligible ones the first page suffices.
        var offset = 0
        while true {
            let page = try await connection.all(
                query("SELECT \(Self.checkpointColumns), mt.value AS metric_value, c.model_id AS model_id")
                    .appendingOrder(
                        " ORDER BY \(BestSelection.sqlOrder(Self.rankColumn, direction: direction)) LIMIT 1000 OFFSET \(offset)"),
                logger: logger)
            for row in page where filter.standing(model: try row["model_id"], checkpoint: try row["id"], name: try row["name"]) == .eligible
            {
                return .found(
                    RankedCandidate(checkpoint: try Self.checkpointSummary(row), value: try row["metric_value"]), candidates: candidates,
                    excluded: excluded)
            }
            guard page.count == 1000 else { return .allFlagged(candidates: candidates) }
            offset += 1000
        }
    }

    /// The column of each rank key in the candidate walk (`mt` metrics, `m` models, `c` checkpoints).
    static func rankColumn(_ key: BestSelection.SortKey) -> String {
        switch key {
        case .value: "mt.value"
        case .modelName: "m.name"
        case .checkpointNumber: "c.number"
        }
    }

    /// Models flagged as a whole, with the open advisories each carries or inherits (see
    /// ``AdvisoryInheritance``); with `root`, only the models of its subtree.
    func flaggedModels(_ connection: PostgresConnection, _ open: [OpenAdvisory], within root: Int64?) async throws -> [Int64: Set<String>] {
        let plan = AdvisoryInheritance.FlagPlan(open, within: root)
        guard !plan.isEmpty else { return [:] }
        var students: [Int64: [Int64]] = [:]
        for checkpoint in plan.seedCheckpoints {
            students[checkpoint] = try await connection.all(
                "SELECT model_id FROM model_parents WHERE parent_checkpoint_id = \(checkpoint)", logger: logger
            ).map { row throws in try row[0] as Int64 }
        }
        var chain: [LineageRow] = []
        if let root { chain = try await self.chain(connection, model: root, full: true) }
        var subtrees: [Int64: [Int64]] = [:]
        for model in plan.subtreeRoots(students: students, rootChain: chain) {
            subtrees[model] = try await connection.all(
                "SELECT id FROM models WHERE lineage @> ARRAY[\(model)]::bigint[]", logger: logger
            ).map { row throws in try row[0] as Int64 }
        }
        return plan.flags(students: students, rootChain: chain, subtrees: subtrees)
    }
}

/// Which checkpoints a walk of candidates ranks.
enum CandidateScope: Sendable, Equatable {
    case all
    case model(Int64)
    case subtree(Int64)
}

extension PostgresQuery {
    /// The query with trusted SQL (an ORDER BY of constants) appended.
    func appendingOrder(_ sql: String) -> PostgresQuery {
        PostgresQuery(unsafeSQL: self.sql + sql, binds: binds)
    }
}

// MARK: Exposure

extension PostgresMetadataStore {
    package func exposureRows(models: [Int64], checkpoints: [Int64]) async throws(GraftError) -> ExposureRows {
        try await read { connection in
            var rows = ExposureRows()
            for row in try await connection.all(
                """
                SELECT DISTINCT ON (model_id) model_id, id, number FROM checkpoints WHERE model_id = ANY(\(models))
                ORDER BY model_id, number DESC
                """, logger: self.logger)
            {
                rows.newest[try row[0]] = (try row[1], try row[2])
            }
            let wanted = Array(Set(checkpoints).union(rows.newest.values.map(\.id)))
            for row in try await connection.all(
                """
                SELECT checkpoint_id, name, dtype, shape::text AS shape, element_count, byte_length, blob_digest FROM checkpoint_tensors
                WHERE checkpoint_id = ANY(\(wanted)) ORDER BY checkpoint_id, position
                """, logger: self.logger)
            {
                rows.tensors[try row["checkpoint_id"], default: []].append(
                    TensorEntry(
                        name: try row["name"], dtype: DType(rawValue: try row["dtype"]) ?? .u8, shape: decodeShape(try row["shape"]),
                        parameters: try row["element_count"], bytes: try row["byte_length"],
                        digest: try Digest(parsing: try row["blob_digest"] as String)))
            }
            return rows
        }
    }

    package func driftSums(_ pairs: [DriftPair]) async throws(GraftError) -> [DriftPair: DriftSums] {
        guard !pairs.isEmpty else { return [:] }
        return try await withConnection { connection in
            var sums: [DriftPair: DriftSums] = [:]
            let wanted = Dictionary(pairs.map { ("\($0.ancestor.hex) \($0.descendant.hex) \($0.dtype.rawValue)", $0) }) { first, _ in first
            }
            for row in try await connection.all(
                """
                SELECT d.ancestor_digest, d.descendant_digest, d.dtype, d.difference, d.magnitude
                FROM unnest(\(pairs.map(\.ancestor.hex))::text[], \(pairs.map(\.descendant.hex))::text[],\
                 \(pairs.map(\.dtype.rawValue))::text[]) AS p(a, d, t)
                JOIN tensor_drift d ON d.ancestor_digest = p.a AND d.descendant_digest = p.d AND d.dtype = p.t
                """, logger: self.logger)
            {
                let key = "\(try row[0] as String) \(try row[1] as String) \(try row[2] as String)"
                if let pair = wanted[key] { sums[pair] = DriftSums(difference: try row[3], magnitude: try row[4]) }
            }
            return sums
        }
    }

    package func recordDriftSums(_ sums: [DriftPair: DriftSums]) async throws(GraftError) {
        guard !sums.isEmpty else { return }
        let entries = Array(sums)
        try await withConnection { connection in
            try await connection.run(
                """
                INSERT INTO tensor_drift (ancestor_digest, descendant_digest, dtype, difference, magnitude)
                SELECT * FROM unnest(\(entries.map(\.key.ancestor.hex))::text[], \(entries.map(\.key.descendant.hex))::text[],\
                 \(entries.map(\.key.dtype.rawValue))::text[], \(entries.map(\.value.difference))::float8[],\
                 \(entries.map(\.value.magnitude))::float8[])
                ON CONFLICT DO NOTHING
                """, logger: self.logger)
        }
    }
}
