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
        guard let before = try await metadata.tag(checkpoint: checkpointID, alias: alias) else {
            throw .checkpointNotFound(reference, available: "it was removed meanwhile")
        }
        let previous = before.map { "\(summary.model)@\($0)" }
        return AliasResult(alias: "\(summary.model)@\(alias)", checkpoint: summary.ref, previous: previous == summary.ref ? nil : previous)
    }

    /// Removes `NAME@ALIAS`.
    ///
    /// - Throws: ``GraftError/aliasNotFound(model:alias:)`` when it is not set.
    public func untag(model name: ModelName, alias: String) async throws(GraftError) {
        try Self.checkAlias(alias)
        guard let modelID = try await modelID(name) else { throw try await notFound(name) }
        let removed = try await metadata.untag(model: modelID, alias: alias)
        if !removed { throw .aliasNotFound(model: name, alias: alias) }
    }

    /// The aliases set on a model, by name, with the checkpoint each points at.
    public func aliases(of name: ModelName) async throws(GraftError) -> [String: String] {
        try await metadata.aliases(of: name)
    }

    static func checkAlias(_ alias: String) throws(GraftError) {
        try ModelName.check(alias, what: "alias")
        guard alias != "latest", !alias.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            throw .invalidName(alias, reason: "an alias cannot be `latest` or a number, which already name checkpoints")
        }
    }
}
