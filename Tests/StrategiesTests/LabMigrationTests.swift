import Foundation
import NATLab
import Testing

/// A session that starts on the relay moves to a punched direct path while a reliable channel and a
/// video stream run, and falls back to the relay when the direct path goes dark; a session that starts
/// direct with a relay standing by falls back to it the same way; over real kernel NAT.
@Suite(.serialized, .enabled(if: TravLab.skipReason() == nil, Comment(rawValue: TravLab.skipReason() ?? "")))
struct LabMigrationTests {
    /// Drops everything between the two sites' public addresses in the viewer's router (the relay is
    /// elsewhere); returns when, in milliseconds since 1970.
    static func dropDirectPath(_ run: TravLab, camera: LabSite, viewer: LabSite) async throws -> Double {
        let cameraPublic = try run.lab.publicAddress(of: camera.host())
        let droppedAt = Date().timeIntervalSince1970 * 1000
        for direction in ["saddr", "daddr"] {
            let r = try await run.lab.run(host: viewer.router,
                                          ["nft", "insert", "rule", "ip", "natlab", "forward", "ip", direction, cameraPublic, "drop"])
            #expect(r.status == 0, "\(r)")
        }
        return droppedAt
    }

    @Test func aRelayedSessionMovesDirectThenFallsBackToTheRelayWhenTheDirectPathIsDropped() async throws {
        let camera = LabSite("cam", .portRestrictedCone)
        // The viewer's uplink at 4 Mbit/s stretches the transfer over both moves.
        let viewer = LabSite("view", .portRestrictedCone, link: LinkConditions(upKbps: 4000))
        try await TravLab.with(sites: [camera, viewer]) { run in
            _ = try run.startCloud()
            // The race may only use the relay; the hole punch runs in the background once the session is up.
            let moving = ["--upgrade", "udp-hole-punch"]
            let uid = try await run.startCamera(on: camera.host(), strategies: "tls-relay", extra: moving + ["--video", "default"])
            let bytes = 5_000_000
            let watching = try run.startConnect(from: viewer.host(), to: uid, strategies: "tls-relay", timeout: 15, paired: true,
                                                extra: moving + ["--channel-send", "\(bytes)", "--stats", "--seconds", "16"])
            // Time to connect through the relay and move (the move itself is read from the report below).
            try await Task.sleep(for: .seconds(7))
            let droppedAt = try await Self.dropDirectPath(run, camera: camera, viewer: viewer)
            let r = try await run.finishedConnect(watching, timeout: .seconds(120))
            #expect(r.connected && r.path == "tls-relay", "\(r)")
            let moves = r.moves ?? []
            let up = try #require(moves.first, "the session never moved: \(r)")
            #expect(up.to == "udp-hole-punch" && up.reason == "upgrade" && up.unixMs < droppedAt, "\(moves)")
            let back = try #require(moves.first { $0.to == "tls-relay" && $0.unixMs >= droppedAt }, "no fallback to the relay: \(moves)")
            #expect(back.reason == "path-dead" || back.reason == "peer-moved", "\(back)")
            print(String(format: "moved to the direct path %.0f ms after the session began; back on the relay %.0f ms after the direct path was dropped (%@)",
                         up.atMs, back.unixMs - droppedAt, back.reason))
            // Every byte of the reliable channel arrived, in order (the camera's SHA-256 of the stream matches).
            let sent = try #require(r.channelSend, "\(r)")
            #expect(sent.verified, "\(r)")
            // Video kept coming across both moves, never a frame whose reference was lost.
            let video = try #require(r.video, "\(r)")
            #expect(video.brokenFrames == 0 && video.frames > 200, "\(video)")
            print("channel: \(sent.bytes) bytes in \(sent.seconds) s; video: \(video)")
        }
    }

    @Test func aDirectSessionWithARelayStandbyFallsBackToItWhenTheDirectPathIsDropped() async throws {
        let camera = LabSite("cam", .portRestrictedCone)
        let viewer = LabSite("view", .portRestrictedCone, link: LinkConditions(upKbps: 4000))
        try await TravLab.with(sites: [camera, viewer]) { run in
            _ = try run.startCloud()
            // The race may use the hole punch and the relay: the punch wins, the relay connects beside it.
            let strategies = "udp-hole-punch,tls-relay"
            let uid = try await run.startCamera(on: camera.host(), strategies: strategies, extra: ["--relay-standby", "--video", "default"])
            let bytes = 5_000_000
            let watching = try run.startConnect(from: viewer.host(), to: uid, strategies: strategies, timeout: 15, paired: true,
                                                extra: ["--relay-standby", "--channel-send", "\(bytes)", "--stats", "--seconds", "14"])
            try await Task.sleep(for: .seconds(6))
            let droppedAt = try await Self.dropDirectPath(run, camera: camera, viewer: viewer)
            let r = try await run.finishedConnect(watching, timeout: .seconds(120))
            #expect(r.connected, "\(r)")
            #expect(r.attempts.contains { $0.strategy == "udp-hole-punch" && $0.outcome == "connected" }, "the session started direct: \(r)")
            let moves = r.moves ?? []
            #expect(!moves.contains { $0.unixMs < droppedAt }, "no move while the direct path worked: \(moves)")
            let back = try #require(moves.first, "no fallback to the relay: \(r)")
            #expect(back.from == "udp-hole-punch" && back.to == "tls-relay" && (back.reason == "path-dead" || back.reason == "peer-moved"), "\(moves)")
            print(String(format: "a direct session fell back to its standby relay %.0f ms after the direct path was dropped (%@)",
                         back.unixMs - droppedAt, back.reason))
            let sent = try #require(r.channelSend, "\(r)")
            #expect(sent.verified, "\(r)")
            let video = try #require(r.video, "\(r)")
            #expect(video.brokenFrames == 0 && video.frames > 200, "\(video)")
            print("channel: \(sent.bytes) bytes in \(sent.seconds) s; video: \(video)")
        }
    }

    @Test func aRoamingViewersRelayStandbyIsReplacedAndTheFallbackStillLandsOnIt() async throws {
        // A full-cone camera NAT lets the viewer's datagrams in from its new network, so the direct path
        // survives the roam (the camera follows it) and only the standby is left behind.
        let camera = LabSite("cam", .fullCone)
        // The 2 Mbit/s uplinks stretch the transfer over the roam and the fallback.
        let home = LabSite("home", .portRestrictedCone, link: LinkConditions(upKbps: 2000))
        let away = LabSite("away", .portRestrictedCone, link: LinkConditions(upKbps: 2000))
        try await TravLab.with(sites: [camera, home, away]) { run in
            // The relay's TCP keepalive, shortened (first probe after 2 s of silence), ends the roamed viewer's old
            // connection to it, and with it the old allocation; the metrics show the allocations held.
            let metrics = "\(run.lab.cloudAddresses[0]):9090"
            _ = try run.startCloud(["--metrics-listen", metrics, "--relay-keepalive-seconds", "2"])
            let strategies = "udp-hole-punch,tls-relay"
            let (uid, cameraProcess) = try await run.startCameraProcess(on: camera.host(), strategies: strategies,
                                                                        extra: ["--relay-standby", "--video", "default"])
            let watching = try run.startConnect(from: home.host(), to: uid, strategies: strategies, timeout: 15, paired: true,
                                                extra: ["--relay-standby", "--channel-send", "3000000", "--stats", "--seconds", "20"])
            try await Task.sleep(for: .seconds(5))
            // The viewer changes networks: its connection to the relay keeps a local address that no longer exists.
            try await run.lab.roam(host: home.host(), to: away.name)
            let roamedAt = Date().timeIntervalSince1970 * 1000
            // The camera logs the move when it follows the viewer's replacement standby. Bounded: 150 × 100 ms.
            var replacedLine: String?
            for _ in 0..<150 where replacedLine == nil {
                try await Task.sleep(for: .milliseconds(100))
                replacedLine = cameraProcess.output.stdout.split(separator: "\n").first { $0.contains("(standby-replaced)") }.map(String.init)
            }
            let replaced = try #require(replacedLine, "the camera never followed a replaced standby: \(cameraProcess.output)")
            let replacedAt = Date().timeIntervalSince1970 * 1000
            // Three allocations now (the camera's, the viewer's old and its replacement); the old one goes when the
            // relay's keepalive finds its connection dead. Bounded: 60 × 250 ms.
            var held: [Int] = []
            for _ in 0..<60 where held.last != 2 {
                let scraped = try await run.lab.run(host: "cloud", ["curl", "-s", "--max-time", "2", "http://\(metrics)/metrics"])
                if let line = scraped.stdout.split(separator: "\n").first(where: { $0.hasPrefix("turn_allocations ") }),
                   let value = Double(line.split(separator: " ").last ?? "") {
                    held.append(Int(value))
                }
                if held.last != 2 { try await Task.sleep(for: .milliseconds(250)) }
            }
            #expect(held.last == 2, "the roamed viewer's old allocation stayed: \(held)")
            let releasedAt = Date().timeIntervalSince1970 * 1000
            let droppedAt = try await Self.dropDirectPath(run, camera: camera, viewer: away)
            let r = try await run.finishedConnect(watching, timeout: .seconds(120))
            #expect(r.connected, "\(r)")
            let moves = r.moves ?? []
            let renewed = try #require(moves.first { $0.reason == "standby-replaced" }, "the viewer never replaced its standby: \(moves)")
            #expect(renewed.unixMs > roamedAt - 1000 && renewed.unixMs < droppedAt, "\(moves)")
            let back = try #require(moves.first { $0.to == "tls-relay" && $0.unixMs >= droppedAt && $0.reason != "standby-replaced" },
                                    "no fallback to the relay: \(moves) \(watching.output.stderr.suffix(2000))")
            #expect(back.reason == "path-dead" || back.reason == "peer-moved", "\(back)")
            #expect(back.route == renewed.route, "the fallback went to the replacement: \(moves)")
            let gap = back.unixMs - droppedAt
            #expect(gap < 2000, "\(moves)")
            let (sent, video) = try LabRebindingTests.intact(r)
            print(String(format: "standby replaced %.0f ms after the roam (camera: %@); after the direct path was dropped the session was on the replacement within %.0f ms (%@); longest gap between video frames %.0f ms",
                         renewed.unixMs - roamedAt, replaced, gap, back.reason, video.longestGapMs))
            print(String(format: "replacement seen by the camera %.0f ms after the roam; the old allocation gone %.0f ms after that (allocations held: %@); channel: %d bytes in %.2f s; video: %@",
                         replacedAt - roamedAt, releasedAt - replacedAt, "\(held)", sent.bytes, sent.seconds, "\(video)"))
        }
    }

    /// A roam that kills both paths at once: the camera's port-restricted NAT drops the viewer's datagrams from its new
    /// network, and the viewer's standby keeps its old local address. Both sides fall back to the dead standby; the
    /// viewer finds it silent, connects a replacement, and the session moves there and carries on.
    @Test func aRoamThatKillsTheDirectPathAndTheStandbyTogetherEndsOnAReplacementRelay() async throws {
        let camera = LabSite("cam", .portRestrictedCone)
        let home = LabSite("home", .portRestrictedCone, link: LinkConditions(upKbps: 2000))
        let away = LabSite("away", .portRestrictedCone, link: LinkConditions(upKbps: 2000))
        try await TravLab.with(sites: [camera, home, away]) { run in
            _ = try run.startCloud()
            let strategies = "udp-hole-punch,tls-relay"
            let uid = try await run.startCamera(on: camera.host(), strategies: strategies, extra: ["--relay-standby", "--video", "default"])
            let watching = try run.startConnect(from: home.host(), to: uid, strategies: strategies, timeout: 15, paired: true,
                                                extra: ["--relay-standby", "--upgrade", "none", "--channel-send", "3000000", "--stats",
                                                        "--seconds", "20"])
            try await Task.sleep(for: .seconds(5))
            try await run.lab.roam(host: home.host(), to: away.name)
            let roamedAt = Date().timeIntervalSince1970 * 1000
            let r = try await run.finishedConnect(watching, timeout: .seconds(120))
            #expect(r.connected, "\(r)")
            let moves = (r.moves ?? []).filter { $0.unixMs >= roamedAt - 500 }
            let fallback = try #require(moves.first { $0.to == "tls-relay" && $0.reason == "path-dead" },
                                        "no fallback after the roam: \(moves) \(watching.output.stderr.suffix(2000))")
            let replaced = try #require(moves.last { $0.from == "tls-relay" && $0.to == "tls-relay" && $0.reason == "path-dead" },
                                        "the dead standby was not replaced: \(moves)")
            #expect(replaced.unixMs > fallback.unixMs && replaced.route != fallback.route, "\(moves)")
            let (sent, video) = try LabRebindingTests.intact(r)
            print(String(format: "after the roam: fallback to the (dead) standby %.0f ms, on a replacement relay %.0f ms; longest gap between video frames %.0f ms; channel: %d bytes in %.2f s",
                         fallback.unixMs - roamedAt, replaced.unixMs - roamedAt, video.longestGapMs, sent.bytes, sent.seconds))
        }
    }

    /// The camera's own connection to the relay dies (its socket destroyed, so the relay deletes its allocation): no
    /// replacement from the viewer could reach the camera's old relayed address. The camera allocates afresh and offers
    /// the new address over the direct path; the viewer replaces its end toward it; a later fallback lands there.
    @Test func aCameraWhoseRelayConnectionDiesRenewsTheStandbyAndTheFallbackLandsOnIt() async throws {
        let camera = LabSite("cam", .portRestrictedCone)
        let viewer = LabSite("view", .portRestrictedCone, link: LinkConditions(upKbps: 2000))
        try await TravLab.with(sites: [camera, viewer]) { run in
            _ = try run.startCloud()
            let strategies = "udp-hole-punch,tls-relay"
            let (uid, cameraProcess) = try await run.startCameraProcess(
                on: camera.host(), strategies: strategies, extra: ["--relay-standby", "--video", "default", "--log-level", "info"])
            let watching = try run.startConnect(from: viewer.host(), to: uid, strategies: strategies, timeout: 15, paired: true,
                                                extra: ["--relay-standby", "--upgrade", "none", "--channel-send", "3000000", "--stats",
                                                        "--seconds", "20"])
            // The camera logs its end of the standby when it joins: `relay standing by … route=relay tls LOCAL:PORT -> …`.
            // Bounded: 150 × 100 ms.
            var localPort: String?
            for _ in 0..<150 where localPort == nil {
                try await Task.sleep(for: .milliseconds(100))
                localPort = cameraProcess.output.stderr.split(separator: "\n").lazy
                    .filter { $0.contains("relay standing by") }
                    .compactMap { line in line.firstMatch(of: /relay tls [0-9.]+:([0-9]+) ->/).map { String($0.1) } }.first
            }
            let port = try #require(localPort, "the camera's standby never joined: \(cameraProcess.output.stderr.suffix(2000))")
            try await Task.sleep(for: .seconds(2))
            // Destroy the camera's socket to the relay: the camera's read fails, the relay gets a reset and deletes the allocation.
            let killedAt = Date().timeIntervalSince1970 * 1000
            let killed = try await run.lab.run(host: camera.host(), ["ss", "-K", "-t", "sport", "=", ":\(port)"])
            #expect(killed.status == 0, "\(killed)")
            // The camera logs the move when the viewer reaches its renewed end. Bounded: 100 × 100 ms.
            var renewedLine: String?
            for _ in 0..<100 where renewedLine == nil {
                try await Task.sleep(for: .milliseconds(100))
                renewedLine = cameraProcess.output.stdout.split(separator: "\n").first { $0.contains("(standby-replaced)") }.map(String.init)
            }
            let renewed = try #require(renewedLine, "the camera never renewed its standby end: \(cameraProcess.output.stderr.suffix(3000))")
            let renewedAt = Date().timeIntervalSince1970 * 1000
            // The camera's end joins at the viewer's first ping; the viewer's, at the answer to it: time for that.
            try await Task.sleep(for: .seconds(1))
            let droppedAt = try await Self.dropDirectPath(run, camera: camera, viewer: viewer)
            let r = try await run.finishedConnect(watching, timeout: .seconds(120))
            #expect(r.connected, "\(r)")
            let moves = r.moves ?? []
            let replaced = try #require(moves.first { $0.reason == "standby-replaced" },
                                        "the viewer never replaced its standby: \(moves) \(watching.output.stderr.suffix(2000))")
            #expect(replaced.unixMs > killedAt && replaced.unixMs < droppedAt, "\(moves)")
            let back = try #require(moves.first { $0.to == "tls-relay" && $0.unixMs >= droppedAt && $0.reason != "standby-replaced" },
                                    "no fallback to the relay: \(moves) \(watching.output.stderr.suffix(2000))")
            #expect(back.reason == "path-dead" || back.reason == "peer-moved", "\(back)")
            #expect(back.route == replaced.route, "the fallback went to the renewed standby: \(moves)")
            let gap = back.unixMs - droppedAt
            #expect(gap < 2000, "\(moves)")
            let (sent, video) = try LabRebindingTests.intact(r)
            print(String(format: "camera's relay connection killed: the viewer's standby replaced %.0f ms later (camera: %@, seen %.0f ms after); after the direct path was dropped the session was on the renewed standby within %.0f ms (%@); longest gap between video frames %.0f ms; channel: %d bytes in %.2f s",
                         replaced.unixMs - killedAt, renewed, renewedAt - killedAt, gap, back.reason, video.longestGapMs, sent.bytes, sent.seconds))
        }
    }

    /// A session that won on TCP moves to a punched UDP path while a reliable channel and a video stream run, and
    /// falls back to its TCP path when UDP between the sites goes dark; over real kernel NAT.
    @Test func aSessionThatWonOnTCPMovesToUDPAndFallsBackToTCPWhenUDPIsDropped() async throws {
        let camera = LabSite("cam", .portRestrictedCone)
        let viewer = LabSite("view", .portRestrictedCone, link: LinkConditions(upKbps: 4000))
        try await TravLab.with(sites: [camera, viewer]) { run in
            _ = try run.startCloud()
            // The race may only use TCP; the hole punch runs in the background once the session is up.
            let moving = ["--upgrade", "udp-hole-punch"]
            let uid = try await run.startCamera(on: camera.host(), strategies: "tcp-simultaneous-open", extra: moving + ["--video", "default"])
            let watching = try run.startConnect(from: viewer.host(), to: uid, strategies: "tcp-simultaneous-open", timeout: 15, paired: true,
                                                extra: moving + ["--channel-send", "5000000", "--stats", "--seconds", "16"])
            try await Task.sleep(for: .seconds(7))
            // UDP between the two sites' public addresses goes dark in the viewer's router; TCP still passes.
            let cameraPublic = try run.lab.publicAddress(of: camera.host())
            let droppedAt = Date().timeIntervalSince1970 * 1000
            for direction in ["saddr", "daddr"] {
                let r = try await run.lab.run(host: viewer.router, ["nft", "insert", "rule", "ip", "natlab", "forward", "ip", direction,
                                                                    cameraPublic, "meta", "l4proto", "udp", "drop"])
                #expect(r.status == 0, "\(r)")
            }
            let r = try await run.finishedConnect(watching, timeout: .seconds(120))
            #expect(r.connected && r.path == "tcp-simultaneous-open", "\(r)")
            let moves = r.moves ?? []
            let up = try #require(moves.first, "the session never moved: \(r)")
            #expect(up.from == "tcp-simultaneous-open" && up.to == "udp-hole-punch" && up.reason == "upgrade" && up.unixMs < droppedAt, "\(moves)")
            let back = try #require(moves.first { $0.to == "tcp-simultaneous-open" && $0.unixMs >= droppedAt },
                                    "no fallback to TCP: \(moves) \(watching.output.stderr.suffix(2000))")
            #expect(back.reason == "path-dead" || back.reason == "peer-moved", "\(back)")
            let gap = back.unixMs - droppedAt
            #expect(gap < 2000, "\(moves)")
            let (sent, video) = try LabRebindingTests.intact(r)
            print(String(format: "TCP session moved to UDP %.0f ms after it began; back on TCP %.0f ms after UDP was dropped (%@); longest gap between video frames %.0f ms; channel: %d bytes in %.2f s",
                         up.atMs, gap, back.reason, video.longestGapMs, sent.bytes, sent.seconds))
        }
    }
}
