import ArgumentParser
import Foundation
import Logging
import Media
import Rendezvous
import STUNLite
import Strategies
import TURNLite
import Traversal

extension Trav {
    /// `trav demo`: a cloud, a camera and viewers in one process on loopback, nothing to configure.
    struct DemoCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "demo",
            abstract: "Start a local cloud, a camera and viewers on loopback; connect by UID, stream H.264 video, and print each report.")

        @Option(help: "Number of viewers watching at once.") var viewers: Int = 2
        @Option(help: "Seconds to stream.") var seconds: Double = 3
        @Option(help: "An H.264 Annex B file to stream (default: the bundled 4 s test pattern, looped).") var video: String?
        @OptionGroup var common: CommonOptions

        func validate() throws {
            guard (1...16).contains(viewers) else { throw ValidationError("--viewers must be 1…16") }
            guard seconds > 0, seconds <= 60 else { throw ValidationError("--seconds must be in (0, 60]") }
        }

        struct ViewerResult: Sendable {
            var report: ConnectionReport
            var video: VideoOutput
        }

        func run() async throws {
            let logger = common.logger("trav.demo")
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("trav-demo-\(UUID().uuidString.prefix(8))").path
            defer { try? FileManager.default.removeItem(atPath: dir) }
            // The relay must reach its own allocations on loopback here.
            let relay = CloudService.RelayConfiguration(port: 0, allowedPeers: IPPrefix("127.0.0.0/8").map { [$0] } ?? [])
            let cloud = try await CloudService.start(
                .init(listenIP: "127.0.0.1", dataDirectory: dir, stunPort: 0, tlsPort: 0, relay: relay), logger: logger)
            let stunAddress = cloud.stun.udpAddresses[.primary]!
            guard let caPath = cloud.caPath else { throw CLIError("the cloud made no CA") }
            let endpoint = CloudEndpoint(host: "127.0.0.1", port: cloud.rendezvous.address.port,
                                         trust: .pinnedCA(try String(contentsOfFile: caPath, encoding: .utf8)))
            print("cloud    stun \(stunAddress), signalling \(cloud.rendezvous.address) (TLS, CA \(caPath))" +
                  (cloud.relay == nil ? "" : ", relay on the same TLS port (ALPN stun.turn)"))

            let strategies: [any TraversalStrategy] = [DirectLAN(scope: .loopbackOnly), STUNDiscovery(), UDPHolePunch(), TCPSimultaneousOpen(),
                                                       TLSRelay(trustedCAPath: caPath)]
            let camera = DeviceIdentity.generate()
            let password = "demo-" + UUID().uuidString.prefix(6)
            let signalling = try await CloudClient.camera(identity: camera, endpoint: endpoint, logger: logger)
            let cameraConnector = Connector(configuration: .init(identity: camera, strategies: strategies,
                                                                 stunServers: [stunAddress.description], logger: logger))
            // Odd viewers present the password (the camera's scrypt check on every connection), even
            // ones a key paired with the camera beforehand (a signature check).
            let identities = (0..<viewers).map { _ in DeviceIdentity.ephemeral() }
            let paired = identities.indices.filter { $0 % 2 == 1 }
            let access = CameraAccessPolicy(passwordVerifier: try PasswordVerifier(password: password),
                                            pairedViewers: paired.map { identities[$0].publicKey })
            let connections = cameraConnector.serve([signalling.introductions], access: access)
            print("camera   \(camera.deviceID) registered; \(viewers) viewer\(viewers == 1 ? "" : "s") connecting by UID")
            let clip = try loadClip(video ?? "default")
            let sender = MediaSender(logger: logger)
            let player = Task { await sender.play(clip, fps: 25) }
            let serving = Task {
                await withTaskGroup(of: Void.self) { group in
                    for await c in connections {
                        group.addTask { _ = try? await sender.add(c) }
                    }
                }
            }
            let uid = camera.deviceID
            let duration = Duration.milliseconds(Int64(seconds * 1000))
            var results = [Result<ViewerResult, any Error>](repeating: .failure(CLIError("did not run")), count: viewers)
            await withTaskGroup(of: (Int, Result<ViewerResult, any Error>).self) { group in
                for i in 0..<viewers {
                    group.addTask {
                        do {
                            let viewer = Connector(configuration: .init(identity: identities[i], strategies: strategies,
                                                                        stunServers: [stunAddress.description], logger: logger))
                            let c = try await viewer.connect(to: uid, via: CloudClient.viewer(endpoint: endpoint, logger: logger),
                                                             credential: paired.contains(i) ? .pairedKey : .password(password))
                            let video = try await receiveVideo(c, seconds: duration.milliseconds / 1000, save: nil)
                            await c.close()
                            return (i, .success(ViewerResult(report: c.report, video: video)))
                        } catch {
                            return (i, .failure(error))
                        }
                    }
                }
                for await (i, r) in group { results[i] = r }
            }
            serving.cancel()
            player.cancel()
            sender.stop()
            await signalling.stop()
            await cloud.stop()
            var failures = 0
            for (i, r) in results.enumerated() {
                print("")
                switch r {
                case .success(let v):
                    print("viewer \(i + 1) (\(paired.contains(i) ? "paired key" : "password"))")
                    printReport(v.report, prefix: "  ")
                    print("  video     \(v.video.line)")
                    if v.video.frames == 0 || v.video.brokenFrames > 0 { failures += 1 }
                case .failure(let e):
                    failures += 1
                    print("viewer \(i + 1) FAILED: \(RemoteText.printable("\(e)"))")
                }
            }
            if failures > 0 { throw ExitCode(1) }
        }
    }
}
