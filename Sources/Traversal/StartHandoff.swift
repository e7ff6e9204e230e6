/// The camera's hand-off of the cloud's `start` (or error) for each introduction it answered.
///
/// The cloud may send `start` the moment it has the answer, before the camera's task that sent the
/// answer is back to wait for it. The request is therefore expected *before* the answer goes out,
/// and a `start` that comes first is kept for the wait, never dropped:
///
/// ```
///  expect(id) ──► answer sent ──► wait(id) ── start kept already? ──► proceed at once
///                     │                     └─ not yet ─► suspend ──► deliver(id) resumes it
///                     └── deliver(id) before wait(id): kept (bounded by the expected entries)
///  expire(now): an entry past its deadline fails its waiter with `timeout` and is forgotten
/// ```
///
/// Time comes in as `now`; the caller owns the waiters (continuations) and the timers.
struct StartHandoffStateMachine<Waiter> {
    /// What the caller does after ``wait(_:waiter:)``.
    enum WaitAction {
        /// `start` arrived already: go on.
        case proceed
        /// The introduction failed already (the cloud's error): throw it.
        case fail(CloudError)
        /// Not yet: the waiter is kept until ``deliver(_:_:)`` or ``expire(now:)``.
        case suspend
        /// Nothing expects this request (never expected, expired, or waited for twice).
        case unknown
    }

    private enum Entry {
        case expected(deadline: ContinuousClock.Instant)
        case arrived(Result<Void, CloudError>, deadline: ContinuousClock.Instant)
        case waiting(Waiter, deadline: ContinuousClock.Instant)

        var deadline: ContinuousClock.Instant {
            switch self {
            case .expected(let d), .arrived(_, let d), .waiting(_, let d): d
            }
        }
    }

    /// How long an answered request waits for `start`.
    let timeout: Duration
    private var entries: [String: Entry] = [:]

    /// A hand-off in which every answered request waits at most `timeout` for `start`.
    init(timeout: Duration) { self.timeout = timeout }

    /// Requests answered and not yet started, failed or expired.
    var count: Int { entries.count }

    /// Records that the answer to `requestID` is about to go out; false if it was answered already.
    mutating func expect(_ requestID: String, now: ContinuousClock.Instant) -> Bool {
        guard entries[requestID] == nil else { return false }
        entries[requestID] = .expected(deadline: now + timeout)
        return true
    }

    /// Forgets `requestID` (its answer could not be sent); returns a waiter to fail, if one waits.
    mutating func cancel(_ requestID: String) -> Waiter? {
        guard case .waiting(let waiter, _)? = entries.removeValue(forKey: requestID) else { return nil }
        return waiter
    }

    /// The caller is ready for `start` of `requestID`.
    mutating func wait(_ requestID: String, waiter: Waiter) -> WaitAction {
        switch entries[requestID] {
        case .expected(let deadline)?:
            entries[requestID] = .waiting(waiter, deadline: deadline)
            return .suspend
        case .arrived(.success, _)?:
            entries[requestID] = nil
            return .proceed
        case .arrived(.failure(let error), _)?:
            entries[requestID] = nil
            return .fail(error)
        case .waiting?, nil:
            return .unknown
        }
    }

    /// The cloud's `start` (success) or error for `requestID`; returns the waiter to resume, if one waits.
    /// A result for a request nobody expects is ignored.
    mutating func deliver(_ requestID: String, _ result: Result<Void, CloudError>) -> Waiter? {
        switch entries[requestID] {
        case .expected(let deadline)?:
            entries[requestID] = .arrived(result, deadline: deadline)
            return nil
        case .waiting(let waiter, _)?:
            entries[requestID] = nil
            return waiter
        case .arrived?, nil:
            return nil
        }
    }

    /// Forgets every entry whose deadline has passed; returns the waiters to fail with `timeout`.
    mutating func expire(now: ContinuousClock.Instant) -> [(requestID: String, waiter: Waiter)] {
        var expired: [(requestID: String, waiter: Waiter)] = []
        for (requestID, entry) in entries {
            guard entry.deadline <= now else { continue }
            entries[requestID] = nil
            if case .waiting(let waiter, _) = entry { expired.append((requestID, waiter)) }
        }
        return expired
    }

    /// Forgets everything (the connection to the cloud is gone); returns every waiter to fail.
    mutating func failAll() -> [Waiter] {
        let waiters = entries.values.compactMap { entry -> Waiter? in
            if case .waiting(let waiter, _) = entry { return waiter }
            return nil
        }
        entries = [:]
        return waiters
    }
}
