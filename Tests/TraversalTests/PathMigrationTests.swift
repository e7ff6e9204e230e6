import Crypto
import Foundation
import PeerTestSupport
import Synchronization
import Testing
@testable import Traversal

/// A relayed session moving to a direct path and back while a reliable channel carries numbered
/// messages: same session keys, same association and channel, nothing lost or reordered.
@Suite(.serialized)
struct PathMigrationTests {
    /// Quick rules so the test runs in seconds (the defaults are the same rules, slower).
    static var quick: PathMigrationStateMachine.Configuration {
        var c = PathMigrationStateMachine.Configuration()
        c.firstAttemptDelay = .milliseconds(100)
        c.retryBackoff = .milliseconds(500)
        c.silence = .milliseconds(400)
        c.probeTimeout = .milliseconds(300)
        return c
    }

    /// Viewer and camera over a relayed memory link, each able to upgrade over `network`.
    static func relayedPair(network: MemoryDirectNetwork)
        -> (viewer: PeerConnection, camera: PeerConnection, relay: MemoryLink) {
        let (a, b, relay) = MemoryLink.pair(maxMessageSize: 1100, relayed: true)
        let k1 = NoiseCipherState(key: [UInt8](repeating: 1, count: 32))
        let k2 = NoiseCipherState(key: [UInt8](repeating: 2, count: 32))
        let identity = DeviceIdentity.generate()
        let report = ConnectionReport(path: "memory-relay", route: nil, setupMs: 0, requestID: nil, attempts: [])
        func upgrade(_ role: ConnectionRole) -> PathUpgrade {
            PathUpgrade(strategies: [MemoryPathStrategy(network: network)], context: StrategyContext(role: role),
                        gatherTimeout: .seconds(1), configuration: quick)
        }
        let viewer = PeerConnection(role: .viewer, report: report, peerIdentity: identity.publicKey, transport: a,
                                    channel: SecureDatagramChannel(send: k1, receive: k2), replayOnHello: nil, keepalive: nil,
                                    upgrade: upgrade(.viewer))
        let camera = PeerConnection(role: .camera, report: report, peerIdentity: identity.publicKey, transport: b,
                                    channel: SecureDatagramChannel(send: k2, receive: k1), replayOnHello: nil, keepalive: nil,
                                    upgrade: upgrade(.camera))
        return (viewer, camera, relay)
    }

    /// The next move on `moves`, or nil after `limit`.
    static func nextMove(_ moves: AsyncStream<PathMove>, within limit: Duration) async -> PathMove? {
        try? await withDeadline(limit) {
            for await m in moves { return m }
            throw CancellationError()
        }
    }

    @Test func aRelayedSessionMovesToADirectPathAndBackWithoutLosingAMessage() async throws {
        let network = MemoryDirectNetwork()
        let (viewer, camera, relay) = Self.relayedPair(network: network)
        defer { Task { await viewer.close(); await camera.close() } }
        let viewerMoves = viewer.pathMoves
        let numbers = try await NumberedChannelRun(from: viewer, to: camera)

        // 1. The session moves to the direct path once a probe is answered there.
        let up = try #require(await Self.nextMove(viewerMoves, within: .seconds(10)), "no move to the direct path")
        #expect(up.from == "memory-relay" && up.to == "memory-direct" && up.reason == .upgrade, "\(up)")
        #expect(viewer.path == "memory-direct")
        try await Task.sleep(for: .milliseconds(500))
        #expect(camera.path == "memory-direct", "the camera follows the viewer's announcement: \(camera.report.moves)")
        #expect(camera.report.moves.first?.reason == .peerMoved)
        let direct = try #require(network.allLinks.first)
        let relayBefore = relay.sent.load(ordering: .relaxed)
        let directBefore = direct.sent.load(ordering: .relaxed)
        try await Task.sleep(for: .milliseconds(500))
        #expect(direct.sent.load(ordering: .relaxed) - directBefore > 50, "messages now go direct")
        #expect(relay.sent.load(ordering: .relaxed) - relayBefore < 10, "and no longer through the relay")

        // 2. Everything on the direct path is dropped (and no new direct path can be made): back to the relay.
        network.blocked.withLock { $0 = true }
        let dropped = ContinuousClock.now
        direct.conditions.withLock { $0.loss = 1 }
        let down = try #require(await Self.nextMove(viewerMoves, within: .seconds(10)), "no fallback to the relay")
        let fallback = ContinuousClock.now - dropped
        print("fallback to the relay \(fallback.milliseconds) ms after the direct path went dark (\(down.reason.rawValue))")
        // Both sides watch the path: the one that finds it dead first moves and tells the other over the relay, which
        // follows (peerMoved). Which one is first is a race of their silence timers, so one of the two says pathDead.
        #expect(down.to == "memory-relay" && [.pathDead, .peerMoved].contains(down.reason), "\(down)")
        try await Task.sleep(for: .milliseconds(500))
        #expect(camera.path == "memory-relay", "\(camera.report.moves)")
        let cameraDown = try #require(camera.report.moves.last, "\(camera.report.moves)")
        #expect(Set([down.reason, cameraDown.reason]) == [.pathDead, .peerMoved] || (down.reason == .pathDead && cameraDown.reason == .pathDead),
                "viewer \(down), camera \(cameraDown)")

        // 3. Every message sent arrived, in order, none twice.
        let (got, total) = try await numbers.finish()
        #expect(got == Array(0..<total), "\(got.count) of \(total) in order")
        #expect(viewer.report.moves.map(\.reason) == [.upgrade, down.reason], "\(viewer.report.moves)")
    }

    @Test func withoutAnAnsweredProbeTheSessionStaysOnTheRelay() async throws {
        let network = MemoryDirectNetwork()
        let (viewer, camera, _) = Self.relayedPair(network: network)
        defer { Task { await viewer.close(); await camera.close() } }
        // Every direct link made is dark from the start: connects succeed, probes never come back.
        network.newLinkConditions.withLock { $0.loss = 1 }
        let moves = viewer.pathMoves
        #expect(await Self.nextMove(moves, within: .seconds(2)) == nil, "moved to a path that never answered")
        #expect(viewer.path == "memory-relay" && camera.path == "memory-relay")
    }
}
