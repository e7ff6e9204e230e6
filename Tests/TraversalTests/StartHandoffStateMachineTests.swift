import Testing
@testable import Traversal

@Suite struct StartHandoffStateMachineTests {
    let t0 = ContinuousClock.now

    @Test func startArrivingBeforeTheWaitIsKeptAndTheWaitProceedsAtOnce() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let outcome1 = handoff.expect("outcome1", now: t0)
        #expect(outcome1)
        let outcome2 = handoff.deliver("outcome1", .success(()))
        #expect(outcome2 == nil, "nobody waits yet: kept")
        guard case .proceed = handoff.wait("outcome1", waiter: 1) else {
            Issue.record("the early start must let the wait proceed")
            return
        }
        #expect(handoff.count == 0)
    }

    @Test func startArrivingAfterTheWaitResumesTheWaiter() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let outcome3 = handoff.expect("outcome1", now: t0)
        #expect(outcome3)
        guard case .suspend = handoff.wait("outcome1", waiter: 7) else {
            Issue.record("no start yet: suspend")
            return
        }
        let outcome4 = handoff.deliver("outcome1", .success(()))
        #expect(outcome4 == 7)
        #expect(handoff.count == 0)
    }

    @Test func anErrorArrivingBeforeTheWaitFailsTheWait() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let outcome5 = handoff.expect("outcome1", now: t0)
        #expect(outcome5)
        _ = handoff.deliver("outcome1", .failure(CloudError(code: .timeout, detail: "late")))
        guard case .fail(let error) = handoff.wait("outcome1", waiter: 1) else {
            Issue.record("the early error must fail the wait")
            return
        }
        #expect(error.code == .timeout)
    }

    @Test func aStartForARequestNobodyAnsweredIsIgnored() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let outcome6 = handoff.deliver("stranger", .success(()))
        #expect(outcome6 == nil)
        #expect(handoff.count == 0, "unsolicited starts are not kept")
        guard case .unknown = handoff.wait("stranger", waiter: 1) else {
            Issue.record("a wait for a request never expected is unknown")
            return
        }
    }

    @Test func aRequestIsAnsweredOnlyOnce() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let outcome7 = handoff.expect("outcome1", now: t0)
        #expect(outcome7)
        let outcome8 = handoff.expect("outcome1", now: t0)
        #expect(!outcome8)
    }

    @Test func waitersAndKeptStartsExpireAtTheirDeadline() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let outcome9 = handoff.expect("waits", now: t0)
        #expect(outcome9)
        let outcome10 = handoff.expect("kept", now: t0)
        #expect(outcome10)
        let outcome11 = handoff.expect("later", now: t0 + .seconds(5))
        #expect(outcome11)
        _ = handoff.wait("waits", waiter: 1)
        _ = handoff.deliver("kept", .success(()))
        let outcome12 = handoff.expire(now: t0 + .seconds(9))
        #expect(outcome12.isEmpty)
        let expired = handoff.expire(now: t0 + .seconds(10))
        #expect(expired.map(\.waiter) == [1])
        #expect(handoff.count == 1, "only the later request is left")
    }

    @Test func aLostConnectionFailsEveryWaiterAndForgetsEverything() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        for (i, id) in ["a", "b", "c"].enumerated() {
            let outcome13 = handoff.expect(id, now: t0)
            #expect(outcome13)
            if i < 2 { _ = handoff.wait(id, waiter: i) }
        }
        let outcome14 = handoff.failAll()
        #expect(outcome14.sorted() == [0, 1])
        #expect(handoff.count == 0)
    }

    @Test func aCancelledAnswerReturnsItsWaiterAndIsForgotten() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let outcome15 = handoff.expect("outcome1", now: t0)
        #expect(outcome15)
        let outcome16 = handoff.cancel("outcome1")
        #expect(outcome16 == nil, "nobody waited")
        let outcome17 = handoff.expect("outcome1", now: t0)
        #expect(outcome17, "may be answered again")
    }
}
