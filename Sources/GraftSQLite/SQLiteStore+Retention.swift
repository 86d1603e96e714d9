import GRDB
package import GraftCore
import GraftLocal

// Removal: gc, checkpoint and model removal, pruning. Blobs nothing references any more are
// removed from the blob store inside the write transaction, under SQLite's write lock — the
// lock every commit re-checks its blobs under (see insertBlobs).
extension SQLiteMetadataStore {
    package func collectGarbage(blobs store: any BlobStore, grace: Double, dryRun: Bool) async throws(GraftError) -> GCReport {
        // Candidates are listed outside the lock (a walk can be long) and re-checked under it.
        let candidates = store.inventory().blobs
        let temporaryItems = store.temporaryItems()
        return try await write { db -> GCReport in
            func old(_ digest: Digest) -> Bool? { store.age(of: digest).map { $0 >= grace } }
            var report = GCReport(
                dryRun: dryRun, blobsRemoved: 0, orphanFilesRemoved: 0, temporaryFilesRemoved: 0, bytesFreed: 0, keptForGrace: 0)
            // Twice at most: a delta's base (never itself a delta) is free once the delta is gone.
            for pass in 0..<2 {
                let unreferenced = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT digest, byte_length, inline_data IS NOT NULL AS inline, coalesce(stored_length, byte_length) AS stored,\
                         base_digest FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM blob_references t WHERE t.blob_digest = b.digest)
                        """)
                let freed = try Self.dropBlobs(db, unreferenced, store: store, dryRun: dryRun, isOld: old)
                report.blobsRemoved += freed.count
                report.bytesFreed += freed.bytes
                if pass == 0 { report.keptForGrace = freed.kept }
                if dryRun || freed.bases.isEmpty { break }
            }
            // Exposure's drift cache: rows of blobs now gone would never be read again.
            if !dryRun {
                try db.execute(
                    sql: """
                        DELETE FROM tensor_drift WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE digest = ancestor_digest)
                         OR NOT EXISTS (SELECT 1 FROM blobs WHERE digest = descendant_digest)
                        """)
            }
            let known = try db.cachedStatement(sql: "SELECT 1 FROM blobs WHERE digest = ?")
            var failure: (any Error)?
            report.sweep(
                candidates: candidates,
                isKnown: { digest in
                    do { return try Bool.fetchOne(known, arguments: [digest.hex]) != nil } catch {
                        failure = failure ?? error
                        return true  // unknown whether it is known: kept
                    }
                }, temporaryItems: temporaryItems, store: store, grace: grace)
            if let failure { throw failure }
            return report
        }
    }

    /// Removes blob rows (and stored blobs) given as rows of (digest, byte_length, inline,
    /// stored, base_digest); stored ones only when `isOld` says so. Runs inside a write
    /// transaction. Returns the bases of the deltas removed (they may be free now).
    static func dropBlobs(
        _ db: Database, _ rows: [Row], store: any BlobStore, dryRun: Bool, isOld: (Digest) -> Bool? = { _ in true }
    ) throws -> (count: Int, bytes: Int, kept: Int, bases: Set<String>) {
        var count = 0, bytes = 0, kept = 0
        var bases: Set<String> = []
        let delete = try db.cachedStatement(sql: "DELETE FROM blobs WHERE digest = ?")
        for row in rows {
            let hex: String = row["digest"]
            guard let digest = try? Digest(parsing: hex) else { continue }
            let inline: Bool = row["inline"]
            if !inline, isOld(digest) == false {
                kept += 1
                continue
            }
            count += 1
            bytes += row["stored"] as Int
            if let base = row["base_digest"] as String? { bases.insert(base) }
            if dryRun { continue }
            try delete.execute(arguments: [hex])
            if !inline { store.remove(digest) }
        }
        return (count, bytes, kept, bases)
    }

    /// Blobs among `digests` that no checkpoint references any more, removed at once, then the
    /// bases of the deltas among them that nothing needs any more.
    static func dropUnreferenced(_ db: Database, digests: Set<String>, store: any BlobStore, dryRun: Bool, removing: Set<Int64> = []) throws
        -> Int
    {
        var rows: [Row] = []
        let query = try db.cachedStatement(
            sql: """
                SELECT digest, byte_length, inline_data IS NOT NULL AS inline, coalesce(stored_length, byte_length) AS stored, base_digest\
                 FROM blobs b WHERE digest = ?
                AND NOT EXISTS (SELECT 1 FROM blob_references t WHERE t.blob_digest = b.digest AND t.checkpoint_id NOT IN (SELECT\
                 value FROM json_each(?)))
                """)
        let excluded = "[" + removing.map(String.init).joined(separator: ",") + "]"
        for digest in digests.sorted() {
            if let row = try Row.fetchOne(query, arguments: [digest, excluded]) { rows.append(row) }
        }
        let dropped = try dropBlobs(db, rows, store: store, dryRun: dryRun)
        guard !dryRun, !dropped.bases.isEmpty else { return dropped.bytes }
        return dropped.bytes + (try dropUnreferenced(db, digests: dropped.bases, store: store, dryRun: false))
    }

    /// Why a checkpoint must stay: students derive from it, an alias points at it, or it is a
    /// base's registered checkpoint. Empty when it may go.
    static func protections(_ db: Database, checkpoint id: Int64, model: String, kind: String, number: Int) throws -> [Protection] {
        let students = try String.fetchAll(
            db,
            sql: "SELECT m.name FROM model_parents p JOIN models m ON m.id = p.model_id WHERE p.parent_checkpoint_id = ? ORDER BY m.name",
            arguments: [id])
        let aliases = try String.fetchAll(db, sql: "SELECT alias FROM aliases WHERE checkpoint_id = ? ORDER BY alias", arguments: [id])
        return RetentionPolicy.protections(students: students, aliases: aliases, model: model, kind: kind, number: number)
    }

    package func removeCheckpoint(_ checkpoint: ResolvedCheckpoint, blobs store: any BlobStore, dryRun: Bool) async throws(GraftError)
        -> RemovalReport?
    {
        try await write { db -> RemovalReport? in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT m.name, m.kind, c.number FROM checkpoints c JOIN models m ON m.id = c.model_id WHERE c.id = ?",
                    arguments: [checkpoint.id])
            else { return nil }
            let reasons = try Self.protections(db, checkpoint: checkpoint.id, model: row["name"], kind: row["kind"], number: row["number"])
            guard reasons.isEmpty else { throw GraftError.protected(checkpoint.summary.ref, reasons: reasons) }
            let freed = try Self.removeCheckpoints(db, [checkpoint.id], store: store, dryRun: dryRun)
            return RemovalReport(dryRun: dryRun, checkpoints: [checkpoint.summary.ref], bytesFreed: freed)
        }
    }

    /// Deletes checkpoints (their tensors, metrics and checkpoint advisories go with them) and
    /// the blobs nothing else uses; returns the bytes freed.
    static func removeCheckpoints(_ db: Database, _ ids: [Int64], store: any BlobStore, dryRun: Bool) throws -> Int {
        guard !ids.isEmpty else { return 0 }
        let list = "[" + ids.map(String.init).joined(separator: ",") + "]"
        // The two tables by their primary keys (checkpoint first): through the view, SQLite
        // would scan every checkpoint's tensors.
        let digests = Set(
            try String.fetchAll(
                db,
                sql: """
                    SELECT blob_digest FROM checkpoint_tensors WHERE checkpoint_id IN (SELECT value FROM json_each(?))
                    UNION SELECT blob_digest FROM checkpoint_files
                    WHERE blob_digest IS NOT NULL AND checkpoint_id IN (SELECT value FROM json_each(?))
                    """, arguments: [list, list]))
        if dryRun { return try dropUnreferenced(db, digests: digests, store: store, dryRun: true, removing: Set(ids)) }
        try db.execute(sql: "DELETE FROM checkpoints WHERE id IN (SELECT value FROM json_each(?))", arguments: [list])
        return try dropUnreferenced(db, digests: digests, store: store, dryRun: false)
    }

    package func prune(model name: ModelName, policy: RetentionPolicy, split: String?, blobs store: any BlobStore, dryRun: Bool)
        async throws(GraftError) -> RemovalReport?
    {
        try await write { db -> RemovalReport? in
            guard let model = try Row.fetchOne(db, sql: "SELECT id, kind FROM models WHERE name = ?", arguments: [name.value]) else {
                return nil
            }
            let modelID: Int64 = model["id"]
            // Gather what the policy needs; the policy (plain Swift) decides.
            let checkpoints = try Row.fetchAll(
                db, sql: "SELECT id, number FROM checkpoints WHERE model_id = ? ORDER BY number", arguments: [modelID])
            var values: [Int64: Double] = [:]
            if policy.keepBest > 0, let metric = policy.metric {
                for row in try Row.fetchAll(
                    db, sql: "SELECT checkpoint_id, value FROM metrics WHERE model_id = ? AND name = ? AND split = ?",
                    arguments: [modelID, metric, split ?? ""])
                {
                    values[row["checkpoint_id"]] = row["value"]
                }
                guard !values.isEmpty else {
                    let known = try String.fetchAll(
                        db, sql: "SELECT DISTINCT name FROM metrics WHERE model_id = ? ORDER BY name", arguments: [modelID])
                    throw GraftError.unknownMetric(metric, known: known)
                }
            }
            var idOf: [Int: Int64] = [:]
            var candidates: [RetentionPolicy.Candidate] = []
            for row in checkpoints {
                let id: Int64 = row["id"], number: Int = row["number"]
                idOf[number] = id
                candidates.append(
                    RetentionPolicy.Candidate(
                        number: number, value: values[id],
                        protections: try Self.protections(db, checkpoint: id, model: name.value, kind: model["kind"], number: number)))
            }
            let plan = policy.plan(candidates, model: name)
            let freed = try Self.removeCheckpoints(db, plan.remove.compactMap { idOf[$0] }, store: store, dryRun: dryRun)
            return RemovalReport(dryRun: dryRun, checkpoints: plan.removed, kept: plan.kept, bytesFreed: freed)
        }
    }

    package func removeModel(_ name: ModelName, cascade: Bool, blobs store: any BlobStore, dryRun: Bool) async throws(GraftError)
        -> RemovalReport?
    {
        try await write { db -> RemovalReport? in
            guard let root = try Int64.fetchOne(db, sql: "SELECT id FROM models WHERE name = ?", arguments: [name.value]) else {
                return nil
            }
            let subtree = try Row.fetchAll(
                db,
                sql: """
                    SELECT m.id, m.name, length(m.lineage_path) - length(replace(m.lineage_path, '/', '')) AS depth
                    FROM \(Self.subtreeJoin) WHERE r.id = ?
                    """, arguments: [root]
            ).map { ModelRemoval.Member(id: $0["id"], name: $0["name"], depth: $0["depth"]) }
            let members = try ModelRemoval.order(subtree, root: root, name: name.value, cascade: cascade)
            let ids = members.map(\.id)
            let list = "[" + ids.map(String.init).joined(separator: ",") + "]"
            let checkpoints = try Row.fetchAll(
                db,
                sql: """
                    SELECT c.id, m.name, c.number FROM checkpoints c JOIN models m ON m.id = c.model_id
                    WHERE c.model_id IN (SELECT value FROM json_each(?)) ORDER BY m.name, c.number
                    """, arguments: [list])
            if !dryRun {
                try db.execute(sql: "DELETE FROM aliases WHERE model_id IN (SELECT value FROM json_each(?))", arguments: [list])
                for id in ids { try db.execute(sql: "DELETE FROM model_parents WHERE model_id = ?", arguments: [id]) }
            }
            let freed = try Self.removeCheckpoints(db, checkpoints.map { $0["id"] as Int64 }, store: store, dryRun: dryRun)
            if !dryRun {
                for id in ids { try db.execute(sql: "DELETE FROM models WHERE id = ?", arguments: [id]) }
            }
            return RemovalReport(
                dryRun: dryRun, models: members.map(\.name),
                checkpoints: checkpoints.map { "\($0["name"] as String)@\($0["number"] as Int)" },
                bytesFreed: freed)
        }
    }
}
