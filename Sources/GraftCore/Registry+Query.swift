import SafeTensors

extension Registry {
    /// Every model, by name.
    public func models() async throws(GraftError) -> [ModelSummary] {
        try await metadata.models()
    }

    /// A model with its checkpoints and the tensors of its newest checkpoint.
    ///
    /// - Throws: ``GraftError/modelNotFound(_:suggestions:)`` with close names.
    public func model(_ name: ModelName) async throws(GraftError) -> ModelDetail {
        guard let found = try await metadata.model(named: name) else { throw try await notFound(name) }
        var latest: CheckpointDetail? = nil
        if let latestID = found.latestCheckpointID, let last = found.checkpoints.last {
            latest = try await detail(id: latestID, summary: last)
        }
        let open = try await metadata.openAdvisories()
        var advisories: [String] = []
        if !open.isEmpty {
            let chain = try await metadata.chain(model: found.id, full: true)
            advisories =
                AdvisoryInheritance.inherited(chain: chain, open: open).sorted()
                + (try await metadata.checkpointAdvisoryLabels()[found.id] ?? []).sorted()
        }
        return ModelDetail(
            model: found.summary, checkpoints: found.checkpoints, latest: latest, manifest: try await manifest(of: name),
            aliases: try await aliases(of: name),
            advisories: advisories)
    }

    /// The checkpoints of a model, oldest first.
    public func checkpoints(of name: ModelName) async throws(GraftError) -> [CheckpointSummary] {
        try await model(name).checkpoints
    }

    /// A checkpoint with its tensors grouped by layer. A bare model name means its newest checkpoint.
    public func checkpoint(_ reference: Reference) async throws(GraftError) -> CheckpointDetail {
        let (id, summary) = try await resolve(reference)
        return try await detail(id: id, summary: summary)
    }

    /// A checkpoint's tensors by layer and, for a directory, its files.
    private func detail(id: Int64, summary: CheckpointSummary) async throws(GraftError) -> CheckpointDetail {
        let tensors = try await metadata.tensors(checkpoint: id)
        let files = try await metadata.files(checkpoint: id)
        let lengths = tensors.map(\.bytes)
        return CheckpointDetail(
            checkpoint: summary, layers: LayerGroup.group(tensors), files: files.map { $0.entry(tensorBytes: lengths) },
            signature: try await metadata.signature(checkpoint: id)?.info)
    }

    /// Finds the checkpoint a reference names.
    ///
    /// - Throws: ``GraftError/modelNotFound(_:suggestions:)``, ``GraftError/checkpointNotFound(_:available:)``,
    ///   ``GraftError/digestNotFound(prefix:)``, ``GraftError/ambiguousDigest(prefix:candidates:)``,
    ///   ``GraftError/aliasNotFound(model:alias:)``.
    package func resolve(_ reference: Reference) async throws(GraftError) -> (id: Int64, summary: CheckpointSummary) {
        let found = try await resolved(reference)
        return (found.id, found.summary)
    }

    package func resolved(_ reference: Reference) async throws(GraftError) -> ResolvedCheckpoint {
        if case .digest(let prefix) = reference {
            let rows = try await metadata.checkpoints(digestPrefix: prefix, limit: 10)
            guard let first = rows.first else { throw .digestNotFound(prefix: prefix) }
            // Identical files registered twice share a digest; that is no ambiguity.
            guard Set(rows.map(\.summary.digest)).count == 1 else {
                throw .ambiguousDigest(prefix: prefix, candidates: rows.map(\.summary.ref))
            }
            return first
        }
        guard let name = reference.modelName else { throw .invalidReference(reference.description, reason: "names no model") }
        if case .alias(_, let alias) = reference {
            guard try await modelID(name) != nil else { throw try await notFound(name) }
            guard let found = try await metadata.checkpoint(model: name, alias: alias) else {
                throw .aliasNotFound(model: name, alias: alias)
            }
            return found
        }
        let number: Int? = if case .number(_, let number) = reference { number } else { nil }
        if let found = try await metadata.checkpoint(model: name, number: number) { return found }
        let checkpoints = try await model(name).checkpoints
        let available = checkpoints.isEmpty ? "the model has no checkpoints" : "\(name) has checkpoints 1–\(checkpoints.last!.number)"
        throw .checkpointNotFound(reference, available: available)
    }

    func tensors(checkpointID: Int64) async throws(GraftError) -> [TensorEntry] {
        try await metadata.tensors(checkpoint: checkpointID)
    }

    /// The row id of a model, or `nil`.
    func modelID(_ name: ModelName) async throws(GraftError) -> Int64? {
        try await metadata.modelID(named: name)
    }

    /// The error for a missing model, with up to three close names.
    func notFound(_ name: ModelName) async throws(GraftError) -> GraftError {
        let names = try await metadata.modelNames()
        let target = name.value.lowercased()
        let close =
            names
            .map { ($0, editDistance($0.lowercased(), target)) }
            .filter { $0.1 <= max(2, target.count / 3) || $0.0.lowercased().contains(target) || target.contains($0.0.lowercased()) }
            .sorted { ($0.1, $0.0) < ($1.1, $1.0) }
            .prefix(3)
            .map(\.0)
        return .modelNotFound(name, suggestions: Array(close))
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
func editDistance(_ a: String, _ b: String) -> Int {
    let x = Array(a.utf8), y = Array(b.utf8)
    if x.isEmpty { return y.count }
    var previous = Array(0...y.count)
    for i in 1...x.count {
        var current = [i] + [Int](repeating: 0, count: y.count)
        for j in stride(from: 1, through: y.count, by: 1) {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[y.count]
}
