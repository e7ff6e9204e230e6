import Synchronization
import Testing
import Traversal

/// `firstSuccess(ofAttempts:every:discard:_:)`: the first attempt that succeeds is taken, the others are neither
/// awaited nor leaked.
struct StaggeredAttemptsTests {
    /// An attempt that answers only when the test says so, whatever cancellation says (as a TCP connect in flight).
    final class Held: Sendable {
        private let waiting = Mutex<[CheckedContinuation<Int, Never>]>([])
        let started = Atomic<Int>(0)

        func wait() async -> Int {
            started.add(1, ordering: .relaxed)
            return await withCheckedContinuation { c in waiting.withLock { $0.append(c) } }
        }

        /// Resumes every waiting attempt with `value`; how many there were.
        @discardableResult
        func release(_ value: Int) -> Int {
            let all = waiting.withLock { w in
                defer { w = [] }
                return w
            }
            for c in all { c.resume(returning: value) }
            return all.count
        }

        var waitingCount: Int { waiting.withLock { $0.count } }
    }

    /// Collects what `discard` is handed.
    final class Discarded: Sendable {
        let values = Mutex<[Int]>([])
        func add(_ v: Int) { values.withLock { $0.append(v) } }
    }

    @Test func aLaterAttemptWinsWhileTheFirstHangsAndTheFirstIsDiscardedWhenItEnds() async throws {
        let held = Held()
        let discarded = Discarded()
        let value = try await withDeadline(.seconds(20)) {
            try await firstSuccess(ofAttempts: 2, every: .milliseconds(10), discard: { discarded.add($0) }) { i in
                i == 0 ? await held.wait() : 7
            }
        }
        #expect(value == 7)
        // The hanging attempt was not awaited; when it ends, its value is handed to discard.
        for _ in 0..<500 where held.waitingCount == 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(held.release(1) == 1)
        for _ in 0..<200 where discarded.values.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(discarded.values.withLock { $0 } == [1])
    }

    @Test func anAttemptThatAnswersBeforeTheDelayIsTheOnlyOne() async throws {
        let started = Atomic<Int>(0)
        let value = try await firstSuccess(ofAttempts: 3, every: .seconds(3600)) { i in
            started.add(1, ordering: .relaxed)
            return i
        }
        #expect(value == 0)
        #expect(started.load(ordering: .relaxed) == 1)
    }

    struct Refused: Error, Equatable {
        var attempt: Int
    }

    @Test func whenEveryAttemptFailsAFailureIsThrownAfterAllWereTried() async throws {
        let started = Atomic<Int>(0)
        await #expect(throws: Refused.self) {
            try await firstSuccess(ofAttempts: 3, every: .milliseconds(1)) { (i: Int) -> Int in
                started.add(1, ordering: .relaxed)
                throw Refused(attempt: i)
            }
        }
        #expect(started.load(ordering: .relaxed) == 3)
    }

    @Test func aFailedAttemptDoesNotEndTheSearchWhileAnotherMaySucceed() async throws {
        let value = try await firstSuccess(ofAttempts: 2, every: .milliseconds(1)) { i in
            if i == 0 { throw Refused(attempt: 0) }
            return 5
        }
        #expect(value == 5)
    }

    @Test func cancellingTheCallerThrowsWithoutWaitingAndALateSuccessIsDiscarded() async throws {
        let held = Held()
        let discarded = Discarded()
        let caller = Task {
            try await firstSuccess(ofAttempts: 1, every: .seconds(1), discard: { discarded.add($0) }) { _ in await held.wait() }
        }
        for _ in 0..<500 where held.waitingCount == 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(held.waitingCount == 1)
        caller.cancel()
        await #expect(throws: CancellationError.self) { try await caller.value }
        held.release(3)
        for _ in 0..<200 where discarded.values.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(discarded.values.withLock { $0 } == [3])
    }
}
