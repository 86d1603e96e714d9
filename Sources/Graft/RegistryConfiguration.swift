public import GraftCore

extension Registry {
    /// Opens the registry a configuration describes.
    public static func open(_ configuration: RegistryConfiguration) async throws(GraftError) -> Registry {
        if let metadata = configuration.metadata {
            return try await openPostgres(configuration, url: metadata)
        }
        return try await open(
            at: configuration.root, inlineThreshold: configuration.inlineThreshold, durability: configuration.durability,
            busyTimeout: configuration.busyTimeout, blobs: configuration.blobs)
    }

    /// Creates the registry a configuration describes, or opens the one already there.
    public static func create(_ configuration: RegistryConfiguration) async throws(GraftError) -> (registry: Registry, created: Bool) {
        if let metadata = configuration.metadata {
            return try await createPostgres(configuration, url: metadata)
        }
        return try await create(
            at: configuration.root, inlineThreshold: configuration.inlineThreshold, durability: configuration.durability,
            busyTimeout: configuration.busyTimeout, blobs: configuration.blobs)
    }
}
