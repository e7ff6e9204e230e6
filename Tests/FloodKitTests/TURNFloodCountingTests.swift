#if canImport(Glibc)
import Glibc
#endif
import NIOSSL
import Rendezvous
import Testing
import FloodKit
import STUNLite
import TURNLite

/// The TURN load generator counts what it sends and what arrives exactly; timing is never asserted.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct TURNFloodCountingTests {
    static let loopback = IPAddress("127.0.0.1")!

    /// Our relay on 127.0.0.1 (UDP, TCP, TLS) with user bench:bench, loopback peers, no bandwidth quota,
    /// and a challenge limit the floods below stay well inside.
    static func withServer(_ body: (TURNServer) async throws -> Void) async throws {
        let settings = TURNServerConfiguration(
            credentials: TURNCredentials(realm: "trav.test", users: ["bench": "bench"]),
            peerPolicy: TURNPeerPolicy(allowed: [IPPrefix("127.0.0.0/8")!]),
            maxAllocationsPerUser: 64, bandwidthPerUser: nil, challengeBurst: 10_000, challengeRatePerSecond: 10_000)
        let generated = try CloudCertificates.ephemeral(names: ["\(loopback)"])
        let tls = try NIOSSLContext(configuration: TURNTLS.serverConfiguration(
            certificatePEM: generated.certificateChainPEM, privateKeyPEM: generated.privateKeyPEM))
        let server = try await TURNServer.start(.init(listenIP: loopback, port: 0, tls: (0, tls), server: settings))
        do {
            try await body(server)
        } catch {
            await server.shutdown()
            throw error
        }
        await server.shutdown()
    }

    /// The server's address for `transport`: its UDP/TCP port or its TLS port.
    static func address(of server: TURNServer, for transport: FloodTransport) -> TransportAddress {
        switch transport {
        case .udp: server.udpAddress
        case .tcp: server.tcpAddress!
        case .tls: server.tlsAddress!
        }
    }

    /// Relays `payload`-byte ChannelData through our server as `adjust` says (over its transport) and
    /// expects every packet sent to arrive as one datagram of that length, and every allocation to be
    /// freed afterwards.
    static func expectExactRelay(payload: Int, _ adjust: (inout RelayFloodConfiguration) -> Void) async throws {
        try await withServer { server in
            var c = RelayFloodConfiguration()
            c.payloadBytes = payload
            c.drainSeconds = 0.3
            adjust(&c)
            c.server = address(of: server, for: c.transport)
            let report = try await RelayFlood(configuration: c).run()
            let n = report.counts
            #expect(n.sentTotal > 0)
            #expect(n.receivedTotal == n.sentTotal)
            #expect(n.received <= n.receivedTotal && n.sent <= n.sentTotal)
            #expect(n.invalid == 0)
            #expect(report.loss == 0)
            // Every lane freed its allocation at the end (Refresh LIFETIME 0).
            #expect(await server.allocationCount == 0)
        }
    }

    @Test(arguments: [100, 1200])
    func pacedRelayFloodCountsEveryPacketSentAndLosesNone(payload: Int) async throws {
        try await Self.expectExactRelay(payload: payload) { c in
            c.lanes = 2
            c.rate = 2_000
            c.warmupSeconds = 0.1
            c.durationSeconds = 0.4
        }
    }

    /// Unpaced, the server reads several ChannelData messages per batch and relays them in UDP GSO runs;
    /// the peer must still see each payload as its own datagram of the payload's length, none lost
    /// (the small window keeps every queue far from full).
    @Test(arguments: [100, 1200])
    func windowedFullSpeedFloodDeliversEachPayloadAsItsOwnDatagram(payload: Int) async throws {
        try await Self.expectExactRelay(payload: payload) { c in
            c.lanes = 1
            c.window = 32
            c.warmupSeconds = 0
            c.durationSeconds = 0.3
            c.stallSeconds = 1
        }
    }

    /// Over TCP and TLS each lane writes its ChannelData padded to 4 bytes on its own connection (a few
    /// hundred packets, paced, so most writes carry one frame); the peers see each payload as its own
    /// datagram of its length, padding stripped, none lost.
    @Test(arguments: [FloodTransport.tcp, .tls], [101, 1202])
    func pacedStreamRelayFloodDeliversEveryPaddedFrameAsItsPayload(transport: FloodTransport, payload: Int) async throws {
        try await Self.expectExactRelay(payload: payload) { c in
            c.transport = transport
            c.lanes = 2
            c.rate = 1_000
            c.warmupSeconds = 0.1
            c.durationSeconds = 0.3
        }
    }

    /// Unpaced, a stream lane writes up to its window of frames at once and the server's framer splits
    /// them wherever the reads end; every payload still arrives, once.
    @Test(arguments: [FloodTransport.tcp, .tls])
    func windowedFullSpeedStreamFloodDeliversEveryFrame(transport: FloodTransport) async throws {
        try await Self.expectExactRelay(payload: 101) { c in
            c.transport = transport
            c.lanes = 2
            c.window = 32
            c.warmupSeconds = 0
            c.durationSeconds = 0.2
            c.stallSeconds = 1
        }
    }

    @Test(arguments: FloodTransport.allCases)
    func allocationFloodCompletesAndFreesEveryAllocation(transport: FloodTransport) async throws {
        try await Self.withServer { server in
            var c = AllocationFloodConfiguration()
            c.transport = transport
            c.server = Self.address(of: server, for: transport)
            c.concurrency = 2
            c.warmupSeconds = 0
            c.durationSeconds = 0.3
            let report = try await AllocationFlood(configuration: c).run(group: .singletonMultiThreadedEventLoopGroup)
            #expect(report.counts.succeeded > 0)
            #expect(report.counts.failed == 0, "\(report.counts.firstFailure ?? "")")
            #expect(await server.allocationCount == 0)
        }
    }

    /// 20 allocations over 4 peer sockets, 20 packets/s of 160 bytes each way, 0.5 s counted after 0.2 s,
    /// 2 s to drain (ample on a loaded machine), then as `adjust` says.
    static func smallMediaFlood(_ adjust: (inout MediaFloodConfiguration) -> Void) -> MediaFloodConfiguration {
        var c = MediaFloodConfiguration()
        c.allocations = 20
        c.peerSockets = 4
        c.packetsPerSecond = 20
        c.payloadBytes = 160
        c.warmupSeconds = 0.2
        c.durationSeconds = 0.5
        c.drainSeconds = 2
        adjust(&c)
        return c
    }

    /// Media-rate flood through our relay, both ways: every packet sent in the measured period arrives
    /// once with its latency counted, the server's CPU and memory are read, and every allocation is freed.
    @Test func mediaFloodCountsEveryPacketBothWaysAndFreesItsAllocations() async throws {
        try await Self.withServer { server in
            let report = try MediaFlood(configuration: Self.smallMediaFlood {
                $0.server = server.udpAddress
                $0.watchedProcesses = [getpid()]
            }).run()
            #expect(report.sent > 0)
            #expect(report.received == report.sent)
            #expect(report.latency.count == report.received)
            #expect(report.invalid == 0)
            #expect(report.watchedCPUShare != nil && report.residentBytes != nil)
            #expect(await server.allocationCount == 0)
        }
    }

    /// Without a relay the same schedule runs straight between the sockets (the latency anchor).
    @Test func directMediaFloodDeliversEveryPacket() throws {
        let report = try MediaFlood(configuration: Self.smallMediaFlood { $0.direct = true }).run()
        #expect(report.sent > 0 && report.received == report.sent && report.invalid == 0)
    }

    @Test func latencyPercentilesComeFromTheCountedValues() {
        var h = LatencyHistogram()
        #expect(h.percentile(0.5) == nil)
        for us in 1...100 { h.add(microseconds: us) }
        h.add(microseconds: 5_000_000)
        #expect(h.percentile(0.5) == 51)
        #expect(h.percentile(0.99) == 100)
        #expect(h.percentile(1) == LatencyHistogram.capMicroseconds)
    }

    @Test func floodsRefuseTargetsOffLoopback() {
        var relay = RelayFloodConfiguration()
        relay.server = TransportAddress(ip: IPAddress("192.0.2.1")!, port: 3478)
        #expect(throws: FloodError.self) { try relay.validate() }
        var allocate = AllocationFloodConfiguration()
        allocate.server = TransportAddress(ip: IPAddress("192.0.2.1")!, port: 3478)
        #expect(throws: FloodError.self) { try allocate.validate() }
        var media = MediaFloodConfiguration()
        media.server = TransportAddress(ip: IPAddress("192.0.2.1")!, port: 3478)
        #expect(throws: FloodError.self) { try media.validate() }
    }
}
