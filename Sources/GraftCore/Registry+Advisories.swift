/// How serious an advisory is.
public enum Severity: String, Sendable, Codable, CaseIterable {
    case low, medium, high, critical
}

/// A known weakness of a model or checkpoint (a backdoor, a leaked test set, a license problem).
public struct Advisory: Sendable, Codable, Equatable {
    public var id: String
    public var model: String
    /// The checkpoint it is on (`NAME@N`); absent when it is on the whole model.
    public var checkpoint: String?
    public var severity: Severity
    public var note: String?
    public var url: String?
    public var createdAt: String
    public var resolvedAt: String?

    package init(
        id: String, model: String, checkpoint: String? = nil, severity: Severity, note: String? = nil, url: String? = nil,
        createdAt: String, resolvedAt: String? = nil
    ) {
        self.id = id
        self.model = model
        self.checkpoint = checkpoint
        self.severity = severity
        self.note = note
        self.url = url
        self.createdAt = createdAt
        self.resolvedAt = resolvedAt
    }
}

/// A descendant that inherits open advisories, and how.
public struct AffectedModel: Sendable, Codable, Equatable {
    public var model: String
    /// Its checkpoints, `NAME@N`: every one of them inherits.
    public var checkpoints: [String]
    /// The advisories it inherits.
    public var advisories: [String]
    /// The path of inheritance, from the flagged model down: `base@1 → student@2 → grandchild`
    /// (empty when the server was asked for parent pointers only: `paths=false`).
    public var path: [String]
    /// The checkpoint it derives from, `NAME@N` (the path's step before it); `nil` for the
    /// flagged model itself.
    public var parent: String?

    /// The checkpoint exposure was measured on (its newest; `NAME@N`) and the flagged model's
    /// checkpoint it descends from; absent when exposure was not asked for.
    public var measured: String?
    public var ancestor: String?
    /// How much of `ancestor` it holds (``Exposure/exposure``); never a sign of safety at 0.
    public var exposure: Double?
    public var frozenDepth: Int?
    public var drift: Double?
    public var layers: [LayerExposure]?

    /// Its checkpoints as typed references, to pass back to the registry.
    public var checkpointReferences: [Reference] { checkpoints.compactMap { try? Reference(parsing: $0) } }
}

extension Registry {
    /// What a reference names for advisories: a whole model (a bare NAME) or one checkpoint of it.
    private func target(of reference: Reference) async throws(GraftError) -> (
        model: Int64, checkpoint: Int64?, checkpointRef: String?, modelName: String
    ) {
        if case .model(let name) = reference {
            guard let id = try await modelID(name) else { throw try await notFound(name) }
            return (id, nil, nil, name.value)
        }
        let (id, summary) = try await resolve(reference)
        return (try await metadata.modelOf(checkpoint: id) ?? -1, id, summary.ref, summary.model.value)
    }

    /// Records an advisory on a model (a bare NAME) or on one checkpoint.
    ///
    /// - Throws: ``GraftError/advisoryExists(_:)``; ``GraftError/invalidName(_:reason:)`` for a bad id.
    @discardableResult
    public func addAdvisory(
        on reference: Reference, id: String, severity: Severity, note: String? = nil, url: String? = nil
    ) async throws(GraftError) -> Advisory {
        try ModelName.check(id, what: "advisory id")
        try FreeText.check(note, what: "advisory note")
        try FreeText.check(url, what: "advisory url")
        let target = try await target(of: reference)
        let now = timestamp()
        try await metadata.insertAdvisory(
            NewAdvisory(
                id: id, model: target.model, checkpoint: target.checkpoint, severity: severity, note: note, url: url, createdAt: now))
        return Advisory(
            id: id, model: target.modelName, checkpoint: target.checkpointRef, severity: severity, note: note, url: url, createdAt: now,
            resolvedAt: nil)
    }

    /// Advisories, newest first; resolved ones only when asked.
    public func advisories(includeResolved: Bool = false) async throws(GraftError) -> [Advisory] {
        try await metadata.advisories(includeResolved: includeResolved)
    }

    /// Marks an advisory resolved; descendants stop inheriting it.
    public func resolveAdvisory(_ id: String) async throws(GraftError) {
        try ModelName.check(id, what: "advisory id")
        guard try await metadata.resolveAdvisory(id, at: timestamp()) != nil else { throw .advisoryNotFound(id) }
    }

    /// Every descendant of `reference` (a model, or the students of one checkpoint) that
    /// inherits an open advisory, with its path of inheritance and, unless `exposure` is `nil`, how
    /// much of the flagged checkpoint on its path its newest checkpoint holds (``Exposure``).
    public func affected(_ reference: Reference, exposure detail: ExposureDetail? = .digests) async throws(GraftError) -> [AffectedModel] {
        let target = try await target(of: reference)
        let (root, first, label) = (target.model, target.checkpoint, target.checkpointRef ?? target.modelName)
        // Nothing to read unless an open advisory lies above the model (inherited) or within
        // its subtree.
        let (open, chain, rows) = try await metadata.affectedRows(model: root)
        let inherited = AdvisoryInheritance.inherited(chain: chain, open: open)
        guard !inherited.isEmpty || AdvisoryInheritance.anyWithin(open, model: root) else { return [] }
        // The whole tree below, each model with the edge it derives by, every parent before its
        // children; the flags follow from it.
        let flagged = AdvisoryInheritance.propagate(rows, root: root, inherited: inherited, open: open)
        let rootName = chain.first?.name ?? label
        func adapterParent(_ row: LineageRow) -> Int64? { row.mode == TransferMode.adapter.rawValue ? row.via : nil }
        // Each model reached: its parent's step, and the element it adds to the path of
        // inheritance (`parent@N`). Paths are built at the end, each in one allocation: a
        // chain 1,000 deep has 500,000 path elements in all.
        var names: [Int64: String] = [root: rootName]
        var steps: [(id: Int64, name: String, parent: Int, label: String, depth: Int, origin: Int64, adapterParent: Int64?)] = []
        var stepOf: [Int64: Int] = [:]
        for row in rows {
            names[row.id] = row.name
            guard let parent = row.link else { continue }
            let via = "@\(row.parentNumber ?? 0)"
            if parent == root {
                // From a checkpoint reference, only the students of that checkpoint.
                if let first, row.via != first { continue }
                steps.append((row.id, row.name, -1, rootName + via, 1, row.via ?? -1, adapterParent(row)))
            } else {
                guard let above = stepOf[parent] else { continue }
                steps.append(
                    (row.id, row.name, above, (names[parent] ?? "?") + via, steps[above].depth + 1, steps[above].origin, adapterParent(row))
                )
            }
            stepOf[row.id] = steps.count - 1
        }
        // Nearest first, then by name.
        let order = steps.indices.filter { flagged[steps[$0].id]?.isEmpty == false }.sorted {
            steps[$0].depth != steps[$1].depth
                ? steps[$0].depth < steps[$1].depth : steps[$0].name.utf8.lexicographicallyPrecedes(steps[$1].name.utf8)
        }
        let checkpoints = order.isEmpty ? [:] : try await metadata.checkpointNumbers(models: order.map { steps[$0].id })
        var affected = order.map { index in
            let (id, name, depth) = (steps[index].id, steps[index].name, steps[index].depth)
            var path = [String](repeating: "", count: depth + 1)
            path[depth] = name
            var (step, slot) = (index, depth - 1)
            while step >= 0 {
                path[slot] = steps[step].label
                (step, slot) = (steps[step].parent, slot - 1)
            }
            return AffectedModel(
                model: name, checkpoints: (checkpoints[id] ?? []).map { "\(name)@\($0)" }, advisories: flagged[id]!.sorted(), path: path,
                parent: path.count > 1 ? path[path.count - 2] : nil)
        }
        if let detail, !order.isEmpty {
            try await measureExposure(
                &affected, steps: order.map { (steps[$0].id, steps[$0].origin, steps[$0].adapterParent) }, root: rootName, detail: detail)
        }
        return affected
    }

    /// Fills in each affected model's exposure to the flagged checkpoint on its path: one read of
    /// every tensor list and one of the drift cache for the whole family.
    private func measureExposure(
        _ affected: inout [AffectedModel], steps: [(id: Int64, origin: Int64, adapterParent: Int64?)], root: String, detail: ExposureDetail
    ) async throws(GraftError) {
        let rows = try await metadata.exposureRows(
            models: steps.map(\.id), checkpoints: Array(Set(steps.map(\.origin) + steps.compactMap(\.adapterParent))))
        let originNumbers = Dictionary(zip(steps.map(\.origin), affected.map { $0.path.first ?? "" })) { first, _ in first }
        // The flagged checkpoints' layers, once each (a family shares one or a few).
        var origins: [Int64: [(name: String, tensors: [TensorEntry])]] = [:]
        var prepared:
            [(index: Int, held: HeldTensors, layers: [(name: String, matches: [ExposureMeasure.Match])], measured: String, label: String)] =
                []
        for (index, step) in steps.enumerated() {
            guard let newest = rows.newest[step.id], let ancestor = rows.tensors[step.origin] else { continue }
            let own = rows.tensors[newest.id] ?? []
            let held = step.adapterParent.map { HeldTensors(adapter: own, parent: rows.tensors[$0] ?? []) } ?? HeldTensors(own)
            let label = originNumbers[step.origin].flatMap { $0.isEmpty ? nil : $0 } ?? root
            if origins[step.origin] == nil { origins[step.origin] = ExposureMeasure.layers(ancestor) }
            let layers = ExposureMeasure.match(ancestor: ancestor, held: held, layers: origins[step.origin])
            prepared.append((index, held, layers, "\(affected[index].model)@\(newest.number)", label))
        }
        var sums = try await metadata.driftSums(Array(Set(prepared.flatMap { ExposureMeasure.pairs($0.layers) })))
        for item in prepared {
            let adapter = steps[item.index].adapterParent == nil ? nil : try Reference(parsing: item.measured)
            let measured = try await measure(
                item.held, layers: item.layers, of: item.measured, label: item.label, adapter: adapter, detail: detail, sums: &sums)
            affected[item.index].measured = measured.checkpoint
            affected[item.index].ancestor = measured.ancestor
            affected[item.index].exposure = measured.exposure
            affected[item.index].frozenDepth = measured.frozenDepth
            affected[item.index].drift = measured.drift
            affected[item.index].layers = measured.layers
        }
    }
}
