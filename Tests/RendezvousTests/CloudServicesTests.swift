import Foundation
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
}
