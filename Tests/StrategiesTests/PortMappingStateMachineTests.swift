import STUNLite
@testable import Strategies
import Testing

/// The life of one router mapping, driven by hand with `now`: retransmission, renewal, expiry, epoch loss, release.
struct PortMappingStateMachineTests {
    static let t0 = ContinuousClock.now
    static let external = TransportAddress(ip: IPAddress("203.0.113.101")!, port: 40000)
    static func granted(_ lifetime: UInt32 = 100, epoch: UInt32? = 1) -> GrantedMapping {
        GrantedMapping(external: external, lifetime: lifetime, epoch: epoch)
    }
    static let schedule = PortMappingStateMachine.Schedule(timeouts: [.milliseconds(250), .milliseconds(500)])

    @Test func retransmitsPerTheScheduleThenFails() {
        var m = PortMappingStateMachine(lifetime: 100, schedule: Self.schedule)
        #expect(m.start(now: Self.t0) == .request(lifetime: 100, timeout: .milliseconds(250)))
        #expect(m.timedOut(now: Self.t0 + .milliseconds(250)) == .request(lifetime: 100, timeout: .milliseconds(500)))
        guard case .failed(let e) = m.timedOut(now: Self.t0 + .milliseconds(750)) else { Issue.record("must fail"); return }
        #expect(e.code == .noAnswer)
        #expect(m.mapping == nil)
    }

    @Test func rfcSchedulesDoubleFromTheirInitialTimeouts() {
        #expect(PortMappingStateMachine.Schedule.natPMP.timeouts.prefix(3) == [.milliseconds(250), .milliseconds(500), .seconds(1)])
        #expect(PortMappingStateMachine.Schedule.natPMP.timeouts.count == 9)
        #expect(PortMappingStateMachine.Schedule.pcp.timeouts.prefix(2) == [.seconds(3), .seconds(6)])
    }

    @Test func aRefusalEndsTheFirstRequest() {
        var m = PortMappingStateMachine(lifetime: 100, schedule: Self.schedule)
        _ = m.start(now: Self.t0)
        let refusal = PortMappingError(.refused, "NOT_AUTHORIZED")
        #expect(m.answered(.failure(refusal), now: Self.t0) == .failed(refusal))
    }

    @Test func renewsAtHalfTheGrantedLifetime() {
        var m = PortMappingStateMachine(lifetime: 100, schedule: Self.schedule)
        _ = m.start(now: Self.t0)
        #expect(m.answered(.success(Self.granted(60)), now: Self.t0) == .mapped(Self.granted(60), renewAt: Self.t0 + .seconds(30)))
        // An early timer is only a wait.
        #expect(m.timedOut(now: Self.t0 + .seconds(10)) == .wait(until: Self.t0 + .seconds(30)))
        #expect(m.timedOut(now: Self.t0 + .seconds(30)) == .request(lifetime: 100, timeout: .milliseconds(250)))
        let renewed = Self.granted(60, epoch: 31)
        #expect(m.answered(.success(renewed), now: Self.t0 + .seconds(30)) == .mapped(renewed, renewAt: Self.t0 + .seconds(60)))
        #expect(m.mapping == renewed)
    }

    @Test func unansweredRenewalsEndInExpiry() {
        var m = PortMappingStateMachine(lifetime: 10, schedule: Self.schedule)
        _ = m.start(now: Self.t0)
        _ = m.answered(.success(Self.granted(10)), now: Self.t0)
        var now = Self.t0 + .seconds(5)
        var action = m.timedOut(now: now)
        var requests = 0
        while case .request(_, let timeout) = action, requests < 100 {
            requests += 1
            #expect(timeout <= .seconds(5))
            now += timeout
            action = m.timedOut(now: now)
        }
        guard case .failed(let e) = action else { Issue.record("must expire, got \(action)"); return }
        #expect(e.code == .expired && requests > 2)
    }

    @Test func anEpochThatWentBackMapsAgainAtOnce() {
        var m = PortMappingStateMachine(lifetime: 100, schedule: Self.schedule)
        _ = m.start(now: Self.t0)
        _ = m.answered(.success(Self.granted(100, epoch: 1000)), now: Self.t0)
        #expect(m.observedEpoch(1010, now: Self.t0 + .seconds(10)) == nil)
        #expect(m.observedEpoch(3, now: Self.t0 + .seconds(20)) == .request(lifetime: 100, timeout: .milliseconds(250)))
    }

    @Test func releaseSendsLifetimeZeroUntilAnsweredOrTheScheduleIsSpent() {
        var m = PortMappingStateMachine(lifetime: 100, schedule: Self.schedule)
        _ = m.start(now: Self.t0)
        _ = m.answered(.success(Self.granted()), now: Self.t0)
        #expect(m.release(now: Self.t0 + .seconds(1)) == .request(lifetime: 0, timeout: .milliseconds(250)))
        #expect(m.answered(.success(Self.granted(0)), now: Self.t0 + .seconds(1)) == .released)
        #expect(m.mapping == nil)

        var lost = PortMappingStateMachine(lifetime: 100, schedule: Self.schedule)
        _ = lost.start(now: Self.t0)
        _ = lost.answered(.success(Self.granted()), now: Self.t0)
        _ = lost.release(now: Self.t0)
        #expect(lost.timedOut(now: Self.t0 + .milliseconds(250)) == .request(lifetime: 0, timeout: .milliseconds(500)))
        #expect(lost.timedOut(now: Self.t0 + .milliseconds(750)) == .released)
    }

    @Test func releaseDuringTheFirstRequestStillDeletes() {
        var m = PortMappingStateMachine(lifetime: 100, schedule: Self.schedule)
        _ = m.start(now: Self.t0)
        #expect(m.release(now: Self.t0) == .request(lifetime: 0, timeout: .milliseconds(250)))
        var idle = PortMappingStateMachine(lifetime: 100, schedule: Self.schedule)
        #expect(idle.release(now: Self.t0) == .released)
    }
}
