import GRDB

/// What `tag` did.
public struct AliasResult: Sendable, Codable, Equatable {
    /// `NAME@ALIAS`.
    public var alias: String
    /// The checkpoint it points at now, `NAME@N`.
    public var checkpoint: String
    /// The checkpoint it pointed at before, if it was moved.
    public var previous: String?
}

extension Registry {
    /// Points `NAME@ALIAS` at the checkpoint `reference` names (on that checkpoint's model).
    /// Moving an existing alias is one atomic update.
    ///
    /// - Throws: ``GraftError/invalidName(_:reason:)`` for an alias that is a number, `latest`,
    ///   or breaks the naming rules.
    public func tag(_ reference: Reference, alias: String) async throws(GraftError) -> AliasResult {
        try Self.checkAlias(alias)
        let (checkpointID, summary) = try await resolve(reference)
        let previous = try await write { db -> String? in
            guard let modelID = try Int64.fetchOne(db, sql: "SELECT model_id FROM checkpoints WHERE id = ?", arguments: [checkpointID]) else {
                throw GraftError.checkpointNotFound(reference, available: "it was removed meanwhile")
            }
            let previous = try Int.fetchOne(
                db, sql: "SELECT c.number FROM aliases a JOIN checkpoints c ON c.id = a.checkpoint_id WHERE a.model_id = ? AND a.alias = ?",
                arguments: [modelID, alias])
            try db.execute(
                sql: """
                    INSERT INTO aliases (model_id, alias, checkpoint_id, updated_at) VALUES (?, ?, ?, ?)
                    ON CONFLICT (model_id, alias) DO UPDATE SET checkpoint_id = excluded.checkpoint_id, updated_at = excluded.updated_at
                    """, arguments: [modelID, alias, checkpointID, timestamp()])
            return previous.map { "\(summary.model)@\($0)" }
        }
        return AliasResult(alias: "\(summary.model)@\(alias)", checkpoint: summary.ref, previous: previous == summary.ref ? nil : previous)
    }

    /// Removes `NAME@ALIAS`.
    ///
    /// - Throws: ``GraftError/aliasNotFound(model:alias:)`` when it is not set.
    public func untag(model name: ModelName, alias: String) async throws(GraftError) {
        try Self.checkAlias(alias)
        guard let modelID = try await modelID(name) else { throw try await notFound(name) }
        let removed = try await write { db -> Int in
            try db.execute(sql: "DELETE FROM aliases WHERE model_id = ? AND alias = ?", arguments: [modelID, alias])
            return db.changesCount
        }
        if removed == 0 { throw .aliasNotFound(model: name, alias: alias) }
    }

    /// The aliases set on a model, by name, with the checkpoint each points at.
    public func aliases(of name: ModelName) async throws(GraftError) -> [String: String] {
        try await read { db in
            var result: [String: String] = [:]
            for row in try Row.fetchAll(
                db, sql: """
                    SELECT a.alias, c.number FROM aliases a JOIN models m ON m.id = a.model_id
                    JOIN checkpoints c ON c.id = a.checkpoint_id WHERE m.name = ?
                    """, arguments: [name.value])
            {
                result[row["alias"]] = "\(name)@\(row["number"] as Int)"
            }
            return result
        }
    }

    static func checkAlias(_ alias: String) throws(GraftError) {
        try ModelName.check(alias, what: "alias")
        guard alias != "latest", !alias.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            throw .invalidName(alias, reason: "an alias cannot be `latest` or a number, which already name checkpoints")
        }
    }
}
