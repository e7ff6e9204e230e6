#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 or IPv6 address as a plain value, without any socket machinery.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible, Comparable {
    /// An IPv4 address, big-endian in the integer (192.0.2.1 is 0xC000_0201).
    case v4(UInt32)
    /// An IPv6 address as two big-endian halves.
    case v6(high: UInt64, low: UInt64)

    /// Parses dotted-quad IPv4 or textual IPv6 (RFC 4291 §2.2, as `inet_pton` accepts); `nil` otherwise.
    public init?(_ text: some StringProtocol) {
        var s = String(text)
        if s.hasPrefix("["), s.hasSuffix("]") { s = String(s.dropFirst().dropLast()) }
        if let pct = s.firstIndex(of: "%") { s = String(s[..<pct]) }
        var v4 = in_addr()
        if inet_pton(AF_INET, s, &v4) == 1 {
            self = .v4(UInt32(bigEndian: v4.s_addr))
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, s, &v6) == 1 {
            let bytes = withUnsafeBytes(of: &v6) { Array($0) }
            self.init(bytes: bytes)
            return
        }
        return nil
    }

    /// Creates an address from 4 or 16 network-order bytes; `nil` for any other count.
    public init?(bytes: some Collection<UInt8>) {
        switch bytes.count {
        case 4:
            self = .v4(bytes.reduce(0) { $0 << 8 | UInt32($1) })
        case 16:
            var h: UInt64 = 0
            var l: UInt64 = 0
            for (i, b) in bytes.enumerated() {
                if i < 8 { h = h << 8 | UInt64(b) } else { l = l << 8 | UInt64(b) }
            }
            self = .v6(high: h, low: l)
        default:
            return nil
        }
    }

    /// The address in network byte order: 4 or 16 bytes.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let a):
            return [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: a >> UInt32($0)) }
        case .v6(let h, let l):
            let shifts: [UInt64] = [56, 48, 40, 32, 24, 16, 8, 0]
            return shifts.map { UInt8(truncatingIfNeeded: h >> $0) } + shifts.map { UInt8(truncatingIfNeeded: l >> $0) }
        }
    }

    /// The STUN address family number: 0x01 for IPv4, 0x02 for IPv6 (RFC 8489 §14.1).
    public var stunFamily: UInt8 {
        if case .v4 = self { return 0x01 }
        return 0x02
    }

    /// True for IPv4 addresses.
    public var isIPv4: Bool {
        if case .v4 = self { return true }
        return false
    }

    /// The canonical text form (`inet_ntop`).
    public var description: String {
        var raw = bytes
        let family = isIPv4 ? AF_INET : AF_INET6
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let ok = raw.withUnsafeMutableBytes { src in
            inet_ntop(family, src.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        guard ok else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Orders IPv4 before IPv6, then numerically.
    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        switch (lhs, rhs) {
        case (.v4(let a), .v4(let b)): a < b
        case (.v4, .v6): true
        case (.v6, .v4): false
        case (.v6(let ah, let al), .v6(let bh, let bl)): (ah, al) < (bh, bl)
        }
    }
}

/// An IP address and a port: what RFC 8489 §3 calls a transport address.
public struct TransportAddress: Hashable, Sendable, CustomStringConvertible, Codable {
    /// The IP address.
    public var ip: IPAddress
    /// The port.
    public var port: UInt16

    /// Creates a transport address.
    public init(ip: IPAddress, port: UInt16) {
        self.ip = ip
        self.port = port
    }

    /// Parses `1.2.3.4:5`, `[::1]:5`, or a bare address with `defaultPort`; `nil` when malformed.
    public init?(_ text: String, defaultPort: UInt16? = nil) {
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            guard let ip = IPAddress(text[text.index(after: text.startIndex)..<close]) else { return nil }
            let rest = text[text.index(after: close)...]
            if rest.isEmpty, let d = defaultPort { self.init(ip: ip, port: d); return }
            guard rest.hasPrefix(":"), let p = UInt16(rest.dropFirst()) else { return nil }
            self.init(ip: ip, port: p)
            return
        }
        if let ip = IPAddress(text) {
            guard let d = defaultPort else { return nil }
            self.init(ip: ip, port: d)
            return
        }
        guard let colon = text.lastIndex(of: ":"), let ip = IPAddress(text[..<colon]),
              ip.isIPv4, let p = UInt16(text[text.index(after: colon)...]) else { return nil }
        self.init(ip: ip, port: p)
    }

    /// `1.2.3.4:5` or `[::1]:5`.
    public var description: String {
        ip.isIPv4 ? "\(ip):\(port)" : "[\(ip)]:\(port)"
    }

    /// Encodes as its text form.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    /// Decodes from its text form.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let a = TransportAddress(s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a transport address: \(s)")
        }
        self = a
    }
}
