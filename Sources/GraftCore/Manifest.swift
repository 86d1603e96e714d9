public import SafeTensors

/// A tensor's state in a student's frozen-layer manifest, against its parent checkpoint.
public enum TensorState: String, Sendable, Codable, CaseIterable {
    /// Must stay bit-identical to the parent's tensor.
    case frozen
    /// May change.
    case trainable
    /// Not the parent's: a tensor the parent lacks, or one the student re-initialises (a new
    /// head in place of the parent's). Never checked against the parent.
    case new
    /// In the parent, and must be absent from the student's checkpoints.
    case dropped
}

/// How much of the parent a student trains, derived from its manifest.
public enum TransferMode: String, Sendable, Codable, CaseIterable {
    /// Every kept parent tensor is frozen: only new tensors train.
    case featureExtraction = "feature-extraction"
    /// Some kept parent tensors are frozen, some train.
    case partialFinetune = "partial-finetune"
    /// No parent tensor is frozen.
    case fullFinetune = "full-finetune"
    /// Every parent tensor is frozen and none is stored: checkpoints hold a PEFT adapter
    /// (LoRA's low-rank pairs beside the parent's modules) and its `adapter_config.json`.
    case adapter
}

/// How a student relates to its parent.
public enum Relation: String, Sendable, Codable, CaseIterable {
    case finetune, adapter, distillation, merge, quantized
}

/// One declared rule: freeze, train, drop or re-initialise the tensors a pattern matches.
///
/// A pattern is a tensor name, a layer prefix that matches every tensor under it (`encoder`
/// matches `encoder.layer.0.weight`, not `encoderx.w`), or a glob (`*`, `?`, `[…]`).
public struct ManifestRule: Sendable, Codable, Equatable {
    /// `prefix` is not a state: it says the student names the parent's tensors under a prefix
    /// (a task model's `bert.` over a bare base), so `prefix bert.` reads every parent tensor
    /// `N` as the student's `bert.N`, and the other rules match those names.
    public enum Action: String, Sendable, Codable { case freeze, train, drop, reinit, prefix }
    public var action: Action
    public var pattern: String

    public init(_ action: Action, _ pattern: String) {
        self.action = action
        self.pattern = pattern
    }
}

/// How a student's manifest is declared: ordered rules, or exact per-tensor states (the
/// training engine's way).
public enum ManifestDeclaration: Sendable, Equatable {
    /// Rules over tensor names, plus optionally "freeze every block of PREFIX up to N".
    /// Where rules overlap, the most specific pattern wins (the most literal characters); on a
    /// tie, drop beats reinit beats train beats freeze. Tensors no rule covers are trainable.
    case rules([ManifestRule], freezeThrough: String?)
    /// Each tensor's state; parent tensors not named are trainable; `new` names tensors the
    /// parent lacks, or parent tensors the student replaces with its own (re-initialised).
    case perTensor([String: TensorState])
    /// An adapter on the parent (``TransferMode/adapter``): every parent tensor frozen by
    /// definition, never stored with the student's checkpoints, which hold the adapter only.
    case adapter
}

/// A student's manifest entry for one tensor.
public struct ManifestEntry: Sendable, Codable, Equatable {
    public var name: String
    public var state: TensorState
    public var dtype: DType?
    public var shape: [Int]?
    public var parameters: Int
    /// The parent's digest for this tensor (absent for `new`).
    public var parentDigest: Digest?

    package init(name: String, state: TensorState, dtype: DType? = nil, shape: [Int]? = nil, parameters: Int, parentDigest: Digest? = nil) {
        self.name = name
        self.state = state
        self.dtype = dtype
        self.shape = shape
        self.parameters = parameters
        self.parentDigest = parentDigest
    }
}

/// Resolves a declaration against the parent's tensors.
package enum ManifestResolver {
    /// - Throws: ``GraftError/patternMatchesNothing(_:)``, ``GraftError/invalidManifest(_:)``.
    static func resolve(_ declaration: ManifestDeclaration, parent: [TensorEntry]) throws(GraftError) -> [ManifestEntry] {
        var parent = parent
        var states: [String: TensorState] = [:]
        var newEntries: [ManifestEntry] = []
        switch declaration {
        case .adapter:
            for tensor in parent { states[tensor.name] = .frozen }
        case .perTensor(let given):
            let names = Set(parent.map(\.name))
            for (name, state) in given {
                if state == .new, !names.contains(name) {
                    newEntries.append(ManifestEntry(name: name, state: .new, dtype: nil, shape: nil, parameters: 0, parentDigest: nil))
                } else {
                    guard names.contains(name) else {
                        throw .invalidManifest("`\(name)` is not a tensor of the parent; only `new` tensors may be absent from it")
                    }
                    states[name] = state
                }
            }
        case .rules(let declared, let freezeThrough):
            let (prefix, rules) = try prefixRule(declared)
            if !prefix.isEmpty {
                parent = parent.map { tensor in
                    var renamed = tensor
                    renamed.name = prefix + tensor.name
                    return renamed
                }
            }
            var matchers = try rules.map { rule throws(GraftError) -> Matcher in try Matcher(rule) }
            if let freezeThrough { matchers.append(try Matcher(freezeThrough: freezeThrough)) }
            var used = Array(repeating: false, count: matchers.count)
            for tensor in parent {
                var best: (score: Int, rank: Int, state: TensorState)? = nil
                for (index, matcher) in matchers.enumerated() where matcher.matches(tensor.name) {
                    used[index] = true
                    let candidate = (matcher.specificity, matcher.action.rank, matcher.action.state)
                    if best == nil || (candidate.0, candidate.1) > (best!.score, best!.rank) { best = candidate }
                }
                states[tensor.name] = best?.state ?? .trainable
            }
            if let unused = used.firstIndex(of: false) { throw .patternMatchesNothing(matchers[unused].description) }
        }
        return parent.map { tensor in
            // A re-initialised tensor is the student's own: its shape is whatever it brings.
            if states[tensor.name] == .new {
                return ManifestEntry(name: tensor.name, state: .new, dtype: nil, shape: nil, parameters: 0, parentDigest: nil)
            }
            return ManifestEntry(
                name: tensor.name, state: states[tensor.name] ?? .trainable, dtype: tensor.dtype, shape: tensor.shape,
                parameters: tensor.parameters, parentDigest: tensor.digest)
        } + newEntries.sorted { $0.name < $1.name }
    }

    /// The declaration's prefix (empty when it has none) and its other rules.
    /// - Throws: ``GraftError/invalidManifest(_:)`` for two prefixes, or one that is not a layer
    ///   path ending in `.` (`bert.`, `model.encoder.`).
    static func prefixRule(_ rules: [ManifestRule]) throws(GraftError) -> (prefix: String, rules: [ManifestRule]) {
        let prefixes = rules.filter { $0.action == .prefix }.map(\.pattern)
        guard prefixes.count <= 1 else { throw .invalidManifest("one prefix at most (given: \(prefixes.joined(separator: ", ")))") }
        let prefix = prefixes.first ?? ""
        if !prefix.isEmpty {
            let path = prefix.dropLast()
            guard prefix.hasSuffix("."), !path.isEmpty, !path.split(separator: ".", omittingEmptySubsequences: false).contains(""),
                !prefix.contains(where: { "*?[]".contains($0) || $0.isWhitespace })
            else { throw .invalidManifest("the prefix \(show(prefix)) is not a layer path ending in `.` (e.g. `bert.`)") }
        }
        return (prefix, rules.filter { $0.action != .prefix })
    }

    /// Resolves rules, and when one matches nothing, tries the prefix its pattern starts with
    /// (`bert.` for `bert.embeddings`): a task model names the base's tensors under the
    /// architecture's attribute, and its user writes rules in the names they see. The
    /// declaration returned says the prefix it resolved with.
    static func resolveInferringPrefix(_ declaration: ManifestDeclaration, parent: [TensorEntry]) throws(GraftError)
        -> (entries: [ManifestEntry], declaration: ManifestDeclaration)
    {
        do {
            return (try resolve(declaration, parent: parent), declaration)
        } catch {
            guard case .patternMatchesNothing = error, case .rules(let rules, let through) = declaration,
                !rules.contains(where: { $0.action == .prefix })
            else { throw error }
            let topLevel = Set(parent.map { $0.name.split(separator: ".").first.map(String.init) ?? $0.name })
            var candidates: [String] = []
            for pattern in rules.map(\.pattern) + (through.map { [$0] } ?? []) {
                guard let first = pattern.split(separator: ".").first.map(String.init), pattern.contains("."),
                    !first.contains(where: { "*?[]".contains($0) }), !topLevel.contains(first), !candidates.contains(first + ".")
                else { continue }
                candidates.append(first + ".")
            }
            for prefix in candidates {
                let prefixed = ManifestDeclaration.rules([ManifestRule(.prefix, prefix)] + rules, freezeThrough: through)
                if let entries = try? resolve(prefixed, parent: parent) { return (entries, prefixed) }
            }
            throw error
        }
    }

    /// The transfer mode a manifest implies.
    package static func mode(of entries: [ManifestEntry]) -> TransferMode {
        let kept = entries.filter { $0.state == .frozen || $0.state == .trainable }
        let frozen = kept.filter { $0.state == .frozen }.count
        if frozen == 0 { return .fullFinetune }
        return frozen == kept.count ? .featureExtraction : .partialFinetune
    }

    struct Matcher: CustomStringConvertible {
        let action: ManifestRule.Action
        let pattern: String
        let isGlob: Bool
        /// For `--freeze-through PREFIX.N`: the prefix and N.
        let through: (prefix: String, last: Int)?
        let specificity: Int

        init(_ rule: ManifestRule) throws(GraftError) {
            guard !rule.pattern.isEmpty else { throw .invalidManifest("an empty pattern matches nothing") }
            action = rule.action
            pattern = rule.pattern
            isGlob = rule.pattern.contains { "*?[".contains($0) }
            through = nil
            specificity = rule.pattern.filter { !"*?[]".contains($0) }.count
        }

        init(freezeThrough layer: String) throws(GraftError) {
            // PREFIX.N (`features.4`) or PREFIXN (`layer3`, torchvision's ResNet naming).
            let digits = layer.reversed().prefix { $0.isASCII && $0.isNumber }
            let prefix = String(layer.dropLast(digits.count))
            guard !digits.isEmpty, !prefix.isEmpty, let last = Int(String(digits.reversed())) else {
                throw .invalidManifest(
                    """
                    freeze-through takes a numbered layer such as `features.4`, `encoder.layer.5` or `layer3`; `\(layer)` ends in no\
                     number
                    """
                )
            }
            action = .freeze
            pattern = layer
            isGlob = false
            through = (prefix, last)
            specificity = prefix.count
        }

        func matches(_ name: String) -> Bool {
            if let through {
                guard name.hasPrefix(through.prefix) else { return false }
                let rest = name.dropFirst(through.prefix.count)
                let digits = rest.prefix { $0.isASCII && $0.isNumber }
                guard let number = Int(digits), rest.dropFirst(digits.count).isEmpty || rest.dropFirst(digits.count).hasPrefix(".") else {
                    return false
                }
                return number <= through.last
            }
            if isGlob { return Glob.matches(Array(pattern.unicodeScalars), Array(name.unicodeScalars)) }
            return name == pattern || name.hasPrefix(pattern + ".")
        }

        /// The rule as declared: `freeze features`, `freeze-through layer3`.
        var description: String { through != nil ? "freeze-through \(pattern)" : "\(action.rawValue) \(pattern)" }
    }
}

extension ManifestRule.Action {
    var rank: Int {
        switch self {
        case .freeze: 0
        case .train: 1
        case .reinit: 2
        case .drop: 3
        case .prefix: -1
        }
    }

    var state: TensorState {
        switch self {
        case .freeze: .frozen
        case .train: .trainable
        case .drop: .dropped
        case .reinit: .new
        case .prefix: .trainable
        }
    }
}

/// Shell-style patterns as `fnmatch(3)` reads them with no flags: `*` any run of characters
/// (dots and slashes included), `?` one character, `[abc]`, `[a-z]` and `[!abc]` (or `[^abc]`)
/// one character of a set, `\\` takes the next character literally. Plain Swift, so the
/// core needs no C library.
package enum Glob {
    package static func matches(_ pattern: [Unicode.Scalar], _ text: [Unicode.Scalar]) -> Bool {
        var p = 0, t = 0
        // Where the last `*` was, and how much text it had swallowed: backtracking goes there.
        var star: (pattern: Int, text: Int)? = nil
        while t < text.count {
            if p < pattern.count {
                switch pattern[p] {
                case "*":
                    star = (p, t)
                    p += 1
                    continue
                case "?":
                    p += 1
                    t += 1
                    continue
                case "[":
                    if let (matched, next) = bracket(pattern, from: p, text[t]) {
                        if matched {
                            p = next
                            t += 1
                            continue
                        }
                    } else if text[t] == "[" {  // an unclosed `[` is a literal
                        p += 1
                        t += 1
                        continue
                    }
                case "\\" where p + 1 < pattern.count:
                    if pattern[p + 1] == text[t] {
                        p += 2
                        t += 1
                        continue
                    }
                default:
                    if pattern[p] == text[t] {
                        p += 1
                        t += 1
                        continue
                    }
                }
            }
            guard let last = star else { return false }
            star = (last.pattern, last.text + 1)
            p = last.pattern + 1
            t = last.text + 1
        }
        while p < pattern.count, pattern[p] == "*" { p += 1 }
        return p == pattern.count
    }

    /// Matches one character against the bracket expression at `start`; `nil` when it is not closed.
    private static func bracket(_ pattern: [Unicode.Scalar], from start: Int, _ character: Unicode.Scalar) -> (matched: Bool, next: Int)? {
        var index = start + 1
        var negated = false
        if index < pattern.count, pattern[index] == "!" || pattern[index] == "^" {
            negated = true
            index += 1
        }
        var matched = false
        var first = true
        while index < pattern.count {
            var low = pattern[index]
            if low == "]", !first { return (matched != negated, index + 1) }
            first = false
            if low == "\\", index + 1 < pattern.count {
                index += 1
                low = pattern[index]
            }
            if index + 2 < pattern.count, pattern[index + 1] == "-", pattern[index + 2] != "]" {
                var high = pattern[index + 2]
                index += 2
                if high == "\\", index + 1 < pattern.count {
                    index += 1
                    high = pattern[index]
                }
                if low.value <= character.value, character.value <= high.value { matched = true }
            } else if low == character {
                matched = true
            }
            index += 1
        }
        return nil
    }
}
