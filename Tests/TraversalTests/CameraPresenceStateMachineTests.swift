import Crypto
import Testing
@testable import Traversal

/// The camera's UDP presence as data: probes, confirmation, keepalives, wake, loss and fallback, with time moved by hand.
@Suite struct CameraPresenceStateMachineTests {
    let key = SymmetricKey(size: .bits256)
    let session = PresenceSessionID(high: 1, low: 2)
    let t0 = ContinuousClock.now
    let configuration = CameraPresenceStateMachine.Configuration(keepaliveInterval: .seconds(20))

    func machine() -> CameraPresenceStateMachine {
        CameraPresenceStateMachine(session: session, key: key, configuration: configuration, now: t0)
    }

    /// A datagram the cloud would send.
    func fromCloud(_ kind: PresenceDatagramKind, _ counter: UInt64, key: SymmetricKey? = nil) -> [UInt8] {
        PresenceDatagram(kind: kind, session: session, counter: counter).sealed(with: key ?? self.key)
    }

    /// The keepalive counters in `actions`, opened under the session key.
    func keepalives(_ actions: [CameraPresenceStateMachine.Action]) -> [UInt64] {
        actions.compactMap {
            guard case .send(let bytes) = $0, let d = try? PresenceDatagram.open(bytes, with: key), d.kind == .keepalive else { return nil }
            return d.counter
        }
    }

    /// Stopping sends one authenticated `leave` after the keepalives' counter, and the presence ends.
    @Test func leavingSendsOneAuthenticatedLeaveAndEnds() throws {
        var machine = machine()
        #expect(keepalives(machine.tick(now: t0)) == [1], "the first probe")
        let left = machine.leave()
        let bytes = try #require(left)
        let datagram = try PresenceDatagram.open(bytes, with: key)
        #expect(datagram.kind == .leave && datagram.session == session && datagram.counter == 2)
        #expect(machine.state == .ended && machine.nextDeadline == nil)
        #expect(machine.leave() == nil, "once")
        #expect(machine.tick(now: t0 + .seconds(60)).isEmpty)
    }

    @Test func unansweredProbesMeanUDPIsBlockedAndTLSStays() {
        var m = machine()
        #expect(keepalives(m.tick(now: t0)) == [1])
        #expect(m.tick(now: t0 + .milliseconds(500)).isEmpty)
        #expect(keepalives(m.tick(now: t0 + .seconds(1))) == [2])
        #expect(keepalives(m.tick(now: t0 + .seconds(2))) == [3])
        // Reported once, with the next probe; from then on one probe at a time, the wait doubling to the cap.
        let third = m.tick(now: t0 + .seconds(3))
        #expect(third.first == .unavailable && keepalives(third) == [4])
        #expect(m.state == .probing(sent: 4) && m.nextDeadline == t0 + .seconds(23))
        #expect(m.tick(now: t0 + .seconds(22)).isEmpty)
        #expect(keepalives(m.tick(now: t0 + .seconds(23))) == [5])
        #expect(m.nextDeadline == t0 + .seconds(63))
        var now = t0 + .seconds(63)
        var waits: [Duration] = []
        for _ in 0..<6 {
            let actions = m.tick(now: now)
            #expect(keepalives(actions).count == 1 && !actions.contains(.unavailable))
            waits.append(m.nextDeadline! - now)
            now = m.nextDeadline!
        }
        #expect(waits == [.seconds(80), .seconds(160), .seconds(300), .seconds(300), .seconds(300), .seconds(300)])
    }

    @Test func aProbeAnsweredLongAfterUDPSeemedBlockedStillConfirms() {
        // A camera that registered in a reconnect storm: the cloud dropped its first probes, TLS stayed.
        var m = machine()
        var now = t0
        var unavailable = 0
        for _ in 0..<5 {
            unavailable += m.tick(now: now).filter { $0 == .unavailable }.count
            now = m.nextDeadline!
        }
        #expect(unavailable == 1)
        _ = m.tick(now: now)
        #expect(m.receive(fromCloud(.ack, 1), now: now + .milliseconds(5)) == .confirmed)
        #expect(m.state == .confirmed(lastAck: now + .milliseconds(5)))
        #expect(m.nextDeadline == now + .milliseconds(5) + configuration.keepaliveInterval)
    }

    @Test func anAckConfirmsThenKeepalivesFollowTheInterval() {
        var m = machine()
        _ = m.tick(now: t0)
        #expect(m.receive(fromCloud(.ack, 1), now: t0 + .milliseconds(10)) == .confirmed)
        #expect(m.nextDeadline == t0 + .milliseconds(10) + .seconds(20))
        #expect(m.tick(now: t0 + .seconds(5)).isEmpty)
        #expect(keepalives(m.tick(now: t0 + .seconds(21))) == [2])
        #expect(m.receive(fromCloud(.ack, 2), now: t0 + .seconds(21)) == nil)
        #expect(m.state == .confirmed(lastAck: t0 + .seconds(21)))
    }

    @Test func acksStoppingLosesThePresence() {
        var m = machine()
        _ = m.tick(now: t0)
        _ = m.receive(fromCloud(.ack, 1), now: t0)
        var now = t0
        var lost = false
        for _ in 0..<20 where !lost {
            now = m.nextDeadline ?? now
            lost = m.tick(now: now).contains(.lost)
        }
        #expect(lost && m.state == .ended)
        #expect(now - t0 >= configuration.livenessTimeout)
    }

    @Test func theCloudsUnknownSessionAnswerToTheLatestKeepaliveLosesThePresence() {
        var m = machine()
        _ = m.tick(now: t0)
        _ = m.receive(fromCloud(.ack, 1), now: t0)
        _ = m.tick(now: t0 + .seconds(20))      // keepalive 2
        let answer = { (counter: UInt64, session: PresenceSessionID) in
            PresenceDatagram(kind: .unknownSession, session: session, counter: counter).unknownSessionAnswer
        }
        // Unauthenticated, so believed only for this session and the latest keepalive.
        #expect(m.receive(answer(1, session), now: t0 + .seconds(20)) == nil)
        #expect(m.receive(answer(2, PresenceSessionID(high: 5, low: 5)), now: t0 + .seconds(20)) == nil)
        #expect(m.state == .confirmed(lastAck: t0))
        #expect(m.receive(answer(2, session), now: t0 + .seconds(20)) == .lost)
        #expect(m.state == .ended)
    }

    @Test func aWakeEndsThePresence() {
        var m = machine()
        _ = m.tick(now: t0)
        _ = m.receive(fromCloud(.ack, 1), now: t0)
        #expect(m.receive(fromCloud(.wake, 2), now: t0 + .seconds(3)) == .wake)
        #expect(m.state == .ended)
    }

    @Test func replayedForgedOrForeignDatagramsChangeNothing() {
        var m = machine()
        _ = m.tick(now: t0)
        let ack = fromCloud(.ack, 5)
        #expect(m.receive(ack, now: t0) == .confirmed)
        // The same ack again, an older wake, a wake under another key, another session's wake, a keepalive echoed back.
        #expect(m.receive(ack, now: t0 + .seconds(1)) == nil)
        #expect(m.receive(fromCloud(.wake, 4), now: t0 + .seconds(1)) == nil)
        #expect(m.receive(fromCloud(.wake, 6, key: SymmetricKey(size: .bits256)), now: t0 + .seconds(1)) == nil)
        let foreign = PresenceDatagram(kind: .wake, session: PresenceSessionID(high: 9, low: 9), counter: 7).sealed(with: key)
        #expect(m.receive(foreign, now: t0 + .seconds(1)) == nil)
        #expect(m.receive(fromCloud(.keepalive, 8), now: t0 + .seconds(1)) == nil)
        #expect(m.receive([1, 2, 3], now: t0 + .seconds(1)) == nil)
        #expect(m.state == .confirmed(lastAck: t0))
        #expect(m.receive(fromCloud(.wake, 6), now: t0 + .seconds(2)) == .wake)
    }

    @Test func aGoAwayEndsThePresenceWithTheCloudsDelayAndAForgedOneChangesNothing() {
        var m = machine()
        _ = m.tick(now: t0)
        _ = m.receive(fromCloud(.ack, 1), now: t0)
        let forged = PresenceDatagram(kind: .goAway, session: session, counter: 2, retryAfterMilliseconds: 1)
            .sealed(with: SymmetricKey(size: .bits256))
        #expect(m.receive(forged, now: t0) == nil)
        #expect(m.state == .confirmed(lastAck: t0))
        let goAway = PresenceDatagram(kind: .goAway, session: session, counter: 2, retryAfterMilliseconds: 7_000).sealed(with: key)
        #expect(goAway.count == PresenceProtocol.datagramLength + 4)
        #expect(m.receive(goAway, now: t0) == .goAway(retryAfter: .seconds(7)))
        #expect(m.state == .ended && m.nextDeadline == nil)
        #expect(m.receive(goAway, now: t0) == nil, "once")
    }

    @Test func aGoAwayOfTheWrongLengthIsMalformed() {
        let goAway = PresenceDatagram(kind: .goAway, session: session, counter: 1, retryAfterMilliseconds: 5).sealed(with: key)
        let keepalive = PresenceDatagram(kind: .keepalive, session: session, counter: 1).sealed(with: key)
        for bytes in [Array(goAway.dropLast()), goAway + [0], keepalive + [0, 0, 0, 0]] {
            #expect(throws: PresenceError.self) { try PresenceDatagram.peek(bytes) }
        }
        #expect((try? PresenceDatagram.open(goAway, with: key))?.retryAfterMilliseconds == 5)
    }
}
