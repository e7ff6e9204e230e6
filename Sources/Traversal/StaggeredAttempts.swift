import Synchronization

/// Runs `attempt` now and, while none has succeeded, once more every `delay`, at most `attempts` times in all;
/// returns the first success, or throws the last failure when every attempt failed.
///
/// For a TCP connect over a lossy line: a lost SYN is sent again only after TCP's initial RTO of 1 s
/// (RFC 6298 §2.1), and 3 s later after a second loss, so a second connection attempt after a short
/// delay (RFC 8305 §5's connection attempt delay, here for one address) usually arrives long before the
/// first one's retransmission. The attempts not taken are not awaited (a connect may notice cancellation
/// only when it ends): they are cancelled, and whatever one of them still produces goes to `discard`
/// (to close it). Cancelling the caller throws `CancellationError` at once, the same way.
public func firstSuccess<T: Sendable>(ofAttempts attempts: Int, every delay: Duration,
                                      discard: @escaping @Sendable (T) async -> Void = { _ in },
                                      _ attempt: @escaping @Sendable (Int) async throws -> T) async throws -> T {
    let gate = AttemptGate<T>(attempts: max(1, attempts))
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            gate.install(continuation)
            let launcher = Task {
                for i in 0..<max(1, attempts) {
                    if i > 0 {
                        guard (try? await Task.sleep(for: delay)) != nil, !gate.isSettled else { return }
                    }
                    let task = Task {
                        do {
                            let value = try await attempt(i)
                            if !gate.succeed(value) { await discard(value) }
                        } catch {
                            gate.fail(error)
                        }
                    }
                    gate.track(task)
                }
            }
            gate.track(launcher)
        }
    } onCancel: {
        gate.cancel()
    }
}

/// The shared state of ``firstSuccess(ofAttempts:every:discard:_:)``: the caller's continuation, resumed once.
private final class AttemptGate<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        var settled = false
        var failures = 0
        var tasks: [Task<Void, Never>] = []
    }

    private let attempts: Int
    private let state = Mutex(State())

    init(attempts: Int) {
        self.attempts = attempts
    }

    /// Whether the caller has its answer (a success, the last failure, or cancellation).
    var isSettled: Bool { state.withLock { $0.settled } }

    func install(_ continuation: CheckedContinuation<T, any Error>) {
        let cancelled = state.withLock { s -> Bool in
            if s.settled { return true }
            s.continuation = continuation
            return false
        }
        if cancelled { continuation.resume(throwing: CancellationError()) }
    }

    /// Keeps `task` to cancel once settled (at once if already settled).
    func track(_ task: Task<Void, Never>) {
        let settled = state.withLock { s -> Bool in
            if !s.settled { s.tasks.append(task) }
            return s.settled
        }
        if settled { task.cancel() }
    }

    /// Offers a success; false when the caller already has an answer (then the value is the offerer's to discard).
    func succeed(_ value: T) -> Bool {
        settle { $0.resume(returning: value) }
    }

    /// Counts a failure; the last attempt's failure, when none succeeded, is the caller's answer.
    func fail(_ error: any Error) {
        let last = state.withLock { s -> Bool in
            s.failures += 1
            return s.failures == attempts
        }
        if last { settle { $0.resume(throwing: error) } }
    }

    /// The caller was cancelled.
    func cancel() {
        settle { $0.resume(throwing: CancellationError()) }
    }

    /// Marks the gate settled, answers the caller with `answer` (once its continuation is installed) and cancels
    /// the attempts; false if it was settled before.
    @discardableResult
    private func settle(_ answer: (CheckedContinuation<T, any Error>) -> Void) -> Bool {
        let taken = state.withLock { s -> (CheckedContinuation<T, any Error>?, [Task<Void, Never>])? in
            guard !s.settled else { return nil }
            s.settled = true
            defer {
                s.continuation = nil
                s.tasks = []
            }
            return (s.continuation, s.tasks)
        }
        guard let taken else { return false }
        if let continuation = taken.0 { answer(continuation) }
        for t in taken.1 { t.cancel() }
        return true
    }
}
