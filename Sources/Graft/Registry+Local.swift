import Foundation
package import GraftCore
import GraftLocal
import GraftS3
import GraftSQLite

#if canImport(Glibc)
    import Glibc
#endif

// A registry in a local directory: the SQLite metadata store and the local blob store under
// one root. The core knows neither; this is where they are put together.
extension Registry {
    /// Opens the registry at `root`, with its blobs where it records them (its `blobs/`, or
    /// the S3 location `init --blobs` chose; `blobs`, when given, must be that one).
    ///
    /// - Throws: ``GraftError/notARegistry(path:reason:)`` when `root` holds no registry,
    ///   ``GraftError/newerSchema(path:version:newestKnown:)`` when a newer Graft wrote it.
    public static func open(
        at root: String, inlineThreshold: Int = Registry.defaultInlineThreshold, durability: Durability = .full,
        busyTimeout: Double = Registry.defaultBusyTimeout, blobs: String? = nil
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
        let recorded = try recordedBlobLocation(layout)
        if let blobs, blobs != recorded {
            throw .badRequest(
                recorded.map { "this registry's blobs live at \($0), not \(blobs)" }
                    ?? """
                    this registry keeps its blobs under \(layout.blobs); a blob store is chosen when the registry is created (graft\
                     init)
                    """
            )
        }
        return try await connect(
            layout, inlineThreshold: inlineThreshold, durability: durability, busyTimeout: busyTimeout, blobs: recorded)
    }

    /// Creates a registry at `root`, or opens the one already there.
    ///
    /// `root` may be missing, empty, or hold only a `README.md` or `.gitignore` (as the
    /// repository's `registry/` folder does); anything else is refused.
    /// - Returns: the registry, and whether it was created now.
    /// With `blobs` (an `s3://` location), tensor blobs go to that bucket and prefix: the bucket
    /// is created when missing, and the location recorded in the registry.
    public static func create(
        at root: String, inlineThreshold: Int = Registry.defaultInlineThreshold, durability: Durability = .full,
        busyTimeout: Double = Registry.defaultBusyTimeout, blobs: String? = nil
    ) async throws(GraftError) -> (registry: Registry, created: Bool) {
        let layout = RegistryLayout(root: root)
        if FileSystem.fileExists(layout.database) {
            return (
                try await open(at: root, inlineThreshold: inlineThreshold, durability: durability, busyTimeout: busyTimeout, blobs: blobs),
                false
            )
        }
        // Everything about the blob store is checked before anything is written.
        let s3 = try blobs.map { (text) throws(GraftError) in try s3Client(text) }
        if FileSystem.fileExists(layout.root) {
            guard FileSystem.isDirectory(layout.root) else {
                throw .notARegistry(path: layout.root, reason: "it is a file, not a directory")
            }
            let allowed: Set<String> = ["README.md", ".gitignore", "blobs", "tmp"]
            let stray = try FileSystem.contentsOfDirectory(layout.root).filter { !allowed.contains($0) && !$0.hasPrefix("graft.sqlite") }
            guard stray.isEmpty else {
                throw .notARegistry(
                    path: layout.root,
                    reason:
                        """
                        the directory is not empty (it holds \(stray.sorted().prefix(3).joined(separator: ", "))); choose an empty or\
                         new directory
                        """
                )
            }
        } else {
            try makeDirectories(layout.root)
        }
        for directory in [layout.blobs, layout.sha256, layout.tmp] { try FileSystem.makeDirectory(directory) }
        if let blobs, let s3 {
            let store = try S3BlobStore(client: s3, spool: layout.tmp + "/s3-spool")
            try await offload { () throws(GraftError) in try store.createBucket() }
            let file = try FileDescriptor(path: layout.blobLocation, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600, exact: true)
            try file.write(Array((blobs + "\n").utf8))
            try file.sync()
        }
        let created = try SQLiteMetadataStore.publishNew(layout, busyTimeout: busyTimeout)
        let registry = try await connect(
            layout, inlineThreshold: inlineThreshold, durability: durability, busyTimeout: busyTimeout, blobs: blobs)
        return (registry, created)
    }

    /// The S3 location `init --blobs` recorded, if any.
    static func recordedBlobLocation(_ layout: RegistryLayout) throws(GraftError) -> String? {
        guard FileSystem.fileExists(layout.blobLocation) else { return nil }
        guard let text = try? String(contentsOfFile: layout.blobLocation, encoding: .utf8) else {
            throw .notARegistry(path: layout.root, reason: "\(layout.blobLocation) cannot be read")
        }
        let location = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return location.isEmpty ? nil : location
    }

    /// The S3 blob store of a location, with credentials from the environment and a spool under `tmp/`.
    static func s3Store(_ text: String, layout: RegistryLayout) throws(GraftError) -> S3BlobStore {
        try S3BlobStore(client: try s3Client(text), spool: layout.tmp + "/s3-spool")
    }

    /// A client for an S3 location, with credentials from the environment.
    static func s3Client(_ text: String) throws(GraftError) -> S3Client {
        let location: S3Location
        do { location = try S3Location(parsing: text) } catch { throw .badRequest(error.description) }
        guard let credentials = AWSCredentials.fromEnvironment() else {
            throw .badRequest(
                """
                an S3 blob store needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for\
                 temporary ones)
                """
            )
        }
        return S3Client(location: location, credentials: credentials)
    }

    static func makeDirectories(_ path: String) throws(GraftError) {
        var current = path.hasPrefix("/") ? "" : "."
        let components = path.split(separator: "/")
        for (index, component) in components.enumerated() {
            current += "/" + component
            // Parents a user named are made as `mkdir -p` would; the registry's root is private.
            try FileSystem.makeDirectory(current, mode: index == components.count - 1 ? 0o700 : 0o755)
        }
    }

    private static func connect(
        _ layout: RegistryLayout, inlineThreshold: Int, durability: Durability, busyTimeout: Double, blobs: String?
    ) async throws(GraftError) -> Registry {
        let store: any BlobStore =
            try blobs.map { (text) throws(GraftError) in try s3Store(text, layout: layout) } ?? LocalBlobStore(layout: layout)
        let metadata = try SQLiteMetadataStore.open(layout, durability: durability, busyTimeout: busyTimeout)
        return Registry(layout: layout, metadata: metadata, blobs: store, inlineThreshold: inlineThreshold)
    }
}
