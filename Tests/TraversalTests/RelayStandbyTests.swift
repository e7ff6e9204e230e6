import Foundation
import NIOCore
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

    /// The `memory-relay` strategy: each prepare hands out the next of a list of prepared ends (a fresh allocation
    /// of the side renewing its end), and fails once the list is used up.
    final class MemoryRelay: TraversalStrategy {
        let id = "memory-relay"
        private let ends: Mutex<[any PreparedStrategy]>
        let prepares = Atomic<Int>(0)
        init(_ ends: [any PreparedStrategy] = []) { self.ends = Mutex(ends) }
        func prepare(_ context: StrategyContext) async throws -> any PreparedStrategy {
            prepares.wrappingAdd(1, ordering: .relaxed)
            guard let next = ends.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else {
                throw StrategyError(code: .failed, detail: "no more relay allocations")
            }
            return next
        }
    }

    /// A fresh end of the relay: it offers `relayed` and its connect hands over `transport`.
    struct FreshEnd: PreparedStrategy {
        let relayed: SocketAddress
        let transport: any PeerTransport
        var candidates: [Candidate] { [Candidate(strategy: "memory-relay", kind: .relayed, address: "\(relayed.ipAddress!):\(relayed.port!)")] }
        func startDelay(local: PeerOffer, remote: PeerOffer) -> Duration { .zero }
        func connect(remote: PeerOffer, context: StrategyContext) async throws -> any PeerTransport { transport }
        func close() async {}
    }

    /// A viewer's relay whose connect reaches the peer's relayed address the offer names (its only relayed
    /// candidate) with the transport kept for that address, once; any other address answers nothing.
    final class ByAddress: PreparedStrategy {
        private let transports: Mutex<[String: any PeerTransport]>
        let targets = Mutex<[String]>([])
        init(_ transports: [String: any PeerTransport]) { self.transports = Mutex(transports) }
        var candidates: [Candidate] { [] }
        func startDelay(local: PeerOffer, remote: PeerOffer) -> Duration { .zero }
        func connect(remote: PeerOffer, context: StrategyContext) async throws -> any PeerTransport {
            let target = remote.candidates.first { $0.strategy == "memory-relay" && $0.kind == .relayed }?.address ?? "-"
            targets.withLock { $0.append(target) }
            guard let t = transports.withLock({ $0.removeValue(forKey: target) }) else {
                throw StrategyError(code: .unreachable, detail: "\(target) did not answer")
            }
            return t
        }
        func close() async {}
    }

    @Test func aDirectSessionFallsBackToItsStandbyRelayWithoutLosingAMessage() async throws {
        let (viewer, camera, viewerEnd, cameraEnd) = PeerRebindingTests.directPair()
        defer { Task { await viewer.close(); await camera.close() } }
        let (a, b, relay) = MemoryLink.pair(maxMessageSize: 1100, relayed: true)
        #expect(viewer.canKeepStandby && camera.canKeepStandby)
        let offer = PeerOffer(identityKey: Data(), candidates: [], strategies: [])
        viewer.keepStandby(HandedOver(transport: a), strategy: MemoryRelay(), remote: offer, context: StrategyContext(role: .viewer))
        camera.keepStandby(HandedOver(transport: b), strategy: MemoryRelay(), remote: offer, context: StrategyContext(role: .camera))
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

    @Test func unreliableMessagesStayWithinWhatTheStandbyCarriesSoAFallbackRefusesNone() async throws {
        let (viewer, camera, viewerEnd, cameraEnd) = PeerRebindingTests.directPair()
        defer { Task { await viewer.close(); await camera.close() } }
        let direct = viewer.maxMessageSize
        #expect(direct == 1200 - PeerWire.sealedOverhead)
        let (a, b, _) = MemoryLink.pair(maxMessageSize: 1100, relayed: true)
        let offer = PeerOffer(identityKey: Data(), candidates: [], strategies: [])
        viewer.keepStandby(HandedOver(transport: a), strategy: MemoryRelay(), remote: offer, context: StrategyContext(role: .viewer))
        camera.keepStandby(HandedOver(transport: b), strategy: MemoryRelay(), remote: offer, context: StrategyContext(role: .camera))
        // Bounded: 50 × 20 ms for the standby to join.
        for _ in 0..<50 where viewer.paths.withMachine({ $0.hasStandby }) != true || camera.paths.withMachine({ $0.hasStandby }) != true {
            try await Task.sleep(for: .milliseconds(20))
        }
        let limit = 1100 - PeerWire.sealedOverhead
        #expect(viewer.maxMessageSize == limit && camera.maxMessageSize == limit, "lowered to the standby's size")
        await #expect(throws: TraversalError.self, "a message only the direct path carries is refused while on it") {
            try await viewer.send([UInt8](repeating: 1, count: direct))
        }

        let viewerMoves = viewer.pathMoves
        viewerEnd.dark.store(true, ordering: .relaxed)
        cameraEnd.dark.store(true, ordering: .relaxed)
        // A dead path shows as silence while sending: the viewer sends small messages meanwhile (bounded: 200 × 50 ms).
        let sender = Task {
            for _ in 0..<200 where !Task.isCancelled {
                try? await viewer.send([0])
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        let down = try #require(await PathMigrationTests.nextMove(viewerMoves, within: .seconds(10)), "no fallback to the standby")
        sender.cancel()
        #expect(down.to == "memory-relay", "\(down)")
        // The largest message allowed before the fallback goes through after it.
        let largest = [UInt8](repeating: 7, count: limit)
        let inbound = camera.inbound
        let received = Task { () -> Bool in
            for try await message in inbound where message == largest { return true }
            return false
        }
        defer { received.cancel() }
        for _ in 0..<5 {
            try await viewer.send(largest)
            try await Task.sleep(for: .milliseconds(20))
        }
        let arrived = try await withDeadline(.seconds(2)) { try await received.value }
        #expect(arrived, "the largest allowed message crossed the relay after the fallback")
    }

    /// A prepared relay whose each connect hands over the next of a list of transports (each call also runs
    /// `connected` with its index), and fails once the list is used up.
    final class Successive: PreparedStrategy {
        private let transports: Mutex<[any PeerTransport]>
        private let connected: @Sendable (Int) -> Void
        let connects = Atomic<Int>(0)
        init(_ transports: [any PeerTransport], connected: @escaping @Sendable (Int) -> Void = { _ in }) {
            self.transports = Mutex(transports)
            self.connected = connected
        }
        var candidates: [Candidate] { [] }
        func startDelay(local: PeerOffer, remote: PeerOffer) -> Duration { .zero }
        func connect(remote: PeerOffer, context: StrategyContext) async throws -> any PeerTransport {
            let index = connects.wrappingAdd(1, ordering: .relaxed).oldValue
            guard let next = transports.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else {
                throw StrategyError(code: .failed, detail: "no more relay connections")
            }
            connected(index)
            return next
        }
        func close() async {}
    }

    /// Waits until both sides hold the standby and the viewer's end (`viewerEnd`) has sent its first check, then 200 ms more.
    static func standbyJoined(_ viewer: PeerConnection, _ camera: PeerConnection, viewerEnd: PeerRebindingTests.NATedEnd) async throws {
        // Bounded: 50 × 20 ms for the standby to join and answer its first check.
        for _ in 0..<50 where viewer.paths.withMachine({ $0.hasStandby && $0.standbyFailures == 0 }) != true
            || camera.paths.withMachine({ $0.hasStandby }) != true || viewerEnd.sentTo.withLock({ $0.isEmpty }) {
            try await Task.sleep(for: .milliseconds(20))
        }
        try await Task.sleep(for: .milliseconds(200))
    }

    static let cameraRelayed = try! SocketAddress(ipAddress: "192.0.2.1", port: 49_152)
    static let viewerRelayed = try! SocketAddress(ipAddress: "192.0.2.1", port: 49_153)
    static let viewerRelayedAgain = try! SocketAddress(ipAddress: "192.0.2.1", port: 49_154)

    @Test func aStandbyWhoseConnectionFailsIsReplacedAndTheFallbackLandsOnTheReplacement() async throws {
        let (viewer, camera, viewerEnd, cameraEnd) = PeerRebindingTests.directPair()
        defer { Task { await viewer.close(); await camera.close() } }
        typealias End = PeerRebindingTests.NATedEnd
        // The camera keeps one end on the relay; the viewer's first allocation, then its replacement, reach it.
        let cameraRelay = End(name: "camera relay", publicAddress: Self.cameraRelayed, target: Self.viewerRelayed)
        let first = End(name: "viewer relay 1", publicAddress: Self.viewerRelayed, target: Self.cameraRelayed)
        let second = End(name: "viewer relay 2", publicAddress: Self.viewerRelayedAgain, target: Self.cameraRelayed)
        first.peer.withLock { $0 = cameraRelay }
        second.peer.withLock { $0 = cameraRelay }
        cameraRelay.peer.withLock { $0 = first }
        let relay = Successive([first, second]) { index in
            // The replacement is the one the camera's relay end reaches from now on.
            if index == 1 { cameraRelay.peer.withLock { $0 = second } }
        }
        let offer = PeerOffer(identityKey: Data(), candidates: [], strategies: [])
        viewer.keepStandby(relay, strategy: MemoryRelay(), remote: offer, context: StrategyContext(role: .viewer))
        camera.keepStandby(HandedOver(transport: cameraRelay), strategy: MemoryRelay(), remote: offer, context: StrategyContext(role: .camera))
        let viewerMoves = viewer.pathMoves
        let cameraMoves = camera.pathMoves
        let numbers = try await NumberedChannelRun(from: viewer, to: camera)
        try await Self.standbyJoined(viewer, camera, viewerEnd: first)

        // The viewer's connection to the relay fails (reset): the standby is replaced, and the camera follows the
        // replacement's relayed address after a sealed check.
        await first.close()
        let failed = ContinuousClock.now
        let replaced = try #require(await PathMigrationTests.nextMove(viewerMoves, within: .seconds(5)), "the standby was not replaced")
        #expect(replaced.reason == .standbyReplaced && replaced.to == "memory-relay" && replaced.route == "memory-nat viewer relay 2", "\(replaced)")
        let followed = try #require(await PathMigrationTests.nextMove(cameraMoves, within: .seconds(5)), "the camera did not follow the replacement")
        print("standby replaced \((ContinuousClock.now - failed).milliseconds) ms after its connection failed")
        #expect(followed.reason == .standbyReplaced && cameraRelay.remoteAddress == Self.viewerRelayedAgain, "\(followed)")
        #expect(relay.connects.load(ordering: .relaxed) == 2, "one replacement")
        #expect(viewer.path == "memory-direct" && camera.path == "memory-direct", "the session stays direct")

        // Then the direct path goes dark both ways: the fallback lands on the replacement.
        viewerEnd.dark.store(true, ordering: .relaxed)
        cameraEnd.dark.store(true, ordering: .relaxed)
        let dropped = ContinuousClock.now
        let down = try #require(await PathMigrationTests.nextMove(viewerMoves, within: .seconds(10)), "no fallback to the standby")
        print("fallback to the replaced standby \((ContinuousClock.now - dropped).milliseconds) ms after the direct path went dark (\(down.reason.rawValue))")
        #expect(down.to == "memory-relay" && down.route == "memory-nat viewer relay 2" && [.pathDead, .peerMoved].contains(down.reason), "\(down)")
        try await Task.sleep(for: .milliseconds(500))
        #expect(camera.path == "memory-relay", "\(camera.report.moves)")
        let (got, total) = try await numbers.finish()
        #expect(got == Array(0..<total), "\(got.count) of \(total) in order")
    }

    static let cameraRelayedAgain = try! SocketAddress(ipAddress: "192.0.2.1", port: 49_155)

    /// The camera's own connection to the relay ends: its allocation is gone, so no replacement the viewer connects
    /// toward the old relayed address could reach it. The camera allocates afresh and offers the new address over the
    /// direct path; the viewer replaces its end toward it; a later fallback lands there.
    @Test func aCameraWhoseRelayEndDiesOffersAFreshOneAndTheViewerFollowsIt() async throws {
        let (viewer, camera, viewerEnd, cameraEnd) = PeerRebindingTests.directPair()
        defer { Task { await viewer.close(); await camera.close() } }
        typealias End = PeerRebindingTests.NATedEnd
        let cameraRelay = End(name: "camera relay 1", publicAddress: Self.cameraRelayed, target: Self.viewerRelayed)
        let cameraRelayAgain = End(name: "camera relay 2", publicAddress: Self.cameraRelayedAgain, target: Self.viewerRelayedAgain)
        let first = End(name: "viewer relay 1", publicAddress: Self.viewerRelayed, target: Self.cameraRelayed)
        let second = End(name: "viewer relay 2", publicAddress: Self.viewerRelayedAgain, target: Self.cameraRelayedAgain)
        first.peer.withLock { $0 = cameraRelay }
        cameraRelay.peer.withLock { $0 = first }
        second.peer.withLock { $0 = cameraRelayAgain }
        cameraRelayAgain.peer.withLock { $0 = second }
        let viewerRelay = ByAddress(["192.0.2.1:49152": first, "192.0.2.1:49155": second])
        let cameraStrategy = MemoryRelay([FreshEnd(relayed: Self.cameraRelayedAgain, transport: cameraRelayAgain)])
        let offer = PeerOffer(identityKey: Data(), candidates: [Candidate(strategy: "memory-relay", kind: .relayed, address: "192.0.2.1:49152")],
                              strategies: ["memory-relay"])
        viewer.keepStandby(viewerRelay, strategy: MemoryRelay(), remote: offer, context: StrategyContext(role: .viewer))
        camera.keepStandby(HandedOver(transport: cameraRelay), strategy: cameraStrategy, remote: offer, context: StrategyContext(role: .camera))
        let viewerMoves = viewer.pathMoves
        let cameraMoves = camera.pathMoves
        let numbers = try await NumberedChannelRun(from: viewer, to: camera)
        try await Self.standbyJoined(viewer, camera, viewerEnd: first)

        // The camera's end ends (its relay connection reset); the viewer's end stays open, talking to nothing.
        await cameraRelay.close()
        first.peer.withLock { $0 = nil }
        let failed = ContinuousClock.now
        let renewed = try #require(await PathMigrationTests.nextMove(cameraMoves, within: .seconds(5)), "the camera did not renew its end")
        #expect(renewed.reason == .standbyReplaced && renewed.route == "memory-nat camera relay 2", "\(renewed)")
        let replaced = try #require(await PathMigrationTests.nextMove(viewerMoves, within: .seconds(5)), "the viewer did not follow")
        print("standby renewed \((ContinuousClock.now - failed).milliseconds) ms after the camera's end failed")
        #expect(replaced.reason == .standbyReplaced && replaced.route == "memory-nat viewer relay 2", "\(replaced)")
        #expect(viewerRelay.targets.withLock { $0 } == ["192.0.2.1:49152", "192.0.2.1:49155"], "the replacement went to the renewed address")
        #expect(cameraStrategy.prepares.load(ordering: .relaxed) == 1, "one fresh allocation")
        #expect(viewer.path == "memory-direct" && camera.path == "memory-direct", "the session stays direct")

        viewerEnd.dark.store(true, ordering: .relaxed)
        cameraEnd.dark.store(true, ordering: .relaxed)
        let down = try #require(await PathMigrationTests.nextMove(viewerMoves, within: .seconds(10)), "no fallback to the standby")
        #expect(down.to == "memory-relay" && down.route == "memory-nat viewer relay 2" && [.pathDead, .peerMoved].contains(down.reason), "\(down)")
        try await Task.sleep(for: .milliseconds(500))
        #expect(camera.path == "memory-relay", "\(camera.report.moves)")
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
