import Foundation
import NIOCore
import Rendezvous
import Testing
@testable import Traversal

/// The relay-grant and pending-introduction floods over loopback: one requester introducing itself
/// again and again to a camera that never answers is refused past its bounds while another
/// requester and another camera are still served; what an introduction held is freed when it ends.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct IntroductionBoundsTests {
    typealias Inbound = NIOAsyncChannelInboundStream<CloudMessage>.AsyncIterator

    let relay = CloudService.RelayConfiguration(port: 0, tlsPort: 0, grantLifetime: .seconds(600))
    let tuning: (inout RendezvousServer.Configuration) -> Void = {
        $0.lookupRateLimit = .init(capacity: 1000, refillInterval: .milliseconds(1))
        $0.maxPendingIntroductionsPerRequester = 4
        $0.maxPendingIntroductionsPerCamera = 6
        $0.maxRelayGrantsPerRequester = 6
    }

    /// Sends an introduction to `device` with a fresh viewer key and answer key.
    func introduce(_ requestID: String, to device: DeviceID, on channel: any Channel) async throws {
        try await channel.writeAndFlush(CloudMessage.introduce(
            requestID: requestID, deviceID: device.description, offer: sampleOffer(DeviceIdentity.ephemeral()),
            answerKey: sampleAnswerKey()))
    }

    /// The next message, which must be an offer (with a grant); returns its request ID.
    func nextOffer(_ inbound: inout Inbound) async throws -> String? {
        guard case .offer(let requestID, _, let relay, _, _, _)? = try await inbound.next() else { return nil }
        #expect(relay != nil, "a cloud with a relay grants one per introduction")
        return requestID
    }

    /// The next message's error code for `requestID`, if it is an error.
    func nextError(_ inbound: inout Inbound) async throws -> (String?, String)? {
        guard case .error(let requestID, let code, _)? = try await inbound.next() else { return nil }
        return (requestID, code)
    }

    @Test func oneRequesterFloodingOneCameraIsRefusedWhileOthersAreServedAndEndingFreesTheBounds() async throws {
        let camera = DeviceIdentity.generate()
        let other = DeviceIdentity.generate()
        try await withCloud(relay: relay, tuning: tuning) { _, endpoint in
            try await withRawConnection(endpoint) { cameraChannel, cameraInbound in
                guard case .registered? = try await rawRegister(camera, endpoint: endpoint, channel: cameraChannel, inbound: &cameraInbound)
                else { Issue.record("camera not registered"); return }
                try await withRawConnection(endpoint) { otherChannel, otherInbound in
                    guard case .registered? = try await rawRegister(other, endpoint: endpoint, channel: otherChannel, inbound: &otherInbound)
                    else { Issue.record("second camera not registered"); return }
                    try await withRawConnection(endpoint, from: "127.0.0.1") { attacker, attackerInbound in
                        // The attacker: 5 introductions, never answered. Four reach the camera, the fifth is refused.
                        for i in 0..<5 { try await introduce("a\(i)", to: camera.deviceID, on: attacker) }
                        for i in 0..<4 { #expect(try await nextOffer(&cameraInbound) == "a\(i)") }
                        let refused = try await nextError(&attackerInbound)
                        #expect(refused?.0 == "a4" && refused?.1 == CloudError.Code.overloaded.name)

                        try await withRawConnection(endpoint, from: "127.0.0.2") { neighbour, neighbourInbound in
                            // Another requester is served until the camera's own bound (6 pending) …
                            for i in 0..<2 {
                                try await introduce("n\(i)", to: camera.deviceID, on: neighbour)
                                #expect(try await nextOffer(&cameraInbound) == "n\(i)")
                            }
                            try await introduce("n2", to: camera.deviceID, on: neighbour)
                            let full = try await nextError(&neighbourInbound)
                            #expect(full?.0 == "n2" && full?.1 == CloudError.Code.unavailable.name,
                                    "a camera at its bound looks like an unknown one")
                            // … and another camera is still reached.
                            try await introduce("n3", to: other.deviceID, on: neighbour)
                            #expect(try await nextOffer(&otherInbound) == "n3")
                        }

                        // Declined: the attacker's pending introductions and grants are freed.
                        for i in 0..<4 { try await cameraChannel.writeAndFlush(CloudMessage.decline(requestID: "a\(i)")) }
                        for _ in 0..<4 { #expect(try await nextError(&attackerInbound)?.1 == CloudError.Code.unavailable.name) }
                        // The neighbour's connection closed: its two pending introductions ended with it.
                        // Started introductions keep their grants: six answered, the seventh is refused.
                        for i in 5..<11 {
                            try await introduce("a\(i)", to: camera.deviceID, on: attacker)
                            #expect(try await nextOffer(&cameraInbound) == "a\(i)")
                            // The access exchange as the cloud sees it (it checks the key and the order, not the crypto).
                            try await cameraChannel.writeAndFlush(CloudMessage.accessChallenge(requestID: "a\(i)", challenge: AccessChallenge(
                                identityKey: camera.publicKey.rawRepresentation.base64EncodedString(), sealingKey: sampleAnswerKey(),
                                signature: Data(count: CloudProtocol.signatureLength).base64EncodedString())))
                            guard case .accessChallenge? = try await attackerInbound.next() else {
                                Issue.record("a\(i) should be challenged")
                                return
                            }
                            try await attacker.writeAndFlush(CloudMessage.accessProof(requestID: "a\(i)", sealed: "c2VhbGVk"))
                            guard case .accessProof? = try await cameraInbound.next() else {
                                Issue.record("the camera should get the proof for a\(i)")
                                return
                            }
                            try await cameraChannel.writeAndFlush(CloudMessage.answer(
                                requestID: "a\(i)", offer: PeerOffer(identityKey: camera.publicKey.rawRepresentation, candidates: [], strategies: []),
                                sealed: "c2VhbGVk"))
                            guard case .start? = try await attackerInbound.next() else {
                                Issue.record("a\(i) should start")
                                return
                            }
                            guard case .start? = try await cameraInbound.next() else {
                                Issue.record("the camera should get start for a\(i)")
                                return
                            }
                        }
                        try await introduce("a11", to: camera.deviceID, on: attacker)
                        let noGrant = try await nextError(&attackerInbound)
                        #expect(noGrant?.0 == "a11" && noGrant?.1 == CloudError.Code.overloaded.name,
                                "six live relay grants: no seventh for this requester")
                    }
                }
            }
        }
    }
}
