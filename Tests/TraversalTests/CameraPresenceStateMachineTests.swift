import Crypto
import PeerTestSupport
import Testing
@testable import Traversal

/// The camera's UDP presence as data: probes, confirmation, keepalives, wake, loss and fallback, with time moved by hand.
@Suite struct CameraPresenceStateMachineTests {
    let key = SymmetricKey(size: .bits256)
    let session = PresenceSessionID(high: 1, low: 2)
    let t0 = ContinuousClock.now
    let configuration = CameraPresenceStateMachine.Configuration(keepaliveInterval: .seconds(20))

    func machine(usesStream: Bool = true) -> CameraPresenceStateMachine {
        var configuration = configuration
        configuration.usesStream = usesStream
        return CameraPresenceStateMachine(session: session, key: key, configuration: configuration, now: t0)
    }

    /// The keepalive counters `actions` send on `path`.
    func keepalives(_ actions: [CameraPresenceStateMachine.Action], on path: PresencePath) -> [UInt64] {
        actions.compactMap {
            guard case .send(let bytes, path) = $0, let d = try? PresenceDatagram.open(bytes, with: key), d.kind == .keepalive else { return nil }
            return d.counter
        }
    }

    /// A datagram the cloud would send.
    func fromCloud(_ kind: PresenceDatagramKind, _ counter: UInt64, key: SymmetricKey? = nil) -> [UInt8] {
        PresenceDatagram(kind: kind, session: session, counter: counter).sealed(with: key ?? self.key)
    }

    /// The keepalive counters in `actions`, opened under the session key.
    func keepalives(_ actions: [CameraPresenceStateMachine.Action]) -> [UInt64] {
        actions.compactMap {
            guard case .send(let bytes, _) = $0, let d = try? PresenceDatagram.open(bytes, with: key), d.kind == .keepalive else { return nil }
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
        var m = machine(usesStream: false)
        #expect(keepalives(m.tick(now: t0)) == [1])
        #expect(m.tick(now: t0 + .milliseconds(500)).isEmpty)
        #expect(keepalives(m.tick(now: t0 + .seconds(1))) == [2])
        #expect(keepalives(m.tick(now: t0 + .seconds(2))) == [3])
        // Reported once, with the next probe; from then on one probe at a time, the wait doubling to the cap.
        let third = m.tick(now: t0 + .seconds(3))
        #expect(third.first == .unavailable && keepalives(third) == [4] && !third.contains(.openStream))
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
        // The stream asked for meanwhile is not needed any more.
        #expect(m.receive(fromCloud(.ack, 1), now: now + .milliseconds(5)) == [.confirmed, .closeStream])
        #expect(m.state == .confirmed(lastAck: now + .milliseconds(5)) && m.path == .datagram)
        #expect(m.nextDeadline == now + .milliseconds(5) + configuration.keepaliveInterval)
    }

    @Test func anAckConfirmsThenKeepalivesFollowTheInterval() {
        var m = machine()
        _ = m.tick(now: t0)
        #expect(m.receive(fromCloud(.ack, 1), now: t0 + .milliseconds(10)) == [.confirmed])
        #expect(m.nextDeadline == t0 + .milliseconds(10) + .seconds(20))
        #expect(m.tick(now: t0 + .seconds(5)).isEmpty)
        #expect(keepalives(m.tick(now: t0 + .seconds(21))) == [2])
        #expect(m.receive(fromCloud(.ack, 2), now: t0 + .seconds(21)).isEmpty)
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
        #expect(m.receive(answer(1, session), now: t0 + .seconds(20)).isEmpty)
        #expect(m.receive(answer(2, PresenceSessionID(high: 5, low: 5)), now: t0 + .seconds(20)).isEmpty)
        #expect(m.state == .confirmed(lastAck: t0))
        #expect(m.receive(answer(2, session), now: t0 + .seconds(20)) == [.lost])
        #expect(m.state == .ended)
    }

    @Test func aWakeEndsThePresence() {
        var m = machine()
        _ = m.tick(now: t0)
        _ = m.receive(fromCloud(.ack, 1), now: t0)
        #expect(m.receive(fromCloud(.wake, 2), now: t0 + .seconds(3)) == [.wake])
        #expect(m.state == .ended)
    }

    @Test func replayedForgedOrForeignDatagramsChangeNothing() {
        var m = machine()
        _ = m.tick(now: t0)
        let ack = fromCloud(.ack, 5)
        #expect(m.receive(ack, now: t0) == [.confirmed])
        // The same ack again, an older wake, a wake under another key, another session's wake, a keepalive echoed back.
        #expect(m.receive(ack, now: t0 + .seconds(1)).isEmpty)
        #expect(m.receive(fromCloud(.wake, 4), now: t0 + .seconds(1)).isEmpty)
        #expect(m.receive(fromCloud(.wake, 6, key: SymmetricKey(size: .bits256)), now: t0 + .seconds(1)).isEmpty)
        let foreign = PresenceDatagram(kind: .wake, session: PresenceSessionID(high: 9, low: 9), counter: 7).sealed(with: key)
        #expect(m.receive(foreign, now: t0 + .seconds(1)).isEmpty)
        #expect(m.receive(fromCloud(.keepalive, 8), now: t0 + .seconds(1)).isEmpty)
        #expect(m.receive([1, 2, 3], now: t0 + .seconds(1)).isEmpty)
        #expect(m.state == .confirmed(lastAck: t0))
        #expect(m.receive(fromCloud(.wake, 6), now: t0 + .seconds(2)) == [.wake])
    }

    @Test func aGoAwayEndsThePresenceWithTheCloudsDelayAndAForgedOneChangesNothing() {
        var m = machine()
        _ = m.tick(now: t0)
        _ = m.receive(fromCloud(.ack, 1), now: t0)
        let forged = PresenceDatagram(kind: .goAway, session: session, counter: 2, retryAfterMilliseconds: 1)
            .sealed(with: SymmetricKey(size: .bits256))
        #expect(m.receive(forged, now: t0).isEmpty)
        #expect(m.state == .confirmed(lastAck: t0))
        let goAway = PresenceDatagram(kind: .goAway, session: session, counter: 2, retryAfterMilliseconds: 7_000).sealed(with: key)
        #expect(goAway.count == PresenceProtocol.datagramLength + 4)
        #expect(m.receive(goAway, now: t0) == [.goAway(retryAfter: .seconds(7))])
        #expect(m.state == .ended && m.nextDeadline == nil)
        #expect(m.receive(goAway, now: t0).isEmpty, "once")
    }

    @Test func aGoAwayOfTheWrongLengthIsMalformed() {
        let goAway = PresenceDatagram(kind: .goAway, session: session, counter: 1, retryAfterMilliseconds: 5).sealed(with: key)
        let keepalive = PresenceDatagram(kind: .keepalive, session: session, counter: 1).sealed(with: key)
        for bytes in [Array(goAway.dropLast()), goAway + [0], keepalive + [0, 0, 0, 0]] {
            #expect(throws: PresenceError.self) { try PresenceDatagram.peek(bytes) }
        }
        #expect((try? PresenceDatagram.open(goAway, with: key))?.retryAfterMilliseconds == 5)
    }

    /// Past the unanswered probes: a stream is asked for; once open its keepalive goes at once, an ack on it confirms,
    /// keepalives go on it every interval, and UDP probes go on beside it, the wait doubling.
    @Test func unansweredProbesOpenAPresenceStreamAndAnAckOnItConfirms() {
        var m = machine()
        for second in 0..<3 { _ = m.tick(now: t0 + .seconds(second)) }
        let third = m.tick(now: t0 + .seconds(3))
        #expect(third.prefix(2) == [.unavailable, .openStream] && keepalives(third, on: .datagram) == [4])
        #expect(m.stream == .opening && m.nextDeadline == t0 + .seconds(23))
        #expect(m.tick(now: t0 + .seconds(4)).isEmpty, "asked once")
        let opened = m.streamOpened(now: t0 + .seconds(4))
        #expect(keepalives(opened, on: .stream) == [5] && opened.count == 1)
        #expect(m.receive(fromCloud(.ack, 1), on: .stream, now: t0 + .seconds(4)) == [.confirmed])
        #expect(m.path == .stream && m.state == .confirmed(lastAck: t0 + .seconds(4)))
        #expect(m.nextDeadline == t0 + .seconds(23), "the next UDP probe comes first")
        #expect(keepalives(m.tick(now: t0 + .seconds(23)), on: .datagram) == [6])
        let onStream = m.tick(now: t0 + .seconds(24))
        #expect(keepalives(onStream, on: .stream) == [7] && keepalives(onStream, on: .datagram).isEmpty)
        #expect(m.receive(fromCloud(.ack, 2), on: .stream, now: t0 + .seconds(24)).isEmpty)
        #expect(m.nextDeadline == t0 + .seconds(44))
        #expect(keepalives(m.tick(now: t0 + .seconds(44)), on: .stream) == [8])
        #expect(m.nextDeadline == t0 + .seconds(63), "the UDP probe after 40 s")
    }

    @Test func anAckOverUDPMovesPresenceOffTheStreamAndClosesIt() {
        var m = machine()
        for second in 0...3 { _ = m.tick(now: t0 + .seconds(second)) }
        _ = m.streamOpened(now: t0 + .seconds(4))
        _ = m.receive(fromCloud(.ack, 1), on: .stream, now: t0 + .seconds(4))
        _ = m.tick(now: t0 + .seconds(23))
        // UDP gets through now (the cloud's storm is over): presence moves there.
        #expect(m.receive(fromCloud(.ack, 2), on: .datagram, now: t0 + .seconds(23)) == [.closeStream])
        #expect(m.path == .datagram && m.stream == .none)
        #expect(m.nextDeadline == t0 + .seconds(43))
        let next = m.tick(now: t0 + .seconds(43))
        #expect(keepalives(next, on: .datagram).count == 1 && keepalives(next, on: .stream).isEmpty)
        // A stream reported closed afterwards (the one just closed) is not opened again.
        m.streamClosed(now: t0 + .seconds(43))
        #expect(m.stream == .none)
    }

    @Test func aStreamThatOpensAfterUDPWorkedIsClosedAtOnce() {
        var m = machine()
        for second in 0...3 { _ = m.tick(now: t0 + .seconds(second)) }
        #expect(m.stream == .opening)
        #expect(m.receive(fromCloud(.ack, 1), on: .datagram, now: t0 + .seconds(3)) == [.confirmed, .closeStream])
        #expect(m.streamOpened(now: t0 + .seconds(4)) == [.closeStream])
        #expect(m.path == .datagram && m.stream == .none)
    }

    /// A stream that closes (the cloud restarted, the network dropped it) is opened again after a jittered wait whose
    /// ceiling doubles; the liveness timeout still counts from the last ack.
    @Test func aClosedStreamIsOpenedAgainAfterABackoffUntilLivenessRunsOut() {
        var m = machine()
        var generator = SplitMix64(seed: 7)
        for second in 0...3 { _ = m.tick(now: t0 + .seconds(second)) }
        _ = m.streamOpened(now: t0 + .seconds(4))
        _ = m.receive(fromCloud(.ack, 1), on: .stream, now: t0 + .seconds(4))
        var now = t0 + .seconds(5)
        var ceilings: [Duration] = []
        for attempt in 0..<5 {
            m.streamClosed(now: now, using: &generator)
            guard case .waiting(let until) = m.stream else {
                Issue.record("not waiting: \(m.stream)")
                return
            }
            let ceiling = configuration.streamRetryDelay * (1 << attempt)
            #expect(until - now <= ceiling, "attempt \(attempt): \(until - now)")
            ceilings.append(ceiling)
            now = until
            #expect(m.tick(now: now).contains(.openStream))
            #expect(m.stream == .opening)
        }
        // Never reopened: lost at the liveness timeout after the last ack (t0 + 4 s + 45 s).
        m.streamClosed(now: now, using: &generator)
        var lost = false
        for _ in 0..<100 where !lost {
            guard let next = m.nextDeadline else { break }
            now = next
            let actions = m.tick(now: now)
            lost = actions.contains(.lost)
            if actions.contains(.openStream) { m.streamClosed(now: now, using: &generator) }
        }
        #expect(lost && now == t0 + .seconds(4) + configuration.livenessTimeout)
    }

    @Test func anAckOnTheStreamStartsTheBackoffOver() {
        var m = machine()
        var generator = SplitMix64(seed: 1)
        for second in 0...3 { _ = m.tick(now: t0 + .seconds(second)) }
        for _ in 0..<6 {
            m.streamClosed(now: t0 + .seconds(4), using: &generator)
            _ = m.tick(now: t0 + .seconds(400))
        }
        _ = m.streamOpened(now: t0 + .seconds(400))
        _ = m.receive(fromCloud(.ack, 1), on: .stream, now: t0 + .seconds(400))
        m.streamClosed(now: t0 + .seconds(401), using: &generator)
        guard case .waiting(let until) = m.stream else {
            Issue.record("not waiting: \(m.stream)")
            return
        }
        #expect(until - (t0 + .seconds(401)) <= configuration.streamRetryDelay)
    }
}
