import SourceLimits
import Testing
@testable import Rendezvous
@testable import Traversal

/// The cloud's bounds per requester and per camera on pending introductions and relay grants, as data.
@Suite struct IntroductionLedgerTests {
    let limits = IntroductionLedger.Limits(
        maxPending: 100, maxPendingPerRequester: 3, maxPendingPerCamera: 4, maxGrantsPerRequester: 5, maxGrantsPerCamera: 6)
    let attacker = SourceAddressKey(bytes: [192, 0, 2, 66])!
    let neighbour = SourceAddressKey(bytes: [192, 0, 2, 7])!
    let throwaway = DeviceIdentity.generate().deviceID
    let victim = DeviceIdentity.generate().deviceID
    let t0 = ContinuousClock.now

    @Test func oneRequesterIsRefusedPastItsPendingBoundWhileAnotherIsServed() {
        var ledger = IntroductionLedger(limits: limits)
        for i in 0..<3 {
            let r1 = ledger.admit("a\(i)", requester: attacker, camera: throwaway, grantExpires: nil)
            #expect(r1 == nil)
        }
        let r2 = ledger.admit("a3", requester: attacker, camera: victim, grantExpires: nil)
        #expect(r2 == .requesterPending)
        let r3 = ledger.admit("n0", requester: neighbour, camera: throwaway, grantExpires: nil)
        #expect(r3 == nil)
    }

    @Test func oneCameraIsRefusedPastItsPendingBoundWhileAnotherCameraIsServed() {
        var ledger = IntroductionLedger(limits: limits)
        let requesters = (1...5).map { SourceAddressKey(bytes: [198, 51, 100, UInt8($0)])! }
        for (i, r) in requesters.prefix(4).enumerated() {
            let r4 = ledger.admit("v\(i)", requester: r, camera: victim, grantExpires: nil)
            #expect(r4 == nil)
        }
        let r5 = ledger.admit("v4", requester: requesters[4], camera: victim, grantExpires: nil)
        #expect(r5 == .cameraPending)
        let r6 = ledger.admit("o4", requester: requesters[4], camera: throwaway, grantExpires: nil)
        #expect(r6 == nil)
        #expect(ledger.pending(for: victim) == 4)
    }

    @Test func endedIntroductionsGiveBackTheirPendingSlotAndTheirGrant() {
        var ledger = IntroductionLedger(limits: limits)
        let expires = t0 + .seconds(3600)
        for i in 0..<3 {
            let r7 = ledger.admit("a\(i)", requester: attacker, camera: throwaway, grantExpires: expires)
            #expect(r7 == nil)
        }
        #expect(ledger.grants(for: attacker) == 3)
        for i in 0..<3 { ledger.ended("a\(i)") }
        #expect(ledger.pending == 0)
        #expect(ledger.grants(for: attacker) == 0, "no start: the grant is freed with the introduction")
    }

    @Test func startedIntroductionsKeepTheirGrantUntilItExpires() {
        var ledger = IntroductionLedger(limits: limits)
        let expires = t0 + .seconds(3600)
        for i in 0..<5 {
            let r8 = ledger.admit("a\(i)", requester: attacker, camera: throwaway, grantExpires: expires)
            #expect(r8 == nil)
            ledger.started("a\(i)")
        }
        #expect(ledger.pending == 0)
        let r9 = ledger.admit("a5", requester: attacker, camera: victim, grantExpires: expires)
        #expect(r9 == .requesterGrants,
                "five live grants: no sixth relay user for this requester")
        let r10 = ledger.admit("n0", requester: neighbour, camera: victim, grantExpires: expires)
        #expect(r10 == nil)
        ledger.ended("a0")
        #expect(ledger.grants(for: attacker) == 5, "a started introduction does not end twice")
        ledger.expireGrants(now: expires - .seconds(1))
        #expect(ledger.grants(for: attacker) == 5)
        ledger.expireGrants(now: expires)
        #expect(ledger.grants(for: attacker) == 0)
        let r11 = ledger.admit("a6", requester: attacker, camera: victim, grantExpires: expires + .seconds(1))
        #expect(r11 == nil)
    }

    @Test func oneCameraIsRefusedPastItsGrantBound() {
        var ledger = IntroductionLedger(limits: limits)
        let expires = t0 + .seconds(3600)
        for i in 0..<6 {
            let requester = SourceAddressKey(bytes: [203, 0, 113, UInt8(i)])!
            let r12 = ledger.admit("c\(i)", requester: requester, camera: throwaway, grantExpires: expires)
            #expect(r12 == nil)
            ledger.started("c\(i)")
        }
        let late = SourceAddressKey(bytes: [203, 0, 113, 99])!
        let r13 = ledger.admit("c6", requester: late, camera: throwaway, grantExpires: expires)
        #expect(r13 == .cameraGrants)
        let r14 = ledger.admit("c7", requester: late, camera: throwaway, grantExpires: nil)
        #expect(r14 == nil, "without a relay, only pending counts")
    }

    @Test func theGlobalBoundStillHolds() {
        var ledger = IntroductionLedger(limits: .init(
            maxPending: 2, maxPendingPerRequester: 10, maxPendingPerCamera: 10, maxGrantsPerRequester: 10, maxGrantsPerCamera: 10))
        let r15 = ledger.admit("1", requester: attacker, camera: victim, grantExpires: nil)
        #expect(r15 == nil)
        let r16 = ledger.admit("2", requester: neighbour, camera: victim, grantExpires: nil)
        #expect(r16 == nil)
        let r17 = ledger.admit("3", requester: neighbour, camera: throwaway, grantExpires: nil)
        #expect(r17 == .full)
    }
}
