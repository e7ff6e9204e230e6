import ArgumentParser
import Foundation
import Media
import NATLab

extension Trav {
    /// `trav bench-media`: the media plane over emulated access lines in the NAT lab, with kernel TCP as the anchor.
    struct BenchMediaCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench-media",
            abstract: "Benchmark channels and video over emulated lines in the NAT lab (root): goodput vs kernel TCP, frame latency.",
            discussion: """
                One camera on a public address, one viewer behind a port-restricted NAT whose line is emulated \
                (natlab.sh LINK). Goodput: `trav connect --channel-send` (a reliable channel, viewer → camera, \
                SHA-256 checked) against iperf3 over kernel TCP (CUBIC) between the same two hosts on the same \
                line, at 0 % and 1 % loss. Video: a 4 Mbit/s H.264 clip (encoded as `--clip` says) streamed to the viewer \
                on a 5 Mbit/s line (80 % use), at 0 % and 5 % loss: frame latency p50/p99, frames dropped, the longest stall.
                """)

        @Option(help: "Line rate for the goodput runs, kbit/s (both directions).") var rateKbps: Int = 20_000
        @Option(help: "One-way delay of the line, ms.") var delayMs: Int = 20
        @Option(help: "Seconds per goodput run.") var seconds: Int = 10
        @Option(help: "Seconds of video per video run (600 for the 10-minute flatness run).") var videoSeconds: Int = 30
        @Option(help: "Loss of a video run, percent (repeat for several runs; default 0 and 5).") var videoLoss: [Double] = [0, 5]
        @Flag(help: "Only the video runs (the goodput runs take about a minute).") var videoOnly = false
        @Flag(help: "Only the goodput runs.") var goodputOnly = false
        @Option(help: "Goodput runs per loss rate (each ours then TCP's; the median ratio is printed when more than one).")
        var goodputRuns: Int = 1
        @Option(help: "The clip's encoder settings: earlier (2000 kbit VBV: keyframes up to 106 KB) or live (500 kbit VBV: keyframes up to 58 KB, as a camera tuned for live viewing bounds them).")
        var clip: Clip = .earlier
        @Option(help: "The `trav` binary to run in the lab (default: this one).") var trav: String?
        @OptionGroup var common: CommonOptions

        func validate() throws {
            guard !(videoOnly && goodputOnly) else { throw ValidationError("--video-only and --goodput-only exclude each other") }
            guard (1...20).contains(goodputRuns) else { throw ValidationError("--goodput-runs must be 1…20") }
            guard (1_000...1_000_000).contains(rateKbps) else { throw ValidationError("--rate-kbps must be 1000…1000000") }
            guard (0...500).contains(delayMs), (1...120).contains(seconds), (5...3600).contains(videoSeconds),
                  videoLoss.allSatisfy({ (0...100).contains($0) }) else {
                throw ValidationError("--delay-ms 0…500, --seconds 1…120, --video-seconds 5…3600, --video-loss 0…100")
            }
        }

        /// How the benchmark's 4 Mbit/s clip is encoded (x264 rate control; the VBV buffer bounds every frame,
        /// a keyframe too, to about its size).
        enum Clip: String, ExpressibleByArgument, CaseIterable {
            /// A live camera's bound on frames: a 500 kbit VBV buffer, 125 ms at 4 Mbit/s, so no frame takes much more
            /// than 90 ms of the 5 Mbit/s line. With a buffer that small x264 falls short of its target (3.6 Mbit/s
            /// for 4000k on this clip), so it is given ``liveTargetPercent`` of the average the clip must reach
            /// (4600k: 4.02 Mbit/s over the 20 s clip by ffprobe, keyframes ≤ 58 KB).
            case live
            /// The clip the figures were measured with: `-maxrate` 4000k, a 2000 kbit buffer (half a second).
            case earlier

            /// The live clip's x264 target and rate cap, in percent of the average it must reach.
            static let liveTargetPercent = 115

            /// The x264 arguments after the input, for an average of `kbps`.
            func encoderArguments(kbps: Int) -> [String] {
                let gop = "keyint=25:min-keyint=25:scenecut=0"
                switch self {
                case .live:
                    let target = kbps * Self.liveTargetPercent / 100
                    return ["-x264-params", gop, "-b:v", "\(target)k", "-maxrate", "\(target)k", "-bufsize", "\(kbps / 8)k"]
                case .earlier:
                    return ["-x264-params", gop, "-b:v", "\(kbps)k", "-maxrate", "\(kbps)k", "-bufsize", "\(kbps / 2)k"]
                }
            }
        }

        struct Row: Encodable {
            var scenario: String
            var values: [String: Double]
        }

        func run() async throws {
            _ = common.logger("trav.bench-media")
            if let reason = NATLab.skipReason { throw CLIError("bench-media: \(reason)") }
            guard let iperf3 = NATLab.findExecutable("iperf3"), let ffmpeg = NATLab.findExecutable("ffmpeg") else {
                throw CLIError("bench-media needs iperf3 and ffmpeg (Scripts/bench-media.sh installs them)")
            }
            let binary = trav ?? URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
            let strategies = "direct-lan,stun-discovery,udp-hole-punch,tcp-simultaneous-open"
            let camera = LabSite("cam", .open)
            let viewer = LabSite("view", .portRestrictedCone, link: .ideal)
            print("load average at start: \((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?")")
            try await TravLab.with(sites: [camera, viewer], trav: binary) { run in
                _ = try run.startCloud()
                let cameraIP = try run.lab.address(of: camera.host())

                if !videoOnly {
                    // A camera without video: one that streams would send its clip back over the same line during
                    // the transfer (iperf3's TCP has the line to itself), and the digest that ends each transfer
                    // would wait behind that video (media has the higher priority).
                    let (uid, quiet) = try await run.startCameraProcess(on: camera.host(), strategies: strategies)
                    defer { quiet.stop() }
                    print("\nGoodput, viewer → camera, \(rateKbps) kbit/s line, \(delayMs) ms one way, \(seconds) s per run")
                    print("loss   trav channel (Mbit/s)   kernel TCP CUBIC (Mbit/s)   ratio")
                    for loss in [0.0, 1.0] {
                        try await run.lab.setLink(LinkConditions(delayMs: delayMs, lossPercent: loss, downKbps: rateKbps, upKbps: rateKbps),
                                                  site: viewer.name)
                        // About `seconds` of data at what the line allows (loss caps a loss-based controller far below the rate).
                        let bytes = rateKbps * 1000 / 8 * seconds / (loss > 0 ? 5 : 1)
                        var ratios: [Double] = []
                        for _ in 0..<goodputRuns {
                            let ours = try await run.connect(from: viewer.host(), to: uid, strategies: strategies, timeout: Double(seconds * 6),
                                                             echoBytes: 0, paired: true, extra: ["--channel-send", "\(bytes)"])
                            let tcp = try await kernelTCP(run: run, iperf3: iperf3, from: viewer.host(), server: camera.host(), address: cameraIP)
                            let sent = ours.channelSend.flatMap { $0.verified ? $0 : nil }
                            let ratio = sent.map { $0.mbps / max(tcp, 0.001) }
                            if let ratio { ratios.append(ratio) }
                            print(String(format: "%3.0f %%  %10@ (%@)   %14.2f              %@%@", loss,
                                         sent.map { String(format: "%.2f", $0.mbps) } ?? "failed", ours.path ?? "-", tcp,
                                         ratio.map { String(format: "%.2f×", $0) } ?? "-",
                                         sent?.engine.map { e in
                                             String(format: "   (%d RTO, %d fast rtx, %d rtx; mean srtt %@ ms, cwnd %@ B)", e.retransmissionTimeouts,
                                                    e.fastRetransmissions, e.retransmittedChunks,
                                                    sent?.srttMs.map { String(format: "%.0f", $0) } ?? "-",
                                                    sent?.congestionWindow.map { String(format: "%.0f", $0) } ?? "-")
                                         } ?? ""))
                        }
                        if goodputRuns > 1, !ratios.isEmpty {
                            print(String(format: "%3.0f %%  median ratio %.2f× of %d runs (%.2f…%.2f)", loss, percentile(ratios, 0.5) ?? 0, ratios.count,
                                         ratios.min() ?? 0, ratios.max() ?? 0))
                        }
                    }
                }
                if goodputOnly { return }
                let clipFile = "\(run.dir)/clip4m.h264"
                let clipSeconds = 20
                try makeClip(ffmpeg: ffmpeg, out: clipFile, kbps: 4000, seconds: clipSeconds)
                let clipBytes = (try? FileManager.default.attributesOfItem(atPath: clipFile)[.size] as? Int) ?? 0
                print(String(format: "clip (%@): %.2f Mbit/s on average", clip.rawValue, Double(clipBytes * 8) / Double(clipSeconds) / 1e6))
                let uid = try await run.startCamera(on: camera.host(), strategies: strategies, extra: ["--video", clipFile])

                let videoLine = 5000
                print("\nVideo: 4 Mbit/s H.264 (\(clip.rawValue) clip) to the viewer on a \(videoLine) kbit/s line (80 % use), \(delayMs) ms one way, \(videoSeconds) s")
                print("loss   frames   latency p50 / p99 (ms)   goal p99 ≤ \(delayMs + 150)   dropped   broken   longest stall (ms)")
                for loss in videoLoss {
                    try await run.lab.setLink(LinkConditions(delayMs: delayMs, lossPercent: loss, downKbps: videoLine, upKbps: videoLine),
                                              site: viewer.name)
                    let r = try await run.connect(from: viewer.host(), to: uid, strategies: strategies, timeout: 20,
                                                  lasting: Double(videoSeconds), echoBytes: 0,
                                                  paired: true, extra: ["--stats", "--seconds", "\(videoSeconds)"])
                    guard let v = r.video else {
                        print(String(format: "%3.0f %%  failed: %@", loss, r.error ?? "?"))
                        continue
                    }
                    let p99 = v.latencyP99Ms ?? .infinity
                    print(String(format: "%3.0f %%  %6d   %8.1f / %-8.1f         %@           %6d   %6d   %10.0f", loss, v.frames,
                                 v.latencyP50Ms ?? -1, p99, p99 <= Double(delayMs + 150) ? "met " : "MISS", v.droppedFrames,
                                 v.brokenFrames, v.longestGapMs))
                    if let perMinute = v.latencyP99PerMinuteMs, perMinute.count > 1 {
                        if let p50 = v.latencyP50PerMinuteMs {
                            print("       p50 per minute (ms): " + p50.map { String(format: "%.0f", $0) }.joined(separator: " "))
                        }
                        print("       p99 per minute (ms): " + perMinute.map { String(format: "%.0f", $0) }.joined(separator: " "))
                    }
                }
            }
        }

        /// iperf3 from `from` to `server` for ``seconds``; the receiver's Mbit/s.
        func kernelTCP(run: TravLab, iperf3: String, from: String, server: String, address: String) async throws -> Double {
            let listener = try run.lab.spawn(host: server, [iperf3, "-s", "-1", "-p", "5201"])
            defer { listener.stop() }
            try await run.lab.waitForListener(host: server, port: 5201, udp: false, timeout: .seconds(10))
            let r = try await run.lab.run(host: from, [iperf3, "-c", address, "-p", "5201", "-t", "\(seconds)", "-C", "cubic", "-J"],
                                          timeout: .seconds(Int64(seconds) + 20))
            guard let json = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
                  let end = json["end"] as? [String: Any], let received = end["sum_received"] as? [String: Any],
                  let bps = received["bits_per_second"] as? Double else {
                throw CLIError("iperf3 gave no result: \(r)")
            }
            return bps / 1e6
        }

        /// A clip of ffmpeg's test pattern with noise over it, so the encoder really uses `kbps`, encoded as ``clip`` says.
        func makeClip(ffmpeg: String, out: String, kbps: Int, seconds: Int) throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: ffmpeg)
            p.arguments = ["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
                           "-f", "lavfi", "-i", "nullsrc=s=1280x720,geq=random(1)*255:128:128",
                           "-filter_complex", "[0][1]blend=all_mode=addition:all_opacity=0.3", "-t", "\(seconds)",
                           "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-bf", "0"]
                + clip.encoderArguments(kbps: kbps) + ["-y", out]
            try p.run()
            p.waitUntilExit()
            guard p.terminationStatus == 0 else { throw CLIError("ffmpeg could not make the clip") }
        }
    }
}
