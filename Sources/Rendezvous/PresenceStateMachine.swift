import Crypto
import Foundation
import NIOCore
import SourceLimits
import Traversal

/// The cloud's side of presence (the flow: `Traversal/PresenceProtocol`), sans-I/O: time is
/// passed in as `now`, datagrams come in as bytes and replies go out as actions, to a ``PresenceRoute``: the
/// source of a UDP datagram, or the presence stream (TCP) a camera whose network blocks UDP keeps instead.
///
/// A session is opened at a proven TLS registration; it lives while that TLS connection does (the camera may
/// still be probing, ``release(_:)``) and then while authenticated keepalives arrive (``Configuration/timeout``);
/// each keepalive's route is where a wake goes. Datagrams are checked
/// cheapest first: length and kind, the source's rate (``Configuration/perSource``), the session, the
/// tag, the counter. Only an authenticated, fresh keepalive moves any state or gets an answer.
///
/// With ``PresenceTickets`` the sessions survive a restart of the cloud: a keepalive for a session the table
/// does not hold is checked against the ticket its identifier carries, and an authentic one restores the
/// session (``Action/restored(session:deviceID:answer:to:)``) instead of sending the camera back to TLS.
public struct PresenceStateMachine: Sendable {
    /// Limits and timing.
    public struct Configuration: Sendable {
        /// Keepalive interval announced to cameras.
        public var keepaliveInterval: Duration
        /// A session with no authenticated keepalive for this long is gone (three intervals and 5 s).
        public var timeout: Duration
        /// Sessions held at once, at most (each costs a few hundred bytes); registrations past it get no presence
        /// grant and keep their TLS connection.
        public var maxSessions: Int
        /// Datagrams per source (IPv4 address or IPv6 /64) before the session is even looked up.
        public var perSource: TokenBucketRateLimiter<SourceAddressKey>

        /// Default of ``maxSessions``: 1 000 000.
        public static let defaultMaxSessions = 1_000_000
        /// Default of ``perSource``: 512 datagrams, then one per 10 ms (a site of 256 cameras keeping
        /// alive every 20 s sends about 13 a second).
        public static let defaultPerSource = TokenBucketRateLimiter<SourceAddressKey>(
            capacity: 512, refillInterval: .milliseconds(10), maxTrackedKeys: 100_000)

        /// A configuration: keepalives every `keepaliveSeconds` (20 s), timeout three intervals and 5 s.
        public init(
            keepaliveSeconds: Int = PresenceProtocol.defaultKeepaliveSeconds, timeout: Duration? = nil,
            maxSessions: Int = defaultMaxSessions, perSource: TokenBucketRateLimiter<SourceAddressKey> = defaultPerSource
        ) {
            self.keepaliveInterval = .seconds(keepaliveSeconds)
            self.timeout = timeout ?? .seconds(keepaliveSeconds * 3 + 5)
            self.maxSessions = maxSessions
            self.perSource = perSource
        }
    }

    /// What the caller does with a datagram's outcome.
    public enum Action: Sendable, Equatable {
        /// Send `bytes` on `route`.
        case send([UInt8], to: PresenceRoute)
        /// Drop the datagram (count it by the error's code).
        case drop(PresenceError)
        /// Refuse the datagram (count it by the error's code) and send `bytes` on `route`: a keepalive
        /// for a session this cloud does not hold gets `Traversal/PresenceDatagramKind/unknownSession`.
        case refuse(PresenceError, answer: [UInt8], to: PresenceRoute)
        /// An authentic keepalive restored `session` of `deviceID` from its ticket (the cloud restarted):
        /// send `answer` (an ack) on `route` and tell the hub the camera is present again.
        case restored(session: PresenceSessionID, deviceID: DeviceID, answer: [UInt8], to: PresenceRoute)
        /// An authentic `leave`: the session of `deviceID` ended (nothing is sent); the next ``expire(now:)`` returns it,
        /// so the hub ends a camera that holds no TLS connection at once, not after ``Configuration/timeout``.
        case left(session: PresenceSessionID, deviceID: DeviceID)
    }

    /// One camera's presence.
    struct Session: Sendable {
        let deviceID: DeviceID
        let key: SymmetricKey
        /// Highest counter accepted from the camera (0: none yet).
        var received: UInt64 = 0
        /// Last counter the cloud sent.
        var sent: UInt64 = 0
        /// Route of the last authenticated keepalive: where the camera is reachable.
        var route: PresenceRoute?
        /// When the session was opened or last kept alive.
        var lastSeen: ContinuousClock.Instant
        /// Whether the registration's TLS connection is still open: the session does not time out meanwhile.
        var heldByTLS: Bool
    }

    /// The limits.
    public let configuration: Configuration
    private var sessions: [PresenceSessionID: Session] = [:]
    /// The sessions whose route is each stream (one, unless a camera re-registered on the same stream).
    private var streamSessions: [PresenceStreamID: [PresenceSessionID]] = [:]
    /// Sessions their cameras left since the last ``expire(now:)`` (at most one entry per session held).
    private var left: [(session: PresenceSessionID, deviceID: DeviceID)] = []
    private var limiter: TokenBucketRateLimiter<SourceAddressKey>
    /// Sessions issued as tickets, restorable after a restart; nil: random sessions, lost with the table.
    private let tickets: PresenceTickets?

    /// An empty table; with `tickets`, sessions are issued as tickets and restored from them.
    public init(configuration: Configuration = .init(), tickets: PresenceTickets? = nil) {
        self.configuration = configuration
        self.limiter = configuration.perSource
        self.tickets = tickets
    }

    /// Sessions held.
    public var count: Int { sessions.count }

    /// Opens a session for a camera that just proved its key over TLS; nil when ``Configuration/maxSessions`` are held.
    public mutating func open(
        _ deviceID: DeviceID, now: ContinuousClock.Instant, using generator: inout some RandomNumberGenerator
    ) -> (session: PresenceSessionID, key: SymmetricKey)? {
        guard sessions.count < configuration.maxSessions else { return nil }
        func draw() -> (PresenceSessionID, SymmetricKey) {
            if let tickets { return tickets.issue(for: deviceID, using: &generator) }
            let keyBytes = (0..<PresenceProtocol.keyLength / 8).flatMap { _ in
                withUnsafeBytes(of: generator.next()) { Array($0) }
            }
            return (PresenceSessionID.random(using: &generator), SymmetricKey(data: keyBytes))
        }
        var (id, key) = draw()
        while sessions[id] != nil { (id, key) = draw() }
        sessions[id] = Session(deviceID: deviceID, key: key, lastSeen: now, heldByTLS: true)
        return (id, key)
    }

    /// Handles one datagram from `source`: a UDP datagram, or one that came on presence stream `stream`
    /// (`source` is then the stream's peer address, which the per-source limit counts against).
    public mutating func receive(
        _ bytes: some Collection<UInt8>, from source: SocketAddress, over stream: PresenceStreamID? = nil, now: ContinuousClock.Instant
    ) -> Action {
        let route = stream.map(PresenceRoute.stream) ?? .datagram(source)
        let header: PresenceDatagram
        do {
            header = try PresenceDatagram.peek(bytes)
        } catch let error as PresenceError {
            return .drop(error)
        } catch {
            return .drop(PresenceError(code: .malformed, detail: "\(error)"))
        }
        guard header.kind == .keepalive || header.kind == .leave else {
            return .drop(PresenceError(code: .unexpectedKind, detail: "\(header.kind) sent to the cloud"))
        }
        guard limiter.admit(SourceAddressKey(source), now: now) else {
            return .drop(PresenceError(code: .rateLimited, detail: "from \(SourceAddressKey(source))"))
        }
        guard var session = sessions[header.session] else {
            // A leave for a session not held changes nothing and gets no answer.
            guard header.kind == .keepalive else { return .drop(PresenceError(code: .unknownSession, detail: "leave of \(header.session)")) }
            return restore(bytes, header: header, route: route, now: now)
        }
        do {
            _ = try PresenceDatagram.open(bytes, with: session.key)
        } catch let error as PresenceError {
            return .drop(error)
        } catch {
            return .drop(PresenceError(code: .unauthenticated, detail: "\(error)"))
        }
        guard header.counter > session.received else {
            return .drop(PresenceError(code: .replayed, detail: "counter \(header.counter) ≤ \(session.received)"))
        }
        session.received = header.counter
        if header.kind == .leave {
            remove(header.session)
            left.append((header.session, session.deviceID))
            return .left(session: header.session, deviceID: session.deviceID)
        }
        session.lastSeen = now
        session.sent += 1
        sessions[header.session] = session
        setRoute(route, of: header.session)
        return .send(PresenceDatagram(kind: .ack, session: header.session, counter: session.sent).sealed(with: session.key), to: route)
    }

    /// A keepalive for a session the table does not hold: restored from its ticket when authentic and there is
    /// room, otherwise refused with `unknownSession` (the camera registers over TLS again).
    private mutating func restore(
        _ bytes: some Collection<UInt8>, header: PresenceDatagram, route: PresenceRoute, now: ContinuousClock.Instant
    ) -> Action {
        let unknown = PresenceError(code: .unknownSession, detail: "session \(header.session)")
        guard let tickets, sessions.count < configuration.maxSessions, let (deviceID, key) = tickets.redeem(header.session),
            (try? PresenceDatagram.open(bytes, with: key)) != nil
        else {
            return .refuse(unknown, answer: header.unknownSessionAnswer, to: route)
        }
        let session = Session(deviceID: deviceID, key: key, received: header.counter, sent: 1, route: nil, lastSeen: now, heldByTLS: false)
        sessions[header.session] = session
        setRoute(route, of: header.session)
        let ack = PresenceDatagram(kind: .ack, session: header.session, counter: session.sent).sealed(with: key)
        return .restored(session: header.session, deviceID: deviceID, answer: ack, to: route)
    }

    /// The wake datagram for `session` and where to send it; nil when the session is unknown or the camera
    /// never kept it alive over UDP or a stream (it has no route to wake).
    public mutating func wake(_ session: PresenceSessionID) -> Action? {
        send(.wake, to: session)
    }

    /// The `goAway` datagram for `session` (the cloud shuts down: register again after `retryAfterMilliseconds`)
    /// and where to send it; nil when the session is unknown or has no route.
    public mutating func goAway(_ session: PresenceSessionID, retryAfterMilliseconds: UInt32) -> Action? {
        send(.goAway, to: session, retryAfterMilliseconds: retryAfterMilliseconds)
    }

    /// An authenticated datagram of `kind` on the route of `session`'s last keepalive.
    private mutating func send(_ kind: PresenceDatagramKind, to session: PresenceSessionID, retryAfterMilliseconds: UInt32 = 0) -> Action? {
        guard var state = sessions[session], let route = state.route else { return nil }
        state.sent += 1
        sessions[session] = state
        let datagram = PresenceDatagram(kind: kind, session: session, counter: state.sent, retryAfterMilliseconds: retryAfterMilliseconds)
        return .send(datagram.sealed(with: state.key), to: route)
    }

    /// Presence stream `stream` closed: the sessions it carried have no route until their cameras' next keepalive
    /// (over UDP or a new stream), and time out as usual if none comes.
    public mutating func streamClosed(_ stream: PresenceStreamID) {
        for id in streamSessions.removeValue(forKey: stream) ?? [] where sessions[id]?.route == .stream(stream) {
            sessions[id]?.route = nil
        }
    }

    /// Sets `session`'s route (it is held), keeping the index of the sessions on each stream.
    private mutating func setRoute(_ route: PresenceRoute, of session: PresenceSessionID) {
        let old = sessions[session]?.route
        guard old != route else { return }
        if case .stream(let s)? = old { unindex(session, from: s) }
        sessions[session]?.route = route
        if case .stream(let s) = route { streamSessions[s, default: []].append(session) }
    }

    /// Forgets that `session` travels on `stream`.
    private mutating func unindex(_ session: PresenceSessionID, from stream: PresenceStreamID) {
        streamSessions[stream]?.removeAll { $0 == session }
        if streamSessions[stream]?.isEmpty == true { streamSessions[stream] = nil }
    }

    /// Removes `session` from the table and from the stream index.
    private mutating func remove(_ session: PresenceSessionID) {
        if case .stream(let s)? = sessions.removeValue(forKey: session)?.route { unindex(session, from: s) }
    }

    /// Whether `session` was kept alive (over UDP or a stream) within ``Configuration/timeout``: the camera may be without TLS.
    public func isLive(_ session: PresenceSessionID, now: ContinuousClock.Instant) -> Bool {
        guard let state = sessions[session], state.received > 0 else { return false }
        return now - state.lastSeen < configuration.timeout
    }

    /// The TLS connection that opened `session` closed: from now on it lives only while keepalives arrive.
    public mutating func release(_ session: PresenceSessionID) {
        sessions[session]?.heldByTLS = false
    }

    /// Forgets a session (replaced by a newer registration, or its camera went away).
    public mutating func close(_ session: PresenceSessionID) {
        remove(session)
    }

    /// Forgets every session no longer held by its TLS connection and not kept alive within ``Configuration/timeout``;
    /// returns them with their devices, and the sessions their cameras left since the last call.
    public mutating func expire(now: ContinuousClock.Instant) -> [(session: PresenceSessionID, deviceID: DeviceID)] {
        var expired = left
        left.removeAll()
        for (id, state) in sessions where !state.heldByTLS && now - state.lastSeen >= configuration.timeout {
            expired.append((id, state.deviceID))
        }
        for (id, _) in expired { remove(id) }
        return expired
    }
}

/// Where the cloud reaches a camera's presence session.
public enum PresenceRoute: Sendable, Hashable {
    /// The source address of the camera's last keepalive datagram (its NAT mapping).
    case datagram(SocketAddress)
    /// The presence stream (TCP) the camera's last keepalive came on.
    case stream(PresenceStreamID)
}

/// A presence stream's identifier, unique within one cloud process.
public struct PresenceStreamID: Sendable, Hashable, CustomStringConvertible {
    /// The number.
    public let rawValue: UInt64

    /// The identifier numbered `rawValue`.
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// `stream-N`.
    public var description: String { "stream-\(rawValue)" }
}
