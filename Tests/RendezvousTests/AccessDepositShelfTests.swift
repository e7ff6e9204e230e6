import Crypto
import Foundation
import Testing
@testable import Rendezvous
import Traversal

/// The cloud's deposits for one camera, as data: checked against the registered key, capped, handed out once.
struct AccessDepositShelfTests {
    static let camera = DeviceIdentity.generate()
    static let device = camera.deviceID
    static let t0 = 1_800_000_000

    static func deposits(_ count: Int, expires: Int = t0 + 600, by identity: DeviceIdentity = camera,
                         for device: DeviceID = device) throws -> [AccessDeposit] {
        try (0..<count).map { _ in try AccessDeposit.make(identity: identity, deviceID: device, expires: expires).deposit }
    }

    @Test func onlyDepositsSignedByTheRegisteredKeyForItsUIDAreKept() throws {
        var shelf = AccessDepositShelf(capacity: 8)
        let good = try Self.deposits(2)
        let otherKey = try Self.deposits(1, by: .generate())
        let otherDevice = try Self.deposits(1, for: DeviceIdentity.generate().deviceID)
        var tampered = good[0]
        tampered.expires += 1
        let expired = try Self.deposits(1, expires: Self.t0)
        let tooLong = try Self.deposits(1, expires: Self.t0 + Int(AccessDeposit.maxLifetime.components.seconds) + 1)
        let refusals = shelf.add(good + otherKey + otherDevice + [tampered] + expired + tooLong,
                                 cameraKey: Self.camera.publicKey, deviceID: Self.device, now: Self.t0)
        #expect(refusals.count == 5, "\(refusals)")
        #expect(Set(shelf.held.map(\.sealingKey)) == Set(good.map(\.sealingKey)))
    }

    @Test func theShelfKeepsItsCapOfTheLatestExpiringDeposits() throws {
        var shelf = AccessDepositShelf(capacity: 4)
        let early = try Self.deposits(3, expires: Self.t0 + 300)
        let late = try Self.deposits(3, expires: Self.t0 + 600)
        #expect(shelf.add(early, cameraKey: Self.camera.publicKey, deviceID: Self.device, now: Self.t0).isEmpty)
        #expect(shelf.add(late, cameraKey: Self.camera.publicKey, deviceID: Self.device, now: Self.t0).isEmpty)
        #expect(shelf.held.count == 4)
        #expect(Set(late.map(\.sealingKey)).isSubset(of: Set(shelf.held.map(\.sealingKey))))
    }

    @Test func eachDepositIsHandedOutOnceEvenWhenTheCameraDepositsItAgain() throws {
        var shelf = AccessDepositShelf(capacity: 8)
        let deposits = try Self.deposits(3)
        _ = shelf.add(deposits, cameraKey: Self.camera.publicKey, deviceID: Self.device, now: Self.t0)
        var handed: [String] = []
        while let deposit = shelf.take(now: Self.t0 + 1) { handed.append(deposit.sealingKey) }
        #expect(handed.count == 3 && Set(handed).count == 3)
        // A camera reconnecting deposits every key it holds again: the ones handed out stay out.
        _ = shelf.add(deposits, cameraKey: Self.camera.publicKey, deviceID: Self.device, now: Self.t0 + 2)
        #expect(shelf.take(now: Self.t0 + 3) == nil)
        // Expired ones, and ones too near their expiry to be used, are not handed out.
        _ = shelf.add(try Self.deposits(1, expires: Self.t0 + 100), cameraKey: Self.camera.publicKey, deviceID: Self.device, now: Self.t0)
        #expect(shelf.take(now: Self.t0 + 100 - Int(AccessDeposit.handOutMargin.components.seconds)) == nil)
        #expect(shelf.take(now: Self.t0 + 100) == nil)
        #expect(shelf.held.isEmpty, "expired ones are dropped")
    }
}
