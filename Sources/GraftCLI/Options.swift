import ArgumentParser
import Foundation
import Graft
import GraftRemote
import SafeTensors

/// `--registry PATH|URL`, shared by every command.
struct RegistryOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Registry root, or http(s)://HOST:PORT of a `graft serve` (token in $GRAFT_TOKEN); default: $GRAFT_REGISTRY, else ./registry.",
            valueName: "path|url"))
    var registry: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            """
            An S3-compatible blob store, s3://BUCKET/PREFIX?endpoint=URL&region=R, chosen by `graft init` and recorded (credentials\
             from $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY); default: $GRAFT_BLOBS, else the registry's blobs/.
            """,
            valueName: "s3-url"))
    var blobs: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            """
            A PostgreSQL metadata store, postgresql://USER@HOST:PORT/DATABASE (password from $PGPASSWORD), prepared by `graft init`;\
             the registry directory then holds only temporary files. Default: $GRAFT_METADATA, else the registry's graft.sqlite.
            """,
            valueName: "postgresql-url"))
    var metadata: String?

    var root: String { RegistryLayout.resolveRoot(option: registry, environment: ProcessInfo.processInfo.environment) }

    /// Whether the registry is a server rather than a directory.
    var isRemote: Bool { RemoteRegistry.isURL(root) }

    /// The registry the user chose: `--registry`, the environment (`GRAFT_REGISTRY`,
    /// `GRAFT_INLINE_THRESHOLD`, `GRAFT_BUSY_TIMEOUT`), else the defaults.
    func configuration() throws(GraftError) -> RegistryConfiguration {
        try RegistryConfiguration.resolve(
            option: registry, blobs: blobs, metadata: metadata, environment: ProcessInfo.processInfo.environment)
    }

    /// Opens the registry the user chose: a directory, or a server (`http(s)://…`, with the
    /// token in `GRAFT_TOKEN`).
    func open() async throws(GraftError) -> any RegistryAPI {
        if isRemote {
            if blobs != nil || metadata != nil {
                throw .badRequest("--blobs and --metadata apply to a registry directory; a server chooses its own stores")
            }
            let token = ProcessInfo.processInfo.environment["GRAFT_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            return try RemoteRegistry(url: root, token: token)
        }
        return try await openLocal()
    }

    /// Opens a registry directory, for what only runs beside the files (`init`, `serve`, tokens,
    /// the demo); a URL is refused.
    func openLocal() async throws(GraftError) -> Registry {
        if isRemote { throw .badRequest("this command works on a registry directory, not a server URL (\(root))") }
        return try await Registry.open(try configuration())
    }
}

/// `--max`, `--min` and `--split`: how `best` and `prune --keep-best` rank a metric.
struct RankingOptions: ParsableArguments {
    @Flag(help: "Higher is better.")
    var max = false
    @Flag(help: "Lower is better.")
    var min = false
    @Option(help: "Only evaluations on this split.")
    var split: String?

    func validate() throws {
        if max && min { throw ValidationError("--max and --min exclude each other") }
    }

    /// The direction asked for; nil lets the metric's name decide.
    var direction: Direction? { max ? .max : min ? .min : nil }
}

/// How `base add` and `checkpoint add` read a model directory.
struct DirectoryImportOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "For a directory: leave out files whose relative path (or name) matches this glob (repeatable), e.g. '*.bin'.",
            valueName: "glob"))
    var exclude: [String] = []
    @Option(help: ArgumentHelp("For a directory: the most files it may hold.", valueName: "count"))
    var maxFiles = DirectoryOptions.defaultMaxFiles
    @Option(help: ArgumentHelp("For a directory: the largest file other than weights, in MiB.", valueName: "mib"))
    var maxFileMib = DirectoryOptions.defaultMaxFileBytes >> 20
    @Option(
        help: ArgumentHelp(
            "For a directory: verify its model.sig (OpenSSF model signing) with this PEM public key before anything is written.",
            valueName: "pem"))
    var publicKey: String?

    func validate() throws {
        guard maxFiles >= 1 else { throw ValidationError("--max-files must be at least 1") }
        guard (1...(1 << 20)).contains(maxFileMib) else { throw ValidationError("--max-file-mib must be between 1 and 1048576") }
    }

    var options: DirectoryOptions { DirectoryOptions(exclude: exclude, maxFiles: maxFiles, maxFileBytes: maxFileMib << 20) }

    /// The model directory at `path`, or `nil` for a file (refusing a lone shard or index).
    func directory(_ path: String) throws(GraftError) -> DirectoryInput? {
        let key = try publicKey.map { (file) throws(GraftError) in try readPublicKey(file) }
        guard path != "-", DirectoryInput.isDirectory(path) else {
            if key != nil {
                throw .badRequest(
                    "--public-key verifies a model directory's model.sig; \(path) is not a directory "
                        + "(sign a file with `graft sign` once registered)"
                )
            }
            if path != "-", let advice = DirectoryInput.shardAdvice(file: path) { throw .invalidDirectory(path: path, reason: advice) }
            return nil
        }
        var directory = try DirectoryInput.open(path, options: options)
        directory.publicKey = key
        return directory
    }
}

/// Reads a PEM public key file (P-256 or P-384).
func readPublicKey(_ path: String) throws(GraftError) -> VerifyingKey {
    try VerifyingKey(pem: try readKeyFile(path), origin: path)
}

/// Reads a PEM key file, at most 64 KiB.
func readKeyFile(_ path: String) throws(GraftError) -> String {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw .cannotReadInput(path: path, .io(operation: "cannot read", path: path, errno: ENOENT))
    }
    guard data.count <= 1 << 16 else { throw .invalidKey(path, reason: "over 64 KiB: not a PEM key") }
    return String(decoding: data, as: UTF8.self)
}

/// `--json`, shared by every read command.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print JSON (schema in docs/JSON.md) instead of text.")
    var json = false
}

/// Parses a user-typed name, turning a bad one into a usage error.
func parseName(_ text: String) throws -> ModelName {
    do { return try ModelName(text) } catch { throw fail(error) }
}

func parseReference(_ text: String) throws -> Reference {
    do { return try Reference(parsing: text) } catch { throw fail(error) }
}

/// A safetensors file arriving on standard input (`-` in place of a file), header read and checked.
func standardInput() throws(GraftError) -> SafeTensorsStream {
    do {
        return try SafeTensorsStream(FileDescriptorSource(fd: 0, origin: "standard input"))
    } catch {
        throw .reading("standard input", error)
    }
}
