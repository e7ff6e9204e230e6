import ArgumentParser
import Crypto
import Foundation
import Logging
import Media
import STUNLite
import Strategies
import Traversal

extension Trav {
    /// `trav camera`: register with the cloud and serve viewers (echo, or a synthetic stream).
    struct CameraCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "camera",
            abstract: "Run a camera: register its UID with the cloud, answer viewers (also on the LAN without a cloud).")

        @Option(help: "The device identity file (`trav identity new --out FILE`).") var identity: String
        @Option(help: "Password viewers must present.") var password: String?
        @Option(help: "Viewer identity keys allowed without a password (base64 Ed25519), comma-separated.") var pairedViewers: String?
        @Option(help: "Send a synthetic video stream at this rate in kbit/s instead of echoing.") var stream: Int?
        @Option(help: ArgumentHelp(
            "Stream this H.264 Annex B file (looped) to every viewer on a media channel; `default` plays the bundled test clip, `default-low` its low-rate version.",
            discussion: """
            Repeat it for renditions of the same picture (a main stream, then sub streams: `--video main.h264 --video sub.h264`): each \
            viewer gets the highest its path sustains, moving down when its path falls short and back up after a hold of headroom, \
            always at a keyframe. Each file's rate is its bytes over its duration at --fps.
            """))
        var video: [String] = []
        @Option(help: "Frames per second for --video.") var fps: Int = 25
        @Option(help: "IP address browsers reach this camera on (a WebRTC host candidate; repeatable; default: every IPv4 interface's).")
        var browserHost: [String] = []
        @Flag(help: "Answer no browsers (the cloud's viewer page).") var noBrowsers = false
        @Flag(help: "Keep the TLS connection to the cloud even where UDP presence works.") var noPresence = false
        @Option(help: "Another node of the same cloud, HOST[:PORT] (repeatable; same CA): the camera moves to the next node when it loses one.")
        var cloudNode: [String] = []
        @OptionGroup var peer: PeerOptions
        @OptionGroup var common: CommonOptions

        func validate() throws {
            if password == nil && pairedViewers == nil { throw ValidationError("give --password or --paired-viewers") }
            if !video.isEmpty && stream != nil { throw ValidationError("give --video or --stream, not both") }
            if video.count > Self.maxRenditions { throw ValidationError("at most \(Self.maxRenditions) --video renditions") }
            if !cloudNode.isEmpty, peer.cloud == nil { throw ValidationError("--cloud-node needs --cloud") }
            if !(1...240).contains(fps) { throw ValidationError("--fps must be 1…240") }
        }

        /// The most `--video` renditions (a camera has a main stream and a few sub streams).
        static let maxRenditions = 8

        func run() async throws {
            let logger = common.logger("trav.camera")
            let me = try DeviceIdentity.load(from: identity)
            // One sender for all viewers, native and browsers: each gets its own queue and rendition; each clip plays
            // once for everyone.
            let clips = try video.map { try loadClip($0) }
            let renditions = clips.enumerated().map { i, units in
                Rendition(name: i == 0 ? "main" : i == 1 ? "sub" : "sub\(i)", bitsPerSecond: AnnexB.bitsPerSecond(of: units, fps: fps))
            }
            let media = clips.isEmpty ? nil : MediaSender(configuration: { var c = MediaSender.Configuration(); c.renditions = renditions; return c }(),
                                                          logger: logger)
            let hosts = browserHost.isEmpty ? localIPv4Addresses().map(\.description) : browserHost
            let browsers = noBrowsers ? nil : try BrowserAnswerer(identity: me, hosts: hosts, stunServers: try peer.travCloud()?.stunServers ?? [],
                                                                  media: media, logger: logger)
            let connector = try peer.connector(identity: me, logger: logger, browserViewers: browsers)
            var sources: [AsyncStream<any IncomingIntroduction>] = []
            var cloud: (any CameraSignalling)?
            if let endpoint = try peer.endpoint() {
                let nodes = cloudNode.map { node in
                    let (host, port) = splitHostPort(node, defaultPort: CloudEndpoint.defaultPort)
                    return CloudEndpoint(host: host, port: port, trust: endpoint.trust)
                }
                // A camera that answers browsers deposits one-time keys, so a page proves access with its first message.
                let c = try await CloudClient.camera(
                    identity: me, endpoint: endpoint, fallbacks: nodes, logger: logger, usePresence: !noPresence,
                    accessDeposits: browsers == nil ? nil : AccessDepositStock.Limits(), onPresence: { path in
                    let line = switch path {
                    case .datagram?: "presence udp (TLS closed)"
                    case .stream?: "presence stream (TLS closed)"
                    case nil: "presence tls"
                    }
                    say(line)
                })
                cloud = c
                sources.append(c.introductions)
            }
            var lan: LANDiscovery.Responder?
            if peer.lanPort != 0 {
                let r = try await LANDiscovery.Responder(device: me.deviceID, identity: me, port: peer.lanPort, logger: logger)
                lan = r
                sources.append(r.introductions)
            }
            let paired = try (pairedViewers ?? "").split(separator: ",").map {
                guard let d = Data(base64Encoded: String($0)) else { throw ValidationError("bad paired viewer key \($0)") }
                return try Curve25519.Signing.PublicKey(rawRepresentation: d)
            }
            let access = CameraAccessPolicy(passwordVerifier: try password.map { try PasswordVerifier(password: $0) }, pairedViewers: paired)
            say("camera \(me.deviceID) serving" + (cloud != nil ? " via cloud \(peer.cloud ?? "")" : "") + (lan != nil ? " and LAN port \(peer.lanPort)" : ""))
            let events = connector.events(sources, cloud: cloud?.connectionEvents, access: access)
            let rate = stream
            for (clip, rendition) in zip(clips, renditions) {
                say("video \(rendition.name): \(clip.count) frames (\(clip.filter(\.isKeyframe).count) keyframes) at \(fps) fps, "
                    + "\(rendition.bitsPerSecond / 1000) kbit/s, looped")
            }
            let frameRate = fps
            let player = Task {
                guard let media else { return }
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await media.play(renditions: clips, fps: frameRate) }
                    group.addTask {
                        var on: [Int: Int] = [:]
                        for await r in media.rates {
                            if r.congested || r.overflowed {
                                say(String(format: "viewer %d: path sustains %.0f kbit/s, %d frames dropped", r.viewer,
                                           r.acknowledgedBitsPerSecond / 1000, r.droppedFrames))
                            }
                            if renditions.count > 1, on.updateValue(r.rendition, forKey: r.viewer) != r.rendition {
                                say("viewer \(r.viewer): rendition \(renditions[r.rendition].name)")
                            }
                        }
                    }
                }
            }
            let serving = Task {
                await withTaskGroup(of: Void.self) { group in
                    for await event in events {
                        let c: PeerConnection
                        switch event {
                        case .viewerConnected(let connection):
                            c = connection
                        case .browserAnswered(let requestID):
                            say("browser \(requestID) answered")
                            continue
                        case .introductionFailed(let requestID, let error):
                            say("introduction \(requestID) failed: \(error.code): \(RemoteText.printable(error.detail.prefix(200)))")
                            continue
                        case .cloudLost(let reason):
                            say("cloud lost: \(RemoteText.printable(reason.prefix(200))); reconnecting")
                            continue
                        case .cloudBack(let observed):
                            say("registered with the cloud again as \(RemoteText.printable(observed))")
                            continue
                        }
                        say("viewer connected via \(c.path) (\(RemoteText.printable(c.report.route ?? ""))) in \(String(format: "%.1f", c.report.setupMs)) ms\(c.report.phases.map { " (\($0))" } ?? "")")
                        group.addTask {
                            // Media where asked for; channel sinks (`trav connect --channel-send`) always.
                            let viewer = try? await media?.add(c, acceptingChannels: false)
                            let channels = Task { await acceptChannels(c, media: media, viewer: viewer) }
                            defer { channels.cancel() }
                            let moves = Task {
                                for await m in c.pathMoves {
                                    say("session moved to \(m.to) (\(m.reason.rawValue)) at \(String(format: "%.0f", m.atMs)) ms: \(m.route)")
                                }
                            }
                            defer { moves.cancel() }
                            if media != nil {
                                await echo(c)
                            } else if let rate {
                                await streamSynthetic(c, kbps: rate)
                            } else {
                                await echo(c)
                            }
                            // The session's resources (its socket, a router port mapping) go with it,
                            // also when the camera stops.
                            await c.close()
                        }
                    }
                }
            }
            await waitForTermination()
            serving.cancel()
            await serving.value
            await browsers?.closeAll()
            player.cancel()
            media?.stop()
            await cloud?.stop()
            await lan?.stop()
        }
    }
}

/// Echoes every message until the connection ends.
func echo(_ c: PeerConnection) async {
    do {
        for try await m in c.inbound { try await c.send(m) }
    } catch {}
}

/// Sends synthetic "video" frames (1000-byte messages, a frame counter and timestamp at the front) at `kbps`.
func streamSynthetic(_ c: PeerConnection, kbps: Int, for duration: Duration? = nil) async {
    let messageSize = min(1000, c.maxMessageSize)
    let interval = Duration.nanoseconds(Int64(messageSize * 8) * 1_000_000 / Int64(max(1, kbps)))
    let started = ContinuousClock.now
    var n: UInt64 = 0
    let reader = Task { do { for try await _ in c.inbound {} } catch {} }
    defer { reader.cancel() }
    while !Task.isCancelled {
        if let duration, ContinuousClock.now - started >= duration { return }
        var frame = withUnsafeBytes(of: n.bigEndian) { Array($0) }
        frame += [UInt8](repeating: UInt8(truncatingIfNeeded: n), count: messageSize - frame.count)
        do { try await c.send(frame) } catch { return }
        n += 1
        try? await Task.sleep(until: started + interval * Int(n), clock: .continuous)
    }
}
