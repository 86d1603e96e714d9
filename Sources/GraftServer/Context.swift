import Foundation
import GraftCore
import Hummingbird
import Logging
import NIOHTTP1
import Synchronization

/// The request context: Hummingbird's, plus the token that authenticated the request. What a
/// route may do with it is decided once, by the access the route declared (``RouteTable``).
struct GraftContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    var token: TokenInfo?
    /// Where authentication leaves the token's name for the access line, which is written
    /// outside it (so that refused requests are logged too).
    var accessLine = AccessLineToken()

    init(source: Source) {
        coreContext = .init(source: source)
        token = nil
    }

    /// Bodies are capped per route (``API``); Hummingbird's own cap is not the limit.
    var maxUploadSize: Int { .max }
}

/// Looks up the token of every request but `/healthz` and the login form's; the routes check
/// its scope. The API (`/v1`) takes `Authorization: Bearer` only; pages take it or the session
/// cookie `/login` sets, and send a visitor without a valid one to `/login`.
struct Authentication: RouterMiddleware {
    let registry: Registry
    let expiry: SessionExpiry

    func handle(_ request: Request, context: GraftContext, next: (Request, GraftContext) async throws -> Response) async throws -> Response
    {
        let path = request.uri.path
        if path == "/healthz" || Web.isPublic(path) { return try await next(request, context) }
        let page = Web.isPage(path)
        let found: TokenInfo?
        if let header = request.headers[.authorization] {
            guard header.utf8.count < 200, let bearer = Self.bearer(header) else {
                throw GraftError.unauthorized("malformed Authorization header: expected `Bearer TOKEN`")
            }
            found = try await registry.authenticate(bearer)
        } else if page, let cookie = Web.sessionCookie(request), cookie.utf8.count < 200 {
            // A page's cookie is a session id (never a token): live, and its token still active.
            found = try await registry.session(cookie, expiry: expiry)
        } else {
            if page { return Web.redirectToLogin(request) }
            throw GraftError.unauthorized("a token is required: send `Authorization: Bearer TOKEN`")
        }
        guard let token = found else {
            if page, request.headers[.authorization] == nil { return Web.redirectToLogin(request) }
            throw GraftError.unauthorized("the token is unknown or revoked")
        }
        var context = context
        context.token = token
        context.accessLine.name.withLock { $0 = token.name }
        context.logger[metadataKey: "token"] = .string(token.name)
        return try await next(request, context)
    }

    /// The credentials of `Authorization: Bearer TOKEN`: the scheme is case-insensitive (RFC
    /// 9110 §11.1), one or more spaces follow it; nil for any other scheme or no token.
    static func bearer(_ header: String) -> String? {
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].drop { $0 == " " }
        return token.isEmpty ? nil : String(token)
    }
}

/// The JSON every failure answers with: `{"error": KIND, "message": ONE_LINE, "details": […]}`
/// (details name each tensor of a manifest violation, each missing blob of a commit, each
/// reason a removal was refused); a manifest violation adds `violations`, one typed entry per
/// offending tensor.
struct ErrorBody: Codable {
    var error: ErrorKind
    var message: String
    var details: [String]?
    var violations: [Violation]?

    /// One ``ManifestViolation``: `{"tensor", "rule", "expected"?, "found"?}`.
    struct Violation: Codable, Equatable {
        var tensor: String
        var rule: String
        var expected: String?
        var found: String?
        init(_ violation: ManifestViolation) {
            (tensor, rule, expected, found) = (violation.tensor, violation.rule, violation.expected, violation.found)
        }
    }
}

/// Turns a thrown error into its JSON answer, with the status of its kind.
struct ErrorAnswer: RouterMiddleware {
    func handle(_ request: Request, context: GraftContext, next: (Request, GraftContext) async throws -> Response) async throws -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as GraftError {
            var details: [String]? = nil
            var violations: [ErrorBody.Violation]? = nil
            switch error {
            case .manifestViolation(_, let broken):
                details = broken.map(\.description)
                violations = broken.map(ErrorBody.Violation.init)
            case .blobsMissing(let digests): details = digests.map(\.description)
            case .protected(_, let reasons): details = reasons.map(\.description)
            case .invalidSignature(_, let problems): details = problems
            default: break
            }
            if Web.isPage(request.uri.path) {
                return Web.errorPage(
                    error.kind, message: ([error.description] + (details ?? [])).joined(separator: "\n"),
                    status: .init(code: error.kind.httpStatus))
            }
            var response = jsonResponse(
                ErrorBody(error: error.kind, message: error.description, details: details, violations: violations),
                status: .init(code: error.kind.httpStatus))
            if error.kind == .unauthorized { response.headers[.wwwAuthenticate] = "Bearer realm=\"graft\"" }
            return response
        } catch let error as any HTTPResponseError {
            let kind: ErrorKind =
                switch error.status.code {
                case 404: .notFound
                case 405: .usage
                case 413: .tooLarge
                case 400..<500: .usage
                default: .internal
                }
            let message =
                error.status.code == 404
                ? "no such route" : error.status.code == 405 ? "method not allowed on this route" : error.status.reasonPhrase
            if Web.isPage(request.uri.path) { return Web.errorPage(kind, message: message, status: error.status) }
            return jsonResponse(ErrorBody(error: kind, message: message), status: error.status)
        } catch let error as HTTPParserError {
            // A body the HTTP decoder refused as it streamed in (a malformed chunk size, say): the
            // client's fault, answered as such.
            let message = "malformed HTTP request: \(error)"
            if Web.isPage(request.uri.path) { return Web.errorPage(.usage, message: message, status: .badRequest) }
            return jsonResponse(ErrorBody(error: .usage, message: message), status: .badRequest)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            context.logger.error("unexpected error: \(String(describing: error))")
            return jsonResponse(ErrorBody(error: .internal, message: "internal error"), status: .internalServerError)
        }
    }
}

/// The token name authentication found, shared with the access line of the same request.
final class AccessLineToken: Sendable {
    let name = Mutex<String?>(nil)
}

/// One line per request on the log: method, path, status, milliseconds and the token's name
/// (`-` when none was valid).
struct AccessLog: RouterMiddleware {
    /// Told of each request as it starts and ends (`--compact-idle` waits for quiet).
    var activity: ServerActivity = ServerActivity()

    func handle(_ request: Request, context: GraftContext, next: (Request, GraftContext) async throws -> Response) async throws -> Response
    {
        let start = ContinuousClock.now
        activity.touch(counting: true)
        defer { activity.touch(counting: false) }
        do {
            let response = try await next(request, context)
            log(request, context: context, status: response.status.code, start: start)
            return response
        } catch {
            log(request, context: context, status: 500, start: start)
            throw error
        }
    }

    private func log(_ request: Request, context: GraftContext, status: Int, start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        let milliseconds = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        let token = context.accessLine.name.withLock { $0 } ?? "-"
        context.logger.info(
            "\(request.method.rawValue) \(request.uri.path) \(status) \(String(format: "%.1f", milliseconds))ms token=\(token)")
    }
}

/// A JSON answer in the library's contract (``GraftJSON``): the CLI's `--json` bytes, compact.
func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
    var data = (try? GraftJSON.encoder().encode(value)) ?? Data("{}".utf8)
    if let redaction = Redaction.current { data = redaction.json(data) }
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    headers[.contentLength] = String(data.count)
    headers[.cacheControl] = "no-store"
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

/// A text answer; for a confined request its names are redacted (``Redaction``) unless it is a
/// fixed document (`redactable` false: the OpenAPI description).
func textResponse(_ text: String, type: String, redactable: Bool = true) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = type
    let bytes = Array((redactable ? Redaction.current.map { $0.text(text) } ?? text : text).utf8)
    headers[.contentLength] = String(bytes.count)
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
}
