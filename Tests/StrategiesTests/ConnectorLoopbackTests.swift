import Crypto
import Foundation
import Logging
import STUNLite
import Strategies
import Testing
@testable import Traversal

/// A cheap scrypt cost for test passwords: these tests are about the protocol, not the KDF's cost.
let testCost = PasswordVerifier.Parameters(log2Rounds: 10, blockSize: 8, parallelism: 1)
/// Generous limits for tests, which check behaviour, not speed, on a shared 2-core machine.
let testGatherTimeout: Duration = .seconds(10)
/// See ``testGatherTimeout``.
let testConnectTimeout: Duration = .seconds(20)

/// Camera and viewers connect through the Connector over real sockets on loopback.
@Suite(.serialized) struct ConnectorLoopbackTests {
    static let camera = DeviceIdentity.generate()
    static let cameraID = camera.deviceID

    /// Runs a camera serving `introducer` with `password` and echoing every message back.
    static func withCamera(_ introducer: InMemoryIntroducer, password: String = "secret", stun: [String],
                           strategies: [any TraversalStrategy] = [DirectLAN(scope: .loopbackOnly), STUNDiscovery()],
                           access: CameraAccessPolicy? = nil,
                           _ body: () async throws -> Void) async throws {
        let connector = Connector(configuration: .init(identity: camera, strategies: strategies, stunServers: stun, connectTimeout: testConnectTimeout, gatherTimeout: testGatherTimeout))
        let policy = try access ?? .password(password, parameters: testCost)
        let connections = connector.serve([introducer.introductions], access: policy)
        let server = Task {
            await withTaskGroup(of: Void.self) { group in
                for await c in connections {
                    group.addTask {
                        do {
                            for try await m in c.inbound { try await c.send(m) }
                        } catch {}
                    }
                }
            }
        }
        defer {
            introducer.finish()
            server.cancel()
        }
        try await body()
    }

    static func viewer(stun: [String], strategies: [any TraversalStrategy] = [DirectLAN(scope: .loopbackOnly), STUNDiscovery()]) -> Connector {
        Connector(configuration: .init(identity: .ephemeral(), strategies: strategies, stunServers: stun, connectTimeout: testConnectTimeout, gatherTimeout: testGatherTimeout))
    }

    static func withSTUN(_ body: ([String]) async throws -> Void) async throws {
        let server = try await STUNServer.start(.init(listenIP: IPAddress("127.0.0.1")!, port: 0, tcp: false))
        do {
            try await body([server.udpAddresses[.primary]!.description])
        } catch {
            await server.shutdown()
            throw error
        }
        await server.shutdown()
    }

    static func echo(_ c: PeerConnection, bytes: Int) async throws -> Bool {
        var sent: [UInt8] = []
        var received: [UInt8] = []
        var it = c.inbound.makeAsyncIterator()
        var remaining = bytes
        while remaining > 0 {
            let chunk = (0..<min(remaining, 1000)).map { _ in UInt8.random(in: 0...255) }
            sent += chunk
            remaining -= chunk.count
            try await c.send(chunk)
            guard let back = try await it.next() else { return false }
            received += back
        }
        return sent == received
    }

    @Test func viewerConnectsByUIDAndEchoes() async throws {
        try await Self.withSTUN { stun in
            let introducer = InMemoryIntroducer()
            try await Self.withCamera(introducer, stun: stun) {
                let c = try await Self.viewer(stun: stun).connect(to: Self.cameraID, via: introducer, credential: .password("secret"))
                #expect(["direct-lan", "stun-discovery"].contains(c.path))
                #expect(c.peerIdentityKey.rawRepresentation == Self.camera.publicKey.rawRepresentation)
                #expect(c.report.attempts.contains { $0.outcome == .connected && $0.strategy == c.path })
                #expect(Set(c.report.attempts.map(\.strategy)) == ["direct-lan", "stun-discovery"])
                #expect(try await Self.echo(c, bytes: 10_000))
                await c.close()
            }
        }
    }

    @Test func threeViewersAtOnce() async throws {
        try await Self.withSTUN { stun in
            let introducer = InMemoryIntroducer()
            try await Self.withCamera(introducer, stun: stun) {
                try await withThrowingTaskGroup(of: Bool.self) { group in
                    for _ in 0..<3 {
                        group.addTask {
                            let c = try await Self.viewer(stun: stun).connect(to: Self.cameraID, via: introducer, credential: .password("secret"))
                            defer { Task { await c.close() } }
                            return try await Self.echo(c, bytes: 3000)
                        }
                    }
                    var ok = 0
                    for try await r in group where r { ok += 1 }
                    #expect(ok == 3)
                }
            }
        }
    }

    @Test func wrongPasswordIsRefusedAndTheCameraKeepsServing() async throws {
        try await Self.withSTUN { stun in
            let introducer = InMemoryIntroducer()
            try await Self.withCamera(introducer, stun: stun) {
                do {
                    _ = try await Self.viewer(stun: stun).connect(to: Self.cameraID, via: introducer, credential: .password("wrong"))
                    Issue.record("connected with a wrong password")
                } catch let e as TraversalError {
                    #expect(e.code == .accessDenied)
                }
                let c = try await Self.viewer(stun: stun).connect(to: Self.cameraID, via: introducer, credential: .password("secret"))
                #expect(try await Self.echo(c, bytes: 100))
                await c.close()
            }
        }
    }

    @Test func passwordGuessingFromOneAddressIsLimitedWhilePairedViewersStillConnect() async throws {
        // Every guess comes from 127.0.0.1 with a new port and a new viewer key, as a script would.
        let paired = DeviceIdentity.ephemeral()
        let limits = PasswordAttemptLimits(perSource: .init(capacity: 2, refillInterval: .seconds(3600)))
        var policy = try CameraAccessPolicy.password("secret", parameters: testCost, limits: limits)
        policy.pairedViewers = [paired.publicKey]
        try await Self.withSTUN { stun in
            let introducer = InMemoryIntroducer()
            try await Self.withCamera(introducer, stun: stun, strategies: [DirectLAN(scope: .loopbackOnly)], access: policy) {
                /// Why a fresh viewer (new key, new port) with `password` was refused; nil if it got in.
                func refusal(_ password: String) async throws -> TraversalError.Code? {
                    do {
                        let c = try await Self.viewer(stun: stun, strategies: [DirectLAN(scope: .loopbackOnly)])
                            .connect(to: Self.cameraID, via: introducer, credential: .password(password))
                        await c.close()
                        return nil
                    } catch let e as TraversalError {
                        return e.code
                    }
                }
                var outcomes: [TraversalError.Code?] = []
                for guess in 0..<4 { outcomes.append(try await refusal("guess \(guess)")) }
                #expect(outcomes == [.accessDenied, .accessDenied, .rateLimited, .rateLimited])
                // The right password from the same address is not even checked now...
                #expect(try await refusal("secret") == .rateLimited)
                // ...but a paired viewer on the same address is let in.
                let viewer = Connector(configuration: .init(identity: paired, strategies: [DirectLAN(scope: .loopbackOnly)],
                                                            stunServers: stun, connectTimeout: testConnectTimeout,
                                                            gatherTimeout: testGatherTimeout))
                let c = try await viewer.connect(to: Self.cameraID, via: introducer, credential: .pairedKey)
                #expect(try await Self.echo(c, bytes: 100))
                await c.close()
            }
        }
    }

    @Test func cloudAnnouncingAnotherKeyIsDetected() async throws {
        try await Self.withSTUN { stun in
            let impostor = DeviceIdentity.generate()
            let introducer = InMemoryIntroducer(forgedKey: impostor.publicKey.rawRepresentation)
            try await Self.withCamera(introducer, stun: stun) {
                do {
                    _ = try await Self.viewer(stun: stun).connect(to: Self.cameraID, via: introducer, credential: .password("secret"))
                    Issue.record("connected although the cloud lied")
                } catch let e as TraversalError {
                    #expect(e.code == .identityMismatch)
                }
            }
        }
    }

    @Test func impostorCameraAnsweringForTheUIDFailsTheHandshake() async throws {
        // The cloud routes the viewer to a different camera and claims the UID's real key: the
        // impostor cannot sign for that key, so no path completes the handshake.
        try await Self.withSTUN { stun in
            let introducer = InMemoryIntroducer(forgedKey: Self.camera.publicKey.rawRepresentation)
            let impostor = Connector(configuration: .init(identity: .generate(), strategies: [DirectLAN(scope: .loopbackOnly)], stunServers: stun,
                                                          connectTimeout: .seconds(2)))
            let connections = impostor.serve([introducer.introductions], access: try .password("secret", parameters: testCost))
            let server = Task { for await c in connections { await c.close() } }
            defer { introducer.finish(); server.cancel() }
            let viewer = Connector(configuration: .init(identity: .ephemeral(), strategies: [DirectLAN(scope: .loopbackOnly)], stunServers: stun,
                                                        connectTimeout: .seconds(2)))
            do {
                _ = try await viewer.connect(to: Self.cameraID, via: introducer, credential: .password("secret"))
                Issue.record("connected to an impostor")
            } catch let e as TraversalError {
                #expect(e.code == .noPath)
                #expect(e.attempts.first?.error?.contains("identity") == true, "\(e.attempts)")
            }
        }
    }
}

/// `direct-lan` with no cloud at all: the viewer finds the camera by a discovery message.
@Suite struct LANDiscoveryTests {
    @Test func viewerFindsTheCameraWithoutACloud() async throws {
        let camera = DeviceIdentity.generate()
        let responder = try await LANDiscovery.Responder(device: camera.deviceID, identity: camera, port: 0)
        let cameraConnector = Connector(configuration: .init(identity: camera, strategies: [DirectLAN(scope: .loopbackOnly)], connectTimeout: testConnectTimeout, gatherTimeout: testGatherTimeout))
        let connections = cameraConnector.serve([responder.introductions], access: try .password("pw", parameters: testCost))
        let server = Task {
            for await c in connections {
                Task { for try await m in c.inbound { try await c.send(m) } }
            }
        }
        defer { server.cancel(); Task { await responder.stop() } }
        let finder = LANDiscovery.Finder(destinations: [TransportAddress(ip: IPAddress("127.0.0.1")!, port: responder.localAddress.port)],
                                         timeout: .seconds(15))
        let viewer = Connector(configuration: .init(identity: .ephemeral(), strategies: [DirectLAN(scope: .loopbackOnly)], connectTimeout: testConnectTimeout, gatherTimeout: testGatherTimeout))
        let c = try await viewer.connect(to: camera.deviceID, via: finder, credential: .password("pw"))
        #expect(c.path == "direct-lan")
        #expect(c.report.requestID?.hasPrefix("lan-") == true)
        #expect(try await ConnectorLoopbackTests.echo(c, bytes: 2000))
        await c.close()
    }

    @Test func offersBetweenTwoAndSixteenKilobytesReachTheCameraAndBack() async throws {
        let camera = DeviceIdentity.generate()
        let responder = try await LANDiscovery.Responder(device: camera.deviceID, identity: camera, port: 0)
        defer { Task { await responder.stop() } }
        let candidates = (0..<40).map {
            Candidate(strategy: "direct-lan", kind: .host, address: "192.0.2.\($0):\(40_000 + $0)",
                      detail: ["note": String(repeating: "x", count: 150)])
        }
        let big = PeerOffer(identityKey: Data(repeating: 1, count: 32), candidates: candidates, strategies: ["direct-lan"])
        let size = try JSONEncoder().encode(big).count
        #expect(size > 4096 && size < LANDiscovery.maxDatagram - 1024, "\(size) bytes")
        // The answer carries the camera's key: the finder ignores answers whose key is not behind the UID.
        let bigAnswer = PeerOffer(identityKey: camera.publicKey.rawRepresentation, candidates: candidates, strategies: ["direct-lan"])
        let answerer = Task { () -> PeerOffer? in
            for await intro in responder.introductions {
                try? await intro.accept(answer: bigAnswer)
                return intro.offer
            }
            return nil
        }
        let finder = LANDiscovery.Finder(destinations: [TransportAddress(ip: IPAddress("127.0.0.1")!, port: responder.localAddress.port)],
                                         timeout: .seconds(10))
        let introduction = try await finder.introduce(to: camera.deviceID, offer: big)
        #expect(introduction.answer == bigAnswer)
        #expect(await answerer.value == big)
    }

    /// A ``ViewerSignalling`` that asks `inner` after `delay` (a cloud farther away than the LAN).
    struct Delayed: ViewerSignalling {
        let inner: any ViewerSignalling
        let delay: Duration
        func introduce(to device: DeviceID, offer: PeerOffer) async throws -> Introduction {
            try await Task.sleep(for: delay)
            return try await inner.introduce(to: device, offer: offer)
        }
    }

    @Test func aLANImpostorAnsweringFirstLeavesTheViewerToTheCloudsIntroduction() async throws {
        let camera = DeviceIdentity.generate()
        // The impostor answers `find`s for the camera's UID at once, with its own key.
        let impostorIdentity = DeviceIdentity.generate()
        let impostorLAN = try await LANDiscovery.Responder(device: camera.deviceID, identity: impostorIdentity, port: 0)
        let impostor = Connector(configuration: .init(identity: impostorIdentity, strategies: [DirectLAN(scope: .loopbackOnly)],
                                                      connectTimeout: testConnectTimeout, gatherTimeout: testGatherTimeout))
        let fooled = impostor.serve([impostorLAN.introductions], access: try .password("pw", parameters: testCost))
        let impostorServer = Task { for await c in fooled { await c.close() } }
        // The real camera, reached through the cloud (in memory here), which answers later.
        let cloud = InMemoryIntroducer()
        let real = Connector(configuration: .init(identity: camera, strategies: [DirectLAN(scope: .loopbackOnly)],
                                                  connectTimeout: testConnectTimeout, gatherTimeout: testGatherTimeout))
        let admitted = real.serve([cloud.introductions], access: try .password("pw", parameters: testCost))
        let server = Task {
            for await c in admitted {
                Task { for try await m in c.inbound { try await c.send(m) } }
            }
        }
        defer {
            cloud.finish()
            server.cancel()
            impostorServer.cancel()
            Task { await impostorLAN.stop() }
        }
        let finder = LANDiscovery.Finder(destinations: [TransportAddress(ip: IPAddress("127.0.0.1")!, port: impostorLAN.localAddress.port)],
                                         timeout: .seconds(10))
        let viewer = Connector(configuration: .init(identity: .ephemeral(), strategies: [DirectLAN(scope: .loopbackOnly)],
                                                    connectTimeout: testConnectTimeout, gatherTimeout: testGatherTimeout))
        let c = try await viewer.connect(to: camera.deviceID, via: FirstAnswering([finder, Delayed(inner: cloud, delay: .milliseconds(300))]),
                                         credential: .password("pw"))
        #expect(c.peerIdentityKey.rawRepresentation == camera.publicKey.rawRepresentation)
        #expect(c.report.requestID?.hasPrefix("req-") == true, "introduced by the cloud, not the impostor")
        #expect(try await ConnectorLoopbackTests.echo(c, bytes: 500))
        await c.close()
    }

    @Test func noCameraWithThatUIDIsUnavailableQuickly() async throws {
        let other = DeviceIdentity.generate()
        let responder = try await LANDiscovery.Responder(device: other.deviceID, identity: other, port: 0)
        defer { Task { await responder.stop() } }
        let finder = LANDiscovery.Finder(destinations: [TransportAddress(ip: IPAddress("127.0.0.1")!, port: responder.localAddress.port)],
                                         timeout: .milliseconds(500))
        let viewer = Connector(configuration: .init(identity: .ephemeral(), strategies: [DirectLAN(scope: .loopbackOnly)], connectTimeout: testConnectTimeout, gatherTimeout: testGatherTimeout))
        do {
            _ = try await viewer.connect(to: DeviceIdentity.generate().deviceID, via: finder, credential: .password("pw"))
            Issue.record("a camera answered for another UID")
        } catch let e as TraversalError {
            #expect(e.code == .unavailable)
        }
    }
}

/// `udp-hole-punch` on loopback: no NAT, so both mappings are endpoint-independent and punching is immediate.
@Suite struct UDPHolePunchLoopbackTests {
    @Test func holePunchAloneConnectsAndLearnsTheMapping() async throws {
        let server = try await STUNServer.start(.init(listenIP: IPAddress("127.0.0.1")!, port: 0, alternateIP: IPAddress("127.0.0.2")!, tcp: false))
        defer { Task { await server.shutdown() } }
        let stun = [server.udpAddresses[.primary]!.description]
        let prepared = try await UDPHolePunch().prepare(StrategyContext(role: .viewer, stunServers: stun))
        #expect(prepared.candidates.first?.detail["mapping"] == "endpoint-independent")
        await prepared.close()

        let introducer = InMemoryIntroducer()
        try await ConnectorLoopbackTests.withCamera(introducer, stun: stun, strategies: [UDPHolePunch()]) {
            let c = try await ConnectorLoopbackTests.viewer(stun: stun, strategies: [UDPHolePunch()])
                .connect(to: ConnectorLoopbackTests.cameraID, via: introducer, credential: .password("secret"))
            #expect(c.path == "udp-hole-punch")
            #expect(try await ConnectorLoopbackTests.echo(c, bytes: 2000))
            await c.close()
        }
    }
}

/// `tcp-simultaneous-open` on loopback: both sides connect from their STUN-mapped TCP ports at once. One at a
/// time: the camera's listener reuses its port, so a crossing attempt of a test running beside it could land there.
@Suite(.serialized) struct TCPSimultaneousOpenLoopbackTests {
    @Test func crossingConnectsBecomeOneStream() async throws {
        let server = try await STUNServer.start(.init(listenIP: IPAddress("127.0.0.1")!, port: 0))
        defer { Task { await server.shutdown() } }
        let stun = [server.udpAddresses[.primary]!.description]
        let introducer = InMemoryIntroducer()
        try await ConnectorLoopbackTests.withCamera(introducer, stun: stun, strategies: [TCPSimultaneousOpen()]) {
            let c = try await ConnectorLoopbackTests.viewer(stun: stun, strategies: [TCPSimultaneousOpen()])
                .connect(to: ConnectorLoopbackTests.cameraID, via: introducer, credential: .password("secret"))
            #expect(c.path == "tcp-simultaneous-open")
            #expect(c.report.route?.hasPrefix("tcp ") == true)
            #expect(try await ConnectorLoopbackTests.echo(c, bytes: 5000))
            await c.close()
        }
    }
}

/// The probe-based prediction the comparison grid prints beside each measured pair.
@Suite struct PathPredictionTests {
    @Test(arguments: [
        ("port-restricted-cone", "port-restricted-cone", "udp-hole-punch"),
        ("full-cone", "port-restricted-cone", "stun-discovery"),
        ("open", "symmetric", "stun-discovery"),
        ("symmetric", "restricted-cone", "udp-hole-punch"),
        ("symmetric", "port-restricted-cone", "udp-hole-punch"),
        ("symmetric", "symmetric", "relay"),
        ("udp-blocked", "port-restricted-cone", "tcp-simultaneous-open"),
        ("udp-blocked", "symmetric", "relay"),
        ("unknown", "port-restricted-cone", "relay"),
    ])
    func predictsTheWinner(_ camera: String, _ viewer: String, _ expected: String) {
        #expect(PathPrediction.predict(camera: camera, viewer: viewer).strategy ?? "relay" == expected)
    }

    @Test func sameLANAndRestrictedTCPOverrideNATTypes() {
        #expect(PathPrediction.predict(camera: "symmetric", viewer: "symmetric", sameLAN: true).strategy == "direct-lan")
        #expect(PathPrediction.predict(camera: "udp-blocked", viewer: "port-restricted-cone", cameraTCP: false).direct == false)
    }
}

/// A session that wins on TCP keeps looking for a direct datagram path and moves there while it runs, keeping
/// the stream to fall back to; on loopback with real sockets.
extension TCPSimultaneousOpenLoopbackTests {
    @Test func aSessionThatWonOnTCPMovesToAPunchedUDPPathAndKeepsCarryingMessages() async throws {
        let server = try await STUNServer.start(.init(listenIP: IPAddress("127.0.0.1")!, port: 0))
        defer { Task { await server.shutdown() } }
        let stun = [server.udpAddresses[.primary]!.description]
        let introducer = InMemoryIntroducer()
        func connector(_ identity: DeviceIdentity) -> Connector {
            var c = ConnectorConfiguration(identity: identity, strategies: [TCPSimultaneousOpen()], stunServers: stun,
                                           connectTimeout: testConnectTimeout, gatherTimeout: testGatherTimeout)
            // The race may use only TCP; the hole punch runs in the background once the session is up.
            c.upgradeStrategies = [UDPHolePunch()]
            return Connector(configuration: c)
        }
        let camera = connector(ConnectorLoopbackTests.camera)
        let connections = camera.serve([introducer.introductions], access: try .password("secret", parameters: testCost))
        let echo = Task {
            await withTaskGroup(of: Void.self) { group in
                for await c in connections {
                    group.addTask {
                        do { for try await m in c.inbound { try await c.send(m) } } catch {}
                    }
                }
            }
        }
        defer { echo.cancel() }
        let c = try await connector(.ephemeral()).connect(to: ConnectorLoopbackTests.cameraID, via: introducer, credential: .password("secret"))
        defer { Task { await c.close() } }
        #expect(c.path == "tcp-simultaneous-open")
        #expect(c.channelRetransmissionBounds?.min == 3000, "on TCP, SCTP's timer stays above TCP's own recovery")
        // Until it moves (and after), messages keep to what a datagram path carries.
        #expect(c.maxMessageSize == 1200 - PeerWire.sealedOverhead, "\(c.maxMessageSize)")
        #expect(try await ConnectorLoopbackTests.echo(c, bytes: 3000))
        let moves = c.pathMoves
        let move = try #require(await withDeadline(.seconds(15)) { () -> PathMove? in
            for await m in moves { return m }
            return nil
        }, "the session never moved: \(c.report)")
        #expect(move.from == "tcp-simultaneous-open" && move.to == "udp-hole-punch" && move.reason == .upgrade, "\(move)")
        #expect(move.route.hasPrefix("udp "), "\(move)")
        #expect(c.path == "udp-hole-punch")
        #expect(c.channelRetransmissionBounds.map { [$0.initial, $0.min, $0.max] } == [1000, 200, 10_000], "the datagram timing")
        #expect(try await ConnectorLoopbackTests.echo(c, bytes: 5000), "messages cross the datagram path")
    }
}
