import Crypto
import Foundation

// OpenSSF model signing (OMS v1.0), as the reference `model-signing` 1.1.1 reads and writes it
// with a key pair: a Sigstore bundle (`model.sig`) holding a DSSE envelope of an in-toto
// Statement v1 whose predicate lists every file's SHA-256. The format is the reference's; only
// the bytes Graft writes are its own (a verifier reads the payload, it never rebuilds it).
// docs/ARCHITECTURE.md, "Signatures", gives the layout field by field.

/// One file a signature covers: its path relative to the model directory (`.` for a model
/// that is one file) and its SHA-256.
public struct SignedResource: Sendable, Equatable, Codable {
    public var name: String
    public var digest: Digest
    public init(name: String, digest: Digest) { (self.name, self.digest) = (name, digest) }
}

/// A private key that signs: ECDSA on P-256 (with SHA-256) or P-384 (with SHA-384), as the
/// reference signer picks the hash from the curve. Kept as its raw scalar (the key types of
/// swift-crypto are not `Sendable`).
public struct SigningKey: Sendable {
    let curve: VerifyingKey.Curve
    let raw: [UInt8]
    public let publicKey: VerifyingKey

    /// Reads a PEM private key (`EC PRIVATE KEY` or PKCS #8 `PRIVATE KEY`, unencrypted).
    /// - Throws: ``GraftError/invalidKey(_:reason:)`` for anything else.
    public init(pem: String, origin: String) throws(GraftError) {
        if let key = try? P256.Signing.PrivateKey(pemRepresentation: pem) {
            (curve, raw) = (.p256, Array(key.rawRepresentation))
            publicKey = VerifyingKey(curve: .p256, der: Array(key.publicKey.derRepresentation), pem: key.publicKey.pemRepresentation)
        } else if let key = try? P384.Signing.PrivateKey(pemRepresentation: pem) {
            (curve, raw) = (.p384, Array(key.rawRepresentation))
            publicKey = VerifyingKey(curve: .p384, der: Array(key.publicKey.derRepresentation), pem: key.publicKey.pemRepresentation)
        } else {
            throw .invalidKey(origin, reason: "not an unencrypted PEM private key on P-256 or P-384")
        }
    }

    /// The DER-encoded ECDSA signature of `message` (hashed with the curve's hash).
    func sign(_ message: [UInt8]) throws(GraftError) -> [UInt8] {
        do {
            switch curve {
            case .p256: return Array(try P256.Signing.PrivateKey(rawRepresentation: raw).signature(for: message).derRepresentation)
            case .p384: return Array(try P384.Signing.PrivateKey(rawRepresentation: raw).signature(for: message).derRepresentation)
            }
        } catch {
            throw .invalidKey("the private key", reason: "unusable: signing failed (\(error))")
        }
    }
}

/// A public key that verifies signatures of ``SigningKey``, kept as its DER SubjectPublicKeyInfo.
public struct VerifyingKey: Sendable, Equatable {
    public enum Curve: String, Sendable { case p256 = "P-256", p384 = "P-384" }
    public let curve: Curve
    let der: [UInt8]
    /// The key as PEM SubjectPublicKeyInfo, ending with a newline: the bytes the reference
    /// hashes for its key hint (without the newline the hint differs).
    public let pem: String

    init(curve: Curve, der: [UInt8], pem: String) {
        (self.curve, self.der, self.pem) = (curve, der, pem.hasSuffix("\n") ? pem : pem + "\n")
    }

    /// Reads a PEM public key (`PUBLIC KEY`, SubjectPublicKeyInfo).
    /// - Throws: ``GraftError/invalidKey(_:reason:)`` for anything else.
    public init(pem: String, origin: String) throws(GraftError) {
        if let key = try? P256.Signing.PublicKey(pemRepresentation: pem) {
            self.init(curve: .p256, der: Array(key.derRepresentation), pem: key.pemRepresentation)
        } else if let key = try? P384.Signing.PublicKey(pemRepresentation: pem) {
            self.init(curve: .p384, der: Array(key.derRepresentation), pem: key.pemRepresentation)
        } else {
            throw .invalidKey(origin, reason: "not a PEM public key on P-256 or P-384")
        }
    }

    /// `verificationMaterial.publicKey.hint`: hex SHA-256 of ``pem``.
    public var hint: String { Digest.of(Array(pem.utf8)).hex }

    func isValid(signature der: [UInt8], for message: [UInt8]) -> Bool {
        switch curve {
        case .p256:
            guard let key = try? P256.Signing.PublicKey(derRepresentation: self.der),
                let signature = try? P256.Signing.ECDSASignature(derRepresentation: der)
            else { return false }
            return key.isValidSignature(signature, for: message)
        case .p384:
            guard let key = try? P384.Signing.PublicKey(derRepresentation: self.der),
                let signature = try? P384.Signing.ECDSASignature(derRepresentation: der)
            else { return false }
            return key.isValidSignature(signature, for: message)
        }
    }
}

/// A `model.sig` file: parsed and checked for shape and internal consistency (the root digest
/// over the listed resources), not yet for its signature — ``verify(with:)`` does that.
public struct ModelSignature: Sendable, Equatable {
    public static let mediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
    public static let payloadType = "application/vnd.in-toto+json"
    public static let statementType = "https://in-toto.io/Statement/v1"
    public static let predicateType = "https://model_signing/signature/v1.0"
    /// The file name the reference tools default to, beside a directory's files.
    public static let fileName = "model.sig"
    /// Paths the reference leaves out of a model by default (with the signature itself).
    public static let ignoredPaths = [".git", ".gitattributes", ".github", ".gitignore", fileName]
    /// The largest `model.sig` read (a manifest of 10,000 files is under 2 MiB).
    public static let maximumBytes = 32 << 20

    /// The file's bytes exactly as read or written.
    public let bytes: [UInt8]
    /// The subject's name (informative: the model's directory or file name when signed).
    public let modelName: String
    /// The subject's digest: SHA-256 over the resources' raw digests in listed order.
    public let rootDigest: Digest
    public let resources: [SignedResource]
    /// `verificationMaterial.publicKey.hint`, or `nil` in an older bundle without one.
    public let keyHint: String?
    /// The serialization's `ignore_paths` and `allow_symlinks`.
    public let ignorePaths: [String]
    public let allowSymlinks: Bool
    let payload: [UInt8]
    let signature: [UInt8]

    /// Signs `resources` (any order; listed by path) under `modelName`.
    public static func sign(modelName: String, resources: [SignedResource], key: SigningKey) throws(GraftError) -> ModelSignature {
        let sorted = resources.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        let root = rootDigest(of: sorted)
        let statement: [String: Any] = [
            "_type": statementType,
            "subject": [["name": modelName, "digest": ["sha256": root.hex]]],
            "predicateType": predicateType,
            "predicate": [
                "serialization": [
                    "method": "files", "hash_type": "sha256", "allow_symlinks": false, "ignore_paths": ignoredPaths,
                ] as [String: Any],
                "resources": sorted.map { ["name": $0.name, "algorithm": "sha256", "digest": $0.digest.hex] },
            ] as [String: Any],
        ]
        let payload = try json(statement)
        let signature = try key.sign(preAuthenticationEncoding(payload))
        let bundle: [String: Any] = [
            "mediaType": mediaType,
            "verificationMaterial": ["publicKey": ["hint": key.publicKey.hint], "tlogEntries": [] as [Any]] as [String: Any],
            "dsseEnvelope": [
                "payload": Data(payload).base64EncodedString(),
                "payloadType": payloadType,
                "signatures": [["sig": Data(signature).base64EncodedString(), "keyid": ""]],
            ] as [String: Any],
        ]
        return try parse(try json(bundle) + [UInt8(ascii: "\n")], origin: "the signature just made")
    }

    /// Reads a `model.sig`: a key-signed bundle of the v1.0 predicate with `files` serialization
    /// and SHA-256, its root digest matching its resources.
    /// - Throws: ``GraftError/invalidSignature(_:problems:)`` saying what is wrong.
    public static func parse(_ bytes: [UInt8], origin: String) throws(GraftError) -> ModelSignature {
        func refuse(_ problem: String) -> GraftError { .invalidSignature(origin, problems: [problem]) }
        guard bytes.count <= maximumBytes else { throw refuse("it is over \(maximumBytes >> 20) MiB") }
        guard let bundle = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else {
            throw refuse("it is not a JSON object")
        }
        guard bundle["mediaType"] as? String == mediaType else {
            throw refuse("its mediaType is not \(mediaType) (a Sigstore bundle v0.3)")
        }
        guard let envelope = bundle["dsseEnvelope"] as? [String: Any] else { throw refuse("it holds no DSSE envelope") }
        guard envelope["payloadType"] as? String == payloadType else { throw refuse("its payload is not \(payloadType)") }
        guard let payloadText = envelope["payload"] as? String, let payload = Data(base64Encoded: payloadText) else {
            throw refuse("its payload is not base64")
        }
        guard let signatures = envelope["signatures"] as? [[String: Any]], signatures.count == 1,
            let sigText = signatures[0]["sig"] as? String, let signature = Data(base64Encoded: sigText)
        else { throw refuse("it needs exactly one base64 signature") }
        let material = bundle["verificationMaterial"] as? [String: Any]
        if material?["certificate"] != nil || material?["x509CertificateChain"] != nil {
            throw refuse("it is signed with a certificate (Sigstore or PKI); Graft verifies key-signed bundles")
        }
        let hint = (material?["publicKey"] as? [String: Any])?["hint"] as? String
        guard let statement = (try? JSONSerialization.jsonObject(with: payload)) as? [String: Any] else {
            throw refuse("its payload is not a JSON statement")
        }
        guard statement["_type"] as? String == statementType else { throw refuse("its statement is not \(statementType)") }
        guard statement["predicateType"] as? String == predicateType else {
            throw refuse("its predicate type is not \(predicateType)")
        }
        guard let subjects = statement["subject"] as? [[String: Any]], subjects.count == 1,
            let name = subjects[0]["name"] as? String,
            let rootText = (subjects[0]["digest"] as? [String: Any])?["sha256"] as? String,
            let root = try? Digest(parsing: rootText)
        else { throw refuse("it needs exactly one subject with a name and a SHA-256 digest") }
        guard let predicate = statement["predicate"] as? [String: Any],
            let serialization = predicate["serialization"] as? [String: Any]
        else { throw refuse("its predicate has no serialization") }
        guard serialization["method"] as? String == "files" else {
            throw refuse("its serialization method is \(serialization["method"].map { "\($0)" } ?? "missing"); Graft verifies `files`")
        }
        guard serialization["hash_type"] as? String == "sha256" else { throw refuse("its hash type is not sha256") }
        guard let list = predicate["resources"] as? [[String: Any]] else { throw refuse("its predicate lists no resources") }
        var resources: [SignedResource] = []
        for item in list {
            guard let path = item["name"] as? String, item["algorithm"] as? String == "sha256",
                let text = item["digest"] as? String, let digest = try? Digest(parsing: text)
            else { throw refuse("a resource is not {name, algorithm: sha256, digest}") }
            resources.append(SignedResource(name: path, digest: digest))
        }
        guard rootDigest(of: resources) == root else {
            throw refuse("its root digest \(root.short)… is not the digest of its resources")
        }
        guard Set(resources.map(\.name)).count == resources.count else { throw refuse("it lists a file twice") }
        return ModelSignature(
            bytes: bytes, modelName: name, rootDigest: root, resources: resources, keyHint: hint,
            ignorePaths: (serialization["ignore_paths"] as? [String]) ?? [],
            allowSymlinks: serialization["allow_symlinks"] as? Bool ?? false,
            payload: Array(payload), signature: Array(signature))
    }

    /// Checks the key hint (when the bundle has one) and the signature over the DSSE PAE.
    /// - Throws: ``GraftError/invalidSignature(_:problems:)`` for a key mismatch or a bad signature.
    public func verify(with key: VerifyingKey, origin: String) throws(GraftError) {
        if let keyHint, keyHint != key.hint {
            throw .invalidSignature(
                origin, problems: ["key mismatch: it was signed by key \(keyHint.prefix(12))…, not this key (\(key.hint.prefix(12))…)"])
        }
        guard key.isValid(signature: signature, for: Self.preAuthenticationEncoding(payload)) else {
            throw .invalidSignature(
                origin, problems: ["the signature does not verify with this key (the payload or the signature was changed)"])
        }
    }

    /// Checks the signed files against `actual` (the files as they are, with any `problems`
    /// found reading them); call after ``verify(with:origin:)``, which is cheaper.
    /// - Throws: ``GraftError/invalidSignature(_:problems:)`` naming every extra, missing and changed file.
    public func checkFiles(_ actual: [SignedResource], problems: [String] = [], origin: String) throws(GraftError) {
        let all = differences(from: actual) + problems
        guard all.isEmpty else { throw .invalidSignature(origin, problems: all) }
    }

    /// What differs between the signed files and `actual`: one line per file, by name.
    public func differences(from actual: [SignedResource]) -> [String] {
        let signed = Dictionary(resources.map { ($0.name, $0.digest) }, uniquingKeysWith: { a, _ in a })
        let present = Dictionary(actual.map { ($0.name, $0.digest) }, uniquingKeysWith: { a, _ in a })
        var lines: [String] = []
        for name in present.keys.sorted() where signed[name] == nil { lines.append("extra file \(name.debugDescription)") }
        for name in signed.keys.sorted() where present[name] == nil { lines.append("missing file \(name.debugDescription)") }
        for name in signed.keys.sorted() {
            if let digest = present[name], digest != signed[name] {
                lines.append("changed file \(name.debugDescription) (signed \(signed[name]!.short)…, found \(digest.short)…)")
            }
        }
        return lines
    }

    /// Whether the reference verifier leaves `path` (relative) out: a listed path or under one.
    public func ignores(_ path: String) -> Bool {
        (ignorePaths + Self.ignoredPaths).contains { path == $0 || path.hasPrefix($0 + "/") }
    }

    static func rootDigest(of resources: [SignedResource]) -> Digest {
        var hasher = SHA256()
        for resource in resources { hasher.update(data: resource.digest.rawBytes) }
        return Digest(hasher.finalize())
    }

    /// DSSE's pre-authentication encoding, what the signature covers.
    static func preAuthenticationEncoding(_ payload: [UInt8]) -> [UInt8] {
        Array("DSSEv1 \(payloadType.utf8.count) \(payloadType) \(payload.count) ".utf8) + payload
    }

    private static func json(_ object: Any) throws(GraftError) -> [UInt8] {
        do {
            return Array(
                try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]))
        } catch {
            throw .invalidSignature("a signature", problems: ["cannot write JSON: \(error)"])
        }
    }
}

/// A checkpoint's signature as the registry keeps it: the bundle byte for byte, and what was
/// checked of it.
package struct StoredSignature: Sendable, Equatable {
    package var bundle: [UInt8]
    package var keyHint: String?
    package var rootDigest: Digest
    package var fileCount: Int
    /// When Graft signed it, or when it was registered with the checkpoint.
    package var signedAt: String
    /// Whether a public key checked it against the checkpoint's files.
    package var verified: Bool
    /// `graft` (made by `graft sign`) or `imported` (came with a registered directory).
    package var origin: String

    package init(
        bundle: [UInt8], keyHint: String?, rootDigest: Digest, fileCount: Int, signedAt: String, verified: Bool, origin: String
    ) {
        (self.bundle, self.keyHint, self.rootDigest, self.fileCount) = (bundle, keyHint, rootDigest, fileCount)
        (self.signedAt, self.verified, self.origin) = (signedAt, verified, origin)
    }

    package init(_ signature: ModelSignature, verified: Bool, origin: String, at time: String = timestamp()) {
        self.init(
            bundle: signature.bytes, keyHint: signature.keyHint, rootDigest: signature.rootDigest, fileCount: signature.resources.count,
            signedAt: time, verified: verified, origin: origin)
    }

    package var info: SignatureInfo {
        SignatureInfo(keyHint: keyHint, rootDigest: rootDigest, files: fileCount, signedAt: signedAt, verified: verified, origin: origin)
    }
}

/// A checkpoint's signature as `show --json`, the API and the pages give it.
public struct SignatureInfo: Sendable, Codable, Equatable {
    /// Hex SHA-256 of the signing key's PEM (the bundle's key hint); `nil` in an older bundle.
    public var keyHint: String?
    /// The signed statement's subject digest (over every file's digest).
    public var rootDigest: Digest
    /// How many files it covers.
    public var files: Int
    public var signedAt: String
    /// Whether a public key checked it against the checkpoint's files: `graft sign` (its own
    /// key) or registration with `--public-key`. `false`: kept as given, "signed, not verified".
    public var verified: Bool
    /// `graft` or `imported`.
    public var origin: String

    package init(keyHint: String?, rootDigest: Digest, files: Int, signedAt: String, verified: Bool, origin: String) {
        (self.keyHint, self.rootDigest, self.files, self.signedAt, self.verified, self.origin) =
            (keyHint, rootDigest, files, signedAt, verified, origin)
    }
}
