/// Where a registry keeps its files. Every path is derived from the root and from digests,
/// never from text a user typed.
///
/// ```
/// ROOT/graft.sqlite                    metadata (SQLite, WAL)
/// ROOT/blobs/sha256/ab/<64 hex>        tensor bytes, read-only once written
/// ROOT/tmp/                            in-flight writes
/// ```
public struct RegistryLayout: Sendable {
    /// The registry's root directory.
    public let root: String

    public init(root: String) {
        var trimmed = root
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed.removeLast() }
        self.root = trimmed
    }

    public var database: String { root + "/graft.sqlite" }
    public var blobs: String { root + "/blobs" }
    public var sha256: String { root + "/blobs/sha256" }
    public var tmp: String { root + "/tmp" }
    /// Where the blobs live when not under `blobs/`: one line, an `s3://` location, written by
    /// `init --blobs` (credentials are never stored; they come from the environment).
    public var blobLocation: String { root + "/blob-location" }

    package func blobDirectory(_ digest: Digest) -> String { sha256 + "/" + digest.hex.prefix(2) }
    package func blobPath(_ digest: Digest) -> String { blobDirectory(digest) + "/" + digest.hex }

    /// The root as chosen by the user: `--registry PATH`, then `GRAFT_REGISTRY`, then `./registry`.
    public static func resolveRoot(option: String?, environment: [String: String]) -> String {
        if let option, !option.isEmpty { return option }
        if let env = environment["GRAFT_REGISTRY"], !env.isEmpty { return env }
        return "./registry"
    }
}
