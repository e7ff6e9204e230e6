/// Why bytes from the network are not a valid STUN message, and where (RFC 8489 §6.3).
public struct STUNDecodingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What class of defect was found; new codes may be added without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// A short kebab-case name for logs and tests.
        public let name: String
        private init(_ name: String) { self.name = name }
        /// The name.
        public var description: String { name }

        /// Fewer than the 20 bytes of a STUN header (RFC 8489 §5).
        public static let truncatedHeader = Code("truncated-header")
        /// The two most significant bits are not zero: not STUN (RFC 8489 §5).
        public static let notSTUN = Code("not-stun")
        /// The header's length field is not a multiple of 4 (RFC 8489 §5).
        public static let lengthNotMultipleOfFour = Code("length-not-multiple-of-four")
        /// The header's length field disagrees with the number of bytes received.
        public static let lengthMismatch = Code("length-mismatch")
        /// The message is larger than ``STUNLimits/maxMessageSize``.
        public static let messageTooLarge = Code("message-too-large")
        /// Fewer than 4 bytes remain where an attribute header should start.
        public static let attributeHeaderTruncated = Code("attribute-header-truncated")
        /// An attribute's length runs past the end of the message.
        public static let attributeTruncated = Code("attribute-truncated")
        /// An attribute's value fits but its padding to a 4-byte boundary does not (RFC 8489 §14).
        public static let paddingTruncated = Code("padding-truncated")
        /// More attributes than ``STUNLimits/maxAttributes``.
        public static let tooManyAttributes = Code("too-many-attributes")
        /// An attribute follows FINGERPRINT, which must be last (RFC 8489 §14.7).
        public static let attributeAfterFingerprint = Code("attribute-after-fingerprint")
        /// An attribute's value has a length its definition does not allow.
        public static let invalidAttributeLength = Code("invalid-attribute-length")
        /// An address attribute names a family other than IPv4 (0x01) or IPv6 (0x02) (RFC 8489 §14.1).
        public static let unknownAddressFamily = Code("unknown-address-family")
        /// An address attribute's length does not fit its family (8 for IPv4, 20 for IPv6).
        public static let invalidAddressLength = Code("invalid-address-length")
        /// A value that is not valid for its attribute (bad UTF-8, error class out of range, …).
        public static let invalidAttributeValue = Code("invalid-attribute-value")
        /// A TCP/TLS stream frame announces more than the framer's limit.
        public static let frameTooLarge = Code("frame-too-large")
    }

    /// What is wrong.
    public var code: Code
    /// The attribute in which it was found, if any.
    public var attribute: STUNAttributeType?
    /// Byte offset from the start of the message: of the attribute's header, or of the header field.
    public var offset: Int
    /// Extra words for people.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, attribute: STUNAttributeType? = nil, offset: Int = 0, detail: String = "") {
        self.code = code
        self.attribute = attribute
        self.offset = offset
        self.detail = detail
    }

    /// `code at offset N in ATTRIBUTE: detail`.
    public var description: String {
        var s = "\(code) at offset \(offset)"
        if let attribute { s += " in \(attribute)" }
        if !detail.isEmpty { s += ": \(detail)" }
        return s
    }
}

/// The named limits of the STUN codec and framers; every size that input can drive is bounded here.
public enum STUNLimits {
    /// Largest message accepted: 20-byte header + the 16-bit length field's maximum, rounded down to 4 (RFC 8489 §5).
    public static let maxMessageSize = 20 + 65532
    /// Most attributes accepted in one message; real messages carry fewer than 20.
    public static let maxAttributes = 64
    /// USERNAME must be fewer than 509 bytes (RFC 8489 §14.3).
    public static let maxUsernameBytes = 508
    /// REALM, NONCE, SOFTWARE and the ERROR-CODE reason: fewer than 128 characters, at most 763 bytes (RFC 8489 §14.9–14.10, §14.14, §14.8).
    public static let maxTextBytes = 763
    /// Entries in UNKNOWN-ATTRIBUTES or PASSWORD-ALGORITHMS kept at most.
    public static let maxListEntries = 32
}
