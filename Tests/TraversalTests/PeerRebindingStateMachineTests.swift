import NIOCore
import Testing
import Traversal

/// The rules by which a session follows its peer to a new address on the same path when the peer's NAT
/// rebinds (RFC 9000 §9.3), on an injected clock: only the newest authenticated datagram makes a candidate,
/// only an answer from that address with the check's nonce moves the path, and what goes to an unvalidated
/// address stays within three times what came from it (RFC 9000 §8).
struct PeerRebindingStateMachineTests {
    let t0 = ContinuousClock.now
    let path = SessionPathID.initial
    let rebound = try! SocketAddress(ipAddress: "203.0.113.9", port: 40_001)
    let spoofed = try! SocketAddress(ipAddress: "198.51.100.66", port: 5_000)
    /// A keepalive-sized authenticated datagram: enough for exactly two checks (3 × 26 = 78 ≥ 2 × 34).
    let keepalive = PeerWire.sealedOverhead

    func at(_ ms: Int) -> ContinuousClock.Instant { t0 + .milliseconds(ms) }

    /// A session that started on a direct path (it never upgrades, only follows its peer).
    func machine(deciding: Bool = false) -> PathMigrationStateMachine {
        PathMigrationStateMachine(deciding: deciding, start: .direct, now: t0, nonceSeed: 100)
    }

    @Test func aDirectSessionNeverBeginsAnUpgradeNorAnswersOffers() {
        var viewer = machine(deciding: true)
        #expect(viewer.nextDeadline == nil && viewer.tick(now: at(60_000)) == [])
        #expect(!viewer.hasStandby, "nothing to fall back to")
        var camera = machine()
        #expect(camera.peerOffered(attempt: 1, now: at(10)) == [])
    }

    @Test func aReboundPeerIsFollowedOnceItsNewAddressAnswersTheCheck() {
        var m = machine()
        #expect(m.heard(from: rebound, on: path, bytes: 1_000, newest: true, now: at(0)) == [.checkAddress(path, rebound, nonce: 101)])
        #expect(m.candidateAddress(on: path) == rebound)
        #expect(m.nextDeadline == at(100), "the check repeats until answered")
        #expect(m.tick(now: at(100)) == [.checkAddress(path, rebound, nonce: 101)])
        #expect(m.answered(on: path, from: rebound, nonce: 101, now: at(150)) == [.rebind(path, to: rebound)])
        #expect(m.candidateAddress(on: path) == nil && m.nextDeadline == nil)
        #expect(m.answered(on: path, from: rebound, nonce: 101, now: at(160)) == [], "a second answer does nothing")
    }

    @Test func theOldAddressOrAWrongNonceCannotAnswerForTheNewAddress() {
        var m = machine()
        _ = m.heard(from: rebound, on: path, bytes: 1_000, newest: true, now: at(0))
        // The answer to the check's nonce on the path's own address (answers from it come without a source).
        #expect(m.answered(on: path, nonce: 101, now: at(10)) == [], "the old address cannot answer for the new one")
        #expect(m.answered(on: path, from: spoofed, nonce: 101, now: at(10)) == [], "nor can a third address")
        #expect(m.answered(on: path, from: rebound, nonce: 102, now: at(10)) == [], "nor a guessed nonce")
        #expect(m.answered(on: SessionPathID(7), from: rebound, nonce: 101, now: at(10)) == [], "nor another path")
        #expect(m.candidateAddress(on: path) == rebound)
    }

    @Test func onlyTheNewestDatagramMakesACandidate() {
        var m = machine()
        // An authenticated datagram older than one already seen (reordered, or raced by an on-path copy).
        #expect(m.heard(from: spoofed, on: path, bytes: 1_000, newest: false, now: at(0)) == [])
        #expect(m.candidateAddress(on: path) == nil && m.nextDeadline == nil)
        // A newer datagram from another address replaces the candidate; an older one from the candidate adds to its budget.
        _ = m.heard(from: spoofed, on: path, bytes: 1_000, newest: true, now: at(10))
        #expect(m.heard(from: rebound, on: path, bytes: 1_000, newest: true, now: at(20)) == [.checkAddress(path, rebound, nonce: 102)])
        #expect(m.answered(on: path, from: spoofed, nonce: 101, now: at(30)) == [], "the replaced candidate's check is void")
        #expect(m.heard(from: rebound, on: path, bytes: 100, newest: false, now: at(120)) == [.checkAddress(path, rebound, nonce: 102)])
    }

    @Test func checksToAnUnvalidatedAddressStayWithinThreeTimesWhatCameFromIt() {
        var m = machine()
        let check = PathMigrationStateMachine.addressCheckBytes
        var sent = 0
        var received = keepalive
        sent += m.heard(from: rebound, on: path, bytes: keepalive, newest: true, now: at(0)).count * check
        // Bounded: 50 ticks of 100 ms, well past the validation timeout.
        for i in 1...50 {
            sent += m.tick(now: at(i * 100)).filter { if case .checkAddress = $0 { true } else { false } }.count * check
            #expect(sent <= 3 * received, "at \(i * 100) ms: \(sent) bytes sent for \(received) received")
            if i == 5 {
                // More from the address raises the budget by three times its size.
                received += keepalive
                sent += m.heard(from: rebound, on: path, bytes: keepalive, newest: false, now: at(510)).count * check
                #expect(sent <= 3 * received)
            }
        }
        #expect(sent == 4 * check, "every check the budget allowed was sent: \(sent)")
        // Answering the peer's own check from that address is charged to the same budget.
        var n = machine()
        // The peer's check (34 bytes) came from the new address; our own check to it spent 34 of the 102 allowed.
        #expect(n.heard(from: rebound, on: path, bytes: check, newest: true, now: at(0)).count == 1)
        let answers = (0..<3).map { _ in n.mayAnswer(on: path, to: rebound, bytes: check) }
        // The first answer is the size of the check that came, the second fills 102 bytes for 34 received,
        // a third check's worth would exceed 3 × 34 bytes.
        #expect(answers == [true, true, false])
        let toAnother = n.mayAnswer(on: path, to: spoofed, bytes: 1)
        #expect(!toAnother, "nothing to an address that is not the candidate")
    }

    @Test func anUnansweredAddressIsForgottenAfterTheValidationTimeout() {
        var m = machine()
        _ = m.heard(from: rebound, on: path, bytes: 1_000, newest: true, now: at(0))
        #expect(m.nextDeadline == at(100))
        _ = m.tick(now: at(1_000))
        #expect(m.candidateAddress(on: path) == nil && m.nextDeadline == nil)
        #expect(m.answered(on: path, from: rebound, nonce: 101, now: at(1_010)) == [], "too late")
    }

    @Test func aRelayedSessionFollowsARebindingOnItsDirectPathWithoutFallingBack() {
        var m = PathMigrationStateMachine(deciding: true, now: t0, nonceSeed: 100)
        let direct = SessionPathID(1)
        _ = m.tick(now: at(500))
        _ = m.candidateConnected(direct, attempt: 1, now: at(800))
        _ = m.answered(on: direct, nonce: 101, now: at(1_000))
        #expect(m.active == direct)
        m.sent(now: at(1_100))
        // The peer's datagrams now come from a new address: the path is alive, so no health probe starts.
        #expect(m.heard(from: rebound, on: direct, bytes: 500, newest: true, now: at(1_900)) == [.checkAddress(direct, rebound, nonce: 102)])
        #expect(m.tick(now: at(2_050)).allSatisfy { if case .probe = $0 { false } else { true } })
        #expect(m.answered(on: direct, from: rebound, nonce: 102, now: at(2_100)) == [.rebind(direct, to: rebound)])
        #expect(m.active == direct && m.hasStandby)
    }
}
