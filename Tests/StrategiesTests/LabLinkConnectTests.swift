import Foundation
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
