import Testing
@testable import STUNLite

/// The probe plan as data (RFC 5780 §4.3-4.5), its skip rules, and the lifetime bisection.
@Suite struct NATProbePlanTests {
    static let server = TransportAddress("203.0.113.10:3478")!

    @Test func defaultPlanRunsMappingFilteringHairpinAndTCPOnTheServersPort() {
        let steps = NATProbePlan.steps(for: NATProbeOptions(), server: Self.server)
        #expect(steps.map(\.description) == [
            "mapping-i on mapping → primary",
            "mapping-ii on mapping → alternateIPPrimaryPort",
            "mapping-iii on mapping → otherAddress",
            "hairpin on mapping → ownMappedAddress",
            "filtering-i on filtering → primary",
            "filtering-ii on filtering → primary change ip port",
            "filtering-iii on filtering → primary change port",
            "tcp on tcp → tcpPort(3478)",
        ])
        #expect(NATProbePlan.lane(.filtering, of: steps).allSatisfy { $0.target == .primary },
                "the filtering socket must never talk to the alternate address itself")
    }

    @Test func optionsShapeThePlan() {
        let steps = NATProbePlan.steps(for: NATProbeOptions(tcpPorts: [3478, 443], hairpin: false, lifetime: true),
                                       server: Self.server)
        #expect(!steps.contains { $0.test == .hairpin })
        #expect(NATProbePlan.lane(.tcp, of: steps).map(\.target) == [.tcpPort(3478), .tcpPort(443)])
        #expect(steps.last?.test == .lifetime)
        #expect(!NATProbePlan.steps(for: NATProbeOptions(tcpPorts: []), server: Self.server).contains { $0.test == .tcp })
    }

    static func step(_ test: NATProbeTest) -> NATProbeStep {
        NATProbePlan.steps(for: NATProbeOptions(lifetime: true), server: server).first { $0.test == test }!
    }

    static func answered(_ mapped: String, local: String = "10.1.0.10:40000", other: String? = "203.0.113.11:3479") -> NATProbeOutcome {
        .answered(NATProbeAnswer(local: TransportAddress(local)!, mapped: TransportAddress(mapped)!, source: server,
                                 otherAddress: other.flatMap { TransportAddress($0) }))
    }

    @Test func mappingTestsIIAndIIINeedOtherAddressAndANAT() {
        var o = NATProbeObservations(server: Self.server)
        #expect(NATProbePlan.shouldRun(Self.step(.mappingI), given: o))
        #expect(!NATProbePlan.shouldRun(Self.step(.mappingII), given: o))
        o.outcomes[.mappingI] = .timeout
        #expect(!NATProbePlan.shouldRun(Self.step(.mappingII), given: o))
        #expect(!NATProbePlan.shouldRun(Self.step(.hairpin), given: o))
        o.outcomes[.mappingI] = Self.answered("10.1.0.10:40000")                      // no NAT
        #expect(!NATProbePlan.shouldRun(Self.step(.mappingII), given: o))
        #expect(!NATProbePlan.shouldRun(Self.step(.hairpin), given: o))
        #expect(!NATProbePlan.shouldRun(Self.step(.lifetime), given: o))
        o.outcomes[.mappingI] = Self.answered("203.0.113.101:40000", other: nil)      // NAT, no RFC 5780
        #expect(!NATProbePlan.shouldRun(Self.step(.mappingII), given: o))
        #expect(NATProbePlan.shouldRun(Self.step(.hairpin), given: o))
        o.outcomes[.mappingI] = Self.answered("203.0.113.101:40000")
        #expect(NATProbePlan.shouldRun(Self.step(.mappingII), given: o))
        #expect(NATProbePlan.shouldRun(Self.step(.lifetime), given: o))
        o.outcomes[.mappingII] = Self.answered("203.0.113.101:40000")                  // same: EIM, no test III
        #expect(!NATProbePlan.shouldRun(Self.step(.mappingIII), given: o))
        o.outcomes[.mappingII] = Self.answered("203.0.113.101:41000")
        #expect(NATProbePlan.shouldRun(Self.step(.mappingIII), given: o))
    }

    @Test func filteringTestIIIRunsOnlyWhenTestIIGotNothing() {
        var o = NATProbeObservations(server: Self.server)
        #expect(!NATProbePlan.shouldRun(Self.step(.filteringII), given: o))
        o.outcomes[.filteringI] = Self.answered("203.0.113.101:40100")
        #expect(NATProbePlan.shouldRun(Self.step(.filteringII), given: o))
        #expect(!NATProbePlan.shouldRun(Self.step(.filteringIII), given: o))
        o.outcomes[.filteringII] = .errorResponse(420)
        #expect(!NATProbePlan.shouldRun(Self.step(.filteringIII), given: o))
        o.outcomes[.filteringII] = Self.answered("203.0.113.101:40100")
        #expect(!NATProbePlan.shouldRun(Self.step(.filteringIII), given: o))
        o.outcomes[.filteringII] = .timeout
        #expect(NATProbePlan.shouldRun(Self.step(.filteringIII), given: o))
    }

    @Test func targetsResolveFromWhatWasSeen() {
        var o = NATProbeObservations(server: Self.server)
        #expect(NATProbe.resolve(.alternateIPPrimaryPort, seen: o) == nil)
        o.outcomes[.mappingI] = Self.answered("203.0.113.101:40000")
        #expect(NATProbe.resolve(.primary, seen: o) == Self.server)
        #expect(NATProbe.resolve(.alternateIPPrimaryPort, seen: o) == TransportAddress("203.0.113.11:3478"))
        #expect(NATProbe.resolve(.otherAddress, seen: o) == TransportAddress("203.0.113.11:3479"))
        #expect(NATProbe.resolve(.ownMappedAddress, seen: o) == TransportAddress("203.0.113.101:40000"))
        #expect(NATProbe.resolve(.tcpPort(443), seen: o) == TransportAddress("203.0.113.10:443"))
    }

    /// Runs a bisection against a NAT whose mappings live `lifetime` seconds; returns the trials.
    static func bisect(lifetime: Double, max: Double, resolution: Double, budget: Double) -> ([Double], NATLifetimeObservation) {
        var b = NATLifetimeBisection(maxSeconds: max, resolutionSeconds: resolution, budgetSeconds: budget)
        var trials: [Double] = []
        while let t = b.nextTrial() {
            trials.append(t)
            b.record(idleSeconds: t, alive: t < lifetime)
            if trials.count > 100 { break }
        }
        return (trials, b.observation)
    }

    @Test func lifetimeBisectionHalvesTheBracket() {
        let (trials, o) = Self.bisect(lifetime: 30, max: 60, resolution: 5, budget: 1_000)
        #expect(trials == [60, 30, 15, 22.5, 26.3])
        #expect(o.aliveSeconds == 26.3 && o.expiredSeconds == 30)
        #expect(o.spentSeconds == trials.reduce(0, +))
    }

    @Test func lifetimeBisectionStopsAtOnceWhenTheMappingOutlivesTheMax() {
        let (trials, o) = Self.bisect(lifetime: 1_000, max: 60, resolution: 5, budget: 120)
        #expect(trials == [60])
        #expect(o.aliveSeconds == 60 && o.expiredSeconds == nil)
    }

    @Test func lifetimeBisectionNeverOverrunsItsBudget() {
        let (trials, o) = Self.bisect(lifetime: 30, max: 60, resolution: 0.1, budget: 120)
        #expect(trials.reduce(0, +) <= 120)
        #expect(trials == [60, 30, 15])
        #expect(o.aliveSeconds == 15 && o.expiredSeconds == 30)
        #expect(Self.bisect(lifetime: 30, max: 200, resolution: 1, budget: 50).0 == [50])
    }
}
