import Dispatch
import Foundation
import SafeTensors
import Synchronization

extension Registry {
    /// Checks that every checkpoint's blobs exist with the right size; with `readData`, rehashes
    /// every blob (two lanes in parallel).
    ///
    /// Each problem names the blob and every checkpoint that uses it. Nothing is repaired.
    public func verify(readData: Bool = false) async throws(GraftError) -> VerifyReport {
        let checkpointCount = try await metadata.checkpointCount()
        let (rows, dangling) = try await metadata.referencedBlobs()
        let blobs = self.blobs
        let found = Mutex<[(Digest, BlobProblem.Kind, String)]>([])
        let bytesRead = Atomic<Int>(0)
        for hex in dangling {
            if let digest = try? Digest(parsing: hex) { found.withLock { $0.append((digest, .missing, "no blob row")) } }
        }
        let lanes = readData ? 2 : 1
        await BlobTransfer.inLanes(lanes) { lane, buffer in
            for index in stride(from: lane, to: rows.count, by: lanes) {
                let row = rows[index]
                if let problem = blobs.check(
                    row.digest, length: row.length, inline: row.inline, readData: readData, buffer: buffer,
                    bytesRead: { bytesRead.add($0, ordering: .relaxed) })
                {
                    found.withLock { $0.append((row.digest, problem.kind, problem.detail)) }
                }
            }
        }
        // A blob `graft compact` replaced while it was read looks damaged for that read: each
        // one found is checked once more, whole, before it is reported (real damage stays).
        let suspects = found.withLock { $0 }
        var confirmed: [(Digest, BlobProblem.Kind, String)] = []
        let byDigest = Dictionary(rows.map { ($0.digest, $0) }, uniquingKeysWith: { first, _ in first })
        for suspect in suspects {
            guard let row = byDigest[suspect.0] else {
                confirmed.append(suspect)
                continue
            }
            let again = try await offload { () throws(GraftError) -> (kind: BlobProblem.Kind, detail: String)? in
                let buffer = UnsafeMutableRawPointer.allocate(byteCount: BlobTransfer.chunkSize, alignment: 64)
                defer { buffer.deallocate() }
                return blobs.check(row.digest, length: row.length, inline: row.inline, readData: readData, buffer: buffer)
            }
            if let again { confirmed.append((row.digest, again.kind, again.detail)) }
        }
        var problems: [BlobProblem] = []
        var damaged = Set<String>()
        for (digest, kind, detail) in confirmed.sorted(by: { $0.0 < $1.0 }) {
            let users = try await metadata.users(of: digest)
            damaged.formUnion(users)
            problems.append(BlobProblem(digest: digest, kind: kind, detail: detail, checkpoints: users))
        }
        var report = VerifyReport(
            checkpoints: checkpointCount, blobs: rows.count, readData: readData, bytesRead: bytesRead.load(ordering: .relaxed),
            problems: problems, damagedCheckpoints: damaged.sorted(by: numericAwareLess))
        let known = try await metadata.knownBlobDigests()
        (report.strayFiles, report.orphanFiles) = strayAndOrphanFiles(known: known)
        report.lineageProblems = try await metadata.derivedDataProblems()
        return report
    }

    /// What the blob store holds beyond the blob rows: stray entries (not blobs: damage) and
    /// orphans (well-formed blobs no row knows: an interrupted import's, gc's job).
    func strayAndOrphanFiles(known: Set<String>) -> (stray: [String], orphans: Int) {
        let inventory = blobs.store.inventory()
        return (inventory.stray, inventory.blobs.filter { !known.contains($0.hex) }.count)
    }

    /// Totals over the registry: models, checkpoints, logical and physical bytes.
    public func stats() async throws(GraftError) -> RegistryStats {
        try await metadata.stats()
    }
}
