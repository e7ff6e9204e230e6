import SourceLimits

extension SourceAddressKey {
    /// The key of `ip`: itself for IPv4, its /64 for IPv6 (its IPv4 address when IPv4-mapped).
    public init(_ ip: IPAddress) {
        switch ip {
        case .v4(let a): self.init(ipv4: a)
        case .v6(let high, let low): self.init(ipv6High: high, low: low)
        }
    }
}
