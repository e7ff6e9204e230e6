import STUNLite
import Traversal

/// Which protocol asked the router for a port mapping; raw values are the names in reports and CLI flags.
public enum PortMappingProtocol: String, Sendable, Hashable, CaseIterable, Codable {
    /// Port Control Protocol, RFC 6887 (MAP opcode).
    case pcp
    /// NAT Port Mapping Protocol, RFC 6886.
    case natPMP = "nat-pmp"
    /// UPnP Internet Gateway Device: WANIPConnection / WANPPPConnection over SOAP.
    case upnpIGD = "upnp-igd"
}

/// Why a port-mapping exchange failed; decode errors name the field and its offset.
public struct PortMappingError: CodedError, Hashable {
    /// The class of failure.
    public struct Code: Traversal.ErrorCode {
        /// The stable name.
        public let name: String
        /// An answer too short, too long or with a field out of range.
        public static let malformed = Code(name: "malformed")
        /// An answer to some other request (opcode, nonce, port or protocol differ).
        public static let mismatched = Code(name: "mismatched")
        /// The gateway answered with a result code other than success.
        public static let refused = Code(name: "refused")
        /// The gateway does not speak this version of the protocol (RFC 6886 §3.5, RFC 6887 §9).
        public static let unsupportedVersion = Code(name: "unsupported-version")
        /// Nothing answered in time.
        public static let noAnswer = Code(name: "no-answer")
        /// No default gateway, or no LAN address toward it.
        public static let noGateway = Code(name: "no-gateway")
        /// A UPnP answer pointed somewhere we do not go (another host, a redirect).
        public static let offLAN = Code(name: "off-lan")
        /// The mapping lapsed: renewals went unanswered until its lifetime ran out.
        public static let expired = Code(name: "expired")
    }

    /// What went wrong.
    public let code: Code
    /// Detail for people: the field and offset for decode errors.
    public let detail: String

    /// Creates an error.
    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }
}

/// Reads big-endian fields of an answer, throwing ``PortMappingError/Code/malformed`` with the field and offset.
struct WireReader {
    let bytes: [UInt8]
    let what: String

    func u8(_ offset: Int, _ field: String) throws -> UInt8 {
        guard offset < bytes.count else { throw PortMappingError(.malformed, "\(what): \(field) at offset \(offset) past the end (\(bytes.count) bytes)") }
        return bytes[offset]
    }

    func u16(_ offset: Int, _ field: String) throws -> UInt16 {
        UInt16(try u8(offset, field)) << 8 | UInt16(try u8(offset + 1, field))
    }

    func u32(_ offset: Int, _ field: String) throws -> UInt32 {
        UInt32(try u16(offset, field)) << 16 | UInt32(try u16(offset + 2, field))
    }

    func slice(_ offset: Int, _ count: Int, _ field: String) throws -> [UInt8] {
        guard offset + count <= bytes.count else {
            throw PortMappingError(.malformed, "\(what): \(field) at offset \(offset) needs \(count) bytes, \(bytes.count - offset) left")
        }
        return Array(bytes[offset..<offset + count])
    }
}

extension FixedWidthInteger {
    /// The value's bytes, most significant first.
    var bigEndianBytes: [UInt8] { withUnsafeBytes(of: self.bigEndian) { Array($0) } }
}

/// A mapping the gateway granted: the public address, for how long, and the gateway's epoch.
public struct GrantedMapping: Sendable, Hashable {
    /// The external (public) address peers reach us at.
    public var external: TransportAddress
    /// Seconds the gateway keeps the mapping.
    public var lifetime: UInt32
    /// Seconds since the gateway's state began (NAT-PMP and PCP), for detecting lost state; nil for UPnP.
    public var epoch: UInt32?

    /// Creates a granted mapping.
    public init(external: TransportAddress, lifetime: UInt32, epoch: UInt32?) {
        self.external = external
        self.lifetime = lifetime
        self.epoch = epoch
    }
}

// MARK: NAT-PMP

/// NAT-PMP messages, RFC 6886 §3.2–§3.5 (UDP mappings only).
///
/// ```
///  client:5351 ◄── gateway            request: version 0, opcode 0 (address) / 1 (map UDP)
///  ──► [0, 0]                         ◄── [0, 128, result, epoch, external IPv4]         12 bytes
///  ──► [0, 1, 0, 0, int, ext, life]   ◄── [0, 129, result, epoch, int, ext, life]        16 bytes
/// ```
public enum NATPMPMessage {
    /// The server port, RFC 6886 §3.
    public static let port: UInt16 = 5351
    /// The only version, RFC 6886 §3.
    public static let version: UInt8 = 0
    /// Largest answer accepted: a map answer is 16 bytes (RFC 6886 §3.3); anything longer is not ours.
    public static let maxAnswer = 16

    /// Result codes, RFC 6886 §3.5.
    public static let resultNames: [UInt16: String] = [
        1: "unsupported version", 2: "not authorized / refused", 3: "network failure",
        4: "out of resources", 5: "unsupported opcode",
    ]

    /// The external address request, RFC 6886 §3.2.
    public static func externalAddressRequest() -> [UInt8] { [version, 0] }

    /// A UDP mapping request, RFC 6886 §3.3; lifetime 0 with suggested port 0 releases it (§3.4).
    public static func mapRequest(internalPort: UInt16, suggestedExternalPort: UInt16, lifetime: UInt32) -> [UInt8] {
        [version, 1, 0, 0] + internalPort.bigEndianBytes + suggestedExternalPort.bigEndianBytes + lifetime.bigEndianBytes
    }

    /// Checks the common header of an answer to `opcode`, RFC 6886 §3.5; returns the epoch.
    static func header(_ r: WireReader, opcode: UInt8, length: Int) throws -> UInt32 {
        guard r.bytes.count <= maxAnswer else { throw PortMappingError(.malformed, "\(r.what): \(r.bytes.count) bytes, at most \(maxAnswer)") }
        let v = try r.u8(0, "version")
        let op = try r.u8(1, "opcode")
        let result = try r.u16(2, "result code")
        if v != version { throw PortMappingError(.unsupportedVersion, "\(r.what): version \(v) at offset 0") }
        guard op == 128 + opcode else { throw PortMappingError(.mismatched, "\(r.what): opcode \(op) at offset 1, expected \(128 + opcode)") }
        if result == 1 { throw PortMappingError(.unsupportedVersion, "\(r.what): result 1 (unsupported version)") }
        guard result == 0 else {
            throw PortMappingError(.refused, "\(r.what): result \(result) (\(resultNames[result] ?? "unknown"))")
        }
        guard r.bytes.count == length else { throw PortMappingError(.malformed, "\(r.what): \(r.bytes.count) bytes, expected \(length)") }
        return try r.u32(4, "epoch")
    }

    /// Decodes an external address answer, RFC 6886 §3.2: the address and the epoch.
    public static func decodeExternalAddress(_ bytes: [UInt8]) throws -> (address: IPAddress, epoch: UInt32) {
        let r = WireReader(bytes: bytes, what: "NAT-PMP address answer")
        let epoch = try header(r, opcode: 0, length: 12)
        return (.v4(try r.u32(8, "external address")), epoch)
    }

    /// Decodes a UDP mapping answer for `internalPort`, RFC 6886 §3.3; `external` is the gateway's address.
    public static func decodeMap(_ bytes: [UInt8], internalPort: UInt16, externalIP: IPAddress) throws -> GrantedMapping {
        let r = WireReader(bytes: bytes, what: "NAT-PMP map answer")
        let epoch = try header(r, opcode: 1, length: 16)
        let inner = try r.u16(8, "internal port")
        guard inner == internalPort else { throw PortMappingError(.mismatched, "NAT-PMP map answer: internal port \(inner) at offset 8, asked \(internalPort)") }
        let external = try r.u16(10, "mapped external port")
        let lifetime = try r.u32(12, "lifetime")
        guard external != 0 || lifetime == 0 else { throw PortMappingError(.malformed, "NAT-PMP map answer: external port 0 at offset 10 with lifetime \(lifetime)") }
        return GrantedMapping(external: TransportAddress(ip: externalIP, port: external), lifetime: lifetime, epoch: epoch)
    }
}

// MARK: PCP

/// PCP MAP messages, RFC 6887 §7 (header) and §11.1 (MAP opcode), for UDP over IPv4.
///
/// ```
///  request  (60 bytes): 2 | R=0,op=1 | reserved(2) | lifetime(4) | client IP(16) | nonce(12) | proto=17 |
///                       reserved(3) | internal port(2) | suggested external port(2) | suggested external IP(16)
///  response (60 bytes): 2 | R=1,op=1 | reserved | result | lifetime(4) | epoch(4) | reserved(12) | nonce(12) |
///                       proto | reserved(3) | internal port(2) | assigned external port(2) | assigned external IP(16)
/// ```
public enum PCPMessage {
    /// The server port, RFC 6887 §19.1.
    public static let port: UInt16 = 5351
    /// This version, RFC 6887 §7.
    public static let version: UInt8 = 2
    /// The MAP opcode, RFC 6887 §19.2.
    public static let opcodeMap: UInt8 = 1
    /// IANA protocol number for UDP.
    public static let udp: UInt8 = 17
    /// Largest PCP message, RFC 6887 §7 (1100 bytes): longer answers are dropped unread.
    public static let maxMessage = 1100
    /// A MAP message without options: 24-byte header + 36-byte opcode part.
    public static let mapLength = 60

    /// Result codes, RFC 6887 §7.4.
    public static let resultNames: [UInt8: String] = [
        1: "UNSUPP_VERSION", 2: "NOT_AUTHORIZED", 3: "MALFORMED_REQUEST", 4: "UNSUPP_OPCODE", 5: "UNSUPP_OPTION",
        6: "MALFORMED_OPTION", 7: "NETWORK_FAILURE", 8: "NO_RESOURCES", 9: "UNSUPP_PROTOCOL", 10: "USER_EX_QUOTA",
        11: "CANNOT_PROVIDE_EXTERNAL", 12: "ADDRESS_MISMATCH", 13: "EXCESSIVE_REMOTE_PEERS",
    ]

    /// An IPv4 address as PCP carries it: IPv4-mapped IPv6, RFC 6887 §5.
    static func mapped(_ ip: IPAddress) -> [UInt8] {
        switch ip {
        case .v4(let a): return [UInt8](repeating: 0, count: 10) + [0xff, 0xff] + a.bigEndianBytes
        case .v6: return ip.bytes
        }
    }

    /// A MAP request for UDP, RFC 6887 §11.1; lifetime 0 deletes the mapping (§15).
    public static func mapRequest(client: IPAddress, nonce: [UInt8], internalPort: UInt16, suggestedExternal: TransportAddress?,
                                  lifetime: UInt32) -> [UInt8] {
        precondition(nonce.count == 12, "a PCP nonce is 96 bits")
        var out: [UInt8] = [version, opcodeMap, 0, 0] + lifetime.bigEndianBytes + mapped(client)
        out += nonce + [udp, 0, 0, 0] + internalPort.bigEndianBytes
        out += (suggestedExternal?.port ?? 0).bigEndianBytes
        out += suggestedExternal.map { mapped($0.ip) } ?? [UInt8](repeating: 0, count: 16)
        return out
    }

    /// Checks a response header to `opcode`, RFC 6887 §7.2: version 2, R set, the opcode; returns the
    /// reader, result code, lifetime and epoch. Result codes are the caller's to judge.
    static func responseHeader(_ bytes: [UInt8], opcode: UInt8, what: String) throws
        -> (reader: WireReader, result: UInt8, lifetime: UInt32, epoch: UInt32) {
        let r = WireReader(bytes: bytes, what: what)
        guard bytes.count <= maxMessage else { throw PortMappingError(.malformed, "\(what): \(bytes.count) bytes, at most \(maxMessage)") }
        let v = try r.u8(0, "version")
        // A NAT-PMP-only gateway answers a PCP request with a NAT-PMP "unsupported version" (RFC 6887 §9).
        if v != version { throw PortMappingError(.unsupportedVersion, "\(what): version \(v) at offset 0") }
        let op = try r.u8(1, "R/opcode")
        guard op == 0x80 | opcode else { throw PortMappingError(.mismatched, "\(what): R/opcode 0x\(String(op, radix: 16)) at offset 1") }
        return (r, try r.u8(3, "result code"), try r.u32(4, "lifetime"), try r.u32(8, "epoch"))
    }

    /// Decodes a MAP response to our request (same nonce and internal port), RFC 6887 §7.2 and §11.1.
    public static func decodeMap(_ bytes: [UInt8], nonce: [UInt8], internalPort: UInt16) throws -> GrantedMapping {
        let (r, result, lifetime, epoch) = try responseHeader(bytes, opcode: opcodeMap, what: "PCP MAP response")
        guard bytes.count >= mapLength, bytes.count % 4 == 0 else {
            throw PortMappingError(.malformed, "PCP MAP response: \(bytes.count) bytes, at least \(mapLength) and a multiple of 4")
        }
        guard try r.slice(24, 12, "nonce") == nonce else { throw PortMappingError(.mismatched, "PCP MAP response: nonce at offset 24 is not ours") }
        if result == 1 { throw PortMappingError(.unsupportedVersion, "PCP MAP response: result 1 (UNSUPP_VERSION)") }
        guard result == 0 else {
            throw PortMappingError(.refused, "PCP MAP response: result \(result) (\(resultNames[result] ?? "unknown")), lifetime \(lifetime)")
        }
        let proto = try r.u8(36, "protocol")
        guard proto == udp else { throw PortMappingError(.mismatched, "PCP MAP response: protocol \(proto) at offset 36, asked \(udp)") }
        let inner = try r.u16(40, "internal port")
        guard inner == internalPort else { throw PortMappingError(.mismatched, "PCP MAP response: internal port \(inner) at offset 40, asked \(internalPort)") }
        let port = try r.u16(42, "assigned external port")
        let raw = try r.slice(44, 16, "assigned external address")
        let ip: IPAddress? = raw[0..<12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff][...] ? IPAddress(bytes: raw[12...]) : IPAddress(bytes: raw)
        guard let ip else { throw PortMappingError(.malformed, "PCP MAP response: assigned external address at offset 44") }
        guard port != 0 || lifetime == 0 else { throw PortMappingError(.malformed, "PCP MAP response: external port 0 at offset 42 with lifetime \(lifetime)") }
        return GrantedMapping(external: TransportAddress(ip: ip, port: port), lifetime: lifetime, epoch: epoch)
    }

    /// Whether the server lost its state since the previous answer, RFC 6887 §8.5 (RFC 6886 §3.6
    /// alike): its epoch went back by more than one second, or the two clocks advanced by amounts
    /// that differ by more than 1/16 plus 2 seconds.
    public static func epochSaysStateLost(previous: UInt32, previousAt: ContinuousClock.Instant,
                                          current: UInt32, now: ContinuousClock.Instant) -> Bool {
        if UInt64(current) + 1 < UInt64(previous) { return true }
        let client = max(0, Int64((now - previousAt).components.seconds))
        let server = max(0, Int64(current) - Int64(previous))
        return client + 2 < server - server / 16 || server + 2 < client - client / 16
    }
}
