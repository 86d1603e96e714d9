import Foundation
import GraftS3
import GraftTestSupport
import SafeTensors
import Testing

@testable import Graft
@testable import GraftCore
@testable import GraftLocal
@testable import GraftSQLite

/// The blob stores every registry may run on. The conformance tests below take each; a new
/// store joins by adding a case here, and the tests run unchanged.
enum BlobStoreKind: String, CaseIterable, CustomStringConvertible {
    case local
    /// `S3BlobStore` on moto's S3 server (on loopback, one per store, stopped with it).
    case s3
    var description: String { rawValue }

    /// A fresh, empty store, and what keeps it alive (its directory, its server).
    func make() throws -> (any BlobStore, StoreHandle) {
        let directory = TemporaryDirectory()
        switch self {
        case .local:
            let layout = RegistryLayout(root: directory.file("store"))
            for path in [layout.root, layout.blobs, layout.sha256, layout.tmp] {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            }
            return (LocalBlobStore(layout: layout), StoreHandle(directory: directory, server: nil))
        case .s3:
            try FileManager.default.createDirectory(atPath: directory.file("store"), withIntermediateDirectories: true)
            let server = try MotoServer()
            let client = S3Client(
                location: S3Location(bucket: "graft-conformance", prefix: "team/registry", endpoint: server.url),
                credentials: AWSCredentials(accessKeyID: "graft-test", secretAccessKey: "graft-test-secret"))
            let store = try S3BlobStore(client: client, spool: directory.file("spool"))
            try store.createBucket()
            return (store, StoreHandle(directory: directory, server: server))
        }
    }
}

/// Keeps a store's directory and server alive while a test uses it.
final class StoreHandle: Sendable {
    let directory: TemporaryDirectory
    let server: MotoServer?
    init(directory: TemporaryDirectory, server: MotoServer?) { (self.directory, self.server) = (directory, server) }
    func file(_ name: String) -> String { directory.file(name) }
    deinit { server?.stop() }
}

private func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var generator = SeededGenerator(seed: seed)
    return randomBytes(count, using: &generator)
}

/// Writes `data` in chunks of `chunk` bytes and commits it under its SHA-256.
@discardableResult
private func put(_ store: any BlobStore, _ data: [UInt8], chunk: Int = 1000) throws -> (Digest, Bool) {
    let write = try store.beginWrite()
    var offset = 0
    while offset < data.count {
        let end = min(offset + chunk, data.count)
        try data[offset..<end].withUnsafeBytes { buffer in try write.write(buffer) }
        offset = end
    }
    let digest = Digest.of(data)
    return (digest, try write.commit(as: digest))
}

@Suite("Blob store conformance")
struct BlobStoreConformanceTests {
    @Test(
        "a committed blob is contained, has its length, reads back exactly at any offset, and maps whole", arguments: BlobStoreKind.allCases
    )
    func roundTrip(_ kind: BlobStoreKind) throws {
        let (store, directory) = try kind.make()
        defer { _ = directory }
        let data = bytes(10_000, seed: 1)
        let (digest, wrote) = try put(store, data, chunk: 777)
        #expect(wrote)
        #expect(store.contains(digest, claim: false) && store.contains(digest, claim: true))
        #expect(try store.length(of: digest) == data.count)
        for (offset, count) in [(0, 10_000), (0, 1), (9_999, 1), (1234, 4321)] {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 16)
            defer { buffer.deallocate() }
            try store.read(digest, at: offset, count: count, into: buffer)
            #expect(
                Array(UnsafeRawBufferPointer(start: buffer, count: count)) == Array(data[offset..<(offset + count)]), "\(offset)+\(count)")
        }
        let mapped = try store.map(digest, length: data.count)
        #expect(Array(mapped.bytes) == data)
        #expect(store.inventory().blobs == [digest] && store.inventory().stray.isEmpty)
        #expect(store.temporaryItems().isEmpty, "nothing temporary left after a commit")
        try store.flush([digest])
        #expect(try #require(store.age(of: digest)) < 600)
    }

    @Test("the same bytes again store nothing new; a dropped or aborted write leaves nothing", arguments: BlobStoreKind.allCases)
    func dedupAndAbort(_ kind: BlobStoreKind) throws {
        let (store, directory) = try kind.make()
        defer { _ = directory }
        let data = bytes(5000, seed: 2)
        #expect(try put(store, data).1)
        #expect(try put(store, data).1 == false, "present already")
        #expect(store.inventory().blobs.count == 1)
        let aborted = try store.beginWrite()
        try bytes(100, seed: 3).withUnsafeBytes { try aborted.write($0) }
        #expect(store.temporaryItems().count == 1, "an unfinished write is temporary")
        aborted.abort()
        do {
            let dropped = try store.beginWrite()
            try bytes(100, seed: 4).withUnsafeBytes { try dropped.write($0) }
        }
        #expect(store.temporaryItems().isEmpty)
        #expect(store.inventory().blobs.count == 1)
    }

    @Test("a missing blob: not contained, no length, no age; read and map refuse it as damage", arguments: BlobStoreKind.allCases)
    func missing(_ kind: BlobStoreKind) async throws {
        let (store, directory) = try kind.make()
        defer { _ = directory }
        let digest = Digest.of(Array("absent".utf8))
        #expect(!store.contains(digest, claim: true))
        #expect(try store.length(of: digest) == nil && store.age(of: digest) == nil)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
        defer { buffer.deallocate() }
        #expect { try store.read(digest, at: 0, count: 8, into: buffer) } throws: { caseName($0) == "damagedBlob" }
        #expect { try store.map(digest, length: 8) } throws: { caseName($0) == "damagedBlob" }
        let (stored, _) = try put(store, bytes(64, seed: 5))
        #expect { try store.map(stored, length: 65) } throws: { caseName($0) == "damagedBlob" }
        store.remove(stored)
        store.remove(stored)
        #expect(!store.contains(stored, claim: false) && store.inventory().blobs.isEmpty)
    }

    @Test("temporary items are listed with their age and removed by name", arguments: BlobStoreKind.allCases)
    func temporary(_ kind: BlobStoreKind) throws {
        let (store, directory) = try kind.make()
        defer { _ = directory }
        let write = try store.beginWrite()
        try bytes(10, seed: 6).withUnsafeBytes { try write.write($0) }
        let items = store.temporaryItems()
        #expect(items.count == 1 && items.allSatisfy { $0.age >= 0 && $0.age < 600 })
        for item in items { store.removeTemporary(item.name) }
        #expect(store.temporaryItems().isEmpty)
        write.abort()
    }
}

@Suite("Streamed blob uploads")
struct BlobUploadTests {
    /// Feeds `data` to `put` in chunks of `chunk` bytes.
    private func upload(_ transfer: BlobTransfer, _ data: [UInt8], as digest: Digest, length: Int, chunk: Int = 999) throws -> Bool {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: BlobTransfer.chunkSize, alignment: 64)
        defer { buffer.deallocate() }
        var offset = 0
        return try transfer.put(expected: digest, length: length, buffer: buffer) { target, capacity throws(GraftError) in
            let count = min(chunk, capacity, data.count - offset)
            data[offset..<(offset + count)].withUnsafeBytes { target.copyMemory(from: $0.baseAddress!, byteCount: count) }
            offset += count
            return count
        }
    }

    @Test(
        "an upload is kept only when its bytes match the announced digest and length; otherwise nothing is",
        arguments: BlobStoreKind.allCases)
    func verified(_ kind: BlobStoreKind) throws {
        let (store, directory) = try kind.make()
        defer { _ = directory }
        let transfer = BlobTransfer(store: store, inlineThreshold: 4096)
        let data = bytes(50_000, seed: 7)
        let digest = Digest.of(data)
        var wrong = data
        wrong[25_000] ^= 1
        for (label, payload, length) in [
            ("a flipped byte", wrong, data.count), ("a byte short", Array(data.dropLast()), data.count),
            ("a byte long", data + [0], data.count),
        ] {
            #expect { try upload(transfer, payload, as: digest, length: length) } throws: { caseName($0) == "blobMismatch" }
            #expect(!store.contains(digest, claim: false) && store.inventory().blobs.isEmpty, "\(label): nothing kept")
            #expect(store.temporaryItems().isEmpty, "\(label): no temporary left")
        }
        #expect(try upload(transfer, data, as: digest, length: data.count))
        let mapped = try store.map(digest, length: data.count)
        #expect(Array(mapped.bytes) == data)
        #expect(try upload(transfer, data, as: digest, length: data.count) == false, "present already: claimed, not stored again")
        #expect(store.inventory().blobs == [digest] && store.temporaryItems().isEmpty)
    }
}

@Suite("Blob store conformance: stored encodings")
struct EncodedBlobConformanceTests {
    /// Replaces a stored raw blob with `encoded` through the store, as `graft compact` does.
    private func replace(_ store: any BlobStore, _ digest: Digest, with encoded: [UInt8]) throws {
        let write = try store.beginWrite()
        try encoded.withUnsafeBytes { try write.write($0) }
        try write.replace(digest)
        try store.flush([digest])
    }

    @Test(
        "a blob replaced by its encoding (and a delta by its XOR encoding) reads back raw through every path, or refuses as damage",
        arguments: BlobStoreKind.allCases)
    func encodedReads(_ kind: BlobStoreKind) throws {
        let (store, directory) = try kind.make()
        defer { _ = directory }
        let transfer = BlobTransfer(store: store, inlineThreshold: 4096)
        let base = weightLike(EncodedLayout.chunkSize / 4 + 1000, width: 4, seed: 21)
        var tuned = base
        for index in stride(from: 0, to: tuned.count, by: 40) { tuned[index] ^= 0x5A }
        let (baseDigest, _) = try put(store, base, chunk: 1 << 20)
        let (tunedDigest, _) = try put(store, tuned, chunk: 1 << 20)
        let planes = base.withUnsafeBytes { EncodedLayout.encode($0, width: 4, base: nil) }
        let delta = tuned.withUnsafeBytes { raw in base.withUnsafeBytes { EncodedLayout.encode(raw, width: 4, base: (baseDigest, $0)) } }
        try replace(store, baseDigest, with: planes)
        try replace(store, tunedDigest, with: delta)
        #expect(try store.length(of: baseDigest) == planes.count)
        #expect(try store.length(of: tunedDigest) == delta.count)
        #expect(store.temporaryItems().isEmpty && Set(store.inventory().blobs) == [baseDigest, tunedDigest])
        for (digest, data, codec) in [(baseDigest, base, BlobCodec.bgZstd), (tunedDigest, tuned, .xorBgZstd)] {
            #expect(try transfer.form(digest, length: data.count).codec == codec)
            #expect(try transfer.rawLength(of: digest) == data.count)
            #expect(try transfer.bytes(digest, length: data.count, inline: nil) == data)
            let mapped = try transfer.map(digest, length: data.count)  // held while its bytes are read
            #expect(Array(mapped.bytes) == data)
            // Ranged reads across a chunk boundary, as a download with Range or openCheckpoint makes.
            let reader = try transfer.reader(digest, length: data.count)
            for (offset, count) in [(0, 10), (EncodedLayout.chunkSize - 5, 10), (data.count - 3, 3)] {
                var out = [UInt8](repeating: 0, count: count)
                try out.withUnsafeMutableBytes { try reader.read(at: offset, count: count, into: $0.baseAddress!) }
                #expect(out == Array(data[offset..<(offset + count)]), "\(codec) \(offset)+\(count)")
            }
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: BlobTransfer.chunkSize, alignment: 64)
            defer { buffer.deallocate() }
            #expect(transfer.check(digest, length: data.count, inline: nil, readData: true, buffer: buffer) == nil)
        }
        // The delta's base gone: the delta cannot be read, and says so as damage.
        store.remove(baseDigest)
        #expect { try transfer.bytes(tunedDigest, length: tuned.count, inline: nil) } throws: { caseName($0) == "damagedBlob" }
        // An encoding of other bytes (a wrong length claimed) is not taken for the blob.
        #expect { try transfer.form(tunedDigest, length: tuned.count + 4) } throws: { caseName($0) == "damagedBlob" }
    }
}
