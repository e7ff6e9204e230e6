import Foundation
import NIOCore
import NIOPosix
import STUNLite
import Testing
@testable import TURNLite

/// A relay in several shards (one event loop each, listeners sharing ports with `SO_REUSEPORT`): the
/// kernel steers every client to the shard its source address names, whatever its port or transport;
/// per-user quotas and relayed addresses hold across shards.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct TURNShardTests {
    static let shards = 2

    /// Runs `body` with a two-shard relay on 127.0.0.1 on its own two event loops, then stops both.
    static func withShardedServer(userQuota: Int = 100, _ body: (TURNServer) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: shards)
        let settings = TURNServerConfiguration(credentials: TURNCredentials(realm: "trav.test", users: ["u": "p"]),
                                               peerPolicy: TURNPeerPolicy(allowed: [IPPrefix("127.0.0.0/8")!]),
                                               maxAllocationsPerUser: userQuota)
        var configuration = TURNServer.Configuration(listenIP: IPAddress("127.0.0.1")!, port: 0, server: settings)
        configuration.shards = shards
        let server = try await TURNServer.start(configuration, group: group)
        do {
            try await body(server)
        } catch {
            await server.shutdown()
            try? await group.shutdownGracefully()
            throw error
        }
        await server.shutdown()
        try await group.shutdownGracefully()
    }

    /// A client allocating from `source` over `transport`.
    static func allocate(_ server: TURNServer, from source: String, tcp: Bool = false) async throws -> (TURNClient, TURNAllocation) {
        var configuration = TURNClient.Configuration(server: tcp ? server.tcpAddress! : server.udpAddress,
                                                     transport: tcp ? .tcp : .udp, username: "u", password: "p")
        configuration.localIP = IPAddress(source)
        let client = try await TURNClient.connect(configuration)
        do {
            return (client, try await client.allocate())
        } catch {
            await client.close()
            throw error
        }
    }

    /// Loopback sources, the first steered to shard 0 and the second to shard 1.
    static func sourcesOnBothShards() throws -> (String, String) {
        let candidates = (1...32).map { "127.0.0.\($0)" }
        let zero = try #require(candidates.first { TURNShardSteering.shard(of: IPAddress($0)!, shards: shards) == 0 })
        let one = try #require(candidates.first { TURNShardSteering.shard(of: IPAddress($0)!, shards: shards) == 1 })
        return (zero, one)
    }

    @Test func theKernelSteersEverySourceToTheShardItsAddressNamesOverUDPAndTCP() async throws {
        try await Self.withShardedServer { server in
            #expect(server.shardCount == Self.shards)
            var clients: [TURNClient] = []
            var expected = [Int](repeating: 0, count: Self.shards)
            for i in 1...6 {
                let source = "127.0.0.\(i)"
                // Several ports and both transports from one source: one shard.
                for tcp in [false, false] + (i <= 2 ? [true] : []) {
                    let (client, _) = try await Self.allocate(server, from: source, tcp: tcp)
                    clients.append(client)
                    expected[TURNShardSteering.shard(of: IPAddress(source)!, shards: Self.shards)] += 1
                    // Each allocation lands on the shard its source names (checked one by one, not only in sum).
                    #expect(await server.allocationCountPerShard == expected, "\(source) \(tcp ? "tcp" : "udp")")
                }
            }
            #expect(expected.allSatisfy { $0 > 0 }, "the sources chosen cover every shard: \(expected)")
            #expect(await server.allocationCount == clients.count)
            for c in clients { await c.close() }
        }
    }

    @Test func aUsersQuotaHoldsAcrossShards() async throws {
        let (a, b) = try Self.sourcesOnBothShards()
        try await Self.withShardedServer(userQuota: 2) { server in
            let (first, _) = try await Self.allocate(server, from: a)
            let (second, _) = try await Self.allocate(server, from: b)
            #expect(await server.allocationCountPerShard == [1, 1])
            let refused = await #expect(throws: TURNError.self, "a third allocation of the same user, on either shard, is over its quota") {
                let (third, _) = try await Self.allocate(server, from: a)
                await third.close()
            }
            #expect("\(refused.map { "\($0)" } ?? "")".contains("486"), "486 Allocation Quota Reached")
            #expect(await server.allocationCount == 2)
            await first.close()
            await second.close()
        }
    }

    @Test func twoAllocationsOnDifferentShardsRelayToEachOther() async throws {
        let (a, b) = try Self.sourcesOnBothShards()
        try await Self.withShardedServer { server in
            let (left, leftAllocation) = try await Self.allocate(server, from: a)
            let (right, rightAllocation) = try await Self.allocate(server, from: b)
            // Both relayed addresses are on the relay's own host: allowed as peers only because every shard
            // knows the other's live relayed addresses.
            try await left.createPermission(for: [rightAllocation.relayed])
            try await right.createPermission(for: [leftAllocation.relayed])
            let payload = Array("across shards".utf8)
            var arrivals = right.received.makeAsyncIterator()
            try await left.send(payload, to: rightAllocation.relayed)
            let got = await arrivals.next()
            #expect(got == TURNPeerData(peer: leftAllocation.relayed, payload: payload))
            await left.close()
            await right.close()
        }
    }

    @Test func steeringKeysOnTheIPv4AddressOrTheIPv6Slash64() {
        let n = 7
        let inPrefix = (1...20).map { IPAddress("2001:db8:1:2::\(String($0, radix: 16))")! }
        #expect(Set(inPrefix.map { TURNShardSteering.shard(of: $0, shards: n) }).count == 1, "one /64, one shard")
        let prefixes = (1...40).map { IPAddress("2001:db8:\(String($0, radix: 16)):1::1")! }
        #expect(Set(prefixes.map { TURNShardSteering.shard(of: $0, shards: n) }).count > 1, "/64s spread over shards")
        for v4 in ["192.0.2.1", "198.51.100.77", "203.0.113.254"] {
            #expect(TURNShardSteering.shard(of: IPAddress("::ffff:\(v4)")!, shards: n) == TURNShardSteering.shard(of: IPAddress(v4)!, shards: n),
                    "an IPv4-mapped source is its IPv4 address")
        }
        #expect(TURNShardSteering.program(shards: n).count == 14)
        #expect(TURNShardSteering.shard(of: IPAddress("192.0.2.1")!, shards: 1) == 0)
    }
}
