import ArgumentParser
import Graft

extension GraftCommand {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the models in the registry.")

        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            try await GraftCLI.run { () throws(GraftError) in
                let models = try await options.open().models()
                if output.json { return try emitJSON(models) }
                if models.isEmpty {
                    print("no models yet; register one with `graft base add FILE --name NAME`")
                    return
                }
                print(
                    table(
                        ["NAME", "KIND", "CHECKPOINTS", "ARCHITECTURE", "LICENSE", "CREATED"],
                        models.map { model in
                            [
                                model.name.value, model.kind, String(model.checkpointCount), model.provenance.architecture ?? "-",
                                model.provenance.license ?? "-", model.createdAt,
                            ]
                        }, right: [2]))
            }
        }
    }
}

/// `printJSON` for command bodies that throw only `GraftError`.
func emitJSON(_ value: some Encodable) throws(GraftError) {
    do { try printJSON(value) } catch { throw GraftError.io(operation: "cannot encode JSON for", path: "stdout", errno: 22) }
}
