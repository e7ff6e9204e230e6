import Foundation
import NIOCore
import NIOPosix
import ServiceLifecycle
import Testing
import STUNLite
@testable import NATLab
@testable import TURNLite

/// The relay as an operator runs it: draining on graceful shutdown, refusals that say why, counts
/// for metrics, renewed REST grants; in the state machine, as a `Service`, and as `trav relay`.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct TURNServerLifecycleTests {
    // MARK: State machine

    @Test func drainingRefusesNewAllocationsAndKeepsExistingOnes() throws {
        var h = MachineHarness()
        let (id, _) = try h.allocate()
        h.machine.startDraining()
        #expect(MachineHarness.code(h.simple(.refresh) { $0.append(Lifetime(seconds: 600)) }) == nil, "refreshes go on")
        #expect(h.machine.allocation(id) != nil)
        h.ft.client.port += 1
        let r = h.response(h.request(MachineHarness.allocateRequest()))
        #expect(MachineHarness.code(r) == 508)
        #expect(try r?.attribute(ErrorCode.self)?.reason == TURNRefusal.draining.reason)
        #expect(h.machine.takeStatistics().refusals == ["draining": 1])
    }

    @Test func statisticsCountAllocationsRelayedBytesRefusalsAndBandwidthCuts() throws {
        var h = MachineHarness { $0.bandwidthPerUser = 1000 }
        let (id, _) = try h.allocate()
        let peer = TransportAddress("8.8.8.8:7000")!
        #expect(MachineHarness.code(h.simple(.createPermission) { $0.append(XORPeerAddress(peer)) }) == nil)
        #expect(MachineHarness.code(h.simple(.createPermission) { $0.append(XORPeerAddress(TransportAddress("10.0.0.1:1")!)) }) == 403)
        _ = h.send({
            var m = STUNMessage(method: .send, messageClass: .indication)
            m.append(XORPeerAddress(peer))
            m.append(DataAttribute(Array(repeating: 1, count: 100)))
            return m
        }(), signed: false)
        #expect(h.machine.routeFromPeer(id, peer: peer, length: 200, now: h.now) != nil)
        #expect(h.machine.routeFromPeer(id, peer: peer, length: 5000, now: h.now) == nil, "over the user's bandwidth")
        let s = h.machine.takeStatistics()
        #expect(s.allocationsCreated == 1)
        #expect(s.packetsToPeers == 1 && s.bytesToPeers == 100)
        #expect(s.packetsToClients == 1 && s.bytesToClients == 200)
        #expect(s.bandwidthCuts == ["user-bandwidth": 1] && s.bandwidthCutBytes == ["user-bandwidth": 5000])
        #expect(s.refusals == ["special-peer": 1])
        #expect(h.machine.takeStatistics().isEmpty, "taking starts afresh")
    }

    @Test func aRenewedRESTGrantRefreshesTheAllocationOfTheSameLabel() throws {
        var h = MachineHarness { $0.credentials = TURNCredentials(realm: "example.org", restSecret: "s") }
        let first = Int(h.now) + 20
        h.username = "\(first):intro-1"
        h.password = TURNCredentials.restPassword(secret: "s", username: h.username)
        let (id, _) = try h.allocate()
        // After the first grant expired, its renewal (same label, later expiry) refreshes the allocation.
        h.now += 30
        h.username = "\(first + 60):intro-1"
        h.password = TURNCredentials.restPassword(secret: "s", username: h.username)
        let r = h.simple(.refresh) { $0.append(Lifetime(seconds: 600)) }
        #expect(MachineHarness.code(r) == nil, "\(String(describing: r))")
        #expect(h.machine.allocation(id)?.expiry == h.now + 600)
        // Another label is another user.
        h.username = "\(first + 60):intro-2"
        h.password = TURNCredentials.restPassword(secret: "s", username: h.username)
        #expect(MachineHarness.code(h.simple(.refresh) { $0.append(Lifetime(seconds: 600)) }) == 441)
    }

    @Test func restUsersAreTheirLabels() {
        let c = TURNCredentials(realm: "r", users: ["1:static": "p"], restSecret: "s")
        #expect(c.user(of: "1700000000:intro-1") == ":intro-1")
        #expect(c.user(of: "1:static") == "1:static", "a static user stays itself")
        #expect(c.user(of: "alice") == "alice")
        #expect(TURNCredentials(realm: "r", users: [:]).user(of: "1700000000:intro-1") == "1700000000:intro-1")
    }

    // MARK: The server as a service

    @Test func gracefulShutdownDrainsThenStops() async throws {
        try await TURNInteropTests.withEchoPeer { peer in
            var c = TURNServerConfiguration(credentials: TURNCredentials(realm: "trav.test", users: ["u": "p"]),
                                            peerPolicy: TURNPeerPolicy(allowed: [IPPrefix("127.0.0.0/8")!]))
            c.maxAllocationsPerUser = 10
            var configuration = TURNServer.Configuration(listenIP: TURNInteropTests.loopback, port: 0, server: c)
            configuration.drainGracePeriod = .seconds(20)
            let server = try await TURNServer.start(configuration)
            let group = ServiceGroup(services: [server], logger: .init(label: "test"))
            let running = Task { try await group.run() }
            let settings = TURNClient.Configuration(server: server.udpAddress, username: "u", password: "p", retransmission: .quick)
            let (client, _) = try await TURNClient.allocate(settings)
            try await client.createPermission(for: [peer])
            #expect(try await Self.echo(client, peer, "before"))

            await group.triggerGracefulShutdown()
            #expect(await Self.eventually { await server.isDraining })
            #expect(try await Self.echo(client, peer, "while draining"), "an existing allocation still relays")
            #expect(try await client.refresh() > 0, "and refreshes")
            do {
                let (late, _) = try await TURNClient.allocate(settings)
                await late.close()
                Issue.record("allocated while draining")
            } catch let e as TURNError {
                #expect(e.errorCode?.code == 508 && e.errorCode?.reason == TURNRefusal.draining.reason, "\(e)")
            }
            // The last allocation gone, the server stops well before the grace period ends.
            let closed = ContinuousClock.now
            await client.close()
            try await running.value
            #expect(ContinuousClock.now - closed < .seconds(5))
        }
    }

    /// Sends `text` to the echo peer through the relay and waits up to 2 s for it to come back.
    static func echo(_ client: TURNClient, _ peer: TransportAddress, _ text: String) async throws -> Bool {
        let payload = Array(text.utf8)
        try await client.send(payload, to: peer)
        return try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await data in client.received where data.payload == payload { return true }
                return false
            }
            group.addTask {
                try await Task.sleep(for: .seconds(2))
                return false
            }
            defer { group.cancelAll() }
            return try await group.next() ?? false
        }
    }

    /// Polls `condition` every 50 ms for up to 5 s.
    static func eventually(_ condition: () async -> Bool) async -> Bool {
        for _ in 0..<100 {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return await condition()
    }

    // MARK: trav relay

    static let curlMissing = !FileManager.default.isExecutableFile(atPath: "/usr/bin/curl")

    @Test(.disabled(if: TURNDualStackTests.travMissing, "trav is not built (swift build)"),
          .disabled(if: curlMissing, "curl is not installed (apt-get install curl)"))
    func travRelayExportsMetricsAndDrainsOnSIGTERM() async throws {
        try await TURNInteropTests.withEchoPeer { peer in
            let relay = try ChildProcess([TURNDualStackTests.trav, "relay", "--listen", "127.0.0.1", "--port", "0", "--tls-port", "0",
                                          "--user", "u:p", "--relay-allow-peers", "127.0.0.0/8", "--metrics-listen", "127.0.0.1:0",
                                          "--drain-seconds", "20"])
            defer {
                relay.kill()
                relay.removeFiles()
            }
            // relay metrics http://127.0.0.1:PORT/metrics, then: relay udp 127.0.0.1:PORT tcp … realm trav
            var lines: [Substring] = []
            for _ in 0..<200 where !lines.contains(where: { $0.hasPrefix("relay udp ") }) {
                try await Task.sleep(for: .milliseconds(50))
                lines = relay.output().stdout.split(separator: "\n")
            }
            let metricsLine = try #require(lines.first { $0.hasPrefix("relay metrics ") }, "\(relay.output())")
            let url = String(metricsLine.split(separator: " ")[2])
            let status = try #require(lines.first { $0.hasPrefix("relay udp ") })
            let udp = try #require(TransportAddress(String(status.split(separator: " ")[2])))

            let settings = TURNClient.Configuration(server: udp, username: "u", password: "p", retransmission: .quick)
            var clients: [TURNClient] = []
            for _ in 0..<3 {
                let (client, _) = try await TURNClient.allocate(settings)
                clients.append(client)
            }
            try await clients[0].createPermission(for: [peer])
            #expect(try await Self.echo(clients[0], peer, "counted"))
            do {
                // TEST-NET-1 is a special range: refused with 403, nothing is sent there.
                try await clients[1].createPermission(for: [TransportAddress("192.0.2.1:9")!])
                Issue.record("permission for a special peer")
            } catch let e as TURNError {
                #expect(e.errorCode?.code == 403)
            }
            // Loopback's broadcast address: the kernel refuses a send there without SO_BROADCAST (EACCES), and
            // nothing leaves the host. The relay drops that datagram and counts it.
            let broadcast = TransportAddress("127.255.255.255:9")!
            try await clients[0].createPermission(for: [broadcast])
            try await clients[0].send(Array("refused".utf8), to: broadcast)
            var scraped = ""
            // Bounded: 40 × 50 ms for the relay to take the send indication.
            for _ in 0..<40 where !scraped.contains("turn_send_dropped_total 1") {
                try await Task.sleep(for: .milliseconds(50))
                scraped = try await ChildProcess.scrape(url)
            }
            #expect(scraped.contains("turn_send_dropped_total 1"), "\(scraped)")
            #expect(scraped.contains("turn_allocations 3.0"), "\(scraped)")
            #expect(scraped.contains("turn_allocations_created_total 3"), "\(scraped)")
            // The refused datagram was relayed as far as the kernel: it counts toward peers and as dropped.
            #expect(scraped.contains(#"turn_relayed_packets_total{direction="to-peer"} 2"#), "\(scraped)")
            #expect(scraped.contains(#"turn_relayed_packets_total{direction="to-client"} 1"#), "\(scraped)")
            #expect(scraped.contains(#"turn_refusals_total{reason="special-peer"} 1"#), "\(scraped)")

            for c in clients.dropFirst() { await c.close() }
            _ = posixKill(relay.pid, SIGTERM)
            // Draining: the remaining allocation relays, a new one is refused, and the metrics still answer.
            var refused: TURNError?
            for _ in 0..<40 where refused == nil {
                do {
                    let (late, _) = try await TURNClient.allocate(settings)
                    await late.close()
                    try await Task.sleep(for: .milliseconds(50))
                } catch let e as TURNError {
                    refused = e
                }
            }
            #expect(refused?.errorCode?.code == 508, "\(String(describing: refused))")
            #expect(try await Self.echo(clients[0], peer, "draining"), "the existing allocation relays while draining")
            #expect(relay.isRunning)
            #expect(try await ChildProcess.scrape(url).contains(#"turn_refusals_total{reason="draining"}"#))
            await clients[0].close()
            #expect(await relay.wait(.seconds(10)), "trav relay exits once the last allocation is gone")
            #expect(relay.status == 0, "\(relay.output())")
            #expect(relay.output().stdout.contains("relay stopped"))
        }
    }
}
