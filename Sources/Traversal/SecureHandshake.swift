import Crypto

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The result of a finished ``SecureHandshakeStateMachine``: who the peer is and the transport keys.
public struct SecureSession: Sendable {
    /// The peer's Ed25519 identity key, proven by its signature over its Noise static key.
    public let peerIdentity: Curve25519.Signing.PublicKey
    /// Encrypts what this side sends.
    public var send: NoiseCipherState
    /// Decrypts what this side receives.
    public var receive: NoiseCipherState
    /// The Noise handshake hash, unique to this session (Noise §11.2).
    public let handshakeHash: [UInt8]
    /// How long this side waited for the peer's answer to its handshake message, from the first time it
    /// sent it: one round trip, or more when a copy was lost (so never less than one); nil when it was not
    /// measured. The first RTT measurement a retransmission timer starts from (RFC 9260 §6.3.1 C2).
    public var roundTrip: Duration?
}

/// What the caller of a ``SecureHandshakeStateMachine`` must do next.
public enum SecureHandshakeAction: Sendable {
    /// Send these bytes to the peer and wait for its reply.
    case send([UInt8])
    /// Send these bytes to the peer; the handshake is then complete on this side.
    case sendAndComplete([UInt8], SecureSession)
    /// Nothing to send; the handshake is complete.
    case complete(SecureSession)
}

/// An authenticated `Noise_XX_25519_ChaChaPoly_SHA256` handshake binding each side's Noise static
/// key to its Ed25519 identity; sans-I/O.
///
/// ```
/// viewer (initiator)                                    camera (responder)
///   start() ── -> e ─────────────────────────────────────────► receive()
///   receive() ◄── <- e, ee, s, es, {idR, sigR(sR, h₁)} ──────── .send
///   .sendAndComplete ── -> s, se, {idI, sigI(sI, h₂)} ───────► receive() → .complete
/// ```
///
/// Each handshake payload is `identity public key (32) ‖ Ed25519 signature (64)`. The signature
/// covers ``signatureDomain``, the signer's role, its Noise static public key and the handshake
/// hash just before the message — which already contains the peer's fresh ephemeral key, so a
/// signature cannot be replayed into another session. The initiator also checks the responder's
/// identity key against the ``DeviceID`` it meant to reach, so it trusts the UID, not the cloud.
public struct SecureHandshakeStateMachine: Sendable {
    /// Noise prologue, binding the protocol version into the handshake hash (Noise §6).
    public static let prologue = Array("trav secure handshake v1".utf8)
    /// Domain separation for the identity signature.
    public static let signatureDomain = Array("trav/noise-static-binding/v1".utf8)
    /// Length of each handshake payload: Ed25519 public key and signature.
    public static let payloadLength = 32 + 64

    /// The Noise handshake underneath.
    var noise: NoiseHandshakeState
    /// This side's identity.
    let identity: DeviceIdentity
    /// For an initiator: whom the responder must be.
    let expectedPeer: ExpectedPeer?
    /// The verified peer identity, once its payload arrived.
    var peerIdentity: Curve25519.Signing.PublicKey?

    /// A viewer's side: reaches the device `expectedPeer`, optionally checking a key the cloud announced.
    ///
    /// - Throws: ``SecureHandshakeError`` `.announcedKeyMismatch` if `announcedIdentityKey` does
    ///   not derive to `expectedPeer` — a cloud trying to bind the UID to another key.
    public static func initiator(
        identity: DeviceIdentity,
        expecting expectedPeer: DeviceID,
        announcedIdentityKey: Curve25519.Signing.PublicKey? = nil,
        noiseStaticKey: Curve25519.KeyAgreement.PrivateKey = .init()
    ) throws -> SecureHandshakeStateMachine {
        if let announcedIdentityKey, !expectedPeer.matches(publicKey: announcedIdentityKey) {
            throw SecureHandshakeError(
                code: .announcedKeyMismatch,
                detail: "the announced identity key does not derive to \(expectedPeer)")
        }
        return SecureHandshakeStateMachine(
            noise: NoiseHandshakeState(role: .initiator, prologue: prologue, staticKey: noiseStaticKey),
            identity: identity, expectedPeer: .device(expectedPeer))
    }

    /// A viewer's side that accepts exactly the identity key `peerKey` (a comparison, no scrypt).
    ///
    /// For a caller that checks `peerKey` against the UID itself, beside the handshake, and sends
    /// nothing that needs the check (the final message, a credential) before it has passed.
    public static func initiator(
        identity: DeviceIdentity,
        pinning peerKey: Curve25519.Signing.PublicKey,
        noiseStaticKey: Curve25519.KeyAgreement.PrivateKey = .init()
    ) -> SecureHandshakeStateMachine {
        SecureHandshakeStateMachine(
            noise: NoiseHandshakeState(role: .initiator, prologue: prologue, staticKey: noiseStaticKey),
            identity: identity, expectedPeer: .key(peerKey))
    }

    /// A device's side: accepts any viewer identity, reported in the ``SecureSession`` for access control.
    public static func responder(
        identity: DeviceIdentity,
        noiseStaticKey: Curve25519.KeyAgreement.PrivateKey = .init()
    ) -> SecureHandshakeStateMachine {
        SecureHandshakeStateMachine(
            noise: NoiseHandshakeState(role: .responder, prologue: prologue, staticKey: noiseStaticKey),
            identity: identity, expectedPeer: nil)
    }

    /// The initiator's first message (`-> e`).
    public mutating func start() throws -> [UInt8] {
        guard noise.role == .initiator, noise.messageIndex == 0 else {
            throw NoiseError(code: .outOfOrder, detail: "only an initiator starts, once")
        }
        return try noise.writeMessage(payload: [])
    }

    /// Processes the peer's message; on any error the state is unchanged and the handshake should be abandoned.
    public mutating func receive(_ message: [UInt8]) throws -> SecureHandshakeAction {
        var next = self
        let hashBefore = next.noise.handshakeHash
        let payload = try next.noise.readMessage(message)
        let peerRole: NoiseRole = noise.role == .initiator ? .responder : .initiator
        if next.noise.messageIndex == 1 {
            guard payload.isEmpty else {
                throw SecureHandshakeError(code: .malformedPayload, detail: "first message carries no payload")
            }
        } else {
            next.peerIdentity = try next.verify(payload: payload, signedBy: peerRole, hashBefore: hashBefore)
        }
        if next.noise.isComplete {
            self = next
            return .complete(try next.session())
        }
        let reply = try next.noise.writeMessage(payload: try next.signedPayload(hashBefore: next.noise.handshakeHash))
        self = next
        return next.noise.isComplete ? .sendAndComplete(reply, try next.session()) : .send(reply)
    }

    /// The finished session.
    func session() throws -> SecureSession {
        let keys = try noise.split()
        guard let peerIdentity else {
            throw SecureHandshakeError(code: .malformedPayload, detail: "peer identity missing")
        }
        return SecureSession(
            peerIdentity: peerIdentity, send: keys.send, receive: keys.receive, handshakeHash: keys.handshakeHash)
    }

    /// `identity key ‖ signature` over this side's Noise static key and `hashBefore`.
    func signedPayload(hashBefore: [UInt8]) throws -> [UInt8] {
        let staticKey = Array(noise.localStatic.publicKey.rawRepresentation)
        let signature = try identity.signature(
            for: Self.signedData(role: noise.role, noiseStaticKey: staticKey, handshakeHash: hashBefore))
        return Array(identity.publicKey.rawRepresentation) + Array(signature)
    }

    /// Checks the peer's payload and, for an initiator, the peer's UID; returns its identity key.
    func verify(payload: [UInt8], signedBy role: NoiseRole, hashBefore: [UInt8]) throws
        -> Curve25519.Signing.PublicKey
    {
        guard payload.count == Self.payloadLength,
            let identityKey = try? Curve25519.Signing.PublicKey(rawRepresentation: payload[..<32])
        else {
            throw SecureHandshakeError(
                code: .malformedPayload,
                detail: "payload of \(payload.count) bytes, expected \(Self.payloadLength)")
        }
        // A small-order key "signs" anything with S = 0: it proves nothing, so it is no identity.
        guard !identityKey.hasSmallOrder else {
            throw SecureHandshakeError(code: .weakIdentityKey, detail: "the peer's identity key is a small-order point")
        }
        guard let remoteStatic = noise.remoteStaticKey else {
            throw SecureHandshakeError(code: .malformedPayload, detail: "no Noise static key before the payload")
        }
        let signed = Self.signedData(
            role: role, noiseStaticKey: Array(remoteStatic.rawRepresentation), handshakeHash: hashBefore)
        guard identityKey.isValidSignature(payload[32...], for: signed) else {
            throw SecureHandshakeError(
                code: .badSignature, detail: "identity signature over the Noise static key does not verify")
        }
        switch expectedPeer {
        case .device(let device) where !device.matches(publicKey: identityKey):
            throw SecureHandshakeError(
                code: .identityMismatch, detail: "the peer's identity key does not derive to \(device)")
        case .key(let pinned) where pinned.rawRepresentation != identityKey.rawRepresentation:
            throw SecureHandshakeError(
                code: .identityMismatch, detail: "the peer's identity key is not the one announced")
        default:
            return identityKey
        }
    }

    /// Whom an initiator accepts as the responder.
    enum ExpectedPeer: Sendable {
        /// A key that derives to this UID (one scrypt, memoised).
        case device(DeviceID)
        /// Exactly this identity key.
        case key(Curve25519.Signing.PublicKey)
    }

    /// `domain ‖ 0 ‖ role ‖ Noise static key ‖ handshake hash`.
    static func signedData(role: NoiseRole, noiseStaticKey: [UInt8], handshakeHash: [UInt8]) -> [UInt8] {
        signatureDomain + [0, role == .initiator ? UInt8(ascii: "I") : UInt8(ascii: "R")]
            + noiseStaticKey + handshakeHash
    }
}

/// Why an authenticated handshake was refused (Noise-level failures throw ``NoiseError``).
public struct SecureHandshakeError: CodedError, Hashable {
    /// A stable reason code.
    public struct Code: ErrorCode {
        /// The code's stable name.
        public let name: String
        /// The handshake payload is not an identity key and signature.
        public static let malformedPayload = Code(name: "malformed-payload")
        /// The identity signature over the Noise static key is invalid.
        public static let badSignature = Code(name: "bad-signature")
        /// The responder's identity key does not derive to the expected ``DeviceID``.
        public static let identityMismatch = Code(name: "identity-mismatch")
        /// A key announced for the ``DeviceID`` (e.g. by the cloud) does not derive to it.
        public static let announcedKeyMismatch = Code(name: "announced-key-mismatch")
        /// The peer's identity key is a small-order point, for which signatures prove nothing (RFC 8032 §5.1.7).
        public static let weakIdentityKey = Code(name: "weak-identity-key")
    }

    /// What went wrong.
    public let code: Code
    /// Why.
    public let detail: String
}
