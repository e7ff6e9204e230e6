import Foundation
import NIOCore
import PeerTestSupport
import Testing
@testable import Traversal

/// What all sessions of a process send toward unvalidated peer addresses is capped per destination
/// (IPv4 address, IPv6 /64) and in all, whatever the sessions' own budgets allow.
@Suite(.serialized)
struct AddressCheckLimiterTests {
    static func address(_ ip: String, _ port: Int = 9) -> SocketAddress { try! SocketAddress(ipAddress: ip, port: port) }

    @Test func oneDestinationGetsItsBurstThenOneCheckPerInterval() {
        let limiter = AddressCheckLimiter(.init(perDestinationBurst: 3, perDestinationInterval: .milliseconds(100),
                                                globalBurst: 100, globalInterval: .milliseconds(1)))
        let t0 = ContinuousClock.now
        let victim = Self.address("192.0.2.7")
        #expect((0..<3).map { _ in limiter.admit(victim, now: t0) } == [nil, nil, nil])
        #expect(limiter.admit(victim, now: t0) == .perDestination)
        // Another port of the same IPv4 address is the same destination; another address is not.
        #expect(limiter.admit(Self.address("192.0.2.7", 4444), now: t0) == .perDestination)
        #expect(limiter.admit(Self.address("192.0.2.8"), now: t0) == nil)
        #expect(limiter.admit(victim, now: t0 + .milliseconds(99)) == .perDestination)
        #expect(limiter.admit(victim, now: t0 + .milliseconds(100)) == nil)
        #expect(limiter.admit(victim, now: t0 + .milliseconds(100)) == .perDestination)
        #expect(limiter.refused[.perDestination] == 4)
    }

    @Test func everyAddressOfAnIPv6SlashSixtyFourIsOneDestination() {
        let limiter = AddressCheckLimiter(.init(perDestinationBurst: 2, perDestinationInterval: .seconds(60),
                                                globalBurst: 100, globalInterval: .milliseconds(1)))
        let t0 = ContinuousClock.now
        #expect(limiter.admit(Self.address("2001:db8:66:1::1"), now: t0) == nil)
        #expect(limiter.admit(Self.address("2001:db8:66:1:aaaa::2"), now: t0) == nil)
        // A new interface ID in the same /64 does not sidestep the cap; the next /64 is another destination.
        #expect(limiter.admit(Self.address("2001:db8:66:1:ffff:ffff:ffff:ffff"), now: t0) == .perDestination)
        #expect(limiter.admit(Self.address("2001:db8:66:2::1"), now: t0) == nil)
    }

    @Test func theProcessCapHoldsAcrossManyDestinations() {
        let limiter = AddressCheckLimiter(.init(perDestinationBurst: 8, perDestinationInterval: .seconds(1),
                                                globalBurst: 10, globalInterval: .seconds(1), maxTrackedDestinations: 4))
        let t0 = ContinuousClock.now
        let results = (0..<50).map { i in limiter.admit(Self.address("198.51.100.\(i + 1)"), now: t0) }
        #expect(results.filter { $0 == nil }.count == 10)
        #expect(results.dropFirst(10).allSatisfy { $0 == .global })
        // One more per interval for the process, toward anyone.
        #expect(limiter.admit(Self.address("203.0.113.1"), now: t0 + .seconds(1)) == nil)
        #expect(limiter.admit(Self.address("203.0.113.2"), now: t0 + .seconds(1)) == .global)
    }

    @Test func aRefusedCheckTakesNoTokens() {
        let limiter = AddressCheckLimiter(.init(perDestinationBurst: 1, perDestinationInterval: .seconds(60),
                                                globalBurst: 2, globalInterval: .seconds(60)))
        let t0 = ContinuousClock.now
        #expect(limiter.admit(Self.address("192.0.2.1"), now: t0) == nil)
        // Refused per destination many times: the process's share is untouched.
        for _ in 0..<20 { #expect(limiter.admit(Self.address("192.0.2.1"), now: t0) == .perDestination) }
        #expect(limiter.admit(Self.address("192.0.2.2"), now: t0) == nil)
        #expect(limiter.admit(Self.address("192.0.2.3"), now: t0) == .global)
    }

    /// Six viewers, each in a session with its own camera session of one process, make their datagrams
    /// appear to come from addresses in one victim /64 (they hold the session keys, so the datagrams
    /// authenticate). Each camera session's own budget would send checks there; the process sends no more
    /// than the per-destination burst in all.
    @Test func sessionsThatAllSeeTheirPeerMoveIntoOneNetworkCheckItNoMoreThanTheCapAllows() async throws {
        let burst = 3
        let limiter = AddressCheckLimiter(.init(perDestinationBurst: burst, perDestinationInterval: .seconds(60)))
        let pairs = (0..<6).map { _ in PeerRebindingTests.directPair(addressChecks: limiter) }
        let sessions = pairs.flatMap { [$0.viewer, $0.camera] }
        defer { Task { for s in sessions { await s.close() } } }
        let victims = (1...6).map { Self.address("2001:db8:66:1::\($0)", 7_000 + $0) }
        for (i, p) in pairs.enumerated() {
            // Nothing the camera sends arrives (the victim would not answer); its viewer's datagrams come from a victim.
            p.cameraEnd.dark.store(true, ordering: .relaxed)
            p.viewerEnd.publicAddress.withLock { $0 = victims[i] }
        }
        // Bounded: 10 rounds 50 ms apart, each viewer sending one datagram a round.
        for _ in 0..<10 {
            for p in pairs { try await p.viewer.send(Array("from somewhere else".utf8)) }
            try await Task.sleep(for: .milliseconds(50))
        }
        let sent = pairs.map { p in p.cameraEnd.sentTo.withLock { s in victims.reduce(0) { $0 + s[$1, default: 0] } } }
        let checks = sent.reduce(0, +) / PathMigrationStateMachine.addressCheckBytes
        print("checks toward the victim /64 from 6 sessions: \(checks) (cap \(burst)); refused: \(limiter.refused)")
        #expect(sent.filter { $0 > 0 }.count >= 1, "some session checked a victim address")
        #expect(checks <= burst, "\(sent) bytes per session")
        #expect((limiter.refused[.perDestination] ?? 0) >= 6 - burst)
    }
}
