/// Where a registry lives and how to open it: what a front end (the CLI, a server, a training
/// script) resolves once from its options and environment, then hands to ``Registry/open(_:)``
/// or ``Registry/create(_:)``. Backends beyond the local directory join here.
public struct RegistryConfiguration: Sendable, Equatable {
    /// The registry's root directory (its metadata and its local blob store).
    public var root: String
    /// Tensors smaller than this many bytes are kept in the metadata, not as blobs.
    public var inlineThreshold: Int
    /// How hard a commit works to survive power loss.
    public var durability: Registry.Durability
    /// Seconds a write waits for another process's write lock before ``GraftError/busy``.
    public var busyTimeout: Double
    /// An S3-compatible blob store (`s3://BUCKET/PREFIX?endpoint=URL&region=R`) instead of the
    /// root's `blobs/`: chosen at creation and recorded in the registry; when given to open, it
    /// must be the recorded one.
    public var blobs: String?
    /// A PostgreSQL metadata store (`postgresql://USER@HOST:PORT/DATABASE`) instead of the
    /// root's `graft.sqlite`; the root then holds only this machine's temporary files (and its
    /// blobs, when they are not in S3).
    public var metadata: String?

    public init(
        root: String, inlineThreshold: Int = Registry.defaultInlineThreshold, durability: Registry.Durability = .full,
        busyTimeout: Double = Registry.defaultBusyTimeout
    ) {
        self.root = root
        self.inlineThreshold = inlineThreshold
        self.durability = durability
        self.busyTimeout = busyTimeout
    }

    /// The configuration a user chose: the root from `option` (`--registry`), else
    /// `GRAFT_REGISTRY`, else `./registry`; the blob store from `blobs` (`--blobs`), else
    /// `GRAFT_BLOBS`; the metadata store from `metadata` (`--metadata`), else `GRAFT_METADATA`;
    /// `GRAFT_INLINE_THRESHOLD` (bytes, for benchmarks that compare thresholds) and
    /// `GRAFT_BUSY_TIMEOUT` (seconds) when set.
    /// - Throws: ``GraftError/invalidName(_:reason:)`` for a value that is not a number in range.
    public static func resolve(
        option: String?, blobs: String? = nil, metadata: String? = nil, environment: [String: String]
    ) throws(GraftError) -> RegistryConfiguration {
        var configuration = RegistryConfiguration(root: RegistryLayout.resolveRoot(option: option, environment: environment))
        configuration.blobs = (blobs ?? environment["GRAFT_BLOBS"]).flatMap { $0.isEmpty ? nil : $0 }
        configuration.metadata = (metadata ?? environment["GRAFT_METADATA"]).flatMap { $0.isEmpty ? nil : $0 }
        if let text = environment["GRAFT_INLINE_THRESHOLD"] {
            guard let value = Int(text), value >= 0 else {
                throw .invalidName(text, reason: "GRAFT_INLINE_THRESHOLD must be a non-negative number of bytes")
            }
            configuration.inlineThreshold = value
        }
        if let text = environment["GRAFT_BUSY_TIMEOUT"] {
            guard let seconds = Double(text), seconds.isFinite, seconds > 0, seconds <= 86_400 else {
                throw .invalidName(text, reason: "GRAFT_BUSY_TIMEOUT must be a number of seconds above 0 and at most 86400")
            }
            configuration.busyTimeout = seconds
        }
        return configuration
    }
}
