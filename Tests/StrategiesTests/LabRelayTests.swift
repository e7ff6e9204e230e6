import Foundation
import NATLab
import Testing

/// Pairs no direct strategy can carry, over real kernel NAT: the cloud's relay must (`tls-relay`).
@Suite(.serialized, .enabled(if: TravLab.skipReason() == nil, Comment(rawValue: TravLab.skipReason() ?? "")))
struct LabRelayTests {
    static let sites: [LabSite] = [
        LabSite("sym", .symmetric), LabSite("symb", .symmetric), LabSite("udpb", .udpBlocked), LabSite("udpbb", .udpBlocked),
    ]
    /// Port 443: the only one a `tcp443-only` network lets out.
    static let httpsPort: UInt16 = 443

    @Test(arguments: zip(["sym", "udpb"], ["symb", "udpbb"]))
    func pairsWithoutADirectPathFallBackToTheRelay(_ camera: String, _ viewer: String) async throws {
        try await TravLab.with(sites: Self.sites) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: "\(camera)-h1")
            let r = try await run.connect(from: "\(viewer)-h1", to: uid)
            #expect(r.connected && r.echoVerified, "\(camera) camera × \(viewer) viewer: \(r)")
            #expect(r.path == "tls-relay", "\(camera) camera × \(viewer) viewer: \(r)")
            #expect(r.attempts.contains { $0.strategy == "udp-hole-punch" && $0.outcome != "connected" }, "\(r)")
        }
    }

    @Test func tcp443OnlyPairConnectsThroughTheRelaysTLSOnPort443() async throws {
        // Signalling and the relay's TLS both on 443, on the cloud's two addresses.
        try await TravLab.with(sites: [LabSite("t443", .tcp443Only), LabSite("t443b", .tcp443Only)],
                               signallingPort: Self.httpsPort) { run in
            let a = run.lab.cloudAddresses
            _ = try run.startCloud(["--relay-listen", a[1], "--relay-tls-port", "\(Self.httpsPort)"])
            let uid = try await run.startCamera(on: "t443-h1")
            let r = try await run.connect(from: "t443b-h1", to: uid)
            #expect(r.connected && r.echoVerified, "tcp443-only × tcp443-only: \(r)")
            #expect(r.path == "tls-relay", "tcp443-only × tcp443-only: \(r)")
        }
    }
}
