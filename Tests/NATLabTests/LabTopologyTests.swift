import Foundation
import NATLab
import Testing

/// The shape of a lab: addresses, LAN neighbours, double NAT, and the script as the source of truth.
@Suite(.disabled(if: Coturn.skipReason != nil, Comment(rawValue: Coturn.skipReason ?? "")))
struct LabTopologyTests {
    @Test func kindNamesMatchTheScript() async throws {
        let result = try await NATLab.script(["kinds"])
        #expect(result.stdout.split(separator: "\n").map(String.init) == NATKind.allCases.map(\.rawValue))
    }

    @Test func hostsOnOneLANReachEachOtherDirectly() async throws {
        let site = LabSite("lan", .portRestrictedCone, hosts: 2)
        try await NATLab.withLab(sites: [site]) { lab in
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let neighbour = try lab.address(of: site.host(2))
            _ = try lab.spawn(host: site.host(2), Coturn.serverArguments(
                listening: [neighbour], port: Coturn.stunPort, rfc5780: false, directory: directory.path))
            try await lab.waitForListener(host: site.host(2), port: Coturn.stunPort)
            let result = try await lab.run(host: site.host(1), ["turnutils_stunclient", neighbour],
                                           timeout: .seconds(10))
            #expect(result.succeeded, "\(result)")
            let report = NATDiscoveryReport(parsing: result.stdout)
            // No NAT between neighbours: h2 sees h1's own LAN address.
            #expect(report.reflexiveAddresses.first == (try lab.address(of: site.host(1))), "\(result)")
        }
    }

    @Test func doubleNATHostAppearsWithTheCarrierAddress() async throws {
        let site = LabSite("cgn", .doubleNAT)
        try await NATLab.withLab(sites: [site]) { lab in
            let directory = try await Coturn.startCloud(in: lab)
            defer { directory.remove() }
            // The plain (non-RFC 5780) server on 443: against an RFC 5780 server, stunclient
            // retries a CHANGE-REQUEST behind APDF forever.
            let result = try await lab.run(host: site.host(), ["turnutils_stunclient", "-p", "443",
                                                               lab.cloudAddresses[0]], timeout: .seconds(10))
            #expect(result.succeeded, "\(result)")
            let report = NATDiscoveryReport(parsing: result.stdout)
            let carrier = try lab.address(of: site.carrier)
            #expect(carrier.hasPrefix("203.0.113."))
            #expect(try lab.address(of: site.router).hasPrefix("100.64."))
            #expect(report.reflexiveAddresses.first == carrier, "\(result)")
        }
    }

    @Test func addressesComeFromTheLabRanges() async throws {
        let sites = [LabSite("a", .fullCone), LabSite("b", .open, hosts: 2), LabSite("c", .doubleNAT)]
        try await NATLab.withLab(sites: sites) { lab throws in   // every `try` below sits in a macro
            #expect(lab.cloudAddresses == ["203.0.113.10", "203.0.113.11"])
            #expect(try lab.address(of: "a-router") == "203.0.113.101")
            #expect(try lab.address(of: "a-h1") == "10.1.0.10")
            #expect(try lab.publicAddress(of: "a-h1") == "203.0.113.101")
            #expect(try lab.address(of: "b-h2").hasPrefix("198.51.100."))
            #expect(try lab.publicAddress(of: "b-h2") == (try lab.address(of: "b-h2")))
            #expect(try lab.address(of: "c-h1") == "192.168.3.10")
            #expect(try lab.publicAddress(of: "c-h1") == "203.0.113.103")
            #expect(throws: NATLabError.self) { try lab.address(of: "nobody") }
        }
    }
}
