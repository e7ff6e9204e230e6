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
/// hears of the question. With one, unknown and offline are still the same; the online camera's
/// answer comes back only sealed to that key: no address and no relay grant in clear, and it opens
/// with no other key (README "Limits under attack").
@Suite(.serialized, .timeLimit(.minutes(2)))
struct EnumerationTests {
    let relay = CloudService.RelayConfiguration(port: 0, tlsPort: 0, grantLifetime: .seconds(600))

    /// The camera's answer: one LAN and one public address, both distinctive in the bytes.
    static func answer(_ camera: DeviceIdentity) -> PeerOffer {
        PeerOffer(
            identityKey: camera.publicKey.rawRepresentation,
            candidates: [Candidate(strategy: "direct-lan", kind: .host, address: "10.77.66.55:4711"),
                         Candidate(strategy: "udp-hole-punch", kind: .serverReflexive, address: "203.0.113.77:6711")],
            strategies: ["direct-lan", "udp-hole-punch"])
    }

    /// The message the attacker's connection receives for one introduction, as JSON with sorted keys and
    /// its request ID replaced by `R`, and the message itself.
    func ask(_ device: DeviceID, requestID: String, answerKey: String?, endpoint: CloudEndpoint) async throws -> (String, CloudMessage?) {
        try await withRawConnection(endpoint, from: "127.0.0.2") { channel, inbound in
            try await channel.writeAndFlush(CloudMessage.introduce(
                requestID: requestID, deviceID: device.description, offer: sampleOffer(DeviceIdentity.ephemeral()), answerKey: answerKey))
            let reply = try await inbound.next()
            // Keys sorted: the encoder's own key order varies from message to message whatever the UID.
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            let wire = try reply.map { String(decoding: try encoder.encode($0), as: UTF8.self) } ?? "closed"
            return (wire.replacingOccurrences(of: requestID, with: "R"), reply)
        }
    }

    @Test func anAskerWithoutCredentialsCannotTellOnlineOfflineAndUnknownApartNorLearnAddressesOrGrants() async throws {
        let online = DeviceIdentity.generate()
        let offline = DeviceIdentity.generate()
        // Each UID derivation is a scrypt: once each.
        let (onlineID, offlineID, unknown) = (online.deviceID, offline.deviceID, DeviceIdentity.generate().deviceID)
        try await withCloud(relay: relay) { cloud, endpoint in
            try await withCamera(offline, endpoint) { _ in }
            #expect(await eventually(within: .seconds(10)) { await cloud.rendezvous.registry.lookup(offlineID) == nil })
            try await withCamera(online, endpoint) { camera in
                let offersSeen = Mutex(0)
                let grantSeen = Mutex<RelayGrant?>(nil)
                let answering = Task {
                    for await intro in camera.introductions {
                        offersSeen.withLock { $0 += 1 }
                        grantSeen.withLock { $0 = intro.relay }
                        try? await intro.accept(answer: Self.answer(online))
                    }
                }
                defer { answering.cancel() }

                // 1. No answer key: the same bytes for all three, and the camera hears nothing.
                var bare: [String] = []
                for (i, device) in [onlineID, offlineID, unknown].enumerated() {
                    bare.append(try await ask(device, requestID: "bare-\(i)", answerKey: nil, endpoint: endpoint).0)
                }
                #expect(bare[0].contains(CloudError.Code.unavailable.name), "\(bare[0])")
                #expect(Set(bare).count == 1, "online, offline and unknown answered alike: \(bare)")
                #expect(offersSeen.withLock { $0 } == 0, "the camera never saw a question without an answer key")

                // 2. With an answer key: unknown and offline alike; online answers, sealed.
                let (key, answerKey) = makeAnswerKey()
                let offlineReply = try await ask(offlineID, requestID: "keyed-0", answerKey: answerKey, endpoint: endpoint).0
                let unknownReply = try await ask(unknown, requestID: "keyed-1", answerKey: answerKey, endpoint: endpoint).0
                #expect(offlineReply == unknownReply)
                #expect(offlineReply == bare[0], "the same error as without a key")
                let (wire, reply) = try await ask(onlineID, requestID: "keyed-2", answerKey: answerKey, endpoint: endpoint)
                guard case .start(_, let clearAnswer, let clearRelay, let sealed?)? = reply else {
                    Issue.record("the online camera answers with a sealed start, got \(wire)")
                    return
                }
                #expect(clearAnswer == nil && clearRelay == nil, "nothing in clear beside the sealed answer")
                let grant = try #require(grantSeen.withLock { $0 }, "the camera got a grant with the offer")
                for secret in ["10.77.66.55", "203.0.113.77", "4711", "6711", grant.username, grant.password, "turn:", "turns:"] {
                    #expect(!wire.contains(secret), "\(secret) appears in clear in \(wire)")
                }
                // Only the key's holder opens it: not the cloud, not another asker, not for another request.
                #expect(throws: CloudProtocolError.self) {
                    try SealedAnswer.open(sealed, with: Curve25519.KeyAgreement.PrivateKey(), deviceID: onlineID, requestID: "keyed-2")
                }
                #expect(throws: CloudProtocolError.self) {
                    try SealedAnswer.open(sealed, with: key, deviceID: onlineID, requestID: "keyed-3")
                }
                let opened = try SealedAnswer.open(sealed, with: key, deviceID: onlineID, requestID: "keyed-2")
                #expect(opened.relay == grant, "the grant travels inside")
                #expect(opened.offer.candidates.map(\.address) == ["203.0.113.77:6711"],
                        "an asker from another site never sees the camera's LAN address")
                #expect(offersSeen.withLock { $0 } == 1, "the camera answered only the question that carried a key")
            }
        }
    }

    @Test func anAnswerWithCandidatesInClearIsRefusedAndTheViewerHearsUnavailable() async throws {
        let camera = DeviceIdentity.generate()
        let cameraID = camera.deviceID
        try await withCloud { _, endpoint in
            try await withRawConnection(endpoint) { cameraChannel, cameraInbound in
                guard case .registered? = try await rawRegister(camera, endpoint: endpoint, channel: cameraChannel, inbound: &cameraInbound)
                else { Issue.record("camera not registered"); return }
                try await withRawConnection(endpoint, from: "127.0.0.2") { viewer, viewerInbound in
                    try await viewer.writeAndFlush(CloudMessage.introduce(
                        requestID: "r1", deviceID: cameraID.description, offer: sampleOffer(DeviceIdentity.ephemeral()),
                        answerKey: sampleAnswerKey()))
                    guard case .offer("r1", _, _, _, _?)? = try await cameraInbound.next() else {
                        Issue.record("the camera gets the offer with the answer key")
                        return
                    }
                    // A camera (or a bug) answering in clear: the cloud forwards none of it.
                    try await cameraChannel.writeAndFlush(CloudMessage.answer(requestID: "r1", offer: Self.answer(camera)))
                    guard case .error("r1", let code, _)? = try await viewerInbound.next() else {
                        Issue.record("the viewer hears an error")
                        return
                    }
                    #expect(code == CloudError.Code.unavailable.name)
                }
            }
        }
    }
}
