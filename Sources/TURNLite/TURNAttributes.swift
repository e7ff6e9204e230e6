import STUNLite

// MARK: - Methods

extension STUNMethod {
    /// Allocate (0x003): create an allocation on the server (RFC 8656 §7, §18.1).
    public static let allocate = STUNMethod(rawValue: 0x003)
    /// Refresh (0x004): change an allocation's lifetime or delete it (RFC 8656 §8, §18.1).
    public static let refresh = STUNMethod(rawValue: 0x004)
    /// Send (0x006), an indication: data from client to peer (RFC 8656 §11.1, §18.1).
    public static let send = STUNMethod(rawValue: 0x006)
    /// Data (0x007), an indication: data from peer to client (RFC 8656 §11.4, §18.1).
    public static let data = STUNMethod(rawValue: 0x007)
    /// CreatePermission (0x008): install or refresh permissions (RFC 8656 §10, §18.1).
    public static let createPermission = STUNMethod(rawValue: 0x008)
    /// ChannelBind (0x009): bind a channel number to a peer (RFC 8656 §12, §18.1).
    public static let channelBind = STUNMethod(rawValue: 0x009)
}

// MARK: - Attribute types

extension STUNAttributeType {
    /// CHANNEL-NUMBER (RFC 8656 §18.1).
    public static let channelNumber = STUNAttributeType(0x000C)
    /// LIFETIME (RFC 8656 §18.2).
    public static let lifetime = STUNAttributeType(0x000D)
    /// XOR-PEER-ADDRESS (RFC 8656 §18.3).
    public static let xorPeerAddress = STUNAttributeType(0x0012)
    /// DATA (RFC 8656 §18.4).
    public static let data = STUNAttributeType(0x0013)
    /// XOR-RELAYED-ADDRESS (RFC 8656 §18.5).
    public static let xorRelayedAddress = STUNAttributeType(0x0016)
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6).
    public static let requestedAddressFamily = STUNAttributeType(0x0017)
    /// EVEN-PORT (RFC 8656 §18.7).
    public static let evenPort = STUNAttributeType(0x0018)
    /// REQUESTED-TRANSPORT (RFC 8656 §18.8).
    public static let requestedTransport = STUNAttributeType(0x0019)
    /// DONT-FRAGMENT (RFC 8656 §18.9).
    public static let dontFragment = STUNAttributeType(0x001A)
    /// RESERVATION-TOKEN (RFC 8656 §18.10).
    public static let reservationToken = STUNAttributeType(0x0022)

    /// Every type a TURN server built on this module understands: STUN's and TURN's (RFC 8656 §18).
    public static let turnKnown: Set<STUNAttributeType> = stunKnown.union([
        .channelNumber, .lifetime, .xorPeerAddress, .data, .xorRelayedAddress, .requestedAddressFamily,
        .evenPort, .requestedTransport, .dontFragment, .reservationToken,
    ])
}

// MARK: - Attribute values

/// CHANNEL-NUMBER: a 16-bit channel number followed by 16 reserved bits (RFC 8656 §18.1).
public struct ChannelNumber: STUNAttributeValue, Hashable {
    /// CHANNEL-NUMBER.
    public static let attributeType = STUNAttributeType.channelNumber
    /// Channel numbers a client may bind: 0x4000 through 0x4FFF (RFC 8656 §12).
    public static let validRange: ClosedRange<UInt16> = 0x4000...0x4FFF
    /// The channel number (not range-checked here: the server answers 400 for numbers outside ``validRange``).
    public var number: UInt16
    /// Wraps a number.
    public init(_ number: UInt16) { self.number = number }
    /// Decodes 4 bytes; the reserved half is ignored.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard value.count == 4 else { throw STUNDecodingError(.invalidAttributeLength, detail: "\(value.count) bytes, want 4") }
        number = TURNBytes.uint16(value, 0)
    }
    /// Encodes the number and two zero bytes.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { TURNBytes.of(number) + [0, 0] }
}

/// LIFETIME: seconds until the allocation expires (RFC 8656 §18.2).
public struct Lifetime: STUNAttributeValue, Hashable {
    /// LIFETIME.
    public static let attributeType = STUNAttributeType.lifetime
    /// The lifetime in seconds.
    public var seconds: UInt32
    /// Wraps seconds.
    public init(seconds: UInt32) { self.seconds = seconds }
    /// Decodes 4 bytes.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard value.count == 4 else { throw STUNDecodingError(.invalidAttributeLength, detail: "\(value.count) bytes, want 4") }
        seconds = TURNBytes.uint32(value, 0)
    }
    /// Encodes the seconds.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { TURNBytes.of(seconds) }
}

/// XOR-PEER-ADDRESS: a peer's transport address, XORed like XOR-MAPPED-ADDRESS (RFC 8656 §18.3).
public struct XORPeerAddress: STUNAddressAttribute, Hashable {
    /// XOR-PEER-ADDRESS.
    public static let attributeType = STUNAttributeType.xorPeerAddress
    /// XORed.
    public static let isXORed = true
    /// The peer's address.
    public var address: TransportAddress
    /// Wraps an address.
    public init(_ address: TransportAddress) { self.address = address }
}

/// XOR-RELAYED-ADDRESS: the relayed transport address the server allocated (RFC 8656 §18.5).
public struct XORRelayedAddress: STUNAddressAttribute, Hashable {
    /// XOR-RELAYED-ADDRESS.
    public static let attributeType = STUNAttributeType.xorRelayedAddress
    /// XORed.
    public static let isXORed = true
    /// The relayed address.
    public var address: TransportAddress
    /// Wraps an address.
    public init(_ address: TransportAddress) { self.address = address }
}

/// DATA: the application payload of a Send or Data indication (RFC 8656 §18.4).
public struct DataAttribute: STUNAttributeValue, Hashable {
    /// DATA.
    public static let attributeType = STUNAttributeType.data
    /// The payload.
    public var bytes: [UInt8]
    /// Wraps a payload.
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    /// Takes the value as it is.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        bytes = Array(value)
    }
    /// The payload.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { bytes }
}

/// The address family a TURN attribute names: 0x01 IPv4, 0x02 IPv6 (RFC 8656 §18.6).
public enum TURNAddressFamily: UInt8, Sendable, Hashable {
    /// IPv4 (0x01).
    case ipv4 = 0x01
    /// IPv6 (0x02).
    case ipv6 = 0x02

    /// The family of an address (RFC 8656 §18.6).
    public init(of ip: IPAddress) { self = ip.isIPv4 ? .ipv4 : .ipv6 }
}

/// REQUESTED-ADDRESS-FAMILY: the family the client wants its relayed address in (RFC 8656 §18.6).
public struct RequestedAddressFamily: STUNAttributeValue, Hashable {
    /// REQUESTED-ADDRESS-FAMILY.
    public static let attributeType = STUNAttributeType.requestedAddressFamily
    /// The family asked for; `nil` for a number the RFC does not define (the server answers 440).
    public var family: TURNAddressFamily?
    /// The raw family number.
    public var rawFamily: UInt8
    /// Wraps a family.
    public init(_ family: TURNAddressFamily) {
        self.family = family
        self.rawFamily = family.rawValue
    }
    /// Decodes 4 bytes: family and 24 reserved bits.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard value.count == 4 else { throw STUNDecodingError(.invalidAttributeLength, detail: "\(value.count) bytes, want 4") }
        rawFamily = value[value.startIndex]
        family = TURNAddressFamily(rawValue: rawFamily)
    }
    /// Encodes the family and three zero bytes.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { [rawFamily, 0, 0, 0] }
}

/// EVEN-PORT: asks for an even relayed port, optionally reserving the next one (RFC 8656 §18.7).
public struct EvenPort: STUNAttributeValue, Hashable {
    /// EVEN-PORT.
    public static let attributeType = STUNAttributeType.evenPort
    /// The R bit: reserve the next-higher port too.
    public var reserveNext: Bool
    /// Creates the flag.
    public init(reserveNext: Bool) { self.reserveNext = reserveNext }
    /// Decodes one byte (the RFC's 1-byte value; senders pad it).
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard let first = value.first else { throw STUNDecodingError(.invalidAttributeLength, detail: "empty") }
        guard value.count <= 4 else { throw STUNDecodingError(.invalidAttributeLength, detail: "\(value.count) bytes, want 1") }
        reserveNext = first & 0x80 != 0
    }
    /// Encodes the flag byte.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { [reserveNext ? 0x80 : 0] }
}

/// REQUESTED-TRANSPORT: the relayed transport protocol, an IANA protocol number (RFC 8656 §18.8).
public struct RequestedTransport: STUNAttributeValue, Hashable {
    /// REQUESTED-TRANSPORT.
    public static let attributeType = STUNAttributeType.requestedTransport
    /// UDP, protocol 17: the only one RFC 8656 defines (RFC 8656 §18.8).
    public static let udp = RequestedTransport(protocolNumber: 17)
    /// The protocol number.
    public var protocolNumber: UInt8
    /// Wraps a protocol number.
    public init(protocolNumber: UInt8) { self.protocolNumber = protocolNumber }
    /// Decodes 4 bytes: protocol and 24 reserved bits.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard value.count == 4 else { throw STUNDecodingError(.invalidAttributeLength, detail: "\(value.count) bytes, want 4") }
        protocolNumber = value[value.startIndex]
    }
    /// Encodes the protocol and three zero bytes.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { [protocolNumber, 0, 0, 0] }
}

/// DONT-FRAGMENT: asks the server to set DF on relayed IPv4 datagrams; no value (RFC 8656 §18.9).
public struct DontFragment: STUNAttributeValue, Hashable {
    /// DONT-FRAGMENT.
    public static let attributeType = STUNAttributeType.dontFragment
    /// Creates the flag attribute.
    public init() {}
    /// Accepts an empty value.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard value.isEmpty else { throw STUNDecodingError(.invalidAttributeLength, detail: "\(value.count) bytes, want 0") }
    }
    /// Empty.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { [] }
}

/// RESERVATION-TOKEN: 8 bytes naming a port reserved by EVEN-PORT (RFC 8656 §18.10).
public struct ReservationToken: STUNAttributeValue, Hashable {
    /// RESERVATION-TOKEN.
    public static let attributeType = STUNAttributeType.reservationToken
    /// The token.
    public var token: [UInt8]
    /// Wraps a token.
    public init(_ token: [UInt8]) { self.token = token }
    /// Decodes exactly 8 bytes.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard value.count == 8 else { throw STUNDecodingError(.invalidAttributeLength, detail: "\(value.count) bytes, want 8") }
        token = Array(value)
    }
    /// The token bytes.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { token }
}

/// Big-endian integer reads and writes for TURN's fixed-size values.
enum TURNBytes {
    static func uint16(_ v: ArraySlice<UInt8>, _ at: Int) -> UInt16 {
        UInt16(v[v.startIndex + at]) << 8 | UInt16(v[v.startIndex + at + 1])
    }
    static func uint32(_ v: ArraySlice<UInt8>, _ at: Int) -> UInt32 {
        let s = v.startIndex + at
        return UInt32(v[s]) << 24 | UInt32(v[s + 1]) << 16 | UInt32(v[s + 2]) << 8 | UInt32(v[s + 3])
    }
    static func of(_ x: UInt16) -> [UInt8] { [UInt8(x >> 8), UInt8(x & 0xFF)] }
    static func of(_ x: UInt32) -> [UInt8] { [UInt8(x >> 24), UInt8((x >> 16) & 0xFF), UInt8((x >> 8) & 0xFF), UInt8(x & 0xFF)] }
}
