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
}
