/// A STUN message: header and attributes, as decoded from or encoded to the wire (RFC 8489 §5).
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |0 0|     STUN Message Type     |         Message Length        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         Magic Cookie                          |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                     Transaction ID (96 bits)                  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// The codec is pure: bytes in, a value or a ``STUNDecodingError`` out; no I/O.
public struct STUNMessage: Hashable, Sendable {
    /// The fixed magic cookie 0x2112A442 (RFC 8489 §5).
    public static let magicCookie: UInt32 = 0x2112_A442
    /// The size of the header (RFC 8489 §5).
    public static let headerSize = 20

    /// The method.
    public var method: STUNMethod
    /// The class.
    public var messageClass: STUNClass
    /// The transaction ID.
    public var transactionID: STUNTransactionID
    /// The 32 bits where the magic cookie belongs; anything else marks an RFC 3489 message, whose
    /// 128-bit transaction ID is this word followed by ``transactionID`` (RFC 8489 §12).
    public var cookie: UInt32
    /// The attributes that count, in order: those before MESSAGE-INTEGRITY, the integrity attributes and FINGERPRINT.
    public var attributes: [STUNAttribute]
    /// Attributes received after MESSAGE-INTEGRITY(-SHA256): kept for diagnostics, never used (RFC 8489 §14.5).
    public var ignoredAfterIntegrity: [STUNAttribute]
    /// The bytes this message was decoded from (empty for a message built in code); integrity is checked over them.
    public private(set) var wireBytes: [UInt8]

    /// Creates a message with no attributes.
    public init(method: STUNMethod, messageClass: STUNClass, transactionID: STUNTransactionID = .random(),
                cookie: UInt32 = STUNMessage.magicCookie) {
        self.method = method
        self.messageClass = messageClass
        self.transactionID = transactionID
        self.cookie = cookie
        self.attributes = []
        self.ignoredAfterIntegrity = []
        self.wireBytes = []
    }

    /// True when the magic cookie is absent: an RFC 3489 ("classic STUN") message.
    public var isClassic: Bool { cookie != STUNMessage.magicCookie }

    // MARK: Attributes

    /// Appends a typed attribute.
    public mutating func append<A: STUNAttributeValue>(_ attribute: A) {
        attributes.append(STUNAttribute(type: A.attributeType, value: attribute.stunValue(transactionID: transactionID)))
    }

    /// The first attribute of a type, decoded; `nil` when absent. Duplicates: the first wins.
    public func attribute<A: STUNAttributeValue>(_ type: A.Type) throws(STUNDecodingError) -> A? {
        guard let raw = attributes.first(where: { $0.type == A.attributeType }) else { return nil }
        do {
            return try A(stunValue: raw.value[...], transactionID: transactionID)
        } catch {
            var e = error
            e.attribute = A.attributeType
            e.offset += raw.offset + 4
            throw e
        }
    }

    /// True when an attribute of this type is present (before any integrity attribute).
    public func contains(_ type: STUNAttributeType) -> Bool {
        attributes.contains { $0.type == type }
    }

    /// The comprehension-required attribute types not in `known`, each once, for a 420 (RFC 8489 §6.3.1).
    public func unknownComprehensionRequired(known: Set<STUNAttributeType>) -> [STUNAttributeType] {
        var seen = Set<STUNAttributeType>()
        var out: [STUNAttributeType] = []
        for a in attributes where a.type.isComprehensionRequired && !known.contains(a.type) {
            if seen.insert(a.type).inserted { out.append(a.type) }
        }
        return out
    }

    // MARK: Decoding

    /// Decodes one whole message; every structural defect gives a typed error naming attribute and offset (RFC 8489 §6.3).
    ///
    /// Known attributes are checked for their shapes here, so a message that decodes has only
    /// well-formed values. Padding bytes are ignored, as RFC 8489 §14 requires, but kept for re-encoding.
    public static func decode(_ input: some Collection<UInt8>) throws(STUNDecodingError) -> STUNMessage {
        let bytes = Array(input)
        let count = bytes.count
        guard count >= headerSize else {
            throw STUNDecodingError(.truncatedHeader, offset: 0, detail: "\(count) bytes")
        }
        guard bytes[0] & 0xC0 == 0 else {
            throw STUNDecodingError(.notSTUN, offset: 0, detail: "first byte 0x\(String(bytes[0], radix: 16))")
        }
        guard count <= STUNLimits.maxMessageSize else {
            throw STUNDecodingError(.messageTooLarge, offset: 0, detail: "\(count) bytes")
        }
        let length = Int(bytes[2]) << 8 | Int(bytes[3])
        guard length % 4 == 0 else {
            throw STUNDecodingError(.lengthNotMultipleOfFour, offset: 2, detail: "length \(length)")
        }
        guard headerSize + length == count else {
            throw STUNDecodingError(.lengthMismatch, offset: 2, detail: "header says \(length), body has \(count - headerSize)")
        }
        let type = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        let (method, cls) = STUNMessageType.unpack(type)
        let cookie = UInt32(bytes[4]) << 24 | UInt32(bytes[5]) << 16 | UInt32(bytes[6]) << 8 | UInt32(bytes[7])
        let tid = STUNTransactionID(bytes: bytes[8..<20])!
        var message = STUNMessage(method: method, messageClass: cls, transactionID: tid, cookie: cookie)
        message.wireBytes = bytes

        var stage = DecodeStage.open
        var offset = headerSize
        var seen = 0
        while offset < count {
            guard count - offset >= 4 else {
                throw STUNDecodingError(.attributeHeaderTruncated, offset: offset, detail: "\(count - offset) bytes left")
            }
            let t = STUNAttributeType(UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1]))
            let len = Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            let valueStart = offset + 4
            guard count - valueStart >= len else {
                throw STUNDecodingError(.attributeTruncated, attribute: t, offset: offset,
                                        detail: "length \(len), \(count - valueStart) bytes left")
            }
            let padded = (len + 3) & ~3
            guard count - valueStart >= padded else {
                throw STUNDecodingError(.paddingTruncated, attribute: t, offset: offset,
                                        detail: "length \(len) needs \(padded - len) padding bytes")
            }
            seen += 1
            guard seen <= STUNLimits.maxAttributes else {
                throw STUNDecodingError(.tooManyAttributes, attribute: t, offset: offset, detail: "limit \(STUNLimits.maxAttributes)")
            }
            guard stage != .afterFingerprint else {
                throw STUNDecodingError(.attributeAfterFingerprint, attribute: t, offset: offset)
            }
            let attr = STUNAttribute(type: t, value: Array(bytes[valueStart..<(valueStart + len)]),
                                     wirePadding: padded == len ? [] : Array(bytes[(valueStart + len)..<(valueStart + padded)]),
                                     offset: offset)
            var counts = stage == .open
            switch t {
            case .fingerprint:
                guard len == 4 else {
                    throw STUNDecodingError(.invalidAttributeLength, attribute: t, offset: offset, detail: "\(len) bytes, want 4")
                }
                stage = .afterFingerprint
                counts = true
            case .messageIntegrity where stage == .open:
                guard len == 20 else {
                    throw STUNDecodingError(.invalidAttributeLength, attribute: t, offset: offset, detail: "\(len) bytes, want 20")
                }
                stage = .afterIntegrity
            case .messageIntegritySHA256 where stage == .open || stage == .afterIntegrity:
                guard len >= 16, len <= 32, len % 4 == 0 else {
                    throw STUNDecodingError(.invalidAttributeLength, attribute: t, offset: offset, detail: "\(len) bytes, want 16…32 in 4s")
                }
                stage = .afterIntegritySHA256
                counts = true
            default:
                if counts { try validateKnown(attr, transactionID: tid) }
            }
            if counts { message.attributes.append(attr) } else { message.ignoredAfterIntegrity.append(attr) }
            offset = valueStart + padded
        }
        return message
    }

    /// Checks the value of an attribute this module knows; unknown types pass untouched.
    private static func validateKnown(_ a: STUNAttribute, transactionID: STUNTransactionID) throws(STUNDecodingError) {
        guard let codec = knownCodecs[a.type] else { return }
        do {
            try codec(a.value[...], transactionID)
        } catch {
            var e = error
            e.attribute = a.type
            e.offset += a.offset + 4
            throw e
        }
    }

    private typealias Validator = @Sendable (ArraySlice<UInt8>, STUNTransactionID) throws(STUNDecodingError) -> Void

    private static func check<A: STUNAttributeValue>(_: A.Type) -> (STUNAttributeType, Validator) {
        (A.attributeType, { (v: ArraySlice<UInt8>, t: STUNTransactionID) throws(STUNDecodingError) in _ = try A(stunValue: v, transactionID: t) })
    }

    private static let knownCodecs: [STUNAttributeType: Validator] = Dictionary(uniqueKeysWithValues: [
        check(MappedAddress.self), check(XORMappedAddress.self), check(AlternateServer.self),
        check(ResponseOrigin.self), check(OtherAddress.self), check(SourceAddress.self), check(ChangedAddress.self), check(Username.self), check(Realm.self),
        check(Nonce.self), check(Software.self), check(Userhash.self), check(ErrorCode.self),
        check(UnknownAttributes.self), check(PasswordAlgorithm.self), check(PasswordAlgorithms.self),
        check(ChangeRequest.self), check(ResponsePort.self),
    ])

    // MARK: Encoding

    /// Encodes the message as it stands, then appends MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256
    /// and FINGERPRINT as asked, in that order (RFC 8489 §14.5–14.7).
    public func encode(integrityKey: [UInt8]? = nil, integritySHA256Key: [UInt8]? = nil, fingerprint: Bool = false) -> [UInt8] {
        var out = [UInt8]()
        var size = Self.headerSize
        for a in attributes { size += 4 + ((a.value.count + 3) & ~3) }
        out.reserveCapacity(size + 24 + 36 + 8)
        out += bytesOf(STUNMessageType.pack(method: method, messageClass: messageClass))
        out += [0, 0]
        out += bytesOf(cookie)
        out += transactionID.bytes
        for a in attributes { Self.appendAttribute(&out, a) }
        if let key = integrityKey {
            Self.setLength(&out, out.count - Self.headerSize + 24)
            let mac = STUNCrypto.hmacSHA1(key: key, out)
            Self.appendAttribute(&out, STUNAttribute(type: .messageIntegrity, value: mac))
        }
        if let key = integritySHA256Key {
            Self.setLength(&out, out.count - Self.headerSize + 36)
            let mac = STUNCrypto.hmacSHA256(key: key, out)
            Self.appendAttribute(&out, STUNAttribute(type: .messageIntegritySHA256, value: mac))
        }
        if fingerprint {
            Self.setLength(&out, out.count - Self.headerSize + 8)
            let crc = STUNCrypto.crc32(out[...]) ^ STUNCrypto.fingerprintXOR
            Self.appendAttribute(&out, STUNAttribute(type: .fingerprint, value: bytesOf(crc)))
        }
        Self.setLength(&out, out.count - Self.headerSize)
        return out
    }

    static func appendAttribute(_ out: inout [UInt8], _ a: STUNAttribute) {
        let len = min(a.value.count, 0xFFFF)
        out += bytesOf(a.type.rawValue)
        out += bytesOf(UInt16(len))
        out += a.value.prefix(len)
        let pad = ((len + 3) & ~3) - len
        if a.wirePadding.count == pad {
            out += a.wirePadding
        } else {
            for _ in 0..<pad { out.append(0) }
        }
    }

    static func setLength(_ out: inout [UInt8], _ length: Int) {
        out[2] = UInt8((length >> 8) & 0xFF)
        out[3] = UInt8(length & 0xFF)
    }

    // MARK: Integrity and fingerprint

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) over the received bytes in constant time (RFC 8489 §14.5).
    /// `false` when the attribute is absent or the message was not decoded from bytes.
    public func verifyMessageIntegrity(key: [UInt8]) -> Bool {
        guard let mi = attributes.first(where: { $0.type == .messageIntegrity }), !wireBytes.isEmpty else { return false }
        var prefix = Array(wireBytes[0..<mi.offset])
        Self.setLength(&prefix, mi.offset - Self.headerSize + 24)
        return STUNCrypto.constantTimeEqual(STUNCrypto.hmacSHA1(key: key, prefix), mi.value)
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 (possibly truncated to 16–32 bytes) in constant time (RFC 8489 §14.6).
    public func verifyMessageIntegritySHA256(key: [UInt8]) -> Bool {
        guard let mi = attributes.first(where: { $0.type == .messageIntegritySHA256 }), !wireBytes.isEmpty else { return false }
        var prefix = Array(wireBytes[0..<mi.offset])
        Self.setLength(&prefix, mi.offset - Self.headerSize + 4 + mi.value.count)
        let mac = STUNCrypto.hmacSHA256(key: key, prefix)
        return STUNCrypto.constantTimeEqual(Array(mac.prefix(mi.value.count)), mi.value)
    }

    /// True when MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 is present.
    public var hasIntegrity: Bool {
        attributes.contains { $0.type == .messageIntegrity || $0.type == .messageIntegritySHA256 }
    }

    /// `nil` when there is no FINGERPRINT; otherwise whether its CRC-32 matches (RFC 8489 §14.7).
    public var fingerprintValid: Bool? {
        guard let fp = attributes.last, fp.type == .fingerprint, !wireBytes.isEmpty else { return nil }
        var prefix = Array(wireBytes[0..<fp.offset])
        Self.setLength(&prefix, fp.offset - Self.headerSize + 8)
        let crc = STUNCrypto.crc32(prefix[...]) ^ STUNCrypto.fingerprintXOR
        return bytesOf(crc) == fp.value
    }
}

/// Where the decoder is relative to the integrity attributes (RFC 8489 §14.5–14.7).
private enum DecodeStage { case open, afterIntegrity, afterIntegritySHA256, afterFingerprint }

extension STUNMessage {
    /// Peeks at a datagram's first bytes: could it be STUN? (RFC 7983 §7 demultiplexing: first byte 0–3, cookie present.)
    public static func looksLikeSTUN(_ bytes: some Collection<UInt8>) -> Bool {
        guard bytes.count >= headerSize else { return false }
        var it = bytes.makeIterator()
        let b0 = it.next()!
        guard b0 & 0xC0 == 0 else { return false }
        _ = it.next(); _ = it.next(); _ = it.next()
        let c = [it.next()!, it.next()!, it.next()!, it.next()!]
        return c == [0x21, 0x12, 0xA4, 0x42]
    }
}
