import NIOCore
import NIOPosix
import Synchronization
import Testing
import STUNLite
@testable import TURNLite

/// Slot exhaustion on the relay's TCP listener: one source cannot take every connection, and a
/// connection that never allocates is closed soon, however it behaves.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct TURNStreamLimitTests {
    static let attacker = IPAddress("127.0.0.1")!
    static let other = IPAddress("127.0.0.2")!

    /// Connects over TCP from `local` to `server`, sending nothing; the channel closes when the server closes it.
    static func idleConnection(from local: IPAddress, to server: TransportAddress) async throws -> any Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(to: TransportAddress(ip: local, port: 0).socketAddress)
            .connect(to: server.socketAddress).get()
    }

    /// How many of `channels` are closed, once at least `count` are or `limit` has passed (polled every 50 ms).
    static func closed(_ channels: [any Channel], atLeast count: Int, within limit: Duration) async throws -> Int {
        let deadline = ContinuousClock.now + limit
        while true {
            let n = channels.filter { !$0.isActive }.count
            if n >= count || ContinuousClock.now >= deadline { return n }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// 12 idle connections from one address (a new port each) to a relay holding 8, 4 per source.
    static func attack(deadline: Double) async throws -> (TURNServer, [any Channel]) {
        var settings = TURNServerConfiguration(credentials: TURNCredentials(realm: "trav.test", users: ["u": "p"]))
        settings.streamAuthenticationTimeout = deadline
        let server = try await TURNServer.start(.init(
            listenIP: attacker, port: 0, server: settings, maxStreamConnections: 8, maxStreamConnectionsPerSource: 4,
            sweepInterval: .milliseconds(100)))
        var idle: [any Channel] = []
        for _ in 0..<12 { idle.append(try await idleConnection(from: attacker, to: try #require(server.tcpAddress))) }
        return (server, idle)
    }

    @Test func idleConnectionsFromOneSourceLeaveRoomForOthers() async throws {
        let (server, idle) = try await Self.attack(deadline: 60)
        defer { Task { await server.shutdown() } }
        #expect(try await Self.closed(idle, atLeast: 8, within: .seconds(5)) == 8, "beyond 4 per source, closed on accept")
        // Another source is still served while the attacker holds its four slots.
        let reply = try await STUNTCPClient.binding(to: try #require(server.tcpAddress), from: TransportAddress(ip: Self.other, port: 0),
                                                    timeout: .seconds(5))
        #expect(reply.mappedAddress?.ip == Self.other)
        #expect(idle.filter(\.isActive).count == 4)
        for c in idle { try? await c.close() }
    }

    @Test func idleConnectionsAreClosedAtTheAllocationDeadline() async throws {
        // The idle timeout is an hour; connections that never allocate go at the deadline all the same.
        let (server, idle) = try await Self.attack(deadline: 0.5)
        defer { Task { await server.shutdown() } }
        #expect(try await Self.closed(idle, atLeast: idle.count, within: .seconds(10)) == idle.count)
        for c in idle { try? await c.close() }
    }

    @Test func aConnectionThatAllocatesOutlivesTheDeadline() async throws {
        var settings = TURNServerConfiguration(credentials: TURNCredentials(realm: "trav.test", users: ["u": "p"]))
        settings.streamAuthenticationTimeout = 0.5
        let server = try await TURNServer.start(.init(listenIP: Self.attacker, port: 0, server: settings,
                                                      sweepInterval: .milliseconds(100)))
        defer { Task { await server.shutdown() } }
        let client = try await TURNClient.connect(.init(server: try #require(server.tcpAddress), transport: .tcp,
                                                        username: "u", password: "p"))
        _ = try await client.allocate()
        try await Task.sleep(for: .milliseconds(1500))
        #expect(try await client.refresh() > 0, "still served after three deadlines")
        await client.close()
    }
}
