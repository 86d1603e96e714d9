import Foundation
public import GraftCore
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
public import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization

/// How `graft serve` listens and what it accepts.
public struct ServerConfiguration: Sendable {
    public var host: String
    /// 0 picks a free port (announced by `onListening`).
    public var port: Int
    /// PEM certificate chain and private key: HTTPS when both are given.
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// A connection that sends nothing (a stalled upload included) for this long is closed.
    public var idleTimeout: Duration
    /// The largest body of the routes that take large ones (an upload proposal or commit carries
    /// every tensor's digest and the header; a curve import its CSV or JSON lines).
    public var maxJSONBytes: Int
    /// How many of those large bodies are read and processed at once; more wait for a slot (at
    /// most `largeBodyWait`, then 503 busy). With `maxJSONBytes` this bounds the server's memory.
    public var largeBodies: Int
    public var largeBodyWait: Duration
    /// How long a web session lives (idle, and in all); a session's cookie is its random id.
    public var sessionExpiry: SessionExpiry
    /// How long an upload proposal's blobs may be sent after it.
    public var uploadWindow: Duration
    /// Keys one of which must have signed every base a client registers (its `model.sig`
    /// verified against the uploaded files); empty: signatures are optional.
    public var requireSignedBases: [VerifyingKey] = []
    /// When set (`--compact-idle`), `graft compact` runs in the background each time the server
    /// has served requests and then received none for this long (and once after it starts).
    public var compactIdle: Duration?

    public init(
        host: String = "127.0.0.1", port: Int = 8470, tlsCertificate: String? = nil, tlsKey: String? = nil,
        idleTimeout: Duration = .seconds(60),
        maxJSONBytes: Int = 16 << 20, largeBodies: Int = 2, largeBodyWait: Duration = .seconds(30), uploadWindow: Duration = .seconds(3600)
    ) {
        (self.host, self.port, self.tlsCertificate, self.tlsKey) = (host, port, tlsCertificate, tlsKey)
        (self.idleTimeout, self.maxJSONBytes, self.uploadWindow) = (idleTimeout, maxJSONBytes, uploadWindow)
        (self.largeBodies, self.largeBodyWait) = (largeBodies, largeBodyWait)
        sessionExpiry = SessionExpiry()
    }

    /// Parses `HOST:PORT` (`[::1]:8470` for IPv6).
    public static func parseListen(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            return nil
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        return (host, port)
    }
}

/// When the server last started or finished a request, and how many it has had.
final class ServerActivity: Sendable {
    private let state = Mutex<(requests: Int, last: ContinuousClock.Instant)>((0, .now))

    func touch(counting: Bool) {
        state.withLock { state in
            if counting { state.requests += 1 }
            state.last = .now
        }
    }

    func snapshot() -> (requests: Int, quiet: Duration) { state.withLock { ($0.requests, .now - $0.last) } }
}

/// Under TLS every answer (errors included) tells browsers to use HTTPS only, for a year
/// (`Strict-Transport-Security`), so a later visit cannot be downgraded to plain HTTP.
struct StrictTransportSecurity: RouterMiddleware {
    func handle(_ request: Request, context: GraftContext, next: (Request, GraftContext) async throws -> Response) async throws -> Response
    {
        var response = try await next(request, context)
        response.headers[HTTPField.Name("Strict-Transport-Security")!] = "max-age=31536000"
        return response
    }
}

extension ServerConfiguration {
    /// Whether `host` is a loopback address (or `localhost`): only there is plain HTTP private.
    public static func isLoopback(_ host: String) -> Bool {
        let lowered = host.lowercased()
        if lowered == "localhost" || lowered == "::1" || lowered == "0:0:0:0:0:0:0:1" { return true }
        let octets = lowered.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }
}

/// `graft serve`: the registry's HTTP API (docs/API.md, docs/openapi.json).
public enum GraftServer {
    /// Serves `registry` until SIGTERM or SIGINT, then stops accepting connections, lets the
    /// requests in flight finish (a commit is one transaction: it lands whole or not at all)
    /// and returns.
    ///
    /// - Parameter onListening: called once with the URL the server listens on.
    public static func run(
        registry: Registry, configuration: ServerConfiguration, logger: Logger,
        onListening: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws {
        let activity = ServerActivity()
        let app = try makeApplication(
            registry: registry, configuration: configuration, activity: activity, logger: logger, onListening: onListening)
        guard let idle = configuration.compactIdle else {
            try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
            return
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint]) }
            group.addTask { await compactWhenIdle(registry: registry, idle: idle, activity: activity, logger: logger) }
            // The server ending (a signal, an error) ends the compaction between two blobs.
            try await group.next()
            group.cancelAll()
        }
    }

    /// `--compact-idle`: runs `graft compact` (one lane, gentle on the requests that may come)
    /// whenever the server has served requests since the last run and then been quiet for `idle`.
    static func compactWhenIdle(registry: Registry, idle: Duration, activity: ServerActivity, logger: Logger) async {
        var compactedAt = -1  // the request count at the last run: none yet
        while !Task.isCancelled {
            try? await Task.sleep(for: min(idle / 4, .seconds(5)))
            let (requests, quiet) = activity.snapshot()
            guard requests != compactedAt, quiet >= idle, !Task.isCancelled else { continue }
            compactedAt = requests
            do {
                let result = try await registry.compact(lanes: 1)
                guard result.examined > 0 else { continue }
                let saved = String(format: "%.1f%%", 100 * result.saving)
                let sizes = "\(result.rawBytes) bytes, stored \(result.storedBytes) (\(saved) saved)"
                logger.info("compact: examined \(result.examined) blob(s) of \(sizes)")
                for skipped in result.skipped { logger.error("compact: skipped \(skipped)") }
            } catch {
                logger.error("compact: \(error)")
            }
        }
    }

    /// The router with its middleware (access line, error answers, authentication) and every
    /// route of the API and the web view, each with the access it declares.
    static func makeRouter(registry: Registry, configuration: ServerConfiguration, activity: ServerActivity = ServerActivity()) -> (
        router: Router<GraftContext>, routes: RouteTable
    ) {
        let api = API(registry: registry, configuration: configuration)
        let router = Router(context: GraftContext.self)
        router.add(middleware: AccessLog(activity: activity))
        if configuration.tlsCertificate != nil { router.add(middleware: StrictTransportSecurity()) }
        router.add(middleware: ErrorAnswer())
        router.add(middleware: Authentication(registry: registry, expiry: configuration.sessionExpiry))
        let routes = RouteTable(router, registry: registry)
        api.register(on: routes)
        Web(api: api, secure: configuration.tlsCertificate != nil).register(on: routes)
        return (router, routes)
    }

    static func makeApplication(
        registry: Registry, configuration: ServerConfiguration, activity: ServerActivity = ServerActivity(), logger: Logger,
        onListening: @escaping @Sendable (String) -> Void
    ) throws -> some ApplicationProtocol {
        let router = makeRouter(registry: registry, configuration: configuration, activity: activity).router
        let http1 = HTTPServerBuilder.http1(configuration: .init(idleTimeout: .init(configuration.idleTimeout)))
        let scheme: String
        let server: HTTPServerBuilder
        if let certificate = configuration.tlsCertificate, let key = configuration.tlsKey {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
            var tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            // TLS 1.0 and 1.1 are deprecated (RFC 8996): a client that offers only them is refused.
            tls.minimumTLSVersion = .tlsv12
            server = try .tls(http1, tlsConfiguration: tls)
            scheme = "https"
        } else {
            server = http1
            scheme = "http"
        }
        return Application(
            router: router, server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "graft"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.port
                let host = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
                onListening("\(scheme)://\(host):\(port)")
            },
            logger: logger)
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
