import Foundation
import NATLab
import Testing

/// Pairs no direct strategy can carry, over real kernel NAT: the cloud's relay must (`tls-relay`).
@Suite(.serialized, .enabled(if: LabRun.skipReason == nil, Comment(rawValue: LabRun.skipReason ?? "")))
struct LabRelayTests {
    static let sites: [LabSite] = [
        LabSite("sym", .symmetric), LabSite("symb", .symmetric), LabSite("udpb", .udpBlocked), LabSite("udpbb", .udpBlocked),
    ]

    @Test(arguments: zip(["sym", "udpb"], ["symb", "udpbb"]))
    func pairsWithoutADirectPathFallBackToTheRelay(_ camera: String, _ viewer: String) async throws {
        try await LabRun.with(sites: Self.sites) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: "\(camera)-h1")
            let r = try await run.connect(from: "\(viewer)-h1", to: uid)
            #expect(r.connected && r.echoVerified, "\(camera) camera × \(viewer) viewer: \(r)")
            #expect(r.path == "tls-relay", "\(camera) camera × \(viewer) viewer: \(r)")
            #expect(r.attempts.contains { $0.strategy == "udp-hole-punch" && $0.outcome != "connected" }, "\(r)")
        }
    }
}
