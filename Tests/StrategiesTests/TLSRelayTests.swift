import Foundation
import Logging
import Rendezvous
import STUNLite
import Strategies
import TURNLite
import Testing
import Traversal

/// `tls-relay` over real sockets on loopback: a whole cloud (signalling, STUN, relay) and the Connector on both sides.
@Suite(.serialized) struct TLSRelayTests {
    static let camera = DeviceIdentity.generate()

    /// Gathering includes the camera's TLS connection and Allocate: generous, for a loaded CI machine.
    static let gatherTimeout: Duration = .seconds(5)

    /// Warnings and worse; `TRAV_TEST_LOG=debug` (or another level) shows more when chasing a failure.
    static var quiet: Logger {
        var logger = Logger(label: "trav.test")
        logger.logLevel = ProcessInfo.processInfo.environment["TRAV_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        return logger
    }

    /// A cloud on 127.0.0.1 with its relay on free ports, loopback peers allowed; stopped and removed after `body`.
    static func withRelayCloud(grantLifetime: Duration = RelayGrantIssuer.defaultLifetime,
                               _ body: (CloudService, CloudEndpoint) async throws -> Void) async throws {
        let dir = NSTemporaryDirectory() + "trav-relay-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // TURN over TLS on the signalling port (ALPN), as `trav cloud` runs it.
        let relay = CloudService.RelayConfiguration(port: 0, allowedPeers: [IPPrefix("127.0.0.0/8")!], grantLifetime: grantLifetime)
        let cloud = try await CloudService.start(
            .init(listenIP: "127.0.0.1", dataDirectory: dir, stunPort: 0, tlsPort: 0, relay: relay), logger: quiet)
        do {
            let endpoint = CloudEndpoint(host: "127.0.0.1", port: cloud.rendezvous.address.port,
                                         trust: .pinnedCA(try String(contentsOfFile: cloud.caPath!, encoding: .utf8)))
            try await body(cloud, endpoint)
        } catch {
            await cloud.stop()
            throw error
        }
        await cloud.stop()
    }

    /// Runs an echoing camera registered at `endpoint` with only `strategies`.
    static func withCamera(_ endpoint: CloudEndpoint, caPath: String, strategies: [any TraversalStrategy],
                           _ body: () async throws -> Void) async throws {
        let signalling = try await CloudClient.camera(identity: camera, endpoint: endpoint, logger: quiet)
        let connector = Connector(configuration: .init(identity: camera, strategies: strategies, gatherTimeout: gatherTimeout, logger: quiet))
        let connections = connector.serve([signalling.introductions], access: try .password("secret", parameters: testCost))
        let server = Task {
            await withTaskGroup(of: Void.self) { group in
                for await c in connections {
                    group.addTask {
                        do {
                            for try await m in c.inbound { try await c.send(m) }
                        } catch {}
                        await c.close()
                    }
                }
            }
        }
        do {
            try await body()
        } catch {
            server.cancel()
            await signalling.stop()
            throw error
        }
        server.cancel()
        await signalling.stop()
    }

    @Test(arguments: [TLSRelay.RelayTransport.tls, .udp])
    func relayOnlyPairConnectsThroughTheCloudsRelay(_ transport: TLSRelay.RelayTransport) async throws {
        try await Self.withRelayCloud { cloud, endpoint in
            let ca = cloud.caPath!
            let strategy = TLSRelay(transport: transport, trustedCAPath: ca)
            try await Self.withCamera(endpoint, caPath: ca, strategies: [strategy]) {
                let viewer = Connector(configuration: .init(identity: .ephemeral(), strategies: [strategy], gatherTimeout: Self.gatherTimeout,
                                                               logger: Self.quiet))
                let c = try await viewer.connect(to: Self.camera.deviceID, via: CloudClient.viewer(endpoint: endpoint, logger: Self.quiet),
                                                 credential: .password("secret"))
                #expect(c.path == "tls-relay")
                #expect(c.report.route?.hasPrefix("relay \(transport.rawValue) ") == true, "\(c.report.route ?? "-")")
                #expect(try await ConnectorLoopbackTests.echo(c, bytes: 20_000))
                #expect(await cloud.relay!.allocationCount == 2, "camera and viewer each hold one allocation")
                await c.close()
            }
            #expect(await eventuallyTrue { await cloud.relay!.allocationCount == 0 }, "allocations are released")
        }
    }

    @Test func withoutARelayTheStrategySaysSo() async throws {
        let dir = NSTemporaryDirectory() + "trav-relay-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cloud = try await CloudService.start(.init(listenIP: "127.0.0.1", dataDirectory: dir, stunPort: 0, tlsPort: 0), logger: Self.quiet)
        defer { Task { await cloud.stop() } }
        let endpoint = CloudEndpoint(host: "127.0.0.1", port: cloud.rendezvous.address.port,
                                     trust: .pinnedCA(try String(contentsOfFile: cloud.caPath!, encoding: .utf8)))
        try await Self.withCamera(endpoint, caPath: cloud.caPath!, strategies: [TLSRelay()]) {
            let viewer = Connector(configuration: .init(identity: .ephemeral(), strategies: [TLSRelay()], gatherTimeout: Self.gatherTimeout, logger: Self.quiet))
            do {
                _ = try await viewer.connect(to: Self.camera.deviceID, via: CloudClient.viewer(endpoint: endpoint, logger: Self.quiet),
                                             credential: .password("secret"))
                Issue.record("connected without a relay")
            } catch let e as TraversalError {
                #expect(e.code == .noPath, "\(e)")
                #expect("\(e)".contains("relay grant"), "the report says why: \(e)")
            }
        }
    }

    @Test func grantIsAValidRESTCredential() {
        let issuer = RelayGrantIssuer(secret: "s3cret", urls: ["turns:192.0.2.1:5350"], lifetime: .seconds(600))
        let now = Date(timeIntervalSince1970: 1_000_000)
        let grant = issuer.grant(label: "req-1", now: now)
        #expect(grant.username == "1000600:req-1")
        #expect(grant.expires == 1_000_600)
        #expect(grant.password == TURNCredentials.restPassword(secret: "s3cret", username: grant.username))
        let credentials = TURNCredentials(realm: "trav", restSecret: "s3cret")
        #expect(credentials.key(for: grant.username, now: 1_000_000) != nil)
        #expect(credentials.key(for: grant.username, now: 1_000_601) == nil, "expired grants stop working")
    }

    @Test(.timeLimit(.minutes(3)))
    func aRelayedSessionOutlivesThreeGrants() async throws {
        // Grants of 20 s, refreshes every 4 s: without renewal the relay refuses a refresh after 20 s and the path ends.
        try await Self.withRelayCloud(grantLifetime: .seconds(20)) { cloud, endpoint in
            var strategy = TLSRelay(transport: .tls, trustedCAPath: cloud.caPath!)
            strategy.refreshInterval = .seconds(4)
            try await Self.withCamera(endpoint, caPath: cloud.caPath!, strategies: [strategy]) {
                let viewer = Connector(configuration: .init(identity: .ephemeral(), strategies: [strategy], gatherTimeout: Self.gatherTimeout,
                                                               logger: Self.quiet))
                let c = try await viewer.connect(to: Self.camera.deviceID, via: CloudClient.viewer(endpoint: endpoint, logger: Self.quiet),
                                                 credential: .password("secret"))
                #expect(c.path == "tls-relay")
                let started = ContinuousClock.now
                while ContinuousClock.now - started < .seconds(66) {
                    #expect(try await ConnectorLoopbackTests.echo(c, bytes: 2_000), "echo at \(ContinuousClock.now - started)")
                    try await Task.sleep(for: .seconds(6))
                }
                #expect(await cloud.relay!.allocationCount == 2, "both allocations live on, three grants later")
                await c.close()
            }
        }
    }

    @Test func aDrainingRelayIsNamedInTheViewersReport() async throws {
        try await Self.withRelayCloud { cloud, endpoint in
            let strategy = TLSRelay(transport: .udp, trustedCAPath: cloud.caPath!)
            await cloud.relay!.startDraining()
            try await Self.withCamera(endpoint, caPath: cloud.caPath!, strategies: [strategy]) {
                let viewer = Connector(configuration: .init(identity: .ephemeral(), strategies: [strategy], gatherTimeout: Self.gatherTimeout,
                                                               logger: Self.quiet))
                do {
                    _ = try await viewer.connect(to: Self.camera.deviceID, via: CloudClient.viewer(endpoint: endpoint, logger: Self.quiet),
                                                 credential: .password("secret"))
                    Issue.record("connected through a draining relay")
                } catch let e as TraversalError {
                    let attempt = try #require(e.attempts.first { $0.strategy == "tls-relay" }, "\(e)")
                    let error = attempt.error ?? ""
                    #expect(error.contains("refused the allocation: 508") && error.contains("draining"), "\(error)")
                }
            }
        }
    }

    @Test func allocationQuotaReachesTheAttemptOnBothSides() async throws {
        let settings = TURNServerConfiguration(credentials: TURNCredentials(realm: "trav", restSecret: "s3cret"), maxAllocationsPerUser: 0)
        let server = try await TURNServer.start(.init(listenIP: IPAddress("127.0.0.1")!, port: 0, tcp: false, server: settings), logger: Self.quiet)
        defer { Task { await server.shutdown() } }
        let grant = RelayGrantIssuer(secret: "s3cret", urls: ["turn:\(server.udpAddress)?transport=udp"]).grant(label: "quota")
        let strategy = TLSRelay(transport: .udp)
        let offer = { (candidates: [Candidate]) in PeerOffer(identityKey: Data(count: 32), candidates: candidates, strategies: ["tls-relay"]) }

        let camera = try await strategy.prepare(StrategyContext(role: .camera, relay: grant, logger: Self.quiet))
        let refused = try #require(camera.candidates.first?.detail["refused"], "the camera offers the refusal")
        #expect(refused.contains("486 Allocation Quota Reached"), "\(refused)")
        await #expect(throws: StrategyError(code: .refused, detail: refused)) {
            _ = try await camera.connect(remote: offer([]), context: StrategyContext(role: .camera, relay: grant))
        }
        let viewer = try await strategy.prepare(StrategyContext(role: .viewer, relay: grant))
        do {
            _ = try await viewer.connect(remote: offer(camera.candidates), context: StrategyContext(role: .viewer, relay: grant))
            Issue.record("the viewer connected")
        } catch let e as StrategyError {
            #expect(e.code == .refused)
            #expect(e.detail.contains("486 Allocation Quota Reached"), "\(e)")
        }
    }

    @Test func aBandwidthCutIsNamedInTheCamerasRefusal() async throws {
        let settings = TURNServerConfiguration(credentials: TURNCredentials(realm: "trav", restSecret: "s3cret"),
                                               peerPolicy: TURNPeerPolicy(allowed: [IPPrefix("127.0.0.0/8")!]), bandwidthPerUser: 1000)
        let server = try await TURNServer.start(.init(listenIP: IPAddress("127.0.0.1")!, port: 0, tcp: false, server: settings), logger: Self.quiet)
        defer { Task { await server.shutdown() } }
        let grant = RelayGrantIssuer(secret: "s3cret", urls: ["turn:\(server.udpAddress)?transport=udp"]).grant(label: "cut")
        // The grant's user relays more than its 1000 bytes per second: the relay cuts the datagram.
        let (client, _) = try await TURNClient.allocate(.init(server: server.udpAddress, username: grant.username, password: grant.password))
        defer { Task { await client.close() } }
        let peer = TransportAddress("127.0.0.2:9")!
        try await client.createPermission(for: [peer])
        try await client.send(Array(repeating: 7, count: 1200), to: peer)
        _ = try await client.refresh()  // answered after the Send indication before it was handled

        let camera = try await TLSRelay(transport: .udp).prepare(StrategyContext(role: .camera, relay: grant, logger: Self.quiet))
        let refused = try #require(camera.candidates.first?.detail["refused"], "the camera offers the refusal")
        #expect(refused.contains("486") && refused.contains("bandwidth"), "\(refused)")
    }

    @Test func aGrantRenewsUnderTheSameLabelUntilItExpires() {
        let issuer = RelayGrantIssuer(secret: "s3cret", urls: ["turns:192.0.2.1:5350"], lifetime: .seconds(20))
        let grant = issuer.grant(label: "req-1", now: Date(timeIntervalSince1970: 1_000_000))
        let renewed = issuer.renew(grant, now: Date(timeIntervalSince1970: 1_000_015))
        #expect(renewed?.username == "1000035:req-1")
        #expect(renewed?.expires == 1_000_035)
        #expect(issuer.renew(grant, now: Date(timeIntervalSince1970: 1_000_020)) == nil, "an expired grant is not renewed")
        var forged = grant
        forged.username = "1000020:req-2"
        #expect(issuer.renew(forged, now: Date(timeIntervalSince1970: 1_000_001)) == nil, "the password must sign the name")
        let other = RelayGrantIssuer(secret: "other", urls: [], lifetime: .seconds(20))
        #expect(other.renew(grant, now: Date(timeIntervalSince1970: 1_000_001)) == nil)
    }

    /// Polls `condition` every 50 ms for up to 5 s.
    func eventuallyTrue(_ condition: () async -> Bool) async -> Bool {
        for _ in 0..<100 {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return await condition()
    }
}
