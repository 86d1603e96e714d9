public import SafeTensors

/// What the CLI asks of a registry, whether it lies in a local directory (``Registry``) or
/// behind `graft serve` (`RemoteRegistry`, in the GraftRemote module). Both answer with the same
/// types, so every command prints the same text and JSON, and fails with the same exit code,
/// locally and remotely. `graft serve` maps each method to one route under `/v1`.
public protocol RegistryAPI: Sendable {
    // Reads
    func models() async throws(GraftError) -> [ModelSummary]
    func model(_ name: ModelName) async throws(GraftError) -> ModelDetail
    func checkpoints(of name: ModelName) async throws(GraftError) -> [CheckpointSummary]
    func checkpoint(_ reference: Reference) async throws(GraftError) -> CheckpointDetail
    func card(_ name: ModelName) async throws(GraftError) -> String
    func metrics(_ reference: Reference) async throws(GraftError) -> MetricsReport
    func lineage(_ name: ModelName, metric: String?, direction: Direction?, parts: Registry.LineageParts) async throws(GraftError)
        -> LineageReport
    func best(metric: String, direction: Direction?, split: String?, scope: BestScope, includeFlagged: Bool) async throws(GraftError)
        -> BestResult
    /// Descendants that inherit an open advisory; `exposure` `nil` leaves exposure out.
    func affected(_ reference: Reference, exposure: ExposureDetail?) async throws(GraftError) -> [AffectedModel]
    /// How much of `ancestor` the checkpoint `descendant` still carries (``Exposure``).
    func exposure(of descendant: Reference, to ancestor: Reference, detail: ExposureDetail) async throws(GraftError) -> Exposure
    func advisories(includeResolved: Bool) async throws(GraftError) -> [Advisory]
    func diff(_ first: Reference, _ second: Reference) async throws(GraftError) -> DiffResult
    func stats() async throws(GraftError) -> RegistryStats
    func verify(readData: Bool) async throws(GraftError) -> VerifyReport
    /// A student's manifest (`nil` for a base).
    func manifest(of name: ModelName) async throws(GraftError) -> ManifestSummary?
    /// A checkpoint's tensors for reading: mapped from the blobs locally, downloaded once from a server.
    func openCheckpoint(_ reference: Reference, verify: Bool) async throws(GraftError) -> OpenCheckpoint
    /// Writes the checkpoint's exact bytes to a local file.
    func export(_ reference: Reference, to path: String, overwrite: Bool) async throws(GraftError) -> ExportResult
    /// A small file (not a shard) of a directory checkpoint, whole in memory and checked against
    /// its digest: a config, such as an adapter's `adapter_config.json`.
    /// - Throws: ``GraftError/fileNotFound(checkpoint:path:)``; ``GraftError/tooLarge(_:)`` over `limit` bytes.
    func smallFile(_ reference: Reference, path: String, limit: Int) async throws(GraftError) -> [UInt8]
    /// The bytes of a checkpoint's `model.sig`, `nil` when it has none.
    func signatureBundle(_ reference: Reference) async throws(GraftError) -> [UInt8]?
    /// Checks a checkpoint's signature with `key` and against its files.
    func verifySignature(_ reference: Reference, key: VerifyingKey) async throws(GraftError) -> SignatureVerification

    // Writes
    func addBase(
        name: ModelName, file path: String, provenance: Provenance, progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult
    func addBase(
        name: ModelName, input: some SafeTensorsInput, provenance: Provenance, progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult
    /// Registers a model directory (``DirectoryInput``) as a base.
    func addBase(
        name: ModelName, directory: DirectoryInput, provenance: Provenance, progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult
    func createStudent(
        name: ModelName, from parent: Reference, relation: Relation, manifest declaration: ManifestDeclaration, description: String?
    ) async throws(GraftError) -> StudentResult
    func addCheckpoint(
        model name: ModelName, file path: String, step: Int?, epoch: Int?, metrics: [MetricAssignment], split: String?,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult
    func addCheckpoint(
        model name: ModelName, input: some SafeTensorsInput, step: Int?, epoch: Int?, metrics: [MetricAssignment], split: String?,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult
    /// Commits a model directory (``DirectoryInput``) as the model's next checkpoint.
    func addCheckpoint(
        model name: ModelName, directory: DirectoryInput, step: Int?, epoch: Int?, metrics: [MetricAssignment], split: String?,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
    ) async throws(GraftError) -> ImportResult
    func logMetrics(_ reference: Reference, _ values: [MetricAssignment], split: String?) async throws(GraftError) -> String
    func logCurve(model name: ModelName, step: Int, _ values: [MetricAssignment]) async throws(GraftError)
    func importCurves(model name: ModelName, bytes: [UInt8]) async throws(GraftError) -> CurveImportResult
    func tag(_ reference: Reference, alias: String) async throws(GraftError) -> AliasResult
    func untag(model name: ModelName, alias: String) async throws(GraftError)
    /// Signs a checkpoint's exported tree with `key` and records the signature with it.
    func sign(_ reference: Reference, key: SigningKey) async throws(GraftError) -> SignResult

    // Administration
    func addAdvisory(on reference: Reference, id: String, severity: Severity, note: String?, url: String?) async throws(GraftError)
        -> Advisory
    func resolveAdvisory(_ id: String) async throws(GraftError)
    func gc(grace: Double, dryRun: Bool) async throws(GraftError) -> GCReport
    func prune(
        _ name: ModelName, keepLast: Int, keepBest: Int, metric: String?, direction: Direction?, split: String?, dryRun: Bool
    ) async throws(GraftError) -> RemovalReport
    func removeModel(_ name: ModelName, cascade: Bool, dryRun: Bool) async throws(GraftError) -> RemovalReport
    func removeCheckpoint(_ reference: Reference, dryRun: Bool) async throws(GraftError) -> RemovalReport
}
