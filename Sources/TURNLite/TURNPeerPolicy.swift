import STUNLite

/// An IP prefix such as `10.0.0.0/8` or `fc00::/7`, for the relay's peer filter (RFC 4632 §3.1, RFC 4291 §2.3).
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible {
    /// The network address (host bits cleared).
    public let network: IPAddress
    /// The prefix length: 0–32 for IPv4, 0–128 for IPv6.
    public let length: Int

    /// Creates a prefix; host bits of `address` are cleared; `nil` when the length does not fit the family.
    public init?(_ address: IPAddress, length: Int) {
        guard length >= 0, length <= (address.isIPv4 ? 32 : 128) else { return nil }
        self.length = length
        self.network = Self.mask(address, length)
    }

    /// Parses `ADDRESS/LENGTH`, or a bare address as a host prefix; `nil` when malformed.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let ip = IPAddress(parts[0]) else { return nil }
        let max = ip.isIPv4 ? 32 : 128
        guard let len = parts.count == 2 ? Int(parts[1]) : max else { return nil }
        self.init(ip, length: len)
    }

    /// True when `address` is of the same family and within the prefix.
    public func contains(_ address: IPAddress) -> Bool {
        guard address.isIPv4 == network.isIPv4 else { return false }
        return Self.mask(address, length) == network
    }

    /// `10.0.0.0/8`.
    public var description: String { "\(network)/\(length)" }

    private static func mask(_ a: IPAddress, _ length: Int) -> IPAddress {
        switch a {
        case .v4(let x):
            return .v4(length == 0 ? 0 : x & (UInt32.max << UInt32(32 - length)))
        case .v6(let h, let l):
            let hm: UInt64 = length >= 64 ? .max : (length == 0 ? 0 : UInt64.max << UInt64(64 - length))
            let lm: UInt64 = length <= 64 ? 0 : (length == 128 ? .max : UInt64.max << UInt64(128 - length))
            return .v6(high: h & hm, low: l & lm)
        }
    }
}

/// Which peers a relay may reach: by default none in loopback, private, link-local, multicast and
/// other special-purpose ranges, however the address is written; an operator allow-list overrides
/// (RFC 8656 §21.3 "Abuse of TURN relays", RFC 6890 special-purpose registries).
public struct TURNPeerPolicy: Sendable, Hashable {
    /// Special-purpose IPv4 ranges refused by default (RFC 6890, RFC 6598, RFC 5771, RFC 1112).
    public static let deniedIPv4: [IPPrefix] = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    ].map { IPPrefix($0)! }

    /// Special-purpose IPv6 ranges refused by default (RFC 6890, RFC 4193, RFC 4291, RFC 8215, RFC 6666,
    /// IPv4-translated `::ffff:0:0:0/96` of RFC 2765 §2.1, SRv6 SIDs `5f00::/16` of RFC 9602,
    /// documentation `3fff::/20` of RFC 9637); other forms that embed IPv4 are judged by the IPv4
    /// address they carry (see ``normalised(_:)``).
    public static let deniedIPv6: [IPPrefix] = [
        "::/128", "::1/128", "::ffff:0:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
        "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    ].map { IPPrefix($0)! }

    /// Prefixes the operator allows even though they fall in a denied range (`--relay-allow-peers`).
    public var allowed: [IPPrefix]

    /// Creates a policy with an allow-list (empty by default: every special range refused).
    public init(allowed: [IPPrefix] = []) { self.allowed = allowed }

    /// The IPv4 address an IPv6 address embeds in its IPv4-mapped (::ffff:0:0/96), IPv4-compatible
    /// (::/96), 6to4 (2002::/16, RFC 3056) or NAT64 well-known (64:ff9b::/96, RFC 6052) form; else the address itself.
    public static func normalised(_ ip: IPAddress) -> IPAddress {
        guard case .v6(let h, let l) = ip else { return ip }
        let low32 = UInt32(truncatingIfNeeded: l)
        if h == 0, l >> 32 == 0xFFFF { return .v4(low32) }              // ::ffff:a.b.c.d
        if h == 0, l >> 32 == 0, l > 1 { return .v4(low32) }             // ::a.b.c.d (not :: or ::1)
        if h >> 48 == 0x2002 { return .v4(UInt32(truncatingIfNeeded: h >> 16)) }  // 2002:AABB:CCDD::/48
        if h == 0x0064_FF9B_0000_0000, l >> 32 == 0 { return .v4(low32) } // 64:ff9b::a.b.c.d
        return ip
    }

    /// True when the relay may send to `ip`: allow-listed (as written or normalised), or in no denied range (RFC 8656 §21.3).
    public func permits(_ ip: IPAddress) -> Bool {
        let n = Self.normalised(ip)
        if allowed.contains(where: { $0.contains(ip) || $0.contains(n) }) { return true }
        if Self.deniedIPv6.contains(where: { $0.contains(ip) }) { return false }
        if n.isIPv4, Self.deniedIPv4.contains(where: { $0.contains(n) }) { return false }
        return true
    }
}
