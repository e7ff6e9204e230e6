import Crypto
import Foundation

/// A one-time sealing key a camera deposits with the cloud before any viewer asks, so a browser can seal its access
/// proof into its first message (`watch`) instead of waiting a round trip to the camera for a live ``AccessChallenge``.
///
/// ```
///  camera                               cloud                                  page
///    │ registered ◄──────────────────────│                                       │
///    │ deposit{[sealingKey, expires, signature] ≤ 8} ─►│  each checked against the registered key, kept (≤ cap)
///    │                                   │◄── locate{uid}  (while the person types)
///    │                                   │ located{uid, identityKey, deposit} ──►│  one deposit, handed out once
///    │                                   │      the page checks its signature, the key against the UID, the expiry
///    │                                   │◄── watch{uid, sdp, answerKey, deposited{sealingKey, sealed}}
///    │◄── offer{…, answerKey, deposited} │                                       │
///    │  consumes the private key (one use), opens the proof, checks the viewer's signature and credential
///    │ answer{sealed} ──────────────────►│ answer{sealed} ──────────────────────►│
///    │  (key used before, unknown or expired: a live accessChallenge instead, and the page proves as before)
/// ```
///
/// The camera's signature (``depositDomain``) binds the key to this UID and its expiry only: it is made before any
/// introduction. The viewer's proof then binds everything the live challenge's signature would: its signature
/// (``proofDomain``) and the HPKE `info` (``proofInfoDomain``, RFC 9180 §5.1) cover the UID, the request ID, the
/// deposit's sealing key and the introduction's `answerKey`, so the cloud can neither swap the answer key nor replay
/// the proof into another introduction, and the camera uses each private key once.
public struct AccessDeposit: Codable, Sendable, Hashable {
    /// Domain-separation label of the camera's deposit signature.
    public static let depositDomain = "trav/access-deposit/v1"
    /// Domain-separation label of the viewer's signature in a proof sealed to a deposit.
    public static let proofDomain = "trav/access-deposit-proof/v1"
    /// HPKE `info` prefix of a proof sealed to a deposit (RFC 9180 §5.1).
    public static let proofInfoDomain = "trav/access-deposit-seal/v1"
    /// How long a deposit lasts from when the camera makes it.
    public static let lifetime: Duration = .seconds(600)
    /// Latest expiry the cloud accepts, from its own clock: a deposit lasting longer is refused.
    public static let maxLifetime: Duration = .seconds(3600)
    /// The cloud hands out no deposit expiring within this (a page's clock may lag; the person still has to press connect).
    public static let handOutMargin: Duration = .seconds(60)
    /// Most deposits one `deposit` message may carry.
    public static let maxPerMessage = 16

    /// The one-time X25519 key a viewer seals its proof to, base64 (32 bytes).
    public var sealingKey: String
    /// When it stops being usable, in Unix seconds.
    public var expires: Int
    /// The camera identity key's Ed25519 signature over `domain ‖ 0 ‖ deviceID ‖ 0 ‖ expires (8, big-endian) ‖ sealingKey`, base64 (64 bytes).
    public var signature: String

    /// The wall clock in Unix seconds, which deposits' expiries are read against (by the camera, the cloud and pages alike).
    public static func now() -> Int { Int(Date().timeIntervalSince1970) }

    /// A deposit with these fields, as received.
    public init(sealingKey: String, expires: Int, signature: String) {
        self.sealingKey = sealingKey
        self.expires = expires
        self.signature = signature
    }

    /// `domain ‖ 0 ‖ deviceID ‖ 0 ‖ expires (8 bytes, big-endian) ‖ sealingKey (32)`: what the camera's identity key signs.
    static func signedBytes(deviceID: DeviceID, expires: Int, sealingKey: Data) -> Data {
        var bytes = Data((depositDomain + "\u{0}" + deviceID.description + "\u{0}").utf8)
        withUnsafeBytes(of: UInt64(clamping: max(0, expires)).bigEndian) { bytes.append(contentsOf: $0) }
        bytes.append(sealingKey)
        return bytes
    }

    /// A fresh deposit from the camera `identity`, expiring at `expires` (Unix seconds), and the private half of its key.
    public static func make(identity: DeviceIdentity, deviceID: DeviceID,
                            expires: Int) throws -> (deposit: AccessDeposit, key: Curve25519.KeyAgreement.PrivateKey) {
        let key = Curve25519.KeyAgreement.PrivateKey()
        let signature = try identity.signature(
            for: signedBytes(deviceID: deviceID, expires: expires, sealingKey: key.publicKey.rawRepresentation))
        let deposit = AccessDeposit(sealingKey: key.publicKey.rawRepresentation.base64EncodedString(), expires: expires,
                                    signature: signature.base64EncodedString())
        return (deposit, key)
    }

    /// Checks the field sizes (``CloudMessage/validate()``).
    func validate(field: String) throws {
        _ = try CloudMessage.base64(sealingKey, length: CloudProtocol.answerKeyLength, field: field + ".sealingKey")
        _ = try CloudMessage.base64(signature, length: CloudProtocol.signatureLength, field: field + ".signature")
        guard expires > 0 else { throw CloudProtocolError.invalid(field + ".expires", "not a time") }
    }

    /// The raw sealing key, once the deposit's signature verifies under `identityKey` for `deviceID` and it has not
    /// expired at `now` (Unix seconds).
    ///
    /// - Throws: ``CloudProtocolError`` `.invalidField` for bad sizes or an expiry already past, `.malformed` when the
    ///   signature does not verify.
    public func verified(by identityKey: Curve25519.Signing.PublicKey, deviceID: DeviceID, now: Int) throws -> Data {
        try validate(field: "deposit")
        guard expires > now else { throw CloudProtocolError.invalid("deposit.expires", "expired") }
        let sealing = try CloudMessage.base64(sealingKey, length: CloudProtocol.answerKeyLength, field: "deposit.sealingKey")
        let signatureBytes = try CloudMessage.base64(signature, length: CloudProtocol.signatureLength, field: "deposit.signature")
        guard identityKey.isValidSignature(signatureBytes, for: Self.signedBytes(deviceID: deviceID, expires: expires, sealingKey: sealing))
        else { throw CloudProtocolError(code: .malformed, detail: "the access deposit's signature does not verify") }
        return sealing
    }
}

/// A viewer's access proof sealed to an ``AccessDeposit``, as it travels with the introduction to the camera.
public struct DepositedProof: Codable, Sendable, Hashable {
    /// The deposit's sealing key, base64 (32 bytes): which private key the camera opens it with.
    public var sealingKey: String
    /// The sealed proof (HPKE, base64), at most ``AccessChallenge/maxSealedProofLength`` characters.
    public var sealed: String

    /// A deposited proof with these fields.
    public init(sealingKey: String, sealed: String) {
        self.sealingKey = sealingKey
        self.sealed = sealed
    }

    /// Checks the field sizes (``CloudMessage/validate()``).
    func validate(field: String) throws {
        _ = try CloudMessage.base64(sealingKey, length: CloudProtocol.answerKeyLength, field: field + ".sealingKey")
        guard !sealed.isEmpty, sealed.utf8.count <= AccessChallenge.maxSealedProofLength, Data(base64Encoded: sealed) != nil else {
            throw CloudProtocolError.invalid(field + ".sealed", "not base64 of at most \(AccessChallenge.maxSealedProofLength) characters")
        }
    }
}

extension AccessProver {
    /// The proof sealed to `deposit` for introduction `requestID` (whose answer is sealed to `answerKey`), after
    /// checking the deposit's signature by `cameraKey`, that `cameraKey` is behind `device` and that the deposit has
    /// not expired at `now` (Unix seconds).
    ///
    /// - Throws: ``TraversalError`` `identityMismatch` when the key is not behind the UID or the deposit does not verify.
    public func prove(deposit: AccessDeposit, cameraKey: Curve25519.Signing.PublicKey, device: DeviceID, requestID: String,
                      answerKey: Curve25519.KeyAgreement.PublicKey, now: Int) async throws -> DepositedProof {
        let sealing: Data
        do {
            sealing = try deposit.verified(by: cameraKey, deviceID: device, now: now)
        } catch {
            throw TraversalError(code: .identityMismatch, detail: "the access deposit for \(device) does not verify: \(error)")
        }
        guard await knownDevices.check(cameraKey, for: device) else {
            throw TraversalError(code: .identityMismatch, detail: "the cloud announced a key that is not behind \(device)")
        }
        let answer = answerKey.rawRepresentation
        let sealed = try seal(to: sealing, signed: Self.depositSignedBytes(deviceID: device, requestID: requestID, sealingKey: sealing, answerKey: answer),
                              info: Self.depositInfo(deviceID: device, requestID: requestID, sealingKey: sealing, answerKey: answer),
                              field: "deposit.sealingKey")
        return DepositedProof(sealingKey: deposit.sealingKey, sealed: sealed)
    }

    /// `domain ‖ 0 ‖ deviceID ‖ 0 ‖ requestID ‖ 0 ‖ sealingKey (32) ‖ answerKey (32)`: what the viewer signs in a
    /// proof sealed to a deposit (``AccessDeposit/proofDomain``).
    static func depositSignedBytes(deviceID: DeviceID, requestID: String, sealingKey: Data, answerKey: Data) -> Data {
        depositBinding(AccessDeposit.proofDomain, deviceID: deviceID, requestID: requestID, sealingKey: sealingKey, answerKey: answerKey)
    }

    /// HPKE `info` of a proof sealed to a deposit: `domain ‖ 0 ‖ deviceID ‖ 0 ‖ requestID ‖ 0 ‖ sealingKey ‖ answerKey`.
    static func depositInfo(deviceID: DeviceID, requestID: String, sealingKey: Data, answerKey: Data) -> Data {
        depositBinding(AccessDeposit.proofInfoDomain, deviceID: deviceID, requestID: requestID, sealingKey: sealingKey, answerKey: answerKey)
    }

    private static func depositBinding(_ domain: String, deviceID: DeviceID, requestID: String, sealingKey: Data, answerKey: Data) -> Data {
        var bytes = Data((domain + "\u{0}" + deviceID.description + "\u{0}" + requestID + "\u{0}").utf8)
        bytes.append(sealingKey)
        bytes.append(answerKey)
        return bytes
    }

    /// Opens a proof sealed to a deposit with the deposit's private key and checks the viewer's signature over this
    /// introduction's binding (UID, `requestID`, the deposit's key, `answerKey` as base64 of 32 bytes).
    ///
    /// - Throws: ``CloudProtocolError`` `.malformed` when it does not open under this binding, is not a proof, or its
    ///   signature does not verify; `.invalidField` when a field breaks the limits.
    public static func open(deposited sealed: String, with key: Curve25519.KeyAgreement.PrivateKey, deviceID: DeviceID,
                            requestID: String, answerKey: String) throws -> ViewerAccessClaim {
        let answer = try CloudMessage.base64(answerKey, length: CloudProtocol.answerKeyLength, field: "offer.answerKey")
        let sealing = key.publicKey.rawRepresentation
        return try openProof(sealed, with: key,
                             info: depositInfo(deviceID: deviceID, requestID: requestID, sealingKey: sealing, answerKey: answer),
                             signed: depositSignedBytes(deviceID: deviceID, requestID: requestID, sealingKey: sealing, answerKey: answer))
    }
}
