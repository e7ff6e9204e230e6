import Foundation
import NATLab
import STUNLite
import Testing

/// `trav probe` behind every NAT kind of the lab, against `trav stun-server` in the cloud; coturn's
/// `turnutils_natdiscovery`, run against the same server, is the independent referee.
@Suite(.serialized, .disabled(if: Coturn.skipReason != nil, Comment(rawValue: Coturn.skipReason ?? "")))
struct ProbeLabTests {
    /// The built `trav` executable: `.build/debug/trav` at the repository root (`swift build` makes it).
    static let trav = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".build/debug/trav").path

    /// How long a probe of a UDP-blocked path may take, process start included.
    static let blockedReportLimit = Duration.seconds(5)

    /// Starts `trav stun-server` on both cloud addresses (RFC 5780) at 3478, and a plain one on 443.
    static func startServers(in lab: Lab) async throws {
        let cloud = lab.cloudAddresses
        _ = try lab.spawn(host: "cloud", [trav, "stun-server", "--listen", cloud[0], "--alternate-ip", cloud[1],
                                          "--alternate-port", "3479"])
        _ = try lab.spawn(host: "cloud", [trav, "stun-server", "--listen", cloud[0], "--port", "443"])
        try await lab.waitForListener(host: "cloud", port: 3479, udp: true)
        try await lab.waitForListener(host: "cloud", port: 443, udp: false)
    }

    /// Runs `trav probe ARGS --json` in `host` and decodes its report.
    static func probe(_ lab: Lab, host: String, _ extra: [String] = [], timeout: Duration = .seconds(30))
        async throws -> (NATProbeReport, Duration) {
        let started = ContinuousClock.now
        let result = try await lab.run(host: host, [trav, "probe", "--server", lab.cloudAddresses[0], "--json"] + extra,
                                       timeout: timeout)
        let took = ContinuousClock.now - started
        try #require(result.succeeded, "trav probe in \(host): \(result)")
        let report = try JSONDecoder().decode(NATProbeReport.self, from: Data(result.stdout.utf8))
        return (report, took)
    }

    /// Our word for a lab kind's claimed behaviour: `none` for the mapping of a site without NAT.
    static func expectedMapping(_ kind: NATKind) -> String? {
        kind == .open ? "none" : kind.claimedMapping?.rawValue
    }

    @Test func probeClassifiesEveryNATKindAsTheLabBuildsIt() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.trav), "build trav first (swift build): \(Self.trav)")
        let sites = NATKind.allCases.enumerated().map { LabSite("p\($0.offset)", $0.element) }
        try await NATLab.withLab(sites: sites) { lab in
            try await Self.startServers(in: lab)
            for site in sites {
                let kind = site.kind
                let host = site.host()
                let extra = kind == .tcp443Only ? ["--tcp-port", "3478", "--tcp-port", "443"] : []
                let (r, took) = try await Self.probe(lab, host: host, extra)
                if kind.allowsUDP {
                    #expect(r.udp == .yes, "\(kind): \(r)")
                    #expect(r.mapping.rawValue == Self.expectedMapping(kind), "\(kind) mapping: \(r)")
                    #expect(r.filtering.rawValue == kind.claimedFiltering?.rawValue, "\(kind) filtering: \(r)")
                    #expect(r.natType.rawValue == (kind == .doubleNAT ? "port-restricted-cone" : kind.rawValue),
                            "\(kind) type: \(r)")
                    let publicIP = try lab.publicAddress(of: host)
                    #expect(r.mappedAddress?.ip.description == publicIP, "\(kind): \(r)")
                    // The lab's NATs do not hairpin; masquerade keeps ports unless fully random.
                    #expect(r.hairpinning == (kind == .open ? .notTested : .no), "\(kind) hairpin: \(r)")
                    #expect(r.portPreservation == (kind == .symmetric ? .no : .yes), "\(kind) ports: \(r)")
                    #expect(r.tcp == .yes, "\(kind) tcp: \(r)")

                    // The referee: coturn's natdiscovery against our server, where it concludes something.
                    let refereeM = NATDiscoveryReport(parsing: try await lab.run(
                        host: host, ["turnutils_natdiscovery", "-m", lab.cloudAddresses[0]], timeout: .seconds(20)).stdout)
                    let refereeF = NATDiscoveryReport(parsing: try await lab.run(
                        host: host, ["turnutils_natdiscovery", "-f", lab.cloudAddresses[0]], timeout: .seconds(20)).stdout)
                    #expect(refereeM.mapping != nil || refereeF.filtering != nil, "\(kind): natdiscovery concluded nothing")
                    if let m = refereeM.mapping {
                        // natdiscovery calls "no NAT" endpoint-independent.
                        let ours = r.mapping == NATBehaviour.none ? "endpoint-independent" : r.mapping.rawValue
                        #expect(m.rawValue == ours, "\(kind): natdiscovery mapping \(m), ours \(r.mapping)")
                    }
                    if let f = refereeF.filtering {
                        #expect(f.rawValue == r.filtering.rawValue, "\(kind): natdiscovery filtering \(f), ours \(r.filtering)")
                    }
                } else {
                    #expect(r.udp == .no && r.natType == .udpBlocked, "\(kind): \(r)")
                    #expect(r.mapping == .unknown && r.filtering == .unknown && r.mappedAddress == nil, "\(kind): \(r)")
                    #expect(took < Self.blockedReportLimit, "\(kind): UDP blocked reported after \(took)")
                    #expect(r.advice.contains("UDP is blocked"), "\(kind): \(r.advice)")
                    if kind == .tcp443Only {
                        #expect(r.tcpPorts == [NATProbeTCPResult(port: 3478, ok: false),
                                               NATProbeTCPResult(port: 443, ok: true, latencyMs: r.tcpPorts.last?.latencyMs)],
                                "\(kind) tcp: \(r.tcpPorts)")
                    } else {
                        #expect(r.tcp == .yes, "\(kind) tcp: \(r)")
                    }
                }
            }
        }
    }

    @Test func lifetimeBisectionFindsTheConntrackTimeout() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.trav), "build trav first (swift build): \(Self.trav)")
        let site = LabSite("life", .portRestrictedCone)
        try await NATLab.withLab(LabTopology([site], udpTimeout: 3)) { lab in
            try await Self.startServers(in: lab)
            let (r, _) = try await Self.probe(lab, host: site.host(),
                                              ["--no-tcp", "--lifetime", "--lifetime-max", "6", "--lifetime-resolution", "1"],
                                              timeout: .seconds(60))
            #expect(r.natType == .portRestrictedCone)
            let alive = try #require(r.bindingLifetimeSeconds, "\(r)")
            let gone = try #require(r.bindingExpiredAfterSeconds, "\(r)")
            // Mappings live 3 s idle: survived at least 1.5 s, gone by 6 s, bracket around 3 s.
            #expect(alive >= 1.5 && alive <= 3.5, "alive \(alive)")
            #expect(gone >= 2.5 && gone <= 6, "gone \(gone)")
            #expect(alive < gone)
        }
    }
}
