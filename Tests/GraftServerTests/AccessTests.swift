import Foundation
import Graft
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SafeTensors
import Testing

@testable import GraftServer

/// The access every route declares, checked in process (HummingbirdTesting's router client: no
/// socket, no spawned server). The cases are generated from the route table, so a route added
/// later is covered as soon as it is registered.
@Suite("Route access: declared per route, checked in one place")
struct AccessTests {
    /// A registry with a model every token sees (`open-base`) and one a confined token does not
    /// (`hidden-base`), and a token of each scope plus a confined admin.
    final class Fixture: Sendable {
        let path: String
        let registry: Registry
        let read: String, write: String, admin: String, confined: String

        init() async throws {
            path = NSTemporaryDirectory() + "graft-access-\(UInt64.random(in: 0 ... .max))"
            registry = try await Registry.create(at: path).registry
            for name in ["open-base", "hidden-base"] {
                let tensors = [
                    TensorData(name: "w", dtype: .f32, shape: [1024], bytes: (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* name.count) })
                ]
                _ = try await registry.addBase(name: try ModelName(name), input: try SafeTensorsMemory(tensors, metadata: [:]))
            }
            read = try await registry.createToken(name: "reader", scope: .read).token
            write = try await registry.createToken(name: "writer", scope: .write).token
            admin = try await registry.createToken(name: "admin", scope: .admin).token
            confined = try await registry.createToken(name: "open-admin", scope: .admin, models: "open-*").token
        }

        deinit { try? FileManager.default.removeItem(atPath: path) }

        var router: (router: Router<GraftContext>, routes: RouteTable) {
            GraftServer.makeRouter(registry: registry, configuration: ServerConfiguration())
        }
    }

    /// A route's path with its parameters filled in: the hidden model, its checkpoint.
    static func concrete(_ path: String, model: String) -> String {
        path.replacingOccurrences(of: "{name}", with: model).replacingOccurrences(of: "{ref}", with: "\(model)@1")
            .replacingOccurrences(of: "{digest}", with: "sha256:" + String(repeating: "ab", count: 32))
            .replacingOccurrences(of: "{alias}", with: "prod").replacingOccurrences(of: "{id}", with: "ADV-1")
    }

    static func status(_ client: some TestClientProtocol, _ entry: RouteTable.Entry, model: String, token: String?) async throws -> Int {
        var headers = HTTPFields()
        if let token { headers[.authorization] = "Bearer \(token)" }
        return try await client.execute(
            uri: concrete(entry.path, model: model), method: HTTPRequest.Method(entry.method)!, headers: headers, body: nil
        ).status.code
    }

    @Test("every route but the public ones declares its access; those are exactly the paths authentication lets through")
    func everyRouteDeclares() async throws {
        let fixture = try await Fixture()
        let routes = fixture.router.routes.registered
        #expect(routes.count > 40)
        for entry in routes where entry.access == nil {
            #expect(entry.path == "/healthz" || Web.isPublic(entry.path), "\(entry.method) \(entry.path) answers without a token")
        }
        for entry in routes {
            guard let access = entry.access else { continue }
            let label = "\(entry.method) \(entry.path)"
            #expect(!Web.isPublic(entry.path), "\(label) declares access behind a public path")
            // A path that names a model or a checkpoint declares it, so confinement applies to it.
            // (Copy routes move whole histories: unconfined tokens only, whatever they name.)
            if entry.path.contains("{name}"), !entry.path.hasPrefix("/v1/copy/") { #expect(access == .model(access.scope), "\(label)") }
            if entry.path.contains("{ref}") { #expect(access == .checkpoint(access.scope), "\(label)") }
            // Nothing that changes the registry is open to a read token.
            if !["GET", "HEAD"].contains(entry.method) { #expect(access.scope >= .write, "\(label) changes the registry") }
        }
        let global = Set(routes.filter { $0.access.map { if case .unconfined = $0 { true } else { false } } ?? false }.map(\.path))
        #expect(
            global == [
                "/v1/stats", "/v1/gc", "/v1/verify", "/v1/advisories/{id}/resolve", "/v1/copy/graph", "/v1/copy/models/{name}",
                "/v1/copy/blobs", "/v1/copy",
            ], "operations over every model")
    }

    @Test("for every route: no token is 401 (a page sends to /login), a hidden model 404, a global route 403 to a confined token")
    func generatedFromTheRouteTable() async throws {
        let fixture = try await Fixture()
        let (router, routes) = fixture.router
        let entries = routes.registered
        let app = Application(router: router)
        try await app.test(.router) { client in
            for entry in entries {
                guard let access = entry.access else { continue }
                let label = "\(entry.method) \(entry.path)"
                let anonymous = try await Self.status(client, entry, model: "open-base", token: nil)
                #expect(anonymous == (Web.isPage(entry.path) ? 303 : 401), "\(label) without a token")
                switch access {
                case .model, .checkpoint:
                    // As if the model did not exist, whatever the scope asked for.
                    #expect(try await Self.status(client, entry, model: "hidden-base", token: fixture.confined) == 404, "\(label)")
                case .unconfined:
                    #expect(try await Self.status(client, entry, model: "open-base", token: fixture.confined) == 403, "\(label)")
                case .scope:
                    break
                }
                // A token below the route's scope is refused before the handler runs.
                let below: String? =
                    switch access.scope {
                    case .read: nil
                    case .write: fixture.read
                    case .admin: fixture.write
                    }
                if let below {
                    #expect(try await Self.status(client, entry, model: "open-base", token: below) == 403, "\(label) below its scope")
                }
            }
        }
    }

    @Test("a granted request reaches its handler with the checked model or checkpoint")
    func grantedRequests() async throws {
        let fixture = try await Fixture()
        let app = Application(router: fixture.router.router)
        try await app.test(.router) { client in
            var headers = HTTPFields()
            headers[.authorization] = "Bearer \(fixture.confined)"
            let models = try await client.execute(uri: "/v1/models", method: .get, headers: headers, body: nil)
            #expect(models.status == .ok)
            let names = (try JSONSerialization.jsonObject(with: Data(buffer: models.body)) as? [[String: Any]])?.compactMap {
                $0["name"] as? String
            }
            #expect(names == ["open-base"], "the hidden model is not listed")
            let checkpoint = try await client.execute(uri: "/v1/checkpoints/open-base@1", method: .get, headers: headers, body: nil)
            #expect(checkpoint.status == .ok)
            let hidden = try await client.execute(uri: "/v1/models/hidden-base", method: .get, headers: headers, body: nil)
            #expect(hidden.status == .notFound && !String(buffer: hidden.body).contains("did you mean"))
            headers[.authorization] = "Bearer \(fixture.admin)"
            let stats = try await client.execute(uri: "/v1/stats", method: .get, headers: headers, body: nil)
            #expect(stats.status == .ok)
            headers[.authorization] = "Bearer \(fixture.read)"
            let page = try await client.execute(uri: "/models/hidden-base", method: .get, headers: headers, body: nil)
            #expect(page.status == .ok && String(buffer: page.body).contains("hidden-base"), "an unconfined token sees every model")
        }
    }
}

/// A registry in a temporary directory, removed when released.
final class ScratchRegistry: Sendable {
    let path: String
    let registry: Registry

    init(_ label: String) async throws {
        path = NSTemporaryDirectory() + "graft-\(label)-\(UInt64.random(in: 0 ... .max))"
        registry = try await Registry.create(at: path).registry
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// What a confined token reads: for every GET route and page it may call, generated from the
/// route table, the answer names no model it cannot see and no advisory recorded on one.
@Suite("Confinement: answers name nothing hidden")
struct ConfinementTests {
    @Test("every route and page a confined token reads, in every format, is free of hidden names and advisory ids")
    func nothingHidden() async throws {
        let scratch = try await ScratchRegistry("confined")
        defer { withExtendedLifetime(scratch) {} }
        let registry = scratch.registry
        let tensors = [
            TensorData(name: "w", dtype: .f32, shape: [1024], bytes: (0..<4096).map { UInt8(truncatingIfNeeded: $0) }),
            TensorData(name: "head", dtype: .f32, shape: [4], bytes: [UInt8](repeating: 1, count: 16)),
        ]
        // A hidden teacher with an advisory; a visible student of it, with a checkpoint and a metric.
        _ = try await registry.addBase(
            name: try ModelName("secret-teacher"), input: try SafeTensorsMemory(tensors, metadata: [:]),
            provenance: Provenance(source: "secret-teacher's origin"))
        try await registry.addAdvisory(on: .model(try ModelName("secret-teacher")), id: "ADV-secret", severity: .high)
        _ = try await registry.createStudent(
            name: try ModelName("open-ft"), from: .number(try ModelName("secret-teacher"), 1),
            manifest: .rules([ManifestRule(.freeze, "w")], freezeThrough: nil))
        var tuned = tensors
        tuned[1].bytes[0] ^= 1
        _ = try await registry.addCheckpoint(
            model: try ModelName("open-ft"), input: try SafeTensorsMemory(tuned, metadata: [:]),
            metrics: [try MetricAssignment(name: "acc", value: 0.5)])
        // A hidden student of the visible one, with a metric only it logs.
        _ = try await registry.createStudent(
            name: try ModelName("secret-kid"), from: .number(try ModelName("open-ft"), 1), manifest: .rules([], freezeThrough: nil))
        _ = try await registry.addCheckpoint(
            model: try ModelName("secret-kid"), input: try SafeTensorsMemory(tuned, metadata: [:]),
            metrics: [try MetricAssignment(name: "secret_metric", value: 1)])
        let confined = try await registry.createToken(name: "open", scope: .read, models: "open-*").token
        let reader = try await registry.createToken(name: "all", scope: .read).token
        let digest = Digest.of(tensors[0].bytes).description
        let (router, routes) = GraftServer.makeRouter(registry: registry, configuration: ServerConfiguration())
        var uris: [String] = []
        for entry in routes.registered where entry.method == "GET" {
            guard let access = entry.access, access != .unconfined(access.scope) else { continue }
            let uri = entry.path.replacingOccurrences(of: "{name}", with: "open-ft").replacingOccurrences(of: "{ref}", with: "open-ft@1")
                .replacingOccurrences(of: "{digest}", with: digest)
            switch entry.path {
            case "/v1/models/{name}/lineage": uris += ["json", "dot", "mermaid", "tree"].map { uri + "?format=" + $0 }
            case "/v1/best": uris += [uri + "?metric=acc", uri + "?metric=unknown"]
            case "/v1/diff": uris.append(uri + "?from=open-ft@1&to=open-ft@1")
            case "/v1/checkpoints/{ref}/exposure": uris += [uri + "?to=open-ft@1", uri + "?to=open-ft@1&detail=digests"]
            case "/v1/advisories", "/advisories": uris += [uri, uri + "?all=1"]
            default: uris.append(uri)
            }
        }
        #expect(uris.count >= 20)
        let all = uris
        let app = Application(router: router)
        try await app.test(.router) { client in
            func get(_ uri: String, _ token: String) async throws -> (status: Int, body: String) {
                let response = try await client.execute(
                    uri: uri, method: .get, headers: [.authorization: "Bearer \(token)"], body: nil)
                return (response.status.code, String(buffer: response.body))
            }
            var leaks = 0
            for uri in all {
                let answer = try await get(uri, confined)
                #expect(answer.status < 500, "\(uri): \(answer.status) \(answer.body.prefix(300))")
                for secret in ["secret-teacher", "ADV-secret", "secret-kid", "secret_metric"] where answer.body.contains(secret) {
                    Issue.record("\(uri) names \(secret): \(answer.body.prefix(300))")
                }
                // Unconfined, the same routes do name them: what the test would catch.
                let open = try await get(uri, reader)
                if open.body.contains("secret-teacher") { leaks += 1 }
            }
            #expect(leaks >= 8, "the hidden teacher shows through \(leaks) routes to an unconfined token")
            // The student's parent is there, as a placeholder.
            let shown = try await get("/v1/models/open-ft", confined)
            #expect(shown.body.contains(Redaction.placeholder), "\(shown.body.prefix(400))")
            // Hidden models are left out of lists, not only renamed: lineage descendants,
            // affected descendants, advisories.
            func json(_ body: String) -> Any? { try? JSONSerialization.jsonObject(with: Data(body.utf8)) }
            func descendants(_ token: String) async throws -> Int {
                ((json(try await get("/v1/models/open-ft/lineage", token).body) as? [String: Any])?["descendants"] as? [Any])?.count ?? -1
            }
            let (hiddenKid, shownKid) = (try await descendants(confined), try await descendants(reader))
            #expect(hiddenKid == 0 && shownKid == 1)
            func affected(_ token: String) async throws -> Int {
                (json(try await get("/v1/checkpoints/open-ft@1/affected", token).body) as? [Any])?.count ?? -1
            }
            let (affectedHidden, affectedShown) = (try await affected(confined), try await affected(reader))
            #expect(affectedHidden == 0 && affectedShown == 1, "secret-kid inherits ADV-secret")
            // Exposure to a hidden ancestor is refused as if it did not exist; to a visible one it answers.
            let teacherRef = "/v1/checkpoints/open-ft@1/exposure?to=secret-teacher@1"
            let (hiddenTeacher, shownTeacher) = (try await get(teacherRef, confined), try await get(teacherRef, reader))
            #expect(hiddenTeacher.status == 404 && shownTeacher.status == 200)
            #expect(try await get("/v1/checkpoints/open-ft@1/exposure", reader).status == 400, "`to` is required")
            #expect(try await get("/v1/checkpoints/open-ft@1/exposure?to=open-ft@1&detail=all", reader).status == 400)
            #expect(try await get("/v1/checkpoints/open-ft@1/affected?exposure=all", reader).status == 400)
            func advisories(_ token: String) async throws -> Int {
                (json(try await get("/v1/advisories", token).body) as? [Any])?.count ?? -1
            }
            let (advisoriesHidden, advisoriesShown) = (try await advisories(confined), try await advisories(reader))
            #expect(advisoriesHidden == 0 && advisoriesShown == 1)
        }
    }

    @Test("redaction replaces whole names only, and leaves enumerations and markup alone")
    func wholeNames() {
        let redaction = Redaction(hidden: ["cnn", "base", "ADV-1"])
        #expect(redaction.text("cnn@1 → cnn-ft@2 (ADV-1, ADV-10)") == "(hidden)@1 → cnn-ft@2 ((hidden), ADV-10)")
        let json = String(decoding: redaction.json(Data(#"{"kind":"base","parent":"base@3","paths":[["base","x"]]}"#.utf8)), as: UTF8.self)
        #expect(json == #"{"kind":"base","parent":"(hidden)@3","paths":[["(hidden)","x"]]}"#)
        let page = redaction.html(#"<a class="base" href="/models/base" title="cnn">cnn</a> base <td data-model="cnn">"#)
        #expect(page == #"<a class="base" href="/models/(hidden)" title="(hidden)">(hidden)</a> (hidden) <td data-model="(hidden)">"#)
    }
}

@Suite("Lists: pages of at most 1000, and affected by parent pointers")
struct PaginationTests {
    @Test("limit and cursor walk a list in pages that add up to the whole; bad limits and cursors are 400")
    func pages() async throws {
        let scratch = try await ScratchRegistry("pages")
        defer { withExtendedLifetime(scratch) {} }
        let registry = scratch.registry
        let tensors = [TensorData(name: "w", dtype: .f32, shape: [4], bytes: [UInt8](repeating: 3, count: 16))]
        for name in ["a", "b", "c", "d", "e"] {
            _ = try await registry.addBase(name: try ModelName(name), input: try SafeTensorsMemory(tensors, metadata: [:]))
        }
        try await registry.addAdvisory(on: .model(try ModelName("a")), id: "ADV-a", severity: .low)
        _ = try await registry.createStudent(
            name: try ModelName("a1"), from: .number(try ModelName("a"), 1), manifest: .rules([], freezeThrough: nil))
        _ = try await registry.addCheckpoint(model: try ModelName("a1"), input: try SafeTensorsMemory(tensors, metadata: [:]))
        _ = try await registry.createStudent(
            name: try ModelName("a11"), from: .number(try ModelName("a1"), 1), manifest: .rules([], freezeThrough: nil))
        let token = try await registry.createToken(name: "r", scope: .read).token
        let app = Application(router: GraftServer.makeRouter(registry: registry, configuration: ServerConfiguration()).router)
        try await app.test(.router) { client in
            func get(_ uri: String) async throws -> (status: Int, body: Any?, next: String?, link: String?) {
                let response = try await client.execute(uri: uri, method: .get, headers: [.authorization: "Bearer \(token)"], body: nil)
                let body = try? JSONSerialization.jsonObject(with: Data(buffer: response.body))
                return (
                    response.status.code, body, response.headers[HTTPField.Name("X-Next-Cursor")!],
                    response.headers[HTTPField.Name("Link")!]
                )
            }
            func names(_ body: Any?) -> [String] { (body as? [[String: Any]] ?? []).compactMap { $0["name"] as? String } }
            let whole = names(try await get("/v1/models").body)
            #expect(whole == ["a", "a1", "a11", "b", "c", "d", "e"])
            var walked: [String] = []
            var uri = "/v1/models?limit=3"
            var pages = 0
            while pages < 10 {
                let page = try await get(uri)
                #expect(page.status == 200 && names(page.body).count <= 3)
                walked += names(page.body)
                pages += 1
                guard let next = page.next else {
                    #expect(page.link == nil)
                    break
                }
                #expect(page.link == "</v1/models?limit=3&cursor=\(next)>; rel=\"next\"", "\(page.link ?? "")")
                uri = "/v1/models?limit=3&cursor=\(next)"
            }
            #expect(walked == whole && pages == 3)
            for bad in ["limit=0", "limit=1001", "limit=x", "cursor=abc", "limit=2&cursor=-1", "limit=2&cursor=eDox"] {
                #expect(try await get("/v1/models?" + bad).status == 400, "\(bad)")
            }
            #expect(try await get("/v1/models?limit=1000").status == 200, "the documented maximum")
            // affected: the checkpoint each descendant derives from; whole paths only when asked.
            let pointers = try await get("/v1/checkpoints/a/affected").body as? [[String: Any]] ?? []
            #expect(pointers.map { $0["model"] as? String } == ["a1", "a11"])
            #expect(pointers.map { $0["parent"] as? String } == ["a@1", "a1@1"])
            #expect(pointers.allSatisfy { ($0["path"] as? [String])?.isEmpty == true })
            let paths = try await get("/v1/checkpoints/a/affected?paths=true").body as? [[String: Any]] ?? []
            #expect(paths.map { $0["path"] as? [String] ?? [] } == [["a@1", "a1"], ["a@1", "a1@1", "a11"]])
            let first = try await get("/v1/checkpoints/a/affected?limit=1")
            #expect((first.body as? [[String: Any]])?.count == 1 && first.next != nil)
            // A lineage's descendants page the same way.
            func descendants(_ body: Any?) -> [String] {
                ((body as? [String: Any])?["descendants"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
            }
            let lineage = try await get("/v1/models/a/lineage?limit=1")
            #expect(descendants(lineage.body) == ["a1"] && lineage.next != nil)
            let rest = try await get("/v1/models/a/lineage?limit=1&cursor=\(lineage.next ?? "")")
            #expect(descendants(rest.body) == ["a11"] && rest.next == nil)
            #expect(descendants(try await get("/v1/models/a/lineage").body) == ["a1", "a11"])
        }
    }
}
