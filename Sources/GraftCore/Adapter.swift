import Foundation
package import SafeTensors

/// A PEFT adapter's `adapter_config.json`, as far as Graft reads it: what it checks an adapter's
/// tensors against and what a merge needs. Every other key is kept in the file, untouched.
public struct AdapterConfig: Sendable, Equatable {
    /// The file every PEFT adapter directory holds beside `adapter_model.safetensors`.
    public static let fileName = "adapter_config.json"

    /// `LORA`, `IA3`, `LOKR`, …
    public var peftType: String
    /// LoRA's rank `r`, and per-module ranks (`rank_pattern`, keys matched as PEFT matches them).
    public var rank: Int?
    public var rankPattern: [String: Int]
    /// LoRA's `lora_alpha`, and per-module alphas (`alpha_pattern`).
    public var alpha: Double?
    public var alphaPattern: [String: Double]
    /// Scale by alpha/√r instead of alpha/r.
    public var useRSLoRA: Bool
    /// GPT-2's Conv1D stores weights transposed ([in, out]).
    public var fanInFanOut: Bool
    /// Modules trained whole beside the adapter (a new head): their copies are the adapter's tensors.
    public var modulesToSave: [String]
    /// `target_modules`: module names (suffixes), or one regular expression (PEFT takes either).
    public var targetModules: [String]
    /// Settings no plain merge reproduces (DoRA, trained biases, layer replication).
    public var useDoRA: Bool
    public var loraBias: Bool
    public var bias: String
    public var layerReplication: Bool

    /// The prefix PEFT saves every tensor under (the wrapped model's names follow it).
    public static let keyPrefix = "base_model.model."

    /// Reads the file's bytes.
    /// - Throws: ``GraftError/invalidManifest(_:)`` saying what is wrong.
    package static func parse(_ bytes: [UInt8]) throws(GraftError) -> AdapterConfig {
        func bad(_ reason: String) -> GraftError { .invalidManifest("\(fileName) \(reason)") }
        struct Raw: Decodable {
            var peft_type: String?
            var r: Double?
            var lora_alpha: Double?
            var use_rslora: Bool?
            var fan_in_fan_out: Bool?
            var modules_to_save: [String]?
            var use_dora: Bool?
            var lora_bias: Bool?
            var bias: String?
            var layer_replication: [[Int]]?
            var rank_pattern: [String: Double]?
            var alpha_pattern: [String: Double]?
            var target_modules: Targets?
        }
        /// PEFT's `target_modules`: a list of names or one pattern.
        enum Targets: Decodable {
            case names([String])
            case pattern(String)
            init(from decoder: any Decoder) throws {
                let container = try decoder.singleValueContainer()
                if let names = try? container.decode([String].self) {
                    self = .names(names)
                } else {
                    self = .pattern(try container.decode(String.self))
                }
            }
            var list: [String] {
                switch self {
                case .names(let names): names
                case .pattern(let pattern): [pattern]
                }
            }
        }
        let raw: Raw
        do { raw = try JSONDecoder().decode(Raw.self, from: Data(bytes)) } catch {
            if case .typeMismatch(_, let context) = error as? DecodingError, let key = context.codingPath.first?.stringValue {
                throw bad("has a \(key) of the wrong type (\(context.debugDescription))")
            }
            throw bad("is not a JSON object")
        }
        guard let type = raw.peft_type, !type.isEmpty else { throw bad("names no peft_type") }
        var config = AdapterConfig(
            peftType: type.uppercased(), rank: nil, rankPattern: [:], alpha: nil, alphaPattern: [:], useRSLoRA: raw.use_rslora ?? false,
            fanInFanOut: raw.fan_in_fan_out ?? false, modulesToSave: raw.modules_to_save ?? [],
            targetModules: raw.target_modules?.list ?? [], useDoRA: raw.use_dora ?? false,
            loraBias: raw.lora_bias ?? false, bias: raw.bias ?? "none", layerReplication: raw.layer_replication != nil)
        guard config.peftType == "LORA" else { return config }
        func whole(_ value: Double?) -> Int? {
            guard let value, value >= 1, value <= 16_777_216, value == value.rounded() else { return nil }
            return Int(value)
        }
        guard let rank = whole(raw.r) else { throw bad("gives no rank r (a positive whole number) for a LoRA adapter") }
        config.rank = rank
        guard let alpha = raw.lora_alpha, alpha.isFinite else { throw bad("gives no lora_alpha (a number) for a LoRA adapter") }
        config.alpha = alpha
        for (key, value) in raw.rank_pattern ?? [:] {
            guard let rank = whole(value) else { throw bad("has a rank_pattern entry \(show(key)) that is not a positive whole number") }
            config.rankPattern[key] = rank
        }
        for (key, value) in raw.alpha_pattern ?? [:] {
            guard value.isFinite else { throw bad("has an alpha_pattern entry \(show(key)) that is not a number") }
            config.alphaPattern[key] = value
        }
        return config
    }

    /// One line for `show`: `LORA rank 8, alpha 16 (scale 2) on query, value; modules_to_save classifier`.
    public var summary: String {
        var text = peftType
        if let rank, let alpha {
            let scale = useRSLoRA ? alpha / Double(rank).squareRoot() : alpha / Double(rank)
            func number(_ value: Double) -> String {
                value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(format: "%.4g", value)
            }
            text += " rank \(rank), alpha \(number(alpha)) (scale \(number(scale))\(useRSLoRA ? ", rsLoRA" : ""))"
            if !rankPattern.isEmpty { text += ", per-module ranks" }
        }
        if !targetModules.isEmpty { text += " on " + targetModules.joined(separator: ", ") }
        if !modulesToSave.isEmpty { text += "; modules_to_save " + modulesToSave.joined(separator: ", ") }
        if useDoRA { text += "; DoRA" }
        return text
    }

    /// The rank of a module (`bert.encoder.layer.0.attention.self.query`): its `rank_pattern`
    /// entry if one matches, as PEFT matches them (the key, a regular expression, matches the
    /// whole name or a dotted tail of it), else `r`.
    package func rank(of module: String) -> Int { Self.lookup(rankPattern, module) ?? rank ?? 0 }

    /// The factor a merge multiplies B·A by: alpha / r, or alpha / √r with rsLoRA.
    package func scale(of module: String) -> Double {
        let r = Double(rank(of: module))
        let alpha = Self.lookup(alphaPattern, module) ?? self.alpha ?? r
        return useRSLoRA ? alpha / r.squareRoot() : alpha / r
    }

    /// Why a merge cannot reproduce this adapter exactly; `nil` for a plain LoRA.
    package var mergeProblem: String? {
        if peftType != "LORA" {
            return "it is a \(peftType) adapter; only LoRA adapters merge (export it as an adapter, or merge it with PEFT)"
        }
        if useDoRA { return "it uses DoRA (use_dora), whose magnitude vectors a plain merge does not apply" }
        if loraBias { return "it trains LoRA biases (lora_bias)" }
        if bias != "none" { return "it trains the base's biases (bias = \(bias))" }
        if layerReplication { return "it replicates layers (layer_replication)" }
        return nil
    }

    private static func lookup<Value>(_ patterns: [String: Value], _ module: String) -> Value? {
        // PEFT: re.match(rf"(.*\.)?({key})$", module); the longest key wins ties deterministically.
        for key in patterns.keys.sorted(by: { ($0.count, $0) > ($1.count, $1) }) {
            if module == key || module.hasSuffix("." + key) { return patterns[key] }
            if let expression = try? NSRegularExpression(pattern: "^(.*\\.)?(\(key))$"),
                expression.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil
            {
                return patterns[key]
            }
        }
        return nil
    }
}

/// How a PEFT adapter checkpoint's tensors lie on its parent's: what the commit checks and what
/// a merged export computes.
package struct AdapterLayout: Sendable, Equatable {
    /// One LoRA pair on one parent weight.
    package struct Target: Sendable, Equatable {
        package enum Kind: Sendable, Equatable { case linear, conv, embedding }
        /// The parent's tensor (`encoder.layer.0.attention.self.query.weight`).
        package var parentTensor: String
        /// The adapter's A and B tensors (their names in the checkpoint).
        package var a: String
        package var b: String
        package var kind: Kind
        package var rank: Int
        package var scale: Double
        /// The parent weight is stored [in, out] (fan_in_fan_out).
        package var transposed: Bool
    }

    /// What the student names the parent's tensors under (`bert.`), or "".
    package var prefix: String
    package var targets: [Target]
    /// Whole-module copies (`modules_to_save`): the checkpoint's tensor and the name it takes
    /// in the merged model (the parent's tensor it replaces, or a new one).
    package var copies: [(tensor: String, name: String)]

    package static func == (lhs: AdapterLayout, rhs: AdapterLayout) -> Bool {
        lhs.prefix == rhs.prefix && lhs.targets == rhs.targets && lhs.copies.map(\.tensor) == rhs.copies.map(\.tensor)
            && lhs.copies.map(\.name) == rhs.copies.map(\.name)
    }

    /// Lays the adapter's tensors on the parent's: every tensor is under `base_model.model.`;
    /// a LoRA tensor's module is a parent module with a weight, its A and B both present, float,
    /// with the shapes the module and its rank give; a module copy is under a module named in
    /// `modules_to_save`; any other adapter type's tensors sit on parent modules. The parent's
    /// names may carry a prefix in the adapter (a task model's `bert.` over a bare base): the
    /// first that places every module is taken.
    ///
    /// - Returns: the layout, or the problems (one per offending tensor), never both.
    package static func resolve(_ config: AdapterConfig, tensors: [TensorInfo], parent: [ManifestEntry])
        -> (layout: AdapterLayout?, problems: [ManifestViolation])
    {
        let parentByName = Dictionary(parent.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let modules = Set(
            parent.flatMap { entry in
                let parts = entry.name.split(separator: ".")
                return (1..<max(parts.count, 1)).map { parts[0..<$0].joined(separator: ".") }
            })
        let inner = tensors.map {
            $0.name.hasPrefix(AdapterConfig.keyPrefix) ? String($0.name.dropFirst(AdapterConfig.keyPrefix.count)) : nil
        }
        var candidates = [""]
        for name in inner.compactMap({ $0 }) {
            if let first = name.split(separator: ".").first.map({ String($0) + "." }), !candidates.contains(first) {
                candidates.append(first)
            }
        }
        // The prefix that places the most modules on the parent's explains the problems best
        // (a wrong shape says more than "no such module").
        var best: (placed: Int, problems: [ManifestViolation])? = nil
        for prefix in candidates {
            let attempt = resolve(config, tensors: tensors, inner: inner, prefix: prefix, parent: parentByName, modules: modules)
            if attempt.problems.isEmpty, attempt.layout != nil { return (attempt.layout, []) }
            if best == nil || attempt.placed > best!.placed { best = (attempt.placed, attempt.problems) }
        }
        return (nil, best?.problems ?? [])
    }

    private static func resolve(
        _ config: AdapterConfig, tensors: [TensorInfo], inner: [String?], prefix: String, parent: [String: ManifestEntry],
        modules: Set<String>
    ) -> (layout: AdapterLayout?, problems: [ManifestViolation], placed: Int) {
        var problems: [ManifestViolation] = []
        var placed = 0
        func problem(_ tensor: String, _ expected: String, _ found: String? = nil) {
            problems.append(.notAdapter(tensor: tensor, expected: expected, found: found))
        }
        /// The parent's name of a module the adapter names (`bert.encoder…` under prefix `bert.`).
        func parentName(_ module: String) -> String? {
            guard module.hasPrefix(prefix) else { return nil }
            return String(module.dropFirst(prefix.count))
        }
        func isCopy(_ module: String) -> Bool {
            config.modulesToSave.contains {
                module == $0 || module.hasSuffix("." + $0) || module.hasPrefix($0 + ".") || module.contains("." + $0 + ".")
            }
        }
        var pairs: [String: (a: TensorInfo?, b: TensorInfo?, embedding: Bool)] = [:]
        var copies: [(tensor: String, name: String)] = []
        var pairedExtras: [(tensor: String, module: String)] = []
        let loraSuffixes: [(String, Bool, Bool)] = [
            (".lora_A.weight", true, false), (".lora_B.weight", false, false), (".lora_embedding_A", true, true),
            (".lora_embedding_B", false, true),
        ]
        for (tensor, name) in zip(tensors, inner) {
            guard let name else {
                problem(tensor.name, "a name under \(AdapterConfig.keyPrefix) (PEFT's save_pretrained)")
                continue
            }
            if config.peftType == "LORA", let (suffix, isA, embedding) = loraSuffixes.first(where: { name.hasSuffix($0.0) }) {
                let module = String(name.dropLast(suffix.count))
                var pair = pairs[module] ?? (nil, nil, embedding)
                if isA { pair.a = tensor } else { pair.b = tensor }
                pairs[module] = pair
                continue
            }
            let module = name.split(separator: ".").dropLast().joined(separator: ".")
            if isCopy(module) {
                copies.append((tensor.name, name))
                continue
            }
            // What a LoRA trains beside its pairs, when its config says so: DoRA's magnitudes and
            // LoRA biases (on a module with a pair), and with `bias` the parent's own biases.
            if config.peftType == "LORA" {
                if config.useDoRA,
                    let suffix = [".lora_magnitude_vector", ".lora_magnitude_vector.weight"].first(where: { name.hasSuffix($0) })
                {
                    pairedExtras.append((tensor.name, String(name.dropLast(suffix.count))))
                    continue
                }
                if config.loraBias, name.hasSuffix(".lora_B.bias") {
                    pairedExtras.append((tensor.name, String(name.dropLast(".lora_B.bias".count))))
                    continue
                }
                if config.bias != "none", name.hasSuffix(".bias") {
                    var owner = String(name.dropLast(".bias".count))
                    if owner.hasSuffix(".base_layer") { owner = String(owner.dropLast(".base_layer".count)) }
                    if let parentOwner = parentName(owner), parent[parentOwner + ".bias"] != nil { continue }
                }
            }
            if config.peftType == "LORA" {
                problem(tensor.name, "a LoRA tensor (lora_A, lora_B) or a copy of a module in modules_to_save")
            } else if parentName(module).map({ modules.contains($0) }) != true {
                problem(tensor.name, "a tensor of a module the parent has", "no module \(module) in the parent")
            }
        }
        for (tensor, module) in pairedExtras where pairs[module] == nil {
            problem(tensor, "a tensor beside a LoRA pair", "no lora_A and lora_B for \(module)")
        }
        var targets: [Target] = []
        for module in pairs.keys.sorted() {
            let pair = pairs[module]!
            guard let a = pair.a, let b = pair.b else {
                let (present, absent) = pair.a != nil ? (pair.a!, "lora_B") : (pair.b!, "lora_A")
                problem(present.name, "its \(absent) beside it", "no \(absent) for \(module)")
                continue
            }
            guard let weightName = parentName(module).map({ $0 + ".weight" }), let weight = parent[weightName], let shape = weight.shape
            else {
                problem(
                    a.name, "a module the parent has, with a weight",
                    "no tensor \(prefix.isEmpty ? "" : "(under prefix \(prefix)) ")\(module).weight in the parent")
                continue
            }
            placed += 1
            let rank = config.rank(of: module)
            let kind: Target.Kind = pair.embedding ? .embedding : shape.count == 4 ? .conv : .linear
            let transposed = kind == .linear && config.fanInFanOut
            let (expectedA, expectedB): ([Int], [Int])
            switch kind {
            case .linear where shape.count == 2:
                let (out, input) = transposed ? (shape[1], shape[0]) : (shape[0], shape[1])
                (expectedA, expectedB) = ([rank, input], [out, rank])
            case .conv:
                (expectedA, expectedB) = ([rank, shape[1], shape[2], shape[3]], [shape[0], rank, 1, 1])
            case .embedding where shape.count == 2:
                (expectedA, expectedB) = ([rank, shape[0]], [shape[1], rank])
            default:
                problem(a.name, "a module whose weight is a matrix or a convolution kernel", "\(weightName) has shape \(shape)")
                continue
            }
            let floats: Set<DType> = [.f32, .f16, .bf16, .f64]
            for (tensor, expected) in [(a, expectedA), (b, expectedB)] {
                if !floats.contains(tensor.dtype) {
                    problem(tensor.name, "a floating-point tensor", tensor.dtype.rawValue)
                } else if tensor.shape != expected {
                    problem(
                        tensor.name, "shape \(expected) (rank \(rank) on \(weightName) \(shape))", "shape \(tensor.shape)")
                }
            }
            targets.append(
                Target(
                    parentTensor: weightName, a: a.name, b: b.name, kind: kind, rank: rank, scale: config.scale(of: module),
                    transposed: transposed
                ))
        }
        if tensors.isEmpty { problem(AdapterConfig.fileName, "at least one adapter tensor", "none") }
        guard problems.isEmpty else { return (nil, problems, placed) }
        return (AdapterLayout(prefix: prefix, targets: targets, copies: copies), [], placed)
    }
}
