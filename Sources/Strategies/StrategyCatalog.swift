import Traversal

/// The strategies this package ships, by id, for configuration files and CLI flags.
public enum StrategyCatalog {
    /// Every shipped strategy with its defaults, cheapest first.
    public static var all: [any TraversalStrategy] { [DirectLAN(), STUNDiscovery(), UDPHolePunch(), TCPSimultaneousOpen(), TLSRelay()] }

    /// The ids of every shipped strategy.
    public static var ids: [String] { all.map(\.id) }

    /// Strategies that act on the network beyond the peer (asking the router for a mapping), only when named.
    public static var optIn: [any TraversalStrategy] { [RouterPortMapping()] }

    /// The strategies with these ids, in the given order; throws for an unknown id. `port-mapping:P[+P…]`
    /// names ``RouterPortMapping`` restricted to those protocols (`pcp`, `nat-pmp`, `upnp-igd`).
    public static func named(_ ids: [String]) throws -> [any TraversalStrategy] {
        try ids.map { id in
            if let protocols = try portMappingProtocols(id) { return RouterPortMapping(protocols: protocols) }
            guard let s = (all + optIn).first(where: { $0.id == id }) else {
                throw StrategyError(code: .notApplicable, detail: "unknown strategy \(id); known: \(Self.ids.joined(separator: ", "))")
            }
            return s
        }
    }

    /// The protocols of a `port-mapping:P[+P…]` selector; nil for any other id.
    static func portMappingProtocols(_ id: String) throws -> Set<PortMappingProtocol>? {
        let parts = id.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, parts[0] == RouterPortMapping().id else { return nil }
        return Set(try parts[1].split(separator: "+").map { name in
            guard let p = PortMappingProtocol(rawValue: String(name)) else {
                throw StrategyError(code: .notApplicable, detail: "unknown port-mapping protocol \(name); known: \(PortMappingProtocol.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return p
        })
    }
}
