import Testing
import Traversal

/// How a session that started direct keeps its standby relay, on an injected clock: the deciding side checks it,
/// replaces it when it is lost or stops answering (one connect at a time, backing off, giving up after a bound),
/// and a later fallback lands on the replacement; the other side follows the peer's replacements and renews its
/// own end when that ends, which the deciding side then follows.
struct StandbyUpkeepStateMachineTests {
    let t0 = ContinuousClock.now
    let direct = SessionPathID.initial

    func at(_ ms: Int) -> ContinuousClock.Instant { t0 + .milliseconds(ms) }

    func direct(deciding: Bool = true) -> PathMigrationStateMachine {
        PathMigrationStateMachine(deciding: deciding, start: .direct, now: t0, nonceSeed: 100)
    }

    /// A deciding machine whose first standby (path 1) joined at 100 ms and answered its first check (nonce 101).
    func standing() -> PathMigrationStateMachine {
        var m = direct()
        _ = m.standbyWanted(now: at(0))
        _ = m.standbyConnected(SessionPathID(1), attempt: 1, now: at(100))
        _ = m.tick(now: at(100))
        _ = m.answered(on: SessionPathID(1), nonce: 101, now: at(150))
        return m
    }

    @Test func theFirstStandbyIsConnectedOnceAndCheckedAtOnce() {
        var m = direct()
        #expect(m.standbyWanted(now: at(0)) == [.connectStandby(attempt: 1, replacing: false)])
        #expect(m.standbyWanted(now: at(10)) == [], "one connect in flight")
        #expect(m.tick(now: at(50)) == [])
        let joined = m.standbyConnected(SessionPathID(1), attempt: 1, now: at(100))
        #expect(joined && m.standby == SessionPathID(1) && m.hasStandby)
        #expect(m.nextDeadline == at(100))
        #expect(m.tick(now: at(100)) == [.probe(SessionPathID(1), nonce: 101)], "checked at once")
        #expect(m.answered(on: SessionPathID(1), nonce: 101, now: at(150)) == [])
        let config = PathMigrationStateMachine.Configuration()
        #expect(m.nextDeadline == at(150) + config.standbyCheckInterval)
        #expect(m.tick(now: at(150) + config.standbyCheckInterval) == [.probe(SessionPathID(1), nonce: 102)], "checked again later")
    }

    @Test func aStandbyThatStopsAnsweringIsDroppedAndReplacedAtOnceAndTheFallbackLandsOnTheReplacement() {
        var m = standing()
        let old = SessionPathID(1), fresh = SessionPathID(2)
        let check = at(150) + m.configuration.standbyCheckInterval
        #expect(m.tick(now: check) == [.probe(old, nonce: 102)])
        // The check is repeated every probe interval while unanswered; past the bound the standby is dead.
        #expect(m.tick(now: check + m.configuration.probeInterval) == [.probe(old, nonce: 102)])
        let dead = check + m.configuration.standbyTimeout
        #expect(m.nextDeadline == check + m.configuration.probeInterval * 2)
        #expect(m.tick(now: dead) == [.abandon(old), .connectStandby(attempt: 2, replacing: true)])
        #expect(!m.hasStandby && m.standby == nil && m.pathIDs == [direct])
        #expect(m.tick(now: dead + .milliseconds(500)) == [], "one connect in flight")
        let stale = m.standbyConnected(old, attempt: 1, now: dead)
        #expect(!stale, "a stale attempt does not join")
        let replaced = m.standbyConnected(fresh, attempt: 2, now: dead + .seconds(1))
        #expect(replaced)
        #expect(m.standby == fresh && m.standbysJoined == 2)
        #expect(m.tick(now: dead + .seconds(1)) == [.probe(fresh, nonce: 103)])
        _ = m.answered(on: fresh, nonce: 103, now: dead + .seconds(1))

        // The direct path then dies: the session falls back to the replacement.
        let t = dead + .milliseconds(1_200)
        m.sent(now: t)
        m.heard(on: direct, now: t - .milliseconds(1))
        // The direct path turns suspect: it is probed, and so is the standby, which answers (it lives).
        #expect(m.tick(now: t + m.configuration.silence) == [.probe(direct, nonce: 104), .probe(fresh, nonce: 105)])
        _ = m.answered(on: fresh, nonce: 105, now: t + m.configuration.silence + .milliseconds(50))
        let actions = m.tick(now: t + m.configuration.silence + m.configuration.probeTimeout)
        #expect(actions.prefix(3) == [.switchTo(fresh, reason: .pathDead), .announce(fresh, epoch: 1), .abandon(direct)])
        #expect(m.active == fresh)
    }

    @Test func aLostStandbyIsReplacedAndFailedConnectsBackOffUpToTheBound() {
        var m = standing()
        m.lost(SessionPathID(1), now: at(1_000))
        #expect(!m.hasStandby)
        #expect(m.tick(now: at(1_000)) == [.connectStandby(attempt: 2, replacing: true)], "an answering standby that ended is replaced at once")
        var now = at(1_100)
        var waits: [Duration] = []
        var attempt: UInt32 = 2
        // Bounded: at most maxStandbyFailures rounds.
        for _ in 0..<m.configuration.maxStandbyFailures {
            #expect(m.standbyFailed(attempt: attempt, now: now) == [])
            guard let next = m.nextDeadline else { break }
            waits.append(next - now)
            #expect(m.tick(now: next - .milliseconds(1)) == [])
            attempt += 1
            #expect(m.tick(now: next) == [.connectStandby(attempt: attempt, replacing: true)])
            now = next + .milliseconds(100)
        }
        #expect(waits == [.seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(16)], "\(waits)")
        #expect(m.standbyFailures == m.configuration.maxStandbyFailures)
        #expect(m.nextDeadline == nil && m.tick(now: now + .seconds(600)) == [], "given up")
    }

    @Test func aConnectThatNeverFinishesCountsAsFailed() {
        var m = direct()
        _ = m.standbyWanted(now: at(0))
        let timeout = at(0) + m.configuration.standbyConnectTimeout
        #expect(m.nextDeadline == timeout)
        #expect(m.tick(now: timeout) == [])
        #expect(m.standbyFailures == 1)
        #expect(m.tick(now: timeout + m.configuration.standbyRetryBackoff) == [.connectStandby(attempt: 2, replacing: false)])
        #expect(m.standbyFailed(attempt: 1, now: timeout) == [], "a stale failure changes nothing")
    }

    @Test func aReplacementThatNeverAnswersIsReplacedAfterTheBackoff() {
        var m = standing()
        let check = at(150) + m.configuration.standbyCheckInterval
        _ = m.tick(now: check)
        #expect(m.tick(now: check + m.configuration.standbyTimeout) == [.abandon(SessionPathID(1)), .connectStandby(attempt: 2, replacing: true)])
        let t = check + m.configuration.standbyTimeout + .milliseconds(200)
        let joined = m.standbyConnected(SessionPathID(2), attempt: 2, now: t)
        #expect(joined)
        #expect(m.tick(now: t) == [.probe(SessionPathID(2), nonce: 103)])
        #expect(m.tick(now: t + m.configuration.standbyTimeout) == [.abandon(SessionPathID(2))], "never answered: not at once")
        #expect(m.nextDeadline == t + m.configuration.standbyTimeout + m.configuration.standbyRetryBackoff)
    }

    @Test func whileTheStandbyCarriesTheSessionItIsNotChecked() {
        var m = standing()
        m.sent(now: at(200))
        _ = m.tick(now: at(1_200))
        _ = m.tick(now: at(1_500))
        #expect(m.active == SessionPathID(1))
        // It carries the session and is heard: no periodic checks (only silence while sending would probe it).
        m.heard(on: SessionPathID(1), now: at(1_600))
        let later = at(1_500) + m.configuration.standbyCheckInterval * 3
        #expect(!m.tick(now: later).contains { if case .probe(SessionPathID(1), _) = $0 { return true } else { return false } })
    }

    @Test func theOtherSideKeepsItsStandbyWithoutChecksAndRenewsItsOwnEndWhenItEnds() {
        var m = direct(deciding: false)
        #expect(m.standbyWanted(now: at(0)) == [.connectStandby(attempt: 1, replacing: false)])
        let joined = m.standbyConnected(SessionPathID(1), attempt: 1, now: at(100))
        #expect(joined)
        #expect(m.nextDeadline == nil && m.tick(now: at(60_000)) == [], "no checks: the deciding side keeps it alive")
        // Its own end ended (its relay connection reset): a fresh end at once, to be offered to the peer.
        m.lost(SessionPathID(1), now: at(60_000))
        #expect(!m.hasStandby)
        #expect(m.tick(now: at(60_000)) == [.connectStandby(attempt: 2, replacing: true)])
        #expect(m.tick(now: at(60_100)) == [], "one renewal in flight")
        // The peer never reaches it: renewed again after the backoff, at most maxStandbyFailures times in a row.
        var now = at(61_000)
        var attempt: UInt32 = 2
        var renewals = 1
        for _ in 0..<20 {
            _ = m.standbyFailed(attempt: attempt, now: now)
            guard let due = m.nextDeadline else { break }
            now = due
            let actions = m.tick(now: now)
            guard case .connectStandby(let next, true)? = actions.first else { break }
            attempt = next
            renewals += 1
        }
        #expect(renewals == m.configuration.maxStandbyFailures, "bounded: \(renewals)")
        // A renewed end the peer reached joins like the first and resets the count.
        var n = direct(deciding: false)
        _ = n.standbyWanted(now: at(0))
        _ = n.standbyConnected(SessionPathID(1), attempt: 1, now: at(100))
        n.lost(SessionPathID(1), now: at(1_000))
        _ = n.tick(now: at(1_000))
        _ = n.standbyFailed(attempt: 2, now: at(2_000))
        #expect(n.standbyFailures == 1)
        _ = n.tick(now: n.nextDeadline ?? at(0))
        let renewed = n.standbyConnected(SessionPathID(2), attempt: 3, now: at(4_000))
        #expect(renewed && n.standby == SessionPathID(2) && n.standbyFailures == 0)
    }

    @Test func theOtherSidesFirstStandbyConnectIsNotRepeated() {
        var m = direct(deciding: false)
        _ = m.standbyWanted(now: at(0))
        // The deciding side never connected (it keeps no standby): nothing renews.
        _ = m.standbyFailed(attempt: 1, now: at(15_000))
        #expect(m.nextDeadline == nil && m.tick(now: at(120_000)) == [])
    }

    @Test func whenThePeerRenewsItsEndTheDecidingSideReplacesItsOwnAtOnceAndAtMostOncePerBackoff() {
        var m = standing()
        let old = SessionPathID(1), fresh = SessionPathID(2)
        #expect(m.peerRenewedStandby(now: at(5_000)) == [.abandon(old), .connectStandby(attempt: 2, replacing: true)])
        #expect(!m.hasStandby && m.standby == nil && m.pathIDs == [direct])
        // A second renewal sooner than the backoff is ignored (a peer cannot make us allocate at its rate).
        #expect(m.peerRenewedStandby(now: at(5_000) + m.configuration.standbyRetryBackoff - .milliseconds(1)) == [])
        let joined = m.standbyConnected(fresh, attempt: 2, now: at(5_400))
        #expect(joined && m.standby == fresh)
        #expect(m.tick(now: at(5_400)) == [.probe(fresh, nonce: 102)], "checked at once")
        // Later, a renewal while a replacement is in flight starts a newer connect (the old attempt is stale).
        #expect(m.peerRenewedStandby(now: at(9_000)) == [.abandon(fresh), .connectStandby(attempt: 3, replacing: true)])
        #expect(m.peerRenewedStandby(now: at(11_000)) == [.connectStandby(attempt: 4, replacing: true)])
        let stale = m.standbyConnected(SessionPathID(3), attempt: 3, now: at(11_100))
        #expect(!stale)
    }

    @Test func aSessionWithoutAStandbyIgnoresRenewedEnds() {
        var m = direct()
        #expect(m.peerRenewedStandby(now: at(1_000)) == [], "no standby was ever wanted")
        var other = direct(deciding: false)
        _ = other.standbyWanted(now: at(0))
        _ = other.standbyConnected(SessionPathID(1), attempt: 1, now: at(100))
        #expect(other.peerRenewedStandby(now: at(1_000)) == [], "only the deciding side follows renewals")
    }

    @Test func aSessionThatStartedOnTheRelayWantsNoOtherStandby() {
        var m = PathMigrationStateMachine(deciding: true, now: t0, nonceSeed: 100)
        #expect(m.standbyWanted(now: at(0)) == [])
    }

    /// The nonce of the first probe of `path` in `actions`.
    func probeNonce(_ actions: [PathMigrationStateMachine.Action], on path: SessionPathID) -> UInt64? {
        for case .probe(path, let nonce) in actions { return nonce }
        return nil
    }

    /// This side changed networks: the direct path and the standby died together. The standby, probed when the
    /// direct path turned suspect, is silent too at the fallback: a replacement is connected at once, and once it
    /// answers its check the session moves there.
    @Test func aStandbySilentWithTheDirectPathIsReplacedAtTheFallback() throws {
        var m = standing()
        let old = SessionPathID(1), fresh = SessionPathID(2)
        m.sent(now: at(200))
        let suspect = m.tick(now: at(1_200))
        #expect(probeNonce(suspect, on: direct) != nil && probeNonce(suspect, on: old) != nil, "both probed: \(suspect)")
        let fallback = m.tick(now: at(1_500))
        #expect(fallback.prefix(3) == [.switchTo(old, reason: .pathDead), .announce(old, epoch: 1), .abandon(direct)], "\(fallback)")
        #expect(fallback.contains(.connectStandby(attempt: 2, replacing: true)), "replaced at once: \(fallback)")
        #expect(m.deadCarrier == old && m.active == old && m.standby == nil)
        #expect(m.tick(now: at(1_600)).allSatisfy { probeNonce([$0], on: old) == nil }, "a dead carrier is not probed")
        let joined = m.standbyConnected(fresh, attempt: 2, now: at(1_700))
        #expect(joined)
        let check = try #require(probeNonce(m.tick(now: at(1_700)), on: fresh), "the replacement is checked at once")
        let moved = m.answered(on: fresh, nonce: check, now: at(1_750))
        #expect(moved.prefix(3) == [.switchTo(fresh, reason: .pathDead), .announce(fresh, epoch: 2), .abandon(old)], "\(moved)")
        #expect(m.active == fresh && m.standby == fresh && m.deadCarrier == nil)
    }

    /// The standby answered when the direct path turned suspect, so the session fell back to it; then it died too.
    /// Silent while we send, it answers no probe, a replacement is connected, and once the replacement answers its
    /// check the session moves there.
    @Test func aStandbyThatDiesWhileCarryingTheSessionIsReplacedAndTheSessionMovesToTheReplacement() throws {
        var m = standing()
        let old = SessionPathID(1), fresh = SessionPathID(2)
        m.sent(now: at(200))
        let suspect = try #require(probeNonce(m.tick(now: at(1_200)), on: old))
        _ = m.answered(on: old, nonce: suspect, now: at(1_250))
        #expect(m.tick(now: at(1_500)).contains(.switchTo(old, reason: .pathDead)))
        #expect(m.deadCarrier == nil, "it answered: kept")
        m.sent(now: at(1_600))
        // Heard last at 1 250 ms: silent for ``silence`` while we send, it is probed.
        #expect(probeNonce(m.tick(now: at(2_200)), on: old) == nil)
        let probe = try #require(probeNonce(m.tick(now: at(2_250)), on: old), "a silent carrier is probed")
        #expect(m.nextDeadline == at(2_250) + m.configuration.probeInterval)
        let dead = at(2_250) + m.configuration.standbyTimeout
        let actions = m.tick(now: dead)
        #expect(actions.contains(.connectStandby(attempt: 2, replacing: true)), "\(actions)")
        #expect(m.deadCarrier == old && m.active == old && m.standby == nil)
        let wrong = m.answered(on: old, nonce: probe &+ 1_000, now: dead)
        #expect(wrong.isEmpty)
        let joined = m.standbyConnected(fresh, attempt: 2, now: dead + .milliseconds(400))
        #expect(joined)
        let check = try #require(probeNonce(m.tick(now: dead + .milliseconds(400)), on: fresh), "the replacement is checked at once")
        let moved = m.answered(on: fresh, nonce: check, now: dead + .milliseconds(450))
        #expect(moved.prefix(3) == [.switchTo(fresh, reason: .pathDead), .announce(fresh, epoch: 2), .abandon(old)], "\(moved)")
        #expect(m.active == fresh && m.standby == fresh && m.deadCarrier == nil && m.pathIDs == [fresh])
    }

    @Test func aCarrierHeardAfterAllStaysAndItsReplacementStandsBy() throws {
        var m = standing()
        let old = SessionPathID(1), fresh = SessionPathID(2)
        m.sent(now: at(200))
        _ = m.tick(now: at(1_200))
        _ = m.tick(now: at(1_500))
        m.sent(now: at(1_600))
        _ = m.tick(now: at(1_600))
        _ = m.tick(now: at(1_600) + m.configuration.standbyTimeout)
        #expect(m.deadCarrier == old)
        m.heard(on: old, now: at(3_200))
        #expect(m.deadCarrier == nil)
        let joined = m.standbyConnected(fresh, attempt: 2, now: at(3_300))
        #expect(joined)
        let check = try #require(probeNonce(m.tick(now: at(3_300)), on: fresh))
        let answer = m.answered(on: fresh, nonce: check, now: at(3_350))
        #expect(answer.isEmpty, "no move: the carrier works")
        #expect(m.active == old && m.standby == fresh)
    }
}
