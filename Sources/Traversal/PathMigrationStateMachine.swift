import NIOCore

/// Why a running session moved to another path.
public enum PathMoveReason: String, Codable, Sendable, Hashable {
    /// A direct path answered an authenticated probe while the relay carried the session.
    case upgrade
    /// The active path went silent while we sent, and did not answer probes: back to the standby relay.
    case pathDead = "path-dead"
    /// The peer announced (sealed, on the new path) that it moved.
    case peerMoved = "peer-moved"
    /// The peer's datagrams came from a new address on the same path (its NAT remapped the port) and that
    /// address answered a sealed check: the path now sends there (RFC 9000 §9.3).
    case rebinding
    /// The standby relay was dead (its connection reset, or unanswering after this side roamed) and a fresh one
    /// took its place; the session stays where it is. Recorded by the side that connected the replacement and by
    /// the side that accepted it.
    case standbyReplaced = "standby-replaced"
}

/// One move of a running session from one path to another, as the report records it.
public struct PathMove: Codable, Sendable, Hashable {
    /// The strategy id of the path left.
    public var from: String
    /// The strategy id of the path taken.
    public var to: String
    /// The transport route of the path taken, e.g. `udp 10.0.0.2:4000 -> 203.0.113.7:5000`.
    public var route: String
    /// Why.
    public var reason: PathMoveReason
    /// Milliseconds since the connection was established.
    public var atMs: Double

    /// Creates a move record.
    public init(from: String, to: String, route: String, reason: PathMoveReason, atMs: Double) {
        self.from = from
        self.to = to
        self.route = route
        self.reason = reason
        self.atMs = atMs
    }
}

/// Which path of a session's path set; the path the session was established on is ``initial``.
public struct SessionPathID: Hashable, Sendable, CustomStringConvertible {
    /// The number, unique within one session.
    public let rawValue: Int
    /// A path id.
    public init(_ rawValue: Int) { self.rawValue = rawValue }
    /// The path the session was established on (the relay, when it migrates at all).
    public static let initial = SessionPathID(0)
    /// `path#N`.
    public var description: String { "path#\(rawValue)" }
}

/// The rules by which a relayed session moves to a direct path while it runs, and back to the relay
/// when the direct path dies (sans I/O, time injected, as ``RaceStateMachine``). ``PeerConnection`` drives it.
///
/// ```
///  relay active ── tick past next attempt ─► beginUpgrade(n)        (the deciding side: the viewer)
///     offer{n, candidates} ── sealed, on the relay ──► peer: peerOffered(n) ─► answerUpgrade(n)
///     both punch ─► candidateConnected(p, n) ─► probe(p, nonce) every probeInterval
///     answered(p, nonce) on p ─► switchTo(p, upgrade) + announce(p, epoch)  ─► peer: peerSwitched(p)
///     no candidate by attemptTimeout, or upgradeFailed(n) ─► abandon, next attempt after backoff
///  direct active ── nothing heard for `silence` while we send ─► probe(active), repeated every probeInterval
///     no answer within probeTimeout, with a standby ─► switchTo(relay, path-dead) + announce(relay) + abandon(direct)
///  any side, any path ── authenticated, newest datagram from a new address A ─► checkAddress(p, A, nonce)
///     answer with nonce from A ─► rebind(p, A)       (the peer's NAT rebound; RFC 9000 §9.3, §8.2)
///  standbyWanted ─► connectStandby(1) ─► standbyConnected(s, 1) ─► probe(s) every standbyCheckInterval (deciding side)
///     no answer within standbyTimeout, or lost(s) ─► abandon(s) + connectStandby(n+1, replacing)
///     standbyFailed(n) ─► connectStandby(n+1) after standbyRetryBackoff·2^k, at most maxStandbyFailures in a row
///  other side: lost(s), its own end of the standby (its relay connection reset, its allocation refused a refresh)
///     ─► connectStandby(n+1, replacing): a fresh allocation, its address offered sealed on the active path
///     deciding side: peerRenewedStandby ─► abandon(s) + connectStandby(n+1, replacing) toward the new address
///  kept standby carrying the session (after a fallback) ── silent while we send, no answer within standbyTimeout
///     ─► connectStandby(n+1, replacing) ─► its check answered ─► switchTo(new, path-dead) + announce + abandon(old)
///     (the standby is probed when the direct path turns suspect: silent too at the fallback, it is replaced at once)
/// ```
///
/// The standby is kept alive by the deciding side, which also connects its replacements (one at a time): it is
/// the side that reaches the other's relayed address, so after it roams (its connection to the relay keeps a
/// local address that no longer exists) or loses its relay connection, a fresh allocation pinging the peer's
/// relayed address is all it takes. The other side keeps its end of the standby and follows the replacement's
/// new relayed address like a rebinding: only after a sealed check from it is answered. When the other side's
/// own end dies (its allocation is gone, so no replacement from the deciding side can reach it), it allocates
/// afresh and offers the new relayed address over the direct path; the deciding side then replaces its end too
/// and connects toward the new address (``peerRenewedStandby(now:)``), at most once per ``Configuration/standbyRetryBackoff``.
///
/// A new address is only a candidate: the driver reports only datagrams that authenticated and were fresh
/// (a forged or replayed one moves nothing), a validation begins only for the datagram with the highest
/// counter so far (RFC 9000 §9.3: a reordered older packet does not move the path), and the path moves only
/// when a sealed check sent to that address is answered from it (its nonce is secret, so the old address
/// cannot answer for it). Until then, what is sent to the address stays within
/// ``amplificationFactor`` times what came from it (RFC 9000 §8).
///
/// A path is usable only after an authenticated answer on it: a candidate is never switched to on
/// its own say. Answers carry the probe's nonce; one for an older probe, an abandoned path or another
/// path is ignored. Moves announced by the peer carry an epoch that only grows, so a late announcement
/// never undoes a newer one. The relay stays in the set as standby while direct is active; a session
/// that started direct gets one when a relay path joins it (``standbyJoined(_:now:)``), and once it has
/// fallen back there it looks for a direct path again like a session that started on the relay.
public struct PathMigrationStateMachine: Sendable {
    /// Timing of upgrades and of the health check.
    public struct Configuration: Sendable, Hashable {
        /// Wait after the session starts before the first upgrade attempt.
        public var firstAttemptDelay: Duration = .milliseconds(500)
        /// An attempt that has not confirmed a path by then is given up.
        public var attemptTimeout: Duration = .seconds(8)
        /// Wait after the first failed attempt (or lost direct path); doubles with each further one.
        public var retryBackoff: Duration = .seconds(2)
        /// The longest wait between attempts.
        public var maxRetryBackoff: Duration = .seconds(60)
        /// Probes on a path are repeated this often until answered.
        public var probeInterval: Duration = .milliseconds(100)
        /// The active direct path is suspect after this long without an authenticated datagram while we send.
        public var silence: Duration = .seconds(1)
        /// A suspect path that answers no probe within this long is dead.
        public var probeTimeout: Duration = .milliseconds(300)
        /// A new peer address that has not answered its check within this long is forgotten.
        public var addressValidationTimeout: Duration = .seconds(1)
        /// The deciding side checks a standby that joined a direct session this often (a sealed probe through the relay).
        public var standbyCheckInterval: Duration = .seconds(2)
        /// A standby that answers no check within this long is dead and replaced.
        public var standbyTimeout: Duration = .milliseconds(1500)
        /// A standby connect that has not joined by then counts as failed.
        public var standbyConnectTimeout: Duration = .seconds(15)
        /// Wait after a failed standby connect; doubles with each further one in a row.
        public var standbyRetryBackoff: Duration = .seconds(1)
        /// Standby connects that may fail in a row (or join and never answer) before the session stops replacing it.
        public var maxStandbyFailures = 6

        /// The defaults: first attempt after 0.5 s, 8 s per attempt, backoff 2 s doubling to 60 s; a direct path
        /// silent for 1 s and unanswering for 0.3 s more is dead (fallback well within 2 s).
        public init() {}
    }

    /// What the driver must do.
    public enum Action: Sendable, Hashable {
        /// Gather upgrade candidates and offer them to the peer as attempt `attempt` (deciding side).
        case beginUpgrade(attempt: UInt32)
        /// Gather, answer the peer's offer `attempt` with our candidates, and connect (other side).
        case answerUpgrade(attempt: UInt32)
        /// Send a sealed probe carrying `nonce` on `path`.
        case probe(SessionPathID, nonce: UInt64)
        /// Send on `path` from now on.
        case switchTo(SessionPathID, reason: PathMoveReason)
        /// Tell the peer, sealed and on `path`, that we moved to it (its `epoch`).
        case announce(SessionPathID, epoch: UInt32)
        /// Close `path` and forget it.
        case abandon(SessionPathID)
        /// Send a sealed check carrying `nonce` on `path`'s socket to `address`, a new address of the peer.
        case checkAddress(SessionPathID, SocketAddress, nonce: UInt64)
        /// Send on `path` to `address` from now on: the peer's new address answered its check.
        case rebind(SessionPathID, to: SocketAddress)
        /// Connect a standby relay beside the direct path as attempt `attempt` (``standbyConnected(_:attempt:now:)``
        /// or ``standbyFailed(attempt:now:)`` when done); `replacing`: one stood by before and died.
        case connectStandby(attempt: UInt32, replacing: Bool)
    }

    /// Where the session started: on the relay (it looks for a direct path, and keeps the relay as
    /// standby), or on a direct path (it only follows the peer's address).
    public enum Start: Sendable, Hashable {
        /// On the relay, or on a stream path (TCP): the path kept to fall back to while a direct datagram path
        /// is looked for.
        case relay
        /// On a direct path.
        case direct
    }

    /// What may be sent to an unvalidated address: this many times the bytes received from it (RFC 9000 §8).
    public static let amplificationFactor = 3
    /// Bytes of one sealed address check (a nonce of 8 bytes in a sealed session message).
    public static let addressCheckBytes = PeerWire.sealedOverhead + 8

    /// A new address the peer's datagrams came from on one path, until it answers its check or is given up.
    private struct Rebinding: Sendable {
        var address: SocketAddress
        /// Bytes of authenticated datagrams that came from it.
        var received: Int
        /// Bytes of checks sent (or answered) to it.
        var spent: Int
        var nonce: UInt64
        var began: ContinuousClock.Instant
        var sent: ContinuousClock.Instant?

        /// Whether one more check fits the anti-amplification budget.
        var mayCheck: Bool { spent + PathMigrationStateMachine.addressCheckBytes <= PathMigrationStateMachine.amplificationFactor * received }
    }

    private struct Path: Sendable {
        /// The upgrade attempt that produced it (nil: the relay).
        var attempt: UInt32?
        var lastHeard: ContinuousClock.Instant
        /// The probe episode running on it: its nonce, when it began and when it was last sent.
        var probe: (nonce: UInt64, began: ContinuousClock.Instant, sent: ContinuousClock.Instant)?
    }

    /// How the standby is kept (only one the driver can connect again: ``standbyWanted(now:)``).
    private enum StandbyUpkeep: Sendable, Equatable {
        /// Not kept: none asked for, the session started on the relay, or replacing was given up.
        case none
        /// A connect (attempt `attempt`) in flight since `since`: at most one.
        case connecting(attempt: UInt32, since: ContinuousClock.Instant)
        /// In the set; checked next at `next` (deciding side) or never (the other side follows the peer's replacements,
        /// and renews its own end when that ends).
        case standing(next: ContinuousClock.Instant)
        /// The next connect at `at`.
        case due(at: ContinuousClock.Instant)
    }

    private enum Upgrade: Sendable {
        /// No attempt; the next one (deciding side) at `next`, or none planned.
        case idle(next: ContinuousClock.Instant?)
        case running(attempt: UInt32, since: ContinuousClock.Instant)
    }

    /// The timing.
    public let configuration: Configuration
    /// Whether this side decides (begins attempts and switches to a confirmed path).
    public let deciding: Bool
    /// The path sends go on.
    public private(set) var active: SessionPathID = .initial
    /// The standby path: the relay the session started on, or one that joined a session that started
    /// direct (``standbyJoined(_:now:)``); nil while there is none.
    public private(set) var standby: SessionPathID?
    /// Where the session started.
    public let start: Start
    /// Attempts that failed (or direct paths lost) since the last success: the backoff's exponent.
    public private(set) var failures = 0
    private var paths: [SessionPathID: Path]
    private var upgrade: Upgrade
    private var lastAttempt: UInt32 = 0
    private var lastSent: ContinuousClock.Instant?
    private var epoch: UInt32 = 0
    private var peerEpoch: UInt32 = 0
    private var nonces: UInt64
    private var rebindings: [SessionPathID: Rebinding] = [:]
    private var upkeep = StandbyUpkeep.none
    /// Whether the standby in the set has answered a check.
    private var standbyWasProven = false
    /// The kept standby that carries the session (after a fallback) and answered no probe: it stays active until
    /// its replacement answers, then the session moves there (deciding side, on a session that started direct).
    public private(set) var deadCarrier: SessionPathID?
    private var standbyAttempt: UInt32 = 0
    /// Standby connects that failed in a row, or standbys that died before answering a check: the backoff's exponent.
    public private(set) var standbyFailures = 0
    /// Standbys that joined so far (a later one replaces a dead one).
    public private(set) var standbysJoined = 0
    /// When the peer's last renewed standby end was acted on (deciding side): a renewal sooner than
    /// ``Configuration/standbyRetryBackoff`` after it is ignored, so a peer cannot make us allocate at its rate.
    private var lastPeerRenewal: ContinuousClock.Instant?

    /// A session established at `now` on its ``SessionPathID/initial`` path (by default the relay);
    /// `nonceSeed` starts the probe nonces.
    public init(deciding: Bool, configuration: Configuration = Configuration(), start: Start = .relay,
                now: ContinuousClock.Instant, nonceSeed: UInt64) {
        self.configuration = configuration
        self.deciding = deciding
        self.start = start
        self.paths = [.initial: Path(attempt: nil, lastHeard: now)]
        self.standby = start == .relay ? .initial : nil
        self.upgrade = .idle(next: deciding && start == .relay ? now + configuration.firstAttemptDelay : nil)
        self.nonces = nonceSeed
    }

    /// Whether an upgrade attempt is running.
    public var isUpgrading: Bool {
        if case .running = upgrade { return true }
        return false
    }

    /// The paths in the set (active, standby, candidates).
    public var pathIDs: Set<SessionPathID> { Set(paths.keys) }

    /// The next moment ``tick(now:)`` has something to do; `nil`: nothing until an input arrives.
    public var nextDeadline: ContinuousClock.Instant? {
        var due: [ContinuousClock.Instant] = []
        switch upgrade {
        case .idle(let next): if let next { due.append(next) }
        case .running(_, let since): due.append(since + configuration.attemptTimeout)
        }
        for (id, r) in rebindings where paths[id] != nil {
            due.append(r.began + configuration.addressValidationTimeout)
            if r.mayCheck { due.append((r.sent ?? r.began) + configuration.probeInterval) }
        }
        for (id, path) in paths where id != deadCarrier {
            if let p = path.probe {
                due.append(p.sent + configuration.probeInterval)
                if id == active, hasStandby, id != standby { due.append(p.began + configuration.probeTimeout) }
                if id == active, id == standby, replacesCarryingStandby { due.append(p.began + configuration.standbyTimeout) }
            } else if id == active, id != standby || replacesCarryingStandby, deadCarrier == nil, let sent = lastSent, sent > path.lastHeard {
                due.append(path.lastHeard + configuration.silence)
            }
        }
        switch upkeep {
        case .none: break
        case .connecting(_, let since): due.append(since + configuration.standbyConnectTimeout)
        case .due(let at): due.append(at)
        case .standing(let next):
            if checksStandby, let s = standby, let path = paths[s] {
                due.append(path.probe.map { $0.began + configuration.standbyTimeout } ?? next)
            }
        }
        return due.min()
    }

    /// Something other than a probe was sent on the active path at `now` (silence then means trouble).
    public mutating func sent(now: ContinuousClock.Instant) {
        lastSent = now
    }

    /// Whether the standby relay is in the set (a direct path can fall back to it).
    public var hasStandby: Bool { standby.map { paths[$0] != nil } ?? false }

    /// `path`'s transport ended while another path was active: it leaves the set. Without the standby, a
    /// direct path that goes silent is still probed (until heard, or the session's idle timeout ends it)
    /// but has nowhere to fall back to. A kept standby that ends is replaced at once (deciding side).
    public mutating func lost(_ path: SessionPathID, now: ContinuousClock.Instant) {
        guard path != active else { return }
        paths[path] = nil
        guard path == standby else { return }
        standby = nil
        if case .standing = upkeep { standbyEnded(now: now) }
    }

    /// The kept standby left the set: a fresh one is connected at once if it had answered a check (it died),
    /// else after the backoff (so a relay that takes connections and drops them is not hammered). On the other
    /// side, its own end ended: a fresh end is allocated and offered at once.
    private mutating func standbyEnded(now: ContinuousClock.Instant) {
        if standbyWasProven, deciding {
            upkeep = .due(at: now)
        } else if !deciding, start == .direct, standbysJoined > 0 {
            upkeep = .due(at: now)
        } else {
            standbyFailed(now: now)
        }
        standbyWasProven = false
    }

    /// A relay path connected beside the direct path a session started on: it joins the set as the standby
    /// a dead direct path falls back to. False (the caller closes it) when the session has a standby already.
    public mutating func standbyJoined(_ path: SessionPathID, now: ContinuousClock.Instant) -> Bool {
        guard !hasStandby, paths[path] == nil else { return false }
        paths[path] = Path(attempt: nil, lastHeard: now)
        standby = path
        standbysJoined += 1
        standbyWasProven = false
        return true
    }

    /// The driver can connect a standby beside the direct path (and again, when it dies): the first connect,
    /// unless one is kept already.
    public mutating func standbyWanted(now: ContinuousClock.Instant) -> [Action] {
        guard upkeep == .none, standbyFailures == 0, !hasStandby, start == .direct else { return [] }
        return beginStandbyConnect(now: now)
    }

    /// The standby connect `attempt` produced `path`: it joins as the standby (false: stale or not wanted, the
    /// caller closes it). The deciding side checks it at once, which also shows the other side its new address.
    public mutating func standbyConnected(_ path: SessionPathID, attempt: UInt32, now: ContinuousClock.Instant) -> Bool {
        guard case .connecting(let current, _) = upkeep, current == attempt, standbyJoined(path, now: now) else { return false }
        upkeep = .standing(next: now)
        // The other side's end joined because the deciding side reached it: it works.
        if !deciding { standbyFailures = 0 }
        return true
    }

    /// The peer offered a fresh end of the standby (sealed, on the active path: its own end had died). The deciding
    /// side replaces its end at once, toward the new address: the standby in the set is abandoned (or, carrying the
    /// session, kept until the replacement answers), and a connect begins, unless the last renewal was acted on less
    /// than ``Configuration/standbyRetryBackoff`` ago or the session keeps no standby.
    public mutating func peerRenewedStandby(now: ContinuousClock.Instant) -> [Action] {
        guard deciding, start == .direct, standbysJoined > 0 || upkeep != .none,
              lastPeerRenewal.map({ now >= $0 + configuration.standbyRetryBackoff }) ?? true else { return [] }
        lastPeerRenewal = now
        var actions: [Action] = []
        if let s = standby, paths[s] != nil {
            if s == active {
                deadCarrier = s
            } else {
                paths[s] = nil
                actions.append(.abandon(s))
            }
        }
        standby = nil
        standbyWasProven = false
        return actions + beginStandbyConnect(now: now)
    }

    /// The standby connect `attempt` failed: tried again after a backoff, up to ``Configuration/maxStandbyFailures`` in a row.
    public mutating func standbyFailed(attempt: UInt32, now: ContinuousClock.Instant) -> [Action] {
        guard case .connecting(let current, _) = upkeep, current == attempt else { return [] }
        standbyFailed(now: now)
        return []
    }

    /// Whether this side replaces the kept standby while it carries the session: it decides, and connects its
    /// standbys itself (a session that started direct and had one join).
    private var replacesCarryingStandby: Bool {
        guard deciding, start == .direct, standbysJoined > 0 else { return false }
        switch upkeep {
        case .standing, .due, .connecting: return true
        case .none: return false
        }
    }

    /// Whether this side checks its standby now: it decides, keeps one, and the direct path carries the session.
    private var checksStandby: Bool {
        guard deciding, case .standing = upkeep, let s = standby, paths[s] != nil else { return false }
        return active != s
    }

    /// The kept standby `path`, carrying the session, is given up for dead: it stays active until its replacement,
    /// connected now, answers (``answered(on:nonce:now:)``), or until it is heard after all.
    private mutating func replaceDeadCarrier(_ path: SessionPathID, now: ContinuousClock.Instant) -> [Action] {
        deadCarrier = path
        standby = nil
        standbyWasProven = false
        return beginStandbyConnect(now: now)
    }

    private mutating func beginStandbyConnect(now: ContinuousClock.Instant) -> [Action] {
        standbyAttempt += 1
        upkeep = .connecting(attempt: standbyAttempt, since: now)
        return [.connectStandby(attempt: standbyAttempt, replacing: standbysJoined > 0)]
    }

    /// A connect failed, or a standby died before answering a check: the next connect after the backoff (on the
    /// other side, only when renewing an end that had joined: its first connect is not repeated).
    private mutating func standbyFailed(now: ContinuousClock.Instant) {
        standbyFailures += 1
        upkeep = (deciding || standbysJoined > 0) && standbyFailures < configuration.maxStandbyFailures
            ? .due(at: now + Self.doubling(configuration.standbyRetryBackoff, failures: standbyFailures, cap: configuration.maxRetryBackoff))
            : .none
    }

    /// The standby answered no check within ``Configuration/standbyTimeout``: it leaves the set and a fresh one is
    /// connected, at once if it had ever answered (it died), else after the backoff.
    private mutating func standbyDead(_ path: SessionPathID, now: ContinuousClock.Instant) -> [Action] {
        paths[path] = nil
        standby = nil
        standbyEnded(now: now)
        return [.abandon(path)]
    }

    /// An authenticated datagram arrived on `path`: it works inbound.
    public mutating func heard(on path: SessionPathID, now: ContinuousClock.Instant) {
        guard paths[path] != nil else { return }
        paths[path]?.lastHeard = now
        // On the active path, anything authenticated ends a suspicion; a candidate still needs its answer.
        if path == active { paths[path]?.probe = nil }
        // A carrier given up for dead that is heard after all stays; its replacement, if it comes, stands by.
        if path == deadCarrier { deadCarrier = nil }
    }

    /// Acts on what is due at `now`: attempts to begin or give up, probes to repeat, dead paths.
    public mutating func tick(now: ContinuousClock.Instant) -> [Action] {
        var actions: [Action] = []
        switch upgrade {
        case .idle(let next?) where now >= next && deciding && active == standby:
            lastAttempt += 1
            upgrade = .running(attempt: lastAttempt, since: now)
            actions.append(.beginUpgrade(attempt: lastAttempt))
        case .running(let attempt, let since) where now >= since + configuration.attemptTimeout:
            actions += endAttempt(attempt, failed: true, now: now)
        default:
            break
        }
        actions += tickStandby(now: now)
        for id in rebindings.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
            guard let r = rebindings[id], paths[id] != nil, now < r.began + configuration.addressValidationTimeout else {
                rebindings[id] = nil
                continue
            }
            actions += checkAddress(on: id, now: now)
        }
        for id in paths.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
            // A dead carrier waits for its replacement's answer (or to be heard after all): no probes, no fallback.
            guard let path = paths[id], id != deadCarrier else { continue }
            // A silent direct path is probed (the probe also shows the peer where we are now, if our own NAT
            // rebound or we changed networks); it is given up only when there is a standby to fall back to.
            if id == active, id != standby {
                if hasStandby, let p = path.probe, now >= p.began + configuration.probeTimeout {
                    let standbyProbe = standby.flatMap { paths[$0]?.probe }
                    actions += fallBack(now: now)
                    // The standby, probed with the direct path, is silent too: both died together (this side changed
                    // networks), so it is replaced at once, not after ``Configuration/standbyTimeout`` more of silence.
                    if replacesCarryingStandby, let s = standby, s == active, let sp = standbyProbe,
                       now >= sp.began + configuration.probeTimeout {
                        actions += replaceDeadCarrier(s, now: now)
                    }
                    continue
                }
                if path.probe == nil, let sent = lastSent, sent > path.lastHeard, now >= path.lastHeard + configuration.silence {
                    actions.append(beginProbe(on: id, now: now))
                    // The standby is checked at the same moment (deciding side), so a fallback knows whether it lives.
                    if replacesCarryingStandby, let s = standby, s != id, paths[s] != nil, paths[s]?.probe == nil {
                        actions.append(beginProbe(on: s, now: now))
                    }
                    continue
                }
            }
            // The kept standby carrying the session can die too (this side changed networks, so did its connection
            // to the relay): probed when silent while we send, and replaced when it answers no probe.
            if id == active, id == standby, replacesCarryingStandby, deadCarrier == nil {
                if let p = path.probe, now >= p.began + configuration.standbyTimeout {
                    actions += replaceDeadCarrier(id, now: now)
                    continue
                }
                if path.probe == nil, let sent = lastSent, sent > path.lastHeard, now >= path.lastHeard + configuration.silence {
                    actions.append(beginProbe(on: id, now: now))
                    continue
                }
            }
            if let p = path.probe, now >= p.sent + configuration.probeInterval {
                paths[id]?.probe?.sent = now
                actions.append(.probe(id, nonce: p.nonce))
            }
        }
        return actions
    }

    /// The standby's upkeep at `now`: a connect due or overdue, a check to begin, a check unanswered too long.
    private mutating func tickStandby(now: ContinuousClock.Instant) -> [Action] {
        switch upkeep {
        case .none:
            return []
        case .due(let at):
            return now >= at ? beginStandbyConnect(now: now) : []
        case .connecting(_, let since):
            guard now >= since + configuration.standbyConnectTimeout else { return [] }
            standbyFailed(now: now)
            return tickStandby(now: now)
        case .standing(let next):
            guard checksStandby, let s = standby, let path = paths[s] else { return [] }
            if let p = path.probe {
                guard now >= p.began + configuration.standbyTimeout else { return [] }
                let abandon = standbyDead(s, now: now)
                return abandon + tickStandby(now: now)
            }
            return now >= next ? [beginProbe(on: s, now: now)] : []
        }
    }

    /// The peer offered candidates for its attempt `attempt` (we are the side that answers).
    public mutating func peerOffered(attempt: UInt32, now: ContinuousClock.Instant) -> [Action] {
        guard !deciding, attempt > lastAttempt, active == standby else { return [] }
        var actions: [Action] = []
        if case .running(let old, _) = upgrade { actions += endAttempt(old, failed: false, now: now) }
        lastAttempt = attempt
        upgrade = .running(attempt: attempt, since: now)
        actions.append(.answerUpgrade(attempt: attempt))
        return actions
    }

    /// A strategy connected `path` for attempt `attempt`; it joins the set as a candidate (abandoned if the attempt is over).
    public mutating func candidateConnected(_ path: SessionPathID, attempt: UInt32, now: ContinuousClock.Instant) -> [Action] {
        guard case .running(let current, _) = upgrade, current == attempt, paths[path] == nil else { return [.abandon(path)] }
        paths[path] = Path(attempt: attempt, lastHeard: now)
        // The deciding side confirms; the other answers its probes and follows its announcement.
        return deciding ? [beginProbe(on: path, now: now)] : []
    }

    /// Every strategy of attempt `attempt` failed to connect.
    public mutating func upgradeFailed(attempt: UInt32, now: ContinuousClock.Instant) -> [Action] {
        guard case .running(let current, _) = upgrade, current == attempt else { return [] }
        return endAttempt(attempt, failed: true, now: now)
    }

    /// An authenticated answer carrying `nonce` arrived on `path`.
    public mutating func answered(on path: SessionPathID, nonce: UInt64, now: ContinuousClock.Instant) -> [Action] {
        guard let p = paths[path]?.probe, p.nonce == nonce else { return [] }
        paths[path]?.probe = nil
        paths[path]?.lastHeard = now
        if path == standby, case .standing = upkeep {
            // The standby works: checked again later, and a later death is replaced at once.
            upkeep = .standing(next: now + configuration.standbyCheckInterval)
            standbyFailures = 0
            standbyWasProven = true
            if let dead = deadCarrier, dead == active {
                // The replacement of a dead carrier answered: the session moves there, as in a fallback.
                deadCarrier = nil
                return leaveDeadActive(for: path, now: now)
            }
        }
        guard path != active, deciding, case .running(let attempt, _) = upgrade, paths[path]?.attempt == attempt else { return [] }
        var actions = move(to: path, reason: .upgrade)
        upgrade = .idle(next: nil)
        failures = 0
        epoch += 1
        actions.append(.announce(path, epoch: epoch))
        for (id, other) in paths where id != path && other.attempt != nil {
            paths[id] = nil
            actions.append(.abandon(id))
        }
        return actions
    }

    /// The peer announced, sealed and on `path`, that it moved there (its `epoch`).
    public mutating func peerSwitched(to path: SessionPathID, epoch: UInt32, now: ContinuousClock.Instant) -> [Action] {
        guard epoch > peerEpoch, paths[path] != nil else { return [] }
        peerEpoch = epoch
        guard path != active else { return [] }
        let left = active
        var actions = move(to: path, reason: .peerMoved)
        if path == standby {
            // The peer lost the direct path: so do we.
            paths[left] = nil
            actions.append(.abandon(left))
            actions += scheduleRetry(now: now)
        } else {
            upgrade = .idle(next: nil)
            failures = 0
            for (id, other) in paths where id != path && other.attempt != nil {
                paths[id] = nil
                actions.append(.abandon(id))
            }
        }
        return actions
    }

    /// An authenticated datagram of `bytes` bytes, not a replay, arrived on `path` from `address`, which is not
    /// the address the path sends to; `newest`: it carried the highest counter yet. The address becomes a
    /// candidate (only for the newest datagram) and is checked within the anti-amplification budget.
    public mutating func heard(from address: SocketAddress, on path: SessionPathID, bytes: Int, newest: Bool,
                               now: ContinuousClock.Instant) -> [Action] {
        guard paths[path] != nil else { return [] }
        // The peer is alive (its datagram authenticated), whichever address its NAT gives it now.
        paths[path]?.lastHeard = now
        if rebindings[path]?.address == address {
            rebindings[path]?.received += bytes
            return checkAddress(on: path, now: now)
        }
        guard newest else { return [] }
        nonces &+= 1
        rebindings[path] = Rebinding(address: address, received: bytes, spent: 0, nonce: nonces, began: now, sent: nil)
        return checkAddress(on: path, now: now)
    }

    /// Whether a check of `bytes` bytes that came on `path` from the new address `address` may be answered
    /// there: only for the candidate address, and within its budget (which the answer is charged to).
    public mutating func mayAnswer(on path: SessionPathID, to address: SocketAddress, bytes: Int) -> Bool {
        guard let r = rebindings[path], r.address == address,
              r.spent + bytes <= Self.amplificationFactor * r.received else { return false }
        rebindings[path]?.spent += bytes
        return true
    }

    /// An authenticated answer carrying `nonce` arrived on `path` from `address`, a candidate new address of the peer.
    public mutating func answered(on path: SessionPathID, from address: SocketAddress, nonce: UInt64,
                                  now: ContinuousClock.Instant) -> [Action] {
        guard let r = rebindings[path], r.address == address, r.nonce == nonce, paths[path] != nil else { return [] }
        rebindings[path] = nil
        paths[path]?.lastHeard = now
        paths[path]?.probe = nil
        return [.rebind(path, to: address)]
    }

    /// The new address `path` is checking, if any.
    public func candidateAddress(on path: SessionPathID) -> SocketAddress? { rebindings[path]?.address }

    /// Sends the check of `path`'s candidate address if one is due and the budget allows it.
    private mutating func checkAddress(on path: SessionPathID, now: ContinuousClock.Instant) -> [Action] {
        guard let r = rebindings[path], r.mayCheck, r.sent.map({ now >= $0 + configuration.probeInterval }) ?? true else { return [] }
        rebindings[path]?.spent += Self.addressCheckBytes
        rebindings[path]?.sent = now
        return [.checkAddress(path, r.address, nonce: r.nonce)]
    }

    private mutating func beginProbe(on path: SessionPathID, now: ContinuousClock.Instant) -> Action {
        nonces &+= 1
        paths[path]?.probe = (nonces, now, now)
        return .probe(path, nonce: nonces)
    }

    private mutating func move(to path: SessionPathID, reason: PathMoveReason) -> [Action] {
        active = path
        return [.switchTo(path, reason: reason)]
    }

    /// The active direct path is dead: back to the standby, tell the peer there, retry later.
    private mutating func fallBack(now: ContinuousClock.Instant) -> [Action] {
        guard let standby else { return [] }
        return leaveDeadActive(for: standby, now: now)
    }

    /// The active path is dead: move to `path` (reason `path-dead`), tell the peer there, drop the dead one,
    /// and look for a direct path again later.
    private mutating func leaveDeadActive(for path: SessionPathID, now: ContinuousClock.Instant) -> [Action] {
        let dead = active
        var actions = move(to: path, reason: .pathDead)
        paths[dead] = nil
        epoch += 1
        actions += [.announce(path, epoch: epoch), .abandon(dead)]
        actions += scheduleRetry(now: now)
        return actions
    }

    /// Ends attempt `attempt`: its candidates not carrying the session are abandoned.
    private mutating func endAttempt(_ attempt: UInt32, failed: Bool, now: ContinuousClock.Instant) -> [Action] {
        var actions: [Action] = []
        for (id, path) in paths where path.attempt == attempt && id != active {
            paths[id] = nil
            actions.append(.abandon(id))
        }
        upgrade = .idle(next: nil)
        if failed { actions += scheduleRetry(now: now) }
        return actions
    }

    private mutating func scheduleRetry(now: ContinuousClock.Instant) -> [Action] {
        failures += 1
        guard deciding else {
            upgrade = .idle(next: nil)
            return []
        }
        upgrade = .idle(next: now + backoff(failures: failures))
        return []
    }

    /// The wait before the next attempt after `failures` failures: ``Configuration/retryBackoff`` doubling, capped.
    public func backoff(failures: Int) -> Duration {
        Self.doubling(configuration.retryBackoff, failures: failures, cap: configuration.maxRetryBackoff)
    }

    /// `base` doubled for each failure after the first, at most `cap`.
    private static func doubling(_ base: Duration, failures: Int, cap: Duration) -> Duration {
        var wait = base
        for _ in 1..<max(1, failures) where wait < cap { wait *= 2 }
        return min(wait, cap)
    }
}
