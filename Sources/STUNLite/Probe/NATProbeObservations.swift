/// What one answered probe step saw (RFC 8489 §14.2 XOR-MAPPED-ADDRESS, RFC 5780 §7.3-7.4).
public struct NATProbeAnswer: Sendable, Hashable {
    /// The local address the step ran on (a real IP, not the wildcard).
    public var local: TransportAddress?
    /// XOR-MAPPED-ADDRESS, if the answer carried one.
    public var mapped: TransportAddress?
    /// Where the answer actually came from (the UDP source, not RESPONSE-ORIGIN's claim).
    public var source: TransportAddress
    /// OTHER-ADDRESS, if the server offers RFC 5780 behaviour discovery.
    public var otherAddress: TransportAddress?
    /// Round trip from the first send, in milliseconds.
    public var rttMs: Double

    /// Creates an answer.
    public init(local: TransportAddress? = nil, mapped: TransportAddress? = nil, source: TransportAddress,
                otherAddress: TransportAddress? = nil, rttMs: Double = 0) {
        self.local = local
        self.mapped = mapped
        self.source = source
        self.otherAddress = otherAddress
        self.rttMs = rttMs
    }
}

/// How one probe step ended (RFC 8489 §6.3.1, §6.2.1).
public enum NATProbeOutcome: Sendable, Hashable {
    /// A success response (or, for hairpinning, our own datagram) arrived.
    case answered(NATProbeAnswer)
    /// Nothing arrived within the retransmission schedule.
    case timeout
    /// The server sent an error response with this code (e.g. 420 for an unsupported CHANGE-REQUEST).
    case errorResponse(Int)
    /// The step could not run (socket error); the words say why.
    case failed(String)
}

/// What the lifetime bisection found: the longest idle time survived and the shortest not (RFC 4787 §4.3).
public struct NATLifetimeObservation: Sendable, Hashable {
    /// Longest idle seconds after which the mapping still delivered, if any.
    public var aliveSeconds: Double?
    /// Shortest idle seconds after which it no longer did, if any.
    public var expiredSeconds: Double?
    /// Idle seconds spent in all trials.
    public var spentSeconds: Double

    /// Creates an observation.
    public init(aliveSeconds: Double? = nil, expiredSeconds: Double? = nil, spentSeconds: Double = 0) {
        self.aliveSeconds = aliveSeconds
        self.expiredSeconds = expiredSeconds
        self.spentSeconds = spentSeconds
    }
}

/// Everything the runner observed: the input of ``NATProbeClassifier/classify(_:)``; pure data.
public struct NATProbeObservations: Sendable, Hashable {
    /// The server's primary address.
    public var server: TransportAddress
    /// Each UDP test's outcome; absent means it did not run.
    public var outcomes: [NATProbeTest: NATProbeOutcome]
    /// Each TCP port's result, in probe order.
    public var tcp: [NATProbeTCPResult]
    /// The lifetime bisection's result, when it ran.
    public var lifetime: NATLifetimeObservation?

    /// Creates observations.
    public init(server: TransportAddress, outcomes: [NATProbeTest: NATProbeOutcome] = [:], tcp: [NATProbeTCPResult] = [],
                lifetime: NATLifetimeObservation? = nil) {
        self.server = server
        self.outcomes = outcomes
        self.tcp = tcp
        self.lifetime = lifetime
    }

    /// The answer of `test`, if it was answered.
    public func answer(_ test: NATProbeTest) -> NATProbeAnswer? {
        if case .answered(let a)? = outcomes[test] { return a }
        return nil
    }

    /// Whether mapping test I showed a NAT (mapped ≠ local, RFC 5780 §4.3); nil when it was not answered.
    public var natDetected: Bool? {
        guard let a = answer(.mappingI), let mapped = a.mapped, let local = a.local else { return nil }
        return mapped != local
    }

    /// The server's OTHER-ADDRESS, from whichever test I saw it.
    public var otherAddress: TransportAddress? {
        answer(.mappingI)?.otherAddress ?? answer(.filteringI)?.otherAddress
    }

    /// Adds what another lane observed (lanes write disjoint tests).
    public mutating func merge(_ other: NATProbeObservations) {
        outcomes.merge(other.outcomes) { mine, _ in mine }
        tcp += other.tcp
        lifetime = lifetime ?? other.lifetime
    }
}
