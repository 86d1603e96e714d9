import Foundation
import GraftTestSupport
import SafeTensors
import Testing

@testable import Graft
@testable import GraftCore

/// The library side of `graft serve`'s uploads and tokens, without HTTP.
@Suite("Upload protocol and tokens")
struct UploadProtocolTests {
    /// Sends every missing blob of `plan` from `input`, as a client would.
    func send(_ plan: UploadPlan, from input: some SafeTensorsInput, to registry: Registry) throws {
        for blob in plan.missing {
            let info = input.header.tensors.first { $0.name == blob.name }!
            let upload = try registry.beginBlobUpload(expected: blob.digest, length: blob.length)
            try input.data(of: info).withUnsafeBytes { raw in try Result { () throws(GraftError) in try upload.append(raw) }.get() }
            _ = try upload.finish()
        }
    }

    @Test(
        "propose, send the missing blobs, commit: the checkpoint a local import makes (same digest and bytes), only changed blobs missing")
    func roundTrip() async throws {
        let local = try await TestRegistry()
        let remote = try await TestRegistry()
        let basePath = try local.writeBase()
        let base = try SafeTensorsReader(path: basePath)
        let name = try ModelName("cnn")
        // A base: every blob is missing.
        let proposal = try UploadProposal.of(base)
        let plan = try await remote.registry.planUpload(to: name, base: true, proposal)
        #expect(plan.missing.count == base.header.tensors.filter { $0.byteCount >= plan.inlineBelow }.count)
        #expect(plan.bytesMissing == plan.missing.reduce(0) { $0 + $1.length })
        try send(plan, from: base, to: remote.registry)
        let uploaded = try await remote.registry.commitUpload(
            to: name, base: true, UploadCommit(proposal: proposal, provenance: Provenance(license: "mit")))
        let imported = try await local.registry.addBase(name: name, file: basePath)
        #expect(uploaded.digest == imported.digest)
        #expect(uploaded.checkpoint == "cnn@1")
        // A student that changes one tensor: only that blob is missing.
        var tensors = baseTensors(seed: 1)
        let changed = tensors.firstIndex { $0.bytes.count >= 4096 && !$0.name.hasPrefix("features.0") }!
        tensors[changed].bytes[0] ^= 1
        let tuned = try SafeTensorsMemory(tensors, metadata: ["format": "pt"])
        for registry in [local.registry, remote.registry] {
            _ = try await registry.createStudent(
                name: try ModelName("ft"), from: .number(name, 1), manifest: .rules([], freezeThrough: nil))
        }
        let studentProposal = try UploadProposal.of(tuned)
        let studentPlan = try await remote.registry.planUpload(to: try ModelName("ft"), base: false, studentProposal)
        #expect(studentPlan.missing.map(\.name) == [tensors[changed].name])
        // Committing before the blob is there is refused whole, naming it.
        let missing = await expectGraftError("blobsMissing") {
            try await remote.registry.commitUpload(to: try ModelName("ft"), base: false, UploadCommit(proposal: studentProposal))
        }
        if case .blobsMissing(let digests) = missing { #expect(digests == studentPlan.missing.map(\.digest)) }
        #expect(try await remote.registry.checkpoints(of: try ModelName("ft")).isEmpty)
        try send(studentPlan, from: tuned, to: remote.registry)
        let committed = try await remote.registry.commitUpload(
            to: try ModelName("ft"), base: false, UploadCommit(proposal: studentProposal, step: 3, metrics: ["acc": 0.5], split: "val"))
        let local2 = try await local.registry.addCheckpoint(
            model: try ModelName("ft"), input: tuned, step: 3, metrics: [try MetricAssignment(name: "acc", value: 0.5)], split: "val")
        #expect(committed.digest == local2.digest)
        #expect(try await remote.registry.metrics(.number(try ModelName("ft"), 1)).checkpoints.first?.metrics.first?.value == 0.5)
        #expect(try await remote.registry.verify(readData: true).problems.isEmpty)
        // A student that re-initialises a tensor records it as `new`, remotely as locally.
        let reinit = try ModelName("re")
        for registry in [local.registry, remote.registry] {
            _ = try await registry.createStudent(
                name: reinit, from: .number(name, 1), manifest: .rules([ManifestRule(.reinit, tensors[changed].name)], freezeThrough: nil))
        }
        let reinitProposal = try UploadProposal.of(tuned)
        let remoteNew = try await remote.registry.commitUpload(to: reinit, base: false, UploadCommit(proposal: reinitProposal)).newTensors
        let localNew = try await local.registry.addCheckpoint(model: reinit, input: tuned).newTensors
        #expect(remoteNew == [tensors[changed].name] && remoteNew == localNew)
    }

    @Test("a proposal is checked against its header, the model and the manifest before anything is stored")
    func refusals() async throws {
        let test = try await TestRegistry()
        let basePath = try test.writeBase()
        let name = try ModelName("cnn")
        _ = try await test.registry.addBase(name: name, file: basePath)
        let base = try SafeTensorsReader(path: basePath)
        let proposal = try UploadProposal.of(base)
        _ = await expectGraftError("modelExists") { try await test.registry.planUpload(to: name, base: true, proposal) }
        _ = await expectGraftError("modelNotFound") {
            try await test.registry.planUpload(to: try ModelName("nobody"), base: false, proposal)
        }
        var lying = proposal
        lying.tensors[1].length += 4
        _ = await expectGraftError("invalidUpload") { try await test.registry.planUpload(to: try ModelName("x"), base: true, lying) }
        var twice = proposal
        twice.tensors.append(twice.tensors[0])
        _ = await expectGraftError("invalidUpload") { try await test.registry.planUpload(to: try ModelName("x"), base: true, twice) }
        var short = proposal
        short.tensors.removeLast()
        _ = await expectGraftError("invalidUpload") { try await test.registry.planUpload(to: try ModelName("x"), base: true, short) }
        var garbage = proposal
        garbage.header = "not base64!"
        _ = await expectGraftError("invalidUpload") { try await test.registry.planUpload(to: try ModelName("x"), base: true, garbage) }
        var badData = proposal
        badData.tensors[0].data = Data([1, 2, 3]).base64EncodedString()
        _ = await expectGraftError("invalidUpload") {
            try await test.registry.commitUpload(to: try ModelName("x"), base: true, UploadCommit(proposal: badData))
        }
        // Inline data of the right length whose bytes are not the proposed digest's.
        var swapped = proposal
        let small = try #require(swapped.tensors.firstIndex { $0.data != nil })
        let encoded = try #require(swapped.tensors[small].data)
        var smallBytes = [UInt8](try #require(Data(base64Encoded: encoded)))
        smallBytes[smallBytes.count - 1] ^= 0x01
        swapped.tensors[small].data = Data(smallBytes).base64EncodedString()
        let mismatch = await expectGraftError("invalidUpload") {
            try await test.registry.commitUpload(to: try ModelName("x"), base: true, UploadCommit(proposal: swapped))
        }
        #expect(mismatch.map { "\($0)" }?.contains(swapped.tensors[small].name) == true, "the refusal names the tensor")
        _ = await expectGraftError("modelNotFound") { try await test.registry.model(try ModelName("x")) }
        // A frozen tensor's digest changed, and a dropped one present: every offending tensor named.
        let student = try ModelName("ft")
        _ = try await test.registry.createStudent(
            name: student, from: .number(name, 1),
            manifest: .rules([ManifestRule(.freeze, "features"), ManifestRule(.drop, "classifier.bias")], freezeThrough: nil))
        var drifted = proposal
        let frozen = drifted.tensors.firstIndex { $0.name.hasPrefix("features") && $0.length >= 4096 }!
        drifted.tensors[frozen].digest = Digest.of([9])
        let violation = await expectGraftError("manifestViolation") {
            try await test.registry.planUpload(to: student, base: false, drifted)
        }
        if case .manifestViolation(_, let violations) = violation {
            #expect(violations.map(\.rule) == ["dropped_present", "changed"], "header rules first, then the digests")
            #expect(violations.map(\.tensor) == ["classifier.bias", drifted.tensors[frozen].name])
            #expect(violations.last?.found == Digest.of([9]).description)
        }
        #expect(try await test.registry.checkpoints(of: student).isEmpty)
    }

    @Test("a blob upload keeps nothing unless its bytes number and hash as announced")
    func blobUpload() async throws {
        let test = try await TestRegistry()
        let bytes = [UInt8](repeating: 7, count: 10_000)
        let digest = Digest.of(bytes)
        func put(_ data: [UInt8]) throws -> Bool {
            let upload = try test.registry.beginBlobUpload(expected: digest, length: bytes.count)
            try data.withUnsafeBytes { raw in try Result { () throws(GraftError) in try upload.append(raw) }.get() }
            return try upload.finish()
        }
        _ = await expectGraftError("blobMismatch") { try put(Array(bytes.dropLast())) }
        _ = await expectGraftError("blobMismatch") { try put(bytes + [7]) }
        _ = await expectGraftError("blobMismatch") { try put(bytes.enumerated().map { $0 == 5 ? 0 : $1 }) }
        #expect(try test.registry.blobLength(digest) == nil)
        #expect(filesUnder(test.root + "/tmp").isEmpty, "an abandoned upload leaves no temporary file")
        do {
            let abandoned = try test.registry.beginBlobUpload(expected: digest, length: bytes.count)
            try bytes.prefix(100).withUnsafeBytes { raw in try Result { () throws(GraftError) in try abandoned.append(raw) }.get() }
        }
        #expect(filesUnder(test.root + "/tmp").isEmpty, "an upload dropped mid-way leaves no temporary file")
        #expect(try put(bytes))
        #expect(try test.registry.blobLength(digest) == bytes.count)
        #expect(try put(bytes) == false, "sent again: counted, discarded, still stored")
    }

    @Test("tokens: the secret shown once and stored hashed; scopes ordered; a confined token covers only its pattern; revoked tokens fail")
    func tokens() async throws {
        let test = try await TestRegistry()
        let created = try await test.registry.createToken(name: "ci", scope: .write, models: "sweep-*")
        #expect(created.token.hasPrefix("graft_") && created.token.count == 49)
        let other = try await test.registry.createToken(name: "ops", scope: .admin)
        #expect(other.token != created.token)
        _ = await expectGraftError("tokenExists") { try await test.registry.createToken(name: "ci", scope: .read) }
        _ = await expectGraftError("invalidName") { try await test.registry.createToken(name: "../x", scope: .read) }
        let found = try #require(try await test.registry.authenticate(created.token))
        #expect(found.name == "ci" && found.scope == .write && found.models == "sweep-*")
        let (sweep, cnn) = (try ModelName("sweep-3"), try ModelName("cnn"))
        #expect(found.covers(sweep) && !found.covers(cnn))
        #expect(TokenScope.read < .write && TokenScope.write < .admin)
        #expect(try await test.registry.authenticate("graft_" + String(created.token.dropFirst(6).reversed())) == nil)
        #expect(try await test.registry.authenticate("") == nil)
        #expect(try await test.registry.authenticate(created.token + "x") == nil)
        #expect(try test.rows("SELECT count(*) FROM tokens WHERE secret_hash = '\(created.token)' OR name = '\(created.token)'") == 0)
        #expect(try await test.registry.tokens().map(\.name) == ["ci", "ops"])
        try await test.registry.revokeToken("ci")
        #expect(try await test.registry.authenticate(created.token) == nil)
        #expect(try await test.registry.tokens().map(\.name) == ["ops"])
        _ = await expectGraftError("tokenNotFound") { try await test.registry.revokeToken("ci") }
        // The name is free again; the old secret stays dead.
        let renewed = try await test.registry.createToken(name: "ci", scope: .read)
        #expect(try await test.registry.authenticate(renewed.token)?.scope == .read)
        #expect(try await test.registry.authenticate(created.token) == nil)
    }

    @Test("every error kind maps to one exit code and one HTTP status, and errors keep their kind across the wire")
    func errorKinds() {
        #expect(GraftError.manifestViolation(model: ModelName(trusted: "x"), violations: []).kind.httpStatus == 409)
        #expect(GraftError.manifestViolation(model: ModelName(trusted: "x"), violations: []).kind.exitCode == 79)
        #expect(GraftError.modelNotFound(ModelName(trusted: "x"), suggestions: []).kind.httpStatus == 404)
        #expect(GraftError.unauthorized("x").kind.httpStatus == 401 && GraftError.forbidden("x").kind.httpStatus == 403)
        #expect(GraftError.blobMismatch(Digest.of([1]), reason: "").kind.httpStatus == 400)
        #expect(GraftError.busy.kind.httpStatus == 503)
        for kind in ErrorKind.allCases {
            #expect(GraftError.remote(kind, message: "m", details: []).kind == kind)
            #expect((400..<600).contains(kind.httpStatus))
        }
    }
}
