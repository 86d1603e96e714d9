import SafeTensors

/// How one tensor differs between two checkpoints.
public struct TensorDiff: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable { case same, changed, added, removed }
    public var name: String
    public var status: Status
    /// The digest in the first checkpoint (absent when added).
    public var from: Digest?
    /// The digest in the second checkpoint (absent when removed).
    public var to: Digest?
    public var parameters: Int
}

/// Per-layer counts of a diff.
public struct LayerDiff: Sendable, Codable, Equatable {
    public var layer: String
    public var same: Int
    public var changed: Int
    public var added: Int
    public var removed: Int
}

/// The difference between two checkpoints, by tensor and by layer.
public struct DiffResult: Sendable, Codable, Equatable {
    public var from: String
    public var to: String
    public var tensors: [TensorDiff]
    public var layers: [LayerDiff]
}

/// The prefix under which one list of tensor names holds another's (`bert.` of a task model
/// over its base's names), found from the names alone.
package enum TensorPrefix {
    /// The prefix and whether `a` is the side without it, when prepending it to one side's names
    /// matches at least half of them and more than the names already shared; `nil` otherwise.
    package static func detect(_ a: [String], _ b: [String]) -> (prefix: String, aIsBare: Bool)? {
        let (setA, setB) = (Set(a), Set(b))
        let shared = setA.intersection(setB).count
        func best(bare: Set<String>, prefixed: Set<String>) -> (String, Int)? {
            let topLevel = Set(bare.map { $0.split(separator: ".").first.map(String.init) ?? $0 })
            let candidates = Set(
                prefixed.compactMap { name -> String? in
                    guard let first = name.split(separator: ".").first, name.contains("."), !topLevel.contains(String(first)) else {
                        return nil
                    }
                    return String(first) + "."
                })
            return candidates.map { prefix in (prefix, bare.filter { prefixed.contains(prefix + $0) }.count) }
                .max { ($0.1, $1.0) < ($1.1, $0.0) }
        }
        let options = [(best(bare: setA, prefixed: setB), true, setA.count), (best(bare: setB, prefixed: setA), false, setB.count)]
        guard
            let (found, aIsBare, size) = options.compactMap({ option in option.0.map { ($0, option.1, option.2) } })
                .max(by: { $0.0.1 < $1.0.1 }),
            found.1 * 2 >= size, found.1 > shared
        else { return nil }
        return (found.0, aIsBare)
    }
}

extension Registry {
    /// Compares two checkpoints tensor by tensor (by digest, dtype and shape); a task model
    /// and a base it holds under a prefix (`bert.`) are compared through it.
    public func diff(_ first: Reference, _ second: Reference) async throws(GraftError) -> DiffResult {
        let (a, aSummary) = try await resolve(first)
        let (b, bSummary) = try await resolve(second)
        var leftTensors = try await tensors(checkpointID: a)
        var rightTensors = try await tensors(checkpointID: b)
        // A task model against its base: compare through the prefix it names the base's tensors under.
        if let (prefix, leftIsBare) = TensorPrefix.detect(leftTensors.map(\.name), rightTensors.map(\.name)) {
            func prefixed(_ tensors: [TensorEntry]) -> [TensorEntry] {
                tensors.map { tensor in
                    var renamed = tensor
                    renamed.name = prefix + tensor.name
                    return renamed
                }
            }
            if leftIsBare { leftTensors = prefixed(leftTensors) } else { rightTensors = prefixed(rightTensors) }
        }
        let left = Dictionary(leftTensors.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let right = Dictionary(rightTensors.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var diffs: [TensorDiff] = []
        for name in Set(left.keys).union(right.keys).sorted(by: numericAwareLess) {
            switch (left[name], right[name]) {
            case (let l?, let r?):
                let same = l.digest == r.digest && l.dtype == r.dtype && l.shape == r.shape
                diffs.append(
                    TensorDiff(name: name, status: same ? .same : .changed, from: l.digest, to: r.digest, parameters: r.parameters))
            case (let l?, nil):
                diffs.append(TensorDiff(name: name, status: .removed, from: l.digest, to: nil, parameters: l.parameters))
            case (nil, let r?):
                diffs.append(TensorDiff(name: name, status: .added, from: nil, to: r.digest, parameters: r.parameters))
            case (nil, nil):
                break
            }
        }
        var layers: [String: LayerDiff] = [:]
        for diff in diffs {
            let layer = diff.name.lastIndex(of: ".").map { String(diff.name[..<$0]) } ?? diff.name
            var entry = layers[layer] ?? LayerDiff(layer: layer, same: 0, changed: 0, added: 0, removed: 0)
            switch diff.status {
            case .same: entry.same += 1
            case .changed: entry.changed += 1
            case .added: entry.added += 1
            case .removed: entry.removed += 1
            }
            layers[layer] = entry
        }
        return DiffResult(
            from: aSummary.ref, to: bSummary.ref, tensors: diffs,
            layers: layers.keys.sorted(by: numericAwareLess).map { layers[$0]! })
    }
}
