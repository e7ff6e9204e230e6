import Foundation
import Logging
import Rendezvous
import STUNLite
import Strategies
import TURNLite
import Testing
import Traversal

/// Connections and connectors dropped without `close()` give back what they held: descriptors
/// (/proc/self/fd, the whole process: the cloud runs in it too) and relay allocations on the cloud's
/// TURN server (whose refresh loops would otherwise keep them alive). Real sockets on loopback.
@Suite(.serialized) struct ResourceOwnershipTests {
    /// Connections opened and dropped per run.
    static let rounds = 3
    /// How long the releases may take to land (closing is asynchronous: relay deallocations, TLS shutdowns).
    static let settleTime: Duration = .seconds(15)

    /// Descriptors open in this process now.
    static func openDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
    }

    /// Polls (bounded by ``settleTime``) until the process holds at most `descriptors` and the relay no
    /// allocation; returns what it saw last.
    static func settled(atMost descriptors: Int, relay: TURNServer) async -> (descriptors: Int, allocations: Int) {
        let deadline = ContinuousClock.now + settleTime
        while true {
            let now = (openDescriptors(), await relay.allocationCount)
            if (now.0 <= descriptors && now.1 == 0) || ContinuousClock.now >= deadline { return now }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// The descriptor count once the relay holds no allocation and the count has stopped changing
    /// (five equal samples in a row; bounded by ``settleTime``).
    static func steadyBaseline(relay: TURNServer) async -> (descriptors: Int, allocations: Int) {
        let deadline = ContinuousClock.now + settleTime
        var last = -1, same = 0
        while ContinuousClock.now < deadline {
            let now = openDescriptors()
            same = now == last ? same + 1 : 0
            last = now
            if same >= 5, await relay.allocationCount == 0 { break }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return (last, await relay.allocationCount)
    }

    /// One viewer connection through `cloud`, echoed once by the camera, then dropped on both sides without close.
    static func connectEchoAndDrop(_ cloud: TravCloud, camera: DeviceIdentity, strategies: [String]) async throws -> String {
        let viewer = Connector(configuration: .init(identity: .ephemeral(), cloud: cloud, strategies: try StrategyCatalog.named(strategies),
                                                    gatherTimeout: TLSRelayTests.gatherTimeout, logger: TLSRelayTests.quiet))
        let connection = try await viewer.connect(to: camera.deviceID, credential: .password("secret"))
        // Datagrams may be lost (a loaded loopback drops some): the ping repeats until its echo comes back.
        let pinger = Task {
            for _ in 0..<40 where !Task.isCancelled {
                try? await connection.send(Array("ping".utf8))
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
        defer { pinger.cancel() }
        var inbound = connection.inbound.makeAsyncIterator()
        let echoed = try await inbound.next()
        #expect(echoed == Array("ping".utf8))
        return connection.path
    }

    @Test(arguments: [["tls-relay"], ["direct-lan", "udp-hole-punch", "tcp-simultaneous-open", "tls-relay"]])
    func droppedConnectionsGiveBackDescriptorsAndRelayAllocations(_ strategies: [String]) async throws {
        try await TLSRelayTests.withRelayCloud { service, endpoint in
            let relay = try #require(service.relay)
            let stunPort = try #require(service.stun.udpAddresses[.primary]?.port)
            // One value for the cloud; its STUN server given by name, which must resolve.
            let cloud = TravCloud(signalling: endpoint, stunServers: ["localhost:\(stunPort)"])
            let identity = DeviceIdentity.generate()
            let camera = Connector(configuration: .init(identity: identity, cloud: cloud, strategies: try StrategyCatalog.named(strategies),
                                                        gatherTimeout: TLSRelayTests.gatherTimeout, logger: TLSRelayTests.quiet))
            let session = try await camera.startCamera(access: try .password("secret", parameters: testCost))
            // The camera echoes one message per viewer and drops the connection without closing it.
            let server = Task {
                await withTaskGroup(of: Void.self) { group in
                    for await event in session.events {
                        guard case .viewerConnected(let c) = event else { continue }
                        group.addTask {
                            var inbound = c.inbound.makeAsyncIterator()
                            if let m = try? await inbound.next() { try? await c.send(m) }
                        }
                    }
                }
            }
            defer { server.cancel() }
            // A first round brings up what lives as long as the process (event loops, thread pools).
            _ = try await Self.connectEchoAndDrop(cloud, camera: identity, strategies: strategies)
            let baseline = await Self.steadyBaseline(relay: relay)
            #expect(baseline.allocations == 0, "allocations held after a dropped connection: \(baseline.allocations)")

            for _ in 0..<Self.rounds {
                let path = try await Self.connectEchoAndDrop(cloud, camera: identity, strategies: strategies)
                if strategies == ["tls-relay"] { #expect(path == "tls-relay") }
            }
            let after = await Self.settled(atMost: baseline.descriptors, relay: relay)
            #expect(after.allocations == 0, "relay allocations left after \(Self.rounds) dropped connections: \(after.allocations)")
            #expect(after.descriptors <= baseline.descriptors,
                    "descriptors: \(baseline.descriptors) before, \(after.descriptors) after \(Self.rounds) dropped connections")
            await session.stop()
        }
    }
}
