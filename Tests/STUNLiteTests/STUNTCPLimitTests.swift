import NIOCore
import NIOPosix
import STUNLite
import Testing

/// Slot exhaustion on the STUN server's TCP listener: per-source limits, and an idle timeout that
/// stray bytes do not extend.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct STUNTCPLimitTests {
    static let attacker = IPAddress("127.0.0.1")!
    static let other = IPAddress("127.0.0.2")!

    static func start() async throws -> STUNServer {
        try await STUNServer.start(.init(listenIP: attacker, port: 0, tcpIdleTimeout: .milliseconds(500),
                                         maxTCPConnections: 8, maxTCPConnectionsPerSource: 4))
    }

    static func connect(from local: IPAddress, to server: TransportAddress) async throws -> any Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(to: TransportAddress(ip: local, port: 0).socketAddress)
            .connect(to: server.socketAddress).get()
    }

    @Test func oneSourceCannotTakeEveryConnection() async throws {
        let server = try await Self.start()
        defer { Task { await server.shutdown() } }
        let tcp = try #require(server.tcpAddresses.first)
        var held: [any Channel] = []
        for _ in 0..<12 { held.append(try await Self.connect(from: Self.attacker, to: tcp)) }
        var closed = 0
        for _ in 0..<100 {
            closed = held.filter { !$0.isActive }.count
            if closed >= 8 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(closed >= 8, "beyond 4 per source, closed on accept")
        let reply = try await STUNTCPClient.binding(to: tcp, from: TransportAddress(ip: Self.other, port: 0), timeout: .seconds(5))
        #expect(reply.mappedAddress?.ip == Self.other)
        for c in held { try? await c.close() }
    }

    @Test func aMessageDrippedAByteAtATimeDoesNotKeepTheConnectionOpen() async throws {
        let server = try await Self.start()
        defer { Task { await server.shutdown() } }
        let channel = try await Self.connect(from: Self.attacker, to: try #require(server.tcpAddresses.first))
        let request = STUNMessage(method: .binding, messageClass: .request).encode()
        var sent = 0
        // One byte every 150 ms: the 20-byte request would take 3 s, six idle timeouts.
        while sent < request.count, channel.isActive {
            try? await channel.writeAndFlush(ByteBuffer(bytes: [request[sent]])).get()
            sent += 1
            try await Task.sleep(for: .milliseconds(150))
        }
        #expect(!channel.isActive)
        #expect(sent < request.count, "closed before the message was complete")
        try? await channel.close()
    }
}
