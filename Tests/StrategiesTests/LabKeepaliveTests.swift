import Foundation
import NATLab
import Testing

/// Why the keepalive lab cannot run here (it lists the routers' mappings with `conntrack` too), or nil.
private var keepaliveLabSkipReason: String? { TravLab.skipReason() ?? NATLab.skipReason(requiring: ["conntrack"]) }

/// A connected path stays usable through an idle longer than the routers' UDP conntrack timeout, over
/// real kernel NAT, because of the session's keepalives; without them the NATs forget a hole-punched path.
@Suite(.serialized, .enabled(if: keepaliveLabSkipReason == nil, Comment(rawValue: keepaliveLabSkipReason ?? "")))
struct LabKeepaliveTests {
    /// Port-restricted cones on both sides: a UDP path exists only while both routers keep its mapping.
    static let sites: [LabSite] = [LabSite("cam", .portRestrictedCone), LabSite("view", .portRestrictedCone)]
    /// The routers' UDP conntrack timeout in this lab (`natlab.sh`'s `NATLAB_UDP_TIMEOUT`).
    static let natTimeout = LabTopology(sites).udpTimeout
    /// Idle between the two echoes: half as long again as the NAT timeout.
    static let idle = natTimeout * 3 / 2
    /// When, into the idle, the routers' mappings are listed: past the NAT timeout, before the second echo.
    static let mappingsLookedAt = natTimeout + (idle - natTimeout) / 2
    static let holePunch = "direct-lan,stun-discovery,udp-hole-punch"
    static let keepaliveOff = ["--keepalive", "0"]

    @Test func holePunchedPathOutlivesTheNATTimeoutOnKeepalives() async throws {
        try await TravLab.with(sites: Self.sites) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: "cam-h1", strategies: Self.holePunch)
            let (r, mappings) = try await Self.idleConnect(run, to: uid, strategies: Self.holePunch)
            #expect(r.connected && r.echoVerified && r.path == "udp-hole-punch", "\(r)")
            #expect(r.idleSeconds == Self.idle && r.idleEchoVerified == true, "the path must outlive \(Self.idle) s idle: \(r)")
            #expect(!mappings.camera.isEmpty && !mappings.viewer.isEmpty,
                    "both routers still map the path \(Self.mappingsLookedAt) s into the idle: \(mappings)")
        }
    }

    /// The control: the same idle with keepalives off on both sides loses the path, so the test above can fail.
    @Test func withoutKeepalivesTheNATsForgetTheIdlePath() async throws {
        try await TravLab.with(sites: Self.sites) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: "cam-h1", strategies: Self.holePunch, extra: Self.keepaliveOff)
            let (r, mappings) = try await Self.idleConnect(run, to: uid, strategies: Self.holePunch, extra: Self.keepaliveOff)
            #expect(r.connected && r.echoVerified && r.path == "udp-hole-punch", "\(r)")
            #expect(r.idleSeconds == Self.idle && r.idleEchoVerified == false, "an unkept path must be lost after \(Self.idle) s idle: \(r)")
            #expect(mappings.camera.isEmpty && mappings.viewer.isEmpty,
                    "neither router maps the path \(Self.mappingsLookedAt) s into the idle: \(mappings)")
        }
    }

    /// The relay's own lifetimes (allocation, permission, channel) are minutes; the idle must not end the session either.
    @Test func relayedPathOutlivesTheNATTimeout() async throws {
        try await TravLab.with(sites: Self.sites) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: "cam-h1", strategies: "tls-relay")
            let (r, _) = try await Self.idleConnect(run, to: uid, strategies: "tls-relay")
            #expect(r.connected && r.echoVerified && r.path == "tls-relay", "\(r)")
            #expect(r.idleSeconds == Self.idle && r.idleEchoVerified == true, "the relayed path must outlive \(Self.idle) s idle: \(r)")
        }
    }

    /// `trav connect --idle` from the viewer (with `extra` arguments), and the routers' mappings seen during the idle.
    /// A setup that finds no path is tried once more: setting up is what the other lab tests are for.
    static func idleConnect(_ run: TravLab, to uid: String, strategies: String,
                            extra: [String] = []) async throws -> (TravLab.ConnectResult, Mappings) {
        var result: (TravLab.ConnectResult, Mappings)?
        for _ in 0..<2 where result?.0.connected != true {
            let connect = try run.startConnect(from: "view-h1", to: uid, strategies: strategies, extra: ["--idle", "\(idle)"] + extra)
            let mappings = try await mappingsAfterTheNATTimeout(run, connect)
            result = (try await run.finishedConnect(connect, timeout: .seconds(idle + 60)), mappings)
        }
        return result!
    }

    /// Each router's UDP conntrack entries from its host towards the other site.
    typealias Mappings = (camera: [String], viewer: [String])

    /// Waits for `connect` to start its idle, lets ``mappingsLookedAt`` seconds pass, then lists each router's
    /// UDP conntrack entries from its host towards the other site.
    static func mappingsAfterTheNATTimeout(_ run: TravLab, _ connect: LabProcess) async throws -> Mappings {
        for _ in 0..<300 {      // 30 s for the setup and the first echo
            guard connect.isRunning, !connect.output.stderr.contains("idle:") else { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        guard connect.output.stderr.contains("idle:") else { return ([], []) }
        try await Task.sleep(for: .seconds(mappingsLookedAt))
        let lab = run.lab
        func towards(_ from: String, _ to: String, on router: String) async throws -> [String] {
            let (inside, remote) = (try lab.address(of: from), try lab.publicAddress(of: to))
            return try await lab.udpConntrack(on: router).filter { $0.contains("src=\(inside) ") && $0.contains("dst=\(remote) ") }
        }
        return (try await towards("cam-h1", "view-h1", on: "cam-router"), try await towards("view-h1", "cam-h1", on: "view-router"))
    }
}
