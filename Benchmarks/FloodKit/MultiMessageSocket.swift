#if canImport(Glibc)
import Glibc
#endif
import STUNLite

/// Linux's `struct mmsghdr`: one message header plus the byte count the kernel fills in.
///
/// Swift's Glibc module leaves out the GNU-only `sendmmsg`/`recvmmsg` and this struct; the layout
/// (a `msghdr` followed by an `unsigned int`, stride 64 on LP64) matches the C declaration.
public struct MultiMessageHeader {
    /// The message: address, vectors, control data, flags.
    public var header = msghdr()
    /// Bytes the kernel sent or received for this message.
    public var length: UInt32 = 0
    /// An empty header.
    public init() {}
}

/// A connected, non-blocking UDP socket that sends and receives in batches with `sendmmsg`/`recvmmsg`.
///
/// The two calls are looked up in the C library at run time (they are absent from Swift's Glibc
/// module), so this target needs no C shim and depends on STUNLite alone.
public final class MultiMessageSocket {
    private typealias SendMultiple = @convention(c) (Int32, UnsafeMutableRawPointer?, UInt32, Int32) -> Int32
    private typealias ReceiveMultiple = @convention(c) (Int32, UnsafeMutableRawPointer?, UInt32, Int32, UnsafeMutableRawPointer?) -> Int32

    /// The file descriptor.
    public let fd: Int32
    /// The address the socket is bound to, as the server should report it in XOR-MAPPED-ADDRESS.
    public let local: TransportAddress
    /// The address the socket is connected to (its own address when unconnected).
    public let peer: TransportAddress
    private let sendMultiple: SendMultiple
    private let receiveMultiple: ReceiveMultiple

    /// Opens a socket, binds it to an ephemeral port (on `source` if given, else where the kernel
    /// routes to the target) and connects it to `target`.
    public convenience init(target: TransportAddress, from source: IPAddress? = nil) throws(FloodError) {
        try self.init(family: target.ip, source: source.map { TransportAddress(ip: $0, port: 0) }, target: target)
    }

    /// Opens a socket bound to `source` (port 0: an ephemeral one) and connected to nothing: it sends
    /// to the address each message names and receives from anyone.
    public convenience init(unconnectedAt source: TransportAddress) throws(FloodError) {
        try self.init(family: source.ip, source: source, target: nil)
    }

    private init(family familyOf: IPAddress, source: TransportAddress?, target: TransportAddress?) throws(FloodError) {
        guard let handle = dlopen(nil, RTLD_NOW),
              let send = dlsym(handle, "sendmmsg"), let receive = dlsym(handle, "recvmmsg") else {
            throw FloodError("sendmmsg/recvmmsg not found in the C library")
        }
        sendMultiple = unsafeBitCast(send, to: SendMultiple.self)
        receiveMultiple = unsafeBitCast(receive, to: ReceiveMultiple.self)
        let family = familyOf.isIPv4 ? AF_INET : AF_INET6
        let descriptor = socket(family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard descriptor >= 0 else { throw FloodError("socket: \(String(cString: strerror(errno)))") }
        var size = Int32(Self.socketBufferBytes)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        if let source {
            let bound = Self.withSockaddr(source) { bind(descriptor, $0, $1) }
            guard bound == 0 else {
                let reason = String(cString: strerror(errno))
                close(descriptor)
                throw FloodError("bind \(source): \(reason)")
            }
        }
        if let target {
            let connected = Self.withSockaddr(target) { connect(descriptor, $0, $1) }
            guard connected == 0 else {
                let reason = String(cString: strerror(errno))
                close(descriptor)
                throw FloodError("connect \(target): \(reason)")
            }
        }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard named == 0, let address = Self.transportAddress(storage) else {
            close(descriptor)
            throw FloodError("getsockname failed")
        }
        fd = descriptor
        local = address
        peer = target ?? address
    }

    deinit { close(fd) }

    /// Socket send and receive buffer size asked of the kernel: room for a few windows of small datagrams.
    public static let socketBufferBytes = 4 << 20
    /// `SOL_UDP` and `UDP_SEGMENT` from `<netinet/udp.h>` (absent from Swift's Glibc module).
    private static let solUDP: Int32 = 17
    private static let udpSegment: Int32 = 103
    /// Most segments one UDP GSO send may carry (the kernel's `UDP_MAX_SEGMENTS` on older kernels).
    public static let maxSegmentsPerSend = 64

    /// Turns on UDP generic segmentation offload (Linux ≥ 4.18): each message sent is then split by the
    /// kernel into datagrams of `segmentSize` bytes, so a batch of equal-size requests costs the
    /// generator one trip through the UDP/IP stack instead of one per request. The server still
    /// receives ordinary individual datagrams. Returns false when the kernel refuses.
    public func enableSegmentation(segmentSize: Int) -> Bool {
        var size = Int32(segmentSize)
        return setsockopt(fd, Self.solUDP, Self.udpSegment, &size, socklen_t(MemoryLayout<Int32>.size)) == 0
    }

    /// Turns UDP GSO off again, so that a datagram longer than the segment size leaves whole.
    public func disableSegmentation() {
        var size: Int32 = 0
        setsockopt(fd, Self.solUDP, Self.udpSegment, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Sends up to `count` prepared messages; returns how many left, 0 when the socket buffer is full.
    public func send(_ messages: UnsafeMutablePointer<MultiMessageHeader>, count: Int) throws(FloodError) -> Int {
        let n = sendMultiple(fd, UnsafeMutableRawPointer(messages), UInt32(count), 0)
        if n >= 0 { return Int(n) }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == ECONNREFUSED { return 0 }
        throw FloodError("sendmmsg: \(String(cString: strerror(errno)))")
    }

    /// Receives up to `count` datagrams without blocking; returns how many, 0 when none are queued.
    public func receive(_ messages: UnsafeMutablePointer<MultiMessageHeader>, count: Int) throws(FloodError) -> Int {
        let n = receiveMultiple(fd, UnsafeMutableRawPointer(messages), UInt32(count), Int32(MSG_DONTWAIT), nil)
        if n >= 0 { return Int(n) }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED { return 0 }
        throw FloodError("recvmmsg: \(String(cString: strerror(errno)))")
    }

    /// Sends one datagram; false when the socket buffer is full.
    public func send(_ bytes: [UInt8]) throws(FloodError) -> Bool {
        try sent(bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) })
    }

    /// Sends one datagram of `bytes` (to the connected peer); false when the socket buffer is full.
    public func send(_ bytes: UnsafeRawBufferPointer) throws(FloodError) -> Bool {
        try sent(Glibc.send(fd, bytes.baseAddress, bytes.count, 0))
    }

    /// What a `send` returning `n` means: sent, the socket buffer is full (false), or an error.
    private func sent(_ n: Int) throws(FloodError) -> Bool {
        if n >= 0 { return true }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == ECONNREFUSED { return false }
        throw FloodError("send: \(String(cString: strerror(errno)))")
    }

    /// Waits up to `milliseconds` for one datagram and returns it, or `nil` when none came.
    public func receive(waitingMilliseconds milliseconds: Int32, maxBytes: Int) throws(FloodError) -> [UInt8]? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, milliseconds) > 0 else { return nil }
        var out = [UInt8](repeating: 0, count: maxBytes)
        let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n >= 0 { return Array(out[0..<n]) }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED { return nil }
        throw FloodError("recv: \(String(cString: strerror(errno)))")
    }

    static func withSockaddr<R>(_ a: TransportAddress, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        switch a.ip {
        case .v4(let ip):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = a.port.bigEndian
            sin.sin_addr.s_addr = ip.bigEndian
            return withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .v6:
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = a.port.bigEndian
            let bytes = a.ip.bytes
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in
                for i in 0..<16 { raw[i] = bytes[i] }
            }
            return withUnsafePointer(to: &sin6) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
    }

    private static func transportAddress(_ storage: sockaddr_storage) -> TransportAddress? {
        var s = storage
        switch Int32(s.ss_family) {
        case AF_INET:
            return withUnsafeBytes(of: &s) { raw in
                let sin = raw.load(as: sockaddr_in.self)
                return TransportAddress(ip: .v4(UInt32(bigEndian: sin.sin_addr.s_addr)), port: UInt16(bigEndian: sin.sin_port))
            }
        case AF_INET6:
            return withUnsafeBytes(of: &s) { raw in
                let sin6 = raw.load(as: sockaddr_in6.self)
                var addr = sin6.sin6_addr
                let bytes = withUnsafeBytes(of: &addr) { Array($0) }
                return IPAddress(bytes: bytes).map { TransportAddress(ip: $0, port: UInt16(bigEndian: sin6.sin6_port)) }
            }
        default:
            return nil
        }
    }
}

/// Headers, vectors and buffers for receiving up to ``count`` datagrams of up to ``maxBytes`` each in one `recvmmsg`.
public final class ReceiveBatch {
    /// Datagrams one call receives at most.
    public let count: Int
    /// Receive room per datagram; longer ones are truncated by the kernel (see ``isTruncated(_:)``).
    public let maxBytes: Int
    private let headers: UnsafeMutablePointer<MultiMessageHeader>
    private let vectors: UnsafeMutablePointer<iovec>
    private let buffers: UnsafeMutableRawBufferPointer

    /// Allocates room for `count` datagrams of `maxBytes`.
    public init(count: Int, maxBytes: Int) {
        self.count = count
        self.maxBytes = maxBytes
        headers = .allocate(capacity: count)
        headers.initialize(repeating: MultiMessageHeader(), count: count)
        vectors = .allocate(capacity: count)
        buffers = .allocate(byteCount: count * maxBytes, alignment: 16)
        for i in 0..<count { vectors[i] = iovec(iov_base: buffers.baseAddress! + i * maxBytes, iov_len: maxBytes) }
    }

    deinit {
        headers.deallocate()
        vectors.deallocate()
        buffers.deallocate()
    }

    /// Receives what `socket` has queued, without blocking; returns how many datagrams arrived (0 when none).
    public func receive(on socket: MultiMessageSocket) throws(FloodError) -> Int {
        for i in 0..<count {
            vectors[i].iov_len = maxBytes
            headers[i] = MultiMessageHeader()
            headers[i].header.msg_iov = vectors + i
            headers[i].header.msg_iovlen = 1
        }
        return try socket.receive(headers, count: count)
    }

    /// Bytes of datagram `i` of the last receive.
    public func length(_ i: Int) -> Int { Int(headers[i].length) }

    /// Whether datagram `i` of the last receive was longer than ``maxBytes``.
    public func isTruncated(_ i: Int) -> Bool { headers[i].header.msg_flags & Int32(MSG_TRUNC) != 0 }

    /// The bytes of datagram `i` of the last receive (valid until the next receive).
    public func bytes(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: buffers.baseAddress! + i * maxBytes, count: length(i))
    }
}
