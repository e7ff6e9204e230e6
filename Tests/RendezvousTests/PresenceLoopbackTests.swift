import Foundation
import Testing
import Synchronization
@testable import Rendezvous
@testable import Traversal

/// UDP presence over loopback sockets: a camera drops TLS and stays registered over UDP, a viewer's
/// introduction wakes it back onto TLS, and a camera that stops its keepalives goes offline.
@Suite(.serialized) struct PresenceLoopbackTests {
    /// Records what ``CloudCameraSession`` reports through `onPresence`.
    final class PresenceLog: Sendable {
        private let events = Mutex<[Bool]>([])
        func record(_ overUDP: Bool) { events.withLock { $0.append(overUDP) } }
        var all: [Bool] { events.withLock { $0 } }
    }

    /// A camera session with a short linger, stopped after `body`.
    func withPresenceCamera<T>(
        _ identity: DeviceIdentity, _ endpoint: CloudEndpoint, usePresence: Bool = true,
        _ body: (CloudCameraSession, PresenceLog) async throws -> T
    ) async throws -> T {
        let log = PresenceLog()
        let camera = CloudCameraSession(
            identity: identity, endpoint: endpoint, logger: quietLogger, usePresence: usePresence,
            presenceLinger: .milliseconds(300), onPresence: { log.record($0) })
        try await camera.start()
        do {
            let result = try await body(camera, log)
            await camera.stop()
            return result
        } catch {
            await camera.stop()
            throw error
        }
    }

    @Test func cameraDropsTLSStaysRegisteredAndIsWokenForAViewer() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        let viewerOffer = sampleOffer(DeviceIdentity.ephemeral(), address: "198.51.100.7:5000")
        let cameraAnswer = sampleOffer(cameraIdentity, address: "203.0.113.9:6000")
        try await withCloud { cloud, endpoint in
            try await withPresenceCamera(cameraIdentity, endpoint) { camera, log in
                #expect(await eventually(within: .seconds(15)) { log.all == [true] }, "presence events \(log.all)")
                #expect(await eventually(within: .seconds(5)) { await cloud.rendezvous.signallingConnections == 0 },
                        "the camera holds no TLS connection")
                #expect(await cloud.rendezvous.registeredCameras == (1, 1))
                let viewer = CloudClient.viewer(endpoint: endpoint)
                async let introduction = viewer.introduce(to: cameraIdentity.deviceID, offer: viewerOffer)
                var incoming = camera.introductions.makeAsyncIterator()
                let offer = try #require(await incoming.next())
                #expect(offer.offer == viewerOffer)
                try await offer.acceptAnyViewer(answer: cameraAnswer)
                let result = try await introduction
                #expect(result.answer == cameraAnswer)
                #expect(log.all.starts(with: [true, false]), "woken back onto TLS: \(log.all)")
                // Idle again, it goes back to UDP presence.
                #expect(await eventually(within: .seconds(15)) { log.all == [true, false, true] }, "presence events \(log.all)")
            }
        }
    }

    @Test func withoutPresenceTheCameraKeepsTLS() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        try await withCloud { cloud, endpoint in
            try await withPresenceCamera(cameraIdentity, endpoint, usePresence: false) { _, log in
                try await Task.sleep(for: .seconds(2))
                #expect(log.all.isEmpty)
                #expect(await cloud.rendezvous.signallingConnections == 1)
                #expect(await cloud.rendezvous.registeredCameras == (1, 0))
            }
        }
    }

    @Test func aCloudWithoutPresenceKeepsEveryCameraOnTLS() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        try await withCloud(tuning: { $0.presence = nil }) { cloud, endpoint in
            try await withPresenceCamera(cameraIdentity, endpoint) { _, log in
                try await Task.sleep(for: .seconds(2))
                #expect(log.all.isEmpty)
                #expect(await cloud.rendezvous.signallingConnections == 1)
                #expect(cloud.rendezvous.presenceAddress == nil)
            }
        }
    }

    @Test func aCameraPresentOverUDPThatFallsSilentGoesOffline() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        try await withCloud(tuning: { $0.presence = .init(keepaliveSeconds: 1, timeout: .seconds(3)) }) { cloud, endpoint in
            try await withPresenceCamera(cameraIdentity, endpoint) { camera, log in
                #expect(await eventually(within: .seconds(15)) { log.all == [true] }, "presence events \(log.all)")
                // Stopped, the camera sends no more keepalives (and, as a camera that lost power, says nothing).
                await camera.stop()
                #expect(await eventually(within: .seconds(10)) { await cloud.rendezvous.registeredCameras == (0, 0) })
                let viewer = CloudClient.viewer(endpoint: endpoint)
                await #expect(throws: CloudError.self) {
                    _ = try await viewer.introduce(to: cameraIdentity.deviceID, offer: sampleOffer(DeviceIdentity.ephemeral()))
                }
            }
        }
    }

    @Test func aCameraPresentOverUDPAloneIsToldWhenTheCloudShutsDown() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        try await withCloud { cloud, endpoint in
            try await withPresenceCamera(cameraIdentity, endpoint) { camera, log in
                #expect(await eventually(within: .seconds(15)) { log.all == [true] }, "presence events \(log.all)")
                #expect(await eventually(within: .seconds(5)) { await cloud.rendezvous.signallingConnections == 0 },
                        "the camera holds no TLS connection")
                await cloud.rendezvous.stop()
                // Keepalives are 20 s apart and the liveness timeout 45 s: what ends the presence here is the goAway.
                let event = await withTaskGroup(of: CloudConnectionEvent?.self) { group in
                    group.addTask {
                        var events = camera.connectionEvents.makeAsyncIterator()
                        return await events.next()
                    }
                    group.addTask {
                        try? await Task.sleep(for: .seconds(15))
                        return nil
                    }
                    defer { group.cancelAll() }
                    return await group.next() ?? nil
                }
                guard case .lost(let reason)? = event else {
                    Issue.record("the camera heard nothing of the shutdown: \(String(describing: event))")
                    return
                }
                #expect(reason.contains("goAway"), "\(reason)")
                #expect(log.all == [true, false], "back off UDP presence: \(log.all)")
            }
        }
    }
}
