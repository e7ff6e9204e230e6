import Foundation
import Synchronization
@testable import NATLab
import NIOCore
import ServiceLifecycle
import Testing
@testable import Rendezvous
@testable import Traversal

/// The cloud's servers as services in one group: a graceful shutdown tells every client when to come back
/// before closing, and the group's run returns once every server stopped.
@Suite struct CloudServicesTests {
    @Test func gracefulShutdownTellsClientsToComeBackLaterThenEveryServiceStops() async throws {
        try await withCloud(tuning: { $0.restartRetryAfter = .seconds(3) }) { cloud, endpoint in
            let group = ServiceGroup(services: cloud.services, logger: quietLogger)
            let running = Task { try await group.run() }
            try await withRawConnection(endpoint) { channel, inbound in
                // A look-up answered by the hub: the connection is one of the server's clients now.
                // (With an answer key: an introduction without one is refused before it reaches the hub.)
                let unknown = DeviceIdentity.generate()
                try await CloudClient.send(
                    .introduce(requestID: "r1", deviceID: unknown.deviceID.description, offer: sampleOffer(DeviceIdentity.ephemeral()),
                               answerKey: makeAnswerKey().1),
                    on: channel)
                guard case .error("r1", _, _)? = try await inbound.next() else {
                    Issue.record("no answer to the look-up")
                    return
                }
                await group.triggerGracefulShutdown()
                var told: Int?
                do {
                    while let message = try await inbound.next() {
                        if case .busy(let milliseconds) = message { told = milliseconds }
                    }
                } catch {}  // an unclean TLS close is a close too
                let milliseconds = try #require(told, "no busy before the close")
                #expect(milliseconds >= 3000, "at least the restart retry-after: \(milliseconds) ms")
            }
            try await running.value
            await cloud.closeStore()
        }
    }
}

/// `trav cloud` as a process: its Prometheus endpoint counts registrations, cameras and introductions, and
/// SIGTERM stops every service and exits cleanly.
@Suite struct TravCloudProcessTests {
    static let curlMissing = !FileManager.default.isExecutableFile(atPath: "/usr/bin/curl")
    static let travMissing = !FileManager.default.isExecutableFile(atPath: TravLab.debugTrav)

    @Test(.disabled(if: travMissing, "trav is not built (swift build)"),
          .disabled(if: curlMissing, "curl is not installed (apt-get install curl)"))
    func travCloudExportsSignallingMetricsAndStopsOnSIGTERM() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cloud = try ChildProcess([TravLab.debugTrav, "cloud", "--listen", "127.0.0.1", "--data", directory, "--stun-port", "0",
                                      "--tls-port", "0", "--no-relay", "--metrics-listen", "127.0.0.1:0", "--device-store", "memory"])
        defer {
            cloud.kill()
            cloud.removeFiles()
        }
        var lines: [Substring] = []
        for _ in 0..<200 where !lines.contains(where: { $0.hasPrefix("cloud devices ") }) {
            try await Task.sleep(for: .milliseconds(50))
            lines = cloud.output().stdout.split(separator: "\n")
        }
        let url = String(try #require(lines.first { $0.hasPrefix("cloud metrics ") }, "\(cloud.output())").split(separator: " ")[2])
        let tls = try #require(lines.first { $0.hasPrefix("cloud signalling tls ") }).split(separator: " ")[3]
        let port = try #require(tls.split(separator: ":").last.flatMap { UInt16($0) })
        let endpoint = CloudEndpoint(
            host: "127.0.0.1", port: port, trust: .pinnedCA(try String(contentsOfFile: directory + "/ca.pem", encoding: .utf8)))

        let identity = DeviceIdentity.generate()
        let camera = try await CloudClient.camera(identity: identity, endpoint: endpoint, logger: quietLogger, usePresence: false)
        let viewer = CloudClient.viewer(endpoint: endpoint)
        await #expect(throws: CloudError.self) {
            _ = try await viewer.introduce(to: DeviceIdentity.generate().deviceID, offer: sampleOffer(DeviceIdentity.ephemeral()))
        }
        var scraped = ""
        for _ in 0..<20 where !scraped.contains(#"cloud_registered_cameras{presence="tls"} 1"#) {
            scraped = try await ChildProcess.scrape(url)
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(scraped.contains("cloud_registrations_total 1"), "\(scraped)")
        #expect(scraped.contains(#"cloud_registered_cameras{presence="tls"} 1"#), "\(scraped)")
        #expect(scraped.contains(#"cloud_introductions_total{outcome="unavailable"} 1"#), "\(scraped)")

        _ = posixKill(cloud.pid, SIGTERM)
        #expect(await cloud.wait(.seconds(15)), "trav cloud exits after SIGTERM")
        #expect(cloud.status == 0, "\(cloud.output())")
        #expect(cloud.output().stdout.contains("cloud stopped"))
        await camera.stop()
    }

    /// `trav cloud` killed with SIGKILL and started again on its data: every camera present over UDP is back from
    /// its next keepalive (its session restored from the ticket it carries), with no TLS registration, and a viewer
    /// reaches one of them (woken, back on TLS for the introduction).
    @Test(.disabled(if: travMissing, "trav is not built (swift build)"),
          .disabled(if: curlMissing, "curl is not installed (apt-get install curl)"))
    func aKilledCloudTakesItsFleetBackFromKeepalivesWithoutTLS() async throws {
        let count = 30
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Bindings verified before, so no registration here costs a scrypt; made-up UIDs but the one a viewer asks
        // for (a viewer checks the camera's key against the UID).
        let fleet = try (0..<count).map { index in
            let identity = DeviceIdentity.generate()
            return (identity: identity, deviceID: index == count / 2 ? identity.deviceID : try RegistrationAdmissionTests.madeUpDeviceID())
        }
        let store = try await SQLiteDeviceStore.open(path: directory + "/" + SQLiteDeviceStore.fileName)
        for camera in fleet {
            try await store.registered(camera.deviceID, publicKey: camera.identity.publicKey.rawRepresentation, node: "old", at: Date())
        }
        await store.close()
        func startCloud(tlsPort: UInt16) async throws -> (ChildProcess, metrics: String, port: UInt16) {
            let cloud = try ChildProcess([TravLab.debugTrav, "cloud", "--listen", "127.0.0.1", "--data", directory, "--stun-port", "0",
                                          "--tls-port", "\(tlsPort)", "--no-relay", "--metrics-listen", "127.0.0.1:0",
                                          "--presence-keepalive", "2"])
            var lines: [Substring] = []
            for _ in 0..<200 where !lines.contains(where: { $0.hasPrefix("cloud devices ") }) {
                try await Task.sleep(for: .milliseconds(50))
                lines = cloud.output().stdout.split(separator: "\n")
            }
            guard let metrics = lines.first(where: { $0.hasPrefix("cloud metrics ") }).map({ String($0.split(separator: " ")[2]) }),
                let tls = lines.first(where: { $0.hasPrefix("cloud signalling tls ") })?.split(separator: " ")[3],
                let port = tls.split(separator: ":").last.flatMap({ UInt16($0) })
            else {
                cloud.kill()
                defer { cloud.removeFiles() }
                throw CloudError(code: .connectionFailed, detail: "trav cloud did not start: \(cloud.output())")
            }
            return (cloud, metrics, port)
        }
        func scraped(_ url: String, within limit: Duration, until wanted: [String]) async -> String {
            var text = ""
            let deadline = ContinuousClock.now + limit
            while ContinuousClock.now < deadline {
                text = (try? await ChildProcess.scrape(url)) ?? ""
                if wanted.allSatisfy(text.contains) { break }
                try? await Task.sleep(for: .milliseconds(250))
            }
            return text
        }

        var (cloud, metrics, port) = try await startCloud(tlsPort: 0)
        let endpoint = CloudEndpoint(
            host: "127.0.0.1", port: port, trust: .pinnedCA(try String(contentsOfFile: directory + "/ca.pem", encoding: .utf8)))
        let registrations = Mutex([Int](repeating: 0, count: count))
        let overUDP = Mutex([Bool](repeating: false, count: count))
        var cameraLogger = quietLogger
        cameraLogger.logLevel = .error
        let sessions = fleet.enumerated().map { index, camera in
            CloudCameraSession(
                identity: camera.identity, deviceID: camera.deviceID, endpoint: endpoint, logger: cameraLogger,
                presenceLinger: .milliseconds(300),
                onRegistered: { _ in registrations.withLock { $0[index] += 1 } },
                onPresence: { path in overUDP.withLock { $0[index] = path == .datagram } })
        }
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for session in sessions { group.addTask { try await session.start() } }
                try await group.waitForAll()
            }
            #expect(await eventually(within: .seconds(20)) { overUDP.withLock { $0.allSatisfy { $0 } } },
                    "\(overUDP.withLock { $0.filter { $0 }.count }) of \(count) on UDP presence alone")

            _ = posixKill(cloud.pid, SIGKILL)
            #expect(await cloud.wait(.seconds(10)))
            cloud.removeFiles()
            (cloud, metrics, _) = try await startCloud(tlsPort: port)
            let text = await scraped(metrics, within: .seconds(20), until: [
                #"cloud_registered_cameras{presence="udp"} \#(count)"#, "cloud_presence_restored_total \(count)"])
            #expect(text.contains(#"cloud_registered_cameras{presence="udp"} \#(count)"#), "\(text)")
            #expect(text.contains("cloud_presence_restored_total \(count)"), "\(text)")
            #expect(!text.contains("cloud_registrations_total"), "no camera registered over TLS again: \(text)")
            #expect(registrations.withLock { $0.allSatisfy { $0 == 1 } }, "registrations per camera: \(registrations.withLock { $0 })")

            // A viewer reaches a camera the restarted cloud only knows from its keepalives.
            let camera = fleet[count / 2]
            let viewerOffer = sampleOffer(DeviceIdentity.ephemeral(), address: "198.51.100.7:5000")
            let cameraAnswer = sampleOffer(camera.identity, address: "203.0.113.9:6000")
            let viewer = CloudClient.viewer(endpoint: endpoint)
            async let introduction = viewer.introduce(to: camera.deviceID, offer: viewerOffer)
            var incoming = sessions[count / 2].introductions.makeAsyncIterator()
            let offer = try #require(await incoming.next())
            try await offer.acceptAnyViewer(answer: cameraAnswer)
            #expect(try await introduction.answer == cameraAnswer)
        } catch {
            for session in sessions { await session.stop() }
            cloud.kill()
            cloud.removeFiles()
            throw error
        }
        for session in sessions { await session.stop() }
        cloud.kill()
        cloud.removeFiles()
    }
}
