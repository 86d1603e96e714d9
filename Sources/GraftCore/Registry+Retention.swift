/// What `gc` removed (or, with `dryRun`, would remove).
public struct GCReport: Sendable, Codable, Equatable {
    public var dryRun: Bool
    /// Blobs no checkpoint references, removed with their files.
    public var blobsRemoved: Int
    /// Blob files with no blob row (an interrupted import's), removed.
    public var orphanFilesRemoved: Int
    /// Files in `tmp/` removed.
    public var temporaryFilesRemoved: Int
    public var bytesFreed: Int
    /// Unreferenced blobs and files younger than the grace period, left for a later run.
    public var keptForGrace: Int

    package init(dryRun: Bool, blobsRemoved: Int, orphanFilesRemoved: Int, temporaryFilesRemoved: Int, bytesFreed: Int, keptForGrace: Int) {
        self.dryRun = dryRun
        self.blobsRemoved = blobsRemoved
        self.orphanFilesRemoved = orphanFilesRemoved
        self.temporaryFilesRemoved = temporaryFilesRemoved
        self.bytesFreed = bytesFreed
        self.keptForGrace = keptForGrace
    }
}

extension GCReport {
    /// The part of gc that is the same for every metadata store, run under its lock: blob data
    /// the metadata does not know (`isKnown` false) goes when older than `grace`, and so does
    /// temporary data; younger ones are counted as kept.
    package mutating func sweep(
        candidates: [Digest], isKnown: (Digest) -> Bool, temporaryItems: [(name: String, age: Double)], store: any BlobStore, grace: Double
    ) {
        for digest in candidates where !isKnown(digest) {
            switch store.age(of: digest).map({ $0 >= grace }) {
            case true?:
                orphanFilesRemoved += 1
                bytesFreed += (try? store.length(of: digest)).flatMap { $0 } ?? 0
                if !dryRun { store.remove(digest) }
            case false?: keptForGrace += 1
            case nil: break
            }
        }
        for item in temporaryItems {
            if item.age >= grace {
                temporaryFilesRemoved += 1
                if !dryRun { store.removeTemporary(item.name) }
            } else {
                keptForGrace += 1
            }
        }
    }
}

/// A checkpoint a removal kept, and why.
public struct KeptCheckpoint: Sendable, Codable, Equatable {
    public var checkpoint: String
    public var reasons: [String]

    package init(checkpoint: String, reasons: [String]) {
        self.checkpoint = checkpoint
        self.reasons = reasons
    }
}

/// What `removeCheckpoint`, `prune` or `removeModel` removed.
public struct RemovalReport: Sendable, Codable, Equatable {
    public var dryRun: Bool
    /// Models removed (`removeModel`), deepest descendant first.
    public var models: [String] = []
    /// Checkpoints removed, `NAME@N`.
    public var checkpoints: [String]
    /// Checkpoints kept, with the reasons (`prune`).
    public var kept: [KeptCheckpoint] = []
    /// Bytes of blobs that no remaining checkpoint uses, freed at once.
    public var bytesFreed: Int

    package init(dryRun: Bool, models: [String] = [], checkpoints: [String], kept: [KeptCheckpoint] = [], bytesFreed: Int) {
        self.dryRun = dryRun
        self.models = models
        self.checkpoints = checkpoints
        self.kept = kept
        self.bytesFreed = bytesFreed
    }
}

extension Registry {
    /// Removes blobs that no committed checkpoint references, blob files without a row, and
    /// temporary files, each only when older than `grace` seconds (by modification time).
    ///
    /// Safe while writers run: a writer touches every blob it reuses and re-checks each blob
    /// file under the write lock before it commits, and gc deletes only under that lock — so a
    /// blob written or found by an in-flight import is either younger than the grace period,
    /// or its commit notices and the import runs again.
    public func gc(grace: Double = 3600, dryRun: Bool = false) async throws(GraftError) -> GCReport {
        try await metadata.collectGarbage(blobs: blobs.store, grace: grace, dryRun: dryRun)
    }

    /// Removes one checkpoint, unless something depends on it (refused with the reasons), and
    /// frees the blobs only it used.
    public func removeCheckpoint(_ reference: Reference, dryRun: Bool = false) async throws(GraftError) -> RemovalReport {
        let checkpoint = try await resolved(reference)
        guard let report = try await metadata.removeCheckpoint(checkpoint, blobs: blobs.store, dryRun: dryRun) else {
            throw .checkpointNotFound(reference, available: "it was removed meanwhile")
        }
        return report
    }

    /// Keeps a model's newest `keepLast` checkpoints and its best `keepBest` by `metric`, and
    /// every protected one; removes the rest.
    ///
    /// - Throws: ``GraftError/unknownMetric(_:known:)`` when `keepBest` > 0 and no checkpoint
    ///   of the model has `metric`.
    public func prune(
        _ name: ModelName, keepLast: Int, keepBest: Int = 0, metric: String? = nil, direction: Direction? = nil, split: String? = nil,
        dryRun: Bool = false
    ) async throws(GraftError) -> RemovalReport {
        guard keepLast >= 0, keepBest >= 0 else { throw .invalidMetric("keepLast/keepBest", reason: "counts must be ≥ 0") }
        if keepBest > 0 {
            guard let metric else { throw .invalidMetric("keepBest", reason: "ranking by the best needs a metric") }
            try MetricAssignment.checkName(metric)
        }
        if let split { try MetricAssignment.checkName(split) }
        guard try await modelID(name) != nil else { throw try await notFound(name) }
        let chosen = metric.map { direction ?? Direction.inferred(for: $0) }
        let policy = RetentionPolicy(keepLast: keepLast, keepBest: keepBest, metric: metric, direction: chosen ?? .max)
        guard let report = try await metadata.prune(model: name, policy: policy, split: split, blobs: blobs.store, dryRun: dryRun) else {
            throw .modelNotFound(name, suggestions: [])
        }
        return report
    }

    /// Removes a model with its checkpoints, metrics, aliases and advisories. Refused while it
    /// has descendants, unless `cascade`, which removes them too (deepest first).
    public func removeModel(_ name: ModelName, cascade: Bool = false, dryRun: Bool = false) async throws(GraftError) -> RemovalReport {
        guard try await modelID(name) != nil else { throw try await notFound(name) }
        guard let report = try await metadata.removeModel(name, cascade: cascade, blobs: blobs.store, dryRun: dryRun) else {
            throw .modelNotFound(name, suggestions: [])
        }
        return report
    }
}
