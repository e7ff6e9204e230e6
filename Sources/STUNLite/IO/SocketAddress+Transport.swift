import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension TransportAddress {
    /// Converts a NIO socket address; `nil` for Unix-domain sockets.
    public init?(_ address: SocketAddress) {
        switch address {
        case .v4(let a):
            self.init(ip: .v4(UInt32(bigEndian: a.address.sin_addr.s_addr)), port: UInt16(bigEndian: a.address.sin_port))
        case .v6(let a):
            var sin6 = a.address.sin6_addr
            let bytes = withUnsafeBytes(of: &sin6) { Array($0) }
            guard let ip = IPAddress(bytes: bytes) else { return nil }
            // An IPv4-mapped IPv6 source (::ffff:a.b.c.d) is reported as plain IPv4.
            if case .v6(let h, let l) = ip, h == 0, l >> 32 == 0xFFFF {
                self.init(ip: .v4(UInt32(truncatingIfNeeded: l)), port: UInt16(bigEndian: a.address.sin6_port))
            } else {
                self.init(ip: ip, port: UInt16(bigEndian: a.address.sin6_port))
            }
        case .unixDomainSocket:
            return nil
        }
    }

    /// The NIO socket address for this transport address.
    public var socketAddress: SocketAddress {
        switch ip {
        case .v4(let a):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = a.bigEndian
            return SocketAddress(sin, host: "")
        case .v6:
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            let b = ip.bytes
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in
                for i in 0..<16 { raw[i] = b[i] }
            }
            return SocketAddress(sin6, host: "")
        }
    }
}
