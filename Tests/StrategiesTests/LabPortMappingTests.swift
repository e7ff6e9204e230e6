import Foundation
import NATLab
import STUNLite
import Strategies
import Testing

/// Why the port-mapping lab cannot run here (the lab, `trav` or miniupnpd missing).
let portMappingLabSkipReason: String? =
    TravLab.skipReason() ?? NATLab.skipReason(requiring: ["miniupnpd"]).map { $0 + " (apt-get install miniupnpd-nftables)" }

/// Router port mapping against a real miniupnpd in the lab router: a camera behind a symmetric NAT,
/// seen from a viewer behind another (where punching gives up), is reached directly through the
/// mapping its router granted, by each protocol, and through the viewer's router's mapping when only that one maps; the mapping is gone once the session or the camera
/// ends; `trav probe` tells which protocols a gateway speaks; a router that maps nothing costs the
/// race nothing but that strategy.
@Suite(.serialized, .enabled(if: portMappingLabSkipReason == nil, Comment(rawValue: portMappingLabSkipReason ?? "")))
struct LabPortMappingTests {

    /// Symmetric × symmetric: hole punching gives up at once ("both symmetric"); only a mapping gets through.
    static let sites = [LabSite("cam", .symmetric), LabSite("view", .symmetric)]

    /// Until the camera's side of the session has closed (it notices the viewer left), at most `limit`.
    static func mappings(on router: String, in lab: Lab, becoming wanted: (Int) -> Bool, limit: Duration = .seconds(10)) async throws -> [String] {
        let deadline = ContinuousClock.now + limit
        var now = try await lab.portMappings(on: router)
        while !wanted(now.count), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            now = try await lab.portMappings(on: router)
        }
        return now
    }

    @Test(arguments: ["pcp", "nat-pmp", "upnp-igd"])
    func symmetricCameraIsReachedThroughItsRoutersMapping(protocolName: String) async throws {
        try await TravLab.with(sites: Self.sites) { run in
            _ = try run.startCloud()
            let lab = run.lab
            _ = try await lab.startPortMapping(site: "cam", stun: lab.cloudAddresses)
            #expect(try await lab.portMappings(on: "cam-router").isEmpty)
            let uid = try await run.startCamera(on: "cam-h1", strategies: "port-mapping:\(protocolName),udp-hole-punch")
            let viewer = try run.startConnect(from: "view-h1", to: uid, strategies: "port-mapping,udp-hole-punch", extra: ["--idle", "5"])
            let camera = try lab.address(of: "cam-h1")
            let router = try lab.address(of: "cam-router")
            // While the session lasts, the router forwards a UDP port to the camera (the camera may also
            // hold one for a gathering of its own that it is about to release).
            let held = try await Self.mappings(on: "cam-router", in: lab, becoming: { $0 >= 1 }, limit: .seconds(20))
            #expect(!held.isEmpty && held.allSatisfy { $0.contains("dnat ip to \(camera):") }, "\(held)")
            let r = try await run.finishedConnect(viewer, timeout: .seconds(40))
            #expect(r.connected && r.echoVerified && r.idleEchoVerified == true, "\(r)")
            #expect(r.path == "port-mapping", "\(r)")
            let punch = r.attempts.first { $0.strategy == "udp-hole-punch" }
            #expect(punch?.outcome == "failed" && punch?.error?.contains("symmetric") == true, "punching cannot work here: \(r)")
            #expect(r.route?.contains("\(protocolName) mapping \(router):") == true,
                    "the report names the protocol and the mapped address: \(r.route ?? "-")")
            // The session is over: the camera deleted its mapping.
            let after = try await Self.mappings(on: "cam-router", in: lab, becoming: { $0 == 0 }, limit: .seconds(50))
            #expect(after.isEmpty, "mapping left on the router after the session: \(after)")
        }
    }

    /// The other way round: the camera's router maps nothing, the viewer's does; the viewer offers its mapping and
    /// the camera probes it. The viewer's mapping is gone once its session ends.
    @Test func symmetricViewerIsReachedThroughItsOwnRoutersMapping() async throws {
        try await TravLab.with(sites: Self.sites) { run in
            _ = try run.startCloud()
            let lab = run.lab
            _ = try await lab.startPortMapping(site: "view", stun: lab.cloudAddresses)
            let uid = try await run.startCamera(on: "cam-h1", strategies: "port-mapping,udp-hole-punch")
            let viewer = try run.startConnect(from: "view-h1", to: uid, strategies: "port-mapping,udp-hole-punch", extra: ["--idle", "5"])
            let viewerHost = try lab.address(of: "view-h1")
            let router = try lab.address(of: "view-router")
            let held = try await Self.mappings(on: "view-router", in: lab, becoming: { $0 >= 1 }, limit: .seconds(20))
            #expect(!held.isEmpty && held.allSatisfy { $0.contains("dnat ip to \(viewerHost):") }, "\(held)")
            let r = try await run.finishedConnect(viewer, timeout: .seconds(40))
            #expect(r.connected && r.echoVerified && r.idleEchoVerified == true, "\(r)")
            #expect(r.path == "port-mapping", "\(r)")
            #expect(r.route?.contains("mapping \(router):") == true, "the report names the viewer's mapping: \(r.route ?? "-")")
            let after = try await Self.mappings(on: "view-router", in: lab, becoming: { $0 == 0 }, limit: .seconds(20))
            #expect(after.isEmpty, "mapping left on the viewer's router after the session: \(after)")
        }
    }

    @Test func cameraThatStopsMidSessionDeletesItsMapping() async throws {
        try await TravLab.with(sites: Self.sites) { run in
            _ = try run.startCloud()
            let lab = run.lab
            _ = try await lab.startPortMapping(site: "cam", stun: lab.cloudAddresses)
            let (uid, camera) = try await run.startCameraProcess(on: "cam-h1", strategies: "port-mapping:pcp")
            let viewer = try run.startConnect(from: "view-h1", to: uid, strategies: "port-mapping", extra: ["--idle", "30"])
            // Only once the session is up (the mapping exists from the camera's gathering on).
            let deadline = ContinuousClock.now + .seconds(20)
            while !camera.output.stdout.contains("viewer connected"), viewer.isRunning, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            try #require(camera.output.stdout.contains("viewer connected via port-mapping"), "\(camera.output) \(viewer.output)")
            let held = try await lab.portMappings(on: "cam-router")
            #expect(!held.isEmpty, "the session's mapping")
            kill(camera.pid, SIGTERM)   // ends the camera, not the viewer: its session is still open
            let after = try await Self.mappings(on: "cam-router", in: lab, becoming: { $0 == 0 }, limit: .seconds(15))
            #expect(after.isEmpty, "mapping left on the router after the camera stopped: \(after); camera: \(camera.output)")
            #expect(viewer.isRunning, "the viewer was still in its session when the mapping went: \(viewer.output)")
            viewer.stop()
        }
    }

    @Test func routerWithoutPortMappingFailsFastAndTheRaceGoesOn() async throws {
        try await TravLab.with(sites: [LabSite("cam", .portRestrictedCone), LabSite("view", .portRestrictedCone)]) { run in
            _ = try run.startCloud()
            let strategies = "port-mapping,udp-hole-punch"
            let uid = try await run.startCamera(on: "cam-h1", strategies: strategies)
            let r = try await run.connect(from: "view-h1", to: uid, strategies: strategies)
            #expect(r.connected && r.echoVerified && r.path == "udp-hole-punch", "\(r)")
            let mapping = r.attempts.first { $0.strategy == "port-mapping" }
            #expect(mapping != nil && mapping?.outcome != "connected", "the failed mapping is in the report: \(r)")
        }
    }

    struct ProbeJSON: Decodable { var portMapping: PortMappingProbeReport? }

    @Test func probeReportsWhichProtocolsTheGatewaySpeaks() async throws {
        try await TravLab.with(sites: Self.sites) { run in
            _ = try run.startCloud()
            let lab = run.lab
            _ = try await lab.startPortMapping(site: "cam", stun: lab.cloudAddresses)
            func probe(_ host: String) async throws -> PortMappingProbeReport? {
                let r = try await lab.run(host: host, [run.trav, "probe", "--server", lab.cloudAddresses[0], "--json", "--no-tcp"], timeout: .seconds(30))
                let line = try #require(r.stdout.split(separator: "\n").last(where: { $0.hasPrefix("{") }), "\(r)")
                return try JSONDecoder().decode(ProbeJSON.self, from: Data(line.utf8)).portMapping
            }
            let router = try lab.address(of: "cam-router")
            let mapped = try #require(try await probe("cam-h1"))
            #expect(mapped.pcp == .yes && mapped.natPMP == .yes && mapped.upnpIGD == .yes, "\(mapped)")
            #expect(mapped.gateway == "10.1.0.1" && mapped.externalAddress == router, "\(mapped)")
            let plain = try #require(try await probe("view-h1"))
            #expect(plain.pcp == .no && plain.natPMP == .no && plain.upnpIGD == .no && plain.summary == "none", "\(plain)")
            // Asking created nothing.
            #expect(try await lab.portMappings(on: "cam-router").isEmpty)
        }
    }
}
