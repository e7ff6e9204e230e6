import Testing
@testable import Traversal

@Suite struct StartHandoffStateMachineTests {
    let t0 = ContinuousClock.now

    @Test func startArrivingBeforeTheWaitIsKeptAndTheWaitProceedsAtOnce() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let r1 = handoff.expect("r1", now: t0)
        #expect(r1)
        let r2 = handoff.deliver("r1", .success(()))
        #expect(r2 == nil, "nobody waits yet: kept")
        guard case .proceed = handoff.wait("r1", waiter: 1) else {
            Issue.record("the early start must let the wait proceed")
            return
        }
        #expect(handoff.count == 0)
    }

    @Test func startArrivingAfterTheWaitResumesTheWaiter() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let r3 = handoff.expect("r1", now: t0)
        #expect(r3)
        guard case .suspend = handoff.wait("r1", waiter: 7) else {
            Issue.record("no start yet: suspend")
            return
        }
        let r4 = handoff.deliver("r1", .success(()))
        #expect(r4 == 7)
        #expect(handoff.count == 0)
    }

    @Test func anErrorArrivingBeforeTheWaitFailsTheWait() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let r5 = handoff.expect("r1", now: t0)
        #expect(r5)
        _ = handoff.deliver("r1", .failure(CloudError(code: .timeout, detail: "late")))
        guard case .fail(let error) = handoff.wait("r1", waiter: 1) else {
            Issue.record("the early error must fail the wait")
            return
        }
        #expect(error.code == .timeout)
    }

    @Test func aStartForARequestNobodyAnsweredIsIgnored() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let r6 = handoff.deliver("stranger", .success(()))
        #expect(r6 == nil)
        #expect(handoff.count == 0, "unsolicited starts are not kept")
        guard case .unknown = handoff.wait("stranger", waiter: 1) else {
            Issue.record("a wait for a request never expected is unknown")
            return
        }
    }

    @Test func aRequestIsAnsweredOnlyOnce() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let r7 = handoff.expect("r1", now: t0)
        #expect(r7)
        let r8 = handoff.expect("r1", now: t0)
        #expect(!r8)
    }

    @Test func waitersAndKeptStartsExpireAtTheirDeadline() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let r9 = handoff.expect("waits", now: t0)
        #expect(r9)
        let r10 = handoff.expect("kept", now: t0)
        #expect(r10)
        let r11 = handoff.expect("later", now: t0 + .seconds(5))
        #expect(r11)
        _ = handoff.wait("waits", waiter: 1)
        _ = handoff.deliver("kept", .success(()))
        let r12 = handoff.expire(now: t0 + .seconds(9))
        #expect(r12.isEmpty)
        let expired = handoff.expire(now: t0 + .seconds(10))
        #expect(expired.map(\.waiter) == [1])
        #expect(handoff.count == 1, "only the later request is left")
    }

    @Test func aLostConnectionFailsEveryWaiterAndForgetsEverything() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        for (i, id) in ["a", "b", "c"].enumerated() {
            let r13 = handoff.expect(id, now: t0)
            #expect(r13)
            if i < 2 { _ = handoff.wait(id, waiter: i) }
        }
        let r14 = handoff.failAll()
        #expect(r14.sorted() == [0, 1])
        #expect(handoff.count == 0)
    }

    @Test func aCancelledAnswerReturnsItsWaiterAndIsForgotten() {
        var handoff = StartHandoffStateMachine<Int>(timeout: .seconds(10))
        let r15 = handoff.expect("r1", now: t0)
        #expect(r15)
        let r16 = handoff.cancel("r1")
        #expect(r16 == nil, "nobody waited")
        let r17 = handoff.expect("r1", now: t0)
        #expect(r17, "may be answered again")
    }
}
