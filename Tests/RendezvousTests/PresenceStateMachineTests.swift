import Crypto
import NIOCore
import SourceLimits
import Testing
@testable import Rendezvous
@testable import Traversal

/// The cloud's UDP presence table as data: only authenticated, fresh keepalives count; wakes go to the
/// last authenticated source; limits per source and in all; expiry by injected time.
@Suite struct PresenceStateMachineTests {
    let t0 = ContinuousClock.now
    let device = DeviceIdentity.generate().deviceID
    let camera = try! SocketAddress(ipAddress: "198.51.100.7", port: 40_000)
    let attacker = try! SocketAddress(ipAddress: "203.0.113.66", port: 5555)

    func keepalive(_ grant: (session: PresenceSessionID, key: SymmetricKey), _ counter: UInt64) -> [UInt8] {
        PresenceDatagram(kind: .keepalive, session: grant.session, counter: counter).sealed(with: grant.key)
    }

    func opened(_ m: inout PresenceStateMachine) -> (session: PresenceSessionID, key: SymmetricKey) {
        var generator = SystemRandomNumberGenerator()
        return m.open(device, now: t0, using: &generator)!
    }

    func dropCode(_ action: PresenceStateMachine.Action) -> PresenceError.Code? {
        switch action {
        case .drop(let error), .refuse(let error, _, _): return error.code
        case .send, .restored, .left: return nil
        }
    }

    /// A camera that stops sends `leave`: an authentic, fresh one ends its session at once (the next sweep reports it,
    /// long before the timeout), unanswered; a forged, replayed or unknown one changes nothing.
    @Test func anAuthenticLeaveEndsTheSessionAtTheNextSweepAndNothingElseDoes() {
        var m = PresenceStateMachine()
        let grant = opened(&m)
        m.release(grant.session)
        _ = m.receive(keepalive(grant, 1), from: camera, now: t0)
        let forged = PresenceDatagram(kind: .leave, session: grant.session, counter: 2).sealed(with: SymmetricKey(size: .bits256))
        #expect(dropCode(m.receive(forged, from: attacker, now: t0)) == .unauthenticated)
        let replayed = PresenceDatagram(kind: .leave, session: grant.session, counter: 1).sealed(with: grant.key)
        #expect(dropCode(m.receive(replayed, from: attacker, now: t0)) == .replayed)
        #expect(m.expire(now: t0 + .seconds(1)).isEmpty && m.count == 1, "still present")
        let leave = PresenceDatagram(kind: .leave, session: grant.session, counter: 2).sealed(with: grant.key)
        guard case .left(let session, let deviceID) = m.receive(leave, from: camera, now: t0 + .seconds(1)) else {
            Issue.record("an authentic leave is not taken")
            return
        }
        #expect(session == grant.session && deviceID == device)
        #expect(m.count == 0 && !m.isLive(grant.session, now: t0 + .seconds(1)))
        let swept = m.expire(now: t0 + .seconds(2))
        #expect(swept.count == 1 && swept.first?.session == grant.session && swept.first?.deviceID == device)
        #expect(m.expire(now: t0 + .seconds(3)).isEmpty, "reported once")
        let again = PresenceDatagram(kind: .leave, session: grant.session, counter: 3).sealed(with: grant.key)
        #expect(dropCode(m.receive(again, from: camera, now: t0 + .seconds(3))) == .unknownSession, "a leave of a session not held: no answer")
    }

    @Test func aTicketCarriesItsDeviceMaskedAndGivesBackTheKeyItWasIssuedWith() {
        let tickets = PresenceTickets(secret: SymmetricKey(size: .bits256))
        var generator = SystemRandomNumberGenerator()
        let issued = tickets.issue(for: device, using: &generator)
        let again = tickets.issue(for: device, using: &generator)
        #expect(issued.session != again.session, "each registration gets its own session")
        #expect(!issued.session.bytes.suffix(DeviceID.packedLength).elementsEqual(device.packed), "the UID is not on the wire")
        guard let redeemed = tickets.redeem(issued.session) else {
            Issue.record("own ticket not redeemed")
            return
        }
        #expect(redeemed.deviceID == device)
        #expect(redeemed.key == issued.key)
        // Another secret's tickets do not redeem, or give another key (its UID check passes 1 in 32).
        let other = PresenceTickets(secret: SymmetricKey(size: .bits256))
        if let foreign = other.redeem(issued.session) { #expect(foreign.key != issued.key) }
        #expect(DeviceID(packed: device.packed) == device)
        var corrupted = device.packed
        corrupted[3] ^= 0x04
        #expect(DeviceID(packed: corrupted) == nil, "one flipped bit fails the check symbol")
    }

    /// A restarted cloud (a new table under the same secret) takes the session back from the camera's next
    /// keepalive: no TLS registration, the counter carries on, replays and forgeries still refused.
    @Test func aRestartedTableRestoresAnAuthenticSessionFromItsTicket() throws {
        let secret = SymmetricKey(size: .bits256)
        var before = PresenceStateMachine(tickets: PresenceTickets(secret: secret))
        let grant = opened(&before)
        _ = before.receive(keepalive(grant, 7), from: camera, now: t0)

        var after = PresenceStateMachine(tickets: PresenceTickets(secret: secret))
        let forged = PresenceDatagram(kind: .keepalive, session: grant.session, counter: 8).sealed(with: SymmetricKey(size: .bits256))
        #expect(dropCode(after.receive(forged, from: attacker, now: t0)) == .unknownSession, "a forged tag restores nothing")
        #expect(after.count == 0)
        guard case .restored(let session, let deviceID, let answer, let to) = after.receive(keepalive(grant, 8), from: camera, now: t0) else {
            Issue.record("authentic keepalive did not restore the session")
            return
        }
        #expect(session == grant.session && deviceID == device && to == .datagram(camera))
        #expect(answer.count == PresenceProtocol.datagramLength)
        #expect(try PresenceDatagram.open(answer, with: grant.key).kind == .ack)
        #expect(after.isLive(grant.session, now: t0 + .seconds(1)))
        #expect(dropCode(after.receive(keepalive(grant, 8), from: attacker, now: t0)) == .replayed)
        guard case .send = after.receive(keepalive(grant, 9), from: camera, now: t0) else {
            Issue.record("the next keepalive is not answered")
            return
        }
        // Without tickets (or under another secret) the camera is sent back to TLS.
        var plain = PresenceStateMachine()
        #expect(dropCode(plain.receive(keepalive(grant, 10), from: camera, now: t0)) == .unknownSession)
        var rekeyed = PresenceStateMachine(tickets: PresenceTickets(secret: SymmetricKey(size: .bits256)))
        #expect(dropCode(rekeyed.receive(keepalive(grant, 10), from: camera, now: t0)) == .unknownSession)
        // A full table restores nothing.
        var full = PresenceStateMachine(configuration: .init(maxSessions: 1), tickets: PresenceTickets(secret: secret))
        _ = opened(&full)
        #expect(dropCode(full.receive(keepalive(grant, 11), from: camera, now: t0)) == .unknownSession)
    }

    @Test func anAuthenticatedKeepaliveIsAckedSameSizeAndMakesTheCameraLive() throws {
        var m = PresenceStateMachine()
        let grant = opened(&m)
        #expect(!m.isLive(grant.session, now: t0), "granted is not yet kept alive over UDP")
        let request = keepalive(grant, 1)
        guard case .send(let reply, let to) = m.receive(request, from: camera, now: t0) else {
            Issue.record("keepalive not answered")
            return
        }
        #expect(to == .datagram(camera) && reply.count == request.count, "no amplification: the ack is the keepalive's size")
        let ack = try PresenceDatagram.open(reply, with: grant.key)
        #expect(ack.kind == .ack && ack.session == grant.session)
        #expect(m.isLive(grant.session, now: t0 + .seconds(60)))
        #expect(!m.isLive(grant.session, now: t0 + m.configuration.timeout))
    }

    @Test func replaysForgeriesUnknownSessionsAndWrongKindsAreDroppedWithTypedReasons() {
        var m = PresenceStateMachine()
        let grant = opened(&m)
        _ = m.receive(keepalive(grant, 5), from: camera, now: t0)
        #expect(dropCode(m.receive(keepalive(grant, 5), from: camera, now: t0)) == .replayed)
        #expect(dropCode(m.receive(keepalive(grant, 4), from: attacker, now: t0)) == .replayed)
        let forged = PresenceDatagram(kind: .keepalive, session: grant.session, counter: 9).sealed(with: SymmetricKey(size: .bits256))
        #expect(dropCode(m.receive(forged, from: attacker, now: t0)) == .unauthenticated)
        let stranger = (session: PresenceSessionID(high: 1, low: 1), key: grant.key)
        #expect(dropCode(m.receive(keepalive(stranger, 1), from: attacker, now: t0)) == .unknownSession)
        let wake = PresenceDatagram(kind: .wake, session: grant.session, counter: 10).sealed(with: grant.key)
        #expect(dropCode(m.receive(wake, from: attacker, now: t0)) == .unexpectedKind)
        #expect(dropCode(m.receive([0x01, 0x02], from: attacker, now: t0)) == .malformed)
        // None of it moved the wake address away from the camera.
        guard case .send(_, let to)? = m.wake(grant.session) else {
            Issue.record("no wake")
            return
        }
        #expect(to == .datagram(camera))
    }

    @Test func theWakeGoesToTheLatestAuthenticatedSourceAndIsFresh() throws {
        var m = PresenceStateMachine()
        let grant = opened(&m)
        #expect(m.wake(grant.session) == nil, "no keepalive yet: nowhere to wake")
        _ = m.receive(keepalive(grant, 1), from: camera, now: t0)
        let moved = try SocketAddress(ipAddress: "198.51.100.7", port: 40_001)   // the NAT gave a new mapping
        guard case .send(let ackBytes, _) = m.receive(keepalive(grant, 2), from: moved, now: t0 + .seconds(20)),
            case .send(let wakeBytes, let to)? = m.wake(grant.session)
        else {
            Issue.record("no ack or wake")
            return
        }
        #expect(to == .datagram(moved))
        let ack = try PresenceDatagram.open(ackBytes, with: grant.key)
        let wake = try PresenceDatagram.open(wakeBytes, with: grant.key)
        #expect(wake.kind == .wake && wake.counter > ack.counter)
    }

    @Test func oneSourceIsRateLimitedBeforeAnyLookUpAndOthersAreNot() {
        var m = PresenceStateMachine(configuration: .init(perSource: .init(capacity: 3, refillInterval: .seconds(1))))
        let grant = opened(&m)
        let junk = keepalive((PresenceSessionID(high: 7, low: 7), grant.key), 1)
        for _ in 0..<3 { #expect(dropCode(m.receive(junk, from: attacker, now: t0)) == .unknownSession) }
        #expect(dropCode(m.receive(junk, from: attacker, now: t0)) == .rateLimited)
        if case .send = m.receive(keepalive(grant, 1), from: camera, now: t0) {} else { Issue.record("the camera was limited too") }
        #expect(dropCode(m.receive(junk, from: attacker, now: t0 + .seconds(1))) == .unknownSession, "a token came back")
    }

    @Test func sessionsAreBoundedAndExpireWithoutKeepalives() {
        var m = PresenceStateMachine(configuration: .init(keepaliveSeconds: 20, maxSessions: 2))
        let kept = opened(&m)
        let silent = opened(&m)
        var generator = SystemRandomNumberGenerator()
        #expect(m.open(device, now: t0, using: &generator) == nil, "full")
        let timeout = m.configuration.timeout
        #expect(timeout == .seconds(65))
        _ = m.receive(keepalive(kept, 1), from: camera, now: t0 + .seconds(40))
        // While their TLS connections are open nothing expires; then only keepalives keep a session.
        #expect(m.expire(now: t0 + timeout * 10).isEmpty)
        m.release(kept.session)
        m.release(silent.session)
        let expired = m.expire(now: t0 + timeout)
        #expect(expired.map(\.session) == [silent.session] && expired.first?.deviceID == device)
        #expect(m.count == 1 && m.isLive(kept.session, now: t0 + timeout))
        #expect(m.expire(now: t0 + .seconds(40) + timeout).map(\.session) == [kept.session])
        #expect(m.count == 0 && m.wake(kept.session) == nil)
    }

    @Test func aSessionOutlivesItsTimeoutWhileItsTLSConnectionIsOpenSoALateProbeStillConfirms() {
        // A camera that registered in a storm: its probes were dropped, TLS stays, it probes on minutes later.
        var m = PresenceStateMachine(configuration: .init(keepaliveSeconds: 20))
        let grant = opened(&m)
        let late = t0 + m.configuration.timeout * 4
        #expect(m.expire(now: late).isEmpty && !m.isLive(grant.session, now: late))
        if case .send = m.receive(keepalive(grant, 7), from: camera, now: late) {} else { Issue.record("the late probe was not acked") }
        #expect(m.isLive(grant.session, now: late))
        // The camera closes TLS: keepalives alone keep it from here on.
        m.release(grant.session)
        #expect(m.expire(now: late + m.configuration.timeout - .seconds(1)).isEmpty)
        #expect(m.expire(now: late + m.configuration.timeout).map(\.session) == [grant.session])
    }

    @Test func aKeepaliveForASessionNotHeldGetsASameSizeUnknownSessionAnswer() throws {
        var m = PresenceStateMachine()
        let grant = opened(&m)
        m.close(grant.session)
        let request = keepalive(grant, 12)
        guard case .refuse(let error, let answer, let to) = m.receive(request, from: camera, now: t0) else {
            Issue.record("not refused")
            return
        }
        #expect(error.code == .unknownSession && to == .datagram(camera) && answer.count == request.count)
        let header = try PresenceDatagram.peek(answer)
        #expect(header == PresenceDatagram(kind: .unknownSession, session: grant.session, counter: 12))
    }

    @Test func aGoAwayIsAuthenticatedCarriesItsRetryAfterAndTheCameraBelievesOnlyThat() throws {
        var m = PresenceStateMachine()
        let grant = opened(&m)
        #expect(m.goAway(grant.session, retryAfterMilliseconds: 2_500) == nil, "no keepalive yet: no address to tell")
        _ = m.receive(keepalive(grant, 1), from: camera, now: t0)
        guard case .send(let bytes, let to)? = m.goAway(grant.session, retryAfterMilliseconds: 2_500) else {
            Issue.record("no goAway for a live session")
            return
        }
        #expect(to == .datagram(camera))
        #expect(bytes.count == PresenceDatagram.length(of: .goAway))
        let datagram = try PresenceDatagram.open(bytes, with: grant.key)
        #expect(datagram.kind == .goAway && datagram.retryAfterMilliseconds == 2_500 && datagram.counter == 2, "after the ack (1)")

        var cameraSide = CameraPresenceStateMachine(
            session: grant.session, key: grant.key, configuration: .init(keepaliveInterval: .seconds(20)), now: t0)
        _ = cameraSide.tick(now: t0)
        // A changed retry-after fails the tag: only the cloud's own delay is believed.
        var tampered = bytes
        tampered[28] ^= 0x01
        #expect(cameraSide.receive(tampered, now: t0).isEmpty)
        #expect(cameraSide.receive(bytes, now: t0) == [.goAway(retryAfter: .milliseconds(2_500))])
        #expect(cameraSide.state == .ended)
    }

    /// A keepalive that came on a presence stream routes the session's answers and wakes to that stream; a later one
    /// over UDP moves them back to the datagram's source; a stream that closes leaves its sessions without a route (no
    /// wake to a closed stream) but held until their timeout.
    @Test func aStreamRoutesItsSessionsUntilItClosesOrUDPTakesOver() {
        var m = PresenceStateMachine()
        let grant = opened(&m)
        m.release(grant.session)
        let stream = PresenceStreamID(1)
        guard case .send(_, let to) = m.receive(keepalive(grant, 1), from: camera, over: stream, now: t0) else {
            Issue.record("an authentic keepalive on a stream is not answered")
            return
        }
        #expect(to == .stream(stream))
        guard case .send(_, let woken)? = m.wake(grant.session) else {
            Issue.record("no wake for a session on a stream")
            return
        }
        #expect(woken == .stream(stream))
        // Another stream closing changes nothing.
        m.streamClosed(PresenceStreamID(2))
        guard case .send(_, .stream(stream))? = m.goAway(grant.session, retryAfterMilliseconds: 1) else {
            Issue.record("the route moved with another stream's close")
            return
        }
        // UDP gets through: answers and wakes follow the datagram; the stream closing then moves nothing.
        _ = m.receive(keepalive(grant, 2), from: camera, now: t0 + .seconds(1))
        m.streamClosed(stream)
        guard case .send(_, .datagram(camera))? = m.wake(grant.session) else {
            Issue.record("the wake did not follow the datagram")
            return
        }
        // Back on a new stream, which then closes: no route, but the session is held until its timeout.
        let second = PresenceStreamID(3)
        _ = m.receive(keepalive(grant, 3), from: camera, over: second, now: t0 + .seconds(2))
        m.streamClosed(second)
        #expect(m.wake(grant.session) == nil, "nothing to wake: the stream closed")
        #expect(m.isLive(grant.session, now: t0 + .seconds(3)) && m.count == 1)
        #expect(m.expire(now: t0 + .seconds(2) + m.configuration.timeout).count == 1)
    }

    /// The per-source limit counts a stream's datagrams against the stream's peer address.
    @Test func streamDatagramsCountAgainstTheirPeersLimit() {
        var m = PresenceStateMachine(configuration: .init(
            perSource: TokenBucketRateLimiter(capacity: 2, refillInterval: .seconds(60), maxTrackedKeys: 10)))
        let grant = opened(&m)
        let stream = PresenceStreamID(9)
        for counter in 1...2 { _ = m.receive(keepalive(grant, UInt64(counter)), from: camera, over: stream, now: t0) }
        #expect(dropCode(m.receive(keepalive(grant, 3), from: camera, over: stream, now: t0)) == .rateLimited)
    }
}
