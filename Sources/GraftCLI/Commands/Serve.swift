public import ArgumentParser
import Foundation
public import Graft
import GraftServer
import Logging

extension GraftCommand {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve the registry over HTTP: the JSON API under /v1 for remote CLIs and clients, and its web view.",
            discussion: """
                Every route but /healthz needs `Authorization: Bearer TOKEN`; create tokens with
                `graft token create`. There are no default credentials. Other machines then use
                `--registry http://HOST:PORT` (or GRAFT_REGISTRY) with GRAFT_TOKEN set. Listening
                on another address than loopback without --tls-cert sends tokens in clear (a
                warning says so at start). HTTPS accepts TLS 1.2 and 1.3 only and sends
                Strict-Transport-Security.
                SIGTERM or SIGINT stops accepting connections and lets requests in flight finish.
                One access line per request goes to stderr. API: docs/API.md, docs/openapi.json.
                The web view: open http://HOST:PORT/ in a browser and sign in with a read token
                (docs/WEB.md).
                """)

        @Option(help: ArgumentHelp("Address to listen on, HOST:PORT; port 0 picks a free one (printed on stdout).", valueName: "host:port"))
        var listen = "127.0.0.1:8470"
        @Option(
            name: .customLong("tls-cert"), help: ArgumentHelp("PEM certificate chain: serve HTTPS (with --tls-key).", valueName: "file"))
        var tlsCert: String?
        @Option(name: .customLong("tls-key"), help: ArgumentHelp("PEM private key of --tls-cert.", valueName: "file"))
        var tlsKey: String?
        @Option(
            name: .customLong("idle-timeout"),
            help: ArgumentHelp("Close a connection silent this many seconds (a stalled upload included).", valueName: "seconds"))
        var idleTimeout: Double = 60
        @Option(
            name: .customLong("max-body-mib"),
            help: ArgumentHelp(
                "The largest upload proposal, commit or curve import body, in MiB (1 to 1024); two are processed at a time.",
                valueName: "mib"))
        var maxBodyMiB = 16
        @Option(
            name: .customLong("require-signed-bases"), parsing: .upToNextOption,
            help: ArgumentHelp(
                "PEM public keys: refuse a base registered by a client unless its model.sig verifies with one of them.", valueName: "pem"))
        var requireSignedBases: [String] = []
        @Flag(
            name: .customLong("compact-idle"),
            help: "Run `graft compact` in the background once the server has been quiet (--compact-after) after serving requests.")
        var compactIdle = false
        @Option(
            name: .customLong("compact-after"),
            help: ArgumentHelp("How many quiet seconds --compact-idle waits for.", valueName: "seconds"))
        var compactAfter: Double = 60
        @OptionGroup var options: RegistryOptions

        func validate() throws {
            if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
            if ServerConfiguration.parseListen(listen) == nil { throw ValidationError("--listen takes HOST:PORT, e.g. 127.0.0.1:8470") }
            if !(idleTimeout > 0 && idleTimeout <= 86400) { throw ValidationError("--idle-timeout takes 0 < seconds ≤ 86400") }
            if !(1...1024).contains(maxBodyMiB) { throw ValidationError("--max-body-mib takes 1 to 1024") }
            if !(compactAfter >= 1 && compactAfter <= 86400) { throw ValidationError("--compact-after takes 1 ≤ seconds ≤ 86400") }
        }

        func run() async throws {
            let (host, port) = ServerConfiguration.parseListen(listen)!
            let registry: Registry
            do { registry = try await options.openLocal() } catch { throw fail(error) }
            var configuration = ServerConfiguration(
                host: host, port: port, tlsCertificate: tlsCert, tlsKey: tlsKey, idleTimeout: .milliseconds(Int64(idleTimeout * 1000)),
                maxJSONBytes: maxBodyMiB << 20)
            configuration.compactIdle = compactIdle ? .milliseconds(Int64(compactAfter * 1000)) : nil
            do throws(GraftError) {
                configuration.requireSignedBases = try requireSignedBases.map { (file) throws(GraftError) in try readPublicKey(file) }
            } catch { throw fail(error) }
            if tlsCert == nil, !ServerConfiguration.isLoopback(host) {
                FileHandle.standardError.write(
                    Data(
                        """
                        graft serve: warning: listening on \(host) without TLS: tokens, session cookies and model bytes cross the \
                        network in clear; give --tls-cert and --tls-key, or put a TLS-terminating proxy in front and listen on \
                        127.0.0.1

                        """.utf8))
            }
            var logger = Logger(label: "graft.serve") { StreamLogHandler.standardError(label: $0) }
            logger.logLevel = .info
            do {
                try await GraftServer.run(registry: registry, configuration: configuration, logger: logger) { url in
                    print("graft serve: listening on \(url) (registry \(registry.layout.root))")
                    fflush(nil)
                }
            } catch {
                printError("cannot serve on \(listen): \(error)")
                throw ExitCode(ErrorKind.unavailable.exitCode)
            }
        }
    }

    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage the tokens `graft serve` accepts.", subcommands: [Create.self, List.self, Revoke.self])
    }
}

extension GraftCommand.Token {
    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a token; its secret is printed once, alone on the last line (stored only as a hash).",
            discussion: """
                read: lists, shows, downloads, best, lineage. write: also creates models, commits,
                logs metrics and curves, tags. admin: also removes, prunes, runs gc and manages
                advisories. --models confines the token to the models a glob matches: it can
                neither read nor learn of any other.
                """)

        @Argument(help: ArgumentHelp("A label for the token (same rules as a model name).", valueName: "name"))
        var name: String
        @Option(help: "read, write or admin.")
        var scope: TokenScope
        @Option(help: ArgumentHelp("Confine the token to the models this glob matches, e.g. 'sweep-*'.", valueName: "pattern"))
        var models: String?
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            try await GraftCLI.run { () throws(GraftError) in
                let created = try await options.openLocal().createToken(name: name, scope: scope, models: models)
                if output.json { return try emitJSON(created) }
                print(
                    """
                    created token \(created.name) (scope \(created.scope.rawValue)\(created.models.map { ", models \($0)" } ?? ""));\
                     it is shown only now:
                    """
                )
                print(created.token)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the active tokens (never their secrets).")
        @OptionGroup var options: RegistryOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            try await GraftCLI.run { () throws(GraftError) in
                let tokens = try await options.openLocal().tokens()
                if output.json { return try emitJSON(tokens) }
                if tokens.isEmpty { return print("no tokens; create one with `graft token create NAME --scope read`") }
                print(
                    table(
                        ["NAME", "SCOPE", "MODELS", "CREATED"], tokens.map { [$0.name, $0.scope.rawValue, $0.models ?? "*", $0.createdAt] })
                )
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token: the server refuses it from the next request on.")
        @Argument(help: ArgumentHelp("The token's name.", valueName: "name"))
        var name: String
        @OptionGroup var options: RegistryOptions

        func run() async throws {
            try await GraftCLI.run { () throws(GraftError) in
                try await options.openLocal().revokeToken(name)
                print("revoked token \(name)")
            }
        }
    }
}

extension TokenScope: ExpressibleByArgument {}
