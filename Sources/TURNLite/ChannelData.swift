import STUNLite

/// A ChannelData message: channel number, length and application data, no STUN header (RFC 8656 §12.4).
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |         Channel Number        |            Length             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// /                       Application Data                        /
/// +-------------------------------+-------------------------------+
/// ```
///
/// Over TCP and TLS the message is padded to a multiple of four bytes with zeros (RFC 8656 §12.5);
/// over UDP padding is optional, and this module sends none.
public struct ChannelData: Hashable, Sendable {
    /// The 4-byte header (RFC 8656 §12.4).
    public static let headerSize = 4

    /// The channel number, 0x4000–0x4FFF for valid channels (RFC 8656 §12).
    public var channel: UInt16
    /// The application data.
    public var payload: [UInt8]

    /// Creates a message.
    public init(channel: UInt16, payload: [UInt8]) {
        self.channel = channel
        self.payload = payload
    }

    /// True when the first byte starts with bits 01, the ChannelData range 0x40–0x7F (RFC 8656 §12.4, RFC 7983 §7).
    public static func looksLikeChannelData(_ first: UInt8) -> Bool { first & 0xC0 == 0x40 }

    /// Reads channel number and length from the first 4 bytes; `nil` when fewer bytes or not ChannelData (RFC 8656 §12.4).
    public static func header(_ bytes: some Collection<UInt8>) -> (channel: UInt16, length: Int)? {
        var it = bytes.makeIterator()
        guard let b0 = it.next(), let b1 = it.next(), let b2 = it.next(), let b3 = it.next(),
              looksLikeChannelData(b0) else { return nil }
        return (UInt16(b0) << 8 | UInt16(b1), Int(b2) << 8 | Int(b3))
    }

    /// Decodes one message; the length must fit the bytes, trailing bytes are padding and ignored (RFC 8656 §12.4–12.5).
    public static func decode(_ input: some Collection<UInt8>) throws(STUNDecodingError) -> ChannelData {
        let bytes = Array(input)
        guard case let (channel, length)? = header(bytes) else {
            throw STUNDecodingError(.notSTUN, offset: 0, detail: "not a ChannelData message")
        }
        guard bytes.count - headerSize >= length else {
            throw STUNDecodingError(.lengthMismatch, offset: 2, detail: "length \(length), \(bytes.count - headerSize) bytes follow")
        }
        guard bytes.count - headerSize - length < 4 else {
            throw STUNDecodingError(.lengthMismatch, offset: 2, detail: "\(bytes.count - headerSize - length) bytes after the data")
        }
        return ChannelData(channel: channel, payload: Array(bytes[headerSize..<(headerSize + length)]))
    }

    /// The header for `length` payload bytes on `channel` (RFC 8656 §12.4).
    public static func encodeHeader(channel: UInt16, length: Int) -> [UInt8] {
        [UInt8(channel >> 8), UInt8(channel & 0xFF), UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF)]
    }

    /// Zero padding bytes that follow `length` payload bytes over a stream (RFC 8656 §12.5).
    public static func streamPadding(length: Int) -> Int { (4 - length % 4) % 4 }

    /// Encodes the message; `padded` adds zero padding to a multiple of 4, as streams require (RFC 8656 §12.5).
    public func encode(padded: Bool) -> [UInt8] {
        var out = Self.encodeHeader(channel: channel, length: payload.count)
        out += payload
        if padded { out += [UInt8](repeating: 0, count: Self.streamPadding(length: payload.count)) }
        return out
    }
}
