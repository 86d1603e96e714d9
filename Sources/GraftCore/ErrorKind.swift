/// What kind of failure a ``GraftError`` is, in one word that front ends map to their own
/// signals: the CLI to an exit code, the server to an HTTP status and the `error` field of its
/// JSON answer, the remote client back again. The one table of that mapping is here, so that a
/// command fails with the same exit code against a local registry and against a server.
public enum ErrorKind: String, Sendable, Codable, CaseIterable {
    case usage
    case invalidInput = "invalid_input"
    case notFound = "not_found"
    case exists
    case busy
    case notARegistry = "not_a_registry"
    case incompatible
    case readOnly = "read_only"
    case diskFull = "disk_full"
    case io
    case damage
    case manifestViolation = "manifest_violation"
    case protected
    /// The request conflicts with the registry's state and may succeed when retried whole
    /// (a commit whose uploaded blobs are not all present).
    case conflict
    case unauthorized
    case forbidden
    case tooLarge = "too_large"
    /// A model signature that does not verify (or is missing where one is required).
    case signature
    case unavailable
    case `internal`

    /// The CLI's exit code (docs/CLI.md lists them).
    public var exitCode: Int32 {
        switch self {
        case .damage: 2
        case .usage: 64
        case .invalidInput: 65
        case .notFound: 66
        case .exists: 67
        case .busy, .unavailable, .conflict: 69
        case .notARegistry: 73
        case .io: 74
        case .incompatible: 76
        case .readOnly: 77
        case .diskFull: 78
        case .manifestViolation: 79
        case .protected: 80
        case .unauthorized, .forbidden: 81
        case .tooLarge: 65
        case .signature: 82
        case .internal: 1
        }
    }

    /// The HTTP status `graft serve` answers with.
    public var httpStatus: Int {
        switch self {
        case .usage, .invalidInput: 400
        case .unauthorized: 401
        case .forbidden: 403
        case .notFound: 404
        case .exists, .manifestViolation, .protected, .conflict: 409
        case .signature: 422
        case .tooLarge: 413
        case .busy, .unavailable, .readOnly: 503
        case .diskFull: 507
        case .notARegistry, .incompatible, .io, .damage, .internal: 500
        }
    }
}

extension GraftError {
    /// The kind of this failure.
    public var kind: ErrorKind {
        switch self {
        case .invalidName, .invalidReference, .ambiguousDigest, .patternMatchesNothing, .invalidManifest, .wrongModelKind, .invalidMetric,
            .badRequest:
            .usage
        case .invalidFile, .invalidCard, .invalidText, .invalidDirectory, .blobMismatch, .invalidUpload, .cannotMerge, .invalidKey:
            .invalidInput
        case .invalidSignature, .notSigned: .signature
        case .cannotReadInput(_, let cause):
            if case .io(_, _, let code) = cause, code == 2 { .notFound } else { .io }
        case .modelNotFound, .checkpointNotFound, .fileNotFound, .digestNotFound, .aliasNotFound, .unknownMetric, .advisoryNotFound,
            .allCandidatesFlagged,
            .tokenNotFound, .blobNotFound:
            .notFound
        case .modelExists, .outputExists, .advisoryExists, .tokenExists, .historyDiffers: .exists
        case .busy, .blobVanished: .busy
        case .notARegistry, .corruptDatabase: .notARegistry
        case .newerSchema, .migrationMismatch: .incompatible
        case .readOnly: .readOnly
        case .diskFull: .diskFull
        case .io: .io
        case .damagedBlob: .damage
        case .manifestViolation, .prefixMismatch: .manifestViolation
        case .blobsMissing: .conflict
        case .database: .internal
        case .protected: .protected
        case .unauthorized: .unauthorized
        case .forbidden: .forbidden
        case .tooLarge: .tooLarge
        case .remote(let kind, _, _): kind
        case .unreachable: .unavailable
        }
    }
}
