import STUNLite

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The IPv4 addresses of this host's interfaces that are up, loopback last.
public func localIPv4Addresses() -> [IPAddress] {
    var head: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&head) == 0, let first = head else { return [] }
    defer { freeifaddrs(head) }
    var out: [IPAddress] = []
    var loopback: [IPAddress] = []
    var cursor: UnsafeMutablePointer<ifaddrs>? = first
    while let p = cursor {
        defer { cursor = p.pointee.ifa_next }
        guard let sa = p.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET),
              p.pointee.ifa_flags & UInt32(IFF_UP) != 0 else { continue }
        let ip = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { IPAddress.v4(UInt32(bigEndian: $0.pointee.sin_addr.s_addr)) }
        if p.pointee.ifa_flags & UInt32(IFF_LOOPBACK) != 0 { loopback.append(ip) } else { out.append(ip) }
    }
    return out + loopback
}
