import Foundation
import NATLab
import Testing

/// Each NAT kind, judged by coturn: the lab builds what it claims (RFC 4787 mapping and filtering).
@Suite(.disabled(if: Coturn.skipReason != nil, Comment(rawValue: Coturn.skipReason ?? "")))
struct NATKindBehaviourTests {
    @Test("natdiscovery classifies each kind as the kind claims", arguments: NATKind.allCases)
    func kindBehavesAsItClaims(_ kind: NATKind) async throws {
        let site = LabSite("s", kind)
        try await NATLab.withLab(sites: [site]) { lab in
            let directory = try await Coturn.startCloud(in: lab)
            defer { directory.remove() }
            let host = site.host()
            let stun = lab.cloudAddresses[0]

            let mappingRun = try await lab.run(host: host, ["turnutils_natdiscovery", "-m", stun],
                                               timeout: .seconds(20))
            #expect(!mappingRun.timedOut, "\(kind): natdiscovery -m hung: \(mappingRun)")
            let mapping = NATDiscoveryReport(parsing: mappingRun.stdout)
            if kind.allowsUDP {
                #expect(mapping.mapping == kind.claimedMapping, "\(kind) mapping: \(mapping)")
                // The internet sees the outermost NAT's address (the host's own when open).
                let expected = try lab.publicAddress(of: host)
                #expect(!mapping.reflexiveAddresses.isEmpty && mapping.reflexiveAddresses.allSatisfy { $0 == expected },
                        "\(kind): reflexive \(mapping.reflexiveAddresses), want \(expected)")
                // A separate run (fresh local port): filtering must not see the mapping run's holes.
                let filteringRun = try await lab.run(host: host, ["turnutils_natdiscovery", "-f", stun],
                                                     timeout: .seconds(20))
                #expect(!filteringRun.timedOut, "\(kind): natdiscovery -f hung: \(filteringRun)")
                let filtering = NATDiscoveryReport(parsing: filteringRun.stdout)
                #expect(filtering.filtering == kind.claimedFiltering, "\(kind) filtering: \(filtering)")
            } else {
                #expect(mapping.timedOut && mapping.reflexiveAddresses.isEmpty, "\(kind): UDP got an answer: \(mapping)")
            }

            // TCP: STUN over 443 always works; over any other port only when not tcp443-only.
            #expect(try await lab.stunOverTCPWorks(from: host, to: stun, port: 443), "\(kind): TCP 443 blocked")
            let otherPort = try await lab.stunOverTCPWorks(from: host, to: stun, port: Coturn.stunPort)
            #expect(otherPort == (kind != .tcp443Only), "\(kind): STUN over TCP \(Coturn.stunPort) works: \(otherPort)")

            // Every router keeps UDP conntrack entries only 30 s, so keepalive behaviour is real.
            for router in lab.hosts where router.site == site.name && (router.role == .router || router.role == .carrier) {
                let timeouts = try await lab.run(host: router.name, [
                    "sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout",
                    "net.netfilter.nf_conntrack_udp_timeout_stream"])
                #expect(timeouts.stdout.split(separator: "\n") == ["30", "30"], "\(router.name): \(timeouts)")
            }
        }
    }

    @Test func idleMappingExpiresAfterTheConntrackUDPTimeout() async throws {
        // natdiscovery -t: bind socket A, wait T s, then ask (from socket B) for an answer to A's
        // mapping. With a 3 s conntrack timeout, A's mapping survives 1 s idle but not 6 s.
        let site = LabSite("idle", .portRestrictedCone)
        try await NATLab.withLab(LabTopology([site], udpTimeout: 3)) { lab in
            let directory = try await Coturn.startCloud(in: lab)
            defer { directory.remove() }
            let stun = lab.cloudAddresses[0]
            let alive = NATDiscoveryReport(parsing: try await lab.run(
                host: site.host(), ["turnutils_natdiscovery", "-t", "-T", "1", stun]).stdout)
            #expect(!alive.timedOut && alive.reflexiveAddresses.count >= 2, "after 1 s idle: \(alive)")
            let expired = NATDiscoveryReport(parsing: try await lab.run(
                host: site.host(), ["turnutils_natdiscovery", "-t", "-T", "6", stun]).stdout)
            #expect(expired.timedOut, "after 6 s idle the mapping should be gone: \(expired)")
        }
    }
}
