/// A STUN attribute type number (RFC 8489 §14, §18.3; RFC 5780 §7).
public struct STUNAttributeType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The 16-bit type number.
    public let rawValue: UInt16
    /// Creates a type from its number.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// Creates a type from its number.
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }

    /// Types 0x0000–0x7FFF must be understood by the receiver, or it answers 420 (RFC 8489 §14).
    public var isComprehensionRequired: Bool { rawValue < 0x8000 }

    /// MAPPED-ADDRESS (RFC 8489 §14.1).
    public static let mappedAddress = STUNAttributeType(0x0001)
    /// CHANGE-REQUEST (RFC 5780 §7.2).
    public static let changeRequest = STUNAttributeType(0x0003)
    /// SOURCE-ADDRESS (RFC 3489 §11.2.3): RESPONSE-ORIGIN's RFC 3489 predecessor, sent only to classic clients.
    public static let sourceAddress = STUNAttributeType(0x0004)
    /// CHANGED-ADDRESS (RFC 3489 §11.2.5): OTHER-ADDRESS's RFC 3489 predecessor, sent only to classic clients.
    public static let changedAddress = STUNAttributeType(0x0005)
    /// USERNAME (RFC 8489 §14.3).
    public static let username = STUNAttributeType(0x0006)
    /// MESSAGE-INTEGRITY (RFC 8489 §14.5).
    public static let messageIntegrity = STUNAttributeType(0x0008)
    /// ERROR-CODE (RFC 8489 §14.8).
    public static let errorCode = STUNAttributeType(0x0009)
    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.13).
    public static let unknownAttributes = STUNAttributeType(0x000A)
    /// REALM (RFC 8489 §14.9).
    public static let realm = STUNAttributeType(0x0014)
    /// NONCE (RFC 8489 §14.10).
    public static let nonce = STUNAttributeType(0x0015)
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
    public static let messageIntegritySHA256 = STUNAttributeType(0x001C)
    /// PASSWORD-ALGORITHM (RFC 8489 §14.12).
    public static let passwordAlgorithm = STUNAttributeType(0x001D)
    /// USERHASH (RFC 8489 §14.4).
    public static let userhash = STUNAttributeType(0x001E)
    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
    public static let xorMappedAddress = STUNAttributeType(0x0020)
    /// PADDING (RFC 5780 §7.6).
    public static let padding = STUNAttributeType(0x0026)
    /// RESPONSE-PORT (RFC 5780 §7.5).
    public static let responsePort = STUNAttributeType(0x0027)
    /// PASSWORD-ALGORITHMS (RFC 8489 §14.11).
    public static let passwordAlgorithms = STUNAttributeType(0x8002)
    /// SOFTWARE (RFC 8489 §14.14).
    public static let software = STUNAttributeType(0x8022)
    /// ALTERNATE-SERVER (RFC 8489 §14.15).
    public static let alternateServer = STUNAttributeType(0x8023)
    /// FINGERPRINT (RFC 8489 §14.7).
    public static let fingerprint = STUNAttributeType(0x8028)
    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    public static let responseOrigin = STUNAttributeType(0x802B)
    /// OTHER-ADDRESS (RFC 5780 §7.4).
    public static let otherAddress = STUNAttributeType(0x802C)

    /// Every type this module understands in a request (the set a STUN server checks against for 420).
    ///
    /// SOURCE-ADDRESS and CHANGED-ADDRESS are left out: they only ever appear in responses (RFC 3489 §11.2).
    public static let stunKnown: Set<STUNAttributeType> = [
        .mappedAddress, .changeRequest, .username, .messageIntegrity, .errorCode, .unknownAttributes,
        .realm, .nonce, .messageIntegritySHA256, .passwordAlgorithm, .userhash, .xorMappedAddress,
        .padding, .responsePort, .passwordAlgorithms, .software, .alternateServer, .fingerprint,
        .responseOrigin, .otherAddress,
    ]

    private static let names: [UInt16: String] = [
        0x0001: "MAPPED-ADDRESS", 0x0003: "CHANGE-REQUEST", 0x0004: "SOURCE-ADDRESS", 0x0005: "CHANGED-ADDRESS", 0x0006: "USERNAME", 0x0008: "MESSAGE-INTEGRITY",
        0x0009: "ERROR-CODE", 0x000A: "UNKNOWN-ATTRIBUTES", 0x0014: "REALM", 0x0015: "NONCE",
        0x001C: "MESSAGE-INTEGRITY-SHA256", 0x001D: "PASSWORD-ALGORITHM", 0x001E: "USERHASH",
        0x0020: "XOR-MAPPED-ADDRESS", 0x0026: "PADDING", 0x0027: "RESPONSE-PORT", 0x8002: "PASSWORD-ALGORITHMS",
        0x8022: "SOFTWARE", 0x8023: "ALTERNATE-SERVER", 0x8028: "FINGERPRINT", 0x802B: "RESPONSE-ORIGIN",
        0x802C: "OTHER-ADDRESS",
        // TURN (RFC 8656 §18), named here so logs read well in every module.
        0x000C: "CHANNEL-NUMBER", 0x000D: "LIFETIME", 0x0012: "XOR-PEER-ADDRESS", 0x0013: "DATA",
        0x0016: "XOR-RELAYED-ADDRESS", 0x0017: "REQUESTED-ADDRESS-FAMILY", 0x0018: "EVEN-PORT",
        0x0019: "REQUESTED-TRANSPORT", 0x001A: "DONT-FRAGMENT", 0x0022: "RESERVATION-TOKEN",
        0x8000: "ADDITIONAL-ADDRESS-FAMILY", 0x8001: "ADDRESS-ERROR-CODE", 0x8004: "ICMP",
    ]

    /// The RFC name, e.g. `XOR-MAPPED-ADDRESS`, or the hexadecimal number.
    public var description: String {
        Self.names[rawValue] ?? "0x" + String(rawValue, radix: 16, uppercase: true)
    }
}
