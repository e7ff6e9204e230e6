import Crypto
import Foundation
import NIOCore
import SourceLimits
import Testing
@testable import Rendezvous
@testable import Traversal

/// Deposited access keys end to end on loopback: a real cloud and a real camera session (`CloudClient.camera`); the
/// browser's side is played on the hub, as the viewer page server does (`located`'s deposit, a `watch` carrying the proof).
@Suite(.serialized, .timeLimit(.minutes(1)))
struct AccessDepositLoopbackTests {
    static let source = SourceAddressKey(ipv4: 0x7F00_0001)

    /// A browser as the hub sees it, whose messages land in a stream.
    static func browser() -> (RendezvousPeer, AsyncStream<CloudMessage>) {
        let (stream, sink) = AsyncStream.makeStream(of: CloudMessage.self)
        let peer = RendezvousPeer(remote: .init(node: "browser", deliver: { message, _ in sink.yield(message) }),
                                  source: source, observedAddress: "127.0.0.1:1", requesterIP: "127.0.0.1")
        return (peer, stream)
    }

    /// A browser's offer (its SDP marks it as one; the camera here answers anyone).
    static let offer = PeerOffer(identityKey: Data(count: 32), candidates: [], strategies: [], sessionDescription: "v=0\r\n")

    @Test func aDepositedProofIsAnsweredAtOnceAndAReplayOrAnUnknownKeyGetsALiveChallenge() async throws {
        try await withCloud { cloud, endpoint in
            let camera = DeviceIdentity.generate()
            let hub = cloud.rendezvous.hub
            try await withCamera(camera, endpoint, accessDeposits: AccessDepositStock.Limits()) { signalling in
                let serving = Task {
                    for await intro in signalling.introductions {
                        Task { try? await intro.acceptAnyViewer(answer: sampleOffer(camera)) }
                    }
                }
                defer { serving.cancel() }
                // The camera deposits its stock right after registering.
                #expect(await eventually(within: .seconds(5)) { await hub.heldDeposits(of: camera.deviceID) == AccessDepositStock.Limits().capacity })
                let located = try #require(await hub.registeredKey(of: camera.deviceID, for: Self.source))
                #expect(located.key == camera.publicKey.rawRepresentation)
                let deposit = try #require(located.deposit, "a look-up hands out a deposit")
                #expect(await hub.heldDeposits(of: camera.deviceID) == AccessDepositStock.Limits().capacity - 1, "handed out once: removed")

                let (answerKey, answerText) = makeAnswerKey()
                let prover = AccessProver(identity: .ephemeral(), credential: .pairedKey)
                let now = Int(Date().timeIntervalSince1970)
                let proof = try await prover.prove(deposit: deposit, cameraKey: camera.publicKey, device: camera.deviceID, requestID: "d1",
                                                   answerKey: answerKey.publicKey, now: now)
                let (page, messages) = Self.browser()
                var inbox = messages.makeAsyncIterator()
                await hub.introduce(from: page, requestID: "d1", deviceID: camera.deviceID, offer: Self.offer, answerKey: answerText,
                                    deposited: proof)
                // No challenge: the camera's sealed answer is the first thing the page hears.
                guard case .start("d1", _, _, let sealed?)? = await inbox.next() else {
                    Issue.record("the deposited proof is answered without a challenge")
                    return
                }
                let answer = try SealedAnswer.open(sealed, with: answerKey, deviceID: camera.deviceID, requestID: "d1")
                #expect(answer.offer.identityKey == camera.publicKey.rawRepresentation)

                // The same deposit again (a replay into another introduction, with its own request and answer key): not
                // accepted; the camera challenges, and the page proves live.
                for (requestID, deposited) in [("d2", proof), ("d3", try await Self.unknownDeposit(camera, prover, answerKey))] {
                    await hub.introduce(from: page, requestID: requestID, deviceID: camera.deviceID, offer: Self.offer, answerKey: answerText,
                                        deposited: deposited)
                    guard case .accessChallenge(requestID, let challenge)? = await inbox.next() else {
                        Issue.record("\(requestID): a live challenge")
                        return
                    }
                    let live = try await prover.prove(challenge, device: camera.deviceID, requestID: requestID, answerKey: answerKey.publicKey)
                    await hub.accessProof(from: page, requestID: requestID, sealed: live.sealed)
                    guard case .start(requestID, _, _, .some)? = await inbox.next() else {
                        Issue.record("\(requestID): answered after the live proof")
                        return
                    }
                }
            }
        }
    }

    /// A proof sealed to a deposit the camera never made (signed by its key: as after a restart that lost its stock).
    static func unknownDeposit(_ camera: DeviceIdentity, _ prover: AccessProver,
                               _ answerKey: Curve25519.KeyAgreement.PrivateKey) async throws -> DepositedProof {
        let now = Int(Date().timeIntervalSince1970)
        let (deposit, _) = try AccessDeposit.make(identity: camera, deviceID: camera.deviceID, expires: now + 600)
        return try await prover.prove(deposit: deposit, cameraKey: camera.publicKey, device: camera.deviceID, requestID: "d3",
                                      answerKey: answerKey.publicKey, now: now)
    }

    @Test func depositsNotSignedByTheRegisteredKeyAreRefusedWithATypedError() async throws {
        try await withCloud { cloud, endpoint in
            let camera = DeviceIdentity.generate()
            try await withRawConnection(endpoint) { channel, inbound in
                guard case .registered? = try await rawRegister(camera, endpoint: endpoint, channel: channel, inbound: &inbound) else {
                    Issue.record("registered")
                    return
                }
                let now = Int(Date().timeIntervalSince1970)
                let good = try AccessDeposit.make(identity: camera, deviceID: camera.deviceID, expires: now + 600).deposit
                let forged = try AccessDeposit.make(identity: .generate(), deviceID: camera.deviceID, expires: now + 600).deposit
                try await channel.writeAndFlush(CloudMessage.deposit(deposits: [good, forged]))
                guard case .error(nil, let code, let message)? = try await inbound.next() else {
                    Issue.record("an error for the forged deposit")
                    return
                }
                #expect(code == CloudError.Code.badRequest.name && message.hasPrefix("1 of 2"), "\(message)")
                #expect(await cloud.rendezvous.hub.heldDeposits(of: camera.deviceID) == 1, "the good one is kept")
            }
        }
    }
}
