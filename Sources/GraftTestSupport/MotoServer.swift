public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// moto's S3 server (`python -m moto.server`, installed into .venv by `make test`) on a free
/// loopback port, stopped by `stop()` or when dropped. moto does not check signatures (SigV4
/// is proved by `SigV4Tests` on AWS's vectors); it does check the protocol: keys, ranges,
/// listings and their pages, multipart assembly and part sizes, error codes.
public final class MotoServer: @unchecked Sendable {
    let process: ChildProcess
    public let url: URL
    let log: String

    public init() throws {
        let directory = NSTemporaryDirectory() + "graft-moto-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        log = directory + "/moto.log"
        process = try ChildProcess(
            ReferencePython.python, ["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"], directory: directory,
            stdout: .file(log), stderr: .stdout)
        // Killed and removed once this process is gone, however it ends.
        let pid = process.pid
        watchdog("grep -q moto.server /proc/\(pid)/cmdline 2>/dev/null && kill -9 \(pid); rm -rf \(shellQuote(directory))")
        let deadline = Date().addingTimeInterval(30)
        while true {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let range = text.range(of: "Running on http://127.0.0.1:") {
                let port = text[range.upperBound...].prefix { $0.isNumber }
                url = URL(string: "http://127.0.0.1:\(port)")!
                return
            }
            guard process.isRunning, Date() < deadline else {
                process.stop(grace: 5)
                try? FileManager.default.removeItem(atPath: directory)
                throw HelperError("moto's server did not start (`make test` installs moto[server] into .venv): \(text)")
            }
            usleep(50_000)
        }
    }

    public func stop() {
        // Its state is in memory and thrown away: SIGKILL loses nothing (SIGINT takes 1.5 s).
        process.signal(SIGKILL)
        process.wait()
        try? FileManager.default.removeItem(atPath: (log as NSString).deletingLastPathComponent)
    }

    deinit { stop() }
}
