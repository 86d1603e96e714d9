import Foundation
import GraftTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The descriptors `pid` holds, by number.
private func descriptors(of pid: Int32) -> [Int32] {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).compactMap { Int32($0) }.sorted()
}

/// A freshly started child's descriptors once its start-up is over: between exec and `main` the
/// dynamic loader opens and closes the libraries it maps, and on a loaded machine a look at
/// `/proc` caught one of those (fd 3) in flight. A descriptor the child inherited stays for its
/// whole life, so waiting (5 s at most) for the three standard streams still catches every leak.
private func settledDescriptors(of pid: Int32) -> [Int32] {
    let deadline = ContinuousClock.now + .seconds(5)
    var seen = descriptors(of: pid)
    while seen != [0, 1, 2], ContinuousClock.now < deadline {
        usleep(10_000)
        seen = descriptors(of: pid)
    }
    return seen
}

/// The test processes' own child processes: a test suite that hangs is the cost of getting these
/// wrong (a pipe leaked into a long-lived child keeps its reader waiting for an end of file).
@Suite("Child processes of the tests")
struct ChildProcessTests {
    @Test("a child holds its three standard streams and nothing else this process has open, close-on-exec or not")
    func onlyStandardStreams() throws {
        // Descriptors a careless caller left inheritable: a pipe and a file.
        var leaky: [Int32] = [-1, -1]
        #expect(pipe(&leaky) == 0)
        let file = open("/dev/zero", O_RDONLY)
        defer { close(leaky[0]); close(leaky[1]); close(file) }
        #expect(fcntl(leaky[1], F_GETFD) & FD_CLOEXEC == 0 && fcntl(file, F_GETFD) & FD_CLOEXEC == 0)

        let child = try ChildProcess("/bin/sleep", ["30"], stdin: .pipe, stdout: .pipe, stderr: .stdout)
        defer { child.stop(grace: 0) }
        #expect(settledDescriptors(of: child.pid) == [0, 1, 2])
        // Its streams are the pipes it was given: the one this process writes, the one it reads.
        let stdin = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(child.pid)/fd/0")
        let stdout = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(child.pid)/fd/1")
        #expect(stdin.hasPrefix("pipe:") && stdout.hasPrefix("pipe:") && stdin != stdout)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(child.pid)/fd/2") == stdout)
        // This process's ends never reach a child, whoever spawns it.
        for end in [child.input, child.output].compactMap({ $0?.fileDescriptor }) {
            #expect(fcntl(end, F_GETFD) & FD_CLOEXEC != 0)
        }
    }

    @Test("one child's output reaches its end of file when it exits, though a long-lived child was started meanwhile")
    func endOfFileDespiteOthers() throws {
        let talker = try ChildProcess("/bin/sh", ["-c", "read line; echo got $line"], stdin: .pipe, stdout: .pipe)
        let sleeper = try ChildProcess("/bin/sleep", ["30"], newSession: true)
        defer { sleeper.stop(grace: 0) }
        try talker.input?.write(contentsOf: Data("hello\n".utf8))
        try talker.input?.close()
        // readDataToEndOfFile returns only when no process holds the pipe's write end.
        #expect(String(decoding: talker.output?.readDataToEndOfFile() ?? Data(), as: UTF8.self) == "got hello\n")
        #expect(talker.wait() == .exited(0))
        #expect(sleeper.isRunning)
    }

    @Test("exit codes, signals, a working directory, an environment, and a deadline on waiting")
    func termination() throws {
        let directory = TemporaryDirectory()
        let result = try runProcess(
            "/bin/sh", ["-c", "pwd; echo $GREETING; echo oops >&2; exit 3"], environment: ["GREETING": "hi"], directory: directory.path)
        #expect(result.status == 3 && result.stdout == "\(directory.path)\nhi\n" && result.stderr == "oops\n")

        let sleeper = try ChildProcess("/bin/sleep", ["30"])
        #expect(sleeper.wait(seconds: 0.2) == nil && sleeper.isRunning)
        sleeper.signal(SIGKILL)
        #expect(sleeper.wait() == .killed(signal: SIGKILL) && sleeper.wait().status == 128 + SIGKILL)
        #expect(!sleeper.isRunning)
        // Reaped: a second signal goes nowhere (the pid may belong to someone else by now).
        sleeper.signal(SIGKILL)
        #expect(sleeper.wait() == .killed(signal: SIGKILL))

        #expect(throws: HelperError.self) { _ = try ChildProcess(directory.file("missing"), []) }
    }

    @Test("a child gets SIGPIPE back at its default although this process ignores it, and no blocked signals")
    func signalsAsAShellLeavesThem() throws {
        signal(SIGPIPE, SIG_IGN)
        let status = try runProcess("/bin/sh", ["-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status"]).stdout
        let masks = Dictionary(
            uniqueKeysWithValues: status.split(separator: "\n").map { line in
                (
                    String(line.split(separator: ":")[0]),
                    UInt64(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces), radix: 16) ?? 0
                )
            })
        #expect(masks["SigIgn"].map { $0 & (1 << (SIGPIPE - 1)) } == 0, "\(status)")
        #expect(masks["SigBlk"] == 0, "\(status)")
        // `yes` stops quietly when its reader goes, killed by SIGPIPE as in a shell (ignoring
        // it, it would complain of a broken pipe).
        let pipeline = try runProcess("/bin/sh", ["-c", "yes | head -1"])
        #expect(pipeline.stdout == "y\n" && pipeline.stderr == "")
    }

    /// Runs only inside `hangIsReported`'s child test process: hangs waiting on a child.
    @Test(
        "(a deliberately hung test, run only by the hang-guard test)",
        .enabled(if: ProcessInfo.processInfo.environment["GRAFT_TEST_HANG_DEMO"] == "1"))
    func hangDemo() throws {
        try ChildProcess("/bin/sleep", ["600"]).wait()
    }

    @Test("a test process past GRAFT_TEST_DEADLINE prints its stacks and the children it waits on, stops them and exits 1")
    func hangIsReported() throws {
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
        try #require(testBinary.hasSuffix(".xctest"), "run by `swift test`: \(testBinary)")
        var environment = ProcessInfo.processInfo.environment
        environment["GRAFT_TEST_DEADLINE"] = "2"
        environment["GRAFT_TEST_HANG_DEMO"] = "1"
        let directory = TemporaryDirectory()
        let started = Date()
        let hung = try ChildProcess(
            testBinary, ["--testing-library", "swift-testing", "--filter", "ChildProcessTests/hangDemo"], environment: environment,
            stdout: .file(directory.file("out")), stderr: .file(directory.file("err")))
        defer { hung.stop(grace: 0) }
        let ended = hung.wait(seconds: 300)
        let report = (try? String(contentsOfFile: directory.file("err"), encoding: .utf8)) ?? ""
        #expect(ended == .exited(1), "\(report.suffix(2000))")
        #expect(Date().timeIntervalSince(started) < 300)
        #expect(report.contains("still running after 2 s (GRAFT_TEST_DEADLINE)"))
        // Where it hung: the waiting frame, and the child it waited on, which is gone now.
        #expect(report.contains("ChildProcess") && report.contains("wait"), "no stack names the wait: \(report.suffix(2000))")
        let line = try #require(report.split(separator: "\n").first { $0.hasSuffix(": /bin/sleep 600") }, "\(report.suffix(2000))")
        let pid = try #require(Int32(line.split(separator: " ")[1].dropLast()))
        // Gone once init has reaped it (a zombie until then).
        let deadline = Date().addingTimeInterval(10)
        func alive() -> Bool {
            let state = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.split(separator: ")").last?.split(
                separator: " "
            ).first
            return state != nil && state != "Z"
        }
        while alive(), Date() < deadline { usleep(50_000) }
        #expect(!alive(), "the hung test's child is still running")
    }
}
