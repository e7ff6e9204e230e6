import Testing
import Traversal

/// The race's rules, on an injected clock: stagger, first success wins, losers cancelled, late
/// successes closed, deadlines, exhaustion, and what the report says.
struct RaceStateMachineTests {
    let t0 = ContinuousClock.now

    func machine(_ delays: [(String, Int)], unable: [StrategyAttempt] = [], timeout: Int = 10_000) -> RaceStateMachine {
        RaceStateMachine(contenders: delays.map { .init(id: $0.0, startDelay: .milliseconds($0.1)) }, unable: unable,
                         connectTimeout: .milliseconds(timeout), now: t0)
    }

    func at(_ ms: Int) -> ContinuousClock.Instant { t0 + .milliseconds(ms) }

    @Test func contendersStartWhenTheirDelayIsDue() {
        var race = machine([("direct-lan", 0), ("udp-hole-punch", 0), ("tls-relay", 500)])
        #expect(race.tick(now: at(0)) == [.start(0), .start(1)])
        #expect(race.nextDeadline == at(500), "the relay's delay is the next thing to do")
        #expect(race.tick(now: at(499)) == [])
        #expect(race.tick(now: at(500)) == [.start(2)])
        #expect(race.tick(now: at(600)) == [], "nothing starts twice")
        #expect(race.nextDeadline == at(10_000), "then only the race's deadline is left")
    }

    @Test func theFirstSuccessWinsAndEveryOtherContenderIsCancelled() {
        var race = machine([("direct-lan", 0), ("udp-hole-punch", 0), ("tls-relay", 500)])
        _ = race.tick(now: at(0))
        let actions = race.succeeded(1, path: "udp 1 -> 2", now: at(40))
        guard case .won(1, let attempts)? = actions.last else {
            Issue.record("a win: \(actions)")
            return
        }
        #expect(actions.first == .cancel([0, 2]), "the other running one and the one still waiting")
        #expect(attempts.map(\.strategy) == ["udp-hole-punch", "direct-lan", "tls-relay"])
        #expect(attempts.map(\.outcome) == [.connected, .cancelled, .cancelled])
        #expect(attempts[0].ms == 40 && attempts[0].path == "udp 1 -> 2")
        #expect(race.winner == 1 && race.isDecided && race.nextDeadline == nil)
        // A second success after the decision: its transport is closed, the report is unchanged.
        #expect(race.succeeded(0, path: "udp", now: at(41)) == [.close(0)])
        #expect(race.failed(2, error: "cancelled", now: at(42)) == [])
        #expect(race.report == attempts)
        #expect(race.tick(now: at(20_000)) == [], "a decided race does nothing more")
    }

    @Test func failuresAreRecordedAndTheLastOneEndsTheRace() {
        let unable = [StrategyAttempt(strategy: "tcp-simultaneous-open", outcome: .skipped, ms: 0, error: "peer has not enabled it")]
        var race = machine([("direct-lan", 0), ("udp-hole-punch", 100)], unable: unable)
        _ = race.tick(now: at(0))
        #expect(race.failed(0, error: "no route", now: at(30)) == [], "another contender has yet to start")
        #expect(race.tick(now: at(100)) == [.start(1)])
        let actions = race.failed(1, error: "unreachable", now: at(3_000))
        guard case .exhausted(let attempts)? = actions.first, actions.count == 1 else {
            Issue.record("exhausted: \(actions)")
            return
        }
        #expect(attempts.map(\.strategy) == ["tcp-simultaneous-open", "direct-lan", "udp-hole-punch"])
        #expect(attempts.map(\.error) == ["peer has not enabled it", "no route", "unreachable"])
        #expect(race.isDecided && race.winner == nil)
    }

    @Test func contendersStillRunningAtTheDeadlineAreCancelledAsTimedOut() {
        var race = machine([("udp-hole-punch", 0), ("tls-relay", 12_000)], timeout: 10_000)
        _ = race.tick(now: at(0))
        #expect(race.nextDeadline == at(10_000), "a delay past the deadline is cut to it")
        let actions = race.tick(now: at(10_000))
        #expect(actions.first == .cancel([0]))
        guard case .exhausted(let attempts)? = actions.last else {
            Issue.record("exhausted: \(actions)")
            return
        }
        #expect(attempts.allSatisfy { $0.outcome == .failed && $0.error?.contains("timed out") == true }, "\(attempts)")
        #expect(race.succeeded(0, path: "udp", now: at(10_001)) == [.close(0)], "a success after the deadline is not used")
    }

    @Test func aRaceWithNobodyToRunIsExhaustedAtOnce() {
        let unable = [StrategyAttempt(strategy: "direct-lan", outcome: .failed, ms: 0, error: "no interface")]
        var race = machine([], unable: unable)
        #expect(race.tick(now: at(0)) == [.exhausted(attempts: unable)])
        #expect(race.nextDeadline == nil)
    }

    @Test func outcomesOfUnknownOrNeverStartedContendersAreIgnored() {
        var race = machine([("direct-lan", 0), ("tls-relay", 500)])
        _ = race.tick(now: at(0))
        #expect(race.failed(1, error: "early", now: at(10)) == [], "not started yet")
        #expect(race.failed(7, error: "who", now: at(10)) == [])
        #expect(race.succeeded(7, path: "x", now: at(10)) == [])
        #expect(!race.isDecided)
    }
}
