#if canImport(Glibc)
import Glibc
#endif
import STUNLite

/// `sendmmsg` and `recvmmsg`, looked up in the C library at run time: Swift's Glibc module leaves out
/// these GNU-only calls, so this target needs no C shim.
struct MultiMessageCalls: @unchecked Sendable {
    typealias SendMultiple = @convention(c) (Int32, UnsafeMutableRawPointer?, UInt32, Int32) -> Int32
    typealias ReceiveMultiple = @convention(c) (Int32, UnsafeMutableRawPointer?, UInt32, Int32, UnsafeMutableRawPointer?) -> Int32

    let send: SendMultiple
    let receive: ReceiveMultiple

    /// Finds both calls, or fails where the C library lacks them.
    static func lookUp() throws(DatagramIOError) -> MultiMessageCalls {
        guard let handle = dlopen(nil, RTLD_NOW),
              let send = dlsym(handle, "sendmmsg"), let receive = dlsym(handle, "recvmmsg") else {
            throw DatagramIOError("sendmmsg/recvmmsg not found in the C library")
        }
        return MultiMessageCalls(send: unsafeBitCast(send, to: SendMultiple.self),
                                 receive: unsafeBitCast(receive, to: ReceiveMultiple.self))
    }

    /// The calls, or where the C library lacks them (never on Linux), calls that fail with `ENOSYS`.
    static let shared = (try? lookUp()) ?? MultiMessageCalls(send: { _, _, _, _ in errno = ENOSYS; return -1 },
                                                            receive: { _, _, _, _, _ in errno = ENOSYS; return -1 })
}

/// Message headers, vectors, addresses and buffers for `count` datagrams of up to `slotBytes`, each
/// vector starting `offset` bytes into its slot: what one `sendmmsg` or `recvmmsg` works on.
final class MessageSlots {
    let headers: UnsafeMutablePointer<MultiMessageHeader>
    let vectors: UnsafeMutablePointer<iovec>
    let names: UnsafeMutablePointer<sockaddr_storage>
    private let buffers: UnsafeMutableRawBufferPointer

    init(count: Int, slotBytes: Int, offset: Int = 0) {
        headers = .allocate(capacity: count)
        headers.initialize(repeating: MultiMessageHeader(), count: count)
        vectors = .allocate(capacity: count)
        names = .allocate(capacity: count)
        names.initialize(repeating: sockaddr_storage(), count: count)
        buffers = .allocate(byteCount: count * slotBytes, alignment: 16)
        for i in 0..<count { vectors[i] = iovec(iov_base: buffers.baseAddress! + i * slotBytes + offset, iov_len: 0) }
    }

    deinit {
        headers.deallocate()
        vectors.deallocate()
        names.deallocate()
        buffers.deallocate()
    }
}

/// Plain non-blocking UDP sockets by descriptor: opening, binding, addresses.
public enum UDPSocket {
    /// `SO_REUSEPORT`, `SO_REUSEADDR`, `IPV6_V6ONLY` and `SO_RCVBUF` for ``open(bound:options:)``.
    public struct Options: Sendable {
        /// Share the address with other sockets that ask for it too (a group the kernel spreads datagrams over).
        public var reusePort = false
        /// `SO_REUSEADDR`, as servers' listening sockets set it.
        public var reuseAddress = false
        /// An IPv6 socket that leaves IPv4 to an IPv4 sibling (RFC 3493 §5.3).
        public var ipv6Only = false
        /// `SO_RCVBUF` asked for, bytes (the kernel caps it at `net.core.rmem_max`); `nil` keeps the default.
        public var receiveBufferBytes: Int?
        /// Default options: none of the above.
        public init(reusePort: Bool = false, reuseAddress: Bool = false, ipv6Only: Bool = false, receiveBufferBytes: Int? = nil) {
            self.reusePort = reusePort
            self.reuseAddress = reuseAddress
            self.ipv6Only = ipv6Only
            self.receiveBufferBytes = receiveBufferBytes
        }
    }

    /// A new non-blocking, close-on-exec UDP socket of `family`'s address family; both buffers asked
    /// to be `bufferBytes` when given.
    public static func open(family: IPAddress, bufferBytes: Int? = nil) throws(DatagramIOError) -> Int32 {
        let domain = family.isIPv4 ? AF_INET : AF_INET6
        let type = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = socket(domain, type, 0)
        guard fd >= 0 else { throw DatagramIOError("socket", errno: errno) }
        if let bufferBytes {
            setOption(fd, SOL_SOCKET, SO_RCVBUF, Int32(clamping: bufferBytes))
            setOption(fd, SOL_SOCKET, SO_SNDBUF, Int32(clamping: bufferBytes))
        }
        return fd
    }

    /// A new non-blocking UDP socket bound to `address` (port 0: one the kernel picks) with `options`;
    /// the error keeps the bind's `errno` (`EADDRINUSE` when the port is taken).
    public static func open(bound address: TransportAddress, options: Options = Options()) throws(DatagramIOError) -> Int32 {
        let fd = try open(family: address.ip)
        if options.reusePort { setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1) }
        if options.reuseAddress { setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1) }
        if options.ipv6Only, !address.ip.isIPv4 { setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
        if let bytes = options.receiveBufferBytes { setOption(fd, SOL_SOCKET, SO_RCVBUF, Int32(clamping: bytes)) }
        guard withSockaddr(address, { bind(fd, $0, $1) }) == 0 else {
            let error = DatagramIOError("bind \(address)", errno: errno)
            close(fd)
            throw error
        }
        return fd
    }

    /// Sets an integer socket option; false when the kernel refuses it.
    @discardableResult
    public static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) -> Bool {
        var v = value
        return setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) == 0
    }

    /// The address `fd` is bound to.
    public static func localAddress(_ fd: Int32) -> TransportAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { return nil }
        return withUnsafePointer(to: &storage) { transportAddress($0) }
    }

    /// Calls `body` with `a` as a `sockaddr` and its length.
    public static func withSockaddr<R>(_ a: TransportAddress, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var storage = sockaddr_storage()
        let length = store(a, in: &storage)
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }

    /// Writes `a` into `storage` as a `sockaddr_in` or `sockaddr_in6`; returns its length.
    public static func store(_ a: TransportAddress, in storage: UnsafeMutablePointer<sockaddr_storage>) -> socklen_t {
        switch a.ip {
        case .v4(let ip):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = a.port.bigEndian
            sin.sin_addr.s_addr = ip.bigEndian
            UnsafeMutableRawPointer(storage).storeBytes(of: sin, as: sockaddr_in.self)
            return socklen_t(MemoryLayout<sockaddr_in>.size)
        case .v6:
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = a.port.bigEndian
            let bytes = a.ip.bytes
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in
                for i in 0..<16 { raw[i] = bytes[i] }
            }
            UnsafeMutableRawPointer(storage).storeBytes(of: sin6, as: sockaddr_in6.self)
            return socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
    }

    /// Writes `a` into `storage` (see the other overload).
    public static func store(_ a: TransportAddress, in storage: inout sockaddr_storage) -> socklen_t {
        withUnsafeMutablePointer(to: &storage) { store(a, in: $0) }
    }

    /// The address a `sockaddr_in` or `sockaddr_in6` in `storage` names; `nil` for other families.
    public static func transportAddress(_ storage: UnsafePointer<sockaddr_storage>) -> TransportAddress? {
        let raw = UnsafeRawPointer(storage)
        switch Int32(storage.pointee.ss_family) {
        case AF_INET:
            let sin = raw.load(as: sockaddr_in.self)
            return TransportAddress(ip: .v4(UInt32(bigEndian: sin.sin_addr.s_addr)), port: UInt16(bigEndian: sin.sin_port))
        case AF_INET6:
            let sin6 = raw.load(as: sockaddr_in6.self)
            var addr = sin6.sin6_addr
            let bytes = withUnsafeBytes(of: &addr) { Array($0) }
            return IPAddress(bytes: bytes).map { TransportAddress(ip: $0, port: UInt16(bigEndian: sin6.sin6_port)) }
        default:
            return nil
        }
    }
}

/// Datagrams queued for several sockets, sent with one `sendmmsg` per run of consecutive datagrams for
/// one socket when ``flush()`` runs. Bytes are copied into buffers reused from flush to flush: queuing
/// allocates nothing.
public final class SendBatch {
    /// Datagrams queued at most; ``append(socket:to:_:)`` flushes first when full.
    public let capacity: Int
    /// Bytes one queued datagram may hold at most.
    public let maxBytes: Int
    /// Datagrams queued right now.
    public private(set) var count = 0
    /// Datagrams the kernel would not take since this batch was made (socket buffer full, or an error
    /// such as an unreachable peer): UDP drops them.
    public private(set) var dropped = 0
    private let slots: MessageSlots
    private let sockets: UnsafeMutablePointer<Int32>
    private let calls = MultiMessageCalls.shared
    private var headers: UnsafeMutablePointer<MultiMessageHeader> { slots.headers }
    private var vectors: UnsafeMutablePointer<iovec> { slots.vectors }
    private var names: UnsafeMutablePointer<sockaddr_storage> { slots.names }

    /// Allocates room for `capacity` datagrams of up to `maxBytes`.
    public init(capacity: Int, maxBytes: Int) {
        self.capacity = capacity
        self.maxBytes = maxBytes
        slots = MessageSlots(count: capacity, slotBytes: maxBytes)
        sockets = .allocate(capacity: capacity)
        sockets.initialize(repeating: -1, count: capacity)
    }

    deinit { sockets.deallocate() }

    /// Queues `bytes` for `socket` to send to `destination`; a datagram longer than ``maxBytes`` leaves
    /// at once with `sendto`, after what was queued before it.
    public func append(socket: Int32, to destination: TransportAddress, _ bytes: UnsafeRawBufferPointer) {
        guard bytes.count <= maxBytes else {
            flush()
            let sent = UDPSocket.withSockaddr(destination) { sendto(socket, bytes.baseAddress, bytes.count, 0, $0, $1) }
            if sent < 0 { dropped += 1 }
            return
        }
        append(socket: socket, to: destination, length: bytes.count) { $0.copyMemory(from: bytes) }
    }

    /// Queues a datagram of `length` bytes (at most ``maxBytes``, else it is dropped) that `fill` writes
    /// into the buffer it is given.
    public func append(socket: Int32, to destination: TransportAddress, length: Int,
                       _ fill: (UnsafeMutableRawBufferPointer) -> Void) {
        guard length <= maxBytes else {
            dropped += 1
            return
        }
        if count == capacity { flush() }
        let i = count
        let base = vectors[i].iov_base!
        fill(UnsafeMutableRawBufferPointer(start: base, count: length))
        vectors[i].iov_len = length
        headers[i] = MultiMessageHeader()
        headers[i].header.msg_iov = vectors + i
        headers[i].header.msg_iovlen = 1
        headers[i].header.msg_name = UnsafeMutableRawPointer(names + i)
        headers[i].header.msg_namelen = UDPSocket.store(destination, in: names + i)
        sockets[i] = socket
        count += 1
    }

    /// Sends everything queued, in order per socket; what the kernel refuses is dropped.
    public func flush() {
        var start = 0
        while start < count {
            var end = start + 1
            while end < count, sockets[end] == sockets[start] { end += 1 }
            var next = start
            // Bounded: every pass sends at least one datagram or drops one.
            while next < end {
                let n = calls.send(sockets[start], UnsafeMutableRawPointer(headers + next), UInt32(end - next), 0)
                if n > 0 {
                    next += Int(n)
                } else {
                    // The first datagram is refused (a full buffer, an ICMP error reported late): drop it, go on.
                    dropped += 1
                    next += 1
                }
            }
            start = end
        }
        count = 0
    }
}
