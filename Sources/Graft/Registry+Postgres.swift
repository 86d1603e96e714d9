import GraftCore
import GraftLocal
import GraftPostgres
import GraftS3

// A registry whose metadata lives in PostgreSQL (issue 14): shared by every server and machine
// that names the same database. The blob location chosen at init is a setting in the database
// (`graft_settings`), so every server finds the same bucket; the local root holds only this
// machine's temporary files (and its blobs when they are not in S3).
extension Registry {
    /// The `blobs` setting of a registry whose blobs are each root's `blobs/`.
    static let localBlobsSetting = "local"

    /// Opens the registry in the database `url` names.
    /// - Throws: ``GraftError/notARegistry(path:reason:)`` when the database has no Graft schema;
    ///   ``GraftError/badRequest(_:)`` when `blobs` is not the location recorded at init.
    static func openPostgres(_ configuration: RegistryConfiguration, url: String) async throws(GraftError) -> Registry {
        _ = try PostgresLocation(parsing: url)
        if let blobs = configuration.blobs { _ = try s3Client(blobs) }
        let store = try await PostgresMetadataStore.open(url: url)
        let recorded = try await store.setting("blobs") ?? localBlobsSetting
        return try await connectPostgres(configuration, store: store, recorded: recorded)
    }

    /// Prepares the schema in the database `url` names (when it has none) and records the
    /// blob location; with `blobs`, the bucket is created when missing. Everything the user
    /// typed is checked before anything is written.
    static func createPostgres(_ configuration: RegistryConfiguration, url: String) async throws(GraftError) -> (
        registry: Registry, created: Bool
    ) {
        _ = try PostgresLocation(parsing: url)
        let s3 = try configuration.blobs.map { (text) throws(GraftError) in try s3Client(text) }
        let layout = try prepareScratch(configuration.root)
        let (store, created) = try await PostgresMetadataStore.create(url: url)
        if let s3 {
            let blobs = try S3BlobStore(client: s3, spool: layout.tmp + "/s3-spool")
            try await offload { () throws(GraftError) in try blobs.createBucket() }
        }
        let recorded = try await store.recordSetting("blobs", configuration.blobs ?? localBlobsSetting)
        return (try await connectPostgres(configuration, store: store, recorded: recorded), created)
    }

    private static func connectPostgres(_ configuration: RegistryConfiguration, store: PostgresMetadataStore, recorded: String)
        async throws(GraftError) -> Registry
    {
        let chosen = configuration.blobs ?? recorded
        guard chosen == recorded else {
            throw .badRequest(
                recorded == localBlobsSetting
                    ? """
                    this registry keeps its blobs in each server's registry directory (blobs/), not \(chosen); a blob store is chosen\
                     when the registry is created (graft init)
                    """
                    : "this registry's blobs live at \(recorded), not \(chosen)")
        }
        let layout = try prepareScratch(configuration.root)
        let blobs: any BlobStore = recorded == localBlobsSetting ? LocalBlobStore(layout: layout) : try s3Store(recorded, layout: layout)
        return Registry(layout: layout, metadata: store, blobs: blobs, inlineThreshold: configuration.inlineThreshold)
    }

    /// This machine's directory of a PostgreSQL registry: created when missing, with `tmp/`
    /// (uploads, the S3 spool) and `blobs/` (used only when the blobs are local).
    private static func prepareScratch(_ root: String) throws(GraftError) -> RegistryLayout {
        let layout = RegistryLayout(root: root)
        if FileSystem.fileExists(layout.database) {
            throw .badRequest(
                """
                \(layout.root) holds a SQLite registry (graft.sqlite); choose another --registry directory for a PostgreSQL\
                 registry's local files
                """
            )
        }
        try makeDirectories(layout.root)
        for directory in [layout.blobs, layout.sha256, layout.tmp] { try FileSystem.makeDirectory(directory) }
        return layout
    }
}
