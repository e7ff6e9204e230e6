import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SourceLimits

/// A STUN server over UDP and TCP, with RFC 5780 behaviour discovery when given a second IP address.
///
/// Binding requests are answered by ``STUNBindingResponder``; the server itself only moves bytes.
/// UDP sockets read in batches (`recvmmsg`, ``Configuration/vectorReadCount`` datagrams at a time) and
/// flush replies once per batch, which NIO sends with `sendmmsg`. It keeps no per-client state.
public final class STUNServer: Sendable {
    /// How to run a STUN server.
    public struct Configuration: Sendable {
        /// The primary IP address to listen on.
        public var listenIP: IPAddress
        /// The primary port (0 picks a free one).
        public var port: UInt16
        /// A second IP for RFC 5780 behaviour discovery (four UDP sockets: two IPs × two ports).
        public var alternateIP: IPAddress?
        /// The second port; 0 or `nil` picks a free one.
        public var alternatePort: UInt16?
        /// SOFTWARE to put in responses; off by default (RFC 8489 §16.1.2: it helps attackers and costs bytes).
        public var software: String?
        /// Whether to listen on TCP as well (same IPs, primary port).
        public var tcp: Bool
        /// Datagrams read per system call on UDP sockets.
        public var vectorReadCount: Int
        /// UDP sockets bound to each address with `SO_REUSEPORT`, each on its own event loop; the kernel
        /// spreads clients over them by address hash. 1 (the default) binds one plain socket.
        public var udpSocketsPerAddress: Int
        /// `SO_RCVBUF` asked for each UDP socket, bytes (the kernel caps it at `net.core.rmem_max`). The
        /// default queue (about 200 kB, some 250 small datagrams) overflows under bursts long before the CPU is busy.
        public var udpReceiveBufferBytes: Int
        /// A TCP connection is closed when no complete STUN message arrived for this long: stray bytes
        /// (a message dripped a byte at a time) do not keep it open.
        public var tcpIdleTimeout: TimeAmount
        /// TCP connections open at once, at most; more are closed on accept.
        public var maxTCPConnections: Int
        /// TCP connections one source (IPv4 address or IPv6 /64) may hold at once; more are closed on accept.
        public var maxTCPConnectionsPerSource: Int
        /// Default of ``maxTCPConnectionsPerSource``: 16, for a NAT with a few clients learning their mappings.
        public static let defaultMaxTCPConnectionsPerSource = 16

        /// Creates a configuration with the defaults: port 3478, TCP on, 32-datagram reads, one UDP socket per
        /// address with a 2 MiB receive buffer, 30 s idle, 1024 connections, 16 per source.
        public init(listenIP: IPAddress, port: UInt16 = 3478, alternateIP: IPAddress? = nil, alternatePort: UInt16? = nil,
                    software: String? = nil, tcp: Bool = true, vectorReadCount: Int = 32, udpSocketsPerAddress: Int = 1,
                    udpReceiveBufferBytes: Int = STUNServer.defaultUDPReceiveBufferBytes, tcpIdleTimeout: TimeAmount = .seconds(30),
                    maxTCPConnections: Int = 1024, maxTCPConnectionsPerSource: Int = defaultMaxTCPConnectionsPerSource) {
            self.listenIP = listenIP
            self.port = port
            self.alternateIP = alternateIP
            self.alternatePort = alternatePort
            self.software = software
            self.tcp = tcp
            self.vectorReadCount = vectorReadCount
            self.udpSocketsPerAddress = udpSocketsPerAddress
            self.udpReceiveBufferBytes = udpReceiveBufferBytes
            self.tcpIdleTimeout = tcpIdleTimeout
            self.maxTCPConnections = maxTCPConnections
            self.maxTCPConnectionsPerSource = maxTCPConnectionsPerSource
        }
    }

    /// The largest datagram the server reads; bigger ones are truncated by the kernel and then dropped.
    public static let maxDatagramSize = 2048
    /// Default of ``Configuration/udpReceiveBufferBytes``: 2 MiB.
    public static let defaultUDPReceiveBufferBytes = 2 << 20
    /// Upper bound of ``Configuration/udpSocketsPerAddress``.
    public static let maxUDPSocketsPerAddress = 64

    /// The UDP addresses the server answers on, by role (four with an alternate IP, else one).
    public let udpAddresses: [STUNSocketRole: TransportAddress]
    /// The TCP addresses the server answers on.
    public let tcpAddresses: [TransportAddress]
    private let channels: [Channel]
    private let logger: Logger

    private init(udp: [STUNSocketRole: TransportAddress], tcp: [TransportAddress], channels: [Channel], logger: Logger) {
        self.udpAddresses = udp
        self.tcpAddresses = tcp
        self.channels = channels
        self.logger = logger
    }

    /// Binds every socket and starts answering; a picked port (0) taken on TCP is picked again (`FreePortRetry`).
    public static func start(_ configuration: Configuration,
                             group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                             logger: Logger = Logger(label: "trav.stun-server")) async throws -> STUNServer {
        try await FreePortRetry.run(picked: configuration.port == 0) {
            try await startOnce(configuration, group: group, logger: logger)
        }
    }

    private static func startOnce(_ configuration: Configuration, group: any EventLoopGroup, logger: Logger) async throws -> STUNServer {
        let peers = PeerChannels()
        var channels: [Channel] = []
        var udp: [STUNSocketRole: TransportAddress] = [:]
        let socketsPerAddress = min(max(1, configuration.udpSocketsPerAddress), maxUDPSocketsPerAddress)
        let loops = Array(group.makeIterator())
        var nextLoop = 0
        do {
            let responderBox = NIOLockedValueBox(STUNBindingResponder(addresses: [:], software: configuration.software))
            func bindUDP(_ ip: IPAddress, _ port: UInt16, _ role: STUNSocketRole) async throws -> TransportAddress {
                var local: TransportAddress?
                for _ in 0..<socketsPerAddress {
                    let loop = loops[nextLoop % loops.count]
                    nextLoop += 1
                    let bootstrap = UDPServerSocket.listener(
                        DatagramBootstrap(group: loop), receiveBufferBytes: configuration.udpReceiveBufferBytes,
                        vectorReadCount: configuration.vectorReadCount, maxDatagramSize: maxDatagramSize,
                        reusePort: socketsPerAddress > 1)
                    let channel = try await bootstrap
                        .channelInitializer { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(
                                    STUNUDPHandler(responder: responderBox, role: role, peers: peers, logger: logger))
                            }
                        }
                        .bind(to: TransportAddress(ip: ip, port: local?.port ?? port).socketAddress).get()
                    channels.append(channel)
                    if local == nil {
                        peers.set(role, channel)
                        guard let bound = channel.localAddress.flatMap(TransportAddress.init) else {
                            throw STUNClientError(.socket, detail: "no local address")
                        }
                        local = bound
                    }
                }
                return local!
            }
            let primary = try await bindUDP(configuration.listenIP, configuration.port, .primary)
            udp[.primary] = primary
            if let alt = configuration.alternateIP {
                let p2 = try await bindUDP(configuration.listenIP, configuration.alternatePort ?? 0,
                                           STUNSocketRole(alternateIP: false, alternatePort: true))
                udp[STUNSocketRole(alternateIP: false, alternatePort: true)] = p2
                udp[STUNSocketRole(alternateIP: true, alternatePort: false)] =
                    try await bindUDP(alt, primary.port, STUNSocketRole(alternateIP: true, alternatePort: false))
                udp[STUNSocketRole(alternateIP: true, alternatePort: true)] =
                    try await bindUDP(alt, p2.port, STUNSocketRole(alternateIP: true, alternatePort: true))
            }
            responderBox.withLockedValue { $0.addresses = udp }
            let responder = responderBox.withLockedValue { $0 }

            var tcp: [TransportAddress] = []
            if configuration.tcp {
                let connections = SharedConnectionSlots(maxPerSource: configuration.maxTCPConnectionsPerSource,
                                                        maxTotal: configuration.maxTCPConnections)
                var ips = [configuration.listenIP]
                if let alt = configuration.alternateIP { ips.append(alt) }
                for (i, ip) in ips.enumerated() {
                    let role = STUNSocketRole(alternateIP: i == 1, alternatePort: false)
                    let server = try await ServerBootstrap(group: group)
                        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                        .serverChannelOption(.backlog, value: 256)
                        .childChannelInitializer { child in
                            let source = child.remoteAddress.map(SourceAddressKey.init) ?? .unidentified
                            guard connections.admit(source) == nil else { return child.close() }
                            child.closeFuture.whenComplete { _ in connections.release(source) }
                            return child.eventLoop.makeCompletedFuture {
                                // The idle timer sits after the framer: only whole messages reset it.
                                try child.pipeline.syncOperations.addHandlers(
                                    ByteToMessageHandler(STUNFrameDecoder()),
                                    IdleStateHandler(readTimeout: configuration.tcpIdleTimeout),
                                    STUNTCPHandler(responder: responder, role: role))
                            }
                        }
                        .bind(to: TransportAddress(ip: ip, port: primary.port).socketAddress).get()
                    channels.append(server)
                    if let local = server.localAddress.flatMap(TransportAddress.init) { tcp.append(local) }
                }
            }
            logger.info("stun server listening", metadata: [
                "udp": "\(udp.values.sorted { $0.description < $1.description })", "tcp": "\(tcp)"])
            return STUNServer(udp: udp, tcp: tcp, channels: channels, logger: logger)
        } catch {
            for c in channels { try? await c.close() }
            throw error
        }
    }

    /// Closes every socket.
    public func shutdown() async {
        for c in channels { try? await c.close() }
        logger.info("stun server stopped")
    }

    /// Resolves when every socket has closed.
    public func waitUntilClosed() async {
        for c in channels { try? await c.closeFuture.get() }
    }
}

/// The server's UDP channels by role, so a reply can leave from another socket (RFC 5780 CHANGE-REQUEST).
final class PeerChannels: Sendable {
    private let box = NIOLockedValueBox<[STUNSocketRole: Channel]>([:])
    func set(_ role: STUNSocketRole, _ channel: Channel) { box.withLockedValue { $0[role] = channel } }
    func get(_ role: STUNSocketRole) -> Channel? { box.withLockedValue { $0[role] } }
}

/// Answers Binding requests on one UDP socket; replies are flushed once per read batch.
///
/// Requests of the common shapes are answered by ``STUNUDPFastPath`` into one buffer per read burst
/// (sliced and written when the burst ends); all others by ``STUNBindingResponder``.
final class STUNUDPHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let responderBox: NIOLockedValueBox<STUNBindingResponder>
    /// The responder and its fast path, fixed at the first datagram after the server knows all its addresses.
    private var answerers: (responder: STUNBindingResponder, fastPath: STUNUDPFastPath)?
    /// Fast-path replies of the current read burst, back to back; `nil` between bursts.
    private var burst: ByteBuffer?
    /// Where each reply in ``burst`` goes, and its length, in order.
    private var burstReplies: [(destination: SocketAddress, length: Int)] = []

    /// Replies a burst buffer is first sized for (it grows if a burst brings more).
    static let burstCapacityReplies = 128
    private let role: STUNSocketRole
    private let peers: PeerChannels
    private let logger: Logger

    init(responder: NIOLockedValueBox<STUNBindingResponder>, role: STUNSocketRole, peers: PeerChannels, logger: Logger) {
        self.responderBox = responder
        self.role = role
        self.peers = peers
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let source = TransportAddress(envelope.remoteAddress) else { return }
        let (responder, fastPath) = answerers ?? loadAnswerers()
        // Taken out of `burst` first so the buffer is uniquely referenced and appending never copies it.
        var out: ByteBuffer
        if let pending = burst {
            out = pending
            burst = nil
        } else {
            out = context.channel.allocator.buffer(capacity: Self.burstCapacityReplies * STUNUDPFastPath.maxReplySize)
        }
        let length = fastPath.reply(to: envelope.data, from: source, appendingTo: &out)
        burst = out
        if let length {
            burstReplies.append((envelope.remoteAddress, length))
            return
        }
        let bytes = Array(envelope.data.readableBytesView)
        guard let reply = responder.respond(to: bytes, from: source, on: role, transport: .udp) else { return }
        let destination = reply.to == source ? envelope.remoteAddress : reply.to.socketAddress
        if reply.from == role {
            let out = context.channel.allocator.buffer(bytes: reply.bytes)
            context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: destination, data: out)), promise: nil)
        } else if let other = peers.get(reply.from) {
            let out = other.allocator.buffer(bytes: reply.bytes)
            other.writeAndFlush(AddressedEnvelope(remoteAddress: destination, data: out), promise: nil)
        }
    }

    /// Takes the responder from the server; kept for good once the server has filled in its addresses
    /// (a datagram can arrive while the other sockets are still being bound).
    private func loadAnswerers() -> (responder: STUNBindingResponder, fastPath: STUNUDPFastPath) {
        let responder = responderBox.withLockedValue { $0 }
        let loaded = (responder: responder, fastPath: STUNUDPFastPath(responder: responder, role: role))
        if !responder.addresses.isEmpty { answerers = loaded }
        return loaded
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if var out = burst, !burstReplies.isEmpty {
            for reply in burstReplies {
                let slice = out.readSlice(length: reply.length)!
                context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: reply.destination, data: slice)), promise: nil)
            }
            burstReplies.removeAll(keepingCapacity: true)
            burst = nil
        }
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP port-unreachable from a former client surfaces here; a UDP server carries on.
        logger.trace("udp socket error", metadata: ["error": "\(error)"])
    }
}

/// Answers Binding requests on one TCP connection, frame by frame.
final class STUNTCPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let responder: STUNBindingResponder
    private let role: STUNSocketRole

    init(responder: STUNBindingResponder, role: STUNSocketRole) {
        self.responder = responder
        self.role = role
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard let source = context.channel.remoteAddress.flatMap(TransportAddress.init) else { return }
        guard let reply = responder.respond(to: Array(frame.readableBytesView), from: source, on: role, transport: .tcp) else { return }
        context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: reply.bytes)), promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) } else { context.fireUserInboundEventTriggered(event) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
