import NIOCore
import NIOEmbedded
import NIOSSL
import Testing
@testable import Rendezvous

/// Reading the ALPN offer out of real ClientHellos (made by NIOSSL's client), and the gate in front of the
/// cloud's TLS, without sockets (RFC 7301 §3, RFC 8446 §4.1.2).
struct ClientHelloALPNTests {
    /// The bytes NIOSSL's client sends first: its ClientHello, offering `protocols`.
    static func clientHello(offering protocols: [String]) throws -> ByteBuffer {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.applicationProtocols = protocols
        tls.certificateVerification = .none
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        try channel.pipeline.syncOperations.addHandler(
            try NIOSSLClientHandler(context: NIOSSLContext(configuration: tls), serverHostname: nil))
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.1", port: 443)).wait()
        var out = ByteBuffer()
        while var chunk = try channel.readOutbound(as: ByteBuffer.self) { out.writeBuffer(&chunk) }
        return out
    }

    /// The same handshake bytes cut into records of at most `size` bytes each (RFC 8446 §5.1 allows it).
    static func refragment(_ hello: ByteBuffer, recordSize size: Int) -> ByteBuffer {
        var records = hello
        var out = ByteBuffer()
        while let header = records.readSlice(length: 5), let length = header.getInteger(at: header.readerIndex + 3, as: UInt16.self),
              var fragment = records.readSlice(length: Int(length)) {
            while fragment.readableBytes > 0 {
                var piece = fragment.readSlice(length: min(size, fragment.readableBytes))!
                out.writeInteger(UInt8(22))
                out.writeInteger(UInt16(0x0301))
                out.writeInteger(UInt16(piece.readableBytes))
                out.writeBuffer(&piece)
            }
        }
        return out
    }

    /// A ClientHello of the largest accepted size (padding extension, RFC 7685), offering `trav/1`, as one record.
    static func largestClientHello() -> ByteBuffer {
        var alpn = ByteBuffer()
        alpn.writeInteger(UInt16(7))
        alpn.writeInteger(UInt8(6))
        alpn.writeString("trav/1")
        var body = ByteBuffer()
        body.writeInteger(UInt16(0x0303))
        body.writeRepeatingByte(7, count: 32)
        body.writeInteger(UInt8(0))                                  // legacy_session_id
        body.writeInteger(UInt16(2))
        body.writeInteger(UInt16(0x1301))                            // cipher_suites
        body.writeInteger(UInt8(1))
        body.writeInteger(UInt8(0))                                  // legacy_compression_methods
        let fixed = body.readableBytes + 2 + 4 + alpn.readableBytes + 4
        let padding = ClientHelloALPN.maxClientHelloBytes - fixed
        body.writeInteger(UInt16(4 + alpn.readableBytes + 4 + padding))
        body.writeInteger(ClientHelloALPN.alpnExtensionType)
        body.writeInteger(UInt16(alpn.readableBytes))
        body.writeImmutableBuffer(alpn)
        body.writeInteger(UInt16(21))                                // padding
        body.writeInteger(UInt16(padding))
        body.writeRepeatingByte(0, count: padding)
        var record = ByteBuffer()
        record.writeInteger(UInt8(22))
        record.writeInteger(UInt16(0x0301))
        record.writeInteger(UInt16(4 + body.readableBytes))
        record.writeInteger(ClientHelloALPN.clientHelloType)
        record.writeInteger(UInt8(0))
        record.writeInteger(UInt16(body.readableBytes))
        record.writeImmutableBuffer(body)
        return record
    }

    @Test func aLargestClientHelloInOneByteRecordsAndSmallReadsIsParsedOnce() throws {
        // About 98 kB: every handshake byte in its own record. Fed as TCP might deliver it, 64 bytes
        // per read, each record is still parsed exactly once (before, every read re-parsed all).
        let stream = Self.refragment(Self.largestClientHello(), recordSize: 1)
        #expect(stream.readableBytes > 98_000)
        var reader = ClientHelloReader()
        var verdict = ClientHelloALPN.needMoreBytes
        var received = 0
        while received < stream.readableBytes {
            received = min(received + 64, stream.readableBytes)
            verdict = reader.read(stream.getSlice(at: stream.readerIndex, length: received)!)
            if verdict != .needMoreBytes { break }
        }
        #expect(verdict == .offered(["trav/1"]))
        #expect(received == stream.readableBytes)
        #expect(reader.recordsRead == ClientHelloALPN.maxClientHelloBytes + 4)
        // The gate reads the same stream in small reads and lets it through unchanged.
        let channel = EmbeddedChannel(handler: ALPNOfferGateHandler(supported: ["trav/1"]))
        var rest = stream
        while let piece = rest.readSlice(length: min(64, rest.readableBytes)), piece.readableBytes > 0 {
            try channel.writeInbound(piece)
        }
        #expect(try channel.readInbound(as: ByteBuffer.self) == stream)
        _ = try channel.finish()
    }

    @Test func readsTheOfferOfARealClientHello() throws {
        #expect(ClientHelloALPN.read(try Self.clientHello(offering: ["stun.turn", "trav/1"])) == .offered(["stun.turn", "trav/1"]))
        #expect(ClientHelloALPN.read(try Self.clientHello(offering: ["h2"])) == .offered(["h2"]))
        #expect(ClientHelloALPN.read(try Self.clientHello(offering: [])) == .offered([]), "no ALPN extension")
    }

    @Test func everyTruncationAsksForMoreBytes() throws {
        let hello = try Self.clientHello(offering: ["stun.turn"])
        for length in 0..<hello.readableBytes {
            #expect(ClientHelloALPN.read(hello.getSlice(at: hello.readerIndex, length: length)!) == .needMoreBytes, "\(length) bytes")
        }
    }

    @Test(arguments: [1, 7, 100]) func aClientHelloSpreadOverRecordsIsReassembled(_ size: Int) throws {
        let hello = Self.refragment(try Self.clientHello(offering: ["trav/1", "stun.turn"]), recordSize: size)
        #expect(ClientHelloALPN.read(hello) == .offered(["trav/1", "stun.turn"]))
    }

    @Test func otherProtocolsAndBrokenEncodingsAreMalformed() throws {
        #expect(ClientHelloALPN.read(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n")) == .malformed)
        #expect(ClientHelloALPN.read(ByteBuffer(bytes: [22, 3, 1, 0, 0])) == .malformed, "empty record")
        #expect(ClientHelloALPN.read(ByteBuffer(bytes: [22, 3, 1, 0x40, 0x01])) == .malformed, "record above 2^14")
        #expect(ClientHelloALPN.read(ByteBuffer(bytes: [22, 3, 1, 0, 4, 2, 0, 0, 0])) == .malformed, "a ServerHello")
        #expect(ClientHelloALPN.read(ByteBuffer(bytes: [22, 3, 1, 0, 4, 1, 0x01, 0, 0])) == .malformed, "longer than the limit")
        #expect(ClientHelloALPN.read(ByteBuffer(bytes: [22, 3, 1, 0, 6, 1, 0, 0, 2, 3, 3])) == .malformed, "body too short")
    }

    @Test func corruptedClientHellosNeverTrap() throws {
        let hello = try Self.clientHello(offering: ["stun.turn", "trav/1"])
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var bytes = Array(hello.readableBytesView)
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            _ = ClientHelloALPN.read(ByteBuffer(bytes: bytes))
        }
    }

    @Test func gatePassesASupportedOfferUnchangedAndLeaves() throws {
        for offer in [["trav/1"], ["h2", "stun.turn"], []] {
            let hello = try Self.clientHello(offering: offer)
            let channel = EmbeddedChannel(handler: ALPNOfferGateHandler(supported: ["trav/1", "stun.turn"]))
            // In two pieces, as TCP may deliver it.
            try channel.writeInbound(hello.getSlice(at: hello.readerIndex, length: 10)!)
            #expect(try channel.readInbound(as: ByteBuffer.self) == nil, "nothing passes before the offer is known")
            try channel.writeInbound(hello.getSlice(at: hello.readerIndex + 10, length: hello.readableBytes - 10)!)
            #expect(try channel.readInbound(as: ByteBuffer.self) == hello, "\(offer)")
            #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: ALPNOfferGateHandler.self) }
            _ = try channel.finish()
        }
    }

    @Test func gateRefusesAnOfferOfOnlyOtherProtocolsWithTheRFC7301Alert() throws {
        let channel = EmbeddedChannel(handler: ALPNOfferGateHandler(supported: ["trav/1", "stun.turn"]))
        try channel.writeInbound(try Self.clientHello(offering: ["h2", "http/1.1"]))
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        let alert = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Array(alert.readableBytesView) == [21, 3, 3, 0, 2, 2, 120], "fatal no_application_protocol")
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive, "closed after the alert")
    }

    @Test func gateRefusesWhatIsNotAClientHello() throws {
        let channel = EmbeddedChannel(handler: ALPNOfferGateHandler(supported: ["trav/1"]))
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n"))
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        let alert = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Array(alert.readableBytesView) == [21, 3, 3, 0, 2, 2, 50], "fatal decode_error")
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
    }
}
