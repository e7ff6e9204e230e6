import Foundation
import PeerTestSupport
import Synchronization
import Testing
@testable import Traversal

/// A session that won on a direct path, with a relay path connected beside it as standby, falls back to
/// the relay when the direct path goes dark, without losing a channel message.
@Suite(.serialized)
struct RelayStandbyTests {
    /// A prepared strategy whose connect hands over a transport already made (one end of a memory relay).
    struct HandedOver: PreparedStrategy {
        let transport: any PeerTransport
        var candidates: [Candidate] { [] }
        func startDelay(local: PeerOffer, remote: PeerOffer) -> Duration { .zero }
        func connect(remote: PeerOffer, context: StrategyContext) async throws -> any PeerTransport { transport }
        func close() async {}
    }

    @Test func aDirectSessionFallsBackToItsStandbyRelayWithoutLosingAMessage() async throws {
        let (viewer, camera, viewerEnd, cameraEnd) = PeerRebindingTests.directPair()
        defer { Task { await viewer.close(); await camera.close() } }
        let (a, b, relay) = MemoryLink.pair(maxMessageSize: 1100, relayed: true)
        #expect(viewer.canKeepStandby && camera.canKeepStandby)
        let offer = PeerOffer(identityKey: Data(), candidates: [], strategies: [])
        viewer.keepStandby(HandedOver(transport: a), strategy: "memory-relay", remote: offer, context: StrategyContext(role: .viewer))
        camera.keepStandby(HandedOver(transport: b), strategy: "memory-relay", remote: offer, context: StrategyContext(role: .camera))
        let viewerMoves = viewer.pathMoves
        let numbers = try await NumberedChannelRun(from: viewer, to: camera)
        // Bounded: 50 × 20 ms for the standby to join.
        for _ in 0..<50 where viewer.paths.withMachine({ $0.hasStandby }) != true || camera.paths.withMachine({ $0.hasStandby }) != true {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(viewer.paths.withMachine { $0.hasStandby } == true && camera.paths.withMachine { $0.hasStandby } == true)
        try await Task.sleep(for: .milliseconds(300))
        #expect(relay.sent.load(ordering: .relaxed) < 10, "the standby carries nothing while the direct path works")

        // The direct path goes dark both ways.
        viewerEnd.dark.store(true, ordering: .relaxed)
        cameraEnd.dark.store(true, ordering: .relaxed)
        let dropped = ContinuousClock.now
        let down = try #require(await PathMigrationTests.nextMove(viewerMoves, within: .seconds(10)), "no fallback to the standby")
        print("fallback to the standby relay \((ContinuousClock.now - dropped).milliseconds) ms after the direct path went dark (\(down.reason.rawValue))")
        // Whichever side notices first moves for a dead path; the other may follow its peer's move first.
        #expect(down.from == "memory-direct" && down.to == "memory-relay" && [.pathDead, .peerMoved].contains(down.reason), "\(down)")
        try await Task.sleep(for: .milliseconds(500))
        #expect(camera.path == "memory-relay", "\(camera.report.moves)")
        let reasons = [down.reason] + camera.report.moves.map(\.reason)
        #expect(reasons.contains(.pathDead), "one side saw the direct path die: \(reasons)")

        let (got, total) = try await numbers.finish()
        #expect(got == Array(0..<total), "\(got.count) of \(total) in order")
    }

    @Test func aSessionOnTheRelayKeepsNoOtherStandby() {
        let (a, b, _) = MemoryLink.pair(maxMessageSize: 1100, relayed: true)
        let (viewer, camera) = connectedPair(viewer: a, camera: b, path: "memory-relay")
        #expect(!viewer.canKeepStandby && !camera.canKeepStandby)
        viewer.shutdown(error: nil)
        camera.shutdown(error: nil)
    }
}
