#if canImport(Glibc)
    import Glibc
#endif
package import GraftCore
import GraftLocal
import GraftSQLite

// A registry in a local directory: the SQLite metadata store and the local blob store under
// one root. The core knows neither; this is where they are put together.
extension Registry {
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
