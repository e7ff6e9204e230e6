import Foundation
import NATLab
import Testing

/// UDP presence over real kernel NAT: a camera registers over TLS, drops it and stays reachable through its
/// NAT on authenticated UDP keepalives (past the routers' UDP timeout), and a viewer still connects to it;
/// behind a network that blocks UDP the camera keeps the same keepalives on a stream to the signalling port instead.
@Suite(.serialized, .enabled(if: TravLab.skipReason() == nil, Comment(rawValue: TravLab.skipReason() ?? "")))
struct LabPresenceTests {
    /// Established TLS connections at the cloud's signalling port, as `ss` lists them in the cloud's namespace.
    static func signallingConnections(_ run: TravLab) async throws -> [String] {
        let r = try await run.lab.run(host: "cloud", ["ss", "-Htn", "state", "established", "sport", "=", ":\(run.signallingPort)"])
        return r.stdout.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
    }

    /// Polls (every 500 ms, at most `seconds`) until the cloud holds `count` signalling connections; returns the last list.
    static func waitForSignallingConnections(_ run: TravLab, count: Int, seconds: Int) async throws -> [String] {
        var last: [String] = []
        for _ in 0..<(seconds * 2) {
            last = try await signallingConnections(run)
            if last.count == count { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        return last
    }

    @Test func cameraBehindNATDropsTLSAndStaysReachableOverUDPPresence() async throws {
        let sites = [LabSite("cam", .portRestrictedCone), LabSite("view", .portRestrictedCone)]
        try await TravLab.with(sites: sites) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: "cam-h1")
            // Registered over TLS, confirmed over UDP, then TLS closed after its linger (10 s).
            let left = try await Self.waitForSignallingConnections(run, count: 0, seconds: 30)
            #expect(left.isEmpty, "the camera still holds TLS: \(left)")
            // Longer than the router's UDP timeout: only the keepalives keep the camera's mapping for the wake.
            try await Task.sleep(for: .seconds(LabTopology(sites).udpTimeout + 5))
            #expect(try await Self.signallingConnections(run).isEmpty, "the camera came back on TLS by itself")
            let r = try await run.connect(from: "view-h1", to: uid, timeout: 20)
            #expect(r.connected && r.echoVerified, "the viewer reaches the camera woken over UDP: \(r)")
        }
    }

    @Test func cameraBehindUDPBlockingNetworkDropsTLSForAPresenceStreamAndStaysReachable() async throws {
        let sites = [LabSite("cam", .udpBlocked), LabSite("view", .portRestrictedCone)]
        try await TravLab.with(sites: sites) { run in
            _ = try run.startCloud()
            let (uid, camera) = try await run.startCameraProcess(on: "cam-h1")
            // The UDP probes go unanswered (3 s), the stream to the signalling port confirms, TLS closes after its linger (10 s).
            var onStream = false
            for _ in 0..<60 where !onStream {
                try await Task.sleep(for: .milliseconds(500))
                onStream = camera.output.stdout.contains("presence stream (TLS closed)")
            }
            #expect(onStream, "no presence stream: \(camera.output.stdout)")
            let held = try await Self.signallingConnections(run)
            #expect(held.count == 1, "one connection, the stream: \(held)")
            let r = try await run.connect(from: "view-h1", to: uid, timeout: 20)
            #expect(r.connected && r.echoVerified, "the viewer reaches the camera woken on its presence stream: \(r)")
        }
    }
}
