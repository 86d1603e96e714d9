import Dispatch
import GraftCore
import NIOCore
import Synchronization

/// Carries chunks from a blocking producer (the registry streaming a checkpoint on a Dispatch
/// thread) to an async consumer (the response writer), at most `depth` chunks ahead: a slow
/// client slows the reads instead of filling memory. When the consumer stops (the client went
/// away, or a range is complete) the producer's next `send` throws and its stream ends.
final class ChunkPipe: Sendable {
    private struct State {
        var queue: [ByteBuffer] = []
        var waiter: CheckedContinuation<ByteBuffer?, any Error>?
        var end: Result<Void, GraftError>?
        var cancelled = false
    }

    private let state = Mutex(State())
    private let slots: DispatchSemaphore
    private let depth: Int

    init(depth: Int = 4) {
        self.depth = depth
        slots = DispatchSemaphore(value: depth)
    }

    /// Producer: copies the chunk and hands it over, waiting while `depth` chunks are unread.
    func send(_ chunk: UnsafeRawBufferPointer) throws(GraftError) {
        slots.wait()
        let buffer = ByteBuffer(bytes: chunk)
        let waiter = state.withLock { state -> CheckedContinuation<ByteBuffer?, any Error>?? in
            if state.cancelled { return .none }
            if let waiter = state.waiter {
                state.waiter = nil
                return .some(waiter)
            }
            state.queue.append(buffer)
            return .some(nil)
        }
        switch waiter {
        case .none:
            slots.signal()
            throw .io(operation: "cannot send", path: "the response", errno: 32)  // EPIPE: the receiver is gone
        case .some(let continuation?):
            slots.signal()
            continuation.resume(returning: buffer)
        case .some(nil):
            break
        }
    }

    /// Producer: no more chunks (or the error that ended the stream).
    func finish(_ result: Result<Void, GraftError>) {
        let waiter = state.withLock { state -> CheckedContinuation<ByteBuffer?, any Error>? in
            if state.end == nil { state.end = result }
            defer { state.waiter = nil }
            return state.queue.isEmpty ? state.waiter : nil
        }
        switch result {
        case .success: waiter?.resume(returning: nil)
        case .failure(let error): waiter?.resume(throwing: error)
        }
    }

    /// Consumer: the next chunk, `nil` at the end; throws the producer's error.
    func next() async throws -> ByteBuffer? {
        try await withCheckedThrowingContinuation { continuation in
            let answer = state.withLock { state -> Result<ByteBuffer?, any Error>? in
                if !state.queue.isEmpty { return .success(state.queue.removeFirst()) }
                if let end = state.end {
                    switch end {
                    case .success: return .success(nil)
                    case .failure(let error): return .failure(error)
                    }
                }
                state.waiter = continuation
                return nil
            }
            guard let answer else { return }
            if case .success(.some) = answer { slots.signal() }
            continuation.resume(with: answer)
        }
    }

    /// Consumer: stops the producer (its next `send` throws).
    func cancel() {
        state.withLock {
            $0.cancelled = true; $0.queue.removeAll()
        }
        for _ in 0..<depth + 1 { slots.signal() }
    }
}
