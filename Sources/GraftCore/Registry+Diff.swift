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

extension Registry {
    /// Compares two checkpoints tensor by tensor (by digest, dtype and shape).
    public func diff(_ first: Reference, _ second: Reference) async throws(GraftError) -> DiffResult {
        let (a, aSummary) = try await resolve(first)
        let (b, bSummary) = try await resolve(second)
        let left = Dictionary(try await tensors(checkpointID: a).map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let right = Dictionary(try await tensors(checkpointID: b).map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
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
