import Rendezvous
import Testing

/// The admission state machine of UID verifications, driven with a hand-moved clock.
struct VerificationAdmissionTests {
    let start = ContinuousClock.now

    func machine(workers: Int = 1, queued: Int = 4, cost: Duration = .milliseconds(100)) -> VerificationAdmissionStateMachine {
        VerificationAdmissionStateMachine(configuration: .init(
            workers: workers, maxQueued: queued, initialCost: cost, minRetryAfter: .milliseconds(500), maxRetryAfter: .seconds(60)))
    }

    @Test func admitsWorkersPlusQueueWhenTheDeadlineAllows() {
        var m = machine(workers: 2, queued: 3)
        let deadline = start + .seconds(10)
        let actions = (0..<6).map { _ in m.admit(now: start, deadline: deadline) }
        #expect(actions.prefix(5).allSatisfy { $0 == .run })
        guard case .retry = actions[5] else {
            Issue.record("the sixth is beyond 2 workers and 3 queued: \(actions[5])")
            return
        }
        #expect(m.admitted == 5)
    }

    @Test func refusesWorkThatWouldFinishAfterItsClientGaveUp() {
        var m = machine(workers: 1, queued: 100, cost: .milliseconds(100))
        let deadline = start + .milliseconds(350)
        let actions = (0..<5).map { _ in m.admit(now: start, deadline: deadline) }
        // 100, 200, 300 ms fit before 350 ms; the fourth would finish at 400 ms.
        #expect(actions.prefix(3).allSatisfy { $0 == .run })
        #expect(actions.dropFirst(3).allSatisfy { if case .retry = $0 { true } else { false } })
    }

    @Test func refusedClientsArePromisedMomentsOneServiceTimeApart() {
        var m = machine(workers: 2, queued: 0, cost: .seconds(1))
        let deadline = start + .seconds(100)
        #expect(m.admit(now: start, deadline: deadline) == .run)
        #expect(m.admit(now: start, deadline: deadline) == .run)
        let delays = (0..<4).compactMap { _ -> Duration? in
            if case .retry(let after) = m.admit(now: start, deadline: deadline) { after } else { nil }
        }
        // The two running finish after 1 s; two workers serve one every 500 ms after that.
        #expect(delays == [.seconds(1), .milliseconds(1500), .seconds(2), .milliseconds(2500)])
    }

    @Test func retryAfterStaysWithinItsBounds() {
        var m = machine(workers: 1, queued: 0, cost: .seconds(30))
        let deadline = start + .seconds(1)
        var delays: [Duration] = []
        for _ in 0..<5 {
            if case .retry(let after) = m.admit(now: start, deadline: deadline) { delays.append(after) }
        }
        #expect(delays.count == 5)
        #expect(delays.allSatisfy { $0 >= .milliseconds(500) && $0 <= .seconds(60) })
        #expect(delays.last == .seconds(60), "capped")
    }

    @Test func finishedWorkFreesItsPlaceAndTeachesTheCost() {
        var m = machine(workers: 1, queued: 0, cost: .milliseconds(100))
        let deadline = start + .seconds(10)
        #expect(m.admit(now: start, deadline: deadline) == .run)
        #expect(m.admit(now: start, deadline: deadline) != .run)
        m.finished(took: .milliseconds(600))
        #expect(m.admitted == 0)
        let error = m.cost - .milliseconds(200)
        #expect(error < .microseconds(1) && error > .microseconds(-1), "moving average: 0.8 · 100 ms + 0.2 · 600 ms")
        #expect(m.admit(now: start + .seconds(1), deadline: deadline) == .run)
    }

    @Test func abandonedWorkFreesItsPlaceWithoutTeachingTheCost() {
        var m = machine(workers: 1, queued: 0)
        #expect(m.admit(now: start, deadline: start + .seconds(10)) == .run)
        m.abandoned()
        #expect(m.admitted == 0)
        #expect(m.cost == .milliseconds(100))
    }

    @Test func expectedCompletionCountsWholeRoundsOfWorkers() {
        var m = machine(workers: 2, queued: 10, cost: .milliseconds(100))
        for _ in 0..<3 { _ = m.admit(now: start, deadline: start + .seconds(10)) }
        // Three admitted on two workers: the next one runs in the second round.
        #expect(m.expectedCompletion(now: start) == start + .milliseconds(200))
    }
}
