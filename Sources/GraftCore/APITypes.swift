// Bodies of `graft serve`'s writes (docs/openapi.json), in the JSON contract's snake_case:
// the server (GraftServer) reads these types and the remote client (GraftRemote) sends them.

/// `POST /v1/students`.
public struct StudentRequest: Sendable, Codable, Equatable {
    public var name: String
    public var parent: String
    public var relation: Relation?
    public var freeze: [String]?
    public var train: [String]?
    public var drop: [String]?
    public var reinit: [String]?
    public var freezeThrough: String?
    /// The prefix under which the student names the parent's tensors (`bert.`).
    public var prefix: String?
    /// Each tensor's state (the training engine's way); excludes the rules.
    public var perTensor: [String: TensorState]?
    /// An adapter student (``ManifestDeclaration/adapter``); excludes every other manifest field.
    public var adapter: Bool?
    public var description: String?

    public init(name: ModelName, parent: Reference, relation: Relation, manifest: ManifestDeclaration, description: String?) {
        (self.name, self.parent, self.relation, self.description) = (name.description, parent.description, relation, description)
        switch manifest {
        case .rules(let rules, let through):
            func patterns(_ action: ManifestRule.Action) -> [String]? {
                let found = rules.filter { $0.action == action }.map(\.pattern)
                return found.isEmpty ? nil : found
            }
            (freeze, train, drop, reinit, freezeThrough) = (
                patterns(.freeze), patterns(.train), patterns(.drop), patterns(.reinit), through
            )
            prefix = patterns(.prefix)?.first
        case .perTensor(let states):
            perTensor = states
        case .adapter:
            adapter = true
        }
    }

    /// The manifest these fields declare.
    public func declaration() throws(GraftError) -> ManifestDeclaration {
        let rules =
            [(freeze, ManifestRule.Action.freeze), (train, .train), (drop, .drop), (reinit, .reinit), (prefix.map { [$0] }, .prefix)]
            .flatMap { patterns, action in (patterns ?? []).map { ManifestRule(action, $0) } }
        if adapter == true {
            guard rules.isEmpty, freezeThrough == nil, perTensor == nil else {
                throw .badRequest("adapter excludes freeze, train, drop, reinit, prefix, freeze_through and per_tensor")
            }
            return .adapter
        }
        if let perTensor {
            guard rules.isEmpty, freezeThrough == nil else {
                throw .badRequest("per_tensor excludes freeze, train, drop, reinit, prefix and freeze_through")
            }
            return .perTensor(perTensor)
        }
        return .rules(rules, freezeThrough: freezeThrough)
    }
}

/// `POST /v1/checkpoints/REF/metrics`.
public struct MetricsRequest: Sendable, Codable, Equatable {
    public var metrics: [String: Double]
    public var split: String?
    public init(metrics: [String: Double], split: String?) { (self.metrics, self.split) = (metrics, split) }
}

/// `POST /v1/models/NAME/curves`.
public struct CurveRequest: Sendable, Codable, Equatable {
    public var step: Int
    public var metrics: [String: Double]
    public init(step: Int, metrics: [String: Double]) { (self.step, self.metrics) = (step, metrics) }
}

/// `POST /v1/advisories`.
public struct AdvisoryRequest: Sendable, Codable, Equatable {
    /// `NAME` (the whole model) or `NAME@N`.
    public var on: String
    public var id: String
    public var severity: Severity
    public var note: String?
    public var url: String?
    public init(on: String, id: String, severity: Severity, note: String?, url: String?) {
        (self.on, self.id, self.severity, self.note, self.url) = (on, id, severity, note, url)
    }
}

/// `POST /v1/models/NAME/prune`.
public struct PruneRequest: Sendable, Codable, Equatable {
    public var keepLast: Int
    public var keepBest: Int?
    public var metric: String?
    public var direction: Direction?
    public var split: String?
    public var dryRun: Bool?
    public init(keepLast: Int, keepBest: Int, metric: String?, direction: Direction?, split: String?, dryRun: Bool) {
        (self.keepLast, self.keepBest, self.metric, self.direction, self.split, self.dryRun) = (
            keepLast, keepBest, metric, direction, split, dryRun
        )
    }
}

/// `POST /v1/gc`.
public struct GCRequest: Sendable, Codable, Equatable {
    public var grace: Double?
    public var dryRun: Bool?
    public init(grace: Double, dryRun: Bool) { (self.grace, self.dryRun) = (grace, dryRun) }
}

/// What `PUT /v1/blobs/DIGEST` answers: the same whether or not the registry held the blob,
/// so that a confined token learns nothing from it.
public struct BlobReceipt: Sendable, Codable, Equatable {
    public var digest: Digest
    public var length: Int
    public init(digest: Digest, length: Int) { (self.digest, self.length) = (digest, length) }
}

/// What a metrics write answers.
public struct CheckpointRef: Sendable, Codable, Equatable {
    public var checkpoint: String
    public init(checkpoint: String) { self.checkpoint = checkpoint }
}
