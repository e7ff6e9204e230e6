/// Datagram packetization-layer path MTU discovery for a session (DPLPMTUD, RFC 8899), as a state machine
/// that takes `now` and returns actions.
///
/// A session starts at the base size every path carries (``PeerTransport/maxMessageSize``, 1200 bytes on UDP,
/// which fits IPv6's 1280 minimum, RFC 8899 §5.1.2 BASE_PLPMTU). The search then sends one padded probe
/// of each larger candidate size at once (RFC 8899 §4.1: probes are separate packets the peer acknowledges,
/// never application data) and raises the session's packet size to the largest acknowledged one: the channel
/// engine then packs more bytes per packet, which is what its goodput under loss scales with (a loss-limited
/// sender moves about one packet per round trip, whatever its size). Unanswered probes are repeated
/// ``maxProbes`` times, ``probeInterval`` apart (§5.1.2 MAX_PROBES; §5.1.1 asks PROBE_TIMER ≥ 1 s).
///
/// Black holes (§4.2): while above the base size, the size in use is confirmed every ``confirmationInterval``
/// by one probe of that size; when ``maxProbes`` confirmations in a row go unanswered, the session falls back
/// to the base size and searches again after ``researchInterval`` (§5.1.1 PMTU_RAISE_TIMER).
struct PathMTUSearch: Sendable {
    /// What the owner does next.
    enum Action: Equatable, Sendable {
        /// Send one probe whose whole transport message is `size` bytes.
        case sendProbe(size: Int)
        /// Use `size` bytes as the largest transport message from now on.
        case use(size: Int)
    }

    /// The base size every datagram path carries (RFC 8899 §5.1.2 BASE_PLPMTU): 1200 bytes, which fits IPv6's
    /// 1280-byte minimum MTU with headers.
    static let basePLPMTU = 1200
    /// Transport message sizes tried above the base (bytes of the whole datagram payload): a tunnel's
    /// 1280-ish, a PPPoE or VPN line's 1400, and 1452, what a 1500-byte MTU carries over IPv6 (1500 − 40 − 8).
    static let candidates = [1280, 1400, 1452]
    /// Probes of one size before it counts as not carried (RFC 8899 §5.1.2 MAX_PROBES).
    static let maxProbes = 3
    /// Wait for a probe's acknowledgement before repeating it (RFC 8899 §5.1.1 PROBE_TIMER, at least 1 s).
    static let probeInterval: Duration = .seconds(1)
    /// How often the size in use is confirmed while above the base (RFC 8899 §5.1.1 CONFIRMATION_TIMER).
    static let confirmationInterval: Duration = .seconds(30)
    /// How long a session waits for the first round's answers before its channel engine connects at the size
    /// found so far (the engine's packet size is fixed when it connects): a few round trips on any usual path.
    static let initialWait: Duration = .milliseconds(300)
    /// After a black hole, how long before sizes above the base are tried again (RFC 8899 §5.1.1 PMTU_RAISE_TIMER).
    static let researchInterval: Duration = .seconds(600)

    private struct Outstanding: Sendable {
        var sent: Int
        var due: ContinuousClock.Instant
    }

    /// The base size, always carried.
    let base: Int
    /// The largest size the transport would send.
    let limit: Int
    /// The size in use.
    private(set) var current: Int
    private var probing: [Int: Outstanding] = [:]
    private var confirming: Outstanding?
    private var nextConfirmation: ContinuousClock.Instant?
    private var nextSearch: ContinuousClock.Instant?

    /// A search between `base` (in use from the start) and `limit`.
    init(base: Int, limit: Int) {
        self.base = base
        self.limit = limit
        self.current = base
    }

    /// Sizes worth probing: the candidates above the size in use that the transport would send.
    private var sizesAbove: [Int] { Self.candidates.filter { $0 > current && $0 <= limit } }

    /// Starts a search: probes every candidate size at once.
    mutating func start(now: ContinuousClock.Instant) -> [Action] {
        nextSearch = nil
        var actions: [Action] = []
        for size in sizesAbove where probing[size] == nil {
            probing[size] = Outstanding(sent: 1, due: now + Self.probeInterval)
            actions.append(.sendProbe(size: size))
        }
        return actions
    }

    /// The peer acknowledged a probe of `size` bytes.
    mutating func acknowledged(size: Int, now: ContinuousClock.Instant) -> [Action] {
        guard size > base, size <= limit else { return [] }
        if size == current, confirming != nil {
            confirming = nil
            nextConfirmation = now + Self.confirmationInterval
            return []
        }
        guard probing.removeValue(forKey: size) != nil, size > current else { return [] }
        current = size
        probing = probing.filter { $0.key > size }
        confirming = nil
        nextConfirmation = now + Self.confirmationInterval
        return [.use(size: size)]
    }

    /// Repeats or gives up on unanswered probes, and confirms the size in use when due.
    mutating func tick(now: ContinuousClock.Instant) -> [Action] {
        var actions: [Action] = []
        for (size, o) in probing.sorted(by: { $0.key < $1.key }) where o.due <= now {
            if o.sent < Self.maxProbes {
                probing[size] = Outstanding(sent: o.sent + 1, due: now + Self.probeInterval)
                actions.append(.sendProbe(size: size))
            } else {
                probing[size] = nil
            }
        }
        if let c = confirming, c.due <= now {
            if c.sent < Self.maxProbes {
                confirming = Outstanding(sent: c.sent + 1, due: now + Self.probeInterval)
                actions.append(.sendProbe(size: current))
            } else {
                // A black hole: the path stopped carrying the size in use (RFC 8899 §4.2).
                confirming = nil
                nextConfirmation = nil
                probing = [:]
                current = base
                nextSearch = now + Self.researchInterval
                actions.append(.use(size: base))
            }
        } else if confirming == nil, current > base, let due = nextConfirmation, due <= now {
            confirming = Outstanding(sent: 1, due: now + Self.probeInterval)
            nextConfirmation = nil
            actions.append(.sendProbe(size: current))
        }
        if let due = nextSearch, due <= now {
            actions += start(now: now)
        }
        return actions
    }

    /// True when no probe of a size above the one in use awaits an answer.
    var isSettled: Bool { probing.keys.allSatisfy { $0 <= current } }

    /// When ``tick(now:)`` next has something to do; nil when nothing is pending.
    var nextDeadline: ContinuousClock.Instant? {
        let dues = probing.values.map(\.due) + [confirming?.due, nextConfirmation, nextSearch].compactMap { $0 }
        return dues.min()
    }
}
