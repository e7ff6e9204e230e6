import Crypto
import Foundation

/// A camera's stock of deposited one-time keys (``AccessDeposit``): which to deposit after a registration, when to top
/// up, and whether a deposited proof's key may be used. Sans-I/O: times are Unix seconds passed in; what to send is
/// returned.
///
/// ```
///  registered ─► drop expired, make new up to capacity ─► deposit every key held (a restarted cloud lost its copies;
///                                                         the cloud ignores the ones it holds or handed out)
///  a keepalive, a consumed key ─► fewer than lowWater usable? ─► drop those within renewMargin of expiry,
///                                                                 make new up to capacity ─► deposit the new ones
///  an offer's deposited proof ─► consume(key): .key (removed: one use) · .used, .expired, .unknown (a live challenge)
/// ```
///
/// The stock is held across reconnections and UDP presence, so a page that took a deposit while the camera slept
/// finds the key when the camera is woken.
public struct AccessDepositStock: Sendable {
    /// The stock's bounds.
    public struct Limits: Sendable, Hashable {
        /// Most keys held at once (the cloud keeps at most its own cap per camera too).
        public var capacity = 8
        /// Fewer usable keys than this makes a top-up.
        public var lowWater = 4
        /// How long a new deposit lasts.
        public var lifetime: Duration = AccessDeposit.lifetime
        /// A key expiring within this is no longer counted usable, and is dropped at a top-up (the cloud hands out none so
        /// near its expiry: ``AccessDeposit/handOutMargin``).
        public var renewMargin: Duration = AccessDeposit.handOutMargin
        /// Consumed keys remembered (until their expiry), so a second use is told apart from an unknown key.
        public var usedMemory = 32

        /// Defaults: 8 keys of 10 minutes, a top-up below 4 usable, 32 used keys remembered.
        public init() {}
    }

    /// What a deposited proof's key is to this camera.
    public enum Consumption: Sendable {
        /// Held and unexpired: its private half, now removed from the stock.
        case key(Curve25519.KeyAgreement.PrivateKey)
        /// Used before: the proof is a replay (or the key was handed out twice).
        case used
        /// Held but expired.
        case expired
        /// Not held (made before a restart, or never made here).
        case unknown
    }

    /// A key held: the deposit as sent and its private half.
    struct Entry: Sendable {
        let deposit: AccessDeposit
        let sealingKey: Data
        let key: Curve25519.KeyAgreement.PrivateKey
    }

    /// The bounds.
    public let limits: Limits
    private(set) var entries: [Entry] = []
    /// Consumed keys and their expiry, oldest first.
    private var used: [(sealingKey: Data, expires: Int)] = []

    /// An empty stock.
    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Keys held (expired ones included until the next top-up or registration drops them).
    public var count: Int { entries.count }

    /// After a (re-)registration: drops expired keys, makes new ones up to ``Limits/capacity`` and returns every
    /// deposit held, to deposit.
    public mutating func registered(now: Int, identity: DeviceIdentity, deviceID: DeviceID) throws -> [AccessDeposit] {
        entries.removeAll { $0.deposit.expires <= now }
        try mint(now: now, identity: identity, deviceID: deviceID)
        return entries.map(\.deposit)
    }

    /// A periodic or post-consumption check: when fewer than ``Limits/lowWater`` keys are usable (beyond
    /// ``Limits/renewMargin`` of expiry), drops the ones that are not and makes new ones up to capacity; returns the
    /// new deposits (empty when none are needed).
    public mutating func topUp(now: Int, identity: DeviceIdentity, deviceID: DeviceID) throws -> [AccessDeposit] {
        let horizon = now + Self.seconds(limits.renewMargin)
        guard entries.count(where: { $0.deposit.expires > horizon }) < limits.lowWater else { return [] }
        entries.removeAll { $0.deposit.expires <= horizon }
        let before = entries.count
        try mint(now: now, identity: identity, deviceID: deviceID)
        return entries[before...].map(\.deposit)
    }

    /// The private key of deposit `sealingKey` for a proof arriving at `now`; a held, unexpired key is removed (one use).
    public mutating func consume(_ sealingKey: Data, now: Int) -> Consumption {
        used.removeAll { $0.expires <= now }
        guard let index = entries.firstIndex(where: { $0.sealingKey == sealingKey }) else {
            return used.contains(where: { $0.sealingKey == sealingKey }) ? .used : .unknown
        }
        let entry = entries.remove(at: index)
        guard entry.deposit.expires > now else { return .expired }
        used.append((sealingKey, entry.deposit.expires))
        if used.count > limits.usedMemory { used.removeFirst(used.count - limits.usedMemory) }
        return .key(entry.key)
    }

    private mutating func mint(now: Int, identity: DeviceIdentity, deviceID: DeviceID) throws {
        let expires = now + Self.seconds(limits.lifetime)
        while entries.count < limits.capacity {
            let (deposit, key) = try AccessDeposit.make(identity: identity, deviceID: deviceID, expires: expires)
            entries.append(Entry(deposit: deposit, sealingKey: key.publicKey.rawRepresentation, key: key))
        }
    }

    /// Whole seconds of `duration`.
    static func seconds(_ duration: Duration) -> Int { Int(duration.components.seconds) }
}
