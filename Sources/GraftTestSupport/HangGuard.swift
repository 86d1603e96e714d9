import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A deadline for the whole test process, so that a hang fails `make test` within minutes and
/// says where it hung, instead of running until CI gives up with nothing to show.
///
/// Armed by the first `ChildProcess` or `TemporaryDirectory` when `GRAFT_TEST_DEADLINE` (seconds)
/// is set, as `make test` sets it; soaks and mutation runs leave it unset. At the deadline it
/// prints every thread's stack (gdb), then the child processes still running and what each was
/// started as (the test waiting on one is usually the hung one), exits 1, and has those
/// children stopped a second later. Clusters and moto servers are stopped by their own watchdogs once it has exited.
public enum HangGuard {
    /// Children started and not yet reaped, by pid.
    private static let children = Mutex<[pid_t: (command: String, started: Date)]>([:])

    private static let armed: Void = {
        guard let text = ProcessInfo.processInfo.environment["GRAFT_TEST_DEADLINE"] else { return }
        guard let seconds = Double(text), seconds > 0 else {
            FileHandle.standardError.write(Data("GRAFT_TEST_DEADLINE=\(text) is not a number of seconds; no deadline\n".utf8))
            return
        }
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: seconds)
            report(after: seconds)
        }
    }()

    /// Starts the clock, once per process.
    public static func arm() { _ = armed }

    static func remember(_ child: ChildProcess) {
        arm()
        children.withLock { $0[child.pid] = (child.command, Date()) }
    }

    static func forget(_ child: ChildProcess) {
        _ = children.withLock { $0.removeValue(forKey: child.pid) }
    }

    /// The stacks of this process's threads that are in Graft's code (test or product), from gdb.
    /// gdb writes to a file: it stops every thread here while attached, a pipe's reader too.
    private static func threads() -> String {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/gdb") else { return "(no gdb to show them)" }
        let file = NSTemporaryDirectory() + "graft-hang-\(getpid()).txt"
        defer { unlink(file) }
        guard
            let gdb = try? ChildProcess(
                "/usr/bin/gdb", ["-p", "\(getpid())", "-batch", "-ex", "thread apply all bt 25"], stdout: .file(file), stderr: .stdout)
        else { return "(gdb did not start)" }
        if gdb.wait(seconds: 120) == nil { gdb.signal(SIGKILL) }
        let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        // One block per thread; the idle ones (dispatch and event-loop workers) are left out.
        var blocks: [[Substring]] = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("Thread ") {
                blocks.append([line])
            } else if line.hasPrefix("#"), !blocks.isEmpty {
                blocks[blocks.count - 1].append(line)
            }
        }
        // Graft's frames (the thread name is the binary's, so frames only), not this guard's own.
        let ours = blocks.filter { block in
            let frames = block.dropFirst()
            return frames.contains { $0.contains("Graft") } && !frames.contains { $0.contains("HangGuard") }
        }
        return ours.map { $0.map { $0.prefix(300) }.joined(separator: "\n") }.joined(separator: "\n")
            + "\n(\(ours.count) of \(blocks.count) threads shown)"
    }

    private static func report(after seconds: Double) {
        func say(_ text: String) { FileHandle.standardError.write(Data((text + "\n").utf8)) }
        say("\n=== graft tests: still running after \(Int(seconds)) s (GRAFT_TEST_DEADLINE): a test is hung. Threads in Graft's code:")
        say(threads())
        let running = children.withLock { $0 }.sorted { $0.value.started < $1.value.started }
        say("=== child processes still running (\(running.count)), oldest first:")
        for (pid, child) in running {
            say("pid \(pid), for \(Int(Date().timeIntervalSince(child.started))) s: \(child.command.prefix(300))")
        }
        say("=== graft tests: exiting after \(Int(seconds)) s; the test waiting on the oldest child above is the likely hang")
        // The children are stopped a moment after this process has gone: stopped now, the hung
        // test would wake up, the run could finish and exit 0 before the exit below.
        let pids = running.map { "\($0.key)" }.joined(separator: " ")
        if !pids.isEmpty { _ = try? ChildProcess("/bin/sh", ["-c", "sleep 1; kill -9 \(pids)"], newSession: true) }
        _exit(1)
    }
}
