import NIOCore

/// The ALPN protocol IDs a TLS ClientHello offers (RFC 7301 §3.1), read from a connection's first bytes
/// before TLS consumes them.
///
/// A TLS server that shares its port between protocols must refuse a client whose offer names none of
/// them (RFC 7301 §3.2), but NIOSSL answers such a ClientHello without ALPN and carries on; reading the
/// offer first lets the cloud refuse it instead of falling back to one of its protocols.
///
/// ```
///  TLSPlaintext (RFC 8446 §5.1)      type 22 | version(2) | length(2) | fragment ...   (repeated)
///  Handshake (§4)                    type 1  | length(3)  | ClientHello
///  ClientHello (§4.1.2)              version(2) random(32) session_id<0..32> cipher_suites<2..>
///                                    compression_methods<1..> extensions<8..>
///  Extension (§4.2)                  type(2) length(2) data      ALPN: type 16, data = ProtocolNameList
/// ```
enum ClientHelloALPN: Equatable, Sendable {
    /// The ClientHello is not complete yet.
    case needMoreBytes
    /// The protocols offered, in the client's order; empty when the client sent no ALPN extension.
    case offered([String])
    /// Not a TLS ClientHello, or one that breaks the encoding, or longer than ``maxClientHelloBytes``.
    case malformed

    /// Longest ClientHello read (handshake message body): one full TLS record (RFC 8446 §5.1). Real
    /// ClientHellos, post-quantum key shares included, are well under it.
    static let maxClientHelloBytes = 16_384
    /// Longest TLS record fragment (RFC 8446 §5.1).
    static let maxRecordBytes = 16_384
    /// TLS record header: content type, legacy version, length (RFC 8446 §5.1).
    static let recordHeaderBytes = 5
    /// TLS content type of handshake records (RFC 8446 §5.1).
    static let handshakeContentType: UInt8 = 22
    /// Handshake message type of a ClientHello (RFC 8446 §4).
    static let clientHelloType: UInt8 = 1
    /// Extension type of ALPN (RFC 7301 §3.1).
    static let alpnExtensionType: UInt16 = 16

    /// Reads the ClientHello at the start of `bytes` (not consumed), reassembling it from several records if needed.
    static func read(_ bytes: ByteBuffer) -> ClientHelloALPN {
        var reader = ClientHelloReader()
        return reader.read(bytes)
    }

    /// The ALPN offer of a ClientHello body (RFC 8446 §4.1.2, RFC 7301 §3.1).
    static func parseClientHello(_ body: ByteBuffer) -> ClientHelloALPN {
        var hello = body
        guard hello.readSlice(length: 2 + 32) != nil,                      // legacy_version, random
              hello.readLengthPrefixedSlice(as: UInt8.self) != nil,            // legacy_session_id
              hello.readLengthPrefixedSlice(as: UInt16.self) != nil,           // cipher_suites
              hello.readLengthPrefixedSlice(as: UInt8.self) != nil else {      // legacy_compression_methods
            return .malformed
        }
        guard hello.readableBytes > 0 else { return .offered([]) }        // no extensions at all (TLS 1.2 allows it)
        guard var extensions = hello.readLengthPrefixedSlice(as: UInt16.self), hello.readableBytes == 0 else { return .malformed }
        var offered: [String] = []
        while extensions.readableBytes > 0 {
            guard let type = extensions.readInteger(as: UInt16.self),
                  var data = extensions.readLengthPrefixedSlice(as: UInt16.self) else { return .malformed }
            guard type == alpnExtensionType else { continue }
            guard offered.isEmpty, var names = data.readLengthPrefixedSlice(as: UInt16.self), data.readableBytes == 0,
                  names.readableBytes > 0 else { return .malformed }
            while names.readableBytes > 0 {
                guard let name = names.readLengthPrefixedSlice(as: UInt8.self), name.readableBytes > 0 else { return .malformed }
                offered.append(String(decoding: name.readableBytesView, as: UTF8.self))
            }
        }
        return .offered(offered)
    }
}

/// Reassembles a ClientHello from a connection's first bytes as they arrive, looking at each byte once.
///
/// Each call gets every byte received so far but parses only the records that completed since the
/// last call, so a ClientHello cut into many tiny records and delivered in many small reads costs
/// time linear in its size, not quadratic.
struct ClientHelloReader {
    /// Bytes of the stream already parsed (whole records).
    private var consumed = 0
    /// The handshake bytes of those records.
    private var handshake = ByteBuffer()
    /// Records parsed so far.
    private(set) var recordsRead = 0

    /// The verdict on the stream's first bytes, `bytes` (from the start of the connection, not consumed).
    mutating func read(_ bytes: ByteBuffer) -> ClientHelloALPN {
        guard var records = bytes.getSlice(at: bytes.readerIndex + consumed, length: bytes.readableBytes - consumed) else {
            return .malformed
        }
        while true {
            guard let header = records.readSlice(length: ClientHelloALPN.recordHeaderBytes) else { return .needMoreBytes }
            guard header.getInteger(at: header.readerIndex, as: UInt8.self) == ClientHelloALPN.handshakeContentType,
                  let length = header.getInteger(at: header.readerIndex + 3, as: UInt16.self),
                  length > 0, Int(length) <= ClientHelloALPN.maxRecordBytes else { return .malformed }
            guard var fragment = records.readSlice(length: Int(length)) else { return .needMoreBytes }
            consumed += ClientHelloALPN.recordHeaderBytes + Int(length)
            recordsRead += 1
            handshake.writeBuffer(&fragment)
            guard handshake.readableBytes >= 4 else { continue }
            guard handshake.getInteger(at: handshake.readerIndex, as: UInt8.self) == ClientHelloALPN.clientHelloType,
                  let lengthHigh = handshake.getInteger(at: handshake.readerIndex + 1, as: UInt8.self),
                  let lengthLow = handshake.getInteger(at: handshake.readerIndex + 2, as: UInt16.self) else { return .malformed }
            let bodyLength = Int(lengthHigh) << 16 | Int(lengthLow)
            guard bodyLength <= ClientHelloALPN.maxClientHelloBytes else { return .malformed }
            guard let body = handshake.getSlice(at: handshake.readerIndex + 4, length: bodyLength) else { continue }
            return ClientHelloALPN.parseClientHello(body)
        }
    }
}

/// Sits in front of the TLS handler and refuses, with a fatal `no_application_protocol` alert (RFC 7301
/// §3.2), a client whose ALPN offer names none of `supported`; a client that offers no ALPN passes. Once
/// the ClientHello passed it hands every byte on unchanged and leaves the pipeline.
final class ALPNOfferGateHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Most bytes held while the ClientHello is incomplete: a ClientHello of the largest accepted size
    /// cut into one-byte records (each with its 5-byte header), plus one full record.
    static let maxBufferedBytes = (ClientHelloALPN.maxClientHelloBytes + 4) * (1 + ClientHelloALPN.recordHeaderBytes)
        + ClientHelloALPN.recordHeaderBytes + ClientHelloALPN.maxRecordBytes
    /// TLS alert `no_application_protocol` (RFC 7301 §3.2, RFC 8446 §6).
    static let noApplicationProtocol: UInt8 = 120
    /// TLS alert `decode_error` (RFC 8446 §6.2).
    static let decodeError: UInt8 = 50

    private let supported: Set<String>
    private var buffered: ByteBuffer?
    private var reader = ClientHelloReader()
    private var refused = false

    /// A gate letting through clients that offer one of `supported`, or no ALPN at all.
    init(supported: [String]) {
        self.supported = Set(supported)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        var incoming = unwrapInboundIn(data)
        if buffered == nil {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        guard let bytes = buffered else { return }
        switch reader.read(bytes) {
        case .needMoreBytes:
            if bytes.readableBytes > Self.maxBufferedBytes { refuse(context, alert: Self.decodeError) }
        case .offered(let protocols) where protocols.isEmpty || protocols.contains(where: supported.contains):
            buffered = nil
            context.fireChannelRead(wrapInboundOut(bytes))
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        case .offered:
            refuse(context, alert: Self.noApplicationProtocol)
        case .malformed:
            refuse(context, alert: Self.decodeError)
        }
    }

    /// Sends a fatal alert in a plaintext record (the handshake has not started) and closes.
    private func refuse(_ context: ChannelHandlerContext, alert: UInt8) {
        refused = true
        buffered = nil
        var record = context.channel.allocator.buffer(capacity: ClientHelloALPN.recordHeaderBytes + 2)
        record.writeInteger(UInt8(21))          // content type: alert (RFC 8446 §5.1)
        record.writeInteger(UInt16(0x0303))     // legacy_record_version
        record.writeInteger(UInt16(2))
        record.writeInteger(UInt8(2))           // level: fatal (RFC 8446 §6)
        record.writeInteger(alert)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(record)).whenComplete { _ in channel.close(promise: nil) }
    }
}
