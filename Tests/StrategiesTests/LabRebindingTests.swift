import Foundation
import NATLab
import Testing

/// A direct session whose viewer's NAT forgets the flow mid-stream (its conntrack flushed) and gives the
/// next packet a new port, or whose viewer moves to another network: the camera follows the viewer to the
/// new address after a sealed check (RFC 9000 §9.3), and the channel and the video carry on, over real kernel NAT.
@Suite(.serialized, .enabled(if: TravLab.skipReason() == nil, Comment(rawValue: TravLab.skipReason() ?? "")))
struct LabRebindingTests {
    /// Checks that every byte of the reliable channel arrived in order (the camera's SHA-256 of the stream
    /// matches) and that video kept coming, never a frame whose reference was lost.
    static func intact(_ r: TravLab.ConnectResult) throws -> (TravLab.ConnectResult.ChannelSend, TravLab.ConnectResult.Video) {
        let sent = try #require(r.channelSend, "\(r)")
        #expect(sent.verified, "\(r)")
        let video = try #require(r.video, "\(r)")
        #expect(video.brokenFrames == 0 && video.frames > 200, "\(video)")
        return (sent, video)
    }

    @Test func aDirectSessionFollowsTheViewerWhenItsNATRemapsThePort() async throws {
        let camera = LabSite("cam", .fullCone)
        // A symmetric NAT picks a random port for every new flow, so the flow after the flush leaves from
        // another port. The 4 Mbit/s uplink stretches the transfer over the flush.
        let viewer = LabSite("view", .symmetric, link: LinkConditions(upKbps: 4000))
        try await TravLab.with(sites: [camera, viewer]) { run in
            _ = try run.startCloud()
            let direct = "udp-hole-punch"
            let (uid, cameraProcess) = try await run.startCameraProcess(on: camera.host(), strategies: direct, extra: ["--video", "default"])
            let bytes = 5_000_000
            let watching = try run.startConnect(from: viewer.host(), to: uid, strategies: direct, timeout: 15, paired: true,
                                                extra: ["--channel-send", "\(bytes)", "--stats", "--seconds", "14"])
            try await Task.sleep(for: .seconds(5))
            let cameraPublic = try run.lab.publicAddress(of: camera.host())
            let before = try await run.lab.run(host: viewer.router, ["conntrack", "-L", "-p", "udp", "-d", cameraPublic])
            let flushed = try await run.lab.run(host: viewer.router, ["conntrack", "-F"])
            #expect(flushed.status == 0, "\(flushed)")
            let r = try await run.finishedConnect(watching, timeout: .seconds(120))
            let after = try await run.lab.run(host: viewer.router, ["conntrack", "-L", "-p", "udp", "-d", cameraPublic])
            #expect(r.connected && r.path == direct, "\(r)")
            #expect((r.moves ?? []).isEmpty, "the viewer's side of the path did not change: \(r.moves ?? [])")
            // The camera followed the viewer's new port (its log of moves), once.
            let log = cameraProcess.output.stdout
            let rebindings = log.split(separator: "\n").filter { $0.contains("(rebinding)") }
            #expect(rebindings.count == 1, "camera: \(log)\nviewer router before: \(before.stdout)\nafter: \(after.stdout)")
            let (sent, video) = try Self.intact(r)
            print(String(format: "NAT rebinding followed: %@; longest gap between video frames %.0f ms (%d stalls over 500 ms)",
                         rebindings.first.map(String.init) ?? "-", video.longestGapMs, video.stalls))
            print("channel: \(sent.bytes) bytes in \(sent.seconds) s; video: \(video)")
        }
    }

    @Test func aDirectSessionFollowsAViewerThatMovesToAnotherNetwork() async throws {
        let camera = LabSite("cam", .fullCone)
        let home = LabSite("home", .portRestrictedCone)
        let away = LabSite("away", .portRestrictedCone)
        try await TravLab.with(sites: [camera, home, away]) { run in
            _ = try run.startCloud()
            let direct = "udp-hole-punch"
            let (uid, cameraProcess) = try await run.startCameraProcess(on: camera.host(), strategies: direct, extra: ["--video", "default"])
            let watching = try run.startConnect(from: home.host(), to: uid, strategies: direct, timeout: 15, paired: true,
                                                extra: ["--channel-send", "2000000", "--stats", "--seconds", "12"])
            try await Task.sleep(for: .seconds(5))
            // The viewer leaves its home network for another site's: new local address, new NAT, new public address.
            try await run.lab.roam(host: home.host(), to: away.name)
            let r = try await run.finishedConnect(watching, timeout: .seconds(120))
            #expect(r.connected && r.path == direct, "\(r)")
            let log = cameraProcess.output.stdout
            let awayPublic = try run.lab.publicAddress(of: away.host())
            let followed = log.split(separator: "\n").filter { $0.contains("(rebinding)") && $0.contains(awayPublic) }
            #expect(followed.count == 1, "camera: \(log) \(cameraProcess.output)\nviewer: \(r) \(watching.output)")
            let (_, video) = try Self.intact(r)
            print(String(format: "a viewer that changed networks was followed: %@; longest gap between video frames %.0f ms",
                         followed.first.map(String.init) ?? "-", video.longestGapMs))
        }
    }
}
