import ArgumentParser
import Graft

extension GraftCommand {
    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a registry (or check the one that is there).",
            discussion: """
                The directory may be new, empty, or hold only README.md or .gitignore. With --metadata \
                postgresql://USER@HOST:PORT/DATABASE, the schema is prepared in that database (which must exist) and the \
                directory keeps only this machine's temporary files; with --blobs s3://BUCKET/PREFIX, the bucket is \
                created when missing and the location recorded, so later commands and servers find it.
                """)

        @OptionGroup var options: RegistryOptions

        func run() async throws {
            try await GraftCLI.run { () throws(GraftError) in
                let configuration = try options.configuration()
                let (registry, created) = try await Registry.create(configuration)
                var place = registry.layout.root
                if configuration.metadata != nil {
                    place = "\(registry.metadata.location) (this machine's files in \(registry.layout.root))"
                }
                print(created ? "created registry at \(place)" : "registry at \(place) is ready (already initialised)")
            }
        }
    }
}
