import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Who a per-source limit counts against: an IPv4 address, or the /64 an IPv6 address lies in.
///
/// One IPv6 subscriber usually holds a whole /64 (RFC 6177 §3, RFC 7934) and may pick any address
/// in it, so a limit keyed on full IPv6 addresses is sidestepped by changing the interface ID; this
/// key drops it. Ports never take part: a new connection gets a new port for free. An IPv4-mapped
/// IPv6 address (`::ffff:a.b.c.d`, as dual-stack sockets report IPv4 peers) is its IPv4 address.
/// Every per-source limit in trav (password attempts, look-ups, registrations, challenges,
/// connections) is keyed by this type.
public struct SourceAddressKey: Hashable, Sendable, CustomStringConvertible, Comparable {
    private enum Storage: Hashable, Sendable, Comparable {
        case ipv4(UInt32)
        case ipv6Prefix(UInt64)
        case unidentified
    }

    /// Bits of an IPv6 address a key keeps (the network prefix; the interface ID is dropped).
    public static let ipv6PrefixLength = 64

    /// The key for connections whose peer address is unknown (e.g. a Unix socket): one shared key, so
    /// they are limited together rather than not at all.
    public static let unidentified = SourceAddressKey(storage: .unidentified)

    private let storage: Storage

    private init(storage: Storage) { self.storage = storage }

    /// The key of an IPv4 address (big-endian in the integer: 192.0.2.1 is 0xC000_0201).
    public init(ipv4: UInt32) { self.storage = .ipv4(ipv4) }

    /// The key of an IPv6 address given as two big-endian halves: its /64, or its IPv4 address when IPv4-mapped.
    public init(ipv6High high: UInt64, low: UInt64) {
        if high == 0, low >> 32 == 0xFFFF {
            self.storage = .ipv4(UInt32(truncatingIfNeeded: low))
        } else {
            self.storage = .ipv6Prefix(high)
        }
    }

    /// The key of an address in 4 or 16 network-order bytes; `nil` for any other count.
    public init?(bytes: some Collection<UInt8>) {
        switch bytes.count {
        case 4:
            self.init(ipv4: bytes.reduce(0) { $0 << 8 | UInt32($1) })
        case 16:
            var high: UInt64 = 0
            var low: UInt64 = 0
            for (i, b) in bytes.enumerated() {
                if i < 8 { high = high << 8 | UInt64(b) } else { low = low << 8 | UInt64(b) }
            }
            self.init(ipv6High: high, low: low)
        default:
            return nil
        }
    }

    /// The key of a socket's peer address; ``unidentified`` for a Unix socket.
    public init(_ address: SocketAddress) {
        switch address {
        case .v4(let a):
            self.init(ipv4: UInt32(bigEndian: a.address.sin_addr.s_addr))
        case .v6(let a):
            var raw = a.address.sin6_addr
            let bytes = withUnsafeBytes(of: &raw) { Array($0) }
            self = Self(bytes: bytes) ?? .unidentified
        case .unixDomainSocket:
            self = .unidentified
        }
    }

    /// `192.0.2.1`, `2001:db8:1:2::/64` or `unidentified`.
    public var description: String {
        switch storage {
        case .ipv4(let a):
            return [24, 16, 8, 0].map { String((a >> UInt32($0)) & 0xFF) }.joined(separator: ".")
        case .ipv6Prefix(let p):
            return [48, 32, 16, 0].map { String((p >> UInt64($0)) & 0xFFFF, radix: 16) }.joined(separator: ":") + "::/64"
        case .unidentified:
            return "unidentified"
        }
    }

    /// Orders IPv4 keys before IPv6 ones, then numerically.
    public static func < (lhs: SourceAddressKey, rhs: SourceAddressKey) -> Bool { lhs.storage < rhs.storage }
}
