import ArgumentParser
import Graft

extension GraftCommand {
    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a registry (or check the one that is there).",
            discussion: "The directory may be new, empty, or hold only README.md or .gitignore.")

        @OptionGroup var options: RegistryOptions

        func run() async throws {
            try await GraftCLI.run { () throws(GraftError) in
                let (registry, created) = try await Registry.create(try options.configuration())
                print(created ? "created registry at \(registry.layout.root)" : "registry at \(registry.layout.root) is ready (already initialised)")
            }
        }
    }
}
