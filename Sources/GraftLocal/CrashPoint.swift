import GraftCore
package import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The crash-injection point of the crash-safety harness: with `GRAFT_CRASH_AT=k` in the
/// environment, the process kills itself (SIGKILL, as an OOM killer or a node loss would) at
/// its k-th durable-state step — a blob write, an fsync, a rename, a directory flush, or just
/// before or after a database commit. Unset (always, outside the harness), it costs one
/// load of a constant.
package enum CrashPoint {
    package static let target: Int? = getenv("GRAFT_CRASH_AT").flatMap { Int(String(cString: $0)) }
    package static let count = Atomic<Int>(0)

    @inline(__always)
    package static func tick() {
        guard let target else { return }
        if count.add(1, ordering: .relaxed).newValue == target { kill(getpid(), SIGKILL) }
    }
}
