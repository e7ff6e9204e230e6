#if canImport(Glibc)
import Glibc
#endif
import Crypto
import NIOCore
import NIOEmbedded
import Testing
@testable import Rendezvous
@testable import Traversal

/// The presence socket's handler: the answers to one batch of reads leave together at the batch's end.
struct PresenceDatagramHandlerTests {
    @Test func answersWaitForTheEndOfTheReadBatchAndThenLeaveTogether() throws {
        let table = PresenceTable(configuration: .init(), tickets: nil)
        let channel = EmbeddedChannel(handler: PresenceDatagramHandler(table: table, logger: .init(label: "test")))
        defer { _ = try? channel.finish() }
        let camera = try SocketAddress(ipAddress: "198.51.100.7", port: 40_000)
        var grants: [(session: PresenceSessionID, key: SymmetricKey)] = []
        for _ in 0..<3 {
            var generator = SystemRandomNumberGenerator()
            grants.append(try #require(table.withLock { $0.open(DeviceIdentity.generate().deviceID, now: .now, using: &generator) }))
        }
        for grant in grants {
            let keepalive = PresenceDatagram(kind: .keepalive, session: grant.session, counter: 1).sealed(with: grant.key)
            try channel.writeInbound(AddressedEnvelope(remoteAddress: camera, data: ByteBuffer(bytes: keepalive)))
        }
        // writeInbound ends each read with channelReadComplete; read by hand, the batch stays queued until its end.
        let fourth = grants[0]
        let later = PresenceDatagram(kind: .keepalive, session: fourth.session, counter: 2).sealed(with: fourth.key)
        let acks = try (0..<3).map { _ in try #require(try channel.readOutbound(as: AddressedEnvelope<ByteBuffer>.self)) }
        #expect(acks.allSatisfy { $0.remoteAddress == camera })
        channel.pipeline.fireChannelRead(AddressedEnvelope(remoteAddress: camera, data: ByteBuffer(bytes: later)))
        #expect(try channel.readOutbound(as: AddressedEnvelope<ByteBuffer>.self) == nil, "not flushed before the batch ends")
        channel.pipeline.fireChannelReadComplete()
        let ack = try #require(try channel.readOutbound(as: AddressedEnvelope<ByteBuffer>.self))
        let opened = try PresenceDatagram.open(ack.data.readableBytesView, with: fourth.key)
        #expect(opened.kind == .ack && opened.session == fourth.session)
    }
}

/// The presence socket's thread runs above the rest of the cloud when the process may raise it (root).
struct PresenceThreadPriorityTests {
    @Test(.enabled(if: getuid() == 0, "raising a thread's priority needs root (CAP_SYS_NICE)"))
    func thePresenceThreadRunsAtItsRaisedNiceValue() async throws {
        let server = try await PresenceServer.start(
            host: "127.0.0.1", port: 0, configuration: .init(), tickets: nil, logger: .init(label: "test"))
        #expect(server.threadNice == PresenceServer.threadNice)
        #expect(PresenceServer.threadNice < 0)
        await server.stop()
    }

    /// A table with one session, and a stream handler on an embedded channel whose peer is `camera`.
    static func stream(timeout: Duration = .seconds(65)) throws
        -> (EmbeddedChannel, PresenceTable, PresenceStreams, (session: PresenceSessionID, key: SymmetricKey)) {
        let table = PresenceTable(configuration: .init(timeout: timeout), tickets: nil)
        var generator = SystemRandomNumberGenerator()
        let grant = try #require(table.withLock { $0.open(DeviceIdentity.generate().deviceID, now: .now, using: &generator) })
        let streams = PresenceStreams()
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "198.51.100.7", port: 40_000)).wait()
        let id = streams.add(channel)
        try channel.pipeline.syncOperations.addHandler(PresenceStreamHandler(
            id: id, table: table, streams: streams, timeout: timeout, firstTimeout: .seconds(10), logger: .init(label: "test")))
        return (channel, table, streams, grant)
    }

    /// Keepalives split across reads are answered on the stream, and the session's wake goes there too.
    @Test func aStreamsKeepalivesAreAnsweredOnItWhateverTheReads() throws {
        let (channel, table, streams, grant) = try Self.stream()
        defer { _ = try? channel.finish() }
        let bytes = (1...3).flatMap { PresenceDatagram(kind: .keepalive, session: grant.session, counter: UInt64($0)).sealed(with: grant.key) }
        for chunk in stride(from: 0, to: bytes.count, by: 10) {
            try channel.writeInbound(ByteBuffer(bytes: bytes[chunk..<min(chunk + 10, bytes.count)]))
        }
        var answers: [PresenceDatagram] = []
        while let reply = try channel.readOutbound(as: ByteBuffer.self) {
            answers.append(try PresenceDatagram.open(reply.readableBytesView, with: grant.key))
        }
        #expect(answers.map(\.kind) == [.ack, .ack, .ack] && answers.map(\.counter) == [1, 2, 3])
        #expect(streams.count == 1)
        guard case .send(_, .stream)? = table.withLock({ $0.wake(grant.session) }) else {
            Issue.record("the wake does not go on the stream")
            return
        }
        try channel.close().wait()
        #expect(streams.count == 0)
        #expect(table.withLock { $0.wake(grant.session) } == nil, "no route after the stream closed")
    }

    /// On a reliable stream only a camera's authentic datagrams come: a forged one, a kind only the cloud sends, or
    /// bytes that start no datagram close it at once.
    @Test func aDatagramThatDoesNotAuthenticateClosesTheStream() throws {
        for garbage in 0..<3 {
            let (channel, _, streams, grant) = try Self.stream()
            let bytes: [UInt8] = switch garbage {
            case 0: PresenceDatagram(kind: .keepalive, session: grant.session, counter: 1).sealed(with: SymmetricKey(size: .bits256))
            case 1: PresenceDatagram(kind: .wake, session: grant.session, counter: 1).sealed(with: grant.key)
            default: [0x16, 0x03, 0x01, 0x00, 0x40]
            }
            _ = try? channel.writeInbound(ByteBuffer(bytes: bytes))
            #expect(!channel.isActive && streams.count == 0, "case \(garbage)")
            #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "case \(garbage): nothing answered")
            _ = try? channel.finish()
        }
    }

    /// A stream is closed when its first keepalive does not come within the first timeout, or when keepalives stop
    /// for the table's timeout.
    @Test func aSilentStreamIsClosed() throws {
        let (silent, _, _, _) = try Self.stream()
        silent.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(silent.isActive)
        silent.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!silent.isActive, "no keepalive within 10 s")
        _ = try? silent.finish()

        let (channel, _, _, grant) = try Self.stream(timeout: .seconds(30))
        try channel.writeInbound(ByteBuffer(bytes: PresenceDatagram(kind: .keepalive, session: grant.session, counter: 1).sealed(with: grant.key)))
        channel.embeddedEventLoop.advanceTime(by: .seconds(20))
        try channel.writeInbound(ByteBuffer(bytes: PresenceDatagram(kind: .keepalive, session: grant.session, counter: 2).sealed(with: grant.key)))
        channel.embeddedEventLoop.advanceTime(by: .seconds(29))
        #expect(channel.isActive, "kept alive")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive, "30 s without a keepalive")
        _ = try? channel.finish()
    }
}
