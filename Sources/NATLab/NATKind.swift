/// How a NAT's mapping or filtering depends on the remote endpoint (RFC 4787 §4.1, §5).
public enum LabDependency: String, Sendable, CaseIterable {
    /// Endpoint-independent: the same for every remote endpoint.
    case endpointIndependent = "endpoint-independent"
    /// Address-dependent: differs per remote IP address.
    case addressDependent = "address-dependent"
    /// Address-and-port-dependent: differs per remote IP address and port.
    case addressAndPortDependent = "address-and-port-dependent"
}

/// A site's NAT behaviour in the lab; raw values are the kebab-case names `natlab.sh` takes.
public enum NATKind: String, Sendable, CaseIterable, CustomStringConvertible {
    /// No NAT: hosts have public addresses routed to them.
    case open
    /// Endpoint-independent mapping and filtering (RFC 4787 "full cone").
    case fullCone = "full-cone"
    /// Endpoint-independent mapping, address-dependent filtering.
    case restrictedCone = "restricted-cone"
    /// Endpoint-independent mapping, address-and-port-dependent filtering (plain Linux masquerade).
    case portRestrictedCone = "port-restricted-cone"
    /// Address-and-port-dependent mapping (masquerade fully-random) and filtering.
    case symmetric
    /// A NAT that drops all forwarded UDP.
    case udpBlocked = "udp-blocked"
    /// A NAT that lets only TCP to port 443 out.
    case tcp443Only = "tcp443-only"
    /// A port-restricted home NAT behind an endpoint-independent carrier NAT on 100.64.0.0/10.
    case doubleNAT = "double-nat"

    /// The kebab-case name.
    public var description: String { rawValue }

    /// Whether UDP to the internet works at all from behind this kind.
    public var allowsUDP: Bool { self != .udpBlocked && self != .tcp443Only }

    /// The UDP mapping behaviour this kind claims; nil when UDP does not get out.
    public var claimedMapping: LabDependency? {
        switch self {
        case .open, .fullCone, .restrictedCone, .portRestrictedCone, .doubleNAT: .endpointIndependent
        case .symmetric: .addressAndPortDependent
        case .udpBlocked, .tcp443Only: nil
        }
    }

    /// The UDP filtering behaviour this kind claims; nil when UDP does not get out.
    public var claimedFiltering: LabDependency? {
        switch self {
        case .open, .fullCone: .endpointIndependent
        case .restrictedCone: .addressDependent
        case .portRestrictedCone, .symmetric, .doubleNAT: .addressAndPortDependent
        case .udpBlocked, .tcp443Only: nil
        }
    }
}
