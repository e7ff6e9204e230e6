import Foundation
import NATLab
import Testing

/// The camera × viewer matrix over real kernel NAT: which pairs get a direct path, and by which strategy.
@Suite(.serialized, .enabled(if: TravLab.skipReason() == nil, Comment(rawValue: TravLab.skipReason() ?? "")))
struct LabHolePunchTests {
    struct Pair: Sendable, CustomTestStringConvertible {
        var camera: String
        var viewer: String
        /// Strategies any of which may win; empty: no direct path must be found.
        var winners: Set<String>
        /// True for the pair that needs the (probabilistic) birthday method.
        var birthday = false
        var testDescription: String { "\(camera) camera × \(viewer) viewer" }
    }

    static let sites: [LabSite] = [
        LabSite("pub", .open), LabSite("fc", .fullCone), LabSite("rc", .restrictedCone),
        LabSite("prc", .portRestrictedCone), LabSite("prcb", .portRestrictedCone), LabSite("sym", .symmetric),
        LabSite("symb", .symmetric), LabSite("udpb", .udpBlocked), LabSite("dbl", .doubleNAT),
    ]
    static let punch: Set<String> = ["udp-hole-punch"]
    static let anyUDP: Set<String> = ["udp-hole-punch", "stun-discovery"]

    static let pairs: [Pair] = [
        Pair(camera: "prc", viewer: "prcb", winners: punch),
        Pair(camera: "rc", viewer: "prc", winners: punch),
        Pair(camera: "fc", viewer: "prc", winners: anyUDP),
        // A camera on a public address is also reached at its host address: direct-lan is as direct.
        Pair(camera: "pub", viewer: "sym", winners: anyUDP.union(["direct-lan"])),
        Pair(camera: "dbl", viewer: "prc", winners: punch),
        Pair(camera: "sym", viewer: "fc", winners: punch),
        Pair(camera: "sym", viewer: "rc", winners: punch),
        Pair(camera: "sym", viewer: "prc", winners: punch, birthday: true),
        Pair(camera: "udpb", viewer: "prc", winners: ["tcp-simultaneous-open"]),
        Pair(camera: "sym", viewer: "symb", winners: []),
    ]

    @Test func natMatrix() async throws {
        let strategies = "direct-lan,stun-discovery,udp-hole-punch,tcp-simultaneous-open"
        try await TravLab.with(sites: Self.sites) { run in
            _ = try run.startCloud()
            var uids: [String: String] = [:]
            for camera in Set(Self.pairs.map(\.camera)) {
                uids[camera] = try await run.startCamera(on: "\(camera)-h1", strategies: strategies)
            }
            for pair in Self.pairs {
                var r = try await run.connect(from: "\(pair.viewer)-h1", to: uids[pair.camera]!, strategies: strategies)
                if pair.birthday && !r.connected {
                    // The birthday method is probabilistic (≈99.97% per attempt once the hard side's
                    // mappings are open; less on a loaded machine): one more attempt, not more.
                    r = try await run.connect(from: "\(pair.viewer)-h1", to: uids[pair.camera]!, strategies: strategies)
                }
                if pair.winners.isEmpty {
                    #expect(!r.connected, "\(pair.testDescription): \(r)")
                    let punch = r.attempts.first { $0.strategy == "udp-hole-punch" }
                    #expect(punch?.error?.contains("symmetric") == true, "\(pair.testDescription): the report must say why: \(r)")
                } else {
                    #expect(r.connected && r.echoVerified, "\(pair.testDescription): \(r)")
                    #expect(pair.winners.contains(r.path ?? ""), "\(pair.testDescription): \(r)")
                }
                #expect(Set(r.attempts.map(\.strategy)) == Set(strategies.split(separator: ",").map(String.init)),
                        "every strategy is in the report: \(r)")
            }
        }
    }
}
