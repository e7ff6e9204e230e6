import Crypto
import Foundation
import NIOCore
import Rendezvous
import Synchronization
import Testing
@testable import Traversal

/// An enumerating attacker against the cloud: it holds no credential and asks, from another site, for
/// an online UID, an offline one and an unknown one, and records every byte the cloud answers.
///
/// Without an answer key the three answers are byte for byte the same, and the online camera never
/// hears of the question. With one, unknown and offline are still the same; the online camera shows
/// only its signed access challenge (its identity key) until the asker proves access: a wrong
/// password, a forged proof or a proof sent from another connection gets no address and no relay
/// grant; the right password gets the answer, sealed to the asker's key (README "Limits under attack").
@Suite(.serialized, .timeLimit(.minutes(2)))
struct EnumerationTests {
    let relay = CloudService.RelayConfiguration(port: 0, tlsPort: 0, grantLifetime: .seconds(600))
    /// The one password the test camera admits.
    static let password = "correct horse"

    /// The camera's answer: one LAN and one public address, both distinctive in the bytes.
    static func answer(_ camera: DeviceIdentity) -> PeerOffer {
        PeerOffer(
            identityKey: camera.publicKey.rawRepresentation,
            candidates: [Candidate(strategy: "direct-lan", kind: .host, address: "10.77.66.55:4711"),
                         Candidate(strategy: "udp-hole-punch", kind: .serverReflexive, address: "203.0.113.77:6711")],
            strategies: ["direct-lan", "udp-hole-punch"])
    }

    /// A message as JSON with sorted keys (the encoder's own key order varies from message to message
    /// whatever the UID), with `requestID` replaced by `R`; "closed" for none.
    static func wire(_ message: CloudMessage?, requestID: String) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let text = try message.map { String(decoding: try encoder.encode($0), as: UTF8.self) } ?? "closed"
        return text.replacingOccurrences(of: requestID, with: "R")
    }

    /// The message the attacker's connection receives for one introduction, as ``wire(_:requestID:)``, and the message itself.
    func ask(_ device: DeviceID, requestID: String, answerKey: String?, endpoint: CloudEndpoint) async throws -> (String, CloudMessage?) {
        try await withRawConnection(endpoint, from: "127.0.0.2") { channel, inbound in
            try await channel.writeAndFlush(CloudMessage.introduce(
                requestID: requestID, deviceID: device.description, offer: sampleOffer(DeviceIdentity.ephemeral()), answerKey: answerKey))
            let reply = try await inbound.next()
            return (try Self.wire(reply, requestID: requestID), reply)
        }
    }

    @Test func anAskerWithoutCredentialsLearnsNoAddressNorGrantAndTheRightPasswordDoes() async throws {
        let online = DeviceIdentity.generate()
        let offline = DeviceIdentity.generate()
        // Each UID derivation is a scrypt: once each.
        let (onlineID, offlineID, unknown) = (online.deviceID, offline.deviceID, DeviceIdentity.generate().deviceID)
        try await withCloud(relay: relay) { cloud, endpoint in
            try await withCamera(offline, endpoint) { _ in }
            #expect(await eventually(within: .seconds(10)) { await cloud.rendezvous.registry.lookup(offlineID) == nil })
            try await withCamera(online, endpoint) { camera in
                let offersSeen = Mutex(0)
                let accepted = Mutex(0)
                let grantSeen = Mutex<RelayGrant?>(nil)
                // A camera admitting exactly one password; every other claim, and every proof that does not open, refused.
                let answering = Task {
                    for await intro in camera.introductions {
                        offersSeen.withLock { $0 += 1 }
                        grantSeen.withLock { $0 = intro.relay }
                        guard let claim = try? await intro.requestAccess() else { continue }
                        guard case .password(Self.password) = claim.credential else {
                            await intro.refuse(.accessDenied)
                            continue
                        }
                        accepted.withLock { $0 += 1 }
                        try? await intro.accept(answer: Self.answer(online))
                    }
                }
                defer { answering.cancel() }
                let secrets = { (grant: RelayGrant?) in
                    ["10.77.66.55", "203.0.113.77", "4711", "6711", "turn:", "turns:"] + [grant?.username, grant?.password].compactMap { $0 }
                }

                // 1. No answer key: the same bytes for all three, and the camera hears nothing.
                var bare: [String] = []
                for (i, device) in [onlineID, offlineID, unknown].enumerated() {
                    bare.append(try await ask(device, requestID: "bare-\(i)", answerKey: nil, endpoint: endpoint).0)
                }
                #expect(bare[0].contains(CloudError.Code.unavailable.name), "\(bare[0])")
                #expect(Set(bare).count == 1, "online, offline and unknown answered alike: \(bare)")
                #expect(offersSeen.withLock { $0 } == 0, "the camera never saw a question without an answer key")

                // 2. With an answer key: unknown and offline alike.
                let (key, answerKey) = makeAnswerKey()
                let offlineReply = try await ask(offlineID, requestID: "keyed-0", answerKey: answerKey, endpoint: endpoint).0
                let unknownReply = try await ask(unknown, requestID: "keyed-1", answerKey: answerKey, endpoint: endpoint).0
                #expect(offlineReply == unknownReply)
                #expect(offlineReply == bare[0], "the same error as without a key")

                // 3. The online camera: a challenge, then whatever the proof earns, all on one connection.
                try await withRawConnection(endpoint, from: "127.0.0.2") { channel, inbound in
                    var received: [String] = []
                    func next(_ requestID: String) async throws -> CloudMessage? {
                        let message = try await inbound.next()
                        received.append(try Self.wire(message, requestID: requestID))
                        return message
                    }
                    func challenge(_ requestID: String) async throws -> AccessChallenge? {
                        try await channel.writeAndFlush(CloudMessage.introduce(
                            requestID: requestID, deviceID: onlineID.description, offer: sampleOffer(.ephemeral()), answerKey: answerKey))
                        guard case .accessChallenge(requestID, let challenge)? = try await next(requestID) else { return nil }
                        return challenge
                    }
                    func prove(_ credential: AccessCredential, _ challenge: AccessChallenge, _ requestID: String) async throws -> String {
                        try await AccessProver(identity: .ephemeral(), credential: credential)
                            .prove(challenge, device: onlineID, requestID: requestID, answerKey: key.publicKey).sealed
                    }

                    // Only the challenge at first: the camera's identity key, signed for this asker.
                    let first = try #require(try await challenge("probe-1"), "the online camera challenges: \(received)")
                    #expect(Data(base64Encoded: first.identityKey) == online.publicKey.rawRepresentation)
                    #expect(throws: Never.self) {
                        _ = try first.verifiedIdentity(deviceID: onlineID, requestID: "probe-1", answerKey: key.publicKey.rawRepresentation)
                    }

                    // A wrong password: refused, with the reason.
                    try await channel.writeAndFlush(CloudMessage.accessProof(requestID: "probe-1", sealed: try await prove(.password("guess"), first, "probe-1")))
                    guard case .error("probe-1", AccessRefusal.accessDenied.rawValue, _)? = try await next("probe-1") else {
                        Issue.record("a wrong password is refused: \(received)")
                        return
                    }

                    // A forged proof (not sealed to the challenge's key) and a proof made for another request: refused.
                    let second = try #require(try await challenge("probe-2"))
                    try await channel.writeAndFlush(CloudMessage.accessProof(requestID: "probe-2", sealed: Data(repeating: 7, count: 200).base64EncodedString()))
                    guard case .error("probe-2", AccessRefusal.accessDenied.rawValue, _)? = try await next("probe-2") else {
                        Issue.record("a forged proof is refused: \(received)")
                        return
                    }
                    _ = try #require(try await challenge("probe-3"))
                    try await channel.writeAndFlush(CloudMessage.accessProof(
                        requestID: "probe-3", sealed: try await prove(.password(Self.password), second, "probe-2")))
                    guard case .error("probe-3", AccessRefusal.accessDenied.rawValue, _)? = try await next("probe-3") else {
                        Issue.record("a proof made for another challenge is refused: \(received)")
                        return
                    }

                    // A proof for this asker's challenge sent from another connection: the cloud does not carry it.
                    let fourth = try #require(try await challenge("probe-4"))
                    let rightProof = try await prove(.password(Self.password), fourth, "probe-4")
                    try await withRawConnection(endpoint, from: "127.0.0.3") { other, otherInbound in
                        try await other.writeAndFlush(CloudMessage.accessProof(requestID: "probe-4", sealed: rightProof))
                        guard case .error("probe-4", CloudError.Code.badRequest.name, _)? = try await otherInbound.next() else {
                            Issue.record("a proof for another connection's challenge is not carried")
                            return
                        }
                    }
                    #expect(accepted.withLock { $0 } == 0)
                    for secret in secrets(grantSeen.withLock { $0 }) {
                        #expect(!received.joined().contains(secret), "\(secret) reached an asker without the password: \(received)")
                    }

                    // The right password: the answer and the grant, sealed to the asker's key and only openable there.
                    try await channel.writeAndFlush(CloudMessage.accessProof(requestID: "probe-4", sealed: rightProof))
                    let reply = try await next("probe-4")
                    guard case .start(_, let clearAnswer, let clearRelay, let sealed?)? = reply else {
                        Issue.record("the right password gets a sealed start: \(received)")
                        return
                    }
                    #expect(clearAnswer == nil && clearRelay == nil, "nothing in clear beside the sealed answer")
                    for secret in secrets(grantSeen.withLock { $0 }) {
                        #expect(!received.last!.contains(secret), "\(secret) appears in clear in \(received.last!)")
                    }
                    #expect(throws: CloudProtocolError.self) {
                        try SealedAnswer.open(sealed, with: Curve25519.KeyAgreement.PrivateKey(), deviceID: onlineID, requestID: "probe-4")
                    }
                    #expect(throws: CloudProtocolError.self) {
                        try SealedAnswer.open(sealed, with: key, deviceID: onlineID, requestID: "probe-1")
                    }
                    let opened = try SealedAnswer.open(sealed, with: key, deviceID: onlineID, requestID: "probe-4")
                    #expect(opened.relay != nil && opened.relay == grantSeen.withLock { $0 }, "the grant travels inside")
                    #expect(opened.offer.candidates.map(\.address) == ["203.0.113.77:6711"],
                            "an asker from another site never sees the camera's LAN address")
                    #expect(accepted.withLock { $0 } == 1, "the camera answered only the right password")
                }
            }
        }
    }

    /// A camera (or a bug) answering before the viewer's proof, or with its candidates in clear: the
    /// cloud forwards none of it and the viewer hears `unavailable`.
    @Test func anAnswerBeforeTheProofOrInClearIsNotForwarded() async throws {
        let camera = DeviceIdentity.generate()
        let cameraID = camera.deviceID
        try await withCloud { _, endpoint in
            try await withRawConnection(endpoint) { cameraChannel, cameraInbound in
                guard case .registered? = try await rawRegister(camera, endpoint: endpoint, channel: cameraChannel, inbound: &cameraInbound)
                else { Issue.record("camera not registered"); return }
                try await withRawConnection(endpoint, from: "127.0.0.2") { viewer, viewerInbound in
                    let (key, answerKey) = makeAnswerKey()
                    let cleartext = PeerOffer(identityKey: camera.publicKey.rawRepresentation, candidates: [], strategies: [])
                    for requestID in ["early", "clear"] {
                        try await viewer.writeAndFlush(CloudMessage.introduce(
                            requestID: requestID, deviceID: cameraID.description, offer: sampleOffer(.ephemeral()), answerKey: answerKey))
                        guard case .offer(requestID, _, _, _, let offered?, _)? = try await cameraInbound.next() else {
                            Issue.record("the camera gets the offer with the answer key")
                            return
                        }
                        if requestID == "early" {
                            // Sealed properly, but before any challenge and proof.
                            let sealed = try SealedAnswer(offer: Self.answer(camera), relay: nil)
                                .sealed(to: offered, deviceID: cameraID, requestID: requestID)
                            try await cameraChannel.writeAndFlush(CloudMessage.answer(requestID: requestID, offer: cleartext, sealed: sealed))
                        } else {
                            let (challenge, sealingKey) = try AccessChallenge.make(
                                identity: camera, deviceID: cameraID, requestID: requestID, answerKey: offered)
                            try await cameraChannel.writeAndFlush(CloudMessage.accessChallenge(requestID: requestID, challenge: challenge))
                            guard case .accessChallenge(requestID, let received)? = try await viewerInbound.next() else {
                                Issue.record("the viewer gets the challenge")
                                return
                            }
                            let proof = try await AccessProver(identity: .ephemeral(), credential: .pairedKey)
                                .prove(received, device: cameraID, requestID: requestID, answerKey: key.publicKey).sealed
                            try await viewer.writeAndFlush(CloudMessage.accessProof(requestID: requestID, sealed: proof))
                            guard case .accessProof(requestID, let carried)? = try await cameraInbound.next() else {
                                Issue.record("the camera gets the proof")
                                return
                            }
                            #expect(throws: Never.self) {
                                _ = try AccessProver.open(carried, with: sealingKey, deviceID: cameraID, requestID: requestID)
                            }
                            try await cameraChannel.writeAndFlush(CloudMessage.answer(requestID: requestID, offer: Self.answer(camera)))
                        }
                        guard case .error(requestID, let code, _)? = try await viewerInbound.next() else {
                            Issue.record("the viewer hears an error for \(requestID)")
                            return
                        }
                        #expect(code == CloudError.Code.unavailable.name, "\(requestID)")
                        guard case .error(requestID, CloudError.Code.badRequest.name, _)? = try await cameraInbound.next() else {
                            Issue.record("the camera is told its answer was refused (\(requestID))")
                            return
                        }
                    }
                }
            }
        }
    }
}
