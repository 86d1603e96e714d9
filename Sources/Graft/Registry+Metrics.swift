import Foundation
import GRDB

/// One evaluation metric of a checkpoint.
public struct MetricValue: Sendable, Codable, Equatable {
    public var name: String
    /// The split or dataset it was measured on; absent when none was given.
    public var split: String?
    public var value: Double
}

/// A `KEY=VALUE` pair as typed on the command line, validated.
public struct MetricAssignment: Sendable, Equatable {
    public var name: String
    public var value: Double

    /// Parses `KEY=VALUE`: KEY is a metric name, VALUE a finite number.
    ///
    /// - Throws: ``GraftError/invalidMetric(_:reason:)``.
    public init(parsing text: String) throws(GraftError) {
        guard let equals = text.firstIndex(of: "=") else {
            throw .invalidMetric(text, reason: "expected KEY=VALUE, e.g. accuracy=0.91")
        }
        let key = String(text[..<equals]), raw = String(text[text.index(after: equals)...])
        try Self.checkName(key)
        guard let value = Double(raw.trimmingCharacters(in: .whitespaces)) else {
            throw .invalidMetric(text, reason: "`\(raw)` is not a number")
        }
        guard value.isFinite else { throw .invalidMetric(text, reason: "NaN and infinities are not recorded; log a finite value") }
        name = key
        self.value = value
    }

    public init(name: String, value: Double) throws(GraftError) {
        try Self.checkName(name)
        guard value.isFinite else { throw .invalidMetric("\(name)=\(value)", reason: "NaN and infinities are not recorded; log a finite value") }
        self.name = name
        self.value = value
    }

    /// Metric and split names: 1–128 printable ASCII characters, no spaces, `=` or `,`
    /// (`val/accuracy` and `top-1` are fine).
    static func checkName(_ name: String) throws(GraftError) {
        guard !name.isEmpty, name.utf8.count <= 128,
            name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "=") && $0 != UInt8(ascii: ",") && $0 != UInt8(ascii: "\"") })
        else {
            throw .invalidMetric(name, reason: "metric and split names are 1–128 printable ASCII characters without spaces, `=`, `,` or quotes")
        }
    }
}

/// A training curve, summarised.
public struct CurveSummary: Sendable, Codable, Equatable {
    public var name: String
    public var points: Int
    public var firstStep: Int
    public var lastStep: Int
    public var lastValue: Double
    public var minimum: Double
    public var maximum: Double
}

/// The metrics of a checkpoint, or of every checkpoint of a model with its curves.
public struct MetricsReport: Sendable, Codable, Equatable {
    public struct Entry: Sendable, Codable, Equatable {
        public var checkpoint: String
        public var metrics: [MetricValue]
    }
    public var checkpoints: [Entry]
    public var curves: [CurveSummary]
}

/// What a curve import stored.
public struct CurveImportResult: Sendable, Codable, Equatable {
    public var model: ModelName
    public var rows: Int
    public var curves: [String]
}

extension Registry {
    /// Records evaluation metrics for a checkpoint (a bare NAME means its latest); a value for
    /// the same metric and split is replaced.
    @discardableResult
    public func logMetrics(_ reference: Reference, _ values: [MetricAssignment], split: String? = nil) async throws(GraftError) -> String {
        if let split { try MetricAssignment.checkName(split) }
        let (id, summary) = try await resolve(reference)
        try await write { db in try Self.insertMetrics(db, checkpointID: id, values, split: split) }
        return summary.ref
    }

    static func insertMetrics(_ db: Database, checkpointID: Int64, _ values: [MetricAssignment], split: String?) throws {
        let statement = try db.cachedStatement(
            sql: """
                INSERT INTO metrics (checkpoint_id, model_id, name, split, value, created_at)
                VALUES (?, (SELECT model_id FROM checkpoints WHERE id = ?), ?, ?, ?, ?)
                ON CONFLICT (checkpoint_id, name, split) DO UPDATE SET value = excluded.value, created_at = excluded.created_at
                """)
        let now = timestamp()
        for value in values { try statement.execute(arguments: [checkpointID, checkpointID, value.name, split ?? "", value.value, now]) }
    }

    /// Records training-curve points of a model at one step.
    public func logCurve(model name: ModelName, step: Int, _ values: [MetricAssignment]) async throws(GraftError) {
        guard let modelID = try await modelID(name) else { throw try await notFound(name) }
        try await write { db in
            try Self.insertCurvePoints(db, modelID: modelID, values.map { CurvePoint(name: $0.name, step: step, value: $0.value) })
        }
    }

    /// Imports training curves from CSV or JSON lines (see ``CurveParser``) in one transaction.
    public func importCurves(model name: ModelName, bytes: [UInt8]) async throws(GraftError) -> CurveImportResult {
        guard let modelID = try await modelID(name) else { throw try await notFound(name) }
        let points = try CurveParser.parse(bytes)
        try await write { db in try Self.insertCurvePoints(db, modelID: modelID, points) }
        return CurveImportResult(model: name, rows: points.count, curves: Array(Set(points.map(\.name))).sorted())
    }

    static func insertCurvePoints(_ db: Database, modelID: Int64, _ points: [CurvePoint]) throws {
        let statement = try db.cachedStatement(
            sql: "INSERT INTO curve_points (model_id, name, step, value) VALUES (?, ?, ?, ?) ON CONFLICT (model_id, name, step) DO UPDATE SET value = excluded.value")
        for point in points {
            statement.setUncheckedArguments([modelID, point.name, point.step, point.value])
            try statement.execute()
        }
    }

    /// The metrics of a checkpoint; for a bare model name, of all its checkpoints and its curves.
    public func metrics(_ reference: Reference) async throws(GraftError) -> MetricsReport {
        if case .model(let name) = reference {
            guard let modelID = try await modelID(name) else { throw try await notFound(name) }
            return try await read { db in
                let rows = try Row.fetchAll(
                    db, sql: """
                        SELECT c.number, mt.name, mt.split, mt.value FROM checkpoints c JOIN metrics mt ON mt.checkpoint_id = c.id
                        WHERE c.model_id = ? ORDER BY c.number, mt.name, mt.split
                        """, arguments: [modelID])
                var entries: [MetricsReport.Entry] = []
                for row in rows {
                    let ref = "\(name)@\(row["number"] as Int)"
                    let value = MetricValue(name: row["name"], split: (row["split"] as String).nilIfEmpty, value: row["value"])
                    if entries.last?.checkpoint == ref { entries[entries.count - 1].metrics.append(value) } else { entries.append(.init(checkpoint: ref, metrics: [value])) }
                }
                let curves = try Row.fetchAll(
                    db, sql: """
                        SELECT name, count(*) AS points, min(step) AS first, max(step) AS last, min(value) AS lo, max(value) AS hi,
                               (SELECT value FROM curve_points q WHERE q.model_id = p.model_id AND q.name = p.name ORDER BY step DESC LIMIT 1) AS latest
                        FROM curve_points p WHERE model_id = ? GROUP BY name ORDER BY name
                        """, arguments: [modelID]
                ).map { row in
                    CurveSummary(name: row["name"], points: row["points"], firstStep: row["first"], lastStep: row["last"], lastValue: row["latest"], minimum: row["lo"], maximum: row["hi"])
                }
                return MetricsReport(checkpoints: entries, curves: curves)
            }
        }
        let (id, summary) = try await resolve(reference)
        return try await read { db in
            let values = try Row.fetchAll(db, sql: "SELECT name, split, value FROM metrics WHERE checkpoint_id = ? ORDER BY name, split", arguments: [id])
                .map { MetricValue(name: $0["name"], split: ($0["split"] as String).nilIfEmpty, value: $0["value"]) }
            return MetricsReport(checkpoints: [.init(checkpoint: summary.ref, metrics: values)], curves: [])
        }
    }
}

/// One training-curve point.
public struct CurvePoint: Sendable, Equatable {
    public var name: String
    public var step: Int
    public var value: Double
}

/// Parses training curves from CSV or JSON lines.
///
/// - CSV, wide: a header `step,loss,accuracy,…`, one row per step (empty cells are skipped);
/// - CSV, long: a header with `step`, `name` and `value` columns;
/// - JSON lines: one object per line, `{"step": 10, "loss": 0.4, …}` or `{"step": 10, "name": "loss", "value": 0.4}`.
/// NaN, infinities and non-numbers are refused with the line number.
public enum CurveParser {
    public static func parse(_ bytes: [UInt8]) throws(GraftError) -> [CurvePoint] {
        let first = bytes.first { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }
        return first == UInt8(ascii: "{") ? try parseJSONLines(bytes) : try parseCSV(bytes)
    }

    static func parseCSV(_ bytes: [UInt8]) throws(GraftError) -> [CurvePoint] {
        var lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false).map { line in line.last == 0x0D ? line.dropLast() : line }
        while let last = lines.last, last.isEmpty { lines.removeLast() }
        guard let headerLine = lines.first else { throw .invalidMetric("input", reason: "empty input: expected a CSV header such as `step,loss`") }
        let header = headerLine.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespaces) }
        guard let stepColumn = header.firstIndex(of: "step") else {
            throw .invalidMetric(header.joined(separator: ","), reason: "the CSV header needs a `step` column")
        }
        let long = header.contains("name") && header.contains("value")
        let nameColumn = header.firstIndex(of: "name"), valueColumn = header.firstIndex(of: "value")
        if !long { for (index, name) in header.enumerated() where index != stepColumn { try MetricAssignment.checkName(name) } }
        var points: [CurvePoint] = []
        points.reserveCapacity(lines.count * max(1, header.count - 1))
        for (number, line) in lines.enumerated().dropFirst() where !line.isEmpty {
            let cells = line.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
            guard cells.count == header.count else {
                throw .invalidMetric("line \(number + 1)", reason: "has \(cells.count) cells, the header \(header.count)")
            }
            guard let step = parseInteger(cells[stepColumn]) else {
                throw .invalidMetric("line \(number + 1)", reason: "step `\(String(decoding: cells[stepColumn], as: UTF8.self))` is not an integer")
            }
            if long, let nameColumn, let valueColumn {
                let name = String(decoding: cells[nameColumn], as: UTF8.self)
                try MetricAssignment.checkName(name)
                points.append(CurvePoint(name: name, step: step, value: try parseValue(cells[valueColumn], line: number + 1)))
            } else {
                for (index, cell) in cells.enumerated() where index != stepColumn && !cell.isEmpty {
                    points.append(CurvePoint(name: header[index], step: step, value: try parseValue(cell, line: number + 1)))
                }
            }
        }
        return points
    }

    static func parseJSONLines(_ bytes: [UInt8]) throws(GraftError) -> [CurvePoint] {
        var points: [CurvePoint] = []
        for (number, line) in bytes.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
            guard line.contains(where: { $0 != 0x20 && $0 != 0x0D && $0 != 0x09 }) else { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                throw .invalidMetric("line \(number + 1)", reason: "is not a JSON object")
            }
            guard let step = (object["step"] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }) else {
                throw .invalidMetric("line \(number + 1)", reason: "needs an integer `step`")
            }
            if let name = object["name"] as? String, let value = object["value"] {
                try MetricAssignment.checkName(name)
                points.append(CurvePoint(name: name, step: step, value: try finite(value, line: number + 1)))
                continue
            }
            for (key, value) in object.sorted(by: { $0.key < $1.key }) where key != "step" {
                try MetricAssignment.checkName(key)
                points.append(CurvePoint(name: key, step: step, value: try finite(value, line: number + 1)))
            }
        }
        return points
    }

    private static func finite(_ value: Any, line: Int) throws(GraftError) -> Double {
        guard let number = value as? NSNumber, !(value is Bool) else { throw .invalidMetric("line \(line)", reason: "holds a value that is not a number") }
        let double = number.doubleValue
        guard double.isFinite else { throw .invalidMetric("line \(line)", reason: "NaN and infinities are not recorded") }
        return double
    }

    private static func parseInteger(_ cell: ArraySlice<UInt8>) -> Int? {
        var value = 0
        var negative = false
        var index = cell.startIndex
        if index < cell.endIndex, cell[index] == UInt8(ascii: "-") { negative = true; index += 1 }
        guard index < cell.endIndex else { return nil }
        while index < cell.endIndex {
            let digit = cell[index]
            guard digit >= 0x30, digit <= 0x39 else { return nil }
            let (times, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times.addingReportingOverflow(Int(digit - 0x30))
            if o1 || o2 { return nil }
            value = sum
            index += 1
        }
        return negative ? -value : value
    }

    private static func parseValue(_ cell: ArraySlice<UInt8>, line: Int) throws(GraftError) -> Double {
        let text = String(decoding: cell, as: UTF8.self)
        guard let value = Double(text.trimmingCharacters(in: .whitespaces)) else {
            throw .invalidMetric("line \(line)", reason: "`\(text)` is not a number")
        }
        guard value.isFinite else { throw .invalidMetric("line \(line)", reason: "NaN and infinities are not recorded") }
        return value
    }
}

extension String {
    var nilIfEmpty: String? { isEmpty ? nil : self }
}
