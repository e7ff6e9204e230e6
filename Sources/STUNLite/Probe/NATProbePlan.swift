import NIOCore

/// What `NATProbe` should test, and how long it may take (RFC 5780 §4).
public struct NATProbeOptions: Sendable, Hashable {
    /// Retransmissions for every UDP test: short, so a blocked path is reported in seconds (RFC 8489 §6.2.1).
    public var policy: STUNRetransmissionPolicy
    /// TCP ports to try a Binding on (RFC 8489 §6.2.2); nil means the server's port, empty skips TCP.
    public var tcpPorts: [UInt16]?
    /// How long one TCP Binding may take, handshake included.
    public var tcpTimeout: TimeAmount
    /// Whether to test hairpinning (RFC 5780 §4.5).
    public var hairpin: Bool
    /// How long to wait for our own hairpinned datagram.
    public var hairpinTimeout: TimeAmount
    /// Whether to measure the mapping lifetime by bisection (RFC 4787 §4.3); slow, off by default.
    public var lifetime: Bool
    /// The longest idle time the lifetime bisection tries, in seconds.
    public var lifetimeMaxSeconds: Double
    /// The bisection stops once the lifetime is known to within this many seconds.
    public var lifetimeResolutionSeconds: Double
    /// The most idle time all lifetime trials together may spend, in seconds.
    public var lifetimeBudgetSeconds: Double

    /// Default per-test TCP timeout.
    public static let defaultTCPTimeout = TimeAmount.seconds(3)
    /// Default hairpin wait: as long as a UDP transaction under ``STUNRetransmissionPolicy/quick``.
    public static let defaultHairpinTimeout = TimeAmount.milliseconds(2_200)
    /// Default longest lifetime tried: 60 s.
    public static let defaultLifetimeMaxSeconds = 60.0
    /// Default lifetime resolution: 5 s.
    public static let defaultLifetimeResolutionSeconds = 5.0
    /// Default total lifetime budget: 120 s of idling.
    public static let defaultLifetimeBudgetSeconds = 120.0

    /// Creates options; by default every test but the lifetime runs, TCP on the server's own port.
    public init(policy: STUNRetransmissionPolicy = .quick, tcpPorts: [UInt16]? = nil, tcpTimeout: TimeAmount = defaultTCPTimeout,
                hairpin: Bool = true, hairpinTimeout: TimeAmount = defaultHairpinTimeout, lifetime: Bool = false,
                lifetimeMaxSeconds: Double = defaultLifetimeMaxSeconds,
                lifetimeResolutionSeconds: Double = defaultLifetimeResolutionSeconds,
                lifetimeBudgetSeconds: Double = defaultLifetimeBudgetSeconds) {
        self.policy = policy
        self.tcpPorts = tcpPorts
        self.tcpTimeout = tcpTimeout
        self.hairpin = hairpin
        self.hairpinTimeout = hairpinTimeout
        self.lifetime = lifetime
        self.lifetimeMaxSeconds = lifetimeMaxSeconds
        self.lifetimeResolutionSeconds = lifetimeResolutionSeconds
        self.lifetimeBudgetSeconds = lifetimeBudgetSeconds
    }
}

/// One test of the probe (RFC 5780 §4.3 mapping, §4.4 filtering, §4.5 hairpinning; RFC 8489 §6.2.2 TCP).
public enum NATProbeTest: String, Sendable, Hashable, Codable, CaseIterable {
    /// RFC 5780 §4.3 test I: Binding to the primary address.
    case mappingI = "mapping-i"
    /// RFC 5780 §4.3 test II: Binding to the alternate IP, primary port.
    case mappingII = "mapping-ii"
    /// RFC 5780 §4.3 test III: Binding to the alternate IP and port.
    case mappingIII = "mapping-iii"
    /// RFC 5780 §4.4 test I: Binding to the primary address from a fresh socket.
    case filteringI = "filtering-i"
    /// RFC 5780 §4.4 test II: CHANGE-REQUEST for another IP and port.
    case filteringII = "filtering-ii"
    /// RFC 5780 §4.4 test III: CHANGE-REQUEST for another port only.
    case filteringIII = "filtering-iii"
    /// RFC 5780 §4.5: a datagram to our own mapped address.
    case hairpin
    /// RFC 8489 §6.2.2: Binding over TCP (one step per port).
    case tcp
    /// RFC 4787 §4.3: mapping lifetime bisection (one step; the trials are planned by ``NATLifetimeBisection``).
    case lifetime
}

/// Where a probe step sends to, relative to what earlier steps learned (RFC 5780 §4).
public enum NATProbeTarget: Sendable, Hashable {
    /// The server's primary address.
    case primary
    /// OTHER-ADDRESS's IP with the primary port (RFC 5780 §4.3 test II).
    case alternateIPPrimaryPort
    /// OTHER-ADDRESS itself (RFC 5780 §4.3 test III).
    case otherAddress
    /// The mapped address test I learned (RFC 5780 §4.5).
    case ownMappedAddress
    /// The primary IP on a TCP port.
    case tcpPort(UInt16)
}

/// Which local socket a step uses; steps on different sockets run at the same time.
public enum NATProbeSocket: String, Sendable, Hashable, CaseIterable {
    /// Socket A: mapping tests, and the receiver of the hairpin test.
    case mapping
    /// Socket B: filtering tests; it never talks to the alternate address before they end.
    case filtering
    /// A connection per TCP step.
    case tcp
    /// Fresh sockets per trial, after everything else.
    case lifetime
}

/// A condition a step needs from earlier results; evaluated by ``NATProbePlan/shouldRun(_:given:)``.
public enum NATProbeRequirement: Sendable, Hashable {
    /// Test I on the mapping socket got an answer.
    case mappingAnswered
    /// That answer carried OTHER-ADDRESS (RFC 5780 §7.2).
    case otherAddressKnown
    /// Test I showed a NAT (mapped address ≠ local address).
    case natDetected
    /// Mapping test II's mapped address differed from test I's.
    case mappingIIDiffered
    /// Filtering test I got an answer.
    case filteringAnswered
    /// Filtering test II got no answer (neither a success nor an error).
    case filteringIITimedOut
}

/// One step of the probe plan: a Binding (or hairpin datagram) from one socket to one target.
public struct NATProbeStep: Sendable, Hashable, CustomStringConvertible {
    /// Which test this is.
    public var test: NATProbeTest
    /// The socket it runs on.
    public var socket: NATProbeSocket
    /// Where it sends.
    public var target: NATProbeTarget
    /// CHANGE-REQUEST "change IP" (RFC 5780 §7.2).
    public var changeIP: Bool
    /// CHANGE-REQUEST "change port" (RFC 5780 §7.2).
    public var changePort: Bool
    /// What earlier results it needs; it is skipped otherwise.
    public var requires: [NATProbeRequirement]

    /// Creates a step.
    public init(_ test: NATProbeTest, on socket: NATProbeSocket, to target: NATProbeTarget, changeIP: Bool = false,
                changePort: Bool = false, requires: [NATProbeRequirement] = []) {
        self.test = test
        self.socket = socket
        self.target = target
        self.changeIP = changeIP
        self.changePort = changePort
        self.requires = requires
    }

    /// `mapping-ii on mapping → alternateIPPrimaryPort` style.
    public var description: String {
        var s = "\(test.rawValue) on \(socket.rawValue) → \(target)"
        if changeIP || changePort { s += " change\(changeIP ? " ip" : "")\(changePort ? " port" : "")" }
        return s
    }
}

/// The probe plan as data: a pure function of the options (RFC 5780 §4.3, §4.4, §4.5).
///
/// ```
/// mapping socket A:   I → primary ─► II → altIP:primaryPort ─► III → altIP:altPort ─► hairpin (C → A's mapped)
/// filtering socket B: I → primary ─► II change ip+port ─► III change port (only if II got nothing)
/// tcp:                Binding per port                      (all three lanes at once)
/// lifetime:           bisection trials on fresh sockets     (after the rest, only behind a NAT)
/// ```
public enum NATProbePlan {
    /// Every step the options ask for against `server`, lane by lane, in order.
    public static func steps(for options: NATProbeOptions, server: TransportAddress) -> [NATProbeStep] {
        var steps: [NATProbeStep] = [
            NATProbeStep(.mappingI, on: .mapping, to: .primary),
            NATProbeStep(.mappingII, on: .mapping, to: .alternateIPPrimaryPort,
                         requires: [.mappingAnswered, .otherAddressKnown, .natDetected]),
            NATProbeStep(.mappingIII, on: .mapping, to: .otherAddress,
                         requires: [.mappingAnswered, .otherAddressKnown, .natDetected, .mappingIIDiffered]),
        ]
        if options.hairpin {
            steps.append(NATProbeStep(.hairpin, on: .mapping, to: .ownMappedAddress, requires: [.mappingAnswered, .natDetected]))
        }
        steps += [
            NATProbeStep(.filteringI, on: .filtering, to: .primary),
            NATProbeStep(.filteringII, on: .filtering, to: .primary, changeIP: true, changePort: true,
                         requires: [.filteringAnswered]),
            NATProbeStep(.filteringIII, on: .filtering, to: .primary, changePort: true,
                         requires: [.filteringAnswered, .filteringIITimedOut]),
        ]
        for port in options.tcpPorts ?? [server.port] {
            steps.append(NATProbeStep(.tcp, on: .tcp, to: .tcpPort(port)))
        }
        if options.lifetime {
            steps.append(NATProbeStep(.lifetime, on: .lifetime, to: .primary, requires: [.mappingAnswered, .natDetected]))
        }
        return steps
    }

    /// The steps of one socket's lane, in order.
    public static func lane(_ socket: NATProbeSocket, of steps: [NATProbeStep]) -> [NATProbeStep] {
        steps.filter { $0.socket == socket }
    }

    /// Whether `step`'s requirements hold in what has been observed so far.
    public static func shouldRun(_ step: NATProbeStep, given observations: NATProbeObservations) -> Bool {
        step.requires.allSatisfy { requirement in
            switch requirement {
            case .mappingAnswered:
                return observations.answer(.mappingI)?.mapped != nil
            case .otherAddressKnown:
                return observations.answer(.mappingI)?.otherAddress != nil
            case .natDetected:
                return observations.natDetected == true
            case .mappingIIDiffered:
                guard let one = observations.answer(.mappingI)?.mapped,
                      let two = observations.answer(.mappingII)?.mapped else { return false }
                return one != two
            case .filteringAnswered:
                return observations.answer(.filteringI) != nil
            case .filteringIITimedOut:
                return observations.outcomes[.filteringII] == .timeout
            }
        }
    }
}
