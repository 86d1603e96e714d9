import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A throwaway PostgreSQL cluster for tests (issue 14's metadata store): Debian's `initdb` and
/// `pg_ctl` in a temporary directory owned by the `postgres` user (PostgreSQL refuses to run
/// as root), listening on 127.0.0.1 on a free port with trust authentication for loopback
/// only, fsync off (it is thrown away). Stopped (`pg_ctl stop -m immediate`) and removed by
/// `stop()` or when dropped, so a failing test leaves no server behind.
public final class PostgresCluster: @unchecked Sendable {
    public let port: Int
    public let directory: String
    let bin: String
    private var running = true

    /// The newest installed server's binaries (`/usr/lib/postgresql/N/bin`), or nil.
    public static var binaries: String? {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        return versions.last.map { "\(root)/\($0)/bin" }.flatMap { FileManager.default.isExecutableFile(atPath: $0 + "/initdb") ? $0 : nil }
    }

    public init() throws {
        guard let bin = Self.binaries else {
            throw HelperError("no PostgreSQL server is installed (make test installs Debian's postgresql)")
        }
        self.bin = bin
        directory = NSTemporaryDirectory() + "graft-pg-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        port = try Self.freePort()
        let data = directory + "/data"
        try Self.asPostgres(["/bin/chown", "-R", "postgres:postgres", directory], root: true)
        try Self.asPostgres([bin + "/initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
        try start()
        watchOverParent()
    }

    private func start() throws {
        let options =
            "-c listen_addresses=127.0.0.1 -c port=\(port) -c unix_socket_directories=\(directory) -c fsync=off -c full_page_writes=off"
        // The server outlives pg_ctl and would hold a pipe open: pg_ctl's output goes to a file.
        try Self.asPostgres(
            [bin + "/pg_ctl", "-D", directory + "/data", "-l", directory + "/server.log", "-o", options, "-w", "-t", "60", "start"],
            output: directory + "/pg_ctl.log")
    }

    /// Stops the cluster and removes it once this process is gone, however it ends (a crash, a
    /// SIGKILL, or an exit before every test's handle was released): `stop()` covers the rest.
    private func watchOverParent() {
        let stop = ([bin + "/pg_ctl", "-D", directory + "/data", "-m", "immediate", "-w", "stop"]).map(shellQuote).joined(separator: " ")
        let command = getuid() == 0 ? "/usr/sbin/runuser -u postgres -- " + stop : stop
        watchdog("\(command) >/dev/null 2>&1; rm -rf \(shellQuote(directory))")
    }

    /// Stops the server as a crash would (`-m immediate`: connections cut, no checkpoint),
    /// keeps it down for `seconds`, and starts it again on the same port with the same data.
    public func restart(downFor seconds: Double) throws {
        try Self.asPostgres([bin + "/pg_ctl", "-D", directory + "/data", "-m", "immediate", "-w", "stop"])
        usleep(UInt32(seconds * 1_000_000))
        try start()
    }

    /// `postgresql://postgres@127.0.0.1:PORT/DATABASE`
    public func url(database: String = "postgres") -> String { "postgresql://postgres@127.0.0.1:\(port)/\(database)" }

    /// Runs SQL through `psql` and returns its unaligned output.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") throws -> String {
        let result = try runProcess(
            bin + "/psql",
            ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", database, "-Atq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        guard result.status == 0 else { throw HelperError("psql: \(result.stderr)") }
        return result.stdout
    }

    public func stop() {
        guard running else { return }
        running = false
        _ = try? Self.asPostgres([bin + "/pg_ctl", "-D", directory + "/data", "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    deinit { stop() }

    /// Runs a command as the `postgres` user when this process is root (PostgreSQL refuses
    /// root), else as it is; with `root`, as it is.
    static func asPostgres(_ command: [String], root: Bool = false, output: String? = nil) throws {
        if root && getuid() != 0 { return }  // not root: the directory is ours already, no chown
        let (executable, arguments): (String, [String]) =
            root || getuid() != 0 ? (command[0], Array(command.dropFirst())) : ("/usr/sbin/runuser", ["-u", "postgres", "--"] + command)
        if let output {
            // pg_ctl's output goes to a file: the server it leaves behind would hold a pipe open.
            let termination = try ChildProcess(executable, arguments, stdout: .file(output), stderr: .stdout).wait()
            guard termination == .exited(0) else {
                throw HelperError(
                    "\(command[0].split(separator: "/").last ?? ""): \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")")
            }
            return
        }
        let result = try runProcess(executable, arguments)
        guard result.status == 0 else {
            throw HelperError("\(command[0].split(separator: "/").last ?? ""): \(result.stderr)\(result.stdout)")
        }
    }

    /// A port nothing listens on now (bound to 0 and released).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw HelperError("no free port: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
