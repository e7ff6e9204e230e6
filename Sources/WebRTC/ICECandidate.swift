/// One ICE candidate as SDP carries it (RFC 8839 §5.1), e.g.
/// `candidate:1 1 udp 2122260223 192.0.2.7 54400 typ host` or
/// `candidate:2 1 udp 1686052607 203.0.113.9 61000 typ srflx raddr 192.0.2.7 rport 54400`.
///
/// The connection address may be an mDNS name (`<uuid>.local`, which browsers use to hide host
/// addresses); it is kept as text and resolved, or not, by whoever uses the candidate.
public struct ICECandidate: Sendable, Hashable, CustomStringConvertible {
    /// The candidate's type (RFC 8445 §5.1.1).
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// An address of a local interface.
        case host
        /// The address a STUN server saw (server reflexive).
        case srflx
        /// An address learnt from a peer's check (peer reflexive, RFC 8445 §7.2.5.3.1).
        case prflx
        /// An address on a TURN relay.
        case relay

        /// The type preference of RFC 8445 §5.1.2.2's recommended values.
        public var typePreference: UInt32 {
            switch self {
            case .host: 126
            case .prflx: 110
            case .srflx: 100
            case .relay: 0
            }
        }
    }

    /// Longest foundation (RFC 8839 §5.1: 1–32 ice-chars).
    public static let maxFoundationLength = 32
    /// Longest connection address accepted (an IPv6 literal or an mDNS name).
    public static let maxAddressLength = 253

    /// Groups candidates of the same type, base and server (RFC 8445 §5.1.1.3).
    public var foundation: String
    /// 1 (RTP, or the only component of a data channel) or 2 (RTCP).
    public var component: Int
    /// `udp` or `tcp` (lower-cased).
    public var transport: String
    /// The candidate's priority (RFC 8445 §5.1.2).
    public var priority: UInt32
    /// An IP address literal or an mDNS host name.
    public var address: String
    /// The port.
    public var port: Int
    /// The type.
    public var kind: Kind
    /// The related address and port (the base of a reflexive or relayed candidate), if given.
    public var related: (address: String, port: Int)?
    /// `active`, `passive` or `so` for TCP candidates (RFC 6544 §4.5).
    public var tcpType: String?

    /// A candidate with these fields.
    public init(foundation: String, component: Int = 1, transport: String = "udp", priority: UInt32, address: String, port: Int,
                kind: Kind, related: (address: String, port: Int)? = nil, tcpType: String? = nil) {
        self.foundation = foundation
        self.component = component
        self.transport = transport
        self.priority = priority
        self.address = address
        self.port = port
        self.kind = kind
        self.related = related
        self.tcpType = tcpType
    }

    /// RFC 8445 §5.1.2.1: `2^24·type preference + 2^8·local preference + (256 − component)`, with `kind`'s recommended
    /// type preference.
    public static func priority(kind: Kind, localPreference: UInt32 = 65535, component: Int = 1) -> UInt32 {
        priority(typePreference: kind.typePreference, localPreference: localPreference, component: component)
    }

    /// RFC 8445 §5.1.2.1's formula with a type preference of the agent's choosing (0–126; §5.1.2.2 only recommends values).
    public static func priority(typePreference: UInt32, localPreference: UInt32 = 65535, component: Int = 1) -> UInt32 {
        (min(typePreference, 126) << 24) + (min(localPreference, 65535) << 8) + UInt32(256 - max(1, min(component, 256)))
    }

    /// Parses the attribute value `candidate:…` (with or without the `a=` and `candidate:` prefixes).
    ///
    /// - Throws: ``SDPError`` `.invalidCandidate` naming what is wrong.
    public init(parsing text: Substring) throws {
        var value = text
        if value.hasPrefix("a=") { value = value.dropFirst(2) }
        if value.hasPrefix("candidate:") { value = value.dropFirst("candidate:".count) }
        let fields = value.split(separator: " ", omittingEmptySubsequences: true)
        func fail(_ why: String) -> SDPError { SDPError(.invalidCandidate, why) }
        guard fields.count >= 8, fields.count <= 32 else { throw fail("\(fields.count) fields") }
        let foundation = String(fields[0])
        guard (1...Self.maxFoundationLength).contains(foundation.utf8.count), foundation.utf8.allSatisfy(SDPError.isICEChar) else {
            throw fail("foundation")
        }
        guard let component = Int(fields[1]), (1...256).contains(component) else { throw fail("component") }
        let transport = fields[2].lowercased()
        guard transport == "udp" || transport == "tcp" else { throw fail("transport \(transport.prefix(16))") }
        guard let priority = UInt32(fields[3]), priority > 0 else { throw fail("priority") }
        let address = String(fields[4])
        guard (1...Self.maxAddressLength).contains(address.utf8.count),
              address.utf8.allSatisfy({ SDPError.isICEChar($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "-") })
        else { throw fail("connection address") }
        guard let port = Int(fields[5]), (0...65535).contains(port) else { throw fail("port") }
        guard fields[6] == "typ", let kind = Kind(rawValue: String(fields[7])) else { throw fail("type") }
        self.init(foundation: foundation, component: component, transport: transport, priority: priority,
                  address: address, port: port, kind: kind)
        // Extensions come in name/value pairs (RFC 8839 §5.1: extension-att-name SP extension-att-value).
        var i = 8
        var raddr: String?
        var rport: Int?
        while i + 1 < fields.count {
            let (name, v) = (fields[i], fields[i + 1])
            switch name {
            case "raddr": raddr = String(v)
            case "rport": rport = Int(v)
            case "tcptype": tcpType = String(v.prefix(8))
            default: break  // generation, ufrag, network-id, network-cost: not needed here
            }
            i += 2
        }
        if let raddr, let rport, (0...65535).contains(rport), raddr.utf8.count <= Self.maxAddressLength { related = (raddr, rport) }
    }

    /// The attribute value, without `a=`: `candidate:…`.
    public var description: String {
        var text = "candidate:\(foundation) \(component) \(transport) \(priority) \(address) \(port) typ \(kind.rawValue)"
        if let related { text += " raddr \(related.address) rport \(related.port)" }
        if let tcpType { text += " tcptype \(tcpType)" }
        return text
    }

    /// Equal when every field is (the related address compared by value).
    public static func == (a: ICECandidate, b: ICECandidate) -> Bool {
        a.foundation == b.foundation && a.component == b.component && a.transport == b.transport && a.priority == b.priority
            && a.address == b.address && a.port == b.port && a.kind == b.kind && a.tcpType == b.tcpType
            && a.related?.address == b.related?.address && a.related?.port == b.related?.port
    }

    /// Hashes the fields that identify the candidate.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(foundation)
        hasher.combine(component)
        hasher.combine(transport)
        hasher.combine(address)
        hasher.combine(port)
    }
}
