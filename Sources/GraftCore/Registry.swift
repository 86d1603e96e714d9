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
    package let metadata: any MetadataStore
    /// Tensor bytes: the blob store, and the hashing lanes that stream bytes to and from it.
    package let blobs: BlobTransfer

    /// A registry over a metadata store and a blob store (what `open` and `create` assemble
    /// from a configuration).
    package init(layout: RegistryLayout, metadata: any MetadataStore, blobs: any BlobStore, inlineThreshold: Int) {
        self.layout = layout
        self.metadata = metadata
        self.blobs = BlobTransfer(store: blobs, inlineThreshold: inlineThreshold)
    }
}
