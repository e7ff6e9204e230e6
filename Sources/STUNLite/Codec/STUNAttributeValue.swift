/// A typed STUN attribute that knows how to read itself from, and write itself to, a message.
///
/// The set is open, as in RFC 8489 §18.3's registry: TURN and applications add their own types
/// the same way, with no change here.
public protocol STUNAttributeValue: Sendable {
    /// The attribute's type number.
    static var attributeType: STUNAttributeType { get }
    /// Decodes the value part; throws with `offset` relative to the value when it is malformed.
    init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError)
    /// Encodes the value part, without header or padding.
    func stunValue(transactionID: STUNTransactionID) -> [UInt8]
}

/// One attribute as it appeared in, or will go into, a message: its type and raw value (RFC 8489 §14).
public struct STUNAttribute: Hashable, Sendable {
    /// The type number.
    public var type: STUNAttributeType
    /// The value, without padding.
    public var value: [UInt8]
    /// The padding bytes as received (encoders write them back, so a message re-encodes byte for byte); empty means zeros.
    public var wirePadding: [UInt8]
    /// Offset of the attribute header from the start of the message it was decoded from; 0 for a built attribute.
    public var offset: Int

    /// Creates an attribute from raw parts.
    public init(type: STUNAttributeType, value: [UInt8], wirePadding: [UInt8] = [], offset: Int = 0) {
        self.type = type
        self.value = value
        self.wirePadding = wirePadding
        self.offset = offset
    }
}

// MARK: - Shared value codecs

/// Reads and writes the address format shared by MAPPED-ADDRESS and its kin (RFC 8489 §14.1–14.2).
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |0 0 0 0 0 0 0 0|    Family     |         Port (X-Port)         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           Address (X-Address): 32 bits or 128 bits             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
public enum STUNAddressCoding {
    /// Decodes an address value; with `xor`, undoes the XOR with the magic cookie and transaction ID (RFC 8489 §14.2).
    public static func decode(_ v: ArraySlice<UInt8>, xor transactionID: STUNTransactionID?) throws(STUNDecodingError) -> TransportAddress {
        guard v.count >= 4 else { throw STUNDecodingError(.invalidAddressLength, detail: "\(v.count) bytes") }
        let b = v.startIndex
        let family = v[b + 1]
        var port = UInt16(v[b + 2]) << 8 | UInt16(v[b + 3])
        let expected: Int
        switch family {
        case 0x01: expected = 8
        case 0x02: expected = 20
        default: throw STUNDecodingError(.unknownAddressFamily, offset: 1, detail: "family 0x\(String(family, radix: 16))")
        }
        guard v.count == expected else {
            throw STUNDecodingError(.invalidAddressLength, detail: "\(v.count) bytes for family \(family)")
        }
        var raw = Array(v[(b + 4)...])
        if let transactionID {
            port ^= UInt16(STUNMessage.magicCookie >> 16)
            let mask = STUNAddressCoding.xorMask(transactionID)
            for i in raw.indices { raw[i] ^= mask[i] }
        }
        return TransportAddress(ip: IPAddress(bytes: raw)!, port: port)
    }

    /// Encodes an address value; with `xor`, applies the XOR with the magic cookie and transaction ID (RFC 8489 §14.2).
    public static func encode(_ a: TransportAddress, xor transactionID: STUNTransactionID?) -> [UInt8] {
        var port = a.port
        var raw = a.ip.bytes
        if let transactionID {
            port ^= UInt16(STUNMessage.magicCookie >> 16)
            let mask = xorMask(transactionID)
            for i in raw.indices { raw[i] ^= mask[i] }
        }
        return [0, a.ip.stunFamily, UInt8(port >> 8), UInt8(port & 0xFF)] + raw
    }

    /// Magic cookie followed by the transaction ID: the 16-byte XOR mask (RFC 8489 §14.2).
    static func xorMask(_ id: STUNTransactionID) -> [UInt8] {
        [0x21, 0x12, 0xA4, 0x42] + id.bytes
    }
}

/// Reads and writes UTF-8 text attributes with a byte limit (RFC 8489 §14.3, §14.9, §14.10, §14.14).
enum STUNTextCoding {
    static func decode(_ v: ArraySlice<UInt8>, max: Int) throws(STUNDecodingError) -> String {
        guard v.count <= max else { throw STUNDecodingError(.invalidAttributeLength, detail: "\(v.count) bytes, at most \(max)") }
        guard let s = String(validating: v, as: UTF8.self) else {
            throw STUNDecodingError(.invalidAttributeValue, detail: "not UTF-8")
        }
        return s
    }
}

@inline(__always)
func readUInt16(_ v: ArraySlice<UInt8>, _ at: Int) -> UInt16 {
    UInt16(v[v.startIndex + at]) << 8 | UInt16(v[v.startIndex + at + 1])
}

@inline(__always)
func readUInt32(_ v: ArraySlice<UInt8>, _ at: Int) -> UInt32 {
    let s = v.startIndex + at
    return UInt32(v[s]) << 24 | UInt32(v[s + 1]) << 16 | UInt32(v[s + 2]) << 8 | UInt32(v[s + 3])
}

@inline(__always)
func bytesOf(_ x: UInt16) -> [UInt8] { [UInt8(x >> 8), UInt8(x & 0xFF)] }

@inline(__always)
func bytesOf(_ x: UInt32) -> [UInt8] { [UInt8(x >> 24), UInt8((x >> 16) & 0xFF), UInt8((x >> 8) & 0xFF), UInt8(x & 0xFF)] }

// MARK: - Address attributes

/// An attribute whose value is a transport address.
public protocol STUNAddressAttribute: STUNAttributeValue {
    /// The address carried.
    var address: TransportAddress { get }
    /// Wraps an address.
    init(_ address: TransportAddress)
    /// True when the value is XORed with the magic cookie and transaction ID.
    static var isXORed: Bool { get }
}

extension STUNAddressAttribute {
    /// Decodes the address value.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        self.init(try STUNAddressCoding.decode(value, xor: Self.isXORed ? transactionID : nil))
    }

    /// Encodes the address value.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] {
        STUNAddressCoding.encode(address, xor: Self.isXORed ? transactionID : nil)
    }
}

/// MAPPED-ADDRESS: the reflexive address, in the clear, for RFC 3489 clients (RFC 8489 §14.1).
public struct MappedAddress: STUNAddressAttribute, Hashable {
    /// MAPPED-ADDRESS.
    public static let attributeType = STUNAttributeType.mappedAddress
    /// Not XORed.
    public static let isXORed = false
    /// The reflexive transport address.
    public var address: TransportAddress
    /// Wraps an address.
    public init(_ address: TransportAddress) { self.address = address }
}

/// XOR-MAPPED-ADDRESS: the reflexive address, XORed so NATs don't rewrite it (RFC 8489 §14.2).
public struct XORMappedAddress: STUNAddressAttribute, Hashable {
    /// XOR-MAPPED-ADDRESS.
    public static let attributeType = STUNAttributeType.xorMappedAddress
    /// XORed.
    public static let isXORed = true
    /// The reflexive transport address.
    public var address: TransportAddress
    /// Wraps an address.
    public init(_ address: TransportAddress) { self.address = address }
}

/// ALTERNATE-SERVER: where a 300 (Try Alternate) sends the client (RFC 8489 §14.15).
public struct AlternateServer: STUNAddressAttribute, Hashable {
    /// ALTERNATE-SERVER.
    public static let attributeType = STUNAttributeType.alternateServer
    /// Not XORed.
    public static let isXORed = false
    /// The alternate server's transport address.
    public var address: TransportAddress
    /// Wraps an address.
    public init(_ address: TransportAddress) { self.address = address }
}

/// RESPONSE-ORIGIN: the address a response was sent from (RFC 5780 §7.3).
public struct ResponseOrigin: STUNAddressAttribute, Hashable {
    /// RESPONSE-ORIGIN.
    public static let attributeType = STUNAttributeType.responseOrigin
    /// Not XORed.
    public static let isXORed = false
    /// The source address of the response.
    public var address: TransportAddress
    /// Wraps an address.
    public init(_ address: TransportAddress) { self.address = address }
}

/// OTHER-ADDRESS: the server's alternate IP and port for behaviour discovery (RFC 5780 §7.4).
public struct OtherAddress: STUNAddressAttribute, Hashable {
    /// OTHER-ADDRESS.
    public static let attributeType = STUNAttributeType.otherAddress
    /// Not XORed.
    public static let isXORed = false
    /// The server's other transport address.
    public var address: TransportAddress
    /// Wraps an address.
    public init(_ address: TransportAddress) { self.address = address }
}

/// SOURCE-ADDRESS: the address a response was sent from, for RFC 3489 clients (RFC 3489 §11.2.3; RFC 5780 §7.3 renames it RESPONSE-ORIGIN).
public struct SourceAddress: STUNAddressAttribute, Hashable {
    /// SOURCE-ADDRESS.
    public static let attributeType = STUNAttributeType.sourceAddress
    /// Not XORed.
    public static let isXORed = false
    /// The source address of the response.
    public var address: TransportAddress
    /// Wraps an address.
    public init(_ address: TransportAddress) { self.address = address }
}

/// CHANGED-ADDRESS: the server's other IP and port, for RFC 3489 clients (RFC 3489 §11.2.5; RFC 5780 §7.4 renames it OTHER-ADDRESS).
public struct ChangedAddress: STUNAddressAttribute, Hashable {
    /// CHANGED-ADDRESS.
    public static let attributeType = STUNAttributeType.changedAddress
    /// Not XORed.
    public static let isXORed = false
    /// The server's other transport address.
    public var address: TransportAddress
    /// Wraps an address.
    public init(_ address: TransportAddress) { self.address = address }
}

// MARK: - Text attributes

/// A UTF-8 text attribute with a byte limit.
public protocol STUNTextAttribute: STUNAttributeValue {
    /// The text.
    var text: String { get }
    /// Wraps text.
    init(_ text: String)
    /// The most bytes the value may have.
    static var maxBytes: Int { get }
}

extension STUNTextAttribute {
    /// Decodes UTF-8 text within the limit.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        self.init(try STUNTextCoding.decode(value, max: Self.maxBytes))
    }

    /// Encodes the text as UTF-8, cut at the limit on a character boundary.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] {
        var out = [UInt8]()
        for ch in text {
            let b = Array(String(ch).utf8)
            if out.count + b.count > Self.maxBytes { break }
            out += b
        }
        return out
    }
}

/// USERNAME (RFC 8489 §14.3).
public struct Username: STUNTextAttribute, Hashable {
    /// USERNAME.
    public static let attributeType = STUNAttributeType.username
    /// Fewer than 509 bytes.
    public static let maxBytes = STUNLimits.maxUsernameBytes
    /// The user name.
    public var text: String
    /// Wraps text.
    public init(_ text: String) { self.text = text }
}

/// REALM (RFC 8489 §14.9).
public struct Realm: STUNTextAttribute, Hashable {
    /// REALM.
    public static let attributeType = STUNAttributeType.realm
    /// At most 763 bytes.
    public static let maxBytes = STUNLimits.maxTextBytes
    /// The realm.
    public var text: String
    /// Wraps text.
    public init(_ text: String) { self.text = text }
}

/// NONCE (RFC 8489 §14.10).
public struct Nonce: STUNTextAttribute, Hashable {
    /// NONCE.
    public static let attributeType = STUNAttributeType.nonce
    /// At most 763 bytes.
    public static let maxBytes = STUNLimits.maxTextBytes
    /// The nonce.
    public var text: String
    /// Wraps text.
    public init(_ text: String) { self.text = text }
}

/// SOFTWARE (RFC 8489 §14.14).
public struct Software: STUNTextAttribute, Hashable {
    /// SOFTWARE.
    public static let attributeType = STUNAttributeType.software
    /// At most 763 bytes.
    public static let maxBytes = STUNLimits.maxTextBytes
    /// The software description.
    public var text: String
    /// Wraps text.
    public init(_ text: String) { self.text = text }
}

// MARK: - Other attributes

/// USERHASH: SHA-256 of `username ":" realm`, hiding the user name (RFC 8489 §14.4).
public struct Userhash: STUNAttributeValue, Hashable {
    /// USERHASH.
    public static let attributeType = STUNAttributeType.userhash
    /// The 32-byte hash.
    public var hash: [UInt8]
    /// Wraps a hash.
    public init(_ hash: [UInt8]) { self.hash = hash }
    /// Decodes exactly 32 bytes.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard value.count == 32 else { throw STUNDecodingError(.invalidAttributeLength, detail: "\(value.count) bytes, want 32") }
        hash = Array(value)
    }
    /// The hash bytes.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { hash }
}

/// ERROR-CODE: class, number and reason phrase (RFC 8489 §14.8).
public struct ErrorCode: STUNAttributeValue, Hashable, CustomStringConvertible {
    /// ERROR-CODE.
    public static let attributeType = STUNAttributeType.errorCode
    /// The code, 300–699.
    public var code: Int
    /// The reason phrase.
    public var reason: String

    /// Creates an error code; `reason` defaults to the RFC's phrase for well-known codes.
    public init(_ code: Int, reason: String? = nil) {
        self.code = code
        self.reason = reason ?? ErrorCode.defaultReason(code)
    }

    /// 300 Try Alternate (RFC 8489 §14.8).
    public static let tryAlternate = 300
    /// 400 Bad Request.
    public static let badRequest = 400
    /// 401 Unauthenticated.
    public static let unauthenticated = 401
    /// 420 Unknown Attribute.
    public static let unknownAttribute = 420
    /// 438 Stale Nonce.
    public static let staleNonce = 438
    /// 500 Server Error.
    public static let serverError = 500

    /// The RFC 8489 §14.8 phrase for a code, or a generic one.
    public static func defaultReason(_ code: Int) -> String {
        switch code {
        case 300: "Try Alternate"
        case 400: "Bad Request"
        case 401: "Unauthenticated"
        case 403: "Forbidden"
        case 420: "Unknown Attribute"
        case 437: "Allocation Mismatch"
        case 438: "Stale Nonce"
        case 440: "Address Family not Supported"
        case 441: "Wrong Credentials"
        case 442: "Unsupported Transport Protocol"
        case 443: "Peer Address Family Mismatch"
        case 486: "Allocation Quota Reached"
        case 500: "Server Error"
        case 508: "Insufficient Capacity"
        default: "Error"
        }
    }

    /// Decodes class and number; the class must be 3–6 and the number 0–99.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard value.count >= 4 else { throw STUNDecodingError(.invalidAttributeLength, detail: "\(value.count) bytes") }
        let b = value.startIndex
        let cls = Int(value[b + 2] & 0x07)
        let num = Int(value[b + 3])
        guard (3...6).contains(cls), num < 100 else {
            throw STUNDecodingError(.invalidAttributeValue, offset: 2, detail: "class \(cls) number \(num)")
        }
        code = cls * 100 + num
        reason = try STUNTextCoding.decode(value[(b + 4)...], max: STUNLimits.maxTextBytes)
    }

    /// Encodes class, number and reason.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] {
        [0, 0, UInt8((code / 100) & 0x07), UInt8(code % 100)] + Array(reason.utf8.prefix(STUNLimits.maxTextBytes))
    }

    /// `420 Unknown Attribute`.
    public var description: String { "\(code) \(reason)" }
}

/// UNKNOWN-ATTRIBUTES: the comprehension-required types a 420 response names (RFC 8489 §14.13).
public struct UnknownAttributes: STUNAttributeValue, Hashable {
    /// UNKNOWN-ATTRIBUTES.
    public static let attributeType = STUNAttributeType.unknownAttributes
    /// The types not understood.
    public var types: [STUNAttributeType]
    /// Wraps a list, keeping at most ``STUNLimits/maxListEntries``.
    public init(_ types: [STUNAttributeType]) { self.types = Array(types.prefix(STUNLimits.maxListEntries)) }
    /// Decodes a list of 16-bit types.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard value.count % 2 == 0 else { throw STUNDecodingError(.invalidAttributeLength, detail: "odd length \(value.count)") }
        types = stride(from: 0, to: min(value.count, 2 * STUNLimits.maxListEntries), by: 2).map {
            STUNAttributeType(readUInt16(value, $0))
        }
    }
    /// Encodes the list.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { types.flatMap { bytesOf($0.rawValue) } }
}

/// A password algorithm number and its parameters (RFC 8489 §14.11–14.12, §18.5).
public struct STUNPasswordAlgorithm: Hashable, Sendable {
    /// The algorithm number.
    public var number: UInt16
    /// Its parameters (none for MD5 and SHA-256).
    public var parameters: [UInt8]
    /// Creates an algorithm entry.
    public init(number: UInt16, parameters: [UInt8] = []) {
        self.number = number
        self.parameters = parameters
    }
    /// MD5 (0x0001): the key is MD5(username ":" realm ":" password) (RFC 8489 §18.5.1.1).
    public static let md5 = STUNPasswordAlgorithm(number: 0x0001)
    /// SHA-256 (0x0002): the key is SHA-256(username ":" realm ":" password) (RFC 8489 §18.5.1.2).
    public static let sha256 = STUNPasswordAlgorithm(number: 0x0002)

    static func decodeList(_ v: ArraySlice<UInt8>, max: Int) throws(STUNDecodingError) -> [STUNPasswordAlgorithm] {
        var out: [STUNPasswordAlgorithm] = []
        var i = 0
        while i < v.count {
            guard v.count - i >= 4 else { throw STUNDecodingError(.invalidAttributeLength, offset: i) }
            let n = readUInt16(v, i)
            let len = Int(readUInt16(v, i + 2))
            let padded = (len + 3) & ~3
            guard v.count - i - 4 >= len else { throw STUNDecodingError(.invalidAttributeLength, offset: i) }
            guard out.count < max else { throw STUNDecodingError(.invalidAttributeValue, offset: i, detail: "more than \(max) algorithms") }
            let s = v.startIndex + i + 4
            out.append(STUNPasswordAlgorithm(number: n, parameters: Array(v[s..<(s + len)])))
            i += 4 + min(padded, v.count - i - 4)
        }
        return out
    }

    func encoded() -> [UInt8] {
        var out = bytesOf(number) + bytesOf(UInt16(parameters.count)) + parameters
        while out.count % 4 != 0 { out.append(0) }
        return out
    }
}

/// PASSWORD-ALGORITHM: the algorithm the client chose (RFC 8489 §14.12).
public struct PasswordAlgorithm: STUNAttributeValue, Hashable {
    /// PASSWORD-ALGORITHM.
    public static let attributeType = STUNAttributeType.passwordAlgorithm
    /// The chosen algorithm.
    public var algorithm: STUNPasswordAlgorithm
    /// Wraps an algorithm.
    public init(_ algorithm: STUNPasswordAlgorithm) { self.algorithm = algorithm }
    /// Decodes exactly one algorithm entry.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        let list = try STUNPasswordAlgorithm.decodeList(value, max: 1)
        guard let first = list.first else { throw STUNDecodingError(.invalidAttributeLength, detail: "empty") }
        algorithm = first
    }
    /// Encodes the entry.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { algorithm.encoded() }
}

/// PASSWORD-ALGORITHMS: the algorithms a server offers (RFC 8489 §14.11).
public struct PasswordAlgorithms: STUNAttributeValue, Hashable {
    /// PASSWORD-ALGORITHMS.
    public static let attributeType = STUNAttributeType.passwordAlgorithms
    /// The algorithms, in the server's order of preference.
    public var algorithms: [STUNPasswordAlgorithm]
    /// Wraps a list.
    public init(_ algorithms: [STUNPasswordAlgorithm]) { self.algorithms = algorithms }
    /// Decodes the list (at most ``STUNLimits/maxListEntries``).
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        algorithms = try STUNPasswordAlgorithm.decodeList(value, max: STUNLimits.maxListEntries)
    }
    /// Encodes the list.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { algorithms.flatMap { $0.encoded() } }
}

/// CHANGE-REQUEST: asks the server to answer from its other IP and/or port (RFC 5780 §7.2).
public struct ChangeRequest: STUNAttributeValue, Hashable {
    /// CHANGE-REQUEST.
    public static let attributeType = STUNAttributeType.changeRequest
    /// Answer from the other IP address (flag A, 0x4).
    public var changeIP: Bool
    /// Answer from the other port (flag B, 0x2).
    public var changePort: Bool
    /// Creates the flags.
    public init(changeIP: Bool, changePort: Bool) {
        self.changeIP = changeIP
        self.changePort = changePort
    }
    /// Decodes the 4-byte flags word.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard value.count == 4 else { throw STUNDecodingError(.invalidAttributeLength, detail: "\(value.count) bytes, want 4") }
        let flags = readUInt32(value, 0)
        changeIP = flags & 0x4 != 0
        changePort = flags & 0x2 != 0
    }
    /// Encodes the flags word.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] {
        bytesOf(UInt32((changeIP ? 0x4 : 0) | (changePort ? 0x2 : 0)))
    }
}

/// RESPONSE-PORT: the port the response should be sent to (RFC 5780 §7.5).
public struct ResponsePort: STUNAttributeValue, Hashable {
    /// RESPONSE-PORT.
    public static let attributeType = STUNAttributeType.responsePort
    /// The port.
    public var port: UInt16
    /// Wraps a port.
    public init(_ port: UInt16) { self.port = port }
    /// Decodes the port; 2 bytes, or 4 with the RFC's explicit padding.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard value.count == 2 || value.count == 4 else {
            throw STUNDecodingError(.invalidAttributeLength, detail: "\(value.count) bytes, want 4")
        }
        port = readUInt16(value, 0)
    }
    /// Encodes the port followed by two bytes of padding.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { bytesOf(port) + [0, 0] }
}

/// PADDING: bytes that make a request (and so its response) a chosen size (RFC 5780 §7.6).
public struct Padding: STUNAttributeValue, Hashable {
    /// PADDING.
    public static let attributeType = STUNAttributeType.padding
    /// The number of padding bytes.
    public var count: Int
    /// Creates padding of `count` zero bytes.
    public init(count: Int) { self.count = count }
    /// Records the length; the content is meaningless.
    public init(stunValue value: ArraySlice<UInt8>, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        count = value.count
    }
    /// Zero bytes.
    public func stunValue(transactionID: STUNTransactionID) -> [UInt8] { [UInt8](repeating: 0, count: count) }
}
