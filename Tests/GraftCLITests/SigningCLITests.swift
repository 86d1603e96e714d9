import Crypto
import Foundation
import Graft
import GraftTestSupport
import SafeTensors
import Testing

/// OpenSSF model signing (issue 29): `graft sign`, `export` writing model.sig, `verify-signature`
/// on disk and in the registry, verified registration, and a server that requires signed bases.
/// The reference package's own checks run in clients/python/tests/test_signing.py; here a bundle
/// it made is a known answer.
@Suite("model signing: sign, export, verify, register")
struct SigningCLITests {
    static let signatureFailed: Int32 = 82

    /// Made by `model_signing sign key` 1.1.1 with a P-384 key over a directory holding
    /// `a.txt` ("hello\n") and `sub/b.txt` ("graft\n"), signature inside as model.sig.
    static let referenceBundle = """
        {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": {"publicKey": {"hint": \
        "92a96ccf26feed80fc4c4cbe372b6745e832b0799475c39bee8f2859291fa39e"}, "tlogEntries": []}, "dsseEnvelope": {"payload": \
        "ewogICJfdHlwZSI6ICJodHRwczovL2luLXRvdG8uaW8vU3RhdGVtZW50L3YxIiwKICAic3ViamVjdCI6IFsKICAgIHsKICAgICAgIm5hbWUiOiAibW9kZWwiLAog\
        ICAgICAiZGlnZXN0IjogewogICAgICAgICJzaGEyNTYiOiAiNWZkNDE2YmUxN2M3ZTIyM2VmMmYxZDgyOGNkNTNmMjgzZWZjMzNlNDBmZTJmOGIyYzVjOGEwYTdh\
        MWYyOTkxZCIKICAgICAgfQogICAgfQogIF0sCiAgInByZWRpY2F0ZVR5cGUiOiAiaHR0cHM6Ly9tb2RlbF9zaWduaW5nL3NpZ25hdHVyZS92MS4wIiwKICAicHJl\
        ZGljYXRlIjogewogICAgInNlcmlhbGl6YXRpb24iOiB7CiAgICAgICJpZ25vcmVfcGF0aHMiOiBbCiAgICAgICAgIm1vZGVsLnNpZyIsCiAgICAgICAgIi5naXQi\
        LAogICAgICAgICIuZ2l0aHViIiwKICAgICAgICAiLmdpdGF0dHJpYnV0ZXMiLAogICAgICAgICIuZ2l0aWdub3JlIgogICAgICBdLAogICAgICAiYWxsb3dfc3lt\
        bGlua3MiOiBmYWxzZSwKICAgICAgImhhc2hfdHlwZSI6ICJzaGEyNTYiLAogICAgICAibWV0aG9kIjogImZpbGVzIgogICAgfSwKICAgICJyZXNvdXJjZXMiOiBb\
        CiAgICAgIHsKICAgICAgICAibmFtZSI6ICJhLnR4dCIsCiAgICAgICAgImFsZ29yaXRobSI6ICJzaGEyNTYiLAogICAgICAgICJkaWdlc3QiOiAiNTg5MWI1YjUy\
        MmQ1ZGYwODZkMGZmMGIxMTBmYmQ5ZDIxYmI0ZmM3MTYzYWYzNGQwODI4NmEyZTg0NmY2YmUwMyIKICAgICAgfSwKICAgICAgewogICAgICAgICJuYW1lIjogInN1\
        Yi9iLnR4dCIsCiAgICAgICAgImFsZ29yaXRobSI6ICJzaGEyNTYiLAogICAgICAgICJkaWdlc3QiOiAiNjY4NTY1MzkzY2QxNDhhYTNkODg2YzE1M2E5MDYzZDQx\
        ZWQxMjM3Mzg5ODU0NWVhZWY5NjE5NDZjZTVhZGUxZiIKICAgICAgfQogICAgXQogIH0KfQ==", "payloadType": "application/vnd.in-toto+json", \
        "signatures": [{"sig": "MGYCMQD1jun99hoCw3xJe9B5dTMI68cs12bptjUGNTAGO/UbFjcILWwWKz8Lq/IIKNsHOjsCMQC0WyOckZjX2d4xuPJ114TOz4H7SCl\
        et4Uf+upe+oDLUMKCUwHtyFKHFyvJ8c5fWD4=", "keyid": ""}]}}
        """
    static let referencePublicKey = """
        -----BEGIN PUBLIC KEY-----
        MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEjJd0NN6VdykLsjmLVbQ7Rw54FFPB/vqy
        8lWgq5JPUFP7tX2pPyoNGvYKMUy7THuMuLwl7JS9w7Bi2mcQ9av7hIQd42tiBv1R
        GzlLXLshiWzC+oSWE+wAclnWowUCIAFc
        -----END PUBLIC KEY-----

        """

    /// The statement inside ``referenceBundle``, as JSON.
    static func referenceStatement() throws -> [String: Any] {
        let bundle = try JSONSerialization.jsonObject(with: Data(referenceBundle.utf8)) as! [String: Any]
        let payload = Data(base64Encoded: (bundle["dsseEnvelope"] as! [String: Any])["payload"] as! String)!
        return try JSONSerialization.jsonObject(with: payload) as! [String: Any]
    }

    /// A key-signed bundle of any statement, made as the reference makes one (DSSE PAE, DER ECDSA).
    static func bundle(_ statement: [String: Any], key: P256.Signing.PrivateKey) throws -> [UInt8] {
        let payload = try JSONSerialization.data(withJSONObject: statement)
        let type = "application/vnd.in-toto+json"
        let pae = Data("DSSEv1 \(type.utf8.count) \(type) \(payload.count) ".utf8) + payload
        let hint = Digest.of(Array((key.publicKey.pemRepresentation + "\n").utf8)).hex
        let bundle: [String: Any] = [
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": ["publicKey": ["hint": hint], "tlogEntries": [] as [Any]],
            "dsseEnvelope": [
                "payload": payload.base64EncodedString(), "payloadType": type,
                "signatures": [["sig": try key.signature(for: pae).derRepresentation.base64EncodedString(), "keyid": ""]],
            ],
        ]
        return Array(try JSONSerialization.data(withJSONObject: bundle))
    }

    /// A fresh P-256 key pair as PEM files; returns (private, public) paths.
    func keyPair(_ cli: CLI, _ name: String) throws -> (String, String) {
        let key = P256.Signing.PrivateKey()
        let (privatePath, publicPath) = (cli.directory.file(name + ".key.pem"), cli.directory.file(name + ".pub.pem"))
        try writeFile(privatePath, Array(key.pemRepresentation.utf8))
        try writeFile(publicPath, Array((key.publicKey.pemRepresentation + "\n").utf8))
        return (privatePath, publicPath)
    }

    func referenceModel(_ cli: CLI) throws -> String {
        let model = cli.directory.file("reference")
        try FileManager.default.createDirectory(atPath: model + "/sub", withIntermediateDirectories: true)
        try writeFile(model + "/a.txt", Array("hello\n".utf8))
        try writeFile(model + "/sub/b.txt", Array("graft\n".utf8))
        try writeFile(model + "/model.sig", Array(Self.referenceBundle.utf8))
        try writeFile(cli.directory.file("reference.pub.pem"), Array(Self.referencePublicKey.utf8))
        return model
    }

    @Test("a bundle made by model_signing verifies; a changed, extra or missing file, another key, an edited payload or signature do not")
    func referenceKnownAnswer() throws {
        let cli = CLI()
        let model = try referenceModel(cli)
        let key = cli.directory.file("reference.pub.pem")
        let ok = try cli.run(["verify-signature", model, "--public-key", key], registry: false)
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("Verification succeeded") && ok.stdout.contains("2 files") && ok.stdout.contains("P-384"))
        let json = try JSONSerialization.jsonObject(
            with: Data(try cli.run(["verify-signature", model, "--public-key", key, "--json"], registry: false).stdout.utf8))
        #expect(
            (json as? [String: Any])?["root_digest"] as? String == "sha256:5fd416be17c7e223ef2f1d828cd53f283efc33e40fe2f8b2c5c8a0a7a1f2991d"
        )
        #expect((json as? [String: Any])?["key_hint"] as? String == "92a96ccf26feed80fc4c4cbe372b6745e832b0799475c39bee8f2859291fa39e")

        func refused(_ expect: String, key path: String? = nil) throws {
            let result = try cli.run(["verify-signature", model, "--public-key", path ?? key], registry: false)
            #expect(result.status == Self.signatureFailed, "\(expect): \(result.stdout) \(result.stderr)")
            #expect(result.stderr.contains(expect), "\(result.stderr)")
        }
        try writeFile(model + "/sub/b.txt", Array("graft!\n".utf8))
        try refused("changed file \"sub/b.txt\"")
        try writeFile(model + "/sub/b.txt", Array("graft\n".utf8))
        try writeFile(model + "/c.txt", Array("new".utf8))
        try refused("extra file \"c.txt\"")
        try FileManager.default.removeItem(atPath: model + "/c.txt")
        try FileManager.default.removeItem(atPath: model + "/a.txt")
        try refused("missing file \"a.txt\"")
        try writeFile(model + "/a.txt", Array("hello\n".utf8))
        // Git metadata is left out, as the reference leaves it out.
        try FileManager.default.createDirectory(atPath: model + "/.git", withIntermediateDirectories: true)
        try writeFile(model + "/.git/HEAD", Array("ref".utf8))
        #expect(try cli.run(["verify-signature", model, "--public-key", key], registry: false).status == 0)

        // A symlink is refused: the signature says allow_symlinks false.
        try FileManager.default.createSymbolicLink(atPath: model + "/link.txt", withDestinationPath: "a.txt")
        try refused("symlink \"link.txt\" (the signature does not allow symlinks)")
        try FileManager.default.removeItem(atPath: model + "/link.txt")
        let (_, otherKey) = try keyPair(cli, "other")
        try refused("key mismatch", key: otherKey)
        // The hint says which key signed: an edited hint is a mismatch; a bundle without a hint (older format) still verifies.
        let hintless = Self.referenceBundle.replacingOccurrences(
            of: "\"publicKey\": {\"hint\": \"92a96ccf26feed80fc4c4cbe372b6745e832b0799475c39bee8f2859291fa39e\"}, ", with: "")
        try writeFile(model + "/model.sig", Array(hintless.utf8))
        #expect(try cli.run(["verify-signature", model, "--public-key", key], registry: false).status == 0)
        try refused("the signature does not verify with this key", key: otherKey)
        // One character of the signature or of the payload changed.
        let badSignature = Self.referenceBundle.replacingOccurrences(of: "MGYCMQD1jun", with: "MGYCMQD1juN")
        try writeFile(model + "/model.sig", Array(badSignature.utf8))
        try refused("the signature does not verify with this key")
        let badPayload = Self.referenceBundle.replacingOccurrences(of: "ewogICJfdHlwZSI6", with: "ewogICJfdHlwZSI7")
        try writeFile(model + "/model.sig", Array(badPayload.utf8))
        let result = try cli.run(["verify-signature", model, "--public-key", key], registry: false)
        #expect(result.status == Self.signatureFailed, "\(result.stderr)")
        // A statement whose root digest is not its resources' (signed, so only that check can catch it).
        let signer = P256.Signing.PrivateKey()
        try writeFile(cli.directory.file("signer.pub.pem"), Array((signer.publicKey.pemRepresentation + "\n").utf8))
        let signerKey = cli.directory.file("signer.pub.pem")
        var statement = try Self.referenceStatement()
        statement["subject"] = [["name": "model", "digest": ["sha256": String(repeating: "0", count: 64)]]]
        try writeFile(model + "/model.sig", try Self.bundle(statement, key: signer))
        try refused("is not the digest of its resources", key: signerKey)
        // A bundle that lists no ignore_paths: git metadata and the signature file are still left
        // out, as `model_signing verify key` leaves them out (.git/HEAD is in the tree above).
        statement = try Self.referenceStatement()
        var predicate = statement["predicate"] as! [String: Any]
        predicate["serialization"] = ["method": "files", "hash_type": "sha256", "allow_symlinks": false]
        statement["predicate"] = predicate
        try writeFile(model + "/model.sig", try Self.bundle(statement, key: signer))
        let noIgnores = try cli.run(["verify-signature", model, "--public-key", signerKey], registry: false)
        #expect(noIgnores.status == 0, "\(noIgnores.stderr)")
        try writeFile(model + "/model.sig", Array("{\"mediaType\": \"something else\"}".utf8))
        try refused("Sigstore bundle v0.3")
        // Not a key at all: a usage problem (65), not a failed signature.
        try writeFile(cli.directory.file("junk.pem"), Array("not a key".utf8))
        #expect(try cli.run(["verify-signature", model, "--public-key", cli.directory.file("junk.pem")], registry: false).status == 65)
    }

    @Test("sign, export with model.sig, verify on disk and in the registry; damage is never signed; --no-signature")
    func signExportVerify() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        let source = cli.directory.file("model")
        try ModelDirectoryCLITests().writeModel(source, perShard: 3)
        #expect(try cli.run(["base", "add", source, "--name", "cnn"]).status == 0)
        #expect(try cli.run(["base", "add", try cli.base(), "--name", "one"]).status == 0)
        let (privateKey, publicKey) = try keyPair(cli, "signer")
        // Unsigned: verify-signature says so (82), export writes no model.sig.
        let unsigned = try cli.run(["verify-signature", "cnn@1", "--public-key", publicKey])
        #expect(unsigned.status == Self.signatureFailed && unsigned.stderr.contains("has no signature"))
        #expect(try cli.run(["sign", "cnn", "--key", publicKey]).status == 65, "a public key does not sign")

        let signed = try cli.json(["sign", "cnn", "--key", privateKey]) as? [String: Any]
        let info = signed?["signature"] as? [String: Any]
        #expect(info?["verified"] as? Bool == true && info?["origin"] as? String == "graft")
        let shown = try cli.json(["show", "cnn@1"]) as? [String: Any]
        let files = (shown?["files"] as? [Any])?.count ?? 0
        #expect((shown?["signature"] as? [String: Any])?["files"] as? Int == files && files > 3)
        #expect(try cli.run(["show", "cnn@1"]).stdout.contains("signature verified (key"))

        let out = cli.directory.file("out")
        let exported = try cli.run(["export", "cnn", "-o", out])
        #expect(exported.status == 0 && exported.stdout.contains("signature written to \(out)/model.sig"), "\(exported.stderr)")
        let onDisk = try cli.run(["verify-signature", out, "--public-key", publicKey], registry: false)
        #expect(onDisk.status == 0, "\(onDisk.stderr)")
        #expect(try cli.run(["verify-signature", "cnn@1", "--public-key", publicKey]).status == 0)
        // The tree signed is the tree exported: the signed root equals a signature made of the files on disk.
        #expect(onDisk.stdout.contains(String((info?["root_digest"] as? String ?? "x").dropFirst(7).prefix(12))))

        // One file: `.` is the file, FILE.sig beside it.
        #expect(try cli.run(["sign", "one", "--key", privateKey]).status == 0)
        let single = cli.directory.file("one.safetensors")
        #expect(try cli.run(["export", "one", "-o", single]).status == 0)
        #expect(FileManager.default.fileExists(atPath: single + ".sig"))
        #expect(try cli.run(["verify-signature", single, "--public-key", publicKey], registry: false).status == 0)
        let bare = cli.directory.file("bare")
        #expect(try cli.run(["export", "cnn", "-o", bare, "--no-signature"]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: bare + "/model.sig"))

        // A damaged blob is refused (exit 2), never signed.
        let blob = try #require(
            filesUnder(cli.registry + "/blobs").map { cli.registry + "/blobs/" + $0 }.max { a, b in
                ((try? FileManager.default.attributesOfItem(atPath: a)[.size] as? Int) ?? 0)
                    < ((try? FileManager.default.attributesOfItem(atPath: b)[.size] as? Int) ?? 0)
            })
        var bytes = try #require(FileManager.default.contents(atPath: blob))
        bytes[bytes.count / 2] ^= 0xFF
        try FileManager.default.removeItem(atPath: blob)
        try bytes.write(to: URL(fileURLWithPath: blob))
        #expect(try cli.run(["sign", "cnn", "--key", privateKey]).status == 2)
        #expect(try cli.run(["verify-signature", "cnn@1", "--public-key", publicKey]).status == 2)
    }

    @Test("base add --public-key verifies model.sig before anything is written; kept byte for byte; without a key kept unverified")
    func verifiedRegistration() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        let source = cli.directory.file("model")
        try ModelDirectoryCLITests().writeModel(source, perShard: 2)
        let (privateKey, publicKey) = try keyPair(cli, "publisher")
        let (_, otherKey) = try keyPair(cli, "other")
        // The publisher signs and ships: register, sign, export elsewhere.
        let publisher = CLI()
        #expect(try publisher.run(["init"]).status == 0)
        #expect(try publisher.run(["base", "add", source, "--name", "pub"]).status == 0)
        #expect(try publisher.run(["sign", "pub", "--key", privateKey]).status == 0)
        let shipped = cli.directory.file("shipped")
        #expect(try publisher.run(["export", "pub", "-o", shipped]).status == 0)
        let original = try #require(FileManager.default.contents(atPath: shipped + "/model.sig"))

        let wrong = try cli.run(["base", "add", shipped, "--name", "bad", "--public-key", otherKey])
        #expect(wrong.status == Self.signatureFailed && wrong.stderr.contains("key mismatch"), "\(wrong.stderr)")
        let unsignedDirectory = try cli.run(["base", "add", source, "--name", "bad", "--public-key", publicKey])
        #expect(unsignedDirectory.status == Self.signatureFailed && unsignedDirectory.stderr.contains("has no model.sig"))
        let fileWithKey = try cli.run(["base", "add", try cli.base(), "--name", "bad", "--public-key", publicKey])
        #expect(fileWithKey.status == 64, "--public-key is for a directory")
        #expect(try cli.run(["list"]).stdout.contains("bad") == false, "nothing was written")

        let added = try cli.run(["base", "add", shipped, "--name", "verified", "--public-key", publicKey])
        #expect(added.status == 0 && added.stdout.contains("model.sig verified with key "), "\(added.stderr)")
        let info = (try cli.json(["show", "verified@1"]) as? [String: Any])?["signature"] as? [String: Any]
        #expect(info?["verified"] as? Bool == true && info?["origin"] as? String == "imported")
        let again = cli.directory.file("again")
        #expect(try cli.run(["export", "verified", "-o", again]).status == 0)
        #expect(FileManager.default.contents(atPath: again + "/model.sig") == original, "the signature comes back byte for byte")
        #expect(ModelDirectoryCLITests().differences(shipped, again).isEmpty)
        // model.sig is the signature, not one of the checkpoint's files.
        let listed = ((try cli.json(["show", "verified@1"]) as? [String: Any])?["files"] as? [[String: Any]]) ?? []
        #expect(!listed.contains { $0["path"] as? String == "model.sig" } && !listed.isEmpty)

        let kept = try cli.run(["base", "add", shipped, "--name", "kept"])
        #expect(kept.status == 0 && kept.stdout.contains("signed, not verified"))
        #expect(try cli.run(["show", "kept@1"]).stdout.contains("signature signed, not verified"))

        // A file changed after signing: refused, nothing written.
        try writeFile(shipped + "/config.json", Array("{\"model_type\": \"evil\"}\n".utf8))
        let changed = try cli.run(["base", "add", shipped, "--name", "changed", "--public-key", publicKey])
        #expect(changed.status == Self.signatureFailed && changed.stderr.contains("changed file \"config.json\""), "\(changed.stderr)")
        #expect(try cli.run(["list"]).stdout.contains("changed") == false)
    }

    @Test("graft serve --require-signed-bases: unsigned or untrusted bases refused, signed ones verified; remote sign keeps the key local")
    func serverRequiresSignedBases() throws {
        let keys = CLI()
        let (privateKey, publicKey) = try keyPair(keys, "trusted")
        let (otherPrivate, _) = try keyPair(keys, "untrusted")
        let served = try Served(serverArguments: ["--require-signed-bases", publicKey])
        defer { _ = served.server.stop() }
        let source = served.cli.directory.file("model")
        try ModelDirectoryCLITests().writeModel(source, perShard: 2)
        let unsigned = try served.remote(["base", "add", source, "--name", "plain"], token: served.write)
        #expect(unsigned.status == Self.signatureFailed && unsigned.stderr.contains("has no signature"), "\(unsigned.stderr)")

        func signedCopy(_ key: String, _ name: String) throws -> String {
            let publisher = CLI()
            #expect(try publisher.run(["init"]).status == 0)
            #expect(try publisher.run(["base", "add", source, "--name", "pub"]).status == 0)
            #expect(try publisher.run(["sign", "pub", "--key", key]).status == 0)
            let out = served.cli.directory.file(name)
            #expect(try publisher.run(["export", "pub", "-o", out]).status == 0)
            return out
        }
        let untrusted = try served.remote(["base", "add", try signedCopy(otherPrivate, "untrusted"), "--name", "u"], token: served.write)
        #expect(untrusted.status == Self.signatureFailed && untrusted.stderr.contains("no key this server trusts"), "\(untrusted.stderr)")
        let trusted = try signedCopy(privateKey, "trusted")
        let added = try served.remote(["base", "add", trusted, "--name", "t", "--json"], token: served.write)
        #expect(added.status == 0, "\(added.stderr)")
        let verdict = (try JSONSerialization.jsonObject(with: Data(added.stdout.utf8)) as? [String: Any])?["signature"] as? [String: Any]
        #expect(verdict?["verified"] as? Bool == true, "the client reports the server's verdict: \(added.stdout)")
        let info = (try served.json(["show", "t@1"]) as? [String: Any])?["signature"] as? [String: Any]
        #expect(info?["verified"] as? Bool == true, "the server verified it with its trusted key")
        // A file changed after signing is refused by the server's own check, even without the client's.
        try writeFile(trusted + "/config.json", Array("{\"x\": 1}".utf8))
        let changed = try served.remote(["base", "add", trusted, "--name", "c"], token: served.write)
        #expect(changed.status == Self.signatureFailed && changed.stderr.contains("changed file \"config.json\""), "\(changed.stderr)")

        // Remote signing: the server lists digests, checks the signature, keeps it; read tokens cannot sign.
        #expect(try served.remote(["sign", "cnn", "--key", privateKey], token: served.read).status == 81)
        let remoteSign = try served.remote(["sign", "cnn", "--key", privateKey], token: served.write)
        #expect(remoteSign.status == 0, "\(remoteSign.stderr)")
        #expect(try served.remote(["verify-signature", "cnn@1", "--public-key", publicKey], token: served.read).status == 0)
        // The API's own answers: the bundle, the signed files, and a PUT that does not verify (422, each problem named).
        let bundle = try served.server.request("GET", "/v1/checkpoints/cnn@1/signature", token: served.read)
        #expect(bundle.status == 200 && bundle.text.contains("\"bundle\""))
        let listed = try served.server.request("GET", "/v1/checkpoints/cnn@1/signed-files", token: served.read)
        #expect(listed.status == 200 && listed.text.contains("\"name\":\".\""), "\(listed.text)")
        let unsignedBundle = try served.server.request("GET", "/v1/checkpoints/t@1/signature", token: served.read)
        #expect(unsignedBundle.status == 200)
        let wrong = try jsonBody(
            SignatureBundle(bundle: Data(Self.referenceBundle.utf8).base64EncodedString(), publicKey: Self.referencePublicKey))
        let put = try served.server.request("PUT", "/v1/checkpoints/cnn@1/signature", token: served.write, body: wrong)
        #expect(put.status == 422 && put.text.contains("\"signature\"") && put.text.contains("missing file"), "\(put.text)")
        // The web page says whether it is verified and by which key.
        let login = try served.server.request(
            "POST", "/login", headers: ["Content-Type": "application/x-www-form-urlencoded"], body: Array("token=\(served.read)".utf8))
        let session = String((login.headers["set-cookie"] ?? "").dropFirst("graft_session=".count).prefix { $0 != ";" })
        let page = try served.server.request("GET", "/checkpoints/t@1", headers: ["Cookie": "graft_session=\(session)"])
        #expect(page.status == 200 && page.text.contains("id=\"signature\">verified · key <code"), "\(page.text.prefix(300))")
        let local = served.cli.directory.file("cnn.safetensors")
        #expect(try served.remote(["export", "cnn", "-o", local], token: served.read).status == 0)
        #expect(try served.cli.run(["verify-signature", local, "--public-key", publicKey], registry: false).status == 0)
    }
}
