import Foundation
import Testing
@testable import Traversal
import PeerTestSupport

/// The path MTU search (RFC 8899) as a state machine: probes, acknowledgements, timers and black holes.
@Suite struct PathMTUSearchTests {
    let t0 = ContinuousClock.now

    @Test func probesEveryCandidateAboveTheBaseAtOnce() {
        var s = PathMTUSearch(base: 1200, limit: 1452)
        #expect(s.start(now: t0) == [.sendProbe(size: 1280), .sendProbe(size: 1400), .sendProbe(size: 1452)])
        #expect(s.current == 1200)
        #expect(s.nextDeadline == t0 + PathMTUSearch.probeInterval)
    }

    @Test func candidatesAboveTheTransportsLimitAreNotTried() {
        var s = PathMTUSearch(base: 1200, limit: 1400)
        #expect(s.start(now: t0) == [.sendProbe(size: 1280), .sendProbe(size: 1400)])
    }

    @Test func theLargestAcknowledgedSizeIsUsedAndSmallerProbesForgotten() {
        var s = PathMTUSearch(base: 1200, limit: 1452)
        _ = s.start(now: t0)
        #expect(s.acknowledged(size: 1400, now: t0 + .milliseconds(40)) == [.use(size: 1400)])
        #expect(s.current == 1400)
        // A late acknowledgement of a smaller probe changes nothing.
        #expect(s.acknowledged(size: 1280, now: t0 + .milliseconds(41)).isEmpty)
        #expect(s.current == 1400)
        // 1452 is repeated, then given up after MAX_PROBES.
        #expect(s.tick(now: t0 + .seconds(1)) == [.sendProbe(size: 1452)])
        #expect(s.tick(now: t0 + .seconds(2)) == [.sendProbe(size: 1452)])
        #expect(s.tick(now: t0 + .seconds(3)).isEmpty)
        #expect(s.current == 1400)
    }

    @Test func acknowledgementsOfSizesNeverProbedOrOutOfRangeAreIgnored() {
        var s = PathMTUSearch(base: 1200, limit: 1400)
        _ = s.start(now: t0)
        #expect(s.acknowledged(size: 1452, now: t0).isEmpty)
        #expect(s.acknowledged(size: 1300, now: t0).isEmpty)
        #expect(s.acknowledged(size: 1200, now: t0).isEmpty)
        #expect(s.acknowledged(size: 65_535, now: t0).isEmpty)
        #expect(s.current == 1200)
    }

    @Test func nothingAnsweredLeavesTheBaseAndEndsTheSearch() {
        var s = PathMTUSearch(base: 1200, limit: 1452)
        _ = s.start(now: t0)
        var sent = 0
        for i in 1...5 {
            sent += s.tick(now: t0 + .seconds(i)).count
        }
        #expect(sent == 3 * (PathMTUSearch.maxProbes - 1))
        #expect(s.current == 1200)
        #expect(s.nextDeadline == nil)
    }

    @Test func theSizeInUseIsConfirmedAndABlackHoleFallsBackToTheBase() {
        var s = PathMTUSearch(base: 1200, limit: 1452)
        _ = s.start(now: t0)
        _ = s.acknowledged(size: 1452, now: t0)
        let confirm = t0 + PathMTUSearch.confirmationInterval
        #expect(s.nextDeadline == confirm)
        // An answered confirmation keeps the size.
        #expect(s.tick(now: confirm) == [.sendProbe(size: 1452)])
        #expect(s.acknowledged(size: 1452, now: confirm + .milliseconds(30)).isEmpty)
        #expect(s.current == 1452)
        // Then the path stops carrying it: MAX_PROBES unanswered confirmations, and back to the base.
        let next = confirm + .milliseconds(30) + PathMTUSearch.confirmationInterval
        #expect(s.tick(now: next) == [.sendProbe(size: 1452)])
        #expect(s.tick(now: next + .seconds(1)) == [.sendProbe(size: 1452)])
        #expect(s.tick(now: next + .seconds(2)) == [.sendProbe(size: 1452)])
        #expect(s.tick(now: next + .seconds(3)) == [.use(size: 1200)])
        #expect(s.current == 1200)
        // Larger sizes are searched again after the raise timer, not before.
        #expect(s.nextDeadline == next + .seconds(3) + PathMTUSearch.researchInterval)
        #expect(s.tick(now: next + .seconds(4)).isEmpty)
        #expect(s.tick(now: next + .seconds(3) + PathMTUSearch.researchInterval).count == 3)
    }
}

/// The search between two real sessions over a link with a smaller MTU than the transport could send.
@Suite(.serialized, .timeLimit(.minutes(1))) struct PathMTUSessionTests {
    @Test(arguments: [(1500, 1452), (1420, 1400), (1300, 1280), (1250, 1200)])
    func sessionsSettleOnTheLargestSizeTheLinkCarries(linkMTU: Int, expected: Int) async throws {
        var conditions = MemoryLink.Conditions()
        conditions.pathMTU = linkMTU
        let (viewer, camera, _) = connectedPair(conditions, probeMessageSize: 1452, keepalive: .seconds(10))
        let (a, b) = try await PeerChannelTests.channelPair(viewer, camera)
        // Probes go out at once and are answered within a few milliseconds here; a large transfer afterwards
        // uses the size found (and one lost to the link would stall it, which the time limit would show).
        for _ in 0..<100 where viewer.pathMessageSize != expected || camera.pathMessageSize != expected {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(viewer.pathMessageSize == expected)
        #expect(camera.pathMessageSize == expected)
        try await PeerChannelTests.transfer([300_000, 1 << 20], from: a, to: b)
        #expect(viewer.largestChannelPacket <= expected)
        if expected > 1200 { #expect(viewer.largestChannelPacket > 1200) }
        await viewer.close()
        await camera.close()
    }

    @Test func aSessionWithoutKeepalivesDoesNotProbe() async throws {
        let (viewer, camera, link) = connectedPair(probeMessageSize: 1452, keepalive: nil)
        let (a, b) = try await PeerChannelTests.channelPair(viewer, camera)
        try await PeerChannelTests.transfer([200_000], from: a, to: b)
        #expect(viewer.pathMessageSize == 1200)
        #expect(viewer.largestChannelPacket <= 1200)
        _ = link
        await viewer.close()
        await camera.close()
    }
}
