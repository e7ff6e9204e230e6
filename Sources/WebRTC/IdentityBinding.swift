import Crypto
import Foundation

/// The camera's identity key vouching for its DTLS certificate in one WebRTC session: an Ed25519
/// signature over both sides' certificate fingerprints and the UID, carried in the answer as
/// `a=trav-identity:<public key> <signature>` (base64). A page checks it with WebCrypto's Ed25519
/// and checks the key against the UID, so neither the cloud nor a relay can put its own certificate
/// in the middle (RFC 8827 §6.5 leaves identity to the application; this is ours).
///
/// ```
///  signed = "trav/webrtc-identity/v1" ‖ 0 ‖ UID ‖ 0 ‖ camera fingerprint (32) ‖ browser fingerprint (32)
/// ```
public struct IdentityBinding: Sendable, Hashable {
    /// Domain-separation label of the signature.
    public static let domain = "trav/webrtc-identity/v1"
    /// The SDP attribute name.
    public static let attribute = "trav-identity"

    /// The camera's Ed25519 identity public key (32 bytes).
    public var publicKey: [UInt8]
    /// The signature (64 bytes).
    public var signature: [UInt8]

    /// A binding with these parts.
    public init(publicKey: [UInt8], signature: [UInt8]) {
        self.publicKey = publicKey
        self.signature = signature
    }

    /// The bytes signed.
    public static func signedBytes(deviceID: String, cameraFingerprint: [UInt8], browserFingerprint: [UInt8]) -> [UInt8] {
        Array((domain + "\u{0}" + deviceID + "\u{0}").utf8) + cameraFingerprint + browserFingerprint
    }

    /// The camera's binding for this session: `publicKey` is its identity key, `sign` makes an Ed25519
    /// signature with the private half (the identity's own signer, so the key never leaves it).
    public static func sign(publicKey: [UInt8], deviceID: String, cameraFingerprint: [UInt8], browserFingerprint: [UInt8],
                            using sign: ([UInt8]) throws -> Data) rethrows -> IdentityBinding {
        let bytes = signedBytes(deviceID: deviceID, cameraFingerprint: cameraFingerprint, browserFingerprint: browserFingerprint)
        return IdentityBinding(publicKey: publicKey, signature: Array(try sign(bytes)))
    }

    /// Whether the signature holds for these fingerprints and UID (the key's UID derivation is checked apart).
    public func verifies(deviceID: String, cameraFingerprint: [UInt8], browserFingerprint: [UInt8]) -> Bool {
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKey) else { return false }
        return key.isValidSignature(signature, for: Self.signedBytes(
            deviceID: deviceID, cameraFingerprint: cameraFingerprint, browserFingerprint: browserFingerprint))
    }

    /// The attribute line's value: `<public key> <signature>`, base64.
    public var attributeValue: String {
        Data(publicKey).base64EncodedString() + " " + Data(signature).base64EncodedString()
    }
}
