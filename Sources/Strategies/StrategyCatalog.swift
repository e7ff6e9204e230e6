import Traversal

/// The strategies this package ships, by id, for configuration files and CLI flags.
public enum StrategyCatalog {
    /// Every shipped strategy with its defaults, cheapest first.
    public static var all: [any TraversalStrategy] { [DirectLAN(), STUNDiscovery(), UDPHolePunch(), TCPSimultaneousOpen(), TLSRelay()] }

    /// The ids of every shipped strategy.
    public static var ids: [String] { all.map(\.id) }

    /// The strategies with these ids, in the given order; throws for an unknown id.
    public static func named(_ ids: [String]) throws -> [any TraversalStrategy] {
        try ids.map { id in
            guard let s = all.first(where: { $0.id == id }) else {
                throw StrategyError(code: .notApplicable, detail: "unknown strategy \(id); known: \(Self.ids.joined(separator: ", "))")
            }
            return s
        }
    }
}
