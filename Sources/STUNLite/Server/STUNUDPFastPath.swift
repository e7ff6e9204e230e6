import NIOCore

/// Answers the Binding request shapes that make up nearly all STUN-over-UDP traffic straight from the
/// datagram's bytes into a `ByteBuffer`: no `[UInt8]` copies, no attribute arrays, no dictionaries.
///
/// The shapes it takes:
///
/// ```
/// bare          20 bytes   0x0001 | length 0 | magic cookie | transaction ID
/// fingerprinted 28 bytes   0x0001 | length 8 | magic cookie | transaction ID | FINGERPRINT (valid CRC)
/// ```
///
/// It declines (`nil`) everything else — RFC 3489 requests, any other attribute, a wrong
/// fingerprint, other methods and classes, malformed input — and the caller hands those to
/// ``STUNBindingResponder/respond(to:from:on:transport:)``, which stays the one definition of the
/// server's behaviour. For what it takes, the reply is the responder's byte for byte: the same
/// XOR-MAPPED-ADDRESS, the same optional attributes (taken from
/// ``STUNBindingResponder/optionalAttributes(receivedOn:sendingFrom:classic:)``, encoded once, but
/// MAPPED-ADDRESS, written from the source) added in the same order under the same
/// ``STUNBindingResponder/maxAmplification`` budget, and FINGERPRINT only when the request had one.
/// It never changes the sending socket or the destination: the reply leaves from the receiving
/// socket to the request's source.
struct STUNUDPFastPath: Sendable {
    /// Size of a bare Binding request: the header alone (RFC 8489 §5).
    static let bareRequestSize = STUNMessage.headerSize
    /// Size of a FINGERPRINT attribute: 4-byte header and 4-byte CRC (RFC 8489 §14.7).
    static let fingerprintSize = 8
    /// Size of a Binding request whose only attribute is FINGERPRINT.
    static let fingerprintedRequestSize = bareRequestSize + fingerprintSize

    private static let requestType = STUNMessageType.pack(method: .binding, messageClass: .request)
    private static let successType = STUNMessageType.pack(method: .binding, messageClass: .successResponse)

    /// The largest reply the fast path writes: the amplification bound of the larger request shape.
    static let maxReplySize = STUNBindingResponder.maxAmplification * fingerprintedRequestSize

    /// The optional attributes for this socket in budget order, each fully encoded (header, value,
    /// padding); `nil` marks where MAPPED-ADDRESS goes.
    private let optional: [[UInt8]?]

    /// Precomputes the optional attributes that replies leaving from `role` carry.
    init(responder: STUNBindingResponder, role: STUNSocketRole) {
        optional = responder.optionalAttributes(receivedOn: role, sendingFrom: role, classic: false).map { attribute in
            guard case .fixed(let attribute) = attribute else { return nil }
            var bytes: [UInt8] = []
            STUNMessage.appendAttribute(&bytes, attribute)
            return bytes
        }
    }

    /// Appends the reply to `request` from `source` to `out` and returns its length, or returns `nil`
    /// and leaves `out` untouched when the request is not one of the shapes above (or, which cannot
    /// happen for them, the reply would not fit the amplification budget).
    ///
    /// Appending lets a handler write a whole read burst of replies into one buffer: one allocation per burst.
    func reply(to request: ByteBuffer, from source: TransportAddress, appendingTo out: inout ByteBuffer) -> Int? {
        request.withUnsafeReadableBytes { raw -> Int? in
            let count = raw.count
            guard count == Self.bareRequestSize || count == Self.fingerprintedRequestSize,
                  raw.loadUnaligned(fromByteOffset: 0, as: UInt16.self).bigEndian == Self.requestType,
                  Int(raw.loadUnaligned(fromByteOffset: 2, as: UInt16.self).bigEndian) == count - STUNMessage.headerSize,
                  raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self).bigEndian == STUNMessage.magicCookie
            else { return nil }
            let fingerprint = count == Self.fingerprintedRequestSize
            if fingerprint {
                let at = Self.bareRequestSize
                guard raw.loadUnaligned(fromByteOffset: at, as: UInt16.self).bigEndian == STUNAttributeType.fingerprint.rawValue,
                      raw.loadUnaligned(fromByteOffset: at + 2, as: UInt16.self).bigEndian == 4
                else { return nil }
                let crc = STUNCrypto.crc32(UnsafeRawBufferPointer(rebasing: raw[0..<at])) ^ STUNCrypto.fingerprintXOR
                guard raw.loadUnaligned(fromByteOffset: at + 4, as: UInt32.self).bigEndian == crc else { return nil }
            }

            let budget = STUNBindingResponder.maxAmplification * count
            let trailer = fingerprint ? Self.fingerprintSize : 0
            let addressSize = source.ip.isIPv4 ? 8 : 20
            var size = STUNMessage.headerSize + 4 + addressSize + trailer
            guard size <= budget else { return nil }

            let start = out.writerIndex
            out.reserveCapacity(minimumWritableBytes: Self.maxReplySize)
            out.writeInteger(Self.successType)
            out.writeInteger(UInt16(0))
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[4..<STUNMessage.headerSize]))
            // MAPPED-ADDRESS (RFC 8489 §14.1), or XOR-MAPPED-ADDRESS (§14.2): port XOR the cookie's top half,
            // address XOR cookie ‖ transaction ID.
            func writeAddress(xor: Bool) {
                out.writeInteger(xor ? STUNAttributeType.xorMappedAddress.rawValue : STUNAttributeType.mappedAddress.rawValue)
                out.writeInteger(UInt16(addressSize))
                out.writeInteger(UInt8(0))
                out.writeInteger(source.ip.stunFamily)
                out.writeInteger(source.port ^ (xor ? UInt16(STUNMessage.magicCookie >> 16) : 0))
                switch source.ip {
                case .v4(let address):
                    out.writeInteger(address ^ (xor ? STUNMessage.magicCookie : 0))
                case .v6(let high, let low):
                    out.writeInteger(high ^ (xor ? raw.loadUnaligned(fromByteOffset: 4, as: UInt64.self).bigEndian : 0))
                    out.writeInteger(low ^ (xor ? raw.loadUnaligned(fromByteOffset: 12, as: UInt64.self).bigEndian : 0))
                }
            }
            writeAddress(xor: true)
            for attribute in optional {
                if let attribute {
                    guard size + attribute.count <= budget else { continue }
                    out.writeBytes(attribute)
                    size += attribute.count
                } else if size + 4 + addressSize <= budget {
                    writeAddress(xor: false)
                    size += 4 + addressSize
                }
            }
            if fingerprint {
                out.setInteger(UInt16(out.writerIndex - start - STUNMessage.headerSize + Self.fingerprintSize), at: start + 2)
                let crc = out.withUnsafeReadableBytes { written in
                    STUNCrypto.crc32(UnsafeRawBufferPointer(rebasing: written[(start - out.readerIndex)...]))
                } ^ STUNCrypto.fingerprintXOR
                out.writeInteger(STUNAttributeType.fingerprint.rawValue)
                out.writeInteger(UInt16(4))
                out.writeInteger(crc)
            }
            let length = out.writerIndex - start
            out.setInteger(UInt16(length - STUNMessage.headerSize), at: start + 2)
            return length
        }
    }
}
