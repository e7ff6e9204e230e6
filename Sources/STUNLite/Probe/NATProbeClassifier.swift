/// Turns observations into a report: a pure function, tested as a table (RFC 5780 §4.3, §4.4, §4.5).
public enum NATProbeClassifier {
    /// Classifies everything observed; never guesses: what the tests could not decide is `unknown`.
    public static func classify(_ o: NATProbeObservations) -> NATProbeReport {
        var notes: [String] = []
        var report = NATProbeReport(server: o.server.description)
        let one = o.answer(.mappingI)
        report.localAddress = one?.local
        report.mappedAddress = one?.mapped
        report.latencyMs = one?.rttMs ?? o.answer(.filteringI)?.rttMs

        report.udp = udpWorks(o)
        if report.udp == .no {
            notes.append("no UDP answer from \(o.server): UDP is blocked on the way (or the server is down)")
        }
        report.mapping = mapping(o, notes: &notes)
        let (filtering, changeRequest) = filtering(o, notes: &notes)
        report.filtering = filtering
        report.changeRequestSupported = changeRequest
        report.natType = natType(udp: report.udp, mapping: report.mapping, filtering: report.filtering)
        report.portPreservation = portPreservation(o)
        report.hairpinning = hairpinning(o, notes: &notes)
        report.tcpPorts = o.tcp
        report.tcp = o.tcp.isEmpty ? .notTested : Tri(o.tcp.contains { $0.ok })
        let closed = o.tcp.filter { !$0.ok }.map { String($0.port) }
        if !closed.isEmpty, report.tcp == .yes {
            notes.append("TCP works only to some ports; no answer on \(closed.joined(separator: ", "))")
        }
        if let lifetime = o.lifetime {
            report.bindingLifetimeSeconds = lifetime.aliveSeconds
            report.bindingExpiredAfterSeconds = lifetime.expiredSeconds
            if lifetime.expiredSeconds == nil, let alive = lifetime.aliveSeconds {
                notes.append("the mapping outlived the longest idle time tried (\(format(alive)) s)")
            } else if lifetime.aliveSeconds == nil, let dead = lifetime.expiredSeconds {
                notes.append("the mapping was gone after every idle time tried (shortest \(format(dead)) s): keepalives must be frequent")
            }
        }
        let mappedIPs = Set([one?.mapped?.ip, o.answer(.mappingII)?.mapped?.ip, o.answer(.filteringI)?.mapped?.ip].compactMap { $0 })
        if mappedIPs.count > 1 {
            notes.append("the NAT used several public IPs (\(mappedIPs.sorted().map(\.description).joined(separator: ", ")))")
        }
        report.notes = notes
        report.advice = NATProbeAdvice.advice(for: report)
        return report
    }

    /// UDP works when any UDP test got any answer, success or error (RFC 5780 §4.3 test I).
    static func udpWorks(_ o: NATProbeObservations) -> Tri {
        let firsts = [o.outcomes[.mappingI], o.outcomes[.filteringI]].compactMap { $0 }
        if firsts.contains(where: { if case .answered = $0 { true } else if case .errorResponse = $0 { true } else { false } }) {
            return .yes
        }
        if !firsts.isEmpty, firsts.allSatisfy({ $0 == .timeout }) { return .no }
        return .notTested
    }

    /// RFC 5780 §4.3: X1 = local → no NAT; X2 = X1 → endpoint-independent; X3 = X2 → address-dependent; else address-and-port-dependent.
    static func mapping(_ o: NATProbeObservations, notes: inout [String]) -> NATBehaviour {
        guard let x1 = o.answer(.mappingI)?.mapped, let nat = o.natDetected else { return .unknown }
        if !nat { return .none }
        guard let ii = o.outcomes[.mappingII] else {
            notes.append("the server offers no OTHER-ADDRESS (RFC 5780): mapping behaviour cannot be tested")
            return .unknown
        }
        guard case .answered(let two) = ii, let x2 = two.mapped else {
            notes.append("no answer from the server's alternate address (mapping test II): mapping unknown")
            return .unknown
        }
        if x2 == x1 { return .endpointIndependent }
        guard let x3 = o.answer(.mappingIII)?.mapped else {
            notes.append("no answer from the server's alternate port (mapping test III): mapping unknown")
            return .unknown
        }
        return x3 == x2 ? .addressDependent : .addressAndPortDependent
    }

    /// RFC 5780 §4.4 on the filtering socket; also says whether CHANGE-REQUEST is honoured (§7.2).
    ///
    /// The answer's real UDP source must match what was asked for: a server that ignores CHANGE-REQUEST
    /// answers from its primary address, and taking that for "endpoint-independent" would be a misclassification.
    static func filtering(_ o: NATProbeObservations, notes: inout [String]) -> (NATBehaviour, Tri) {
        guard o.answer(.filteringI) != nil, let ii = o.outcomes[.filteringII] else { return (.unknown, .notTested) }
        let primary = o.server
        let other = o.otherAddress
        switch ii {
        case .answered(let a):
            let expectedIP = other?.ip
            let movedIP = a.source.ip != primary.ip && (expectedIP == nil || a.source.ip == expectedIP)
            let movedPort = a.source.port != primary.port && (other == nil || a.source.port == other?.port)
            if movedIP && movedPort { return (.endpointIndependent, .yes) }
            notes.append("the server ignores CHANGE-REQUEST (asked for another IP and port, answered from \(a.source)): filtering unknown")
            return (.unknown, .no)
        case .errorResponse(let code):
            notes.append("the server refuses CHANGE-REQUEST (error \(code)): filtering unknown")
            return (.unknown, .no)
        case .failed(let why):
            notes.append("filtering test II failed: \(why)")
            return (.unknown, .notTested)
        case .timeout:
            break
        }
        switch o.outcomes[.filteringIII] {
        case .answered(let a)?:
            let rightPort = a.source.port != primary.port && (other == nil || a.source.port == other?.port)
            if a.source.ip == primary.ip && rightPort { return (.addressDependent, .yes) }
            notes.append("the server ignores CHANGE-REQUEST (asked for another port, answered from \(a.source)): filtering unknown")
            return (.unknown, .no)
        case .errorResponse(let code)?:
            notes.append("the server refuses CHANGE-REQUEST (error \(code)): filtering unknown")
            return (.unknown, .no)
        case .timeout?:
            guard other != nil else {
                notes.append("no answer to CHANGE-REQUEST and no OTHER-ADDRESS: the server may not support RFC 5780; filtering unknown")
                return (.unknown, .notTested)
            }
            return (.addressAndPortDependent, .notTested)
        case .failed(let why)?:
            notes.append("filtering test III failed: \(why)")
            return (.unknown, .notTested)
        case nil:
            return (.unknown, .notTested)
        }
    }

    /// The classic name for a mapping and filtering pair (RFC 4787 §4.1, §5 in RFC 3489 words).
    public static func natType(udp: Tri, mapping: NATBehaviour, filtering: NATBehaviour) -> NATType {
        if udp == .no { return .udpBlocked }
        switch (mapping, filtering) {
        case (.none, .endpointIndependent): return .open
        case (.none, .addressDependent), (.none, .addressAndPortDependent): return .firewalled
        case (.endpointIndependent, .endpointIndependent): return .fullCone
        case (.endpointIndependent, .addressDependent): return .restrictedCone
        case (.endpointIndependent, .addressAndPortDependent): return .portRestrictedCone
        case (.addressDependent, _), (.addressAndPortDependent, _): return .symmetric
        default: return .unknown
        }
    }

    /// Port preservation: every NATed socket kept its local port (RFC 4787 §4.1); trivially yes without NAT.
    static func portPreservation(_ o: NATProbeObservations) -> Tri {
        let pairs = [o.answer(.mappingI), o.answer(.filteringI)].compactMap { a -> Bool? in
            guard let a, let mapped = a.mapped, let local = a.local else { return nil }
            return mapped.port == local.port
        }
        return pairs.isEmpty ? .notTested : Tri(pairs.allSatisfy { $0 })
    }

    /// RFC 5780 §4.5: did a datagram to our own mapped address come back?
    static func hairpinning(_ o: NATProbeObservations, notes: inout [String]) -> Tri {
        switch o.outcomes[.hairpin] {
        case .answered?: return .yes
        case .timeout?: return .no
        case .failed(let why)?:
            notes.append("hairpin test failed: \(why)")
            return .notTested
        case .errorResponse?, nil: return .notTested
        }
    }

    /// Seconds with at most one decimal, no trailing `.0`.
    static func format(_ seconds: Double) -> String {
        let tenths = (seconds * 10).rounded()
        return tenths.truncatingRemainder(dividingBy: 10) == 0 ? String(Int(tenths / 10)) : String(tenths / 10)
    }
}
