import Crypto
import Foundation
import STUNLite
import Strategies
import Synchronization
import Testing
import Traversal

/// What keeps setup short, checked by behaviour (never by elapsed time): a gathering that ran out
/// of time is not waited for again, known camera keys are recorded, both sides derive the same
/// start delays from the same two offers.
@Suite(.serialized) struct ConnectorTimingRulesTests {
    /// A strategy whose gathering ignores cancellation and finishes only after `hold` (a STUN over
    /// TCP stuck in connect, say); it counts how often it was asked.
    struct StuckGatherer: TraversalStrategy {
        let id = "stuck"
        let hold: Duration
        let calls = Counter()

        final class Counter: Sendable {
            let value = Mutex(0)
        }

        func prepare(_ context: StrategyContext) async throws -> any PreparedStrategy {
            calls.value.withLock { $0 += 1 }
            let seconds = Double(hold.components.seconds)
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { c.resume() }
            }
            throw StrategyError(code: .failed, detail: "gave up")
        }
    }

    @Test func aGatheringThatRanOutOfTimeIsNotWaitedForNextTime() async throws {
        try await ConnectorLoopbackTests.withSTUN { stun in
            let introducer = InMemoryIntroducer()
            try await ConnectorLoopbackTests.withCamera(introducer, stun: stun) {
                let stuck = StuckGatherer(hold: .seconds(120))
                let viewer = Connector(configuration: .init(
                    identity: .ephemeral(), strategies: [DirectLAN(scope: .loopbackOnly), stuck], stunServers: stun,
                    connectTimeout: testConnectTimeout, gatherTimeout: .seconds(2)))
                // The first connection gives the stuck gathering its deadline, then goes on without
                // it: it returns although the gathering holds on for two minutes.
                let first = try await viewer.connect(to: ConnectorLoopbackTests.cameraID, via: introducer, credential: .password("secret"))
                let late = try #require(first.report.attempts.first { $0.strategy == "stuck" })
                #expect(late.outcome == .failed && late.error?.contains("timed out") == true, "\(late)")
                await first.close()
                // The next one does not wait for it at all, says so, and re-checks in the background.
                let second = try await viewer.connect(to: ConnectorLoopbackTests.cameraID, via: introducer, credential: .password("secret"))
                let skipped = try #require(second.report.attempts.first { $0.strategy == "stuck" })
                #expect(skipped.outcome == .skipped && skipped.error?.contains("re-checking") == true, "\(skipped)")
                #expect(second.path == "direct-lan")
                // The background re-check asked it once more (bounded wait: it starts beside the gathering).
                for _ in 0..<100 where stuck.calls.value.withLock({ $0 }) < 2 { try await Task.sleep(for: .milliseconds(50)) }
                #expect(stuck.calls.value.withLock { $0 } == 2)
                await second.close()
            }
        }
    }

    @Test func reportsCarryPhasesInOrder() async throws {
        try await ConnectorLoopbackTests.withSTUN { stun in
            let introducer = InMemoryIntroducer()
            try await ConnectorLoopbackTests.withCamera(introducer, stun: stun) {
                let c = try await ConnectorLoopbackTests.viewer(stun: stun)
                    .connect(to: ConnectorLoopbackTests.cameraID, via: introducer, credential: .password("secret"))
                let p = try #require(c.report.phases)
                #expect(0 <= p.gatheredMs && p.gatheredMs <= p.introducedMs && p.introducedMs <= p.securedMs && p.securedMs <= c.report.setupMs, "\(p)")
                await c.close()
            }
        }
    }

    @Test func aCheckedCameraKeyIsRecordedAndAForgedOneIsNot() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("trav-known-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("known").path
        try await ConnectorLoopbackTests.withSTUN { stun in
            let known = try KnownDevices(file: path)
            let viewer = Connector(configuration: .init(
                identity: .ephemeral(), strategies: [DirectLAN(scope: .loopbackOnly)], stunServers: stun,
                connectTimeout: testConnectTimeout, gatherTimeout: testGatherTimeout, knownDevices: known))
            let forging = InMemoryIntroducer(forgedKey: DeviceIdentity.generate().publicKey.rawRepresentation)
            try await ConnectorLoopbackTests.withCamera(forging, stun: stun, strategies: [DirectLAN(scope: .loopbackOnly)]) {
                await #expect(throws: TraversalError.self) {
                    _ = try await viewer.connect(to: ConnectorLoopbackTests.cameraID, via: forging, credential: .password("secret"))
                }
            }
            #expect(known.count == 0)
            let honest = InMemoryIntroducer()
            try await ConnectorLoopbackTests.withCamera(honest, stun: stun, strategies: [DirectLAN(scope: .loopbackOnly)]) {
                let c = try await viewer.connect(to: ConnectorLoopbackTests.cameraID, via: honest, credential: .password("secret"))
                await c.close()
            }
            #expect(known.contains(ConnectorLoopbackTests.camera.publicKey, for: ConnectorLoopbackTests.cameraID))
            // The file holds it for the next process.
            let reloaded = try KnownDevices(file: path)
            #expect(reloaded.contains(ConnectorLoopbackTests.camera.publicKey, for: ConnectorLoopbackTests.cameraID))
            #expect(!reloaded.contains(DeviceIdentity.generate().publicKey, for: ConnectorLoopbackTests.cameraID))
        }
    }

    @Test func aCorruptKnownDevicesFileIsATypedError() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("trav-known-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        for text in ["not the header\n", "\(KnownDevices.fileHeader)\nTRAV-0000 abc\n",
                     "\(KnownDevices.fileHeader)\n\(ConnectorLoopbackTests.cameraID) AAAA\n"] {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            #expect(throws: KnownDevicesError.self) { _ = try KnownDevices(file: path) }
        }
        #expect(try KnownDevices(file: path + "-missing").count == 0)
    }

    // MARK: Start delays: the same two offers give both sides the same answer.

    static func offer(udp mapping: String?, tcp: Bool) -> PeerOffer {
        var candidates: [Candidate] = []
        if let mapping {
            candidates.append(Candidate(strategy: "udp-hole-punch", kind: .serverReflexive, address: "203.0.113.5:4000", detail: ["mapping": mapping]))
        }
        if tcp {
            candidates.append(Candidate(strategy: "tcp-simultaneous-open", kind: .serverReflexive, transport: "tcp", address: "203.0.113.5:5000"))
        }
        return PeerOffer(identityKey: Data(count: 32), candidates: candidates, strategies: [])
    }

    @Test func startDelaysFollowWhatCanWork() async throws {
        let eim = Self.offer(udp: "endpoint-independent", tcp: true)
        let random = Self.offer(udp: "random", tcp: true)
        let tcpOnly = Self.offer(udp: nil, tcp: true)
        let nothing = Self.offer(udp: nil, tcp: false)
        #expect(UDPHolePunch.needsBirthday(eim, random) && UDPHolePunch.needsBirthday(random, eim))
        #expect(!UDPHolePunch.needsBirthday(eim, eim) && !UDPHolePunch.needsBirthday(random, random))
        #expect(UDPHolePunch.bothMapRandomly(random, random) && !UDPHolePunch.bothMapRandomly(random, eim))

        let relay = try await TLSRelay().prepare(StrategyContext(role: .viewer))
        defer { Task { await relay.close() } }
        for (a, b, expected) in [(eim, eim, TLSRelay.defaultStartDelay), (eim, random, TLSRelay.birthdayStartDelay),
                                 (random, random, .zero), (tcpOnly, eim, TLSRelay.defaultStartDelay), (nothing, eim, .zero)] {
            #expect(relay.startDelay(local: a, remote: b) == expected && relay.startDelay(local: b, remote: a) == expected)
        }

        let server = try await STUNServer.start(.init(listenIP: IPAddress("127.0.0.1")!, port: 0, tcp: true))
        do {
            let tcp = try await TCPSimultaneousOpen().prepare(StrategyContext(role: .viewer, stunServers: [server.tcpAddresses[0].description]))
            #expect(tcp.startDelay(local: eim, remote: random) == TCPSimultaneousOpen.udpPreference)
            #expect(tcp.startDelay(local: tcpOnly, remote: eim) == .zero && tcp.startDelay(local: eim, remote: tcpOnly) == .zero)
            await tcp.close()
        } catch {
            await server.shutdown()
            throw error
        }
        await server.shutdown()
    }
}
