// What the web view of `graft serve` reads beyond the CLI's queries: the index of every model
// in one read, a model's curves point by point, the metrics recorded in a family.

/// One model as the index lists it: its kind and transfer mode, its parent edge, its number of
/// checkpoints and the open advisories it carries or inherits.
public struct ModelIndexEntry: Sendable, Codable, Equatable {
    public var name: String
    /// `base` or `student`.
    public var kind: String
    public var mode: TransferMode?
    public var relation: Relation?
    /// The exact parent checkpoint, `NAME@N` (absent for a base).
    public var parent: String?
    public var checkpoints: Int
    public var description: String?
    public var createdAt: String
    /// Open advisories on the model or inherited from its ancestors, sorted (empty: not flagged).
    public var advisories: [String]
    public var flagged: Bool { !advisories.isEmpty }

    package init(
        name: String, kind: String, mode: TransferMode?, relation: Relation?, parent: String?, checkpoints: Int, description: String?,
        createdAt: String,
        advisories: [String]
    ) {
        (self.name, self.kind, self.mode, self.relation, self.parent) = (name, kind, mode, relation, parent)
        (self.checkpoints, self.description, self.createdAt, self.advisories) = (checkpoints, description, createdAt, advisories)
    }
}

/// A training curve: every point logged under one name, by step.
public struct CurveSeries: Sendable, Codable, Equatable {
    public var name: String
    public var steps: [Int]
    public var values: [Double]

    package init(name: String, steps: [Int], values: [Double]) {
        (self.name, self.steps, self.values) = (name, steps, values)
    }
}

/// A metric name with the split it was recorded under (`nil`: none).
public struct MetricKey: Sendable, Codable, Hashable, Comparable {
    public var name: String
    public var split: String?

    public init(name: String, split: String?) {
        (self.name, self.split) = (name, split)
    }

    public static func < (a: MetricKey, b: MetricKey) -> Bool {
        (a.name, a.split ?? "") < (b.name, b.split ?? "")
    }
}

extension Registry {
    /// Every model with its kind, transfer mode, parent edge, checkpoint count and open
    /// advisories (inherited ones included), by name: one read transaction, linear in models.
    public func modelIndex() async throws(GraftError) -> [ModelIndexEntry] {
        try await metadata.modelIndex()
    }

    /// A model's training curves (``logCurve(model:step:_:)``, ``importCurves(model:bytes:)``),
    /// every point, sorted by name then step.
    public func curves(of name: ModelName) async throws(GraftError) -> [CurveSeries] {
        guard let id = try await metadata.modelID(named: name) else { throw try await notFound(name) }
        return try await metadata.curvePoints(model: id)
    }

    /// The metric names and splits recorded on a model's family (the model and its
    /// descendants), sorted; read from at most `limit` models of it, so the cost is bounded
    /// whatever the family's size.
    /// With `visibility`, only the keys of the models it shows.
    public func metricKeys(under name: ModelName, limit: Int = 500, visibility: ModelVisibility = .all) async throws(GraftError)
        -> [MetricKey]
    {
        guard let id = try await metadata.modelID(named: name) else { throw try await notFound(name) }
        return try await metadata.metricKeys(subtree: id, limit: limit, visibility: visibility)
    }
}
