import Foundation
import Testing
import NIOCore
import NIOPosix
import Synchronization
@testable import Rendezvous
@testable import Traversal

/// UDP presence over loopback sockets: a camera drops TLS and stays registered over UDP, a viewer's
/// introduction wakes it back onto TLS, and a camera that stops its keepalives goes offline.
@Suite(.serialized) struct PresenceLoopbackTests {
    /// Records what ``CloudCameraSession`` reports through `onPresence`.
    final class PresenceLog: Sendable {
        private let events = Mutex<[Bool]>([])
        func record(_ path: PresencePath?) { events.withLock { $0.append(path == .datagram) } }
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

    /// A fleet in one process through two cloud restarts: cameras on TLS at the first (told `busy`), present over UDP
    /// alone at the second (told `goAway`). No viewer waits after a restart, so each camera closes TLS as soon as its
    /// new presence is confirmed, not after the linger (60 s here): a fleet coming back holds few connections, in the
    /// cloud and in a process hosting many cameras (two sockets each while registering).
    @Test func aFleetBackAfterARestartClosesTLSOnceItsPresenceIsConfirmed() async throws {
        let count = 40
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Bindings verified before, so no registration here costs a scrypt.
        let fleet = try (0..<count).map { _ in
            (identity: DeviceIdentity.generate(), deviceID: try RegistrationAdmissionTests.madeUpDeviceID())
        }
        let store = try await SQLiteDeviceStore.open(path: directory + "/" + SQLiteDeviceStore.fileName)
        for camera in fleet {
            try await store.registered(camera.deviceID, publicKey: camera.identity.publicKey.rawRepresentation, node: "old", at: Date())
        }
        await store.close()
        let tuning: (inout RendezvousServer.Configuration) -> Void = { $0.restartRetryAfter = .milliseconds(200) }
        let registrations = Mutex([Int](repeating: 0, count: count))
        let logs = (0..<count).map { _ in PresenceLog() }
        var cameraLogger = quietLogger
        cameraLogger.logLevel = .error
        func registeredAtLeast(_ times: Int) -> Int { registrations.withLock { $0.filter { $0 >= times }.count } }
        func overUDPAlone() -> Int { logs.filter { $0.all.last == true }.count }

        var sessions: [CloudCameraSession] = []
        do {
            var port: UInt16 = 0
            try await withCloud(directory: directory, tuning: tuning) { cloud, endpoint in
                port = cloud.rendezvous.address.port
                sessions = fleet.enumerated().map { index, camera in
                    CloudCameraSession(
                        identity: camera.identity, deviceID: camera.deviceID, endpoint: endpoint, logger: cameraLogger,
                        presenceLinger: .seconds(60),
                        onRegistered: { _ in registrations.withLock { $0[index] += 1 } }, onPresence: { logs[index].record($0) })
                }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for session in sessions { group.addTask { try await session.start() } }
                    try await group.waitForAll()
                }
                // The first registrations keep TLS for the linger: a viewer may be on its way.
                #expect(await cloud.rendezvous.signallingConnections == count)
                #expect(overUDPAlone() == 0)
            }
            for restart in 1...2 {
                try await withCloud(directory: directory, tlsPort: port, tuning: tuning) { cloud, _ in
                    let back = await eventually(within: .seconds(30)) { registeredAtLeast(restart + 1) == count }
                    #expect(back, "restart \(restart): \(registeredAtLeast(restart + 1)) of \(count) registered again")
                    let udp = await eventually(within: .seconds(20)) { overUDPAlone() == count }
                    #expect(udp, "restart \(restart): \(overUDPAlone()) of \(count) closed TLS for UDP presence without the linger")
                    #expect(await eventually(within: .seconds(5)) { await cloud.rendezvous.signallingConnections == 0 })
                    #expect(await cloud.rendezvous.registeredCameras == (count, count))
                }
            }
        } catch {
            for session in sessions { await session.stop() }
            throw error
        }
        for session in sessions { await session.stop() }
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
                // Stopped, the camera sends no more keepalives (it says `leave`; one that lost power would say nothing, and
                // the 3 s timeout would end it as well).
                await camera.stop()
                #expect(await eventually(within: .seconds(10)) { await cloud.rendezvous.registeredCameras == (0, 0) })
                let viewer = CloudClient.viewer(endpoint: endpoint)
                await #expect(throws: CloudError.self) {
                    _ = try await viewer.introduce(to: cameraIdentity.deviceID, offer: sampleOffer(DeviceIdentity.ephemeral()))
                }
            }
        }
    }

    /// A camera present over UDP alone that stops says `leave`: the cloud forgets it at its next sweep, long before the
    /// session's timeout (60 s here), and a viewer hears what an unknown UID gets.
    @Test func aCameraPresentOverUDPAloneThatStopsIsOfflineAtOnce() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        try await withCloud(tuning: { $0.presence = .init(keepaliveSeconds: 20, timeout: .seconds(60)) }) { cloud, endpoint in
            try await withPresenceCamera(cameraIdentity, endpoint) { camera, log in
                #expect(await eventually(within: .seconds(15)) { log.all == [true] }, "presence events \(log.all)")
                #expect(await eventually(within: .seconds(5)) { await cloud.rendezvous.signallingConnections == 0 },
                        "the camera holds no TLS connection")
                await camera.stop()
                #expect(await eventually(within: .seconds(8)) { await cloud.rendezvous.registeredCameras == (0, 0) },
                        "offline at the sweep after its leave (5 s apart at most)")
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

    /// Where UDP does not reach the cloud, a camera's presence goes on a stream to the signalling port (the same port as
    /// its TLS): confirmed there, woken there, and the stream closed when the presence ends.
    @Test func aCameraWhoseUDPGoesNowhereKeepsItsPresenceOnAStreamToTheSignallingPort() async throws {
        try await withCloud { cloud, endpoint in
            let presence = try #require(cloud.rendezvous.presence)
            let (grant, session) = try #require(presence.open(DeviceIdentity.generate().deviceID))
            // A UDP port nobody answers on: a free one, closed again.
            let probe = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
            let deadPort = try #require(probe.localAddress?.port)
            try await probe.close()
            var blocked = grant
            blocked.port = deadPort
            let paths = Mutex<[PresencePath]>([])
            let link = Task {
                try await CameraPresenceLink.run(grant: blocked, host: "127.0.0.1", streamPort: Int(endpoint.port), probes: 1) { path in
                    paths.withLock { $0.append(path) }
                }
            }
            defer { link.cancel() }
            #expect(await eventually(within: .seconds(10)) { paths.withLock { $0 } == [.stream] }, "confirmed: \(paths.withLock { $0 })")
            #expect(presence.streamCount == 1 && presence.isLive(session))
            #expect(await cloud.rendezvous.signallingConnections == 0, "a stream is no signalling connection")
            #expect(presence.wake(session), "the wake goes on the stream")
            let outcome = try await withDeadline(.seconds(5)) { try await link.value }
            #expect(outcome == .wake)
            #expect(await eventually(within: .seconds(5)) { presence.streamCount == 0 }, "the camera closed its stream")
        }
    }
}
