import Crypto
import Foundation
import Traversal

/// The cloud's deposits for one registered camera (`Traversal/AccessDeposit`): each checked against the key the camera
/// registered with when it arrives, kept until it expires (at most ``capacity``), and handed out once, to one page's
/// `locate`. Sans-I/O: times are Unix seconds passed in.
///
/// A camera deposits every key it holds again after each registration (the cloud may have restarted); keys already
/// handed out are remembered until they expire (at most ``handedOutMemory``) and not taken again, so one key does not
/// reach two pages (the second would be refused: the camera uses each key once).
struct AccessDepositShelf: Sendable {
    /// Most deposits kept; beyond it the latest-expiring are kept.
    let capacity: Int
    /// Most handed-out keys remembered (four times ``capacity``); beyond it the earliest-expiring are forgotten.
    var handedOutMemory: Int { 4 * capacity }
    /// The deposits held, unexpired when last pruned.
    private(set) var held: [AccessDeposit] = []
    /// Sealing keys handed out, and when each expires.
    private var handedOut: [String: Int] = [:]

    /// An empty shelf keeping at most `capacity` deposits.
    init(capacity: Int) {
        self.capacity = max(0, capacity)
    }

    /// Adds the deposits whose signature verifies under `cameraKey` for `deviceID` and whose expiry is after `now` and
    /// within `AccessDeposit.maxLifetime` of it; a key held or handed out already is skipped. Returns why each refused
    /// one was refused (empty when all were good).
    mutating func add(_ deposits: [AccessDeposit], cameraKey: Curve25519.Signing.PublicKey, deviceID: DeviceID, now: Int) -> [String] {
        prune(now: now)
        let latest = now + Int(AccessDeposit.maxLifetime.components.seconds)
        var refusals: [String] = []
        for deposit in deposits {
            do {
                _ = try deposit.verified(by: cameraKey, deviceID: deviceID, now: now)
            } catch {
                refusals.append("\(error)")
                continue
            }
            guard deposit.expires <= latest else {
                refusals.append("expires later than \(AccessDeposit.maxLifetime) from now")
                continue
            }
            guard handedOut[deposit.sealingKey] == nil, !held.contains(where: { $0.sealingKey == deposit.sealingKey }) else { continue }
            held.append(deposit)
        }
        if held.count > capacity {
            held.sort { $0.expires > $1.expires }
            held.removeLast(held.count - capacity)
        }
        return refusals
    }

    /// One deposit to hand out, removed: the earliest-expiring one not within `AccessDeposit.handOutMargin` of expiry.
    mutating func take(now: Int) -> AccessDeposit? {
        prune(now: now)
        let horizon = now + Int(AccessDeposit.handOutMargin.components.seconds)
        guard let index = held.indices.filter({ held[$0].expires > horizon }).min(by: { held[$0].expires < held[$1].expires }) else {
            return nil
        }
        let deposit = held.remove(at: index)
        handedOut[deposit.sealingKey] = deposit.expires
        if handedOut.count > handedOutMemory, let earliest = handedOut.min(by: { $0.value < $1.value }) {
            handedOut[earliest.key] = nil
        }
        return deposit
    }

    /// Drops expired deposits and the memory of expired handed-out keys.
    private mutating func prune(now: Int) {
        held.removeAll { $0.expires <= now }
        handedOut = handedOut.filter { $0.value > now }
    }
}
