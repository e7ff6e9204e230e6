import ArgumentParser
import Foundation
import STUNLite
import Strategies
import Traversal

extension Trav {
    /// `trav connect`: reach a camera by UID, verify an echo, print the report.
    struct ConnectCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "connect",
            abstract: "Connect to a camera by its UID, exchange an echo, and print how the path was found.")
        /// The longest `--idle`: beyond a TURN permission's 5 minutes and an allocation's default 10 (RFC 8656 §9, §7.2),
        /// so a relayed path's refreshes are exercised too.
        static let maxIdleSeconds = 900

        @Argument(help: "The camera's UID, e.g. TRAV-7QX2-M4KD-P9ZC-H3WA.") var uid: String
        @Option(help: "The camera's password.") var password: String?
        @Flag(help: "Use this viewer's identity as a paired key instead of a password.") var paired = false
        @Option(help: "A viewer identity file (default: a fresh ephemeral identity).") var identity: String?
        @Option(help: "A file of camera keys already checked against their UIDs (created if missing); a known camera spares the UID's scrypt.")
        var knownCameras: String?
        @Option(help: "Bytes of echo to exchange and verify.") var echoBytes: Int = 1000
        @Option(help: "After the echo, stay idle this many seconds (at most \(Self.maxIdleSeconds)), then echo again through the same session.")
        var idle: Int = 0
        @Option(help: "Receive the camera's video (`trav camera --video`) and save it to this H.264 Annex B file.") var save: String?
        @Option(help: "Seconds of video to receive (with --save or --stats).") var seconds: Double = 10
        @Flag(help: "Receive the camera's video and print its statistics: bitrate, frame latency p50/p99, drops, stalls.") var stats = false
        @Option(help: "Send this many bytes to the camera on a reliable channel and check its SHA-256 answer (goodput).")
        var channelSend: Int = 0
        @Flag(help: "Print one JSON object.") var json = false
        @OptionGroup var peer: PeerOptions
        @OptionGroup var common: CommonOptions

        func validate() throws {
            _ = try DeviceID(uid)
            if password == nil && !paired { throw ValidationError("give --password or --paired") }
            if echoBytes < 0 { throw ValidationError("--echo-bytes must be ≥ 0") }
            if channelSend < 0 || channelSend > 1 << 34 { throw ValidationError("--channel-send must be 0…16 GiB") }
            if !(0...Self.maxIdleSeconds).contains(idle) { throw ValidationError("--idle must be 0...\(Self.maxIdleSeconds)") }
            if idle > 0 && echoBytes == 0 { throw ValidationError("--idle needs an echo before and after it (--echo-bytes > 0)") }
            if !(seconds > 0 && seconds <= 3600) { throw ValidationError("--seconds must be in (0, 3600]") }
        }

        /// `--channel-send`'s transfer of `bytes` (none for 0) and what went wrong with it.
        static func channelTransfer(_ c: PeerConnection, bytes: Int) async -> (ChannelSendOutput?, String?) {
            guard bytes > 0 else { return (nil, nil) }
            do {
                let sent = try await sendOnChannel(c, bytes: bytes)
                return (sent, sent.verified ? nil : "the camera's digest of the channel data did not match")
            } catch {
                return (nil, "channel send: \(error)")
            }
        }

        /// `--stats`/`--save`'s video (none unless `watch`) and what went wrong with it.
        static func videoReception(_ c: PeerConnection, watch: Bool, seconds: Double, save: String?) async -> (VideoOutput?, String?) {
            guard watch else { return (nil, nil) }
            do {
                let video = try await receiveVideo(c, seconds: seconds, save: save)
                return (video, video.frames == 0 ? "no video frames arrived" : nil)
            } catch {
                return (nil, "video: \(error)")
            }
        }

        func run() async throws {
            let logger = common.logger("trav.connect")
            let device = try DeviceID(uid)
            let me = try identity.map { try DeviceIdentity.load(from: $0) } ?? .ephemeral()
            let known = try knownCameras.map { try KnownDevices(file: $0) } ?? KnownDevices()
            let connector = try peer.connector(identity: me, knownDevices: known, logger: logger)
            var introducers: [any ViewerSignalling] = []
            if peer.lanPort != 0 { introducers.append(LANDiscovery.Finder(destinations: LANDiscovery.broadcastDestinations(port: peer.lanPort))) }
            if let endpoint = try peer.endpoint() { introducers.append(CloudClient.viewer(endpoint: endpoint, logger: logger)) }
            guard !introducers.isEmpty else { throw ValidationError("nothing to ask: give --cloud, or keep LAN discovery on") }
            let credential: AccessCredential = paired ? .pairedKey : .password(password ?? "")
            let output: ConnectOutput
            do {
                let c = try await connector.connect(to: device, via: FirstAnswering(introducers), credential: credential)
                let established = Date()
                let (verified, echoMs) = echoBytes > 0 ? await echoCheck(c, bytes: echoBytes) : (true, 0)
                var result = ConnectOutput(uid: device.description, report: c.report, attempts: c.report.attempts, echoBytes: echoBytes,
                                           echoVerified: verified, echoMs: echoMs, error: verified ? nil : "echo did not come back intact")
                if verified && idle > 0 {
                    // Said on stderr when the idle starts, so a watcher (the lab tests) can look at the NATs meanwhile.
                    FileHandle.standardError.write(Data("idle: \(idle) s from now, keepalives \(peer.keepalive == 0 ? "off" : "every \(peer.keepalive) s")\n".utf8))
                    try await Task.sleep(for: .seconds(idle))
                    let (again, againMs) = await echoCheck(c, bytes: echoBytes)
                    result.idleSeconds = idle
                    result.idleEchoVerified = again
                    result.idleEchoMs = again ? againMs : nil
                    if !again { result.error = "the echo after \(idle) s idle did not come back: the path was lost" }
                }
                // With both, the transfer and the video run at once (a session that moves carries both).
                let (bytes, seconds, save) = (verified ? channelSend : 0, seconds, save)
                let watch = verified && (save != nil || stats)
                async let sent = Self.channelTransfer(c, bytes: bytes)
                async let watched = Self.videoReception(c, watch: watch, seconds: seconds, save: save)
                let (transfer, transferError) = await sent
                let (video, videoError) = await watched
                result.channelSend = transfer
                result.video = video
                if let e = transferError ?? videoError { result.error = e }
                if !c.report.moves.isEmpty { result.moves = c.report.moves.map { MoveOutput($0, established: established) } }
                output = result
                await c.close()
            } catch let e as TraversalError {
                output = ConnectOutput(uid: device.description, report: nil, attempts: e.attempts, echoBytes: echoBytes,
                                       echoVerified: false, echoMs: nil, error: "\(e.code.name): \(e.detail)")
            } catch {
                output = ConnectOutput(uid: device.description, report: nil, attempts: [], echoBytes: echoBytes,
                                       echoVerified: false, echoMs: nil, error: "\(error)")
            }
            if json {
                try printJSON(output)
            } else {
                print("camera    \(output.uid)")
                if output.connected {
                    print("path      \(output.path ?? "")  \(RemoteText.printable(output.route ?? ""))")
                    print("setup     \(String(format: "%.1f", output.setupMs ?? 0)) ms\(output.phases.map { " (\($0))" } ?? "")")
                    print("echo      \(output.echoBytes) bytes \(output.echoVerified ? "verified" : "NOT verified")")
                    if let idle = output.idleSeconds, let again = output.idleEchoVerified {
                        print("idle      \(idle) s, then echo \(again ? "verified" : "NOT verified: the path was lost")")
                    }
                    if let sent = output.channelSend {
                        print(String(format: "channel   %d bytes in %.2f s = %.2f Mbit/s, %@", sent.bytes, sent.seconds, sent.mbps,
                                     sent.verified ? "verified" : "NOT verified"))
                        print(String(format: "recovery  %d retransmission timeouts, %d fast retransmissions, %d chunks sent again; mean srtt %@ ms, cwnd %@ bytes",
                                     sent.engine.retransmissionTimeouts, sent.engine.fastRetransmissions, sent.engine.retransmittedChunks,
                                     sent.srttMs.map { String(format: "%.0f", $0) } ?? "-", sent.congestionWindow.map { String(format: "%.0f", $0) } ?? "-"))
                    }
                    if let video = output.video {
                        print("video     \(video.line)\(video.savedTo.map { ", saved to \($0)" } ?? "")")
                    }
                    for move in output.moves ?? [] {
                        print(String(format: "moved     %@ -> %@ (%@) at %.0f ms  %@", move.from, move.to, move.reason, move.atMs,
                                     RemoteText.printable(move.route)))
                    }
                    if let error = output.error { print("error     \(RemoteText.printable(error))") }
                } else {
                    print("failed    \(RemoteText.printable(output.error ?? ""))")
                }
                for a in output.attempts {
                    print("  \(a.strategy.padding(toLength: 22, withPad: " ", startingAt: 0)) \(a.outcome.padding(toLength: 10, withPad: " ", startingAt: 0)) \(String(format: "%7.1f", a.ms)) ms\(a.error.map { "  (\(RemoteText.printable($0.prefix(100))))" } ?? "")")
                }
            }
            if !(output.connected && output.echoVerified && output.idleEchoVerified != false && output.error == nil) { throw ExitCode(1) }
        }
    }
}

