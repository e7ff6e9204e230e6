import Crypto
import Foundation
import Traversal

/// Presence sessions a cloud can take back after a restart without a TLS registration: the session
/// identifier carries its device and the session key is derived from it, both under a secret the
/// cloud keeps in its store (``DeviceStore/secret(_:proposing:)``).
///
/// ```
///  session identifier (16 bytes)
///  ┌──────────────┬──────────────────────────────────────────────┐
///  │ nonce (6 B)  │ packed UID (10 B) XOR HMAC-SHA256(kᵢ, nonce)  │
///  └──────────────┴──────────────────────────────────────────────┘
///  session key = HMAC-SHA256(kₖ, session identifier)
///  kᵢ, kₖ = HKDF-SHA256(secret, info: "trav/presence/id" | "trav/presence/key")   (RFC 5869)
/// ```
///
/// A restarted cloud that gets a keepalive for a session it does not hold unmasks the UID (a wrong
/// identifier fails the UID's check symbol 31 times in 32), derives the key, and checks the keepalive's
/// tag: only the camera given that session, or a datagram it sent, passes. The UID is masked so that
/// keepalives do not show it on the wire.
///
/// What a restored session cannot know is the highest counter the camera used before the restart. A
/// keepalive captured earlier and replayed after a restart (from anywhere) is accepted once and moves the
/// camera's wake address to its source until the camera's next keepalive, whose counter is higher, moves it
/// back: at most one keepalive interval without wakes, what someone able to capture the camera's datagrams
/// could already cause by dropping them. Introductions never rely on it: a woken camera registers over TLS.
public struct PresenceTickets: Sendable {
    /// Bytes of the random nonce at the head of an identifier.
    public static let nonceLength = PresenceSessionID.length - DeviceID.packedLength

    private let identifierKey: SymmetricKey
    private let sessionKey: SymmetricKey

    /// Tickets under `secret` (any length; 32 random bytes as stored).
    public init(secret: SymmetricKey) {
        identifierKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: secret, info: Array("trav/presence/id".utf8), outputByteCount: 32)
        sessionKey = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: secret, info: Array("trav/presence/key".utf8), outputByteCount: 32)
    }

    /// A fresh session for `deviceID`: its identifier and key.
    public func issue(for deviceID: DeviceID, using generator: inout some RandomNumberGenerator) -> (session: PresenceSessionID, key: SymmetricKey) {
        let random = generator.next() as UInt64
        let nonce = (0..<Self.nonceLength).map { UInt8(truncatingIfNeeded: random >> (8 * UInt64($0))) }
        let masked = zip(deviceID.packed, mask(nonce)).map { $0 ^ $1 }
        // 16 bytes by construction.
        let session = PresenceSessionID(bytes: nonce + masked)!
        return (session, key(of: session))
    }

    /// The device and key `session` was issued with, if it is one of ours; nil when its UID does not check.
    /// A forged identifier that passes gives a key under which the datagram's tag fails.
    public func redeem(_ session: PresenceSessionID) -> (deviceID: DeviceID, key: SymmetricKey)? {
        let bytes = session.bytes
        let nonce = Array(bytes[0..<Self.nonceLength])
        let packed = zip(bytes[Self.nonceLength...], mask(nonce)).map { $0 ^ $1 }
        guard let deviceID = DeviceID(packed: packed) else { return nil }
        return (deviceID, key(of: session))
    }

    private func mask(_ nonce: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: nonce, using: identifierKey).prefix(DeviceID.packedLength))
    }

    private func key(of session: PresenceSessionID) -> SymmetricKey {
        SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: session.bytes, using: sessionKey)))
    }
}
