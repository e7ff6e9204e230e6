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
    /// The file descriptor.
    public let fd: Int32
    /// The address the socket is bound to, as the server should report it in XOR-MAPPED-ADDRESS.
    public let local: TransportAddress
    /// The address the socket is connected to (its own address when unconnected).
    public let peer: TransportAddress
    private let calls: MultiMessageCalls

    /// Opens a socket, binds it to an ephemeral port (on `source` if given, else where the kernel
    /// routes to the target) and connects it to `target`.
    public convenience init(target: TransportAddress, from source: IPAddress? = nil) throws(DatagramIOError) {
        try self.init(family: target.ip, source: source.map { TransportAddress(ip: $0, port: 0) }, target: target)
    }

    /// Opens a socket bound to `source` (port 0: an ephemeral one) and connected to nothing: it sends
    /// to the address each message names and receives from anyone.
    public convenience init(unconnectedAt source: TransportAddress) throws(DatagramIOError) {
        try self.init(family: source.ip, source: source, target: nil)
    }

    private init(family familyOf: IPAddress, source: TransportAddress?, target: TransportAddress?) throws(DatagramIOError) {
        calls = try MultiMessageCalls.lookUp()
        let descriptor = try UDPSocket.open(family: familyOf, bufferBytes: Self.socketBufferBytes)
        if let source {
            guard UDPSocket.withSockaddr(source, { bind(descriptor, $0, $1) }) == 0 else {
                let error = DatagramIOError("bind \(source)", errno: errno)
                close(descriptor)
                throw error
            }
        }
        if let target {
            guard UDPSocket.withSockaddr(target, { connect(descriptor, $0, $1) }) == 0 else {
                let error = DatagramIOError("connect \(target)", errno: errno)
                close(descriptor)
                throw error
            }
        }
        guard let address = UDPSocket.localAddress(descriptor) else {
            close(descriptor)
            throw DatagramIOError("getsockname failed")
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
    public func send(_ messages: UnsafeMutablePointer<MultiMessageHeader>, count: Int) throws(DatagramIOError) -> Int {
        let n = calls.send(fd, UnsafeMutableRawPointer(messages), UInt32(count), 0)
        if n >= 0 { return Int(n) }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == ECONNREFUSED { return 0 }
        throw DatagramIOError("sendmmsg", errno: errno)
    }

    /// Receives up to `count` datagrams without blocking; returns how many, 0 when none are queued.
    public func receive(_ messages: UnsafeMutablePointer<MultiMessageHeader>, count: Int) throws(DatagramIOError) -> Int {
        let n = calls.receive(fd, UnsafeMutableRawPointer(messages), UInt32(count), Int32(MSG_DONTWAIT), nil)
        if n >= 0 { return Int(n) }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED { return 0 }
        throw DatagramIOError("recvmmsg", errno: errno)
    }

    /// Sends one datagram; false when the socket buffer is full.
    public func send(_ bytes: [UInt8]) throws(DatagramIOError) -> Bool {
        try sent(bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) })
    }

    /// Sends one datagram of `bytes` (to the connected peer); false when the socket buffer is full.
    public func send(_ bytes: UnsafeRawBufferPointer) throws(DatagramIOError) -> Bool {
        try sent(Glibc.send(fd, bytes.baseAddress, bytes.count, 0))
    }

    /// What a `send` returning `n` means: sent, the socket buffer is full (false), or an error.
    private func sent(_ n: Int) throws(DatagramIOError) -> Bool {
        if n >= 0 { return true }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == ECONNREFUSED { return false }
        throw DatagramIOError("send", errno: errno)
    }

    /// Waits up to `milliseconds` for one datagram and returns it, or `nil` when none came.
    public func receive(waitingMilliseconds milliseconds: Int32, maxBytes: Int) throws(DatagramIOError) -> [UInt8]? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, milliseconds) > 0 else { return nil }
        var out = [UInt8](repeating: 0, count: maxBytes)
        let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n >= 0 { return Array(out[0..<n]) }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED { return nil }
        throw DatagramIOError("recv", errno: errno)
    }

}

/// Headers, vectors and buffers for receiving up to ``count`` datagrams of up to ``maxBytes`` each in one `recvmmsg`.
///
/// Each datagram lands ``headroom`` bytes into its slot, so a header can be written in front of it
/// in place (a relay's ChannelData, RFC 8656 §12.4); its source address is kept (``source(_:)``).
public final class ReceiveBatch {
    /// Datagrams one call receives at most.
    public let count: Int
    /// Receive room per datagram; longer ones are truncated by the kernel (see ``isTruncated(_:)``).
    public let maxBytes: Int
    /// Bytes left free in front of each datagram.
    public let headroom: Int
    private let slots: MessageSlots
    private let calls = MultiMessageCalls.shared
    private var headers: UnsafeMutablePointer<MultiMessageHeader> { slots.headers }
    private var vectors: UnsafeMutablePointer<iovec> { slots.vectors }
    private var names: UnsafeMutablePointer<sockaddr_storage> { slots.names }

    /// Allocates room for `count` datagrams of `maxBytes`, each `headroom` bytes into its slot.
    public init(count: Int, maxBytes: Int, headroom: Int = 0) {
        self.count = count
        self.maxBytes = maxBytes
        self.headroom = headroom
        slots = MessageSlots(count: count, slotBytes: headroom + maxBytes, offset: headroom)
        for i in 0..<count { slots.vectors[i].iov_len = maxBytes }
    }

    /// Receives what `socket` has queued, without blocking; returns how many datagrams arrived (0 when none).
    public func receive(on socket: MultiMessageSocket) throws(DatagramIOError) -> Int {
        try receive(from: socket.fd, upTo: count)
    }

    /// Receives up to `limit` (at most ``count``) datagrams queued on `fd`, without blocking; returns
    /// how many arrived (0 when none).
    public func receive(from fd: Int32, upTo limit: Int) throws(DatagramIOError) -> Int {
        let n = min(limit, count)
        for i in 0..<n {
            vectors[i].iov_len = maxBytes
            headers[i] = MultiMessageHeader()
            headers[i].header.msg_iov = vectors + i
            headers[i].header.msg_iovlen = 1
            headers[i].header.msg_name = UnsafeMutableRawPointer(names + i)
            headers[i].header.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
        }
        let got = calls.receive(fd, UnsafeMutableRawPointer(headers), UInt32(n), Int32(MSG_DONTWAIT), nil)
        if got >= 0 { return Int(got) }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED || errno == EINTR { return 0 }
        throw DatagramIOError("recvmmsg", errno: errno)
    }

    /// Bytes of datagram `i` of the last receive.
    public func length(_ i: Int) -> Int { Int(headers[i].length) }

    /// Whether datagram `i` of the last receive was longer than ``maxBytes``.
    public func isTruncated(_ i: Int) -> Bool { headers[i].header.msg_flags & Int32(MSG_TRUNC) != 0 }

    /// The bytes of datagram `i` of the last receive (valid until the next receive).
    public func bytes(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: UnsafeRawPointer(vectors[i].iov_base!), count: length(i))
    }

    /// Datagram `i` of the last receive with its ``headroom`` in front, to write a header into (valid
    /// until the next receive).
    public func slot(_ i: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: vectors[i].iov_base!.advanced(by: -headroom), count: headroom + length(i))
    }

    /// Where datagram `i` of the last receive came from.
    public func source(_ i: Int) -> TransportAddress? { UDPSocket.transportAddress(names + i) }
}
