import Foundation

/// One evaluation metric of a checkpoint.
public struct MetricValue: Sendable, Codable, Equatable {
    public var name: String
    /// The split or dataset it was measured on; absent when none was given.
    public var split: String?
    public var value: Double

    package init(name: String, split: String? = nil, value: Double) {
        self.name = name
        self.split = split
        self.value = value
    }
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
        guard value.isFinite else {
            throw .invalidMetric("\(name)=\(value)", reason: "NaN and infinities are not recorded; log a finite value")
        }
        self.name = name
        self.value = value
    }

    /// Metric and split names: 1–128 printable ASCII characters, no spaces, `=` or `,`
    /// (`val/accuracy` and `top-1` are fine).
    package static func checkName(_ name: String) throws(GraftError) {
        guard !name.isEmpty, name.utf8.count <= 128,
            name.utf8.allSatisfy({
                $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "=") && $0 != UInt8(ascii: ",") && $0 != UInt8(ascii: "\"")
            })
        else {
            throw .invalidMetric(
                name, reason: "metric and split names are 1–128 printable ASCII characters without spaces, `=`, `,` or quotes")
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

    package init(name: String, points: Int, firstStep: Int, lastStep: Int, lastValue: Double, minimum: Double, maximum: Double) {
        self.name = name
        self.points = points
        self.firstStep = firstStep
        self.lastStep = lastStep
        self.lastValue = lastValue
        self.minimum = minimum
        self.maximum = maximum
    }
}

/// The metrics of a checkpoint, or of every checkpoint of a model with its curves.
public struct MetricsReport: Sendable, Codable, Equatable {
    public struct Entry: Sendable, Codable, Equatable {
        public var checkpoint: String
        public var metrics: [MetricValue]
        package init(checkpoint: String, metrics: [MetricValue]) {
            self.checkpoint = checkpoint
            self.metrics = metrics
        }
    }
    public var checkpoints: [Entry]
    public var curves: [CurveSummary]

    package init(checkpoints: [Entry], curves: [CurveSummary]) {
        self.checkpoints = checkpoints
        self.curves = curves
    }
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
        try await metadata.logMetrics(checkpoint: id, values, split: split)
        return summary.ref
    }

    /// Records training-curve points of a model at one step.
    public func logCurve(model name: ModelName, step: Int, _ values: [MetricAssignment]) async throws(GraftError) {
        guard let modelID = try await modelID(name) else { throw try await notFound(name) }
        var batch = CurveBatch()
        for value in values { batch.append(name: value.name, step: step, value: value.value) }
        let points = batch
        try await metadata.insertCurvePoints(model: modelID, points)
    }

    /// Imports training curves from CSV or JSON lines (see ``CurveParser``) in one transaction.
    public func importCurves(model name: ModelName, bytes: [UInt8]) async throws(GraftError) -> CurveImportResult {
        guard let modelID = try await modelID(name) else { throw try await notFound(name) }
        let points = try CurveParser.parse(bytes)
        try await metadata.insertCurvePoints(model: modelID, points)
        return CurveImportResult(model: name, rows: points.count, curves: points.names.sorted())
    }

    /// The metrics of a checkpoint; for a bare model name, of all its checkpoints and its curves.
    public func metrics(_ reference: Reference) async throws(GraftError) -> MetricsReport {
        if case .model(let name) = reference {
            guard let modelID = try await modelID(name) else { throw try await notFound(name) }
            return try await metadata.metricsReport(model: modelID, name: name)
        }
        let (id, summary) = try await resolve(reference)
        return MetricsReport(checkpoints: [.init(checkpoint: summary.ref, metrics: try await metadata.metrics(checkpoint: id))], curves: [])
    }
}

/// The lines of an input, each without its line feed (and a carriage return before it), visited
/// in place.
struct InputLines: Sequence, IteratorProtocol {
    private let bytes: [UInt8]
    private var start = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func next() -> ArraySlice<UInt8>? {
        guard start < bytes.count else { return nil }
        let end = bytes[start...].firstIndex(of: 0x0A) ?? bytes.count
        var line = bytes[start..<end]
        if line.last == 0x0D { line = line.dropLast() }
        start = end + 1
        return line
    }
}

/// Training-curve points, column-wise: names are interned, so a million points hold a
/// handful of strings.
public struct CurveBatch: Sendable, Equatable {
    public private(set) var names: [String] = []
    private var nameIDs: [String: Int32] = [:]
    package var nameIndex: [Int32] = []
    public private(set) var steps: [Int] = []
    public private(set) var values: [Double] = []

    public init() {}

    public var count: Int { steps.count }

    /// The index of `name`, interning it on first use.
    mutating func intern(_ name: String) -> Int32 {
        if let id = nameIDs[name] { return id }
        let id = Int32(names.count)
        names.append(name)
        nameIDs[name] = id
        return id
    }

    public mutating func append(name: String, step: Int, value: Double) {
        append(nameID: intern(name), step: step, value: value)
    }

    mutating func append(nameID: Int32, step: Int, value: Double) {
        nameIndex.append(nameID)
        steps.append(step)
        values.append(value)
    }

    /// The points as (name, step, value), in input order.
    public var points: [(name: String, step: Int, value: Double)] {
        (0..<count).map { (names[Int(nameIndex[$0])], steps[$0], values[$0]) }
    }
}

/// Parses training curves from CSV or JSON lines.
///
/// - CSV, wide: a header `step,loss,accuracy,…`, one row per step (empty cells are skipped);
/// - CSV, long: a header with `step`, `name` and `value` columns;
/// - JSON lines: one object per line, `{"step": 10, "loss": 0.4, …}` or `{"step": 10, "name": "loss", "value": 0.4}`.
/// NaN, infinities and non-numbers are refused with the line number.
public enum CurveParser {
    public static func parse(_ bytes: [UInt8]) throws(GraftError) -> CurveBatch {
        let first = bytes.first { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }
        return first == UInt8(ascii: "{") ? try parseJSONLines(bytes) : try parseCSV(bytes)
    }

    static func parseCSV(_ bytes: [UInt8]) throws(GraftError) -> CurveBatch {
        // Lines are visited in place: a list of them would cost more than the points they hold.
        var lines = InputLines(bytes).enumerated().makeIterator()
        guard bytes.contains(where: { $0 != 0x0A && $0 != 0x0D }), let (_, headerLine) = lines.next() else {
            throw .invalidMetric("input", reason: "empty input: expected a CSV header such as `step,loss`")
        }
        let header = headerLine.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        }
        guard let stepColumn = header.firstIndex(of: "step") else {
            throw .invalidMetric(header.joined(separator: ","), reason: "the CSV header needs a `step` column")
        }
        let long = header.contains("name") && header.contains("value")
        let nameColumn = header.firstIndex(of: "name") ?? -1, valueColumn = header.firstIndex(of: "value") ?? -1
        var batch = CurveBatch()
        var columnName = [Int32](repeating: -1, count: header.count)
        if !long {
            for (index, name) in header.enumerated() where index != stepColumn {
                try MetricAssignment.checkName(name)
                columnName[index] = batch.intern(name)
            }
        }
        var cells = [ArraySlice<UInt8>](repeating: [], count: header.count)
        while let (number, line) = lines.next() {
            if line.isEmpty { continue }
            // Split the line into the reused cell array, without allocating per line.
            var count = 0
            var start = line.startIndex
            var index = line.startIndex
            while index <= line.endIndex {
                if index == line.endIndex || line[index] == UInt8(ascii: ",") {
                    if count < cells.count { cells[count] = line[start..<index] }
                    count += 1
                    start = index + 1
                }
                index += 1
            }
            guard count == header.count else {
                throw .invalidMetric("line \(number + 1)", reason: "has \(count) cells, the header \(header.count)")
            }
            guard let step = parseInteger(cells[stepColumn]) else {
                throw .invalidMetric(
                    "line \(number + 1)", reason: "step `\(String(decoding: cells[stepColumn], as: UTF8.self))` is not an integer")
            }
            if long {
                let name = String(decoding: cells[nameColumn], as: UTF8.self)
                try MetricAssignment.checkName(name)
                batch.append(name: name, step: step, value: try parseValue(cells[valueColumn], line: number + 1))
            } else {
                for column in 0..<header.count where column != stepColumn && !cells[column].isEmpty {
                    batch.append(nameID: columnName[column], step: step, value: try parseValue(cells[column], line: number + 1))
                }
            }
        }
        return batch
    }

    static func parseJSONLines(_ bytes: [UInt8]) throws(GraftError) -> CurveBatch {
        var points = CurveBatch()
        for (number, line) in InputLines(bytes).enumerated() {
            guard line.contains(where: { $0 != 0x20 && $0 != 0x0D && $0 != 0x09 }) else { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                throw .invalidMetric("line \(number + 1)", reason: "is not a JSON object")
            }
            guard let step = (object["step"] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }) else {
                throw .invalidMetric("line \(number + 1)", reason: "needs an integer `step`")
            }
            if let name = object["name"] as? String, let value = object["value"] {
                try MetricAssignment.checkName(name)
                points.append(name: name, step: step, value: try finite(value, line: number + 1))
                continue
            }
            for (key, value) in object.sorted(by: { $0.key < $1.key }) where key != "step" {
                try MetricAssignment.checkName(key)
                points.append(name: key, step: step, value: try finite(value, line: number + 1))
            }
        }
        return points
    }

    private static func finite(_ value: Any, line: Int) throws(GraftError) -> Double {
        guard let number = value as? NSNumber, !(value is Bool) else {
            throw .invalidMetric("line \(line)", reason: "holds a value that is not a number")
        }
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
        // strtod on a small NUL-terminated copy: no String per cell on the bulk path.
        var trimmed = cell
        while let first = trimmed.first, first == 0x20 || first == 0x09 { trimmed = trimmed.dropFirst() }
        while let last = trimmed.last, last == 0x20 || last == 0x09 { trimmed = trimmed.dropLast() }
        var parsed: Double? = nil
        if !trimmed.isEmpty, trimmed.count < 64 {
            withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer in
                for (offset, byte) in trimmed.enumerated() { buffer[offset] = CChar(bitPattern: byte) }
                buffer[trimmed.count] = 0
                var end: UnsafeMutablePointer<CChar>? = nil
                let value = strtod(buffer.baseAddress!, &end)
                if end == buffer.baseAddress! + trimmed.count { parsed = value }
            }
        }
        // strtod also reads hex floats, "nan" and "infinity": the fast path takes only plain
        // decimal text, and anything else goes through Swift's parser.
        let plain = trimmed.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2B || $0 == 0x2D || $0 == 0x2E || $0 == 0x45 || $0 == 0x65 }
        let value: Double
        if plain, let parsed {
            value = parsed
        } else {
            let text = String(decoding: cell, as: UTF8.self)
            guard let slow = Double(text.trimmingCharacters(in: .whitespaces)) else {
                throw .invalidMetric("line \(line)", reason: "`\(text)` is not a number")
            }
            value = slow
        }
        guard value.isFinite else { throw .invalidMetric("line \(line)", reason: "NaN and infinities are not recorded") }
        return value
    }
}

extension String {
    package var nilIfEmpty: String? { isEmpty ? nil : self }
}
