import Foundation
import GraftTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// A real `graft serve` process on a free loopback port, stopped by `stop()` or when dropped
/// (tests `defer` the stop, so a failing test stops its server too).
final class TestServer: @unchecked Sendable {
    let process: ChildProcess
    let url: String
    let port: Int
    let logPath: String

    init(registry: String, arguments: [String] = [], environment: [String: String] = [:], logDirectory: String) throws {
        logPath = logDirectory + "/serve-\(UInt32.random(in: 0 ... .max)).log"
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { _, new in new }
        process = try ChildProcess(
            graftBinary, ["serve", "--registry", registry, "--listen", "127.0.0.1:0"] + arguments, environment: env,
            stdout: .pipe, stderr: .file(logPath))
        // The first stdout line names the URL; wait for it at most 30 s.
        let line = LineReader(process.output!)
        guard let first = line.next(timeout: 30), let range = first.range(of: "http://127.0.0.1:") ?? first.range(of: "https://127.0.0.1:")
        else {
            process.stop(grace: 5)
            throw HelperError("graft serve did not announce its address: \((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")")
        }
        let rest = first[range.lowerBound...].split(separator: " ")[0]
        url = String(rest)
        port = Int(rest.split(separator: ":").last!)!
    }

    /// SIGTERM, then SIGKILL after 20 s; how it ended.
    @discardableResult
    func stop() -> ChildProcess.Termination { process.stop(grace: 20) }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit { stop() }

    func request(
        _ method: String, _ path: String, token: String? = nil, headers: [String: String] = [:], body: [UInt8]? = nil
    ) throws -> HTTPAnswer {
        try rawHTTP(port: port, method: method, path: path, token: token, headers: headers, body: body)
    }
}

/// Reads lines from a pipe on a background thread, so a caller can wait with a deadline.
final class LineReader: @unchecked Sendable {
    private let handle: FileHandle
    private let lock = NSLock()
    private var buffer = Data()
    private let ready = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        self.handle = handle
        Thread.detachNewThread { [self] in
            while true {
                let data = handle.availableData
                lock.lock()
                buffer.append(data)
                lock.unlock()
                ready.signal()
                if data.isEmpty { return }
            }
        }
    }

    func next(timeout: Double) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            lock.lock()
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                lock.unlock()
                return line
            }
            lock.unlock()
            _ = ready.wait(timeout: .now() + 0.1)
        }
        return nil
    }
}

struct HTTPAnswer {
    var status: Int
    /// Lowercased names.
    var headers: [String: String]
    var body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: Any? { try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed]) }
    var object: [String: Any] { json as? [String: Any] ?? [:] }
    var array: [[String: Any]] { json as? [[String: Any]] ?? [] }
}

/// A loopback TCP connection with a 30 s receive timeout.
final class Connection {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HelperError("socket: \(errno)") }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            throw HelperError("connect to 127.0.0.1:\(port): errno \(errno)")
        }
    }

    /// Sends everything; false when the peer closed the connection.
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }

    /// Everything until the peer closes (or the receive timeout).
    func receiveAll() -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return out }
            out.append(contentsOf: buffer[..<n])
        }
    }

    deinit { close(fd) }
}

func requestBytes(method: String, path: String, token: String?, headers: [String: String], body: [UInt8]?, contentLength: Int? = nil)
    -> [UInt8]
{
    var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if let token { head += "Authorization: Bearer \(token)\r\n" }
    for (name, value) in headers { head += "\(name): \(value)\r\n" }
    if let length = contentLength ?? body?.count { head += "Content-Length: \(length)\r\n" }
    head += "\r\n"
    return Array(head.utf8) + (body ?? [])
}

/// One HTTP/1.1 request over a fresh connection.
func rawHTTP(port: Int, method: String, path: String, token: String?, headers: [String: String] = [:], body: [UInt8]? = nil) throws
    -> HTTPAnswer
{
    let connection = try Connection(port: port)
    connection.send(requestBytes(method: method, path: path, token: token, headers: headers, body: body))
    return try parseAnswer(connection.receiveAll())
}

func parseAnswer(_ bytes: [UInt8]) throws -> HTTPAnswer {
    guard let end = bytes.firstRange(of: Array("\r\n\r\n".utf8)) else { throw HelperError("no HTTP answer (\(bytes.count) bytes)") }
    let head = String(decoding: bytes[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
    let statusParts = head[0].split(separator: " ")
    guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw HelperError("bad status line \(head[0])") }
    var headers: [String: String] = [:]
    for line in head.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    var body = Array(bytes[end.upperBound...])
    if headers["transfer-encoding"] == "chunked" {
        var decoded: [UInt8] = []
        var rest = body[...]
        while let lineEnd = rest.firstRange(of: Array("\r\n".utf8)) {
            let size = Int(String(decoding: rest[..<lineEnd.lowerBound], as: UTF8.self), radix: 16) ?? 0
            if size == 0 { break }
            let start = lineEnd.upperBound
            decoded.append(contentsOf: rest[start..<(start + size)])
            rest = rest[(start + size + 2)...]
        }
        body = decoded
    }
    return HTTPAnswer(status: status, headers: headers, body: body)
}
