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

    /// Admits introductions `prefix0`, `prefix1`, … (`count` of them) from `requester` to `camera`,
    /// expecting each to be admitted, and starts each if `start`.
    func admit(_ count: Int, _ prefix: String, into ledger: inout IntroductionLedger, from requester: SourceAddressKey,
               to camera: DeviceID, grantExpires: ContinuousClock.Instant? = nil, start: Bool = false) {
        for i in 0..<count {
            let refusal = ledger.admit("\(prefix)\(i)", requester: requester, camera: camera, grantExpires: grantExpires)
            #expect(refusal == nil, "\(prefix)\(i)")
            if start { ledger.started("\(prefix)\(i)") }
        }
    }

    @Test func oneRequesterIsRefusedPastItsPendingBoundWhileAnotherIsServed() {
        var ledger = IntroductionLedger(limits: limits)
        admit(3, "a", into: &ledger, from: attacker, to: throwaway)
        let outcome2 = ledger.admit("a3", requester: attacker, camera: victim, grantExpires: nil)
        #expect(outcome2 == .requesterPending)
        let outcome3 = ledger.admit("n0", requester: neighbour, camera: throwaway, grantExpires: nil)
        #expect(outcome3 == nil)
    }

    @Test func oneCameraIsRefusedPastItsPendingBoundWhileAnotherCameraIsServed() {
        var ledger = IntroductionLedger(limits: limits)
        let requesters = (1...5).map { SourceAddressKey(bytes: [198, 51, 100, UInt8($0)])! }
        for (i, r) in requesters.prefix(4).enumerated() {
            let outcome4 = ledger.admit("v\(i)", requester: r, camera: victim, grantExpires: nil)
            #expect(outcome4 == nil)
        }
        let outcome5 = ledger.admit("v4", requester: requesters[4], camera: victim, grantExpires: nil)
        #expect(outcome5 == .cameraPending)
        let outcome6 = ledger.admit("o4", requester: requesters[4], camera: throwaway, grantExpires: nil)
        #expect(outcome6 == nil)
        #expect(ledger.pending(for: victim) == 4)
    }

    @Test func endedIntroductionsGiveBackTheirPendingSlotAndTheirGrant() {
        var ledger = IntroductionLedger(limits: limits)
        let expires = t0 + .seconds(3600)
        admit(3, "a", into: &ledger, from: attacker, to: throwaway, grantExpires: expires)
        #expect(ledger.grants(for: attacker) == 3)
        for i in 0..<3 { ledger.ended("a\(i)") }
        #expect(ledger.pending == 0)
        #expect(ledger.grants(for: attacker) == 0, "no start: the grant is freed with the introduction")
    }

    @Test func startedIntroductionsKeepTheirGrantUntilItExpires() {
        var ledger = IntroductionLedger(limits: limits)
        let expires = t0 + .seconds(3600)
        admit(5, "a", into: &ledger, from: attacker, to: throwaway, grantExpires: expires, start: true)
        #expect(ledger.pending == 0)
        let outcome9 = ledger.admit("a5", requester: attacker, camera: victim, grantExpires: expires)
        #expect(outcome9 == .requesterGrants,
                "five live grants: no sixth relay user for this requester")
        let outcome10 = ledger.admit("n0", requester: neighbour, camera: victim, grantExpires: expires)
        #expect(outcome10 == nil)
        ledger.ended("a0")
        #expect(ledger.grants(for: attacker) == 5, "a started introduction does not end twice")
        ledger.expireGrants(now: expires - .seconds(1))
        #expect(ledger.grants(for: attacker) == 5)
        ledger.expireGrants(now: expires)
        #expect(ledger.grants(for: attacker) == 0)
        let outcome11 = ledger.admit("a6", requester: attacker, camera: victim, grantExpires: expires + .seconds(1))
        #expect(outcome11 == nil)
    }

    @Test func oneCameraIsRefusedPastItsGrantBound() {
        var ledger = IntroductionLedger(limits: limits)
        let expires = t0 + .seconds(3600)
        for i in 0..<6 {
            let requester = SourceAddressKey(bytes: [203, 0, 113, UInt8(i)])!
            let outcome12 = ledger.admit("c\(i)", requester: requester, camera: throwaway, grantExpires: expires)
            #expect(outcome12 == nil)
            ledger.started("c\(i)")
        }
        let late = SourceAddressKey(bytes: [203, 0, 113, 99])!
        let outcome13 = ledger.admit("c6", requester: late, camera: throwaway, grantExpires: expires)
        #expect(outcome13 == .cameraGrants)
        let outcome14 = ledger.admit("c7", requester: late, camera: throwaway, grantExpires: nil)
        #expect(outcome14 == nil, "without a relay, only pending counts")
    }

    @Test func theGlobalBoundStillHolds() {
        var ledger = IntroductionLedger(limits: .init(
            maxPending: 2, maxPendingPerRequester: 10, maxPendingPerCamera: 10, maxGrantsPerRequester: 10, maxGrantsPerCamera: 10))
        let outcome15 = ledger.admit("1", requester: attacker, camera: victim, grantExpires: nil)
        #expect(outcome15 == nil)
        let outcome16 = ledger.admit("2", requester: neighbour, camera: victim, grantExpires: nil)
        #expect(outcome16 == nil)
        let outcome17 = ledger.admit("3", requester: neighbour, camera: throwaway, grantExpires: nil)
        #expect(outcome17 == .full)
    }
}
