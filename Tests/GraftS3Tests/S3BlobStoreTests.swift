import Foundation
import Graft
import GraftTestSupport
import Testing

@testable import GraftS3

/// What the blob-store conformance suite (GraftTests) does not reach: large blobs as multipart
/// uploads, keys derived from digests only, and incomplete uploads as temporary items.
@Suite("S3 blob store: multipart blobs, keys, interrupted uploads", .serialized)
struct S3BlobStoreTests {
    func store(_ server: MotoServer, _ directory: TemporaryDirectory) throws -> S3BlobStore {
        let client = S3Client(
            location: S3Location(bucket: "graft-blobs", prefix: "r", endpoint: server.url),
            credentials: AWSCredentials(accessKeyID: "graft-test", secretAccessKey: "graft-test-secret"))
        // A 12 MiB threshold and S3's least part size keep the test small; the defaults are 64 and 16 MiB.
        let store = try S3BlobStore(client: client, spool: directory.file("spool"), multipartThreshold: 12 << 20, partSize: 5 << 20)
        try store.createBucket()
        return store
    }

    @Test("a blob over the threshold goes up in parts and reads back exactly across their boundaries; its key is its digest")
    func multipart() async throws {
        let server = try MotoServer()
        defer { server.stop() }
        let directory = TemporaryDirectory()
        let store = try store(server, directory)
        var generator = SeededGenerator(seed: 9)
        let data = randomBytes((12 << 20) + 12345, using: &generator)
        let write = try store.beginWrite()
        for start in stride(from: 0, to: data.count, by: 4 << 20) {
            try data[start..<min(start + (4 << 20), data.count)].withUnsafeBytes { try write.write($0) }
        }
        let digest = Digest.of(data)
        #expect(try write.commit(as: digest))
        #expect(try store.length(of: digest) == data.count)
        #expect(store.inventory().blobs == [digest])
        #expect(
            try await store.client.head("r/blobs/sha256/\(digest.hex.prefix(2))/\(digest.hex)") == data.count, "keys come from digests only"
        )
        let boundary = 5 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
        defer { buffer.deallocate() }
        try store.read(digest, at: boundary - 32, count: 64, into: buffer)
        #expect(Array(UnsafeRawBufferPointer(start: buffer, count: 64)) == Array(data[(boundary - 32)..<(boundary + 32)]))
        let mapped = try store.map(digest, length: data.count)
        #expect(Array(mapped.bytes) == data)
        #expect(store.temporaryItems().isEmpty, "nothing left in the spool or in S3")
        // The same bytes again: claimed, not sent again.
        let again = try store.beginWrite()
        try data.withUnsafeBytes { try again.write($0) }
        #expect(try again.commit(as: digest) == false)
        #expect(try await store.client.head("r/claims/\(digest.hex)") == 0, "the claim is recorded beside the blob")
        #expect(try #require(store.age(of: digest)) < 60)
        // A read that runs past the end is damage, not a short buffer.
        #expect { try store.read(digest, at: data.count - 10, count: 20, into: buffer) } throws: { error in
            if case .damagedBlob = error as? GraftError { return true }
            return false
        }
    }

    @Test("an interrupted multipart upload is a temporary item, removed (aborted) by name; stray keys are reported")
    func interrupted() async throws {
        let server = try MotoServer()
        defer { server.stop() }
        let directory = TemporaryDirectory()
        let store = try store(server, directory)
        let key = "r/blobs/sha256/ab/" + String(repeating: "ab", count: 32)
        let upload = try await store.client.createMultipartUpload(key)
        _ = try await store.client.uploadPart(key, uploadID: upload, number: 1, body: [1, 2, 3])
        let items = store.temporaryItems()
        #expect(items.map(\.name) == ["upload/\(upload)/\(key)"])
        // Its age is read from the listing's `Initiated` (moto reports a fixed 2010-11-10T20:48:33Z for every upload).
        let initiated = ISO8601DateFormatter().date(from: "2010-11-10T20:48:33Z")!
        #expect(abs(items[0].age - Date().timeIntervalSince(initiated)) < 600)
        store.removeTemporary(items[0].name)
        #expect(store.temporaryItems().isEmpty)
        // A name that is not one of ours is ignored, never turned into a request elsewhere.
        store.removeTemporary("upload/x/elsewhere/key")
        store.removeTemporary("spool/../../etc")
        try await store.client.put("r/blobs/notes.txt", body: Array("hello".utf8))
        try await store.client.put("r/blobs/sha256/zz/" + String(repeating: "0", count: 64), body: [0])
        #expect(store.inventory().stray == ["blobs/notes.txt", "blobs/sha256/zz/" + String(repeating: "0", count: 64)])
        #expect(store.inventory().blobs.isEmpty)
    }
}
