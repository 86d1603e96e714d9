public import SafeTensors

/// Everything the registry can refuse or fail with. Each case carries the context a user
/// needs, and ``description`` is one line that says what went wrong in the library's terms;
/// a front end (the CLI, a server) adds its own advice on what to run next.
public enum GraftError: Error, Sendable, CustomStringConvertible {
    /// A name, alias or id that breaks the naming rules.
    case invalidName(String, reason: String)
    /// A reference (`NAME@N`, `sha256:…`) that cannot be parsed.
    case invalidReference(String, reason: String)
    /// An input file that is not valid safetensors (pickles included).
    case invalidFile(path: String, SafeTensorsError)
    /// An input file that cannot be opened or read.
    case cannotReadInput(path: String, SafeTensorsError)
    /// The path is not a Graft registry.
    case notARegistry(path: String, reason: String)
    /// The registry was written by a newer Graft.
    case newerSchema(path: String, version: Int, newestKnown: Int)
    /// A migration that was applied differs from the one this build ships.
    case migrationMismatch(version: Int, name: String)
    /// A model of this name exists already.
    case modelExists(ModelName)
    /// `graft copy`: the destination has a model of this name whose history is not the source's.
    case historyDiffers(String, reason: String)
    /// No model of this name; close names are suggested.
    case modelNotFound(ModelName, suggestions: [String])
    /// The model exists but the checkpoint does not.
    case checkpointNotFound(Reference, available: String)
    /// No checkpoint has a digest with this prefix.
    case digestNotFound(prefix: String)
    /// Several checkpoints share a digest prefix.
    case ambiguousDigest(prefix: String, candidates: [String])
    /// The alias is not set on the model.
    case aliasNotFound(model: ModelName, alias: String)
    /// The registry cannot be written (read-only file system or permissions).
    case readOnly(path: String)
    /// The disk is full; nothing was committed.
    case diskFull(path: String)
    /// A file-system call failed.
    case io(operation: String, path: String, errno: Int32)
    /// The database is locked by another process for longer than the busy timeout.
    case busy
    /// SQLite reported an error (the SQL itself is never shown).
    case database(code: Int32, message: String)
    /// The database file is damaged or is not SQLite.
    case corruptDatabase(path: String, message: String)
    /// The output file exists and overwriting was not asked for.
    case outputExists(path: String)
    /// A blob's bytes do not match its digest, or it is missing.
    case damagedBlob(Digest, reason: String)
    /// A manifest rule (`freeze features`, `freeze-through layer3`) that matches no tensor.
    case patternMatchesNothing(String)
    /// A manifest declaration that cannot be resolved.
    case invalidManifest(String)
    /// A checkpoint breaks its model's frozen-layer manifest; nothing was written.
    case manifestViolation(model: ModelName, violations: [ManifestViolation])
    /// A metric assignment, name or value that cannot be recorded.
    case invalidMetric(String, reason: String)
    /// No checkpoint in scope has this metric.
    case unknownMetric(String, known: [String])
    /// A model card that cannot be read or written.
    case invalidCard(String)
    /// Free text (a description, a provenance field, an advisory note) that cannot be stored.
    case invalidText(what: String, reason: String)
    /// A model directory that cannot be imported as it is (pickled weights, a symlink that leaves
    /// it, an index that disagrees with its shards, …); nothing was written.
    case invalidDirectory(path: String, reason: String)
    /// A checkpoint whose tensors are its parent's under another prefix than the manifest's (a
    /// task model's `bert.` over a student made in the base's names, or the other way round):
    /// every manifest tensor is missing, and present under `prefix`.
    case prefixMismatch(model: ModelName, prefix: String, checkpointHasIt: Bool, missing: Int)
    /// A directory checkpoint has no file at this path (or the checkpoint is one file).
    case fileNotFound(checkpoint: String, path: String)
    /// A checkpoint that cannot be exported merged: not an adapter's, or an adapter no plain
    /// merge reproduces (not LoRA, DoRA, trained biases, weights of another type).
    case cannotMerge(checkpoint: String, reason: String)
    /// Every candidate for `best` carries an open advisory.
    case allCandidatesFlagged(metric: String, candidates: Int)
    /// An advisory id that is taken, or unknown.
    case advisoryExists(String)
    case advisoryNotFound(String)
    /// The operation needs a student, and the model is a base (or the other way round).
    case wrongModelKind(ModelName, expected: String)
    /// A removal that would break something that depends on the target; nothing was removed.
    case protected(String, reasons: [Protection])
    /// A blob this commit relied on was removed (by `gc`) before the commit; the import retries.
    case blobVanished(Digest)
    /// Bytes sent as a blob do not match the digest or length they were announced with; nothing was kept.
    case blobMismatch(Digest, reason: String)
    /// A commit of uploaded tensors whose blobs the store does not hold (all of them listed);
    /// nothing was committed.
    case blobsMissing([Digest])
    /// An upload proposal or commit that does not describe a checkpoint (bad base64, tensors
    /// that differ from the header, lengths that disagree); nothing was stored.
    case invalidUpload(String)
    /// No blob with this digest is stored (inline tensors are not blobs).
    case blobNotFound(Digest)
    /// A request the server cannot read: malformed JSON, a missing or bad parameter.
    case badRequest(String)
    /// A token name that is taken, or unknown.
    case tokenExists(String)
    case tokenNotFound(String)
    /// A request without a valid token (none, malformed, unknown or revoked).
    case unauthorized(String)
    /// A token whose scope does not allow the operation.
    case forbidden(String)
    /// A request, header or body over the server's limit.
    case tooLarge(String)
    /// A server answered with an error: its kind, message and, for a manifest violation, the
    /// tensors it names.
    case remote(ErrorKind, message: String, details: [String])
    /// The server cannot be reached (refused, timed out, TLS failed).
    case unreachable(url: String, reason: String)
    /// A key file that is not a usable PEM key (`origin` names it).
    case invalidKey(String, reason: String)
    /// A model signature that is malformed, made by another key, altered, or that does not
    /// match the files it is checked against: every problem, one per line (a file by name).
    case invalidSignature(String, problems: [String])
    /// A checkpoint with no signature where one is needed (`graft verify-signature REF`).
    case notSigned(String)

    public var description: String {
        switch self {
        case .invalidName(let text, let reason):
            return "invalid name \(show(text)): \(reason)"
        case .invalidReference(let text, let reason):
            return "invalid reference \(show(text)): \(reason)"
        case .invalidFile(let path, let error):
            return "\(path): \(error)"
        case .cannotReadInput(_, let error):
            return "\(error)"
        case .notARegistry(let path, let reason):
            return "\(path) is not a Graft registry: \(reason)"
        case .newerSchema(let path, let version, let known):
            return
                """
                the registry at \(path) has schema version \(version), but this graft knows versions up to \(known); upgrade graft to\
                 use it
                """
        case .migrationMismatch(let version, let name):
            return
                """
                migration \(version) (\(name)) applied to this registry differs from the one this graft ships; the registry was made\
                 by an incompatible build
                """
        case .modelExists(let name):
            return "a model named `\(name)` exists already; choose another name"
        case .historyDiffers(let name, let reason):
            return "the destination has a model `\(name)` with another history (\(reason)); nothing of it was copied. "
                + "Copy it under a new name with --rename \(name)=NEW"
        case .modelNotFound(let name, let suggestions):
            guard !suggestions.isEmpty else { return "no model named `\(name)`" }
            return "no model named `\(name)`; did you mean " + suggestions.map { "`\($0)`" }.joined(separator: ", ") + "?"
        case .checkpointNotFound(let ref, let available):
            return "no checkpoint \(ref): \(available)"
        case .digestNotFound(let prefix):
            return "no checkpoint has a digest starting sha256:\(prefix)"
        case .ambiguousDigest(let prefix, let candidates):
            return
                """
                sha256:\(prefix) matches \(candidates.count) checkpoints (\(candidates.prefix(5).joined(separator: ", "))); give more\
                 digits
                """
        case .aliasNotFound(let model, let alias):
            return "model `\(model)` has no alias `\(alias)`"
        case .readOnly(let path):
            return
                "the registry at \(path) is on a read-only file system or not writable, and Graft needs write access; nothing was written"
        case .diskFull(let path):
            return "disk full while writing \(path); nothing was committed, free space and retry"
        case .io(let operation, let path, let code):
            return "\(operation) \(path): \(describeErrno(code))"
        case .busy:
            return "the registry is busy (another process holds its write lock); retry"
        case .database(let code, let message):
            return "database error \(code): \(message)"
        case .corruptDatabase(let path, let message):
            return "the registry database \(path) is damaged or not SQLite: \(message)"
        case .outputExists(let path):
            return "\(path) exists already"
        case .damagedBlob(let digest, let reason):
            return "blob \(digest.short) is damaged: \(reason)"
        case .patternMatchesNothing(let rule):
            return "the rule `\(rule)` matches no tensor of the parent checkpoint"
        case .invalidManifest(let reason):
            return "invalid manifest: \(reason)"
        case .manifestViolation(let model, let violations):
            if violations.allSatisfy({ if case .notAdapter = $0 { true } else { false } }) {
                return
                    "checkpoint refused: it is not an adapter on \(model)'s parent (\(violations.count) problem(s)); nothing was written: "
                    + violations.map(\.description).joined(separator: "; ")
            }
            return "checkpoint refused: it breaks \(model)'s frozen-layer manifest (\(violations.count) tensor(s)); nothing was written: "
                + violations.map(\.description).joined(separator: "; ")
        case .invalidMetric(let text, let reason):
            return "invalid metric \(show(text)): \(reason)"
        case .unknownMetric(let name, let known):
            let hint =
                known.isEmpty ? "no metrics are recorded in that scope" : "known metrics: " + known.prefix(10).joined(separator: ", ")
            return "no checkpoint in scope has metric \(show(name)); \(hint)"
        case .invalidCard(let reason):
            return "model card: \(reason)"
        case .invalidText(let what, let reason):
            return "invalid \(what): \(reason)"
        case .invalidDirectory(let path, let reason):
            return "cannot import \(show(path)): \(reason); nothing was written"
        case .prefixMismatch(let model, let prefix, let checkpointHasIt, let missing):
            let how =
                checkpointHasIt
                ? "names its parent's tensors under \(show(prefix)), but \(model)'s manifest was made in the parent's names"
                : "names its parent's tensors without \(show(prefix)), but \(model)'s manifest has that prefix"
            return "checkpoint refused: it \(how) (\(missing) tensor(s) missing); nothing was written; "
                + (checkpointHasIt
                    ? "make the student with the prefix (rules in the checkpoint's names, or the prefix rule \(show(prefix)))"
                    : "save the task model the manifest was made for, or make a student without the prefix")
        case .cannotMerge(let checkpoint, let reason):
            return "cannot export \(checkpoint) merged: \(reason)"
        case .fileNotFound(let checkpoint, let path):
            return "\(checkpoint) has no file \(show(path))"
        case .allCandidatesFlagged(let metric, let candidates):
            return "all \(candidates) checkpoint(s) with metric \(show(metric)) carry an open advisory (on them or an ancestor)"
        case .advisoryExists(let id):
            return "an advisory with id \(show(id)) exists already"
        case .advisoryNotFound(let id):
            return "no advisory with id \(show(id))"
        case .wrongModelKind(let name, let expected):
            return "`\(name)` is not a \(expected)"
        case .protected(let target, let reasons):
            return "\(target) is kept: " + reasons.map(\.description).joined(separator: "; ")
        case .blobMismatch(let digest, let reason):
            return "the bytes sent for blob \(digest.short)… \(reason); nothing was kept"
        case .blobVanished(let digest):
            return "blob \(digest.short)… was removed by gc before the commit; nothing was committed"
        case .blobsMissing(let digests):
            return "the commit needs \(digests.count) blob(s) the registry does not hold ("
                + digests.prefix(3).map { $0.short + "…" }.joined(separator: ", ") + (digests.count > 3 ? ", …" : "")
                + "); nothing was committed"
        case .blobNotFound(let digest):
            return "no blob \(digest.short)… is stored"
        case .invalidUpload(let reason):
            return "invalid upload: \(reason)"
        case .tokenExists(let name):
            return "a token named \(show(name)) exists already"
        case .tokenNotFound(let name):
            return "no active token named \(show(name))"
        case .unauthorized(let reason), .forbidden(let reason), .tooLarge(let reason), .badRequest(let reason):
            return reason
        case .remote(_, let message, _):
            return message
        case .unreachable(let url, let reason):
            return "cannot reach the registry at \(url): \(reason)"
        case .invalidKey(let origin, let reason):
            return "\(show(origin)) is \(reason)"
        case .invalidSignature(let origin, let problems):
            return "the signature of \(show(origin)) does not verify: " + problems.prefix(20).joined(separator: "; ")
                + (problems.count > 20 ? "; and \(problems.count - 20) more" : "")
        case .notSigned(let what):
            return "\(show(what)) has no signature"
        }
    }

    /// The part of the message after the offending text, for nesting in another message.
    var reasonText: String {
        switch self {
        case .invalidName(_, let reason), .invalidReference(_, let reason): reason
        default: description
        }
    }
}

/// Shows user text in an error, with control and direction characters escaped and the length bounded.
func show(_ text: String) -> String { quoted(text, limit: 160) }

extension GraftError {
    /// A failed read of an input: the system's error as ``cannotReadInput(path:_:)``, anything
    /// else (a stream that ended early or ran on) as ``invalidFile(path:_:)``.
    package static func reading(_ origin: String, _ error: SafeTensorsError) -> GraftError {
        if case .io = error { return .cannotReadInput(path: origin, error) }
        return .invalidFile(path: origin, error)
    }
}
