import NIOCore

/// Splits a TCP or TLS byte stream into STUN messages (and, when allowed, TURN ChannelData frames)
/// using their length fields (RFC 8489 §6.2.2; RFC 8656 §12.5 for ChannelData padding over streams).
///
/// A frame never exceeds ``STUNLimits/maxMessageSize``: the length field caps it, and nothing is
/// buffered past the current frame. Bytes that are neither STUN nor ChannelData end the stream with
/// a ``STUNDecodingError`` (`notSTUN`), since framing is lost.
public struct STUNFrameDecoder: ByteToMessageDecoder, Sendable {
    /// One whole frame's bytes.
    public typealias InboundOut = ByteBuffer

    /// Whether ChannelData frames (first two bits 01) are accepted.
    public let allowsChannelData: Bool

    /// Creates a decoder.
    public init(allowsChannelData: Bool = false) { self.allowsChannelData = allowsChannelData }

    /// The size of the frame at the front of `buffer`, once its first 4 bytes are there; throws for non-STUN bytes.
    public static func frameSize(_ buffer: ByteBuffer, allowsChannelData: Bool) throws -> Int? {
        guard let head = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        let length = Int(head & 0xFFFF)
        switch head >> 30 {
        case 0b00:
            return STUNMessage.headerSize + length
        case 0b01 where allowsChannelData:
            return 4 + ((length + 3) & ~3)
        default:
            throw STUNDecodingError(.notSTUN, offset: 0, detail: "stream frame starts 0x\(String(head >> 24, radix: 16))")
        }
    }

    /// Emits one frame when it is complete.
    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let size = try Self.frameSize(buffer, allowsChannelData: allowsChannelData),
              let frame = buffer.readSlice(length: size) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    /// Drops an incomplete tail at end of stream.
    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}
