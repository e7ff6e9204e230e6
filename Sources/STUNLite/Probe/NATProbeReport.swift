/// A tri-state test result: not tested, yes or no; JSON null, true or false (RFC 5780 §4 results).
public enum Tri: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The test did not run, or could not decide.
    case notTested
    /// The test ran and the answer is yes.
    case yes
    /// The test ran and the answer is no.
    case no

    /// `.yes` for true, `.no` for false, `.notTested` for nil.
    public init(_ value: Bool?) {
        switch value {
        case true?: self = .yes
        case false?: self = .no
        case nil: self = .notTested
        }
    }

    /// true, false, or nil when not tested.
    public var bool: Bool? {
        switch self {
        case .yes: true
        case .no: false
        case .notTested: nil
        }
    }

    /// Decodes null, true or false.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        self = container.decodeNil() ? .notTested : Tri(try container.decode(Bool.self))
    }

    /// Encodes null, true or false.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        if let bool { try container.encode(bool) } else { try container.encodeNil() }
    }

    /// `yes`, `no` or `not tested`.
    public var description: String {
        switch self {
        case .yes: "yes"
        case .no: "no"
        case .notTested: "not tested"
        }
    }
}

/// How a NAT's mapping or filtering depends on the remote endpoint, as observed (RFC 4787 §4.1, §5; RFC 5780 §4.3-4.4).
public enum NATBehaviour: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    /// No NAT in the path: the mapped address is the local address (RFC 5780 §4.3, test I).
    case none
    /// The same for every remote endpoint (RFC 4787 §4.1 endpoint-independent).
    case endpointIndependent = "endpoint-independent"
    /// Differs per remote IP address (RFC 4787 §4.1 address-dependent).
    case addressDependent = "address-dependent"
    /// Differs per remote IP address and port (RFC 4787 §4.1 address-and-port-dependent).
    case addressAndPortDependent = "address-and-port-dependent"
    /// The tests could not decide (UDP blocked, no RFC 5780 support, contradictory answers).
    case unknown

    /// The kebab-case name.
    public var description: String { rawValue }
}

/// The classic NAT type names (RFC 3489 §5 vocabulary), derived from mapping and filtering (RFC 5780 §4).
public enum NATType: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    /// No NAT and no filtering: the host is reachable at its own address (RFC 3489 "open internet").
    case open
    /// No NAT, but inbound UDP is filtered by a firewall (RFC 3489 "symmetric UDP firewall").
    case firewalled
    /// Endpoint-independent mapping and filtering (RFC 4787 §4.1, §5).
    case fullCone = "full-cone"
    /// Endpoint-independent mapping, address-dependent filtering (RFC 4787 §5).
    case restrictedCone = "restricted-cone"
    /// Endpoint-independent mapping, address-and-port-dependent filtering (RFC 4787 §5).
    case portRestrictedCone = "port-restricted-cone"
    /// Address-dependent or address-and-port-dependent mapping (RFC 4787 §4.1).
    case symmetric
    /// No UDP answer from the server at all (RFC 5780 §4.3 test I timed out).
    case udpBlocked = "udp-blocked"
    /// Not enough answers to name a type.
    case unknown

    /// The kebab-case name.
    public var description: String { rawValue }
}

/// Whether a STUN Binding over TCP reached one server port (RFC 8489 §6.2.2).
public struct NATProbeTCPResult: Sendable, Hashable, Codable {
    /// The server's TCP port.
    public var port: UInt16
    /// Whether a Binding success response came back.
    public var ok: Bool
    /// Round trip of the Binding transaction (including the handshake), when it worked.
    public var latencyMs: Double?

    /// Creates a result.
    public init(port: UInt16, ok: Bool, latencyMs: Double? = nil) {
        self.port = port
        self.ok = ok
        self.latencyMs = latencyMs
    }
}

/// What `trav probe` found out about the path to a STUN server (RFC 5780 §4 behaviour discovery).
public struct NATProbeReport: Sendable, Hashable, Codable {
    /// The server probed (primary address).
    public var server: String
    /// Whether UDP Binding requests got answers (RFC 5780 §4.3 test I).
    public var udp: Tri
    /// The local address of the mapping test socket.
    public var localAddress: TransportAddress?
    /// The server-reflexive address of the mapping test socket (RFC 8489 §14.2 XOR-MAPPED-ADDRESS).
    public var mappedAddress: TransportAddress?
    /// Mapping behaviour (RFC 5780 §4.3).
    public var mapping: NATBehaviour
    /// Filtering behaviour (RFC 5780 §4.4).
    public var filtering: NATBehaviour
    /// The classic type derived from mapping and filtering.
    public var natType: NATType
    /// Whether the NAT kept our local port as the mapped port (RFC 4787 §4.1 port preservation).
    public var portPreservation: Tri
    /// Whether a datagram to our own mapped address came back to us (RFC 5780 §4.5, RFC 4787 §6).
    public var hairpinning: Tri
    /// Whether a STUN Binding over TCP worked on any probed port (RFC 8489 §6.2.2).
    public var tcp: Tri
    /// Each TCP port probed.
    public var tcpPorts: [NATProbeTCPResult]
    /// Whether STUN over TLS worked (RFC 8489 §6.2.3); not tested unless a TLS port is given.
    public var tls: Tri
    /// Round trip of the first UDP Binding transaction, in milliseconds.
    public var latencyMs: Double?
    /// Whether the server honoured CHANGE-REQUEST (RFC 5780 §7.2).
    public var changeRequestSupported: Tri
    /// The longest idle time an unused mapping survived, in seconds (RFC 4787 §4.3), when measured.
    public var bindingLifetimeSeconds: Double?
    /// The shortest idle time after which the mapping was gone, in seconds, when one was seen.
    public var bindingExpiredAfterSeconds: Double?
    /// Observations and warnings for people.
    public var notes: [String]
    /// One line on what this means for connecting.
    public var advice: String

    /// Creates a report; everything not given is not tested or unknown.
    public init(server: String, udp: Tri = .notTested, localAddress: TransportAddress? = nil,
                mappedAddress: TransportAddress? = nil, mapping: NATBehaviour = .unknown,
                filtering: NATBehaviour = .unknown, natType: NATType = .unknown, portPreservation: Tri = .notTested,
                hairpinning: Tri = .notTested, tcp: Tri = .notTested, tcpPorts: [NATProbeTCPResult] = [],
                tls: Tri = .notTested, latencyMs: Double? = nil, changeRequestSupported: Tri = .notTested,
                bindingLifetimeSeconds: Double? = nil, bindingExpiredAfterSeconds: Double? = nil,
                notes: [String] = [], advice: String = "") {
        self.server = server
        self.udp = udp
        self.localAddress = localAddress
        self.mappedAddress = mappedAddress
        self.mapping = mapping
        self.filtering = filtering
        self.natType = natType
        self.portPreservation = portPreservation
        self.hairpinning = hairpinning
        self.tcp = tcp
        self.tcpPorts = tcpPorts
        self.tls = tls
        self.latencyMs = latencyMs
        self.changeRequestSupported = changeRequestSupported
        self.bindingLifetimeSeconds = bindingLifetimeSeconds
        self.bindingExpiredAfterSeconds = bindingExpiredAfterSeconds
        self.notes = notes
        self.advice = advice
    }

    private enum CodingKeys: String, CodingKey {
        case server, udp, localAddress, mappedAddress, mapping, filtering, natType, portPreservation, hairpinning,
             tcp, tcpPorts, tls, latencyMs, changeRequestSupported, bindingLifetimeSeconds,
             bindingExpiredAfterSeconds, notes, advice
    }

    /// Encodes every key, with null for what was not tested (so consumers see the whole shape).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(server, forKey: .server)
        try c.encode(udp, forKey: .udp)
        try c.encode(localAddress, forKey: .localAddress)
        try c.encode(mappedAddress, forKey: .mappedAddress)
        try c.encode(mapping, forKey: .mapping)
        try c.encode(filtering, forKey: .filtering)
        try c.encode(natType, forKey: .natType)
        try c.encode(portPreservation, forKey: .portPreservation)
        try c.encode(hairpinning, forKey: .hairpinning)
        try c.encode(tcp, forKey: .tcp)
        try c.encode(tcpPorts, forKey: .tcpPorts)
        try c.encode(tls, forKey: .tls)
        try c.encode(latencyMs, forKey: .latencyMs)
        try c.encode(changeRequestSupported, forKey: .changeRequestSupported)
        try c.encode(bindingLifetimeSeconds, forKey: .bindingLifetimeSeconds)
        try c.encode(bindingExpiredAfterSeconds, forKey: .bindingExpiredAfterSeconds)
        try c.encode(notes, forKey: .notes)
        try c.encode(advice, forKey: .advice)
    }
}
