import NIOCore
import Testing
@testable import STUNLite

/// RFC 8489 §6.2.1: with RTO 500 ms, Rc 7 and Rm 16, sends at 0, 500, 1500, 3500, 7500, 15500, 31500 ms; fails at 39500 ms.
@Suite struct STUNRetransmissionTests {
    @Test func defaultScheduleMatchesTheRFC() {
        var machine = STUNRetransmissionStateMachine(policy: .rfc8489)
        let t0 = NIODeadline.uptimeNanoseconds(0)
        var sends: [Int64] = []
        var action = machine.start(now: t0)
        var now = t0
        for _ in 0..<20 {
            guard case .send(let next) = action else { break }
            sends.append((now - t0).nanoseconds / 1_000_000)
            now = next
            action = machine.deadlineReached(now: now)
        }
        #expect(sends == [0, 500, 1500, 3500, 7500, 15500, 31500])
        #expect(action == .fail)
        #expect((now - t0).nanoseconds / 1_000_000 == 39500)
        #expect(STUNRetransmissionPolicy.rfc8489.totalTimeout == .milliseconds(39_500))
        #expect(machine.requestsSent == 7)
    }

    @Test func quickPolicyGivesUpWithinThreeSeconds() {
        #expect(STUNRetransmissionPolicy.quick.totalTimeout <= .seconds(3))
        var machine = STUNRetransmissionStateMachine(policy: STUNRetransmissionPolicy(rto: .milliseconds(100), maxRequests: 1, finalWaitMultiplier: 3))
        #expect(machine.start(now: .uptimeNanoseconds(0)) == .send(nextDeadline: .uptimeNanoseconds(300_000_000)))
        #expect(machine.deadlineReached(now: .uptimeNanoseconds(300_000_000)) == .fail)
    }
}
