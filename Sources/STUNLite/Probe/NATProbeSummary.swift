/// The one-line advice and summary of a report, for people (RFC 4787 §4-5 behaviours in plain words).
public enum NATProbeAdvice {
    /// What the report means for reaching a camera, in one line.
    public static func advice(for r: NATProbeReport) -> String {
        switch r.natType {
        case .udpBlocked:
            return r.tcp == .yes
                ? "UDP is blocked: direct UDP paths will fail; TCP simultaneous open or the TLS relay will be used"
                : "Neither UDP nor TCP reached the server: check the firewall and the server address; only a relay on an allowed port can work"
        case .open:
            return "No NAT and no filtering: peers can reach this host directly"
        case .firewalled:
            return "No NAT, but a firewall filters inbound UDP: hole punching works with cone peers; relay for symmetric ones"
        case .fullCone:
            return "Full-cone NAT: UDP hole punching will work with any peer"
        case .restrictedCone, .portRestrictedCone:
            return "UDP hole punching will work with cone peers and likely fail against symmetric peers; relay will be used for those"
        case .symmetric:
            return "Symmetric NAT: hole punching works only with full- or restricted-cone peers; otherwise relay will be used"
        case .unknown:
            return r.udp == .yes
                ? "UDP works but the NAT's behaviour could not be fully determined: direct paths may work; relay is the fallback"
                : "The probe could not decide: try again, or another server"
        }
    }

    /// `UDP ok · mapped 203.0.113.101:40000 · mapping endpoint-independent · filtering … (port-restricted-cone) · port preserved · hairpin no · TCP ok · 1.2 ms`.
    public static func summary(_ r: NATProbeReport) -> String {
        var parts: [String] = []
        switch r.udp {
        case .yes: parts.append("UDP ok")
        case .no: parts.append("UDP blocked")
        case .notTested: parts.append("UDP not tested")
        }
        if let mapped = r.mappedAddress { parts.append("mapped \(mapped)") }
        if r.udp == .yes {
            parts.append("mapping \(r.mapping)")
            parts.append("filtering \(r.filtering) (\(r.natType))")
        } else if r.udp == .no {
            parts.append("(\(r.natType))")
        }
        switch r.portPreservation {
        case .yes: parts.append("port preserved")
        case .no: parts.append("port not preserved")
        case .notTested: break
        }
        if r.hairpinning != .notTested { parts.append("hairpin \(r.hairpinning)") }
        switch r.tcp {
        case .yes: parts.append("TCP ok")
        case .no: parts.append("TCP blocked")
        case .notTested: break
        }
        switch r.tls {
        case .yes: parts.append("TLS ok")
        case .no: parts.append("TLS blocked")
        case .notTested: break
        }
        if let alive = r.bindingLifetimeSeconds {
            parts.append("mapping lives ≥\(NATProbeClassifier.format(alive)) s")
        } else if let dead = r.bindingExpiredAfterSeconds {
            parts.append("mapping gone by \(NATProbeClassifier.format(dead)) s")
        }
        if let latency = r.latencyMs { parts.append("\(formatMilliseconds(latency)) ms") }
        return parts.joined(separator: " · ")
    }

    /// One decimal below 100 ms, none above.
    static func formatMilliseconds(_ ms: Double) -> String {
        if ms >= 100 { return String(Int(ms.rounded())) }
        let tenths = Int((ms * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}
