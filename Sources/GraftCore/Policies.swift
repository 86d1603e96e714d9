public import SafeTensors

// The registry's decisions, as plain Swift over plain values: no store, no I/O. Each has unit
// tests of its own (PolicyUnitTests); the Registry façade and the stores call them.

/// One way a proposed checkpoint breaks its student's frozen-layer manifest, with the tensor
/// it names and what the manifest expected. Callers (the CLI, the HTTP error body, the Python
/// client) read the case and its data, never the text.
public enum ManifestViolation: Sendable, Equatable, CustomStringConvertible {
    /// A tensor the manifest drops is present.
    case droppedButPresent(tensor: String)
    /// A frozen or trainable tensor is missing.
    case missing(tensor: String, state: TensorState)
    /// A frozen tensor's dtype or shape changed.
    case retyped(tensor: String, expected: TensorType, found: TensorType)
    /// A frozen tensor's bytes changed: its digest is not the parent's.
    case changed(tensor: String, expected: Digest, found: Digest)
    /// An adapter student's checkpoint holds a tensor (or file) that is not its adapter on the
    /// parent: what was expected, and what was found where that says more.
    case notAdapter(tensor: String, expected: String, found: String?)

    /// A tensor's dtype and shape as the manifest records them (either may be unrecorded).
    public struct TensorType: Sendable, Equatable, CustomStringConvertible {
        public var dtype: DType?
        public var shape: [Int]?
        public init(dtype: DType?, shape: [Int]?) { (self.dtype, self.shape) = (dtype, shape) }
        public var description: String { "\(dtype?.rawValue ?? "?") \(shape.map { "\($0)" } ?? "[?]")" }
    }

    /// The tensor the violation names.
    public var tensor: String {
        switch self {
        case .droppedButPresent(let tensor), .missing(let tensor, _), .retyped(let tensor, _, _), .changed(let tensor, _, _),
            .notAdapter(let tensor, _, _):
            tensor
        }
    }

    /// The rule broken, as the HTTP error body names it: `dropped_present`, `missing`,
    /// `retyped`, `changed`, `adapter`.
    public var rule: String {
        switch self {
        case .droppedButPresent: "dropped_present"
        case .missing: "missing"
        case .retyped: "retyped"
        case .changed: "changed"
        case .notAdapter: "adapter"
        }
    }

    /// What the manifest expected, as text (`nil` where the rule has none): the state of a
    /// missing tensor, the type of a retyped one, the parent's digest of a changed one.
    public var expected: String? {
        switch self {
        case .droppedButPresent: nil
        case .missing(_, let state): state.rawValue
        case .retyped(_, let expected, _): expected.description
        case .changed(_, let expected, _): expected.description
        case .notAdapter(_, let expected, _): expected
        }
    }

    /// What the checkpoint holds instead, as text (`nil` where the rule has none).
    public var found: String? {
        switch self {
        case .droppedButPresent, .missing: nil
        case .retyped(_, _, let found): found.description
        case .changed(_, _, let found): found.description
        case .notAdapter(_, _, let found): found
        }
    }

    public var description: String {
        switch self {
        case .droppedButPresent(let tensor): "\(tensor): dropped, but present"
        case .missing(let tensor, let state): "\(tensor): \(state.rawValue), but missing"
        case .retyped(let tensor, let expected, let found): "\(tensor): frozen, but its type changed (\(expected) → \(found))"
        case .changed(let tensor, let expected, let found): "\(tensor): frozen, but changed (\(expected.short)… → \(found.short)…)"
        case .notAdapter(let tensor, let expected, let found): "\(tensor): expected \(expected)\(found.map { ", found \($0)" } ?? "")"
        }
    }
}

/// Enforcing a student's manifest on a proposed checkpoint, from its header alone and then
/// from the digests of its frozen tensors.
/// An adapter checkpoint's `adapter_config.json`, as the manifest check receives it.
package enum AdapterConfigBytes: Sendable {
    case bytes([UInt8])
    /// The checkpoint has no such file.
    case missing
    /// An upload proposed the file but has not sent it yet.
    case pending
}

package enum ManifestEnforcement {
    /// What a proposed checkpoint's header says against the manifest.
    package struct Plan: Sendable, Equatable {
        /// Each offending tensor; a non-empty list refuses the commit.
        package var violations: [ManifestViolation]
        /// The tensors (indices into the header) that must be the parent's, byte for byte.
        package var frozen: [Int]
        /// Tensors the parent lacks or the manifest re-initialised: recorded as `new`.
        package var newTensors: [String]
    }

    /// Checks names, dtypes and shapes: a dropped tensor present, a frozen or trainable one
    /// missing, a frozen one whose type changed. `manifest` is `nil` for a base (no rules).
    ///
    /// An adapter student's checkpoint holds only its adapter: `adapterConfig` is its
    /// `adapter_config.json` (`.missing` when the checkpoint has none, `.pending` while an upload
    /// has not sent it yet: then only the final check decides), and every tensor is checked
    /// against the parent's modules (``AdapterLayout``) and recorded as `new`.
    package static func plan(_ manifest: ManifestSummary?, tensors: [TensorInfo], adapterConfig: AdapterConfigBytes = .missing) -> Plan {
        guard let manifest else { return Plan(violations: [], frozen: [], newTensors: []) }
        if manifest.mode == .adapter { return adapterPlan(manifest, tensors: tensors, config: adapterConfig) }
        let byName = Dictionary(tensors.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
        var plan = Plan(violations: [], frozen: [], newTensors: [])
        for entry in manifest.entries {
            let index = byName[entry.name]
            switch entry.state {
            case .dropped where index != nil:
                plan.violations.append(.droppedButPresent(tensor: entry.name))
            case .frozen, .trainable:
                guard let index else {
                    if !isUnsavedBuffer(entry) { plan.violations.append(.missing(tensor: entry.name, state: entry.state)) }
                    continue
                }
                let tensor = tensors[index]
                if entry.state == .frozen {
                    if tensor.dtype != entry.dtype || tensor.shape != entry.shape {
                        plan.violations.append(
                            .retyped(
                                tensor: entry.name, expected: .init(dtype: entry.dtype, shape: entry.shape),
                                found: .init(dtype: tensor.dtype, shape: tensor.shape)))
                    } else {
                        plan.frozen.append(index)
                    }
                }
            default:
                break
            }
        }
        let entries = Dictionary(manifest.entries.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        plan.newTensors = tensors.map(\.name).filter { name in entries[name].map { $0.state == .new } ?? true }
        return plan
    }

    /// What an adapter checkpoint is checked against: the config, then each tensor on the parent.
    private static func adapterPlan(_ manifest: ManifestSummary, tensors: [TensorInfo], config: AdapterConfigBytes) -> Plan {
        var plan = Plan(violations: [], frozen: [], newTensors: tensors.map(\.name))
        let parsed: AdapterConfig
        switch config {
        case .pending:
            return plan
        case .missing:
            plan.violations = [
                .notAdapter(
                    tensor: AdapterConfig.fileName,
                    expected: "a PEFT adapter directory (adapter_model.safetensors and adapter_config.json, as save_pretrained writes it)",
                    found: "no \(AdapterConfig.fileName)")
            ]
            return plan
        case .bytes(let bytes):
            do { parsed = try AdapterConfig.parse(bytes) } catch {
                let reason: String = if case .invalidManifest(let text) = error { text } else { error.description }
                plan.violations = [.notAdapter(tensor: AdapterConfig.fileName, expected: "a PEFT adapter config", found: reason)]
                return plan
            }
        }
        plan.violations = AdapterLayout.resolve(parsed, tensors: tensors, parent: manifest.entries.filter { $0.state == .frozen }).problems
        return plan
    }

    /// When every violation is a missing tensor and the checkpoint holds those tensors under
    /// another prefix than the manifest's (``TensorPrefix/detect(_:_:)``): the prefix, and
    /// whether the checkpoint is the side that has it. What the commit's refusal then says.
    package static func prefixMismatch(_ manifest: ManifestSummary, tensors: [TensorInfo], violations: [ManifestViolation])
        -> (prefix: String, checkpointHasIt: Bool)?
    {
        guard !violations.isEmpty, violations.allSatisfy({ if case .missing = $0 { true } else { false } }) else { return nil }
        let kept = manifest.entries.filter { $0.state == .frozen || $0.state == .trainable }.map(\.name)
        guard let (prefix, manifestIsBare) = TensorPrefix.detect(kept, tensors.map(\.name)) else { return nil }
        return (prefix, manifestIsBare)
    }

    /// Index buffers that `transformers` saved once and no longer saves (non-persistent since
    /// 4.31: `embeddings.position_ids`): a checkpoint without one is not missing a weight.
    package static let unsavedBuffers: Set<String> = ["position_ids"]

    /// Whether a missing entry is such a buffer: an integer tensor of that name.
    static func isUnsavedBuffer(_ entry: ManifestEntry) -> Bool {
        guard let last = entry.name.split(separator: ".").last, unsavedBuffers.contains(String(last)) else { return false }
        return [DType.i64, .i32].contains(entry.dtype)
    }

    /// Checks the digests of frozen tensors against the parent's: one violation per drifted tensor.
    package static func frozenDrift(_ manifest: ManifestSummary, hashed: [(name: String, digest: Digest)]) -> [ManifestViolation] {
        let entries = Dictionary(manifest.entries.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        return hashed.compactMap { tensor in
            guard let expected = entries[tensor.name]?.parentDigest, expected != tensor.digest else { return nil }
            return .changed(tensor: tensor.name, expected: expected, found: tensor.digest)
        }
    }
}

/// How open advisories flow down a lineage: an advisory on a model flags it and every
/// descendant; one on a checkpoint flags every student derived from that checkpoint, and
/// theirs. A model's own checkpoint-level advisories flag those checkpoints, not the model.
package enum AdvisoryInheritance {
    /// The advisories a model carries or inherits as a whole, from its chain (the model first,
    /// then its ancestors up to the root base, each with the checkpoint it derives from).
    package static func inherited(chain: [LineageRow], open: [OpenAdvisory]) -> Set<String> {
        guard !open.isEmpty, !chain.isEmpty else { return [] }
        let ids = Set(chain.map(\.id))
        let vias = Set(chain.compactMap(\.via))
        var result = Set<String>()
        for advisory in open {
            if let checkpoint = advisory.checkpoint {
                if vias.contains(checkpoint) { result.insert(advisory.id) }
            } else if ids.contains(advisory.model) {
                result.insert(advisory.id)
            }
        }
        return result
    }

    /// The flags of each model of a chain but the first (the ancestors of `chain[0]`), folded
    /// down from the root once: each inherits everything above it.
    package static func ancestorFlags(chain: [LineageRow], open: [OpenAdvisory]) -> [Int64: Set<String>] {
        guard !open.isEmpty, chain.count > 1 else { return [:] }
        let (onModel, onCheckpoint) = index(open)
        var result: [Int64: Set<String>] = [:]
        var inherited = Set<String>()
        for (position, row) in chain.enumerated().reversed() {
            if let via = row.via { inherited.formUnion(onCheckpoint[via] ?? []) }
            inherited.formUnion(onModel[row.id] ?? [])
            if position > 0, !inherited.isEmpty { result[row.id] = inherited }
        }
        return result
    }

    /// The flags of a model (`root`, which carries or inherits `inherited`) and of its
    /// descendants, given with every parent before its children.
    package static func propagate(_ rows: [LineageRow], root: Int64, inherited: Set<String>, open: [OpenAdvisory]) -> [Int64: Set<String>] {
        var result: [Int64: Set<String>] = inherited.isEmpty ? [:] : [root: inherited]
        guard !open.isEmpty else { return result }
        let (onModel, onCheckpoint) = index(open)
        for row in rows {
            var flags = row.link.flatMap { result[$0] } ?? []
            if let via = row.via, let ids = onCheckpoint[via] { flags.formUnion(ids) }
            if let ids = onModel[row.id] { flags.formUnion(ids) }
            if !flags.isEmpty { result[row.id] = flags }
        }
        return result
    }

    /// Where flags start: a model-level advisory at its model, a checkpoint-level one at that
    /// checkpoint (its students are flagged); with `root`, only advisories inside its subtree.
    package static func seeds(_ open: [OpenAdvisory], within root: Int64?) -> (
        models: [(model: Int64, advisory: String)], checkpoints: [(checkpoint: Int64, advisory: String)]
    ) {
        var models: [(Int64, String)] = [], checkpoints: [(Int64, String)] = []
        for advisory in open {
            if let root, !advisory.ancestry.contains(root) { continue }
            if let checkpoint = advisory.checkpoint {
                checkpoints.append((checkpoint, advisory.id))
            } else {
                models.append((advisory.model, advisory.id))
            }
        }
        return (models, checkpoints)
    }

    /// Which models open advisories flag as a whole, with what each carries or inherits: the
    /// one rule every store follows, asking it only for plain reads. Flags start at a
    /// model-level advisory's model and at the students of a checkpoint-level advisory's
    /// checkpoint, and cover each start's subtree; with `root`, only models of its subtree,
    /// and what `root` inherits from above flags that whole subtree too.
    ///
    /// A store answers three reads, in this order (each may be a query):
    ///
    ///     let plan = AdvisoryInheritance.FlagPlan(open, within: root)
    ///     students[c] = models whose parent checkpoint is c, for c in plan.seedCheckpoints
    ///     chain = the chain of root, full (when there is a root)
    ///     subtrees[m] = ids of m's subtree, m included, for m in plan.subtreeRoots(students:rootChain:)
    ///     flags = plan.flags(students:rootChain:subtrees:)
    package struct FlagPlan: Sendable {
        private let open: [OpenAdvisory]
        private let root: Int64?
        private let modelSeeds: [(model: Int64, advisory: String)]
        private let checkpointSeeds: [(checkpoint: Int64, advisory: String)]

        package init(_ open: [OpenAdvisory], within root: Int64?) {
            (self.open, self.root) = (open, root)
            (modelSeeds, checkpointSeeds) = AdvisoryInheritance.seeds(open, within: root)
        }

        /// No advisory is open: nothing to read, nothing flagged.
        package var isEmpty: Bool { open.isEmpty }
        /// Checkpoints whose students the plan needs.
        package var seedCheckpoints: [Int64] { checkpointSeeds.map(\.checkpoint) }

        /// The models whose subtrees the plan needs, given the students of ``seedCheckpoints``
        /// and `root`'s chain.
        package func subtreeRoots(students: [Int64: [Int64]], rootChain: [LineageRow]) -> [Int64] {
            var roots = starts(students: students).map(\.model)
            if let root, !AdvisoryInheritance.inherited(chain: rootChain, open: open).isEmpty { roots.append(root) }
            var seen = Set<Int64>()
            return roots.filter { seen.insert($0).inserted }
        }

        /// The flagged models with their advisories.
        package func flags(students: [Int64: [Int64]], rootChain: [LineageRow], subtrees: [Int64: [Int64]]) -> [Int64: Set<String>] {
            guard !open.isEmpty else { return [:] }
            var result: [Int64: Set<String>] = [:]
            for (model, advisory) in starts(students: students) {
                for id in subtrees[model] ?? [model] { result[id, default: []].insert(advisory) }
            }
            if let root {
                let inherited = AdvisoryInheritance.inherited(chain: rootChain, open: open)
                if !inherited.isEmpty { for id in subtrees[root] ?? [root] { result[id, default: []].formUnion(inherited) } }
            }
            return result
        }

        private func starts(students: [Int64: [Int64]]) -> [(model: Int64, advisory: String)] {
            modelSeeds + checkpointSeeds.flatMap { seed in (students[seed.checkpoint] ?? []).map { ($0, seed.advisory) } }
        }
    }

    /// Whether any open advisory lies on `model`'s subtree (on it or below it).
    package static func anyWithin(_ open: [OpenAdvisory], model: Int64) -> Bool {
        open.contains { $0.ancestry.contains(model) }
    }

    /// Checkpoints that carry an open advisory of their own.
    package static func flaggedCheckpoints(_ open: [OpenAdvisory]) -> Set<Int64> {
        Set(open.compactMap(\.checkpoint))
    }

    private static func index(_ open: [OpenAdvisory]) -> (onModel: [Int64: [String]], onCheckpoint: [Int64: [String]]) {
        var onModel: [Int64: [String]] = [:], onCheckpoint: [Int64: [String]] = [:]
        for advisory in open {
            if let checkpoint = advisory.checkpoint {
                onCheckpoint[checkpoint, default: []].append(advisory.id)
            } else {
                onModel[advisory.model, default: []].append(advisory.id)
            }
        }
        return (onModel, onCheckpoint)
    }
}

/// Which models a reader may see: all of them, or those whose names match a glob (a token
/// confined with `--models`). A model it hides is treated as if it did not exist: never a
/// candidate, never counted, never named.
public struct ModelVisibility: Sendable, Equatable {
    /// The glob over model names; `nil` shows every model.
    public var pattern: String?

    public init(pattern: String?) { self.pattern = pattern }

    /// Every model.
    public static let all = ModelVisibility(pattern: nil)

    /// Whether nothing is hidden.
    public var showsAll: Bool { pattern == nil }

    /// Whether the model of this name is visible.
    public func shows(_ name: String) -> Bool {
        guard let pattern else { return true }
        return Glob.matches(Array(pattern.unicodeScalars), Array(name.unicodeScalars))
    }
}

/// What `best` asks of a metadata store: the candidates of a scope (checkpoints with the metric
/// on the split), ranked by ``BestSelection/ranksBefore(_:_:direction:)`` in `direction`, with
/// flagged candidates left out (unless `includeFlagged`) and hidden models absent.
package struct BestQuery: Sendable, Equatable {
    package var metric: String
    package var split: String?
    package var scope: BestScope
    package var direction: Direction
    package var includeFlagged: Bool
    package var visibility: ModelVisibility

    package init(
        metric: String, split: String?, scope: BestScope, direction: Direction, includeFlagged: Bool, visibility: ModelVisibility = .all
    ) {
        (self.metric, self.split, self.scope, self.direction) = (metric, split, scope, direction)
        (self.includeFlagged, self.visibility) = (includeFlagged, visibility)
    }
}

/// How a store's candidate walk treats each candidate row: the flags the store read (models
/// flagged as a whole, checkpoints carrying an advisory of their own) and the visibility.
package struct CandidateFilter: Sendable {
    package enum Standing: Sendable, Equatable {
        /// A candidate that may win.
        case eligible
        /// Counted as a candidate and as excluded; never the winner.
        case flagged
        /// Not a candidate at all: its model is hidden from the reader.
        case hidden
    }

    package var flaggedModels: Set<Int64>
    package var flaggedCheckpoints: Set<Int64>
    package var visibility: ModelVisibility

    package init(flaggedModels: Set<Int64>, flaggedCheckpoints: Set<Int64>, visibility: ModelVisibility) {
        (self.flaggedModels, self.flaggedCheckpoints, self.visibility) = (flaggedModels, flaggedCheckpoints, visibility)
    }

    /// Whether every candidate is eligible (a walk then needs no second look at any row).
    package var passesEverything: Bool { flaggedModels.isEmpty && flaggedCheckpoints.isEmpty && visibility.showsAll }

    /// A candidate's standing: hidden first (a hidden model's flags are not counted either).
    package func standing(model: Int64, checkpoint: Int64, name: String) -> Standing {
        if !visibility.shows(name) { return .hidden }
        if flaggedModels.contains(model) || flaggedCheckpoints.contains(checkpoint) { return .flagged }
        return .eligible
    }

    /// Candidates and excluded ones over every row of a scope, in any order.
    package func tally(_ rows: some Sequence<(model: Int64, checkpoint: Int64, name: String)>) -> (candidates: Int, excluded: Int) {
        var candidates = 0, excluded = 0
        for row in rows {
            switch standing(model: row.model, checkpoint: row.checkpoint, name: row.name) {
            case .hidden: continue
            case .flagged: (candidates, excluded) = (candidates + 1, excluded + 1)
            case .eligible: candidates += 1
            }
        }
        return (candidates, excluded)
    }
}

/// Choosing the best checkpoint: by value in the metric's direction; ties go to the earliest
/// model name (binary order), then the lowest checkpoint number; flagged candidates are left out.
package enum BestSelection {
    /// What candidates are sorted by, most significant first.
    package enum SortKey: Sendable, Equatable {
        /// The metric's value, in the metric's direction.
        case value
        /// The model's name, in binary (UTF-8 byte) order.
        case modelName
        /// The checkpoint's number, lowest first.
        case checkpointNumber
    }

    /// The rank order: the one definition of it. ``ranksBefore(_:_:direction:)`` reads it, and
    /// the SQL stores translate it key by key into their `ORDER BY` (``sqlOrder(_:direction:)``),
    /// so changing the ranking is a change here and in this policy's tests.
    package static let order: [SortKey] = [.value, .modelName, .checkpointNumber]

    /// Whether a store may rank by each model's best value, then the earliest model name, then
    /// that model's lowest-numbered checkpoint with the value (the per-model fast path): only
    /// while the order is exactly value, name, number. Another order turns the fast path off
    /// instead of answering by a rule that no longer holds.
    package static var rankingByModelSummaries: Bool { order == [.value, .modelName, .checkpointNumber] }

    /// Whether `a` ranks before `b` — the order every store's candidate walk must follow.
    package static func ranksBefore(_ a: RankedCandidate, _ b: RankedCandidate, direction: Direction) -> Bool {
        for key in order {
            switch key {
            case .value where a.value != b.value:
                return direction == .max ? a.value > b.value : a.value < b.value
            case .modelName where a.checkpoint.model.value != b.checkpoint.model.value:
                return a.checkpoint.model.value.utf8.lexicographicallyPrecedes(b.checkpoint.model.value.utf8)
            case .checkpointNumber where a.checkpoint.number != b.checkpoint.number:
                return a.checkpoint.number < b.checkpoint.number
            default:
                continue
            }
        }
        return false
    }

    /// The rank order as an SQL `ORDER BY` list, given each key's column (text columns compare
    /// by bytes in both stores).
    package static func sqlOrder(_ column: (SortKey) -> String, direction: Direction) -> String {
        order.map { key in key == .value ? "\(column(key)) \(direction == .max ? "DESC" : "ASC")" : column(key) }.joined(separator: ", ")
    }

    /// The winner among candidates (`isFlagged` by index), and how many were flagged: what a
    /// store's walk returns, computed from every candidate at once (the reference for tests).
    package static func choose(_ candidates: [RankedCandidate], direction: Direction, isFlagged: (Int) -> Bool) -> (
        winner: RankedCandidate?, excluded: Int
    ) {
        var winner: RankedCandidate? = nil
        var excluded = 0
        for (index, candidate) in candidates.enumerated() {
            if isFlagged(index) {
                excluded += 1
                continue
            }
            if let current = winner, !ranksBefore(candidate, current, direction: direction) { continue }
            winner = candidate
        }
        return (winner, excluded)
    }

    /// From each model's best value: the top value among models not flagged, the models that
    /// reach it, and the candidate counts.
    package static func leaders(_ models: [ModelBest], direction: Direction, isFlagged: (Int64) -> Bool) -> (
        top: Double?, leaders: [Int64], candidates: Int, excluded: Int
    ) {
        var candidates = 0, excluded = 0
        var top: Double? = nil
        var leaders: [Int64] = []
        for model in models {
            candidates += model.count
            if isFlagged(model.model) {
                excluded += model.count
                continue
            }
            if let current = top, model.value != current {
                guard direction == .max ? model.value > current : model.value < current else { continue }
                leaders.removeAll(keepingCapacity: true)
            }
            top = model.value
            leaders.append(model.model)
        }
        return (top, leaders, candidates, excluded)
    }

    /// The model with the earliest name (binary order).
    package static func earliest(_ names: [Int64: String]) -> Int64? {
        names.min { $0.value.utf8.lexicographicallyPrecedes($1.value.utf8) }?.key
    }
}
