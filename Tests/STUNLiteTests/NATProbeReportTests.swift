import Foundation
import Testing
@testable import STUNLite

/// The report's one-line summary (golden) and its JSON shape.
@Suite struct NATProbeReportTests {
    static let portRestricted = NATProbeReport(
        server: "203.0.113.10:3478", udp: .yes, localAddress: TransportAddress("10.1.0.10:40000"),
        mappedAddress: TransportAddress("203.0.113.101:40000"), mapping: .endpointIndependent,
        filtering: .addressAndPortDependent, natType: .portRestrictedCone, portPreservation: .yes, hairpinning: .no,
        tcp: .yes, tcpPorts: [NATProbeTCPResult(port: 3478, ok: true, latencyMs: 2.5)], latencyMs: 1.23,
        changeRequestSupported: .notTested, notes: [],
        advice: "UDP hole punching will work with cone peers and likely fail against symmetric peers; relay will be used for those")

    @Test func summaryGolden() {
        #expect(NATProbeAdvice.summary(Self.portRestricted) ==
            "UDP ok · mapped 203.0.113.101:40000 · mapping endpoint-independent · filtering address-and-port-dependent (port-restricted-cone) · port preserved · hairpin no · TCP ok · 1.2 ms")
    }

    @Test func summaryGoldenUDPBlocked() {
        let r = NATProbeReport(server: "203.0.113.10:3478", udp: .no, natType: .udpBlocked, tcp: .yes)
        #expect(NATProbeAdvice.summary(r) == "UDP blocked · (udp-blocked) · TCP ok")
    }

    @Test func summaryGoldenSymmetricWithLifetime() {
        var r = Self.portRestricted
        r.mapping = .addressAndPortDependent
        r.natType = .symmetric
        r.portPreservation = .no
        r.tcp = .no
        r.latencyMs = 123.4
        r.bindingLifetimeSeconds = 28.2
        #expect(NATProbeAdvice.summary(r) ==
            "UDP ok · mapped 203.0.113.101:40000 · mapping address-and-port-dependent · filtering address-and-port-dependent (symmetric) · port not preserved · hairpin no · TCP blocked · mapping lives ≥28.2 s · 123 ms")
    }

    @Test func adviceMatchesTheClassification() {
        #expect(NATProbeAdvice.advice(for: Self.portRestricted) == Self.portRestricted.advice)
        var r = Self.portRestricted
        r.natType = .symmetric
        #expect(NATProbeAdvice.advice(for: r).contains("relay"))
        r.natType = .open
        #expect(NATProbeAdvice.advice(for: r).contains("directly"))
    }

    @Test func jsonHasEveryKeyWithTriStatesAsNullTrueFalse() throws {
        let data = try JSONEncoder().encode(Self.portRestricted)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        for key in ["udp", "mappedAddress", "mapping", "filtering", "natType", "portPreservation", "hairpinning", "tcp",
                    "tls", "latencyMs", "changeRequestSupported", "bindingLifetimeSeconds", "notes", "advice"] {
            #expect(object.keys.contains(key), "missing \(key)")
        }
        #expect(object["udp"] as? Bool == true)
        #expect(object["hairpinning"] as? Bool == false)
        #expect(object["tls"] is NSNull)
        #expect(object["changeRequestSupported"] is NSNull)
        #expect(object["bindingLifetimeSeconds"] is NSNull)
        #expect(object["mapping"] as? String == "endpoint-independent")
        #expect(object["natType"] as? String == "port-restricted-cone")
        #expect(object["mappedAddress"] as? String == "203.0.113.101:40000")
    }

    @Test func jsonRoundTrips() throws {
        var r = Self.portRestricted
        r.bindingLifetimeSeconds = 25
        r.notes = ["a note"]
        let back = try JSONDecoder().decode(NATProbeReport.self, from: JSONEncoder().encode(r))
        #expect(back == r)
    }
}
