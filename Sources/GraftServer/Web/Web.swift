import Foundation
import GraftCore
import HTTPTypes
import Hummingbird
import NIOCore

/// The web view of `graft serve`: server-rendered pages over the same registry and tokens as
/// `/v1` (docs/WEB.md). Pages read; they never write. Every page reads without JavaScript;
/// `graft.js` only adds interaction (expanding lineage nodes in place, filtering tables).
///
/// A page needs a `read` token, from `Authorization: Bearer` or from the session cookie that
/// `/login` sets (HttpOnly, SameSite=Strict, Secure under TLS). Without either, a page answers
/// 303 to `/login`. A token confined to some models sees only those, as in the API.
struct Web: Sendable {
    let api: API
    /// Cookies carry `Secure` (the server speaks TLS).
    let secure: Bool
    var registry: Registry { api.registry }

    static let cookieName = "graft_session"
    /// Paths that need no token: the login form, logging out and the stylesheet and script.
    static func isPublic(_ path: String) -> Bool {
        path == "/login" || path == "/logout" || path.hasPrefix("/static/")
    }

    /// Everything that is neither the API nor the health check is a page: its errors answer
    /// as HTML, and an anonymous visit is sent to `/login`.
    static func isPage(_ path: String) -> Bool {
        !(path == "/v1" || path.hasPrefix("/v1/") || path == "/healthz")
    }

    func register(on routes: RouteTable) {
        routes.open(.get, "/static/graft.css") { _, _ in Self.asset(PackageResources.graft_css, type: "text/css; charset=utf-8") }
        routes.open(.get, "/static/graft.js") { _, _ in Self.asset(PackageResources.graft_js, type: "text/javascript; charset=utf-8") }
        registerLogin(on: routes)
        registerIndex(on: routes)
        registerModel(on: routes)
        registerLineage(on: routes)
        registerCheckpoint(on: routes)
        registerAdvisories(on: routes)
    }

    static func asset(_ bytes: [UInt8], type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.contentLength] = String(bytes.count)
        headers[.cacheControl] = "public, max-age=3600"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    // MARK: Login and logout

    private func registerLogin(on routes: RouteTable) {
        let registry = self.registry
        let secure = self.secure
        let expiry = api.configuration.sessionExpiry
        routes.open(.get, "/login") { request, _ in
            Self.loginPage(next: Self.safeNext(query(request, "next")), message: nil, status: .ok)
        }
        routes.open(.post, "/login") { request, _ in
            try Self.requireSameOrigin(request)
            let form = Self.form(try await collect(request, limit: 4096))
            let next = Self.safeNext(form["next"])
            guard let secret = form["token"]?.trimmingCharacters(in: .whitespaces), !secret.isEmpty, secret.utf8.count < 200,
                let token = try await registry.authenticate(secret)
            else {
                return Self.loginPage(next: next, message: "That token is unknown or revoked.", status: .unauthorized)
            }
            // The web view reads; an admin token stays with the CLI, off browsers.
            guard token.scope != .admin else {
                return Self.loginPage(
                    next: next, message: "Admin tokens do not sign in here: use a token with read or write scope.", status: .forbidden)
            }
            // The cookie holds a fresh session id, never the token: a stolen cookie is no API credential,
            // and it ends on sign-out, when idle or old, or with its token.
            guard let session = try await registry.openSession(secret: secret, expiry: expiry) else {
                return Self.loginPage(next: next, message: "That token is unknown or revoked.", status: .unauthorized)
            }
            var response = Response(status: .seeOther)
            response.headers[.location] = next
            response.headers[.setCookie] =
                "\(Self.cookieName)=\(session); Path=/; HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "")
            response.headers[.cacheControl] = "no-store"
            return response
        }
        routes.open(.post, "/logout") { request, _ in
            try Self.requireSameOrigin(request)
            if let cookie = Self.sessionCookie(request), cookie.utf8.count < 200 { try await registry.closeSession(cookie) }
            var response = Response(status: .seeOther)
            response.headers[.location] = "/login"
            response.headers[.setCookie] = "\(Self.cookieName)=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0" + (secure ? "; Secure" : "")
            return response
        }
    }

    static func loginPage(next: String, message: String?, status: HTTPResponse.Status) -> Response {
        let error: Markup = message.map { "<p class=\"error\" role=\"alert\">\($0)</p>" } ?? .empty
        let body: Markup = """
            <section class="login"><h1>Sign in to Graft</h1>\(error)
            <form method="post" action="/login">
            <input type="hidden" name="next" value="\(next)">
            <label for="token">Token</label>
            <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
            <button type="submit">Sign in</button>
            </form>
            <p class="muted">A token with read scope: <code>graft token create NAME --scope read</code> on the registry's\
             machine.</p></section>
            """
        return page("Sign in", token: nil, body: body, status: status)
    }

    /// Where to go after login: a local path only (never `//host` or a scheme).
    static func safeNext(_ text: String?) -> String {
        guard let text, text.hasPrefix("/"), !text.hasPrefix("//"), !text.hasPrefix("/\\"), text.utf8.count < 2048,
            !text.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7F || $0 == "\\" })
        else { return "/" }
        return text
    }

    /// A form post from another origin is refused (login CSRF): when the browser names the
    /// origin, it must be this server's.
    static func requireSameOrigin(_ request: Request) throws(GraftError) {
        if request.headers[HTTPField.Name("Sec-Fetch-Site")!] == "cross-site" { throw .forbidden("cross-site form posts are refused") }
        guard let origin = request.headers[HTTPField.Name("Origin")!], origin != "null" else { return }
        guard let host = request.head.authority, origin.hasSuffix("://" + host) else {
            throw .forbidden("this form must be posted from the server's own pages")
        }
    }

    /// `application/x-www-form-urlencoded` fields (the last of a repeated name wins).
    static func form(_ bytes: [UInt8]) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in String(decoding: bytes, as: UTF8.self).split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decoded(_ text: Substring) -> String? { text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
            guard let key = decoded(parts[0]), let value = decoded(parts.count > 1 ? parts[1] : "") else { continue }
            fields[key] = value
        }
        return fields
    }

    /// The session cookie's value, if the request carries one.
    static func sessionCookie(_ request: Request) -> String? {
        for header in request.headers[values: .cookie] {
            for part in header.split(separator: ";") {
                let pair = part.trimmingCharacters(in: .whitespaces)
                if pair.hasPrefix(cookieName + "=") { return String(pair.dropFirst(cookieName.count + 1)) }
            }
        }
        return nil
    }

    /// 303 to the login form, coming back here afterwards.
    static func redirectToLogin(_ request: Request) -> Response {
        var target = request.uri.path
        if let query = request.uri.query, !query.isEmpty { target += "?" + query }
        var response = Response(status: .seeOther)
        response.headers[.location] = link("/login", [("next", target)])
        response.headers[.cacheControl] = "no-store"
        return response
    }

    // MARK: Layout

    /// A whole page: the navigation, `body`, and the headers every page carries (a strict
    /// Content-Security-Policy: scripts and styles only from /static, nothing inline).
    static func page(_ title: String, token: TokenInfo?, body: Markup, status: HTTPResponse.Status = .ok) -> Response {
        var account = Markup.empty
        if let token {
            let confined: Markup = token.models.map { " · models <code>\($0)</code>" } ?? .empty
            account = """
                <span class="account">token <b>\(token.name)</b> (\(token.scope.rawValue))\(confined)</span>
                <form method="post" action="/logout" class="logout"><button type="submit">Log out</button></form>
                """
        }
        let html: Markup = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(title) · Graft</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/static/graft.css"><script\
             src="/static/graft.js" defer></script></head>
            <body><header class="top"><a class="brand" href="/">Graft</a><nav><a href="/">Models</a><a\
             href="/advisories">Advisories</a></nav>\(account)</header>
            <main>\(body)</main></body></html>
            """
        return htmlResponse(html, status: status)
    }

    static func htmlResponse(_ html: Markup, status: HTTPResponse.Status = .ok) -> Response {
        let bytes = Array((Redaction.current.map { $0.html(html.text) } ?? html.text).utf8)
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.contentLength] = String(bytes.count)
        headers[.cacheControl] = "no-store"
        headers[.contentSecurityPolicy] =
            """
            default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self';\
             base-uri 'none'; frame-ancestors 'none'
            """
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// The page a failure shows: its status, its one-line message, and a way back.
    static func errorPage(_ kind: ErrorKind, message: String, status: HTTPResponse.Status) -> Response {
        let body: Markup = """
            <section class="failure"><h1>\(status.code) \(status.reasonPhrase)</h1><p class="error"\
             data-kind="\(kind.rawValue)">\(message)</p>
            <p><a href="/">All models</a></p></section>
            """
        return page("\(status.code)", token: nil, body: body, status: status)
    }
}

// MARK: Shared pieces of pages

extension Web {
    static func modelLink(_ name: String) -> Markup { "<a href=\"/models/\(percentEncode(name))\">\(name)</a>" }

    static func checkpointLink(_ ref: String) -> Markup { "<a href=\"/checkpoints/\(percentEncode(ref, keepAt: true))\">\(ref)</a>" }

    static func modeBadge(kind: String, mode: TransferMode?) -> Markup {
        guard let mode else { return "<span class=\"badge mode-\(kind)\">\(kind)</span>" }
        return "<span class=\"badge mode-\(mode.rawValue)\">\(mode.rawValue)</span>"
    }

    /// The advisories mark of a model: ⚑ and each id.
    static func flagMark(_ advisories: [String]) -> Markup {
        guard !advisories.isEmpty else { return .empty }
        return
            """
            <span class=\"flag\" title=\"open advisories: \(advisories.joined(separator: ", "))\">⚑\
             \(advisories.joined(separator: ", "))</span>
            """
    }

    static func number(_ value: Int) -> String { formatCount(value) }

    /// A metric's value as the CLI prints it.
    static func metric(_ value: Double) -> String { formatMetric(value) }
}
