import Foundation
import NIOCore
import NIOPosix
import Rendezvous
import Testing
@testable import Traversal

/// Loopback tests of the cloud: registration, introductions, limits, restarts, TLS trust.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct RendezvousServerTests {
    /// Runs a cloud holding 8 connections, 4 per source, with `deadline` to authenticate, and opens 12
    /// silent TCP connections to it from 127.0.0.2 (a new port each).
    func withIdleAttack(deadline: Duration, _ body: (CloudService, CloudEndpoint, [any Channel]) async throws -> Void) async throws {
        let tuning: (inout RendezvousServer.Configuration) -> Void = {
            $0.maxConnections = 8
            $0.maxConnectionsPerSource = 4
            $0.authenticationTimeout = deadline
        }
        try await withCloud(tuning: tuning) { cloud, endpoint in
            var idle: [any Channel] = []
            for _ in 0..<12 {
                idle.append(try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .bind(to: try SocketAddress(ipAddress: "127.0.0.2", port: 0))
                    .connect(host: "127.0.0.1", port: Int(endpoint.port)).get())
            }
            try await body(cloud, endpoint, idle)
            for c in idle { try? await c.close() }
        }
    }

    @Test func idleConnectionsFromOneSourceDoNotLockOthersOut() async throws {
        try await withIdleAttack(deadline: .seconds(60)) { cloud, endpoint, idle in
            #expect(await eventually(within: .seconds(5)) { idle.filter { !$0.isActive }.count >= 8 },
                    "beyond 4 per source, closed on accept")
            // A camera from 127.0.0.1 still registers while the attacker holds its four slots.
            let identity = DeviceIdentity.generate()
            try await withCamera(identity, endpoint) { camera in
                #expect(await camera.observedAddress != nil)
                #expect(await cloud.rendezvous.registry.lookup(identity.deviceID) != nil)
            }
            #expect(idle.filter(\.isActive).count == 4)
        }
    }

    @Test func silentConnectionsAreClosedAtTheAuthenticationDeadlineButARegisteredCameraStays() async throws {
        try await withIdleAttack(deadline: .milliseconds(800)) { cloud, endpoint, idle in
            let identity = DeviceIdentity.generate()
            try await withCamera(identity, endpoint) { _ in
                #expect(await eventually(within: .seconds(10)) { idle.allSatisfy { !$0.isActive } },
                        "silent connections closed at the authentication deadline")
                try await Task.sleep(for: .milliseconds(1000))
                #expect(await cloud.rendezvous.registry.lookup(identity.deviceID) != nil, "registered: no deadline")
            }
        }
    }

    @Test func cameraRegistersAndLearnsItsObservedAddress() async throws {
        let identity = DeviceIdentity.generate()
        let deviceID = identity.deviceID
        try await withCloud { cloud, endpoint in
            try await withCamera(identity, endpoint) { camera in
                let observed = await camera.observedAddress
                #expect(observed?.hasPrefix("127.0.0.1:") == true)
                let record = await cloud.rendezvous.registry.lookup(deviceID)
                #expect(record?.publicKey == identity.publicKey.rawRepresentation)
            }
        }
    }

    @Test func secondCameraWithoutTheKeyCannotClaimARegisteredUID() async throws {
        let victim = DeviceIdentity.generate()
        let victimID = victim.deviceID
        let attacker = DeviceIdentity.generate()
        try await withCloud { cloud, endpoint in
            try await withCamera(victim, endpoint) { _ in
                let before = try #require(await cloud.rendezvous.registry.lookup(victimID))
                // The attacker's own key, signed properly, claiming the victim's UID.
                let ownKeyReply = try await withRawConnection(endpoint) { channel, inbound in
                    try await rawRegister(attacker, claiming: victimID, endpoint: endpoint, channel: channel, inbound: &inbound)
                }
                guard case .error(_, let code, _)? = ownKeyReply else {
                    Issue.record("expected an error, got \(String(describing: ownKeyReply))")
                    return
                }
                #expect(code == CloudError.Code.unauthorized.name)
                // The victim's public key, but a signature the attacker can only make with its own key.
                let stolenKeyReply = try await withRawConnection(endpoint) { channel, inbound in
                    try await channel.writeAndFlush(CloudMessage.register(
                        deviceID: victimID.description, publicKey: victim.publicKey.rawRepresentation.base64EncodedString()))
                    guard case .challenge(let nonce)? = try await inbound.next() else { return nil as CloudMessage? }
                    let forged = try attacker.signature(for: CloudProtocol.registrationMessage(
                        nonce: Data(base64Encoded: nonce)!, deviceID: victimID.description, cloudName: endpoint.cloudName))
                    try await channel.writeAndFlush(CloudMessage.prove(signature: forged.base64EncodedString()))
                    return try await inbound.next()
                }
                guard case .error(_, let stolenCode, _)? = stolenKeyReply else {
                    Issue.record("expected an error, got \(String(describing: stolenKeyReply))")
                    return
                }
                #expect(stolenCode == CloudError.Code.unauthorized.name)
                let after = await cloud.rendezvous.registry.lookup(victimID)
                #expect(after == before)
            }
        }
    }

    @Test func newSessionOfTheSameKeyReplacesTheOldOne() async throws {
        let identity = DeviceIdentity.generate()
        let deviceID = identity.deviceID
        try await withCloud { cloud, endpoint in
            try await withRawConnection(endpoint) { channel, inbound in
                let reply = try await rawRegister(identity, endpoint: endpoint, channel: channel, inbound: &inbound)
                guard case .registered? = reply else {
                    Issue.record("first session not registered: \(String(describing: reply))")
                    return
                }
                let first = try #require(await cloud.rendezvous.registry.lookup(deviceID))
                try await withCamera(identity, endpoint) { _ in
                    let second = try #require(await cloud.rendezvous.registry.lookup(deviceID))
                    #expect(second.sessionID != first.sessionID)
                    // The old session is told and closed.
                    var closing: [CloudMessage] = []
                    do {
                        while let message = try await inbound.next() { closing.append(message) }
                    } catch {}  // an unclean TLS close is a close too
                    #expect(closing.contains { if case .error(nil, "replaced", _) = $0 { true } else { false } })
                }
            }
        }
    }

    @Test func introductionCarriesOfferAndAnswerAndStartsBothSides() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        let cameraID = cameraIdentity.deviceID
        let viewerIdentity = DeviceIdentity.ephemeral()
        let viewerOffer = sampleOffer(viewerIdentity, address: "198.51.100.7:5000")
        let cameraAnswer = sampleOffer(cameraIdentity, address: "203.0.113.9:6000")
        try await withCloud { _, endpoint in
            try await withCamera(cameraIdentity, endpoint) { camera in
                let viewer = CloudClient.viewer(endpoint: endpoint)
                async let introduction = viewer.introduce(to: cameraID, offer: viewerOffer)
                var incoming = camera.introductions.makeAsyncIterator()
                let offer = try #require(await incoming.next())
                #expect(offer.offer == viewerOffer)
                #expect(offer.relay == nil, "a cloud without a relay issues no grant")
                try await offer.acceptAnyViewer(answer: cameraAnswer)
                let result = try await introduction
                #expect(result.requestID == offer.requestID)
                #expect(result.answer == cameraAnswer)
                #expect(result.answer.identityKey == cameraIdentity.publicKey.rawRepresentation)
            }
        }
    }

    /// The cloud sends the camera's `start` right after its answer, often before the camera's `accept` is back
    /// from sending it: 120 introductions, 8 at a time while other tasks keep the cores busy, all start.
    @Test func everyAnsweredIntroductionStartsEvenWhenStartOvertakesTheAnswer() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        let cameraID = cameraIdentity.deviceID
        let viewerIdentity = DeviceIdentity.ephemeral()
        let rounds = 15, concurrent = 8
        try await withCloud(tuning: { $0.lookupRateLimit = .init(capacity: 1000, refillInterval: .milliseconds(1)) }) { _, endpoint in
            try await withCamera(cameraIdentity, endpoint) { camera in
                // The camera's side: each accept returns at its `start`, or throws `timeout` after 10 s if it was lost.
                let answering = Task {
                    await withTaskGroup(of: Bool.self) { group in
                        var offers = camera.introductions.makeAsyncIterator()
                        for _ in 0..<rounds * concurrent {
                            guard let offer = await offers.next() else { break }
                            group.addTask { (try? await offer.acceptAnyViewer(answer: sampleOffer(cameraIdentity))) != nil }
                        }
                        return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
                    }
                }
                defer { answering.cancel() }
                let load = Task.detached {
                    // Busy work on every core, bounded in time: the hand-off must not depend on scheduling luck.
                    let until = ContinuousClock.now + .seconds(20)
                    await withTaskGroup(of: Void.self) { group in
                        for _ in 0..<4 {
                            group.addTask {
                                var x = 0
                                while ContinuousClock.now < until, !Task.isCancelled {
                                    for i in 0..<10_000 { x &+= i }
                                    await Task.yield()
                                }
                                _ = x
                            }
                        }
                    }
                }
                defer { load.cancel() }
                let viewer = CloudClient.viewer(endpoint: endpoint)
                var started = 0, failed: [String] = []
                for _ in 0..<rounds {
                    await withTaskGroup(of: String?.self) { group in
                        for _ in 0..<concurrent {
                            group.addTask {
                                do {
                                    _ = try await viewer.introduce(to: cameraID, offer: sampleOffer(viewerIdentity))
                                    return nil
                                } catch {
                                    return "\(error)"
                                }
                            }
                        }
                        for await outcome in group {
                            if let outcome { failed.append(outcome) } else { started += 1 }
                        }
                    }
                }
                #expect(started == rounds * concurrent, "failed: \(failed.prefix(3))")
                #expect(await answering.value == rounds * concurrent, "every camera-side accept saw its start")
            }
        }
    }

    @Test func aViewerFromAnotherSiteIsNotShownTheCamerasLANAddresses() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        let cameraID = cameraIdentity.deviceID
        let answer = PeerOffer(
            identityKey: cameraIdentity.publicKey.rawRepresentation,
            candidates: [Candidate(strategy: "direct-lan", kind: .host, address: "10.0.0.5:4000"),
                         Candidate(strategy: "udp-hole-punch", kind: .serverReflexive, address: "203.0.113.9:6000")],
            strategies: ["direct-lan", "udp-hole-punch"])
        try await withCloud { _, endpoint in
            try await withCamera(cameraIdentity, endpoint) { camera in
                let answering = Task {
                    var offers = camera.introductions.makeAsyncIterator()
                    for _ in 0..<2 { try await offers.next()?.acceptAnyViewer(answer: answer) }
                }
                defer { answering.cancel() }
                func shown(from source: String) async throws -> [Candidate.Kind]? {
                    try await withRawConnection(endpoint, from: source) { channel, inbound in
                        let requestID = "from-" + source.replacingOccurrences(of: ".", with: "-")
                        let (key, _) = makeAnswerKey()
                        guard case .start(_, nil, nil, let sealed?)? = try await rawIntroduce(
                            cameraID, requestID: requestID, key: key, channel: channel, inbound: &inbound) else { return nil }
                        let answer = try SealedAnswer.open(sealed, with: key, deviceID: cameraID, requestID: requestID)
                        return answer.offer.candidates.map(\.kind)
                    }
                }
                let elsewhere = try await shown(from: "127.0.0.2")
                let onSite = try await shown(from: "127.0.0.1")
                #expect(elsewhere == [.serverReflexive], "another site: no LAN address")
                #expect(onSite == [.host, .serverReflexive], "the camera's own site: all of them")
            }
        }
    }

    @Test func introductionCarriesOneShortLivedRelayGrantToBothSides() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        let cameraID = cameraIdentity.deviceID
        let viewerIdentity = DeviceIdentity.ephemeral()
        let relay = CloudService.RelayConfiguration(port: 0, tlsPort: 0, grantLifetime: .seconds(600))
        try await withCloud(relay: relay) { cloud, endpoint in
            let server = try #require(cloud.relay)
            try await withCamera(cameraIdentity, endpoint) { camera in
                let before = Int(Date().timeIntervalSince1970)
                async let introduction = CloudClient.viewer(endpoint: endpoint).introduce(to: cameraID, offer: sampleOffer(viewerIdentity))
                var incoming = camera.introductions.makeAsyncIterator()
                let offer = try #require(await incoming.next())
                let grant = try #require(offer.relay, "the camera gets the grant with the offer")
                try await offer.acceptAnyViewer(answer: sampleOffer(cameraIdentity))
                let result = try await introduction
                #expect(result.relay == grant, "the viewer gets the same grant with start")
                #expect(grant.username == "\(grant.expires):\(offer.requestID)")
                #expect((before + 600...before + 602).contains(grant.expires))
                #expect(grant.urls.contains("turn:\(server.udpAddress)?transport=udp"))
                #expect(grant.urls.contains("turns:\(server.tlsAddress!)"))
            }
        }
    }

    @Test func unknownAndOfflineDevicesGiveTheIdenticalError() async throws {
        let offline = DeviceIdentity.generate()
        let offlineID = offline.deviceID
        let unknownID = DeviceIdentity.generate().deviceID
        let viewerIdentity = DeviceIdentity.ephemeral()
        try await withCloud { cloud, endpoint in
            try await withCamera(offline, endpoint) { _ in }
            #expect(await eventually(within: .seconds(10)) { await cloud.rendezvous.registry.lookup(offlineID) == nil })
            let viewer = CloudClient.viewer(endpoint: endpoint)
            let unknownError = await #expect(throws: CloudError.self) {
                try await viewer.introduce(to: unknownID, offer: sampleOffer(viewerIdentity))
            }
            let offlineError = await #expect(throws: CloudError.self) {
                try await viewer.introduce(to: offlineID, offer: sampleOffer(viewerIdentity))
            }
            #expect(unknownError?.code == .unavailable)
            #expect(unknownError == offlineError)
        }
    }

    @Test func declinedIntroductionLooksLikeAnUnknownDevice() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        let cameraID = cameraIdentity.deviceID
        let viewerIdentity = DeviceIdentity.ephemeral()
        try await withCloud { _, endpoint in
            let viewer = CloudClient.viewer(endpoint: endpoint)
            let unknownError = await #expect(throws: CloudError.self) {
                try await viewer.introduce(to: DeviceIdentity.generate().deviceID, offer: sampleOffer(viewerIdentity))
            }
            try await withCamera(cameraIdentity, endpoint) { camera in
                let decliner = Task {
                    var incoming = camera.introductions.makeAsyncIterator()
                    await incoming.next()?.decline()
                }
                defer { decliner.cancel() }
                let declinedError = await #expect(throws: CloudError.self) {
                    try await viewer.introduce(to: cameraID, offer: sampleOffer(viewerIdentity))
                }
                await decliner.value
                #expect(declinedError == unknownError)
            }
        }
    }

    @Test func lookUpsAreRateLimitedPerSourceAddress() async throws {
        let viewerIdentity = DeviceIdentity.ephemeral()
        let target = DeviceIdentity.generate().deviceID
        try await withCloud(tuning: { $0.lookupRateLimit = .init(capacity: 3, refillInterval: .seconds(60)) }) { _, endpoint in
            let viewer = CloudClient.viewer(endpoint: endpoint)
            var codes: [CloudError.Code] = []
            for _ in 0..<4 {
                do {
                    _ = try await viewer.introduce(to: target, offer: sampleOffer(viewerIdentity))
                } catch let error as CloudError {
                    codes.append(error.code)
                }
            }
            #expect(codes == [.unavailable, .unavailable, .unavailable, .rateLimited])
        }
    }

    @Test func unansweredIntroductionTimesOut() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        let cameraID = cameraIdentity.deviceID
        try await withCloud(tuning: { $0.introductionTimeout = .milliseconds(300) }) { _, endpoint in
            try await withCamera(cameraIdentity, endpoint) { _ in
                let error = await #expect(throws: CloudError.self) {
                    try await CloudClient.viewer(endpoint: endpoint)
                        .introduce(to: cameraID, offer: sampleOffer(DeviceIdentity.ephemeral()))
                }
                #expect(error?.code == .timeout)
            }
        }
    }

    @Test(arguments: [
        [0xFF, 0xFF, 0xFF, 0xFF] as [UInt8],                                   // length far above the maximum
        [0x00, 0x01, 0x00, 0x01] + [UInt8](repeating: 0x7B, count: 16),        // 64 KiB + 1, announced
        [0x00, 0x00, 0x00, 0x05] + Array("hello".utf8),                        // not JSON
        [0x00, 0x00, 0x00, 0x10] + Array(#"{"type":"nope"}"#.utf8) + [0x20],   // unknown type
    ])
    func malformedOrOversizeFrameClosesTheConnection(frame: [UInt8]) async throws {
        let identity = DeviceIdentity.generate()
        try await withCloud { _, endpoint in
            let closed = try await withRawTLS(endpoint) { inbound, outbound in
                try await outbound.write(ByteBuffer(bytes: frame))
                var iterator = inbound.makeAsyncIterator()
                do {
                    while try await iterator.next() != nil {}
                } catch {}
                return true
            }
            #expect(closed)
            // The server carries on.
            try await withCamera(identity, endpoint) { camera in
                #expect(await camera.observedAddress != nil)
            }
        }
    }

    @Test func invalidFieldIsRefusedWithBadRequest() async throws {
        let viewerIdentity = DeviceIdentity.ephemeral()
        var offer = sampleOffer(viewerIdentity)
        offer.candidates = Array(repeating: offer.candidates[0], count: PeerOffer.maxCandidates + 1)
        try await withCloud { _, endpoint in
            let reply = try await withRawConnection(endpoint) { channel, inbound in
                try await channel.writeAndFlush(CloudMessage.introduce(
                    requestID: "r1", deviceID: DeviceIdentity.generate().deviceID.description, offer: offer))
                return try await inbound.next()
            }
            guard case .error(nil, let code, _)? = reply else {
                Issue.record("expected bad-request, got \(String(describing: reply))")
                return
            }
            #expect(code == CloudError.Code.badRequest.name)
        }
    }

    @Test func cameraIsRegisteredAgainWithinFiveSecondsOfACloudRestart() async throws {
        let identity = DeviceIdentity.generate()
        let deviceID = identity.deviceID
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try await CloudService.start(
            .init(listenIP: "127.0.0.1", dataDirectory: directory, stunPort: 0, tlsPort: 0), logger: quietLogger)
        let port = first.rendezvous.address.port
        let camera: any CameraSignalling
        do {
            camera = try await CloudClient.camera(identity: identity, endpoint: try endpoint(of: first), logger: quietLogger)
        } catch {
            await first.stop()
            throw error
        }
        await first.stop()
        do {
            try await withCloud(directory: directory, tlsPort: port) { second, _ in
                let restarted = ContinuousClock.now
                let registered = await eventually(within: .seconds(5)) {
                    await second.rendezvous.registry.lookup(deviceID) != nil
                }
                #expect(registered, "not registered again after \(ContinuousClock.now - restarted)")
            }
        } catch {
            await camera.stop()
            throw error
        }
        await camera.stop()
    }

    @Test func cloudCertificatesAreReusedAcrossStarts() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try CloudCertificates.loadOrCreate(in: directory, names: ["127.0.0.1", "localhost"])
        let ca = try String(contentsOfFile: first.caPath, encoding: .utf8)
        let server = try String(contentsOfFile: first.certificatePath, encoding: .utf8)
        let second = try CloudCertificates.loadOrCreate(in: directory, names: ["127.0.0.1", "localhost"])
        #expect(try String(contentsOfFile: second.caPath, encoding: .utf8) == ca)
        #expect(try String(contentsOfFile: second.certificatePath, encoding: .utf8) == server)
        let keyMode = try FileManager.default.attributesOfItem(atPath: second.privateKeyPath)[.posixPermissions] as? Int
        #expect(keyMode == 0o600)
        let caKeyMode = try FileManager.default.attributesOfItem(atPath: directory + "/ca-key.pem")[.posixPermissions] as? Int
        #expect(caKeyMode == 0o600)
    }

    @Test func tlsWithTheWrongCAFails() async throws {
        let otherDirectory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: otherDirectory) }
        let other = try CloudCertificates.loadOrCreate(in: otherDirectory, names: ["127.0.0.1"])
        let wrongCA = try String(contentsOfFile: other.caPath, encoding: .utf8)
        try await withCloud { _, endpoint in
            var wrong = endpoint
            wrong.trust = .pinnedCA(wrongCA)
            let error = await #expect(throws: CloudError.self) {
                _ = try await CloudClient.camera(identity: .generate(), endpoint: wrong)
            }
            #expect(error?.code == .tlsFailed)
        }
    }
}
