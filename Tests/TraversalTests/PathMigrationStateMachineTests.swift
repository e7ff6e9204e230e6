import Testing
import Traversal

/// The rules by which a relayed session moves to a direct path and back, on an injected clock: when attempts
/// begin, that only an answered probe confirms a path, fallback on silence, backoff, stale answers and announcements.
struct PathMigrationStateMachineTests {
    let t0 = ContinuousClock.now
    let direct = SessionPathID(1)
    let relay = SessionPathID.initial

    func at(_ ms: Int) -> ContinuousClock.Instant { t0 + .milliseconds(ms) }

    func machine(deciding: Bool = true) -> PathMigrationStateMachine {
        PathMigrationStateMachine(deciding: deciding, now: t0, nonceSeed: 100)
    }

    /// A deciding machine that moved to `direct` at 1 s (attempt 1, confirmed by the answer to nonce 101).
    func upgraded() -> PathMigrationStateMachine {
        var m = machine()
        _ = m.tick(now: at(500))
        _ = m.candidateConnected(direct, attempt: 1, now: at(800))
        _ = m.answered(on: direct, nonce: 101, now: at(1_000))
        return m
    }

    @Test func theDecidingSideBeginsAnAttemptAfterTheFirstDelayAndTheOtherWaitsForOffers() {
        var m = machine()
        #expect(m.nextDeadline == at(500))
        #expect(m.tick(now: at(499)) == [])
        #expect(m.tick(now: at(500)) == [.beginUpgrade(attempt: 1)])
        #expect(m.isUpgrading)
        #expect(m.tick(now: at(600)) == [], "one attempt at a time")

        var other = machine(deciding: false)
        #expect(other.nextDeadline == nil && other.tick(now: at(60_000)) == [], "the answering side never begins")
        #expect(other.peerOffered(attempt: 1, now: at(10)) == [.answerUpgrade(attempt: 1)])
        #expect(other.peerOffered(attempt: 1, now: at(20)) == [], "a repeated offer is answered once")
    }

    @Test func aCandidateIsUsedOnlyAfterAnAuthenticatedAnswerOnIt() {
        var m = machine()
        _ = m.tick(now: at(500))
        #expect(m.candidateConnected(direct, attempt: 1, now: at(800)) == [.probe(direct, nonce: 101)])
        // Traffic heard on the candidate is not a confirmation: only the answer to our probe is.
        m.heard(on: direct, now: at(810))
        #expect(m.active == relay)
        #expect(m.tick(now: at(899)) == [])
        #expect(m.tick(now: at(900)) == [.probe(direct, nonce: 101)], "repeated until answered")
        #expect(m.answered(on: direct, nonce: 999, now: at(950)) == [], "an answer to no probe of ours")
        #expect(m.answered(on: relay, nonce: 101, now: at(950)) == [], "the right nonce on another path proves nothing about this one")
        #expect(m.active == relay)
        #expect(m.answered(on: direct, nonce: 101, now: at(1_000)) == [.switchTo(direct, reason: .upgrade), .announce(direct, epoch: 1)])
        #expect(m.active == direct && !m.isUpgrading && m.failures == 0)
        #expect(m.pathIDs == [relay, direct], "the relay stays as standby")
        #expect(m.answered(on: direct, nonce: 101, now: at(1_010)) == [], "a second answer to the same probe does nothing")
    }

    @Test func theAnsweringSideFollowsThePeersAnnouncementNotItsOwnProbes() {
        var m = machine(deciding: false)
        _ = m.peerOffered(attempt: 1, now: at(0))
        #expect(m.candidateConnected(direct, attempt: 1, now: at(100)) == [], "it does not probe: the deciding side confirms")
        #expect(m.peerSwitched(to: direct, epoch: 1, now: at(200)) == [.switchTo(direct, reason: .peerMoved)])
        #expect(m.active == direct)
        #expect(m.peerSwitched(to: direct, epoch: 1, now: at(210)) == [], "the same announcement repeated")
    }

    @Test func aSilentDirectPathWhileWeSendFallsBackToTheRelay() {
        var m = upgraded()
        // Silence alone, with nothing sent, is an idle session, not a dead path.
        #expect(m.tick(now: at(5_000)) == [])
        m.heard(on: direct, now: at(5_000))
        m.sent(now: at(5_100))
        #expect(m.nextDeadline == at(6_000), "suspect a second after the last datagram heard")
        #expect(m.tick(now: at(5_999)) == [])
        #expect(m.tick(now: at(6_000)) == [.probe(direct, nonce: 102)])
        #expect(m.tick(now: at(6_100)) == [.probe(direct, nonce: 102)])
        #expect(m.tick(now: at(6_300)) == [.switchTo(relay, reason: .pathDead), .announce(relay, epoch: 2), .abandon(direct)])
        #expect(m.active == relay && m.pathIDs == [relay] && m.failures == 1)
        #expect(m.nextDeadline == at(8_300), "the next attempt after the backoff")
        #expect(m.tick(now: at(8_300)) == [.beginUpgrade(attempt: 2)])
    }

    @Test func aSuspectPathThatAnswersStays() {
        var m = upgraded()
        m.sent(now: at(1_500))
        #expect(m.tick(now: at(2_000)) == [.probe(direct, nonce: 102)])
        #expect(m.answered(on: direct, nonce: 102, now: at(2_050)) == [])
        #expect(m.active == direct)
        #expect(m.tick(now: at(2_400)) == [], "no fallback once answered")
        // A late answer to that probe, after it ended, is stale.
        #expect(m.answered(on: direct, nonce: 102, now: at(2_500)) == [])
    }

    @Test func anyAuthenticatedDatagramOnTheActivePathEndsTheSuspicion() {
        var m = upgraded()
        m.sent(now: at(1_500))
        _ = m.tick(now: at(2_000))
        m.heard(on: direct, now: at(2_100))
        #expect(m.tick(now: at(2_300)) == [])
        #expect(m.active == direct)
    }

    @Test func failedAttemptsBackOffDoublingToTheCap() {
        var m = machine()
        #expect(m.tick(now: at(500)) == [.beginUpgrade(attempt: 1)])
        #expect(m.upgradeFailed(attempt: 1, now: at(1_000)) == [])
        #expect(m.nextDeadline == at(3_000))
        #expect(m.tick(now: at(3_000)) == [.beginUpgrade(attempt: 2)])
        // An attempt that connects nothing before its timeout fails as well.
        #expect(m.nextDeadline == at(11_000))
        #expect(m.tick(now: at(11_000)) == [])
        #expect(m.failures == 2 && m.nextDeadline == at(15_000))
        #expect(m.backoff(failures: 3) == .seconds(8))
        #expect(m.backoff(failures: 10) == .seconds(60), "capped")
        #expect(m.upgradeFailed(attempt: 1, now: at(15_000)) == [], "a stale failure changes nothing")
        #expect(m.failures == 2)
    }

    @Test func aCandidateOfAnEndedAttemptIsAbandonedAndItsAnswersIgnored() {
        var m = machine()
        _ = m.tick(now: at(500))
        #expect(m.candidateConnected(direct, attempt: 1, now: at(600)) == [.probe(direct, nonce: 101)])
        // The attempt times out unanswered: the candidate is closed.
        #expect(m.tick(now: at(8_500)) == [.abandon(direct)])
        #expect(m.answered(on: direct, nonce: 101, now: at(8_600)) == [], "stale answer")
        #expect(m.active == relay)
        let late = SessionPathID(2)
        #expect(m.candidateConnected(late, attempt: 1, now: at(8_700)) == [.abandon(late)], "connected after its attempt ended")
    }

    @Test func thePeerFallingBackMovesUsBackAndOldAnnouncementsAreIgnored() {
        var m = upgraded()
        #expect(m.peerSwitched(to: relay, epoch: 3, now: at(4_000)) == [.switchTo(relay, reason: .peerMoved), .abandon(direct)])
        #expect(m.active == relay && m.failures == 1)
        #expect(m.nextDeadline == at(6_000), "and tries again after the backoff")
        #expect(m.peerSwitched(to: relay, epoch: 2, now: at(4_100)) == [], "older than the last one")
        #expect(m.peerSwitched(to: direct, epoch: 4, now: at(4_200)) == [], "a path no longer in the set")
    }

    @Test func anAnsweringSideBackOnTheRelayTakesANewOfferAndDropsTheOldCandidate() {
        var m = machine(deciding: false)
        _ = m.peerOffered(attempt: 1, now: at(0))
        _ = m.candidateConnected(direct, attempt: 1, now: at(100))
        #expect(m.peerOffered(attempt: 2, now: at(3_000)) == [.abandon(direct), .answerUpgrade(attempt: 2)])
        #expect(m.peerOffered(attempt: 1, now: at(3_100)) == [], "an offer older than the last")
    }

    @Test func withoutItsStandbyASilentDirectPathIsProbedButNeverFallsBack() {
        var m = upgraded()
        m.lost(relay, now: at(1_500))
        #expect(!m.hasStandby && m.pathIDs == [direct])
        m.sent(now: at(2_000))
        #expect(m.nextDeadline == at(2_000), "silent since the upgrade at 1 s")
        #expect(m.tick(now: at(2_000)) == [.probe(direct, nonce: 102)])
        #expect(m.nextDeadline == at(2_100), "repeated, with no timeout")
        #expect(m.tick(now: at(10_000)) == [.probe(direct, nonce: 102)], "nothing to fall back to")
        #expect(m.active == direct)
        m.heard(on: direct, now: at(10_050))
        #expect(m.nextDeadline == nil, "heard again: no more probes")
        m.lost(direct, now: at(10_000))
        #expect(m.pathIDs == [direct], "the active path is not dropped: its end ends the session")
    }

    @Test func aSessionThatStartedDirectFallsBackToAStandbyThatJoinedItAndThenLooksForDirectAgain() {
        var m = PathMigrationStateMachine(deciding: true, start: .direct, now: t0, nonceSeed: 100)
        let startedOn = SessionPathID.initial
        let joined = SessionPathID(1)
        #expect(!m.hasStandby && m.standby == nil && m.nextDeadline == nil)
        m.sent(now: at(100))
        #expect(m.tick(now: at(5_000)) == [.probe(startedOn, nonce: 101)], "silence is probed, with nothing to fall back to")
        #expect(m.tick(now: at(5_400)) == [.probe(startedOn, nonce: 101)], "and not given up")
        m.heard(on: startedOn, now: at(5_000))
        let first = m.standbyJoined(joined, now: at(5_000))
        #expect(first)
        #expect(m.hasStandby && m.standby == joined && m.active == startedOn)
        let second = m.standbyJoined(SessionPathID(2), now: at(5_000))
        #expect(!second, "one standby")
        #expect(!m.isUpgrading && m.tick(now: at(5_000)).isEmpty, "no upgrade attempt while direct")
        // The direct path goes silent while we send: probed, then dead, then the standby carries the session.
        m.sent(now: at(5_100))
        #expect(m.nextDeadline == at(6_000))
        #expect(m.tick(now: at(6_000)) == [.probe(startedOn, nonce: 102)])
        #expect(m.tick(now: at(6_300)) == [.switchTo(joined, reason: .pathDead), .announce(joined, epoch: 1), .abandon(startedOn)])
        #expect(m.active == joined && m.pathIDs == [joined])
        // On the relay now, the deciding side tries direct again after the backoff.
        #expect(m.nextDeadline == at(8_300))
        #expect(m.tick(now: at(8_300)) == [.beginUpgrade(attempt: 1)])
    }
}
