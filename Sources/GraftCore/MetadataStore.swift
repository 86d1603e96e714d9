package import SafeTensors

/// Where a registry keeps its metadata: models, checkpoints and their tensor lists, manifests,
/// metrics, curves, aliases and advisories. Two stores implement it: SQLite (`GraftSQLite`, a
/// registry directory) and PostgreSQL (`GraftPostgres`, shared by several servers).
///
/// The seam is cut at whole query shapes — a model's row with its checkpoints, a subtree's
/// lineage rows, the best candidates in a scope walked in rank order — so that each store keeps
/// its own fast paths (the SQLite store reads a 10,000-model subtree as one range of an index).
/// Each method is one transaction: it sees one consistent state, and a write either happens
/// whole or not at all. The decisions are not made here: manifests are resolved and enforced,
/// flags inherited, winners chosen and retention decided by the plain-Swift policies of the
/// core (`ManifestEnforcement`, `AdvisoryInheritance`, `BestSelection`, `RetentionPolicy`),
/// which a store calls where it needs a decision inside its transaction.
///
/// Row ids (`Int64`) identify models and checkpoints between calls of one operation; they are
/// never shown to users. A write that finds what it depends on gone answers `nil` or throws the
/// ``GraftError`` a user should see, never a store-specific error.
package protocol MetadataStore: Sendable {
    /// Where the metadata lives, for messages (a file path, a database URL without secrets).
    var location: String { get }

    // MARK: Models and checkpoints

    func modelID(named name: ModelName) async throws(GraftError) -> Int64?
    /// Every model name (for "did you mean" suggestions).
    func modelNames() async throws(GraftError) -> [String]
    /// Every model, by name.
    func models() async throws(GraftError) -> [ModelSummary]
    /// A model's row and its checkpoints, oldest first.
    func model(named name: ModelName) async throws(GraftError) -> StoredModel?
    /// Checkpoints whose digest starts with `prefix` (lowercase hex), by model name and number.
    func checkpoints(digestPrefix prefix: String, limit: Int) async throws(GraftError) -> [ResolvedCheckpoint]
    func checkpoint(model: ModelName, alias: String) async throws(GraftError) -> ResolvedCheckpoint?
    /// Checkpoint `number` of a model; `nil` means its newest.
    func checkpoint(model: ModelName, number: Int?) async throws(GraftError) -> ResolvedCheckpoint?
    /// The checkpoint a commit with this idempotency key made in the model, if any.
    func checkpoint(model: ModelName, idempotencyKey: String) async throws(GraftError) -> ResolvedCheckpoint?
    /// A checkpoint's tensors in file order.
    func tensors(checkpoint: Int64) async throws(GraftError) -> [TensorEntry]
    /// A directory checkpoint's files by path (plain files without their bytes); empty for one file.
    func files(checkpoint: Int64) async throws(GraftError) -> [CheckpointFile]
    /// A checkpoint's stored header bytes and, in data order, where each tensor's bytes are;
    /// for a directory checkpoint, its files.
    func parts(checkpoint: Int64) async throws(GraftError) -> CheckpointParts
    /// Whether some checkpoint was imported with exactly this header.
    func hasHeader(digest: Digest) async throws(GraftError) -> Bool

    // MARK: Tokens (`graft serve`)

    /// Records a token by the SHA-256 of its secret.
    /// - Throws: ``GraftError/tokenExists(_:)`` when an active token has the name.
    func insertToken(_ token: TokenInfo, hash: [UInt8]) async throws(GraftError)
    /// The active tokens by name.
    func tokens() async throws(GraftError) -> [TokenInfo]
    /// Revokes the active token of this name; `false` when there is none.
    func revokeToken(named name: String, at time: String) async throws(GraftError) -> Bool
    /// The active token whose secret hashes to `hash`.
    func token(hash: [UInt8]) async throws(GraftError) -> TokenInfo?
    /// Opens a session (`hash`: its id's SHA-256) for the active token whose secret hashes to
    /// `tokenHash`, at `now` (seconds since the epoch); sessions past `expiry` are dropped.
    /// `false` when no active token has that hash.
    func insertSession(hash: [UInt8], tokenHash: [UInt8], now: Double, expiry: SessionExpiry) async throws(GraftError) -> Bool
    /// The active token of a live session, its last use moved to `now` (at most once a minute);
    /// `nil` for an unknown, expired or signed-out session or a revoked token.
    func session(hash: [UInt8], now: Double, expiry: SessionExpiry) async throws(GraftError) -> TokenInfo?
    /// Ends a session (signing out); nothing when there is none.
    func deleteSession(hash: [UInt8]) async throws(GraftError)
    /// Of `digests`, those some tensor of a model matching `models` (a glob) refers to: what a
    /// confined token may learn exists.
    func digests(_ digests: [Digest], referencedByModelsMatching models: String) async throws(GraftError) -> Set<Digest>
    /// The bytes of those of `digests` the metadata holds inline (small tensors and files).
    func inlineBytes(_ digests: [Digest]) async throws(GraftError) -> [Digest: [UInt8]]

    // MARK: Uploads (`graft serve`)

    /// Records blobs an upload proposal asked for: a PUT of each is accepted, up to its length,
    /// for `window`, by any server of the registry.
    /// - Throws: ``GraftError/busy`` when a million announcements are live.
    func announceUploads(_ blobs: [ProposedTensor], window: Duration) async throws(GraftError)
    /// The length a live announcement gave a blob.
    func announcedLength(of digest: Digest) async throws(GraftError) -> Int?
    /// Records that the token named `token` sent `digest`'s bytes, checked, valid for `window`:
    /// see ``Registry/commitUpload(to:base:_:visibleTo:)``.
    func recordUploadProof(_ digest: Digest, token: String, window: Duration) async throws(GraftError)
    /// Of `digests`, those the token named `token` holds a live upload proof of.
    func uploadProofs(_ digests: [Digest], token: String) async throws(GraftError) -> Set<Digest>

    // MARK: Commits

    /// Records a base and its first checkpoint (numbered 1, or as `checkpoint.copied` says, with
    /// the model's creation time from there too). `stillStored` is asked, under the write lock, for
    /// every file-stored blob (gc may have removed one since it was found): `false` fails the
    /// commit with ``GraftError/blobVanished(_:)``.
    /// - Returns: the inline bytes this commit stored anew.
    func insertBase(
        name: ModelName, provenance: Provenance, checkpoint: NewCheckpoint, stillStored: @escaping @Sendable (Digest) -> Bool
    ) async throws(GraftError) -> Int
    /// Records a student with its parent edge and resolved manifest.
    func insertStudent(_ student: NewStudent) async throws(GraftError)
    /// Commits a model's next checkpoint (its number one past the newest, or the one
    /// `checkpoint.copied` gives, which must be past the newest) with its metrics, and records the
    /// manifest's `new` tensors for a student.
    /// - Throws: ``GraftError/historyDiffers(_:reason:)`` for a copied number not past the newest.
    /// - Returns: the number given, and the inline bytes stored anew.
    func insertCheckpoint(
        model: ModelName, _ checkpoint: NewCheckpoint, metrics: [MetricAssignment], split: String?, newTensors: [String]?,
        stillStored: @escaping @Sendable (Digest) -> Bool
    ) async throws(GraftError) -> (number: Int, inlineStored: Int)
    /// Records a checkpoint's signature, replacing the one it had.
    func recordSignature(checkpoint: Int64, _ signature: StoredSignature) async throws(GraftError)
    /// A checkpoint's signature, `nil` when it has none.
    func signature(checkpoint: Int64) async throws(GraftError) -> StoredSignature?
    /// A student's manifest with its edge; `.none` for a base, `nil` for an unknown model.
    func manifest(of name: ModelName) async throws(GraftError) -> ManifestSummary??

    // MARK: Aliases

    /// Points an alias of the checkpoint's model at it. `nil` when the checkpoint is gone;
    /// otherwise the number it pointed at before, if any.
    func tag(checkpoint: Int64, alias: String) async throws(GraftError) -> Int??
    /// Whether the alias was set (and is now removed).
    func untag(model: Int64, alias: String) async throws(GraftError) -> Bool
    func aliases(of name: ModelName) async throws(GraftError) -> [String: String]

    // MARK: Metrics and curves

    func logMetrics(checkpoint: Int64, _ values: [MetricAssignment], split: String?) async throws(GraftError)
    func insertCurvePoints(model: Int64, _ batch: CurveBatch) async throws(GraftError)
    /// Every checkpoint's metrics and the curves of a model.
    func metricsReport(model: Int64, name: ModelName) async throws(GraftError) -> MetricsReport
    func metrics(checkpoint: Int64) async throws(GraftError) -> [MetricValue]
    // MARK: Advisories

    /// - Throws: ``GraftError/advisoryExists(_:)``.
    func insertAdvisory(_ advisory: NewAdvisory) async throws(GraftError)
    func advisories(includeResolved: Bool) async throws(GraftError) -> [Advisory]
    /// Marks an open advisory resolved; `nil` when no advisory has the id, `false` when it was resolved already.
    func resolveAdvisory(_ id: String, at time: String) async throws(GraftError) -> Bool?
    /// Every open advisory, by id.
    func openAdvisories() async throws(GraftError) -> [OpenAdvisory]
    /// Open checkpoint-level advisories by model, as `ID@N`.
    func checkpointAdvisoryLabels() async throws(GraftError) -> [Int64: [String]]

    // MARK: Lineage (rows; the core folds them with AdvisoryInheritance)

    /// The model and its ancestors, nearest first, each with its parent edge; without `full`,
    /// only the model and its parent.
    func chain(model: Int64, full: Bool) async throws(GraftError) -> [LineageRow]
    /// Everything a lineage view reads, in one transaction.
    func lineage(model: Int64, parts: Registry.LineageParts, metric: String?, direction: Direction?) async throws(GraftError)
        -> LineageSnapshot
    /// What `affected` reads, in one transaction: the open advisories, the model's chain, and —
    /// only when an advisory lies above or within it (``AdvisoryInheritance``) — its descendants.
    func affectedRows(model: Int64) async throws(GraftError) -> (open: [OpenAdvisory], chain: [LineageRow], descendants: [LineageRow])
    /// The checkpoint numbers of models.
    func checkpointNumbers(models: [Int64]) async throws(GraftError) -> [Int64: [Int]]
    /// The model a checkpoint belongs to.
    func modelOf(checkpoint: Int64) async throws(GraftError) -> Int64?
    /// Exposure's digest-only read (``Registry/exposure(of:to:detail:)``), in one transaction:
    /// the newest checkpoint of each of `models`, and the tensors of those checkpoints and of
    /// `checkpoints`.
    func exposureRows(models: [Int64], checkpoints: [Int64]) async throws(GraftError) -> ExposureRows
    /// The cached drift sums of those blob pairs that have them.
    func driftSums(_ pairs: [DriftPair]) async throws(GraftError) -> [DriftPair: DriftSums]
    /// Caches drift sums (a pair already cached keeps its row: the bytes are the same).
    func recordDriftSums(_ sums: [DriftPair: DriftSums]) async throws(GraftError)

    // MARK: Browsing (the web view)

    /// Every model for the index, by name, with the open advisories each carries or inherits
    /// (``AdvisoryInheritance``): one read transaction.
    func modelIndex() async throws(GraftError) -> [ModelIndexEntry]
    /// A model's curves with every point, by name then step.
    func curvePoints(model: Int64) async throws(GraftError) -> [CurveSeries]
    /// The distinct metric names and splits of the first `limit` models of a subtree (the model first).
    /// Only the keys of models `visibility` shows (a confined reader learns no hidden model's metric).
    func metricKeys(subtree: Int64, limit: Int, visibility: ModelVisibility) async throws(GraftError) -> [MetricKey]

    // MARK: Best

    /// The best checkpoint of a scope, in one transaction: the store reads the candidates and
    /// the flags, and decides with ``BestSelection``, ``AdvisoryInheritance`` and
    /// ``CandidateFilter`` (flagged candidates left out unless `includeFlagged`, hidden models
    /// neither candidates nor counted). `nil` when the scope's model is unknown.
    func best(_ query: BestQuery) async throws(GraftError) -> BestOutcome?

    // MARK: Removal (blobs nothing references any more are removed from `blobs` in the same transaction)

    /// Unreferenced blobs, blob data without a row and temporary data, each only when older
    /// than `grace` seconds.
    func collectGarbage(blobs: any BlobStore, grace: Double, dryRun: Bool) async throws(GraftError) -> GCReport
    /// Removes one checkpoint unless something depends on it.
    /// - Throws: ``GraftError/protected(_:reasons:)``; `checkpointNotFound` via `missing`.
    func removeCheckpoint(_ checkpoint: ResolvedCheckpoint, blobs: any BlobStore, dryRun: Bool) async throws(GraftError) -> RemovalReport?
    /// Removes what the policy does not keep of a model's checkpoints.
    /// - Throws: ``GraftError/unknownMetric(_:known:)`` when the policy ranks by a metric no checkpoint has.
    func prune(model name: ModelName, policy: RetentionPolicy, split: String?, blobs: any BlobStore, dryRun: Bool) async throws(GraftError)
        -> RemovalReport?
    /// Removes a model (with its descendants when `cascade`).
    /// - Throws: ``GraftError/protected(_:reasons:)`` when it has descendants and not `cascade`.
    func removeModel(_ name: ModelName, cascade: Bool, blobs: any BlobStore, dryRun: Bool) async throws(GraftError) -> RemovalReport?

    // MARK: Verification and totals

    func checkpointCount() async throws(GraftError) -> Int
    /// Every blob some checkpoint references, by digest, and tensor digests without a blob row.
    func referencedBlobs() async throws(GraftError) -> (blobs: [StoredBlob], dangling: [String])
    /// Every blob digest the metadata knows (hex).
    func knownBlobDigests() async throws(GraftError) -> Set<String>
    /// The checkpoints (`NAME@N`) that use a blob.
    func users(of digest: Digest) async throws(GraftError) -> [String]
    /// What the store keeps derived from other rows (lineage paths, counts, summaries) that no
    /// longer matches them, one line per problem: `NAME: what`.
    func derivedDataProblems() async throws(GraftError) -> [String]
    func stats() async throws(GraftError) -> RegistryStats

    // MARK: Stored encodings (`graft compact`, issue 27)

    /// Every stored (not inline) blob a checkpoint refers to, with what compaction needs to
    /// choose its encoding, and the encodings recorded so far.
    func compactionInventory() async throws(GraftError) -> CompactionInventory
    /// Records how a stored blob is kept now. A delta's base is recorded before the delta
    /// replaces the raw bytes (`codec` still raw): from then on gc and removals keep the base.
    /// - Returns: whether the blob has a row (a blob removed meanwhile has none).
    func setEncoding(_ digest: Digest, _ encoding: BlobEncoding) async throws(GraftError) -> Bool
}

/// A model's row with its checkpoints.
package struct StoredModel: Sendable {
    package var id: Int64
    package var summary: ModelSummary
    package var checkpoints: [CheckpointSummary]
    package var latestCheckpointID: Int64?
    package init(id: Int64, summary: ModelSummary, checkpoints: [CheckpointSummary], latestCheckpointID: Int64?) {
        self.id = id
        self.summary = summary
        self.checkpoints = checkpoints
        self.latestCheckpointID = latestCheckpointID
    }
}

/// A checkpoint a reference named.
package struct ResolvedCheckpoint: Sendable {
    package var id: Int64
    package var summary: CheckpointSummary
    package init(id: Int64, summary: CheckpointSummary) {
        self.id = id
        self.summary = summary
    }
}

/// A checkpoint's stored header and, in data order, each tensor's digest, length and inline bytes.
package struct CheckpointParts: Sendable {
    package var header: [UInt8]
    package var tensors: [(digest: Digest, length: Int, inline: [UInt8]?)]
    /// A directory checkpoint's files by path, plain files with their inline bytes; empty for one file.
    package var files: [CheckpointFile]
    package init(header: [UInt8], tensors: [(digest: Digest, length: Int, inline: [UInt8]?)], files: [CheckpointFile] = []) {
        self.header = header
        self.tensors = tensors
        self.files = files
    }
}

/// A blob row, as verify reads it.
package struct StoredBlob: Sendable {
    package var digest: Digest
    package var length: Int
    package var inline: [UInt8]?
    package init(digest: Digest, length: Int, inline: [UInt8]?) {
        self.digest = digest
        self.length = length
        self.inline = inline
    }
}

/// A checkpoint to record: its header, digest and tensors (blobs already stored or inline).
package struct NewCheckpoint: Sendable {
    package var headerBytes: [UInt8]
    package var headerDigest: Digest
    package var digest: Digest
    package var metadata: [String: String]
    package var dataLength: Int
    package var fileBytes: Int
    package var tensors: [IngestedTensor]
    package var step: Int?
    package var epoch: Int?
    /// A directory checkpoint's files by path (shards and the rest); empty for one file.
    package var files: [CheckpointFile] = []
    /// The blobs of its plain files (stored like tensors: inline when small).
    package var fileBlobs: [IngestedTensor] = []
    /// The key a client chose for this commit: unique within its model (a retry finds it).
    package var idempotencyKey: String? = nil
    /// The signature that came with it (a registered directory's `model.sig`), kept in the same commit.
    package var signature: StoredSignature? = nil
    /// Set by `graft copy`: the number and times the checkpoint had where it came from
    /// (numbers of pruned checkpoints stay gaps). `nil`: the next number, now.
    package var copied: CopiedHistory? = nil
    package var parameterCount: Int { tensors.reduce(0) { $0 + $1.info.elementCount } }
    /// Every blob the commit records: the tensors', then the files'.
    package var blobs: [IngestedTensor] { fileBlobs.isEmpty ? tensors : tensors + fileBlobs }
    package init(
        headerBytes: [UInt8], headerDigest: Digest, digest: Digest, metadata: [String: String], dataLength: Int, fileBytes: Int,
        tensors: [IngestedTensor], step: Int?, epoch: Int?
    ) {
        (self.headerBytes, self.headerDigest, self.digest, self.metadata) = (headerBytes, headerDigest, digest, metadata)
        (self.dataLength, self.fileBytes, self.tensors, self.step, self.epoch) = (dataLength, fileBytes, tensors, step, epoch)
    }
}

/// A copied checkpoint's number and times, kept as its source registry recorded them.
package struct CopiedHistory: Sendable {
    /// Its number: past every checkpoint the model has at the destination.
    package var number: Int
    package var createdAt: String
    /// The model's creation time (used when the checkpoint is a base's first).
    package var modelCreatedAt: String
    package init(number: Int, createdAt: String, modelCreatedAt: String) {
        (self.number, self.createdAt, self.modelCreatedAt) = (number, createdAt, modelCreatedAt)
    }
}

/// A student to record.
package struct NewStudent: Sendable {
    package var name: ModelName
    package var parent: ResolvedCheckpoint
    package var relation: Relation
    package var mode: TransferMode
    /// The rules as declared (JSON), for `show`; absent for an explicit manifest.
    package var rules: String?
    package var entries: [ManifestEntry]
    package var description: String?
    package var createdAt: String
    package init(
        name: ModelName, parent: ResolvedCheckpoint, relation: Relation, mode: TransferMode, rules: String?, entries: [ManifestEntry],
        description: String?, createdAt: String
    ) {
        (self.name, self.parent, self.relation, self.mode, self.rules) = (name, parent, relation, mode, rules)
        (self.entries, self.description, self.createdAt) = (entries, description, createdAt)
    }
}

/// An advisory to record.
package struct NewAdvisory: Sendable {
    package var id: String
    package var model: Int64
    package var checkpoint: Int64?
    package var severity: Severity
    package var note: String?
    package var url: String?
    package var createdAt: String
    package init(id: String, model: Int64, checkpoint: Int64?, severity: Severity, note: String?, url: String?, createdAt: String) {
        (self.id, self.model, self.checkpoint, self.severity, self.note, self.url, self.createdAt) = (
            id, model, checkpoint, severity, note, url, createdAt
        )
    }
}

/// A model's best value of a metric and how many of its checkpoints have it.
package struct ModelBest: Sendable, Equatable {
    package var model: Int64
    package var value: Double
    package var count: Int
    package init(model: Int64, value: Double, count: Int) {
        self.model = model
        self.value = value
        self.count = count
    }
}

/// A checkpoint with its value of the metric being ranked.
package struct RankedCandidate: Sendable {
    package var checkpoint: CheckpointSummary
    package var value: Double
    package init(checkpoint: CheckpointSummary, value: Double) {
        self.checkpoint = checkpoint
        self.value = value
    }
}

/// What `best` found in a scope.
package enum BestOutcome: Sendable {
    case found(RankedCandidate, candidates: Int, excluded: Int)
    /// No checkpoint in scope has the metric; `known` lists metric names in use.
    case noCandidates(known: [String])
    case allFlagged(candidates: Int)
}

/// Everything a lineage view reads.
package struct LineageSnapshot: Sendable {
    /// The model and its ancestors (or only its parent), nearest first.
    package var up: [LineageRow]
    /// Descendants, parents before children (empty when not asked for).
    package var down: [LineageRow]
    package var open: [OpenAdvisory]
    /// Open checkpoint-level advisories by model, `ID@N`.
    package var checkpointLabels: [Int64: [String]]
    /// With a metric: each model's best value.
    package var best: [Int64: Double]
    package init(up: [LineageRow], down: [LineageRow], open: [OpenAdvisory], checkpointLabels: [Int64: [String]], best: [Int64: Double]) {
        self.up = up
        self.down = down
        self.open = open
        self.checkpointLabels = checkpointLabels
        self.best = best
    }
}

/// One model of a lineage read: its id, its parent edge and what a node shows.
package struct LineageRow: Sendable, Equatable {
    /// The parent model's id (absent for a base).
    package var link: Int64?
    /// The parent checkpoint's id.
    package var via: Int64?
    package var id: Int64
    package var name: String
    package var kind: String
    package var mode: String?
    package var relation: String?
    package var parentNumber: Int?
    package var checkpoints: Int
    /// The parent model's name, filled in from the parent's row.
    package var parentName: String? = nil

    package init(
        link: Int64?, via: Int64?, id: Int64, name: String, kind: String, mode: String? = nil, relation: String? = nil,
        parentNumber: Int? = nil, checkpoints: Int = 0, parentName: String? = nil
    ) {
        self.link = link
        self.via = via
        self.id = id
        self.name = name
        self.kind = kind
        self.mode = mode
        self.relation = relation
        self.parentNumber = parentNumber
        self.checkpoints = checkpoints
        self.parentName = parentName
    }
}

/// What ``MetadataStore/exposureRows(models:checkpoints:)`` reads.
package struct ExposureRows: Sendable {
    /// Each model's newest checkpoint: its id and number.
    package var newest: [Int64: (id: Int64, number: Int)]
    /// Tensors by checkpoint id, in file order.
    package var tensors: [Int64: [TensorEntry]]

    package init(newest: [Int64: (id: Int64, number: Int)] = [:], tensors: [Int64: [TensorEntry]] = [:]) {
        self.newest = newest
        self.tensors = tensors
    }
}

/// Two blobs compared as tensors of one dtype: an ancestor's and a descendant's.
package struct DriftPair: Sendable, Hashable {
    package var ancestor: Digest
    package var descendant: Digest
    package var dtype: DType

    package init(ancestor: Digest, descendant: Digest, dtype: DType) {
        self.ancestor = ancestor
        self.descendant = descendant
        self.dtype = dtype
    }
}

/// The sums relative drift is made of: Σ(d − a)² and Σa² over the elements.
package struct DriftSums: Sendable, Equatable {
    package var difference: Double
    package var magnitude: Double

    package init(difference: Double, magnitude: Double) {
        self.difference = difference
        self.magnitude = magnitude
    }
}

/// An open advisory and where it sits.
package struct OpenAdvisory: Sendable, Equatable {
    package var id: String
    package var model: Int64
    /// Set when the advisory is on one checkpoint rather than the whole model.
    package var checkpoint: Int64?
    /// The ids from the root base down to its model, that model last.
    package var ancestry: [Int64]
    package init(id: String, model: Int64, checkpoint: Int64?, ancestry: [Int64]) {
        self.id = id
        self.model = model
        self.checkpoint = checkpoint
        self.ancestry = ancestry
    }
}

/// The number a copied checkpoint keeps (`nil` for an ordinary commit), checked to lie past the
/// model's newest at the destination: a copy appends history, it never fills gaps or rewrites.
/// - Throws: ``GraftError/historyDiffers(_:reason:)``.
package func copiedNumber(_ checkpoint: NewCheckpoint, model: ModelName, newest: Int) throws(GraftError) -> Int? {
    guard let number = checkpoint.copied?.number else { return nil }
    guard number > newest else {
        throw .historyDiffers(model.value, reason: "checkpoint \(number) is not past its newest, \(newest)")
    }
    return number
}
