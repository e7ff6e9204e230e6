import Crypto
import Foundation

/// A viewer proves access before a camera says where it is.
///
/// Through the cloud, a camera answers an introduction with its addresses and a relay grant only after
/// it has checked the viewer's credential; before that it shows only its identity key, and only to the
/// holder of the introduction's `answerKey`:
///
/// ```
///  viewer                             cloud                               camera
///    │ introduce{answerKey} ────────────►│ offer{answerKey} ─────────────────►│
///    │                                   │◄── accessChallenge{challenge}       │  fresh X25519 sealing key,
///    │◄── accessChallenge{challenge}     │    (key checked = registered key)   │  signed by the identity key
///    │  checks the signature and that the identity key is behind the UID (scrypt, or known)
///    │ accessProof{sealed} ─────────────►│ accessProof{sealed} ───────────────►│  opens, checks the viewer's
///    │                                   │                                     │  signature and credential
///    │                                   │◄── answer{sealed}  (or refuse{code})│  under PasswordAttemptLimits
///    │◄── start{sealed} (addresses, grant)        start ──────────────────────►│
/// ```
///
/// The proof is sealed with HPKE (RFC 9180 §5.1.1, base mode) to the challenge's one-time key, so the
/// cloud forwards a password it cannot read or test offline; it carries the viewer's identity key and
/// its Ed25519 signature over the challenge, so a paired key is proven by possession, and the
/// session's handshake later admits exactly that identity without checking the password again.
/// An asker without a credential learns that the UID is online and its public key, never an address
/// or a relay grant; the cloud forwards no answer for an introduction whose proof it has not carried.
///
/// A browser may skip the challenge's round trip: the camera deposits one-time keys with the cloud in advance
/// (``AccessDeposit``), the page seals its proof to one it was handed and sends it with its introduction, and the
/// camera, holding that key's private half, opens it at once; it challenges as above when it does not hold the key.
public struct AccessChallenge: Codable, Sendable, Hashable {
    /// Domain-separation label of the camera's challenge signature.
    public static let challengeDomain = "trav/access-challenge/v1"
    /// Domain-separation label of the viewer's proof signature.
    public static let proofDomain = "trav/access-proof/v1"
    /// HPKE `info` prefix of the sealed proof (RFC 9180 §5.1).
    public static let proofInfoDomain = "trav/access-proof-seal/v1"
    /// Longest sealed proof accepted (base64 characters): a password of at most
    /// ``maxPasswordLength`` bytes and two keys fit with room to spare.
    public static let maxSealedProofLength = 2048
    /// Longest password a proof may carry, in UTF-8 bytes.
    public static let maxPasswordLength = 512

    /// The camera's Ed25519 identity key, base64 (32 bytes).
    public var identityKey: String
    /// A one-time X25519 key the viewer seals its proof to, base64 (32 bytes).
    public var sealingKey: String
    /// The identity key's Ed25519 signature over `domain ‖ 0 ‖ deviceID ‖ 0 ‖ requestID ‖ 0 ‖ answerKey ‖ sealingKey`, base64 (64 bytes).
    public var signature: String

    /// A challenge with these fields, as received.
    public init(identityKey: String, sealingKey: String, signature: String) {
        self.identityKey = identityKey
        self.sealingKey = sealingKey
        self.signature = signature
    }

    /// `domain ‖ 0 ‖ deviceID ‖ 0 ‖ requestID ‖ 0 ‖ answerKey (32) ‖ sealingKey (32)`: the challenge is
    /// made for this introduction and this asker only.
    static func signedBytes(deviceID: DeviceID, requestID: String, answerKey: Data, sealingKey: Data) -> Data {
        var bytes = Data((challengeDomain + "\u{0}" + deviceID.description + "\u{0}" + requestID + "\u{0}").utf8)
        bytes.append(answerKey)
        bytes.append(sealingKey)
        return bytes
    }

    /// A fresh challenge from the camera `identity` for one introduction, and the private half of its sealing key.
    ///
    /// - Throws: ``CloudProtocolError`` `.invalidField` when `answerKey` is not base64 of 32 bytes.
    public static func make(identity: DeviceIdentity, deviceID: DeviceID, requestID: String,
                            answerKey: String) throws -> (challenge: AccessChallenge, key: Curve25519.KeyAgreement.PrivateKey) {
        let answer = try CloudMessage.base64(answerKey, length: CloudProtocol.answerKeyLength, field: "answerKey")
        let key = Curve25519.KeyAgreement.PrivateKey()
        let signature = try identity.signature(
            for: signedBytes(deviceID: deviceID, requestID: requestID, answerKey: answer, sealingKey: key.publicKey.rawRepresentation))
        let challenge = AccessChallenge(
            identityKey: identity.publicKey.rawRepresentation.base64EncodedString(),
            sealingKey: key.publicKey.rawRepresentation.base64EncodedString(),
            signature: signature.base64EncodedString())
        return (challenge, key)
    }

    /// Checks the field sizes (``CloudMessage/validate()``).
    func validate(field: String) throws {
        _ = try CloudMessage.base64(identityKey, length: CloudProtocol.publicKeyLength, field: field + ".identityKey")
        _ = try CloudMessage.base64(sealingKey, length: CloudProtocol.answerKeyLength, field: field + ".sealingKey")
        _ = try CloudMessage.base64(signature, length: CloudProtocol.signatureLength, field: field + ".signature")
    }

    /// The camera's identity key, if the signature over this introduction verifies with it; the caller
    /// still checks the key against the UID.
    ///
    /// - Throws: ``CloudProtocolError`` `.invalidField` for bad sizes or a small-order key, `.malformed`
    ///   when the signature does not verify.
    public func verifiedIdentity(deviceID: DeviceID, requestID: String, answerKey: Data) throws -> Curve25519.Signing.PublicKey {
        try validate(field: "challenge")
        let raw = try CloudMessage.base64(identityKey, length: CloudProtocol.publicKeyLength, field: "challenge.identityKey")
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw), !key.hasSmallOrder else {
            throw CloudProtocolError.invalid("challenge.identityKey", "not a usable Ed25519 key")
        }
        let sealing = try CloudMessage.base64(sealingKey, length: CloudProtocol.answerKeyLength, field: "challenge.sealingKey")
        let signed = Self.signedBytes(deviceID: deviceID, requestID: requestID, answerKey: answerKey, sealingKey: sealing)
        let signatureBytes = try CloudMessage.base64(signature, length: CloudProtocol.signatureLength, field: "challenge.signature")
        guard key.isValidSignature(signatureBytes, for: signed) else {
            throw CloudProtocolError(code: .malformed, detail: "the access challenge's signature does not verify")
        }
        return key
    }
}

/// What a viewer claims in its sealed access proof, as the camera reads it once opened and verified.
public struct ViewerAccessClaim: Sendable {
    /// The viewer's identity key; its signature over the challenge proved possession.
    public var viewerKey: Curve25519.Signing.PublicKey
    /// The credential presented.
    public var credential: AccessCredential

    /// A claim with these parts.
    public init(viewerKey: Curve25519.Signing.PublicKey, credential: AccessCredential) {
        self.viewerKey = viewerKey
        self.credential = credential
    }
}

/// The viewer's side of ``AccessChallenge``: checks the camera's challenge and seals its credential to it.
public struct AccessProver: Sendable {
    /// The viewer's identity (its key signs the proof; the session's handshake must then use the same).
    public let identity: DeviceIdentity
    /// The credential to present.
    public let credential: AccessCredential
    /// Keys already checked against their UIDs (a known key costs no scrypt).
    public let knownDevices: KnownDevices

    /// A prover presenting `credential` as `identity`.
    public init(identity: DeviceIdentity, credential: AccessCredential, knownDevices: KnownDevices = KnownDevices()) {
        self.identity = identity
        self.credential = credential
        self.knownDevices = knownDevices
    }

    /// The proof for `challenge`, sealed to its one-time key, after checking its signature and that its
    /// identity key is behind `device` (one scrypt, unless ``knownDevices`` holds the key; then it does).
    ///
    /// - Throws: ``TraversalError`` `identityMismatch` when the key is not behind the UID or the
    ///   signature does not verify; `badRequest`-coded ``CloudProtocolError`` for an unusable challenge.
    public func prove(_ challenge: AccessChallenge, device: DeviceID, requestID: String,
                      answerKey: Curve25519.KeyAgreement.PublicKey) async throws -> (sealed: String, cameraKey: Curve25519.Signing.PublicKey) {
        let camera: Curve25519.Signing.PublicKey
        do {
            camera = try challenge.verifiedIdentity(deviceID: device, requestID: requestID, answerKey: answerKey.rawRepresentation)
        } catch {
            throw TraversalError(code: .identityMismatch, detail: "the access challenge for \(device) does not verify: \(error)")
        }
        guard await knownDevices.check(camera, for: device) else {
            throw TraversalError(code: .identityMismatch, detail: "the cloud announced a key that is not behind \(device)")
        }
        let sealing = try CloudMessage.base64(challenge.sealingKey, length: CloudProtocol.answerKeyLength, field: "challenge.sealingKey")
        let sealed = try seal(to: sealing, signed: Self.signedBytes(deviceID: device, requestID: requestID, sealingKey: sealing),
                              info: Self.info(deviceID: device, requestID: requestID), field: "challenge.sealingKey")
        return (sealed, camera)
    }

    /// The credential and this identity's signature over `signed`, sealed to the X25519 key `sealing` under HPKE `info`.
    func seal(to sealing: Data, signed: Data, info: Data, field: String) throws -> String {
        let signature = try identity.signature(for: signed)
        let proof = SealedProof(viewerKey: identity.publicKey.rawRepresentation, hello: SessionHello(credential), signature: signature)
        return try HPKEBox.seal(try JSONEncoder().encode(proof), to: sealing, info: info, field: field)
    }

    /// `domain ‖ 0 ‖ deviceID ‖ 0 ‖ requestID ‖ 0 ‖ sealingKey (32)`: what the viewer's identity key signs.
    static func signedBytes(deviceID: DeviceID, requestID: String, sealingKey: Data) -> Data {
        var bytes = Data((AccessChallenge.proofDomain + "\u{0}" + deviceID.description + "\u{0}" + requestID + "\u{0}").utf8)
        bytes.append(sealingKey)
        return bytes
    }

    /// HPKE `info` of the sealed proof: `domain ‖ 0 ‖ deviceID ‖ 0 ‖ requestID`.
    static func info(deviceID: DeviceID, requestID: String) -> Data {
        Data((AccessChallenge.proofInfoDomain + "\u{0}" + deviceID.description + "\u{0}" + requestID).utf8)
    }

    /// Opens a sealed proof with the challenge's private sealing key and checks the viewer's signature.
    ///
    /// - Throws: ``CloudProtocolError`` `.malformed` when it does not open, is not a proof, or its
    ///   signature does not verify; `.invalidField` when a field breaks the limits.
    public static func open(_ sealed: String, with key: Curve25519.KeyAgreement.PrivateKey, deviceID: DeviceID,
                            requestID: String) throws -> ViewerAccessClaim {
        try openProof(sealed, with: key, info: info(deviceID: deviceID, requestID: requestID),
                      signed: signedBytes(deviceID: deviceID, requestID: requestID, sealingKey: key.publicKey.rawRepresentation))
    }

    /// Opens a sealed proof under HPKE `info` and checks the viewer's signature over `signed` (a live challenge's or a
    /// deposit's binding).
    static func openProof(_ sealed: String, with key: Curve25519.KeyAgreement.PrivateKey, info: Data, signed: Data) throws -> ViewerAccessClaim {
        guard sealed.utf8.count <= AccessChallenge.maxSealedProofLength else {
            throw CloudProtocolError.invalid("accessProof.sealed", "longer than \(AccessChallenge.maxSealedProofLength) characters")
        }
        let plain = try HPKEBox.open(sealed, with: key, info: info, what: "access proof")
        guard let proof = try? JSONDecoder().decode(SealedProof.self, from: plain) else {
            throw CloudProtocolError(code: .malformed, detail: "the sealed access proof is not a proof")
        }
        guard proof.viewerKey.count == CloudProtocol.publicKeyLength,
              let viewer = try? Curve25519.Signing.PublicKey(rawRepresentation: proof.viewerKey), !viewer.hasSmallOrder
        else { throw CloudProtocolError.invalid("accessProof.viewerKey", "not a usable Ed25519 key") }
        guard (proof.hello.password?.utf8.count ?? 0) <= AccessChallenge.maxPasswordLength else {
            throw CloudProtocolError.invalid("accessProof.password", "longer than \(AccessChallenge.maxPasswordLength) bytes")
        }
        guard proof.signature.count == CloudProtocol.signatureLength, viewer.isValidSignature(proof.signature, for: signed) else {
            throw CloudProtocolError(code: .malformed, detail: "the access proof's signature does not verify")
        }
        return ViewerAccessClaim(viewerKey: viewer, credential: proof.hello.credential)
    }

    /// The plaintext of a sealed proof.
    struct SealedProof: Codable {
        /// The viewer's Ed25519 identity key (32 bytes).
        var viewerKey: Data
        /// The credential, as the session's hello carries it.
        var hello: SessionHello
        /// The viewer key's signature over ``AccessProver/signedBytes(deviceID:requestID:sealingKey:)`` (a live challenge) or
        /// ``AccessProver/depositSignedBytes(deviceID:requestID:sealingKey:answerKey:)`` (a deposit).
        var signature: Data
    }
}

/// HPKE single-shot sealing to an X25519 key (RFC 9180 §6.1, base mode, DHKEM(X25519, HKDF-SHA256),
/// HKDF-SHA256, ChaCha20-Poly1305), as base64 of `enc (32) ‖ ciphertext`.
enum HPKEBox {
    /// The cipher suite.
    static let ciphersuite = HPKE.Ciphersuite.Curve25519_SHA256_ChachaPoly
    /// Bytes of the encapsulated key for X25519 (RFC 9180 §7.1: Nenc = 32).
    static let encapsulatedKeyLength = 32

    /// `plaintext` sealed to the raw X25519 key `recipient` under `info`, as base64 text.
    ///
    /// - Throws: ``CloudProtocolError`` `.invalidField` (named `field`) when `recipient` is not a usable key.
    static func seal(_ plaintext: Data, to recipient: Data, info: Data, field: String) throws -> String {
        var sender: HPKE.Sender
        do {
            let key = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: recipient)
            sender = try HPKE.Sender(recipientKey: key, ciphersuite: ciphersuite, info: info)
        } catch {
            throw CloudProtocolError.invalid(field, "not an X25519 public key")
        }
        let ciphertext = try sender.seal(plaintext)
        return (sender.encapsulatedKey + ciphertext).base64EncodedString()
    }

    /// The plaintext of `sealed` (base64 of `enc ‖ ciphertext`) opened with `key` under `info`.
    ///
    /// - Throws: ``CloudProtocolError`` `.malformed` when it is too short or does not open.
    static func open(_ sealed: String, with key: Curve25519.KeyAgreement.PrivateKey, info: Data, what: String) throws -> Data {
        guard let bytes = Data(base64Encoded: sealed), bytes.count > encapsulatedKeyLength else {
            throw CloudProtocolError(code: .malformed, detail: "\(what) too short")
        }
        do {
            var recipient = try HPKE.Recipient(
                privateKey: key, ciphersuite: ciphersuite, info: info, encapsulatedKey: bytes.prefix(encapsulatedKeyLength))
            return try recipient.open(bytes.dropFirst(encapsulatedKeyLength))
        } catch {
            throw CloudProtocolError(code: .malformed, detail: "\(what) does not open with this introduction's key")
        }
    }
}
