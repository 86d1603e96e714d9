/// Which checkpoints of a model `prune` keeps, and why — plain Swift, no storage: the registry
/// gathers each checkpoint's number, metric value and protections, the policy decides.
///
/// Kept: the newest `keepLast` (by number), the best `keepBest` by the metric (ties go to the
/// lower number; checkpoints without the metric are not candidates), and every checkpoint with
/// a protection (students derive from it, an alias points at it, a base's registered one).
/// Everything else goes.
///
/// ```swift
/// let policy = RetentionPolicy(keepLast: 1, keepBest: 1, metric: "val/accuracy", direction: .max)
/// let plan = policy.decide([.init(number: 1, value: 0.9), .init(number: 2, value: 0.5)])
/// // [(1, ["one of the best 1 by val/accuracy (max)"]), (2, ["one of the newest 1"])]
/// ```
public struct RetentionPolicy: Sendable, Equatable {
    public var keepLast: Int
    public var keepBest: Int
    public var metric: String?
    public var direction: Direction

    public init(keepLast: Int, keepBest: Int = 0, metric: String? = nil, direction: Direction = .max) {
        self.keepLast = keepLast
        self.keepBest = keepBest
        self.metric = metric
        self.direction = direction
    }

    /// One checkpoint as the policy sees it.
    public struct Candidate: Sendable, Equatable {
        public var number: Int
        /// Its value of the policy's metric, if it has one.
        public var value: Double?
        /// Why it must stay whatever the policy says.
        public var protections: [Protection]

        public init(number: Int, value: Double? = nil, protections: [Protection] = []) {
            self.number = number
            self.value = value
            self.protections = protections
        }
    }

    /// Each candidate's reasons to stay, in ascending checkpoint number; no reason means it goes.
    /// The policy's own reasons come first, then the protections.
    public func decide(_ candidates: [Candidate]) -> [(number: Int, reasons: [String])] {
        var reasons: [Int: [String]] = [:]
        let newestFirst = candidates.sorted { $0.number > $1.number }
        for candidate in newestFirst.prefix(max(0, keepLast)) {
            reasons[candidate.number, default: []].append("one of the newest \(keepLast)")
        }
        if keepBest > 0, let metric {
            let ranked = candidates.compactMap { candidate in candidate.value.map { (candidate.number, $0) } }.sorted { a, b in
                if a.1 != b.1 { return direction == .max ? a.1 > b.1 : a.1 < b.1 }
                return a.0 < b.0
            }
            for (number, _) in ranked.prefix(keepBest) {
                reasons[number, default: []].append("one of the best \(keepBest) by \(metric) (\(direction.rawValue))")
            }
        }
        return candidates.sorted { $0.number < $1.number }.map { candidate in
            (candidate.number, (reasons[candidate.number] ?? []) + candidate.protections.map(\.description))
        }
    }

    /// What `decide` means for a model's checkpoints: the numbers to remove (with their
    /// references) and the ones kept with their reasons. One reading for every metadata store.
    package func plan(_ candidates: [Candidate], model: ModelName) -> (remove: [Int], removed: [String], kept: [KeptCheckpoint]) {
        var remove: [Int] = [], removed: [String] = [], kept: [KeptCheckpoint] = []
        for (number, reasons) in decide(candidates) {
            if reasons.isEmpty {
                remove.append(number)
                removed.append("\(model)@\(number)")
            } else {
                kept.append(KeptCheckpoint(checkpoint: "\(model)@\(number)", reasons: reasons))
            }
        }
        return (remove, removed, kept)
    }

    /// Why a checkpoint must stay, from what a store read about it: students derive from it, an
    /// alias points at it, or it is a base's registered checkpoint. Empty when it may go.
    package static func protections(students: [String], aliases: [String], model: String, kind: String, number: Int) -> [Protection] {
        var reasons: [Protection] = []
        if !students.isEmpty { reasons.append(.students(students)) }
        if !aliases.isEmpty { reasons.append(.aliases(model: model, aliases)) }
        if kind == "base", number == 1 { reasons.append(.registeredCheckpoint(model: model)) }
        return reasons
    }
}

/// Removing a model: refused while it has descendants unless the removal cascades; then its
/// whole subtree goes, deepest first so no parent edge is left dangling, names in byte order
/// within a depth (the order the report lists them in). One rule for every store.
package enum ModelRemoval {
    /// One model of the subtree, as a store read it (`depth`: its lineage length).
    package struct Member: Sendable, Equatable {
        package var id: Int64
        package var name: String
        package var depth: Int
        package init(id: Int64, name: String, depth: Int) { (self.id, self.name, self.depth) = (id, name, depth) }
    }

    /// The members in removal order, or the refusal naming the descendants (byte order).
    package static func order(_ subtree: [Member], root: Int64, name: String, cascade: Bool) throws(GraftError) -> [Member] {
        let descendants = subtree.filter { $0.id != root }.map(\.name)
        if !descendants.isEmpty, !cascade {
            throw .protected(name, reasons: [.descendants(descendants.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })])
        }
        return subtree.sorted { a, b in a.depth != b.depth ? a.depth > b.depth : a.name.utf8.lexicographicallyPrecedes(b.name.utf8) }
    }
}

/// Why a checkpoint or a model must stay: what a removal refuses over, with the names a user
/// needs to act on it. Callers branch on the case, never on the text.
public enum Protection: Sendable, Equatable, CustomStringConvertible {
    /// Students derive from the checkpoint (their names).
    case students([String])
    /// Aliases of `model` point at the checkpoint.
    case aliases(model: String, [String])
    /// The checkpoint is `model`'s registered one: a base's `@1`.
    case registeredCheckpoint(model: String)
    /// The model has descendants (their names), removed only with them.
    case descendants([String])

    public var description: String {
        switch self {
        case .students(let names): "students derive from it (\(names.joined(separator: ", ")))"
        case .aliases(let model, let aliases): "aliased as \(aliases.map { "\(model)@\($0)" }.joined(separator: ", "))"
        case .registeredCheckpoint: "it is the base's registered checkpoint"
        case .descendants(let names): "it has \(names.count) descendant(s): \(names.joined(separator: ", "))"
        }
    }
}
