import Testing
@testable import STUNLite

/// The classification as a table: every RFC 5780 §4.3 × §4.4 outcome, servers that ignore or refuse
/// CHANGE-REQUEST, and UDP blocked.
@Suite struct NATProbeClassifierTests {
    static let server = TransportAddress("203.0.113.10:3478")!
    static let other = TransportAddress("203.0.113.11:3479")!
    static let local = TransportAddress("10.1.0.10:40000")!
    static let filterLocal = TransportAddress("10.1.0.10:40100")!

    /// What the mapping lane saw (RFC 5780 §4.3).
    enum Mapping: CaseIterable {
        case noNAT, independent, addressDependent, addressAndPortDependent
    }

    /// What the filtering lane saw (RFC 5780 §4.4).
    enum Filtering: CaseIterable {
        case independent, addressDependent, addressAndPortDependent
    }

    static func mapped(_ port: UInt16, nat: Bool, local: TransportAddress = local) -> TransportAddress {
        nat ? TransportAddress(ip: IPAddress("203.0.113.101")!, port: port) : local
    }

    static func answer(local: TransportAddress, mapped: TransportAddress?, source: TransportAddress = server,
                       other: TransportAddress? = other) -> NATProbeOutcome {
        .answered(NATProbeAnswer(local: local, mapped: mapped, source: source, otherAddress: other, rttMs: 1.5))
    }

    static func observations(_ m: Mapping, _ f: Filtering) -> NATProbeObservations {
        let nat = m != .noNAT
        var o = NATProbeObservations(server: server)
        let x1 = mapped(local.port, nat: nat)
        o.outcomes[.mappingI] = answer(local: local, mapped: x1)
        switch m {
        case .noNAT: break
        case .independent:
            o.outcomes[.mappingII] = answer(local: local, mapped: x1, source: TransportAddress(ip: other.ip, port: server.port))
        case .addressDependent:
            let x2 = mapped(41_001, nat: true)
            o.outcomes[.mappingII] = answer(local: local, mapped: x2, source: TransportAddress(ip: other.ip, port: server.port))
            o.outcomes[.mappingIII] = answer(local: local, mapped: x2, source: other)
        case .addressAndPortDependent:
            o.outcomes[.mappingII] = answer(local: local, mapped: mapped(41_001, nat: true), source: TransportAddress(ip: other.ip, port: server.port))
            o.outcomes[.mappingIII] = answer(local: local, mapped: mapped(41_002, nat: true), source: other)
        }
        o.outcomes[.filteringI] = answer(local: filterLocal, mapped: mapped(filterLocal.port, nat: nat, local: filterLocal))
        switch f {
        case .independent:
            o.outcomes[.filteringII] = answer(local: filterLocal, mapped: nil, source: other)
        case .addressDependent:
            o.outcomes[.filteringII] = .timeout
            o.outcomes[.filteringIII] = answer(local: filterLocal, mapped: nil, source: TransportAddress(ip: server.ip, port: other.port))
        case .addressAndPortDependent:
            o.outcomes[.filteringII] = .timeout
            o.outcomes[.filteringIII] = .timeout
        }
        return o
    }

    static let expectedType: [String: NATType] = [
        "noNAT/independent": .open, "noNAT/addressDependent": .firewalled, "noNAT/addressAndPortDependent": .firewalled,
        "independent/independent": .fullCone, "independent/addressDependent": .restrictedCone,
        "independent/addressAndPortDependent": .portRestrictedCone,
        "addressDependent/independent": .symmetric, "addressDependent/addressDependent": .symmetric,
        "addressDependent/addressAndPortDependent": .symmetric,
        "addressAndPortDependent/independent": .symmetric, "addressAndPortDependent/addressDependent": .symmetric,
        "addressAndPortDependent/addressAndPortDependent": .symmetric,
    ]

    static let combinations: [(Mapping, Filtering)] = Mapping.allCases.flatMap { m in Filtering.allCases.map { (m, $0) } }

    @Test("every RFC 5780 mapping × filtering combination", arguments: combinations)
    func classifiesEveryCombination(_ m: Mapping, _ f: Filtering) throws {
        let r = NATProbeClassifier.classify(Self.observations(m, f))
        let mapping: NATBehaviour = switch m {
        case .noNAT: .none
        case .independent: .endpointIndependent
        case .addressDependent: .addressDependent
        case .addressAndPortDependent: .addressAndPortDependent
        }
        let filtering: NATBehaviour = switch f {
        case .independent: .endpointIndependent
        case .addressDependent: .addressDependent
        case .addressAndPortDependent: .addressAndPortDependent
        }
        #expect(r.udp == .yes)
        #expect(r.mapping == mapping)
        #expect(r.filtering == filtering)
        #expect(r.natType == Self.expectedType["\(m)/\(f)"])
        #expect(r.mappedAddress == Self.mapped(Self.local.port, nat: m != .noNAT))
        #expect(r.latencyMs == 1.5)
        #expect(r.changeRequestSupported == (f == .addressAndPortDependent ? .notTested : .yes))
        #expect(!r.advice.isEmpty)
    }

    @Test func serverIgnoringChangeRequestIsSaidAndFilteringUnknown() {
        var o = Self.observations(.independent, .independent)
        o.outcomes[.filteringII] = Self.answer(local: Self.filterLocal, mapped: nil, source: Self.server)
        let r = NATProbeClassifier.classify(o)
        #expect(r.changeRequestSupported == .no)
        #expect(r.mapping == .endpointIndependent)
        #expect(r.filtering == .unknown)
        #expect(r.natType == .unknown)
        #expect(r.notes.contains { $0.contains("ignores CHANGE-REQUEST") })
    }

    @Test func serverChangingOnlyThePortForChangeIPAndPortIsNotTakenForEndpointIndependent() {
        var o = Self.observations(.addressAndPortDependent, .independent)
        o.outcomes[.filteringII] = Self.answer(local: Self.filterLocal, mapped: nil,
                                               source: TransportAddress(ip: Self.server.ip, port: Self.other.port))
        let r = NATProbeClassifier.classify(o)
        #expect(r.filtering == .unknown)
        #expect(r.changeRequestSupported == .no)
        #expect(r.mapping == .addressAndPortDependent)
        #expect(r.natType == .symmetric)
    }

    @Test func serverIgnoringChangePortInTestIIIIsNotTakenForAddressDependent() {
        var o = Self.observations(.independent, .addressDependent)
        o.outcomes[.filteringIII] = Self.answer(local: Self.filterLocal, mapped: nil, source: Self.server)
        let r = NATProbeClassifier.classify(o)
        #expect(r.filtering == .unknown)
        #expect(r.changeRequestSupported == .no)
        #expect(r.natType == .unknown)
    }

    @Test func serverRefusingChangeRequestWith420() {
        var o = Self.observations(.independent, .independent)
        o.outcomes[.filteringII] = .errorResponse(420)
        let r = NATProbeClassifier.classify(o)
        #expect(r.changeRequestSupported == .no)
        #expect(r.filtering == .unknown)
        #expect(r.mapping == .endpointIndependent)
        #expect(r.notes.contains { $0.contains("420") })
    }

    @Test func serverWithoutAlternateAddressOnLoopbackIsNoNATWithFilteringUnknown() {
        // Our STUNServer without --alternate-ip: no OTHER-ADDRESS, 420 to CHANGE-REQUEST.
        var o = NATProbeObservations(server: Self.server)
        o.outcomes[.mappingI] = Self.answer(local: Self.local, mapped: Self.local, other: nil)
        o.outcomes[.filteringI] = Self.answer(local: Self.filterLocal, mapped: Self.filterLocal, other: nil)
        o.outcomes[.filteringII] = .errorResponse(420)
        let r = NATProbeClassifier.classify(o)
        #expect(r.mapping == .none)
        #expect(r.filtering == .unknown)
        #expect(r.natType == .unknown)
        #expect(r.changeRequestSupported == .no)
    }

    @Test func behindNATWithoutOtherAddressMappingIsUnknown() {
        var o = NATProbeObservations(server: Self.server)
        o.outcomes[.mappingI] = Self.answer(local: Self.local, mapped: Self.mapped(40_000, nat: true), other: nil)
        o.outcomes[.filteringI] = Self.answer(local: Self.filterLocal, mapped: Self.mapped(40_100, nat: true), other: nil)
        o.outcomes[.filteringII] = .timeout
        o.outcomes[.filteringIII] = .timeout
        let r = NATProbeClassifier.classify(o)
        #expect(r.mapping == .unknown)
        // Silence to CHANGE-REQUEST without OTHER-ADDRESS may be a server without RFC 5780: not APDF.
        #expect(r.filtering == .unknown)
        #expect(r.natType == .unknown)
        #expect(r.notes.contains { $0.contains("OTHER-ADDRESS") })
    }

    @Test func noAnswerFromTheAlternateAddressLeavesMappingUnknown() {
        var o = Self.observations(.independent, .addressAndPortDependent)
        o.outcomes[.mappingII] = .timeout
        let r = NATProbeClassifier.classify(o)
        #expect(r.mapping == .unknown)
        #expect(r.filtering == .addressAndPortDependent)
        #expect(r.natType == .unknown)
    }

    @Test func udpBlockedWithTCP() {
        var o = NATProbeObservations(server: Self.server)
        o.outcomes[.mappingI] = .timeout
        o.outcomes[.filteringI] = .timeout
        o.tcp = [NATProbeTCPResult(port: 3478, ok: false), NATProbeTCPResult(port: 443, ok: true, latencyMs: 2)]
        let r = NATProbeClassifier.classify(o)
        #expect(r.udp == .no)
        #expect(r.natType == .udpBlocked)
        #expect(r.mapping == .unknown && r.filtering == .unknown)
        #expect(r.mappedAddress == nil && r.latencyMs == nil)
        #expect(r.portPreservation == .notTested && r.hairpinning == .notTested)
        #expect(r.tcp == .yes)
        #expect(r.advice.contains("UDP is blocked"))
        #expect(r.notes.contains { $0.contains("3478") })
    }

    @Test func udpAndTCPBlocked() {
        var o = NATProbeObservations(server: Self.server)
        o.outcomes[.mappingI] = .timeout
        o.outcomes[.filteringI] = .timeout
        o.tcp = [NATProbeTCPResult(port: 3478, ok: false)]
        let r = NATProbeClassifier.classify(o)
        #expect(r.natType == .udpBlocked)
        #expect(r.tcp == .no)
        #expect(r.advice.contains("Neither UDP nor TCP"))
    }

    @Test func portPreservationAndHairpin() {
        var o = Self.observations(.addressAndPortDependent, .addressAndPortDependent)
        #expect(NATProbeClassifier.classify(o).portPreservation == .yes)
        o.outcomes[.filteringI] = Self.answer(local: Self.filterLocal, mapped: Self.mapped(50_000, nat: true))
        #expect(NATProbeClassifier.classify(o).portPreservation == .no)
        #expect(NATProbeClassifier.classify(o).hairpinning == .notTested)
        o.outcomes[.hairpin] = .timeout
        #expect(NATProbeClassifier.classify(o).hairpinning == .no)
        o.outcomes[.hairpin] = Self.answer(local: Self.local, mapped: nil, source: Self.mapped(40_100, nat: true))
        #expect(NATProbeClassifier.classify(o).hairpinning == .yes)
    }

    @Test func lifetimeIsReported() {
        var o = Self.observations(.independent, .addressAndPortDependent)
        o.lifetime = NATLifetimeObservation(aliveSeconds: 25, expiredSeconds: 30, spentSeconds: 90)
        let r = NATProbeClassifier.classify(o)
        #expect(r.bindingLifetimeSeconds == 25)
        #expect(r.bindingExpiredAfterSeconds == 30)
        o.lifetime = NATLifetimeObservation(aliveSeconds: 60, spentSeconds: 60)
        #expect(NATProbeClassifier.classify(o).notes.contains { $0.contains("outlived") })
    }

    @Test func severalPublicIPsAreNoted() {
        var o = Self.observations(.addressDependent, .addressAndPortDependent)
        o.outcomes[.mappingII] = Self.answer(local: Self.local, mapped: TransportAddress("203.0.113.102:41001")!)
        #expect(NATProbeClassifier.classify(o).notes.contains { $0.contains("several public IPs") })
    }
}
