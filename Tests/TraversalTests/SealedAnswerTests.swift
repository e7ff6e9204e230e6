import Crypto
import Foundation
import SourceLimits
import Testing
@testable import Traversal

/// The camera's answer sealed to the viewer's answer key (HPKE, RFC 9180 base mode): only that key opens
/// it, only for its own request and device, and what it holds is checked like any cloud message.
struct SealedAnswerTests {
    static let identity = DeviceIdentity.ephemeral()
    static let device = DeviceID(publicKey: identity.publicKey)
    static let answer = SealedAnswer(
        offer: PeerOffer(identityKey: identity.publicKey.rawRepresentation,
                         candidates: [Candidate(strategy: "direct-lan", kind: .host, address: "10.1.2.3:4000"),
                                      Candidate(strategy: "udp-hole-punch", kind: .serverReflexive, address: "203.0.113.4:5000")],
                         strategies: ["direct-lan", "udp-hole-punch"]),
        relay: RelayGrant(urls: ["turns:192.0.2.1:5349"], username: "100:r1", password: "secret", expires: 100))

    static func keyPair() -> (Curve25519.KeyAgreement.PrivateKey, String) {
        let key = Curve25519.KeyAgreement.PrivateKey()
        return (key, key.publicKey.rawRepresentation.base64EncodedString())
    }

    @Test func theHolderOfTheAnswerKeyOpensWhatTheCameraSealed() throws {
        let (key, answerKey) = Self.keyPair()
        let sealed = try Self.answer.sealed(to: answerKey, deviceID: Self.device, requestID: "r1")
        #expect(!sealed.contains("203.0.113.4") && !sealed.contains("secret"))
        #expect(try SealedAnswer.open(sealed, with: key, deviceID: Self.device, requestID: "r1") == Self.answer)
    }

    @Test func anotherKeyRequestDeviceOrAnAlteredByteDoesNotOpen() throws {
        let (key, answerKey) = Self.keyPair()
        let sealed = try Self.answer.sealed(to: answerKey, deviceID: Self.device, requestID: "r1")
        var altered = Data(base64Encoded: sealed)!
        altered[altered.count - 1] ^= 1
        let attempts: [(Curve25519.KeyAgreement.PrivateKey, DeviceID, String, String)] = [
            (Self.keyPair().0, Self.device, "r1", sealed),
            (key, Self.device, "r2", sealed),
            (key, DeviceID(publicKey: DeviceIdentity.ephemeral().publicKey), "r1", sealed),
            (key, Self.device, "r1", altered.base64EncodedString()),
            (key, Self.device, "r1", "c2hvcnQ="),
        ]
        for (k, d, r, s) in attempts {
            let error = #expect(throws: CloudProtocolError.self) { try SealedAnswer.open(s, with: k, deviceID: d, requestID: r) }
            #expect(error?.code == .malformed)
        }
    }

    @Test func aSealedAnswerBreakingTheLimitsIsRefusedAfterOpening() throws {
        let (key, answerKey) = Self.keyPair()
        var big = Self.answer
        big.offer.candidates = Array(repeating: big.offer.candidates[0], count: PeerOffer.maxCandidates + 1)
        let sealed = try big.sealed(to: answerKey, deviceID: Self.device, requestID: "r1")
        let error = #expect(throws: CloudProtocolError.self) { try SealedAnswer.open(sealed, with: key, deviceID: Self.device, requestID: "r1") }
        #expect(error?.code == .invalidField)
    }

    @Test func anAnswerKeyThatIsNoKeyIsRefused() {
        #expect(throws: CloudProtocolError.self) { try Self.answer.sealed(to: "not a key", deviceID: Self.device, requestID: "r1") }
    }

    @Test func lanAddressesAreShownOnlyAtTheCamerasOwnSite() {
        let site = SourceAddressKey(ipv4: 0xC000_0201)
        let elsewhere = SourceAddressKey(ipv4: 0xC000_0202)
        let offer = Self.answer.offer
        #expect(offer.shown(to: site, cameraAt: site) == offer)
        #expect(offer.shown(to: elsewhere, cameraAt: site).candidates.map(\.kind) == [.serverReflexive])
        #expect(offer.shown(to: nil, cameraAt: site).candidates.map(\.kind) == [.serverReflexive])
        #expect(offer.shown(to: .unidentified, cameraAt: .unidentified).candidates.map(\.kind) == [.serverReflexive])
    }
}
