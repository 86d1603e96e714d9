import ArgumentParser
import Foundation
import Graft

extension GraftCommand {
    struct Sign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign a checkpoint (OpenSSF model signing) with a private key; `graft export` then writes model.sig.",
            discussion: """
                Signs the tree the checkpoint exports to, without writing it: every file's
                SHA-256 (a plain file's is its blob's; each safetensors file is hashed once from
                its blobs, every blob rehashed alongside) in an in-toto statement, in a Sigstore
                bundle the reference `model_signing verify key` accepts. The key is an unencrypted
                PEM EC key on P-256 or P-384 (`openssl ecparam -name prime256v1 -genkey -noout`).
                The signature is kept with the checkpoint (signing again replaces it); `show`
                gives its key hint. Against a server the key stays here: the server lists the
                digests and checks the signature with the public key before keeping it.
                """)

        @Argument(help: ArgumentHelp("The checkpoint (a bare NAME means its latest).", valueName: "ref"))
        var ref: String
        @Option(help: ArgumentHelp("PEM private key (P-256 or P-384).", valueName: "pem"))
        var key: String
        @OptionGroup var options: RegistryOptions
        @OptionGroup var format: OutputOptions

        func run() async throws {
            let reference = try parseReference(ref)
            try await GraftCLI.run { () throws(GraftError) in
                let signingKey = try SigningKey(pem: try readKeyFile(key), origin: key)
                let registry = try await options.open()
                let result = try await registry.sign(reference, key: signingKey)
                if format.json { return try emitJSON(result) }
                let signature = result.signature
                print(
                    "signed \(result.checkpoint): \(signature.files) files, root sha256:\(signature.rootDigest.hex.prefix(12))…, "
                        + "key \(signature.keyHint.map { String($0.prefix(12)) + "…" } ?? "?")")
            }
        }
    }

    struct VerifySignature: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify-signature",
            abstract: "Verify an OpenSSF model signature: of a model directory or file on disk, or of a checkpoint.",
            discussion: """
                For a directory, reads DIR/model.sig (for a file, FILE.sig; --signature names
                another) and checks, as `model_signing verify key` does: the key hint, the
                signature over the statement, then every file's SHA-256 against the signed list
                (the signature's ignore_paths, .git* and the signature itself left out). A
                bundle made by `model_signing sign key` or by `graft sign` verifies alike.
                For a registry reference (NAME@N), checks the checkpoint's kept signature against
                the files it exports to. Extra, missing and changed files are named; a wrong
                key, a hint mismatch or an edited payload or signature is refused (exit 82).
                An existing path is taken as a path; anything else as a reference.
                """)

        @Argument(help: ArgumentHelp("A model directory or file on disk, or a checkpoint reference.", valueName: "dir|ref"))
        var target: String
        @Option(help: ArgumentHelp("PEM public key (P-256 or P-384).", valueName: "pem"))
        var publicKey: String
        @Option(help: ArgumentHelp("The signature file, for a path (default DIR/model.sig or FILE.sig).", valueName: "path"))
        var signature: String?
        @OptionGroup var options: RegistryOptions
        @OptionGroup var format: OutputOptions

        func run() async throws {
            try await GraftCLI.run { () throws(GraftError) in
                let key = try readPublicKey(publicKey)
                let result: SignatureVerification
                if FileManager.default.fileExists(atPath: target) {
                    result = try await SignedTree.verify(
                        target, signature: signature ?? SignedTree.defaultSignaturePath(for: target), key: key)
                } else {
                    if signature != nil { throw GraftError.badRequest("--signature is for a path on disk, not a checkpoint") }
                    let reference = try Reference(parsing: target)
                    result = try await options.open().verifySignature(reference, key: key)
                }
                if format.json { return try emitJSON(result) }
                print(
                    "Verification succeeded: \(result.subject), \(result.files) files, root sha256:\(result.rootDigest.hex.prefix(12))…, "
                        + "\(result.curve) key \(result.keyHint.prefix(12))…")
            }
        }
    }
}
