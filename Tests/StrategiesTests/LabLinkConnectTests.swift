import Foundation
import Media
import NATLab
import Testing

/// trav over imperfect access lines: delay, jitter, a slow uplink and a short outage change how long
/// things take, never which path wins or whether the camera stays reachable.
@Suite(.serialized, .enabled(if: TravLab.skipReason() == nil, Comment(rawValue: TravLab.skipReason() ?? "")))
struct LabLinkConnectTests {
    static let strategies = "direct-lan,stun-discovery,udp-hole-punch,tcp-simultaneous-open"

    @Test func aHolePunchCarriesTheEchoAcrossDelayedJitteryLinesAndASlowUplink() async throws {
        // The camera on dsl (1 Mbit/s up, 30 ms), the viewer 50 ± 10 ms away: no loss, so no luck involved.
        let camera = LabSite("cam", .portRestrictedCone, link: .profile(.dsl))
        let viewer = LabSite("view", .restrictedCone, link: LinkConditions(delayMs: 50, jitterMs: 10))
        try await TravLab.with(sites: [camera, viewer]) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: camera.host(), strategies: Self.strategies)
            // The echo is stop-and-wait in 1000-byte chunks: 20 round trips of ~170 ms here, well inside its 10 s.
            let r = try await run.connect(from: viewer.host(), to: uid, strategies: Self.strategies, timeout: 15,
                                          echoBytes: 20_000, paired: true)
            #expect(r.connected && r.echoVerified && r.path == "udp-hole-punch", "\(r)")
        }
    }

    /// Connects over a viewer's line that loses 10 % of packets each way.
    static let lossyConnects = 10

    @Test func everyConnectOverATenPercentLossLineSucceedsAndCarriesAChannelMessage() async throws {
        // Every step crosses the lossy line: the cloud's TLS, STUN, punching, the Noise handshake and hello, the
        // channel engine's INIT/COOKIE handshake, the channel's open and a message with its answer. Each must
        // repeat on its own timer: no retry here, every connect counts.
        let camera = LabSite("cam", .open)
        let viewer = LabSite("view", .portRestrictedCone, link: LinkConditions(delayMs: 20, lossPercent: 10))
        try await TravLab.with(sites: [camera, viewer]) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: camera.host(), strategies: Self.strategies)
            var toMessage: [Double] = []
            for i in 0..<Self.lossyConnects {
                let r = try await run.connect(from: viewer.host(), to: uid, strategies: Self.strategies, timeout: 20, echoBytes: 0,
                                              paired: true, extra: ["--channel-send", "1000"])
                let sent = r.channelSend
                #expect(r.connected && sent?.verified == true, "connect \(i + 1) of \(Self.lossyConnects): \(r)")
                if let setup = r.setupMs, let sent, sent.verified { toMessage.append(setup + (sent.openMs ?? 0) + sent.seconds * 1000) }
                print(String(format: "lossy connect %d: setup %.0f ms, channel open %.0f ms, message answered %.0f ms, handshake RTT %.0f ms, %@",
                             i + 1, r.setupMs ?? -1, sent?.openMs ?? -1, (sent?.seconds ?? -1) * 1000, r.roundTripMs ?? -1, r.path ?? "-"))
            }
            // Reported, not asserted (timings depend on the machine's load and the loss's luck).
            print(String(format: "10 %% loss, %d connects: connect to an answered channel message p50 %.0f ms, max %.0f ms",
                         toMessage.count, percentile(toMessage, 0.5) ?? -1, toMessage.max() ?? -1))
        }
    }

    @Test func aCameraIsReachableAgainAfterItsLineWasCutForTwoSeconds() async throws {
        let camera = LabSite("cam", .fullCone, link: .ideal)
        let viewer = LabSite("view", .portRestrictedCone)
        try await TravLab.with(sites: [camera, viewer]) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: camera.host(), strategies: Self.strategies)
            try await run.lab.outage(site: camera.name, for: .seconds(2))
            let r = try await run.connect(from: viewer.host(), to: uid, strategies: Self.strategies, timeout: 15, paired: true)
            #expect(r.connected && r.echoVerified, "\(r)")
        }
    }
}
