import Foundation
import Graft
import GraftTestSupport
import SafeTensors

/// The `graft` binary built beside the test bundle.
let graftBinary: String = {
    let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let candidate = directory.appendingPathComponent("graft").path
    if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    return packageRoot + "/.build/debug/graft"
}()

/// A temporary directory with a registry path in it, and a way to run graft against it.
struct CLI {
    let directory = TemporaryDirectory()
    var registry: String { directory.file("registry") }

    /// Runs graft with `--registry` appended (unless `registry: false`) and no GRAFT_REGISTRY.
    @discardableResult
    func run(
        _ arguments: [String], registry useRegistry: Bool = true, environment: [String: String] = [:], in cwd: String? = nil,
        input: Data? = nil
    ) throws -> ProcessOutput {
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "GRAFT_REGISTRY")
        env.merge(environment) { _, new in new }
        return try runProcess(
            graftBinary, arguments + (useRegistry ? ["--registry", registry] : []), environment: env, directory: cwd ?? directory.path,
            input: input)
    }

    /// Writes a generated base and returns its path.
    func base(_ name: String = "base.safetensors", seed: UInt64 = 7) throws -> String {
        let path = directory.file(name)
        try SafeTensorsWriter.write(SyntheticBase.tensors(seed: seed), metadata: ["format": "pt"], to: path)
        return path
    }

    /// Decodes a command's `--json` output.
    func json(_ arguments: [String]) throws -> Any {
        let output = try run(arguments + ["--json"])
        guard output.status == 0 else { throw HelperError("graft \(arguments) failed: \(output.stderr)") }
        return try JSONSerialization.jsonObject(with: Data(output.stdout.utf8))
    }
}
