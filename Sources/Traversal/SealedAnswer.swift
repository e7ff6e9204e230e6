import Crypto
import Foundation
import SourceLimits

/// The camera's answer to one introduction as it travels through the cloud: sealed to the viewer's
/// ephemeral X25519 key (`answerKey` in ``CloudMessage/introduce(requestID:deviceID:offer:answerKey:)``)
/// with HPKE (RFC 9180 §5.1.1, base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305),
/// so only the holder of that key reads the camera's candidates and the relay grant. The cloud
/// forwards bytes it cannot open; nothing in clear tells it, or anyone who reads its traffic, where
/// the camera is.
///
/// ```
///  viewer   answerKey = public half of a fresh X25519 key, in `introduce`  ──► cloud ──► camera
///  camera   sealed = base64( enc (32) ‖ HPKE ciphertext of JSON {offer, relay} )
///           info   = "trav/sealed-answer/v1" ‖ 0 ‖ deviceID ‖ 0 ‖ requestID
///  viewer   ◄── start{sealed} ── cloud: opens with its private key, checks the offer's limits
/// ```
///
/// The answer is not trusted for who the camera is: the viewer checks the identity key inside
/// against the UID, and every path's handshake pins it.
public struct SealedAnswer: Codable, Sendable, Hashable {
    /// HPKE `info` prefix (RFC 9180 §5.1), binding a sealed answer to this use.
    public static let infoDomain = "trav/sealed-answer/v1"
    /// The camera's answer: its identity key, candidates and strategies.
    public var offer: PeerOffer
    /// The relay grant the cloud issued for this introduction, if it runs a relay.
    public var relay: RelayGrant?

    /// An answer with these contents.
    public init(offer: PeerOffer, relay: RelayGrant?) {
        self.offer = offer
        self.relay = relay
    }

    /// `domain ‖ 0 ‖ deviceID ‖ 0 ‖ requestID`: a sealed answer opens only for the request it was made for.
    static func info(deviceID: DeviceID, requestID: String) -> Data {
        Data((infoDomain + "\u{0}" + deviceID.description + "\u{0}" + requestID).utf8)
    }

    /// This answer sealed to `answerKey` (the base64 X25519 key from the introduction), as base64 text.
    ///
    /// - Throws: ``CloudProtocolError`` `.invalidField` when `answerKey` is not a usable key.
    public func sealed(to answerKey: String, deviceID: DeviceID, requestID: String) throws -> String {
        let raw = try CloudMessage.base64(answerKey, length: CloudProtocol.answerKeyLength, field: "answerKey")
        return try HPKEBox.seal(try JSONEncoder().encode(self), to: raw, info: Self.info(deviceID: deviceID, requestID: requestID),
                                field: "answerKey")
    }

    /// Opens a sealed answer with the private half of the introduction's `answerKey` and checks its limits.
    ///
    /// - Throws: ``CloudProtocolError`` `.malformed` when it does not open (wrong key, request or
    ///   device, or altered), `.invalidField` when what it holds breaks the protocol's limits.
    public static func open(_ sealed: String, with key: Curve25519.KeyAgreement.PrivateKey, deviceID: DeviceID,
                            requestID: String) throws -> SealedAnswer {
        try CloudMessage.check(sealed: sealed, field: "sealed")
        let plain = try HPKEBox.open(sealed, with: key, info: info(deviceID: deviceID, requestID: requestID), what: "sealed answer")
        guard let answer = try? JSONDecoder().decode(SealedAnswer.self, from: plain) else {
            throw CloudProtocolError(code: .malformed, detail: "sealed answer of \(plain.count) bytes is not an answer")
        }
        try answer.offer.validate(field: "sealed.offer")
        try answer.relay?.validate(field: "sealed.relay")
        return answer
    }
}

extension PeerOffer {
    /// This offer as shown to a viewer asking from `viewer` when the camera is at `camera`: its LAN
    /// (host) addresses only when both are at the same site (the same `SourceAddressKey`), where
    /// they can work at all; a viewer elsewhere learns no private address of the camera's network.
    public func shown(to viewer: SourceAddressKey?, cameraAt camera: SourceAddressKey?) -> PeerOffer {
        if let viewer, let camera, viewer == camera, viewer != .unidentified { return self }
        var shown = self
        shown.candidates.removeAll { $0.kind == .host }
        return shown
    }
}
