import GRDB
import GRDBSQLite
package import GraftCore

// What the web view reads: the model index, curve points, the metrics of a family.
extension SQLiteMetadataStore {
    package func modelIndex() async throws(GraftError) -> [ModelIndexEntry] {
        try await read { db in
            let flagged = try Self.flaggedModels(db, try Self.openAdvisories(db), within: nil)
            var entries: [ModelIndexEntry] = []
            // Every model is one row: stepped through the C API (10,000 rows decode in a few ms).
            try Self.stepRows(db, sql: Self.indexSQL, arguments: []) { handle in
                func text(_ column: Int32) -> String? {
                    guard sqlite3_column_type(handle, column) != SQLITE_NULL, let bytes = sqlite3_column_text(handle, column) else {
                        return nil
                    }
                    return String(cString: bytes)
                }
                let id = sqlite3_column_int64(handle, 0)
                var parent: String? = nil
                if let name = text(5) { parent = "\(name)@\(sqlite3_column_int64(handle, 6))" }
                entries.append(
                    ModelIndexEntry(
                        name: text(1) ?? "", kind: text(2) ?? "", mode: text(3).flatMap(TransferMode.init(rawValue:)),
                        relation: text(4).flatMap(Relation.init(rawValue:)), parent: parent,
                        checkpoints: Int(sqlite3_column_int64(handle, 7)),
                        description: text(8), createdAt: text(9) ?? "", advisories: flagged[id].map { $0.sorted() } ?? []))
            }
            return entries
        }
    }

    static let indexSQL = """
        SELECT m.id, m.name, m.kind, m.transfer_mode, m.relation, p.name, m.parent_checkpoint_number, m.checkpoint_count, m.description,\
         m.created_at
        FROM models m LEFT JOIN model_parents mp ON mp.model_id = m.id LEFT JOIN models p ON p.id = mp.parent_model_id
        ORDER BY m.name
        """

    package func curvePoints(model: Int64) async throws(GraftError) -> [CurveSeries] {
        try await read { db in
            var series: [CurveSeries] = []
            try Self.stepRows(
                db,
                sql:
                    """
                    SELECT k.name, p.step, p.value FROM curves k JOIN curve_points p ON p.curve_id = k.id WHERE k.model_id = ? ORDER\
                     BY k.name, p.step
                    """,
                arguments: [model]
            ) { handle in
                let name = sqlite3_column_text(handle, 0).map { String(cString: $0) } ?? ""
                if series.last?.name != name { series.append(CurveSeries(name: name, steps: [], values: [])) }
                series[series.count - 1].steps.append(Int(sqlite3_column_int64(handle, 1)))
                series[series.count - 1].values.append(sqlite3_column_double(handle, 2))
            }
            return series
        }
    }

    package func metricKeys(subtree: Int64, limit: Int, visibility: ModelVisibility) async throws(GraftError) -> [MetricKey] {
        try await read { db in
            // The subtree's first `limit` models in path order (the model itself first), then
            // their summaries by primary key: bounded by `limit`, whatever the family's size.
            let rows = try db.cachedRows(
                sql: """
                    SELECT s.name, s.split, t.model FROM (SELECT m.id, m.name AS model FROM \(Self.subtreeJoin) WHERE r.id = ? ORDER BY\
                     m.lineage_path LIMIT ?) t
                    JOIN metric_summaries s ON s.model_id = t.id ORDER BY s.name, s.split
                    """, arguments: [subtree, limit])
            var keys: [MetricKey] = []
            for row in rows where visibility.shows(row["model"]) {
                let key = MetricKey(name: row["name"], split: (row["split"] as String).nilIfEmpty)
                if keys.last != key { keys.append(key) }
            }
            return keys
        }
    }
}
