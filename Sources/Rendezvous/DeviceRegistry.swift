import Foundation
import Traversal

/// One camera's live registration: which key holds its UID and which control session serves it.
public struct DeviceRegistration: Sendable, Hashable {
    /// The registered UID (always `DeviceID(publicKey:)` of ``publicKey``).
    public var deviceID: DeviceID
    /// The camera's raw Ed25519 public key (32 bytes).
    public var publicKey: Data
    /// The control session that proved the key; a newer session of the same key replaces it.
    public var sessionID: UUID
    /// The camera's control connection as the cloud sees it (`ip:port`).
    public var observedAddress: String
    /// When the session registered.
    public var registeredAt: Date

    /// Creates a registration record.
    public init(deviceID: DeviceID, publicKey: Data, sessionID: UUID, observedAddress: String, registeredAt: Date = Date()) {
        self.deviceID = deviceID
        self.publicKey = publicKey
        self.sessionID = sessionID
        self.observedAddress = observedAddress
        self.registeredAt = registeredAt
    }
}

/// Where the cloud keeps registrations; in memory today, so a persistent or multi-node store can follow.
public protocol DeviceRegistry: Sendable {
    /// Stores `registration`, returning the one it replaced (same UID, older session).
    ///
    /// - Throws: ``RegistryError`` `.keyMismatch` if the UID is held by a different key (which a
    ///   UID derived from its key makes impossible; checked anyway).
    func register(_ registration: DeviceRegistration) async throws -> DeviceRegistration?
    /// Stores `registration` only if its UID has no live registration; returns whether it did.
    ///
    /// - Throws: ``RegistryError`` `.keyMismatch` as ``register(_:)``.
    func registerUnlessHeld(_ registration: DeviceRegistration) async throws -> Bool
    /// Removes the registration of `deviceID` if it still belongs to `sessionID`.
    func remove(_ deviceID: DeviceID, sessionID: UUID) async
    /// The live registration of `deviceID`, if any.
    func lookup(_ deviceID: DeviceID) async -> DeviceRegistration?
}

/// A ``DeviceRegistry`` in this process's memory, lost on restart (cameras re-register within seconds).
public actor InMemoryDeviceRegistry: DeviceRegistry {
    private var registrations: [DeviceID: DeviceRegistration] = [:]

    /// An empty registry.
    public init() {}

    /// Stores `registration`, returning the one it replaced.
    public func register(_ registration: DeviceRegistration) throws -> DeviceRegistration? {
        let previous = registrations[registration.deviceID]
        if let previous, previous.publicKey != registration.publicKey {
            throw RegistryError(code: .keyMismatch, detail: "\(registration.deviceID) is registered with another key")
        }
        registrations[registration.deviceID] = registration
        return previous
    }

    /// Stores `registration` if its UID has none; returns whether it did.
    public func registerUnlessHeld(_ registration: DeviceRegistration) throws -> Bool {
        guard registrations[registration.deviceID] == nil else { return false }
        _ = try register(registration)
        return true
    }

    /// Removes the registration of `deviceID` if it still belongs to `sessionID`.
    public func remove(_ deviceID: DeviceID, sessionID: UUID) {
        if registrations[deviceID]?.sessionID == sessionID { registrations[deviceID] = nil }
    }

    /// The live registration of `deviceID`, if any.
    public func lookup(_ deviceID: DeviceID) -> DeviceRegistration? {
        registrations[deviceID]
    }

    /// Number of registered devices.
    public var count: Int { registrations.count }
}

/// Why a registry refused a registration.
public struct RegistryError: CodedError, Hashable {
    /// A stable reason code.
    public struct Code: ErrorCode {
        /// The code's stable name.
        public let name: String
        /// The UID is held by a different key.
        public static let keyMismatch = Code(name: "key-mismatch")
    }

    /// What went wrong.
    public let code: Code
    /// Why.
    public let detail: String
}
