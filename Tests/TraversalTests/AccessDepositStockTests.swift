import Crypto
import Foundation
import Testing
@testable import Traversal

/// The camera's stock of deposited keys, as data: its bound, expiry, top-ups and one use per key.
struct AccessDepositStockTests {
    static let camera = DeviceIdentity.generate()
    static let device = camera.deviceID
    static let t0 = 1_800_000_000

    static func key(_ deposit: AccessDeposit) -> Data { Data(base64Encoded: deposit.sealingKey)! }

    @Test func aRegistrationFillsTheStockToItsCapacityAndDepositsEveryKeyHeld() throws {
        var stock = AccessDepositStock()
        let first = try stock.registered(now: Self.t0, identity: Self.camera, deviceID: Self.device)
        #expect(first.count == stock.limits.capacity && stock.count == stock.limits.capacity)
        #expect(Set(first.map(\.sealingKey)).count == first.count, "every key fresh")
        for deposit in first {
            #expect(deposit.expires == Self.t0 + 600)
            _ = try deposit.verified(by: Self.camera.publicKey, deviceID: Self.device, now: Self.t0)
        }
        // A reconnection: the same keys again (the cloud may have lost them), none made.
        _ = stock.consume(Self.key(first[0]), now: Self.t0 + 5)
        let again = try stock.registered(now: Self.t0 + 10, identity: Self.camera, deviceID: Self.device)
        #expect(again.count == stock.limits.capacity)
        #expect(Set(first.dropFirst().map(\.sealingKey)).isSubset(of: Set(again.map(\.sealingKey))), "the keys held are kept across reconnections")
        #expect(!again.contains { $0.sealingKey == first[0].sealingKey }, "a used key is not deposited again")
        // After they expired: all new.
        let later = try stock.registered(now: Self.t0 + 700, identity: Self.camera, deviceID: Self.device)
        #expect(later.count == stock.limits.capacity && Set(later.map(\.sealingKey)).isDisjoint(with: Set(again.map(\.sealingKey))))
    }

    @Test func theStockIsToppedUpOnlyBelowItsLowWaterMark() throws {
        var stock = AccessDepositStock()
        let first = try stock.registered(now: Self.t0, identity: Self.camera, deviceID: Self.device)
        #expect(try stock.topUp(now: Self.t0 + 1, identity: Self.camera, deviceID: Self.device).isEmpty, "full: nothing to do")
        let spend = stock.limits.capacity - stock.limits.lowWater
        for deposit in first.prefix(spend) { _ = stock.consume(Self.key(deposit), now: Self.t0 + 2) }
        #expect(try stock.topUp(now: Self.t0 + 3, identity: Self.camera, deviceID: Self.device).isEmpty, "at the mark: still enough")
        _ = stock.consume(Self.key(first[spend]), now: Self.t0 + 4)
        let fresh = try stock.topUp(now: Self.t0 + 5, identity: Self.camera, deviceID: Self.device)
        #expect(fresh.count == spend + 1 && stock.count == stock.limits.capacity, "below it: back to capacity, only new keys sent")
        #expect(Set(fresh.map(\.sealingKey)).isDisjoint(with: Set(first.map(\.sealingKey))))
        // Near expiry keys no longer count: a stock all near expiry is dropped and made anew.
        var aging = AccessDepositStock()
        let old = try aging.registered(now: Self.t0, identity: Self.camera, deviceID: Self.device)
        let margin = Int(aging.limits.renewMargin.components.seconds)
        #expect(try aging.topUp(now: Self.t0 + 600 - margin - 1, identity: Self.camera, deviceID: Self.device).isEmpty)
        let renewed = try aging.topUp(now: Self.t0 + 600 - margin, identity: Self.camera, deviceID: Self.device)
        #expect(renewed.count == aging.limits.capacity && aging.count == aging.limits.capacity)
        #expect(Set(renewed.map(\.sealingKey)).isDisjoint(with: Set(old.map(\.sealingKey))))
    }

    @Test func aKeyIsUsedOnceAndExpiredOrUnknownKeysAreTold() throws {
        var stock = AccessDepositStock()
        let first = try stock.registered(now: Self.t0, identity: Self.camera, deviceID: Self.device)
        guard case .key(let key) = stock.consume(Self.key(first[0]), now: Self.t0 + 1) else { Issue.record("held"); return }
        #expect(key.publicKey.rawRepresentation == Self.key(first[0]))
        guard case .used = stock.consume(Self.key(first[0]), now: Self.t0 + 2) else { Issue.record("second use"); return }
        guard case .unknown = stock.consume(Data(count: 32), now: Self.t0 + 2) else { Issue.record("never made here"); return }
        guard case .expired = stock.consume(Self.key(first[1]), now: Self.t0 + 600) else { Issue.record("expired"); return }
        // The memory of used keys is bounded, and forgets them when they expire (then they are simply unknown).
        guard case .unknown = stock.consume(Self.key(first[0]), now: Self.t0 + 601) else { Issue.record("forgotten after expiry"); return }
        var limits = AccessDepositStock.Limits()
        limits.usedMemory = 2
        var small = AccessDepositStock(limits: limits)
        let keys = try small.registered(now: Self.t0, identity: Self.camera, deviceID: Self.device)
        for deposit in keys.prefix(3) { _ = small.consume(Self.key(deposit), now: Self.t0 + 1) }
        guard case .unknown = small.consume(Self.key(keys[0]), now: Self.t0 + 2) else { Issue.record("the oldest used key forgotten"); return }
        guard case .used = small.consume(Self.key(keys[2]), now: Self.t0 + 2) else { Issue.record("the newest remembered"); return }
    }
}
