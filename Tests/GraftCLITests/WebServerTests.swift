import Foundation
import Testing

/// The web view over real `graft serve` processes and raw HTTP: who may see a page, what the
/// login cookie is, what a page escapes. (tests/web drives the same pages in chromium.)
@Suite("graft serve: the web view's access, cookies and escaping")
struct WebServerTests {
    func form(_ fields: [(String, String)]) -> [UInt8] {
        Array(
            fields.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }.joined(separator: "&").utf8)
    }

    static let formType = ["Content-Type": "application/x-www-form-urlencoded"]

    @Test("a page without a token answers 303 to /login (coming back afterwards); the API still answers 401; assets and the form need none")
    func anonymous() throws {
        let served = try Served()
        defer { served.server.stop() }
        let server = served.server
        for (path, next) in [
            ("/", "%2F"), ("/models/cnn?overlay=1", "%2Fmodels%2Fcnn%3Foverlay%3D1"), ("/advisories", "%2Fadvisories"),
            ("/no-such-page", "%2Fno-such-page"),
        ] {
            let answer = try server.request("GET", path)
            #expect(
                answer.status == 303 && answer.headers["location"] == "/login?next=\(next)", "\(path): \(answer.status) \(answer.headers)")
        }
        let api = try server.request("GET", "/v1/models")
        #expect(api.status == 401 && api.object["error"] as? String == "unauthorized")
        // The session cookie is for pages only: the API takes bearer tokens.
        #expect(try server.request("GET", "/v1/models", headers: ["Cookie": "graft_session=\(served.read)"]).status == 401)
        let css = try server.request("GET", "/static/graft.css")
        #expect(css.status == 200 && css.headers["content-type"] == "text/css; charset=utf-8" && css.text.contains("ul.tree"))
        #expect(try server.request("GET", "/static/graft.js").headers["content-type"] == "text/javascript; charset=utf-8")
        let login = try server.request("GET", "/login?next=%2Fmodels%2Fcnn")
        #expect(
            login.status == 200 && login.text.contains("name=\"next\" value=\"/models/cnn\"") && login.text.contains("type=\"password\""))
        // A malformed bearer header on a page is refused, as HTML.
        let malformed = try server.request("GET", "/", headers: ["Authorization": "Basic abc"])
        #expect(malformed.status == 401 && malformed.headers["content-type"] == "text/html; charset=utf-8")
        // A bearer token is enough for a page.
        let page = try server.request("GET", "/", token: served.read)
        #expect(page.status == 200 && page.text.contains("data-model=\"cnn\""))
        #expect(
            page.headers["content-security-policy"]?.contains("script-src 'self'") == true
                && page.headers["x-content-type-options"] == "nosniff")
    }

    @Test(
        """
        login sets an HttpOnly, SameSite=Strict session cookie and goes to a local path only; a bad token or another origin is\
         refused; logout clears it
        """
    )
    func login() throws {
        let served = try Served()
        defer { served.server.stop() }
        let server = served.server
        let answer = try server.request(
            "POST", "/login", headers: Self.formType, body: form([("token", served.read), ("next", "/models/cnn")]))
        #expect(answer.status == 303 && answer.headers["location"] == "/models/cnn")
        // The cookie is a fresh session id, never the token.
        let cookie = answer.headers["set-cookie"] ?? ""
        let session = String(cookie.dropFirst("graft_session=".count).prefix { $0 != ";" })
        #expect(cookie.hasPrefix("graft_session=graftsession_") && cookie.hasSuffix("; Path=/; HttpOnly; SameSite=Strict"), "\(cookie)")
        #expect(!cookie.contains(served.read) && session.count == "graftsession_".count + 43, "no Secure over plain HTTP")
        let page = try server.request("GET", "/models/cnn", headers: ["Cookie": "other=1; graft_session=\(session)"])
        #expect(page.status == 200 && page.text.contains("<h1>cnn"))
        // The session id is no API credential, and the token is no cookie.
        #expect(try server.request("GET", "/v1/models", token: session).status == 401)
        #expect(try server.request("GET", "/v1/models", headers: ["Cookie": "graft_session=\(session)"]).status == 401)
        #expect(try server.request("GET", "/", headers: ["Cookie": "graft_session=\(served.read)"]).status == 303)
        // Each login is its own session.
        let second = try server.request("POST", "/login", headers: Self.formType, body: form([("token", served.read)]))
        #expect(second.headers["set-cookie"] != cookie)
        // Another host after login is never a target.
        for hostile in ["//evil.example/x", "https://evil.example/", "/\\evil.example"] {
            let redirected = try server.request(
                "POST", "/login", headers: Self.formType, body: form([("token", served.read), ("next", hostile)]))
            #expect(redirected.headers["location"] == "/", "\(hostile)")
        }
        let wrong = try server.request("POST", "/login", headers: Self.formType, body: form([("token", "graft_wrong"), ("next", "/")]))
        #expect(wrong.status == 401 && wrong.headers["set-cookie"] == nil && wrong.text.contains("unknown or revoked"))
        // An admin token stays off browsers.
        let admin = try server.request("POST", "/login", headers: Self.formType, body: form([("token", served.admin)]))
        #expect(admin.status == 403 && admin.headers["set-cookie"] == nil && admin.text.contains("Admin tokens do not sign in"))
        // A form posted from another site is refused before the token is looked at.
        let crossSite = try server.request(
            "POST", "/login", headers: Self.formType.merging(["Origin": "http://evil.example"]) { a, _ in a },
            body: form([("token", served.read)]))
        #expect(crossSite.status == 403 && crossSite.headers["set-cookie"] == nil)
        let sameSite = try server.request(
            "POST", "/login", headers: Self.formType.merging(["Origin": "http://127.0.0.1"]) { a, _ in a },
            body: form([("token", served.read)]))
        #expect(sameSite.status == 303)
        // Logout ends the session on the server, not only in this browser.
        let logout = try server.request("POST", "/logout", headers: ["Cookie": "graft_session=\(session)"])
        #expect(
            logout.status == 303 && logout.headers["location"] == "/login" && logout.headers["set-cookie"]?.contains("Max-Age=0") == true)
        #expect(try server.request("GET", "/", headers: ["Cookie": "graft_session=\(session)"]).status == 303, "a copied cookie is dead")
        // Revoking the token ends its other sessions.
        let other = String((second.headers["set-cookie"] ?? "").dropFirst("graft_session=".count).prefix { $0 != ";" })
        #expect(try server.request("GET", "/", headers: ["Cookie": "graft_session=\(other)"]).status == 200)
        #expect(try served.cli.run(["token", "revoke", "read-t"]).status == 0)
        #expect(try server.request("GET", "/", headers: ["Cookie": "graft_session=\(other)"]).status == 303)
        // A login body is capped.
        let huge = try server.request("POST", "/login", headers: Self.formType, body: [UInt8](repeating: UInt8(ascii: "a"), count: 10_000))
        #expect(huge.status == 413)
    }

    @Test("what a user typed shows as text on every page that prints it; errors are pages too")
    func escaping() throws {
        let served = try Served()
        defer { served.server.stop() }
        let markup = #"<script>alert('x')</script><img src=x onerror=alert(1)>"#
        #expect(try served.cli.run(["base", "add", try served.cli.base(), "--name", "typed", "--description", markup]).status == 0)
        #expect(
            try served.cli.run([
                "advisory", "add", "typed", "--id", "ADV-1", "--severity", "low", "--note", markup, "--url", "javascript:alert(1)",
            ]).status == 0)
        let escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
        for path in ["/models/typed", "/?q=typed", "/advisories"] {
            let page = try served.server.request("GET", path, token: served.read)
            #expect(
                page.status == 200 && page.text.contains(escaped) && !page.text.contains("<script>alert")
                    && !page.text.contains("<img src=x"), "\(path)")
        }
        #expect(!(try served.server.request("GET", "/advisories", token: served.read).text.contains("href=\"javascript:")))
        // A search that is markup comes back as text in the form.
        let search = try served.server.request("GET", "/?q=%22%3E%3Cscript%3E", token: served.read)
        #expect(search.text.contains("value=\"&quot;&gt;&lt;script&gt;\""))
        for (path, status) in [
            ("/models/-bad", 400), ("/models/a%2Fb%2Fc", 400), ("/models/a%2Fb", 404), ("/models/ghost", 404), ("/checkpoints/cnn@99", 404),
            ("/models/cnn/lineage?depth=99", 400), ("/?kind=teacher", 400),
        ] {
            let page = try served.server.request("GET", path, token: served.read)
            #expect(
                page.status == status && page.headers["content-type"] == "text/html; charset=utf-8"
                    && page.text.contains("class=\"error\""), "\(path): \(page.status)")
        }
    }

    @Test("a confined token's pages show only its models: the index, lineage, checkpoints, downloads and advisories")
    func confined() throws {
        let served = try Served()
        defer { served.server.stop() }
        let cli = served.cli
        #expect(try cli.run(["student", "create", "team-a", "--from", "cnn", "--freeze", "features.*"]).status == 0)
        #expect(try cli.run(["student", "create", "team-b", "--from", "cnn", "--freeze", "features.*"]).status == 0)
        #expect(
            try cli.run(["student", "create", "secret", "--from", "cnn", "--freeze", "features.*", "--description", "hidden"]).status == 0)
        #expect(try cli.run(["advisory", "add", "cnn", "--id", "ADV-ROOT", "--severity", "high"]).status == 0)
        let team = try served.token("team", "read", models: "team-*")
        let server = served.server
        let index = try server.request("GET", "/", token: team).text
        #expect(index.contains("data-model=\"team-a\"") && index.contains("data-model=\"team-b\""))
        #expect(
            !index.contains("secret") && !index.contains("data-model=\"cnn\"") && !index.contains("dedup ratio"), "no global totals either")
        for path in ["/models/cnn", "/models/secret", "/models/secret/lineage", "/checkpoints/cnn@1", "/checkpoints/cnn@1/download"] {
            #expect(try server.request("GET", path, token: team).status == 404, "\(path)")
        }
        let lineage = try server.request("GET", "/models/team-a/lineage", token: team).text
        #expect(lineage.contains("data-name=\"team-a\"") && !lineage.contains("secret") && !lineage.contains("data-name=\"cnn\""))
        // The advisory on a model it cannot see is not listed; the full token sees it reach all three.
        #expect(!(try server.request("GET", "/advisories", token: team).text.contains("ADV-ROOT")))
        let advisories = try server.request("GET", "/advisories", token: served.read).text
        #expect(advisories.contains("<b class=\"reach-count\">3</b>"))
    }
}
