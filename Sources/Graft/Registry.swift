#if canImport(Glibc)
    import Glibc
#endif
import SafeTensors

/// A Graft registry: tensor blobs on disk and metadata in SQLite, under one root directory.
///
/// Open one with ``open(at:)`` (it must exist) or ``create(at:)``; every operation is
/// `async` and safe to call from many tasks. Several processes may use one registry at once:
/// writes serialise on SQLite's write lock (`BEGIN IMMEDIATE`, 30 s busy timeout).
///
/// ```swift
/// let registry = try await Registry.create(at: "./registry").registry
/// let result = try await registry.addBase(name: try ModelName("tiny-cnn"), file: "tiny.safetensors")
/// print(result.checkpoint, result.bytesStored)
/// ```
public final class Registry: Sendable {
    /// How hard a commit works to survive power loss.
    public enum Durability: Sendable {
        /// Every acknowledged commit is on stable storage (`synchronous=FULL`). The default.
        case full
        /// Commits reach the OS at once and the disk at checkpoints (`synchronous=NORMAL`): a
        /// power cut may lose the last commits, never corrupt the registry. For bulk loads.
        case relaxed
    }

    public let layout: RegistryLayout
    /// Tensors smaller than this many bytes are stored inside SQLite rather than as files.
    public static let defaultInlineThreshold = 4096
    /// How long a write waits for another process's write lock before failing with
    /// ``GraftError/busy``, in seconds.
    public static let defaultBusyTimeout = 30.0
    /// Models, checkpoints, manifests, metrics, advisories: the metadata store.
    let metadata: any MetadataStore
    /// Tensor bytes: the blob store, and the hashing lanes that stream bytes to and from it.
    let blobs: BlobTransfer

    /// A registry over a metadata store and a blob store (what `open` and `create` assemble
    /// from a configuration).
    package init(layout: RegistryLayout, metadata: any MetadataStore, blobs: any BlobStore, inlineThreshold: Int) {
        self.layout = layout
        self.metadata = metadata
        self.blobs = BlobTransfer(store: blobs, inlineThreshold: inlineThreshold)
    }

    /// Opens the registry at `root`.
    ///
    /// - Throws: ``GraftError/notARegistry(path:reason:)`` when `root` holds no registry,
    ///   ``GraftError/newerSchema(path:version:newestKnown:)`` when a newer Graft wrote it.
    public static func open(
        at root: String, inlineThreshold: Int = Registry.defaultInlineThreshold, durability: Durability = .full,
        busyTimeout: Double = Registry.defaultBusyTimeout
    ) async throws(GraftError) -> Registry {
        let layout = RegistryLayout(root: root)
        guard FileSystem.isDirectory(layout.root) else {
            throw .notARegistry(path: layout.root, reason: "no such directory")
        }
        guard FileSystem.fileExists(layout.database) else {
            throw .notARegistry(path: layout.root, reason: "it has no graft.sqlite")
        }
        for directory in [layout.blobs, layout.sha256, layout.tmp] where !FileSystem.isDirectory(directory) {
            throw .notARegistry(path: layout.root, reason: "\(directory) is missing")
        }
        return try await connect(layout, inlineThreshold: inlineThreshold, durability: durability, busyTimeout: busyTimeout)
    }

    /// Creates a registry at `root`, or opens the one already there.
    ///
    /// `root` may be missing, empty, or hold only a `README.md` or `.gitignore` (as the
    /// repository's `registry/` folder does); anything else is refused.
    /// - Returns: the registry, and whether it was created now.
    public static func create(
        at root: String, inlineThreshold: Int = Registry.defaultInlineThreshold, durability: Durability = .full,
        busyTimeout: Double = Registry.defaultBusyTimeout
    ) async throws(GraftError) -> (registry: Registry, created: Bool) {
        let layout = RegistryLayout(root: root)
        if FileSystem.fileExists(layout.database) {
            return (try await open(at: root, inlineThreshold: inlineThreshold, durability: durability, busyTimeout: busyTimeout), false)
        }
        if FileSystem.fileExists(layout.root) {
            guard FileSystem.isDirectory(layout.root) else {
                throw .notARegistry(path: layout.root, reason: "it is a file, not a directory")
            }
            let allowed: Set<String> = ["README.md", ".gitignore", "blobs", "tmp"]
            let stray = try FileSystem.contentsOfDirectory(layout.root).filter { !allowed.contains($0) && !$0.hasPrefix("graft.sqlite") }
            guard stray.isEmpty else {
                throw .notARegistry(path: layout.root, reason: "the directory is not empty (it holds \(stray.sorted().prefix(3).joined(separator: ", "))); choose an empty or new directory")
            }
        } else {
            try makeDirectories(layout.root)
        }
        for directory in [layout.blobs, layout.sha256, layout.tmp] { try FileSystem.makeDirectory(directory) }
        let created = try SQLiteMetadataStore.publishNew(layout, busyTimeout: busyTimeout)
        let registry = try await connect(layout, inlineThreshold: inlineThreshold, durability: durability, busyTimeout: busyTimeout)
        return (registry, created)
    }

    private static func makeDirectories(_ path: String) throws(GraftError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            try FileSystem.makeDirectory(current)
        }
    }

    private static func connect(
        _ layout: RegistryLayout, inlineThreshold: Int, durability: Durability, busyTimeout: Double
    ) async throws(GraftError) -> Registry {
        let metadata = try SQLiteMetadataStore.open(layout, durability: durability, busyTimeout: busyTimeout)
        return Registry(layout: layout, metadata: metadata, blobs: LocalBlobStore(layout: layout), inlineThreshold: inlineThreshold)
    }
}
