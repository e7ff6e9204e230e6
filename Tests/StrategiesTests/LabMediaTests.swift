import Foundation
import NATLab
import Testing

/// Video and channels over real kernel NAT with emulated access lines: what a viewer on a slow, lossy or
/// interrupted line receives.
@Suite(.serialized, .enabled(if: TravLab.skipReason() == nil, Comment(rawValue: TravLab.skipReason() ?? "")))
struct LabMediaTests {
    static let strategies = "direct-lan,stun-discovery,udp-hole-punch,tcp-simultaneous-open"

    /// An 8 s, 2.5 Mbit/s H.264 clip (ffmpeg's test source, a keyframe a second) in `dir`; nil without ffmpeg.
    static func makeClip(in dir: String) throws -> String? {
        guard let ffmpeg = ["/usr/bin/ffmpeg", "/usr/local/bin/ffmpeg"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return nil
        }
        let out = "\(dir)/clip.h264"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ffmpeg)
        // Noise over the test pattern, so the encoder really needs its 2.5 Mbit/s (the bare pattern compresses to ~0.7).
        p.arguments = ["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                       "-f", "lavfi", "-i", "nullsrc=s=640x360,geq=random(1)*255:128:128",
                       "-filter_complex", "[0][1]blend=all_mode=addition:all_opacity=0.3", "-t", "8",
                       "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-bf", "0",
                       "-x264-params", "keyint=25:min-keyint=25:scenecut=0", "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "1000k",
                       "-y", out]
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus == 0 ? out : nil
    }

    @Test func aViewerBehindOneMegabitGetsWholeGOPsWhileAFastOneGetsEveryFrame() async throws {
        let camera = LabSite("cam", .fullCone)
        let fast = LabSite("fast", .portRestrictedCone)
        let slow = LabSite("slow", .portRestrictedCone, link: LinkConditions(delayMs: 20, downKbps: 1000))
        try await TravLab.with(sites: [camera, fast, slow]) { run in
            guard let clip = try Self.makeClip(in: run.dir) else {
                print("skipped: ffmpeg not installed (Debian ffmpeg)")
                return
            }
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: camera.host(), strategies: Self.strategies, extra: ["--video", clip])
            let watch = ["--stats", "--seconds", "10"]
            let a = try run.startConnect(from: fast.host(), to: uid, strategies: Self.strategies, timeout: 15, paired: true, extra: watch)
            let b = try run.startConnect(from: slow.host(), to: uid, strategies: Self.strategies, timeout: 15, paired: true, extra: watch)
            let ra = try await run.finishedConnect(a, timeout: .seconds(60))
            let rb = try await run.finishedConnect(b, timeout: .seconds(60))
            let fv = try #require(ra.video, "\(ra)")
            let sv = try #require(rb.video, "\(rb)")
            // The fast viewer: every frame from its first keyframe on, none broken.
            #expect(fv.droppedFrames == 0 && fv.brokenFrames == 0 && fv.frames > 150, "\(fv)")
            // The slow one: keyframes and what fits, never a frame whose reference it missed.
            #expect(sv.brokenFrames == 0, "\(sv)")
            #expect(sv.keyframes >= 2, "\(sv)")
            #expect(sv.droppedFrames > 0 && sv.frames < fv.frames, "\(sv)")
        }
    }

    @Test func aReliableChannelDeliversEverythingInOrderOverALossyReorderingLine() async throws {
        let camera = LabSite("cam", .fullCone)
        // bad-wifi (5 % loss, 20 ± 15 ms) and 2 % of packets overtaken by the ones behind them.
        let viewer = LabSite("view", .portRestrictedCone, link: LinkConditions(profile: .badWiFi, reorderPercent: 2))
        try await TravLab.with(sites: [camera, viewer]) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: camera.host(), strategies: Self.strategies)
            var r = try await run.connect(from: viewer.host(), to: uid, strategies: Self.strategies, timeout: 40, echoBytes: 0,
                                          paired: true, extra: ["--channel-send", "\(1 << 20)"])
            if !r.connected {
                // A setup over 5 % loss is tried once more, as the other lab tests do; the subject is the channel.
                r = try await run.connect(from: viewer.host(), to: uid, strategies: Self.strategies, timeout: 40, echoBytes: 0,
                                          paired: true, extra: ["--channel-send", "\(1 << 20)"])
            }
            let sent = try #require(r.channelSend, "\(r)")
            #expect(sent.verified, "\(r)")
        }
    }

    @Test func theStreamRecoversAfterATwoSecondOutage() async throws {
        let camera = LabSite("cam", .fullCone, link: .ideal)
        let viewer = LabSite("view", .portRestrictedCone)
        try await TravLab.with(sites: [camera, viewer]) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: camera.host(), strategies: Self.strategies, extra: ["--video", "default"])
            let watching = try run.startConnect(from: viewer.host(), to: uid, strategies: Self.strategies, timeout: 15, paired: true,
                                                extra: ["--stats", "--seconds", "12"])
            try await Task.sleep(for: .seconds(5))
            try await run.lab.outage(site: camera.name, for: .seconds(2))
            let r = try await run.finishedConnect(watching, timeout: .seconds(60))
            let v = try #require(r.video, "\(r)")
            // The outage shows as one long gap, and frames flow again after it: about 12 s minus the wait
            // for the first keyframe, the outage and the catch-up, never a broken frame.
            #expect(v.longestGapMs >= 1500, "\(v)")
            #expect(v.brokenFrames == 0, "\(v)")
            #expect(v.frames >= 150, "\(v)")
            #expect(v.seconds >= 9, "\(v)")
        }
    }
}
