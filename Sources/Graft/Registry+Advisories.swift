import GRDB

/// How serious an advisory is.
public enum Severity: String, Sendable, Codable, CaseIterable {
    case low, medium, high, critical
}

/// A known weakness of a model or checkpoint (a backdoor, a leaked test set, a license problem).
public struct Advisory: Sendable, Codable, Equatable {
    public var id: String
    public var model: String
    /// The checkpoint it is on (`NAME@N`); absent when it is on the whole model.
    public var checkpoint: String?
    public var severity: Severity
    public var note: String?
    public var url: String?
    public var createdAt: String
    public var resolvedAt: String?
}

/// A descendant that inherits open advisories, and how.
public struct AffectedModel: Sendable, Codable, Equatable {
    public var model: String
    /// Its checkpoints, `NAME@N`: every one of them inherits.
    public var checkpoints: [String]
    /// The advisories it inherits.
    public var advisories: [String]
    /// The path of inheritance, from the flagged model down: `base@1 → student@2 → grandchild`.
    public var path: [String]
}

extension Registry {
    /// Records an advisory on a model (a bare NAME) or on one checkpoint.
    ///
    /// - Throws: ``GraftError/advisoryExists(_:)``; ``GraftError/invalidName(_:reason:)`` for a bad id.
    @discardableResult
    public func addAdvisory(
        on reference: Reference, id: String, severity: Severity, note: String? = nil, url: String? = nil
    ) async throws(GraftError) -> Advisory {
        try ModelName.check(id, what: "advisory id")
        let modelID: Int64
        var checkpointID: Int64? = nil
        var checkpointRef: String? = nil
        let modelName: String
        if case .model(let name) = reference {
            guard let id = try await self.modelID(name) else { throw try await notFound(name) }
            modelID = id
            modelName = name.value
        } else {
            let (id, summary) = try await resolve(reference)
            checkpointID = id
            checkpointRef = summary.ref
            modelName = summary.model.value
            modelID = try await read { db in try db.cachedOne(Int64.self, sql: "SELECT model_id FROM checkpoints WHERE id = ?", arguments: [id]) ?? -1 }
        }
        let now = timestamp()
        let (target, checkpoint) = (modelID, checkpointID)
        try await write { db in
            if try db.cachedOne(Bool.self, sql: "SELECT 1 FROM advisories WHERE id = ?", arguments: [id]) ?? false { throw GraftError.advisoryExists(id) }
            try db.execute(
                sql: "INSERT INTO advisories (id, model_id, checkpoint_id, severity, note, url, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                arguments: [id, target, checkpoint, severity.rawValue, note, url, now])
        }
        return Advisory(id: id, model: modelName, checkpoint: checkpointRef, severity: severity, note: note, url: url, createdAt: now, resolvedAt: nil)
    }

    /// Advisories, newest first; resolved ones only when asked.
    public func advisories(includeResolved: Bool = false) async throws(GraftError) -> [Advisory] {
        try await read { db in
            try db.cachedRows(sql: """
                    SELECT a.*, m.name AS model_name, c.number AS checkpoint_number FROM advisories a JOIN models m ON m.id = a.model_id
                    LEFT JOIN checkpoints c ON c.id = a.checkpoint_id
                    \(includeResolved ? "" : "WHERE a.resolved_at IS NULL") ORDER BY a.created_at DESC, a.id
                    """
            ).map { row in
                let name: String = row["model_name"]
                return Advisory(
                    id: row["id"], model: name, checkpoint: (row["checkpoint_number"] as Int?).map { "\(name)@\($0)" },
                    severity: Severity(rawValue: row["severity"]) ?? .high, note: row["note"], url: row["url"], createdAt: row["created_at"],
                    resolvedAt: row["resolved_at"])
            }
        }
    }

    /// Marks an advisory resolved; descendants stop inheriting it.
    public func resolveAdvisory(_ id: String) async throws(GraftError) {
        try ModelName.check(id, what: "advisory id")
        let changed = try await write { db -> Int in
            try db.execute(sql: "UPDATE advisories SET resolved_at = ? WHERE id = ? AND resolved_at IS NULL", arguments: [timestamp(), id])
            return db.changesCount
        }
        if changed == 0 {
            let exists = try await read { db in try db.cachedOne(Bool.self, sql: "SELECT 1 FROM advisories WHERE id = ?", arguments: [id]) ?? false }
            if !exists { throw .advisoryNotFound(id) }
        }
    }

    /// Every descendant of `reference` (a model, or the students of one checkpoint) that
    /// inherits an open advisory, with its path of inheritance.
    public func affected(_ reference: Reference) async throws(GraftError) -> [AffectedModel] {
        var start: Int64
        var checkpointID: Int64? = nil
        var label: String
        if case .model(let name) = reference {
            guard let id = try await modelID(name) else { throw try await notFound(name) }
            start = id
            label = name.value
        } else {
            let (id, summary) = try await resolve(reference)
            checkpointID = id
            label = summary.ref
            start = try await read { db in try db.cachedOne(Int64.self, sql: "SELECT model_id FROM checkpoints WHERE id = ?", arguments: [id]) ?? -1 }
        }
        let (root, first, startLabel) = (start, checkpointID, label)
        return try await read { db in
            let flagged = try Self.flaggedModels(db, within: root)
            guard !flagged.isEmpty else { return [] }
            // The whole tree below in one query: each model with the edge it was reached by
            // (UNION ALL: a student has one parent edge, so no model is reached twice).
            let rows = try db.cachedRows(sql: """
                    WITH RECURSIVE down(model_id, parent_id, via, depth) AS (
                        SELECT ?, NULL, NULL, 0
                        UNION ALL
                        SELECT p.model_id, p.parent_model_id, p.parent_checkpoint_id, down.depth + 1
                        FROM model_parents p JOIN down ON p.parent_model_id = down.model_id
                    )
                    SELECT down.model_id, down.parent_id, down.via, down.depth, m.name, pc.number AS via_number
                    FROM down JOIN models m ON m.id = down.model_id LEFT JOIN checkpoints pc ON pc.id = down.via
                    ORDER BY down.depth, m.name
                    """, arguments: [root])
            var names: [Int64: String] = [:]
            var paths: [Int64: [String]] = [:]
            var order: [Int64] = []
            // Columns by position: GRDB's by-name lookup lowercases names on every access.
            for row in rows {
                let id: Int64 = row[0]
                names[id] = row[4]
                guard let parent = row[1] as Int64?, paths[id] == nil else { continue }
                let viaNumber: Int = row[5]
                if parent == root {
                    // From a checkpoint reference, only the students of that checkpoint.
                    if let first, row[2] as Int64? != first { continue }
                    paths[id] = ["\(names[root] ?? startLabel)@\(viaNumber)"]
                } else {
                    guard let above = paths[parent] else { continue }
                    paths[id] = above + ["\(names[parent] ?? "?")@\(viaNumber)"]
                }
                order.append(id)
            }
            let affectedIDs = order.filter { flagged[$0]?.isEmpty == false }
            var checkpoints: [Int64: [Int]] = [:]
            for chunk in stride(from: 0, to: affectedIDs.count, by: 500).map({ Array(affectedIDs[$0..<min($0 + 500, affectedIDs.count)]) }) {
                for row in try db.cachedRows(sql: "SELECT model_id, number FROM checkpoints WHERE model_id IN (\(chunk.map { _ in "?" }.joined(separator: ","))) ORDER BY model_id, number",
                    arguments: StatementArguments(chunk))
                {
                    checkpoints[row[0], default: []].append(row[1])
                }
            }
            return affectedIDs.map { id in
                let name = names[id] ?? "?"
                return AffectedModel(
                    model: name, checkpoints: (checkpoints[id] ?? []).map { "\(name)@\($0)" }, advisories: flagged[id]!.sorted(),
                    path: paths[id]! + [name])
            }
        }
    }
}
