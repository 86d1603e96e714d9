import GraftCore
import HTTPTypes
import Hummingbird

/// What a route needs before its handler runs. The route table checks it for every request, in
/// this order: a token (401), then the model or checkpoint the path names, which the token must
/// see (404, exactly as if it did not exist), then the scope (403). A handler receives the
/// ``Grant`` the check produced, so a route cannot be registered without declaring its access,
/// and no handler checks a token by hand.
enum Access: Sendable, Equatable {
    /// A token with this scope; what it reads is filtered by ``Grant/visibility``.
    case scope(TokenScope)
    /// A token with this scope that sees the model of the path's `{name}`.
    case model(TokenScope)
    /// A token with this scope that sees the checkpoint of the path's `{ref}`.
    case checkpoint(TokenScope)
    /// A token with this scope that sees every model (global operations: stats, gc, verify).
    case unconfined(TokenScope)

    var scope: TokenScope {
        switch self {
        case .scope(let scope), .model(let scope), .checkpoint(let scope), .unconfined(let scope): scope
        }
    }
}

/// What the route table checked for a request: the token, and the path's model or checkpoint
/// when the route declared one. Further checks a route needs (a name or reference from the
/// body or the query) go through the same rules here.
struct Grant: Sendable {
    let token: TokenInfo
    /// The path's `{name}`, for ``Access/model(_:)`` routes.
    let model: ModelName?
    /// The path's `{ref}`, for ``Access/checkpoint(_:)`` routes.
    let reference: Reference?
    let registry: Registry

    /// The path's checkpoint, for ``Access/checkpoint(_:)`` routes (set by the route table).
    func checkpoint() throws(GraftError) -> Reference {
        guard let reference else { throw .badRequest("this route names no checkpoint") }
        return reference
    }

    /// The models the token sees.
    var visibility: ModelVisibility { token.visibility }

    /// The token must allow `scope` (403 otherwise).
    func require(_ scope: TokenScope) throws(GraftError) {
        guard token.scope >= scope else {
            throw .forbidden("the token `\(token.name)` has scope \(token.scope.rawValue); this needs \(scope.rawValue)")
        }
    }

    /// The token must see `model` (404 as if absent) and allow `scope` (403).
    func require(_ scope: TokenScope, on model: ModelName) throws(GraftError) {
        guard token.covers(model) else { throw .modelNotFound(model, suggestions: []) }
        try require(scope)
    }

    /// The token must see every model and allow `scope` (403).
    func requireUnconfined(_ scope: TokenScope) throws(GraftError) {
        try require(scope)
        if let models = token.models {
            throw .forbidden("the token `\(token.name)` is confined to models `\(models)`; this needs every model")
        }
    }

    /// What `error` may say to this token: a confined token is suggested only names it sees, and
    /// a refusal over models it does not see says so without naming them, so its answers are
    /// those it would get if the hidden models did not exist (or, for a refusal, that something
    /// outside its reach stands in the way).
    func redacting(_ error: GraftError) -> GraftError {
        guard token.models != nil else { return error }
        let visibility = self.visibility
        func names(_ names: [String]) -> [String] {
            let shown = names.filter { visibility.shows($0) }
            let hidden = names.count - shown.count
            return hidden == 0 ? shown : shown + ["\(hidden) model(s) outside this token's models"]
        }
        switch error {
        case .modelNotFound(let name, let suggestions):
            return .modelNotFound(name, suggestions: suggestions.filter { visibility.shows($0) })
        case .protected(let subject, let reasons):
            return .protected(
                subject,
                reasons: reasons.map { reason in
                    switch reason {
                    case .students(let students): .students(names(students))
                    case .descendants(let descendants): .descendants(names(descendants))
                    case .aliases, .registeredCheckpoint: reason
                    }
                })
        default:
            return error
        }
    }

    /// The reference, when the token may see its model; else not found, as if it did not exist.
    func visible(_ reference: Reference) async throws(GraftError) -> Reference {
        guard token.models != nil else { return reference }
        switch reference {
        case .model(let name), .number(let name, _), .latest(let name), .alias(let name, _):
            guard token.covers(name) else { throw .modelNotFound(name, suggestions: []) }
        case .digest(let prefix):
            let found: CheckpointDetail
            do { found = try await registry.checkpoint(reference) } catch {
                if case .ambiguousDigest = error { throw .digestNotFound(prefix: prefix) }
                throw error
            }
            guard token.covers(found.checkpoint.model) else { throw .digestNotFound(prefix: prefix) }
        }
        return reference
    }
}

/// Registers routes on the router, each with the access it declares, and records them so that
/// tests can hold them against the OpenAPI document and walk every route as every kind of token.
final class RouteTable {
    typealias Handler = @Sendable (Request, GraftContext, Grant) async throws -> Response
    typealias OpenHandler = @Sendable (Request, GraftContext) async throws -> Response

    /// One registered route; `access` is nil for the routes anyone may call.
    struct Entry: Sendable {
        var method: String
        var path: String
        var access: Access?
    }

    let router: Router<GraftContext>
    let registry: Registry
    private(set) var registered: [Entry] = []

    init(_ router: Router<GraftContext>, registry: Registry) {
        self.router = router
        self.registry = registry
    }

    /// A route anyone may call: the health check, the login form, static assets. Authentication
    /// lets exactly these paths through without a token (`Web.isPublic`, `/healthz`).
    func open(_ method: HTTPRequest.Method, _ path: String, use handler: @escaping OpenHandler) {
        registered.append(Entry(method: method.rawValue, path: path, access: nil))
        router.on(RouterPath(stringLiteral: path), method: method, use: handler)
    }

    func get(_ path: String, _ access: Access, use handler: @escaping Handler) { add(.get, path, access, handler) }
    func post(_ path: String, _ access: Access, use handler: @escaping Handler) { add(.post, path, access, handler) }
    func put(_ path: String, _ access: Access, use handler: @escaping Handler) { add(.put, path, access, handler) }
    func delete(_ path: String, _ access: Access, use handler: @escaping Handler) { add(.delete, path, access, handler) }
    func head(_ path: String, _ access: Access, use handler: @escaping Handler) { add(.head, path, access, handler) }

    private func add(_ method: HTTPRequest.Method, _ path: String, _ access: Access, _ handler: @escaping Handler) {
        registered.append(Entry(method: method.rawValue, path: path, access: access))
        let registry = self.registry
        // Reads that answer in words (JSON, text, pages) are redacted for a confined token; bytes
        // (blobs, downloads) and writes (whose answers name only what the token named) are not,
        // so an upload's many PUTs cost no extra reads.
        let redacts = method == .get && !path.contains("{digest}") && !path.hasSuffix("/safetensors") && !path.hasSuffix("/download")
        router.on(RouterPath(stringLiteral: path), method: method) { request, context in
            let grant = try await Self.check(access, context: context, registry: registry)
            // A confined token's answers name no model it cannot see (see Redaction).
            let redaction = redacts ? try await Redaction.of(registry, visibility: grant.visibility) : nil
            do {
                return try await Redaction.$current.withValue(redaction) { try await handler(request, context, grant) }
            } catch let error as GraftError {
                throw grant.redacting(error)
            }
        }
    }

    /// The one place a request's token is checked against what its route declared.
    static func check(_ access: Access, context: GraftContext, registry: Registry) async throws(GraftError) -> Grant {
        guard let token = context.token else { throw .unauthorized("a token is required: send `Authorization: Bearer TOKEN`") }
        var grant = Grant(token: token, model: nil, reference: nil, registry: registry)
        switch access {
        case .scope(let scope):
            try grant.require(scope)
        case .model(let scope):
            let name = try modelName(context)
            try grant.require(scope, on: name)
            grant = Grant(token: token, model: name, reference: nil, registry: registry)
        case .checkpoint(let scope):
            let reference = try await grant.visible(try Reference(parsing: try segment(context, "ref")))
            try grant.require(scope)
            grant = Grant(token: token, model: nil, reference: reference, registry: registry)
        case .unconfined(let scope):
            try grant.requireUnconfined(scope)
        }
        return grant
    }
}
