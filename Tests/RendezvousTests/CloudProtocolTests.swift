import Foundation
import NIOCore
import Testing
@testable import Traversal

/// The signalling wire format: framing, the `type` field, and validation of every field.
struct CloudProtocolTests {
    static let key = Data(repeating: 7, count: 32)
    static let offer = PeerOffer(
        identityKey: key, candidates: [Candidate(strategy: "udp-hole-punch", kind: .serverReflexive, address: "203.0.113.5:4000")],
        strategies: ["udp-hole-punch"])
    static let deviceID = DeviceID(publicKey: try! .init(rawRepresentation: key)).description

    static let everyMessage: [CloudMessage] = [
        .register(deviceID: deviceID, publicKey: key.base64EncodedString()),
        .challenge(nonce: Data(repeating: 1, count: 32).base64EncodedString()),
        .prove(signature: Data(repeating: 2, count: 64).base64EncodedString()),
        .registered(observedAddress: "198.51.100.1:5000", keepaliveSeconds: 10),
        .ping, .pong,
        .introduce(requestID: "req-1", deviceID: deviceID, offer: offer),
        .offer(requestID: "req-1", offer: offer, relay: RelayGrant(urls: ["turn:192.0.2.1:3478"], username: "1:a", password: "p", expires: 1)),
        .answer(requestID: "req-1", offer: offer),
        .decline(requestID: "req-1"),
        .start(requestID: "req-1", answer: offer, relay: nil),
        .start(requestID: "req-1", answer: nil, relay: nil),
        .introduce(requestID: "req-2", deviceID: deviceID, offer: offer, answerKey: Data(repeating: 9, count: 32).base64EncodedString()),
        .offer(requestID: "req-2", offer: offer, relay: nil, requester: "192.0.2.7", answerKey: Data(repeating: 9, count: 32).base64EncodedString()),
        .answer(requestID: "req-2", offer: PeerOffer(identityKey: key, candidates: [], strategies: []), sealed: "c2VhbGVk"),
        .start(requestID: "req-2", answer: nil, relay: nil, sealed: "c2VhbGVk"),
        .error(requestID: nil, code: "unavailable", message: "device unavailable"),
        .renewRelay(requestID: "renew-1", relay: RelayGrant(urls: ["turns:192.0.2.1:5349"], username: "1:a", password: "p", expires: 1)),
        .relayRenewed(requestID: "renew-1", relay: RelayGrant(urls: ["turns:192.0.2.1:5349"], username: "61:a", password: "q", expires: 61)),
        .busy(retryAfterMilliseconds: 1500),
        .deposit(deposits: [deposit, deposit]),
        .offer(requestID: "req-3", offer: offer, relay: nil, answerKey: Data(repeating: 9, count: 32).base64EncodedString(),
               deposited: DepositedProof(sealingKey: Data(repeating: 4, count: 32).base64EncodedString(), sealed: "c2VhbGVk")),
    ]

    /// A deposit of the right sizes (its signature is checked by the cloud, not the codec).
    static let deposit = AccessDeposit(sealingKey: Data(repeating: 3, count: 32).base64EncodedString(), expires: 1_800_000_000,
                                       signature: Data(repeating: 5, count: 64).base64EncodedString())

    @Test(arguments: everyMessage)
    func everyMessageSurvivesAFramedRoundTrip(message: CloudMessage) throws {
        var buffer = ByteBuffer()
        try CloudFrameEncoder().encode(data: message, out: &buffer)
        let prefix = buffer.readInteger(as: UInt32.self)
        let length = try #require(prefix)
        #expect(Int(length) == buffer.readableBytes)
        let json = try JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) as? [String: Any]
        #expect(json?["type"] as? String == message.type)
        #expect(try CloudFrameDecoder.message(from: buffer) == message)
    }

    @Test(arguments: [
        CloudMessage.register(deviceID: "TRAV-0000-0000-0000-0001", publicKey: key.base64EncodedString()),
        .register(deviceID: deviceID, publicKey: Data(count: 31).base64EncodedString()),
        .challenge(nonce: "not base64!"),
        .prove(signature: Data(count: 63).base64EncodedString()),
        .registered(observedAddress: "x", keepaliveSeconds: 0),
        .introduce(requestID: "", deviceID: deviceID, offer: offer),
        .introduce(requestID: String(repeating: "a", count: 65), deviceID: deviceID, offer: offer),
        .introduce(requestID: "bad id", deviceID: deviceID, offer: offer),
        .answer(requestID: "r", offer: PeerOffer(identityKey: Data(count: 33), candidates: [], strategies: [])),
        .answer(requestID: "r", offer: PeerOffer(identityKey: key, candidates: Array(repeating: offer.candidates[0], count: 65), strategies: [])),
        .answer(requestID: "r", offer: PeerOffer(identityKey: key, candidates: [], strategies: Array(repeating: "s", count: 33))),
        .answer(requestID: "r", offer: PeerOffer(identityKey: key, candidates: [Candidate(strategy: "s", kind: .host, address: String(repeating: "1", count: 300))], strategies: [])),
        .introduce(requestID: "r", deviceID: deviceID, offer: offer, answerKey: Data(count: 31).base64EncodedString()),
        .offer(requestID: "r", offer: offer, relay: nil, answerKey: "not base64!"),
        .answer(requestID: "r", offer: offer, sealed: ""),
        .start(requestID: "r", answer: nil, relay: nil, sealed: String(repeating: "A", count: CloudProtocol.maxSealedAnswerLength + 4)),
        .error(requestID: nil, code: "Not Kebab", message: "m"),
        .error(requestID: nil, code: "x", message: String(repeating: "m", count: 513)),
        .renewRelay(requestID: "bad id", relay: RelayGrant(urls: [], username: "1:a", password: "p", expires: 1)),
        .relayRenewed(requestID: "r", relay: RelayGrant(urls: Array(repeating: "turn:192.0.2.1", count: 9), username: "1:a", password: "p", expires: 1)),
        .busy(retryAfterMilliseconds: 0),
        .busy(retryAfterMilliseconds: CloudProtocol.maxRetryAfterMilliseconds + 1),
        .deposit(deposits: []),
        .deposit(deposits: Array(repeating: deposit, count: AccessDeposit.maxPerMessage + 1)),
        .deposit(deposits: [AccessDeposit(sealingKey: Data(count: 33).base64EncodedString(), expires: 1, signature: deposit.signature)]),
        .deposit(deposits: [AccessDeposit(sealingKey: deposit.sealingKey, expires: 1, signature: "not base64!")]),
        .deposit(deposits: [AccessDeposit(sealingKey: deposit.sealingKey, expires: 0, signature: deposit.signature)]),
        .offer(requestID: "r", offer: offer, relay: nil, deposited: DepositedProof(sealingKey: Data(count: 31).base64EncodedString(), sealed: "c2VhbGVk")),
        .offer(requestID: "r", offer: offer, relay: nil, deposited: DepositedProof(sealingKey: deposit.sealingKey, sealed: "")),
        .offer(requestID: "r", offer: offer, relay: nil, deposited: DepositedProof(
            sealingKey: deposit.sealingKey, sealed: String(repeating: "A", count: AccessChallenge.maxSealedProofLength + 4))),
    ])
    func invalidFieldsAreRejectedWithATypedError(message: CloudMessage) throws {
        let error = #expect(throws: CloudProtocolError.self) { try message.validate() }
        #expect(error?.code == .invalidField)
    }

    @Test func garbageAndUnknownTypesAreMalformed() throws {
        for body in ["hello", #"{"type":"nope"}"#, #"{"type":"register"}"#, "[]"] {
            let error = #expect(throws: CloudProtocolError.self) {
                try CloudFrameDecoder.message(from: ByteBuffer(string: body))
            }
            #expect(error?.code == .malformed)
        }
    }

    @Test func registrationMessageBindsNonceDeviceAndCloudName() {
        let nonce = Data(repeating: 9, count: 32)
        let base = CloudProtocol.registrationMessage(nonce: nonce, deviceID: "TRAV-A", cloudName: "cloud.example")
        #expect(base.starts(with: Data("trav/cloud-register/v1\u{0}".utf8)))
        #expect(base != CloudProtocol.registrationMessage(nonce: nonce, deviceID: "TRAV-A", cloudName: "other.example"))
        #expect(base != CloudProtocol.registrationMessage(nonce: Data(count: 32), deviceID: "TRAV-A", cloudName: "cloud.example"))
        #expect(base != CloudProtocol.registrationMessage(nonce: nonce, deviceID: "TRAV-B", cloudName: "cloud.example"))
    }
}
