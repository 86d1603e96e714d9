public import GraftCore
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
public import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

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
        let app = try makeApplication(registry: registry, configuration: configuration, logger: logger, onListening: onListening)
        try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
    }

    /// The router with its middleware (access line, error answers, authentication) and every
    /// route of the API and the web view, each with the access it declares.
    static func makeRouter(registry: Registry, configuration: ServerConfiguration) -> (router: Router<GraftContext>, routes: RouteTable) {
        let api = API(registry: registry, configuration: configuration)
        let router = Router(context: GraftContext.self)
        router.add(middleware: AccessLog())
        if configuration.tlsCertificate != nil { router.add(middleware: StrictTransportSecurity()) }
        router.add(middleware: ErrorAnswer())
        router.add(middleware: Authentication(registry: registry, expiry: configuration.sessionExpiry))
        let routes = RouteTable(router, registry: registry)
        api.register(on: routes)
        Web(api: api, secure: configuration.tlsCertificate != nil).register(on: routes)
        return (router, routes)
    }

    static func makeApplication(
        registry: Registry, configuration: ServerConfiguration, logger: Logger, onListening: @escaping @Sendable (String) -> Void
    ) throws -> some ApplicationProtocol {
        let router = makeRouter(registry: registry, configuration: configuration).router
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
