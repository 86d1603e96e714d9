import CSpawn
public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A child process that holds exactly the descriptors it is given — its three standard streams
/// — and nothing else of this process's, however many other tests spawn processes or open
/// pipes at the same moment.
///
/// Why not Foundation's `Process`: it closes the parent's other descriptors by listing them
/// first and spawning after, so a pipe another thread opens in between leaks into the child.
/// A test then waits for that pipe's end of file until the child exits, which for a server or
/// a watchdog is the end of the run: `make test` hung in CI that way. Here the child closes
/// every descriptor from 3 up as it starts (`posix_spawn_file_actions_addclosefrom_np`), and
/// the pipes made here are close-on-exec from birth (`pipe2(O_CLOEXEC)`), so a process that
/// anything else spawns cannot inherit them either.
public final class ChildProcess: @unchecked Sendable {
    /// Where a standard stream comes from or goes.
    public enum Stream: Sendable {
        /// `/dev/null`.
        case null
        /// A pipe; this process keeps the other end (`input`, `output`, `error`).
        case pipe
        /// A file, created or truncated.
        case file(String)
        /// Standard error only: wherever standard output goes.
        case stdout
    }

    /// How a child ended.
    public enum Termination: Sendable, Equatable {
        case exited(Int32)
        case killed(signal: Int32)

        /// The exit code, or 128 + the signal as a shell reports it.
        public var status: Int32 {
            switch self {
            case .exited(let code): code
            case .killed(let signal): 128 + signal
            }
        }
    }

    public let pid: Int32
    /// What was started, for the hang report.
    public let command: String
    /// This process's end of the child's standard input, output and error when each is `.pipe`.
    public let input: FileHandle?
    public let output: FileHandle?
    public let error: FileHandle?

    private let lock = NSLock()
    private var ended: Termination?

    /// Starts `executable` (a path; nothing is looked up) with `arguments`.
    ///
    /// - Parameters:
    ///   - environment: the child's whole environment; this process's when nil.
    ///   - directory: the child's working directory; this process's when nil.
    ///   - newSession: in a session and process group of its own (`setsid`), so that signals
    ///     sent to this process's group (a CI job stopped, a terminal's Ctrl-C) pass it by: for
    ///     what must outlive this process, such as a watchdog.
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, directory: String? = nil,
        stdin: Stream = .null, stdout: Stream = .null, stderr: Stream = .null, newSession: Bool = false
    ) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // The child's ends of the pipes, closed here once it has its copies.
        var childEnds: [Int32] = []
        var parentEnds: [Int32: FileHandle] = [:]
        defer { childEnds.forEach { close($0) } }
        for (target, stream) in [(Int32(0), stdin), (1, stdout), (2, stderr)] {
            switch stream {
            case .null:
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            case .file(let path):
                posix_spawn_file_actions_addopen(&actions, target, path, target == 0 ? O_RDONLY : O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            case .stdout:
                posix_spawn_file_actions_adddup2(&actions, 1, target)
            case .pipe:
                var ends: [Int32] = [-1, -1]
                guard graft_pipe_cloexec(&ends) == 0 else {
                    parentEnds.values.forEach { try? $0.close() }
                    throw HelperError("pipe: errno \(errno)")
                }
                let (mine, theirs) = target == 0 ? (ends[1], ends[0]) : (ends[0], ends[1])
                childEnds.append(theirs)
                parentEnds[target] = FileHandle(fileDescriptor: mine, closeOnDealloc: true)
                // dup2 clears close-on-exec on the child's copy only.
                posix_spawn_file_actions_adddup2(&actions, theirs, target)
            }
        }
        // Everything else is closed in the child as it starts: no window for a leak.
        graft_spawn_addclosefrom(&actions, 3)
        if let directory { graft_spawn_addchdir(&actions, directory) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Signals as a shell would leave them: none blocked, SIGPIPE back to its default
        // (this process ignores it so a child that stops reading cannot kill it).
        var empty = sigset_t(), defaults = sigset_t()
        sigemptyset(&empty)
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var flags = Int32(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        if newSession { flags |= Int32(graft_spawn_setsid_flag()) }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let envp = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer { envp?.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned =
            envp.map { envp in posix_spawn(&pid, executable, &actions, &attributes, argv, envp) }
            ?? posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard spawned == 0 else {
            parentEnds.values.forEach { try? $0.close() }
            throw HelperError("cannot start \(executable): \(String(cString: strerror(spawned)))")
        }
        defer { if !newSession { HangGuard.remember(self) } }
        self.pid = pid
        command = ([executable] + arguments).joined(separator: " ")
        input = parentEnds[0]
        output = parentEnds[1]
        error = parentEnds[2]
    }

    /// How it ended, or nil while it runs (never blocks).
    public var termination: Termination? {
        lock.withLock {
            if ended == nil {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    ended = Self.decode(status)
                    HangGuard.forget(self)
                }
            }
            return ended
        }
    }

    public var isRunning: Bool { termination == nil }

    /// Waits for it to end.
    @discardableResult
    public func wait() -> Termination {
        // Wait without reaping, so `termination` and `signal` never race a reused pid.
        var info = siginfo_t()
        while termination == nil {
            if waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno != EINTR { break }
        }
        return termination ?? .exited(-1)
    }

    /// Waits at most `seconds`; nil if it is still running then.
    public func wait(seconds: Double) -> Termination? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let termination { return termination }
            usleep(10_000)
        }
        return termination
    }

    /// Sends `signal` while it has not been reaped (its pid cannot have been reused).
    public func signal(_ signal: Int32) {
        lock.withLock {
            if ended == nil { _ = kill(pid, signal) }
        }
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace` seconds; how it ended.
    @discardableResult
    public func stop(grace: Double) -> Termination {
        if isRunning {
            signal(SIGTERM)
            if wait(seconds: grace) == nil { signal(SIGKILL) }
        }
        return wait()
    }

    private static func decode(_ status: Int32) -> Termination {
        let signal = status & 0x7F
        return signal == 0 ? .exited((status >> 8) & 0xFF) : .killed(signal: signal)
    }
}

/// Runs `script` (sh) once this process has exited, from a detached shell that polls for it
/// every second: how a test's servers are stopped even when the test process is killed. In a
/// session of its own, so that stopping this process's group (a CI job's timeout) stops this
/// process and leaves the watchdog to clean up after it.
public func watchdog(_ script: String) {
    _ = try? ChildProcess("/bin/sh", ["-c", "while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done; \(script)"], newSession: true)
}

/// `text` as one single-quoted sh word.
func shellQuote(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }
