import Foundation
import NATLab
import Testing

/// Camera and viewer as real processes in the NAT lab, the cloud in the lab's "internet".
@Suite(.serialized, .enabled(if: TravLab.skipReason() == nil, Comment(rawValue: TravLab.skipReason() ?? "")))
struct LabConnectTests {
    @Test func sameLANConnectsDirectlyAlsoWithTheCloudStopped() async throws {
        try await TravLab.with(sites: [LabSite("lan", .portRestrictedCone, hosts: 2)]) { run in
            let cloud = try run.startCloud()
            let uid = try await run.startCamera(on: "lan-h1")
            let first = try await run.connect(from: "lan-h2", to: uid)
            #expect(first.connected && first.echoVerified, "\(first)")
            #expect(first.path == "direct-lan", "\(first)")
            cloud.stop()
            try await Task.sleep(for: .milliseconds(300))
            let offline = try await run.connect(from: "lan-h2", to: uid)
            #expect(offline.connected && offline.echoVerified, "\(offline)")
            #expect(offline.path == "direct-lan", "\(offline)")
        }
    }

    @Test func fullConeCameraAndPortRestrictedViewerConnectByStunDiscovery() async throws {
        try await TravLab.with(sites: [LabSite("cam", .fullCone), LabSite("view", .portRestrictedCone)]) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: "cam-h1", strategies: "direct-lan,stun-discovery")
            let r = try await run.connect(from: "view-h1", to: uid, strategies: "direct-lan,stun-discovery")
            #expect(r.connected && r.echoVerified, "\(r)")
            #expect(r.path == "stun-discovery", "\(r)")
            #expect(r.attempts.first { $0.strategy == "direct-lan" }?.outcome != "connected")
        }
    }

    @Test func portRestrictedCameraIsNotReachedByStunDiscoveryAlone() async throws {
        // stun-discovery does not punch: a camera whose NAT filters is out of its reach, and the
        // report says why instead of hanging.
        try await TravLab.with(sites: [LabSite("cam", .portRestrictedCone), LabSite("view", .portRestrictedCone)]) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: "cam-h1", strategies: "stun-discovery")
            let r = try await run.connect(from: "view-h1", to: uid, strategies: "stun-discovery", timeout: 4)
            #expect(!r.connected, "\(r)")
            #expect(r.attempts.first?.outcome == "failed", "\(r)")
        }
    }
}

