import DatagramIO
import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import NIOSSL
import SourceLimits
import STUNLite

#if canImport(Glibc)
import Glibc
#endif

/// A TURN relay over UDP, TCP and TLS around ``TURNServerStateMachine`` (RFC 8656 §5–12).
///
/// The server runs as ``Configuration/shards`` shards (a core each): every shard has its own state
/// machine and its own UDP, TCP and TLS listener on the same ports (`SO_REUSEPORT`), and the kernel
/// steers each client to one shard by its source address (``TURNShardSteering``), so a shard's state
/// machine needs no lock; per-user quotas and the server-wide limits are shared (``TURNSharedLedger``).
///
/// The UDP side of a shard is a data plane of its own (`TURNShard`): one thread, one `epoll` set
/// holding the shard's UDP listeners and every relay socket of its allocations, batched reads
/// (`recvmmsg`) into buffers reused round after round, and what a round produced sent with one
/// `sendmmsg` per run of datagrams for one socket — what thousands of relay sockets received in one
/// round leaves the listener in one call. ChannelData is relayed by reading its 4-byte header only
/// (RFC 8656 §12.6), and framed for the client in place. TCP and TLS connections stay on NIO event
/// loops (one per shard, from the group given to ``start(_:group:logger:)``) and hand their frames to
/// the shard's thread.
public final class TURNServer: Sendable {
    /// How to run a TURN server (RFC 8656 §5).
    public struct Configuration: Sendable {
        /// The IP address to listen on; relayed addresses are allocated on it too unless ``relayIPs`` says otherwise.
        public var listenIP: IPAddress
        /// More IP addresses to listen on, with the same ports: the other family's, for a dual-stack relay.
        public var additionalListenIPs: [IPAddress]
        /// UDP and TCP port (0 picks a free one; RFC 8656 §5 default 3478).
        public var port: UInt16
        /// Whether to listen on TCP at ``port`` as well.
        public var tcp: Bool
        /// TLS port (RFC 8656 §5 default 5349) and server context; `nil` for no TLS.
        public var tls: (port: UInt16, context: NIOSSLContext)?
        /// Where relay sockets are bound, per family, whatever family a client reaches the server over
        /// (RFC 8656 §7.1: IPv4 unless REQUESTED-ADDRESS-FAMILY says otherwise). Default: the first listen IP of each family.
        public var relayIPs: [TURNAddressFamily: IPAddress]
        /// The allocation logic's settings.
        public var server: TURNServerConfiguration
        /// Datagrams read per system call on the UDP listeners.
        public var vectorReadCount: Int
        /// Datagrams read per system call on relay sockets (into the shard's one receive batch, so a
        /// bigger count costs no memory per allocation).
        public var relayVectorReadCount: Int = defaultRelayVectorReadCount
        /// Default of ``relayVectorReadCount``: 8.
        public static let defaultRelayVectorReadCount = 8
        /// `SO_RCVBUF` asked for the UDP listener, bytes (the kernel caps it at `net.core.rmem_max`): the
        /// default queue holds only some hundred datagrams, which a burst of ChannelData overflows.
        public var udpReceiveBufferBytes: Int = STUNServer.defaultUDPReceiveBufferBytes
        /// Client TCP/TLS connections open at once, at most; more are closed on accept.
        public var maxStreamConnections: Int
        /// Client TCP/TLS connections one source (IPv4 address or IPv6 /64) may hold at once; more are
        /// closed on accept, so one host cannot take every slot.
        public var maxStreamConnectionsPerSource: Int
        /// A TCP/TLS connection that sends no complete message for this long is closed (longer than the
        /// longest refresh interval); a message dripped a byte at a time does not count.
        public var streamIdleTimeout: TimeAmount
        /// TCP keepalive on client TCP/TLS connections (nil: none): a client that vanished without closing (it changed
        /// networks, its old address is gone) answers no probe, so its connection is reset and its allocations
        /// deleted (RFC 8656 §3.1: an allocation over TCP lives as long as the connection) within
        /// ``TURNStreamKeepalive/deadAfter`` of silence, instead of lasting until its lifetime runs out unrefreshed.
        public var streamKeepalive: TURNStreamKeepalive? = .standard
        /// How often timers are swept (allocations, permissions, channels, and connections without an
        /// allocation: ``TURNServerConfiguration/streamAuthenticationTimeout``).
        public var sweepInterval: TimeAmount
        /// Default of ``maxStreamConnectionsPerSource``: 32.
        public static let defaultMaxStreamConnectionsPerSource = 32
        /// How long existing allocations keep relaying after a graceful shutdown begins (``run()``), while
        /// new ones are refused; the server stops sooner once none is left.
        public var drainGracePeriod: Duration = defaultDrainGracePeriod
        /// Default of ``drainGracePeriod``: 30 s.
        public static let defaultDrainGracePeriod: Duration = .seconds(30)
        /// Shards, each with its own thread for UDP and its own event loop of the group given to
        /// ``TURNServer/start(_:group:logger:)`` for TCP/TLS (at most one per loop): 1 serves everything
        /// from one core; `System.coreCount` uses every core.
        public var shards: Int = 1

        /// Relay IPs per family: each of `overrides`, else the first of `listenIPs` of that family (what
        /// coturn's `--relay-ip` does beside `--listening-ip`).
        public static func relayIPs(listening listenIPs: [IPAddress], overrides: [IPAddress] = []) -> [TURNAddressFamily: IPAddress] {
            var out: [TURNAddressFamily: IPAddress] = [:]
            for ip in overrides + listenIPs where out[TURNAddressFamily(of: ip)] == nil {
                out[TURNAddressFamily(of: ip)] = ip
            }
            return out
        }

        /// Every IP address listened on: ``listenIP`` first.
        public var listenIPs: [IPAddress] { [listenIP] + additionalListenIPs }

        /// Creates a configuration: UDP+TCP on 3478, no TLS, 32-datagram reads, 1024 streams (32 per
        /// source), 61 min idle, 1 s sweeps.
        public init(listenIP: IPAddress, additionalListenIPs: [IPAddress] = [], port: UInt16 = 3478, tcp: Bool = true,
                    tls: (port: UInt16, context: NIOSSLContext)? = nil,
                    relayIPs: [TURNAddressFamily: IPAddress]? = nil, server: TURNServerConfiguration,
                    vectorReadCount: Int = 32, maxStreamConnections: Int = 1024,
                    maxStreamConnectionsPerSource: Int = defaultMaxStreamConnectionsPerSource,
                    streamIdleTimeout: TimeAmount = .seconds(Int64(TURNTimers.maxAllocationLifetime) + 60),
                    sweepInterval: TimeAmount = .seconds(1)) {
            self.listenIP = listenIP
            self.additionalListenIPs = additionalListenIPs
            self.port = port
            self.tcp = tcp
            self.tls = tls
            self.relayIPs = relayIPs ?? Self.relayIPs(listening: [listenIP] + additionalListenIPs)
            self.server = server
            self.vectorReadCount = vectorReadCount
            self.maxStreamConnections = maxStreamConnections
            self.maxStreamConnectionsPerSource = maxStreamConnectionsPerSource
            self.streamIdleTimeout = streamIdleTimeout
            self.sweepInterval = sweepInterval
        }
    }

    /// The largest datagram read; bigger ones are truncated by the kernel and then dropped.
    public static let maxDatagramSize = 65_536 / 32
    /// `IPV6_V6ONLY`: an IPv6 listener that leaves IPv4 to its IPv4 sibling (RFC 3493 §5.3).
    static let ipv6Only = ChannelOptions.Types.SocketOption(level: .ipv6, name: .ipv6_v6only)
    /// Stops a shard's thread should the server be dropped without ``shutdown()``.
    private let stopper: TURNShardStopper
    /// Tries to find an even relay port for EVEN-PORT before answering 508 (RFC 8656 §7.2).
    public static let evenPortAttempts = 16

    /// The UDP listener's address (on ``Configuration/listenIP``).
    public var udpAddress: TransportAddress { udpAddresses[0] }
    /// The TCP listener's address (on ``Configuration/listenIP``), if any.
    public var tcpAddress: TransportAddress? { tcpAddresses.first }
    /// The TLS listener's address (on ``Configuration/listenIP``), if any.
    public var tlsAddress: TransportAddress? { tlsAddresses.first }
    /// Every UDP listener's address, one per listen IP, in ``Configuration/listenIPs`` order.
    public let udpAddresses: [TransportAddress]
    /// Every TCP listener's address, in the same order (empty without TCP).
    public let tcpAddresses: [TransportAddress]
    /// Every TLS listener's address, in the same order (empty without TLS).
    public let tlsAddresses: [TransportAddress]
    /// Shards actually running (``Configuration/shards``, at most one per event loop of the group).
    public var shardCount: Int { shards.count }
    private let shards: [TURNShard]
    private let ledger: TURNSharedLedger
    private let listeners: [Channel]
    private let streamIdleTimeout: TimeAmount
    private let streamKeepalive: TURNStreamKeepalive?
    let drainGracePeriod: Duration
    private let logger: Logger

    private init(udp: [TransportAddress], tcp: [TransportAddress], tls: [TransportAddress], shards: [TURNShard],
                 ledger: TURNSharedLedger, listeners: [Channel], streamIdleTimeout: TimeAmount, streamKeepalive: TURNStreamKeepalive?,
                 drainGracePeriod: Duration, logger: Logger) {
        self.drainGracePeriod = drainGracePeriod
        self.udpAddresses = udp
        self.tcpAddresses = tcp
        self.tlsAddresses = tls
        self.shards = shards
        self.stopper = TURNShardStopper(shards)
        self.ledger = ledger
        self.listeners = listeners
        self.streamIdleTimeout = streamIdleTimeout
        self.streamKeepalive = streamKeepalive
        self.logger = logger
    }

    /// Binds the listeners and starts relaying; a picked port (0) taken on TCP is picked again (`FreePortRetry` in STUNLite).
    public static func start(_ configuration: Configuration,
                             group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                             logger: Logger = Logger(label: "trav.turn-server")) async throws -> TURNServer {
        try await FreePortRetry.run(picked: configuration.port == 0 && (configuration.tcp || !configuration.additionalListenIPs.isEmpty)) {
            try await startOnce(configuration, group: group, logger: logger)
        }
    }

    private static func startOnce(_ configuration: Configuration, group: any EventLoopGroup, logger: Logger) async throws -> TURNServer {
        var loops: [any EventLoop] = []
        for loop in group.makeIterator() where loops.count < max(1, configuration.shards) && !loops.contains(where: { $0 === loop }) {
            loops.append(loop)
        }
        let shardCount = loops.count
        let ledger = TURNSharedLedger(maxStreamConnections: configuration.maxStreamConnections,
                                      maxStreamConnectionsPerSource: configuration.maxStreamConnectionsPerSource)
        var server = configuration.server
        // Shards check each other's nonces: one secret for all.
        if server.nonceSecret == nil { server.nonceSecret = (0..<32).map { _ in UInt8.random(in: 0...255) } }
        var shards: [TURNShard] = []
        var channels: [Channel] = []
        do {
            for (index, loop) in loops.enumerated() {
                shards.append(try TURNShard(index: index, configuration: configuration, server: server, ledger: ledger, streamLoop: loop,
                                            logger: shardCount > 1 ? Self.shardLogger(logger, index) : logger))
            }
            // With a listener of each family, the IPv6 one takes IPv6 alone, so `::` and `0.0.0.0` can share a port.
            let dualStack = configuration.listenIPs.count > 1
            let reusePort = shardCount > 1
            /// The port to bind every shard's listener to: when shards share it, it is first bound alone,
            /// without `SO_REUSEPORT` (the kernel lets a socket with it join any group of the same user on
            /// that port), failing with EADDRINUSE for ``FreePortRetry`` if anything holds it, then released.
            func sharedPort(ip: IPAddress, port: UInt16, tcp: Bool) async throws -> UInt16 {
                guard reusePort else { return port }
                let at = TransportAddress(ip: ip, port: port)
                if tcp {
                    // TCP's SO_REUSEADDR only passes connections in TIME_WAIT; UDP's would share the port, so not there.
                    var probe = ServerBootstrap(group: loops[0]).serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    if dualStack, !ip.isIPv4 { probe = probe.serverChannelOption(Self.ipv6Only, value: 1) }
                    let alone = try await probe.bind(to: at.socketAddress).get()
                    let picked = alone.localAddress?.port
                    try await alone.close()
                    guard let picked else { throw TURNError(.socket, detail: "no local address") }
                    return UInt16(picked)
                }
                let fd = try bindUDPSocket(at, options: UDPSocket.Options(ipv6Only: dualStack))
                defer { close(fd) }
                guard let local = UDPSocket.localAddress(fd) else { throw TURNError(.socket, detail: "no local address") }
                return local.port
            }
            func bindUDP(_ ip: IPAddress, port: UInt16) async throws -> TransportAddress {
                var port = try await sharedPort(ip: ip, port: port, tcp: false)
                var first: Int32?
                for shard in shards {
                    let options = UDPSocket.Options(reusePort: reusePort, reuseAddress: true, ipv6Only: dualStack,
                                                    receiveBufferBytes: configuration.udpReceiveBufferBytes)
                    let fd = try bindUDPSocket(TransportAddress(ip: ip, port: port), options: options)
                    guard let local = UDPSocket.localAddress(fd) else {
                        close(fd)
                        throw TURNError(.socket, detail: "no local address")
                    }
                    port = local.port
                    if first == nil { first = fd }
                    try await shard.submit { core in Result { try core.addListener(fd, at: local) } }.get()
                }
                if reusePort, let first { try TURNShardSteering.attach(toSocket: first, shards: shardCount) }
                return TransportAddress(ip: ip, port: port)
            }
            func bindStream(_ ip: IPAddress, port: UInt16, ssl: NIOSSLContext?) async throws -> TransportAddress {
                let transport: STUNTransport = ssl == nil ? .tcp : .tls
                var port = try await sharedPort(ip: ip, port: port, tcp: true)
                var group: [Channel] = []
                for shard in shards {
                    var bootstrap = ServerBootstrap(group: shard.streamLoop, childGroup: shard.streamLoop)
                    if dualStack, !ip.isIPv4 { bootstrap = bootstrap.serverChannelOption(Self.ipv6Only, value: 1) }
                    if reusePort { bootstrap = bootstrap.serverChannelOption(.socketOption(.reusePort), value: 1) }
                    let channel = try await bootstrap
                        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                        .serverChannelOption(.backlog, value: 256)
                        .childChannelInitializer { child in
                            child.eventLoop.makeCompletedFuture {
                                let source = child.remoteAddress.map(SourceAddressKey.init) ?? .unidentified
                                guard shard.admitStream(from: source) else { throw TURNError(.socket, detail: "too many connections") }
                                try shard.serveAdmittedStream(child, from: source, tls: ssl, transport: transport,
                                                              idleTimeout: configuration.streamIdleTimeout,
                                                              keepalive: configuration.streamKeepalive, ledger: ledger)
                            }
                        }
                        .bind(to: TransportAddress(ip: ip, port: port).socketAddress).get()
                    channels.append(channel)
                    group.append(channel)
                    guard let local = channel.localAddress.flatMap(TransportAddress.init) else {
                        throw TURNError(.socket, detail: "no local address")
                    }
                    port = local.port
                }
                if reusePort { try await TURNShardSteering.attach(to: group[0], shards: shardCount).get() }
                return TransportAddress(ip: ip, port: port)
            }
            // The first listen IP picks the ports (when asked to); the others share them.
            var udp: [TransportAddress] = []
            var tcp: [TransportAddress] = []
            var tls: [TransportAddress] = []
            for ip in configuration.listenIPs {
                let u = try await bindUDP(ip, port: udp.first?.port ?? configuration.port)
                udp.append(u)
                if configuration.tcp { tcp.append(try await bindStream(ip, port: u.port, ssl: nil)) }
                if let t = configuration.tls { tls.append(try await bindStream(ip, port: tls.first?.port ?? t.port, ssl: t.context)) }
            }
            logger.info("turn server listening", metadata: [
                "udp": "\(udp)", "tcp": "\(tcp)", "tls": "\(tls)", "shards": "\(shardCount)",
                "relay": "\(configuration.relayIPs.values.map(\.description).sorted())"])
            return TURNServer(udp: udp, tcp: tcp, tls: tls, shards: shards, ledger: ledger, listeners: channels,
                              streamIdleTimeout: configuration.streamIdleTimeout, streamKeepalive: configuration.streamKeepalive,
                              drainGracePeriod: configuration.drainGracePeriod, logger: logger)
        } catch {
            for c in channels { try? await c.close() }
            for shard in shards {
                _ = await shard.shutdown()
                await shard.stop()
            }
            throw error
        }
    }

    /// A UDP socket bound to `address`; EADDRINUSE surfaces as NIO's `IOError`, which ``FreePortRetry`` knows.
    private static func bindUDPSocket(_ address: TransportAddress, options: UDPSocket.Options) throws -> Int32 {
        do throws(DatagramIOError) {
            return try UDPSocket.open(bound: address, options: options)
        } catch {
            if error.errno == EADDRINUSE { throw IOError(errnoCode: EADDRINUSE, reason: error.description) }
            throw TURNError(.socket, detail: error.description)
        }
    }

    /// `logger` with the shard's index in its metadata.
    private static func shardLogger(_ logger: Logger, _ index: Int) -> Logger {
        var shard = logger
        shard[metadataKey: "shard"] = "\(index)"
        return shard
    }

    /// Runs `body` on every shard's loop and collects the results in shard order.
    private func eachShard<T: Sendable>(_ body: @escaping @Sendable (TURNServerCore) -> T) async -> [T] {
        var out: [T] = []
        for shard in shards { out.append(await shard.submit(body)) }
        return out
    }

    /// Allocations held right now, on every shard.
    public var allocationCount: Int {
        get async { await eachShard { $0.machine.allocationCount }.reduce(0, +) }
    }

    /// Allocations held right now by each shard, in shard order.
    public var allocationCountPerShard: [Int] {
        get async { await eachShard { $0.machine.allocationCount } }
    }

    /// Ports held right now for EVEN-PORT reservations (RFC 8656 §7.2), on every shard.
    public var reservationCount: Int {
        get async { await eachShard { $0.machine.reservationCount }.reduce(0, +) }
    }

    /// Whether new allocations are refused (``startDraining()``).
    public var isDraining: Bool {
        get async { await eachShard { $0.machine.isDraining }.allSatisfy { $0 } }
    }

    /// Refuses new allocations from now on (508, ``TURNRefusal/draining``); existing ones keep relaying.
    public func startDraining() async {
        _ = await eachShard { $0.machine.startDraining() }
        logger.info("turn server draining: new allocations refused")
    }

    /// Drains (``startDraining()``), waits until no allocation is left or `gracePeriod` has passed, then shuts down.
    public func drainAndShutdown(gracePeriod: Duration) async {
        await startDraining()
        let deadline = ContinuousClock.now + gracePeriod
        while ContinuousClock.now < deadline, !Task.isCancelled, await allocationCount > 0 {
            try? await Task.sleep(for: min(.milliseconds(200), deadline - ContinuousClock.now))
        }
        await shutdown()
    }

    /// Serves TURN on `channel`, an accepted connection that another listener hands over with its TLS
    /// already in the pipeline (e.g. a TLS port shared with other protocols, after ALPN `stun.turn`,
    /// RFC 7443 §2): the same framing and handling as this server's own TCP/TLS listeners (RFC 8656 §12.5).
    ///
    /// Counts against ``Configuration/maxStreamConnections`` and ``Configuration/maxStreamConnectionsPerSource``;
    /// the future fails (and the caller should close the channel) when the server or the source is
    /// full, or the server is shut down. The channel may live on any event loop.
    public func adoptStream(_ channel: any Channel, transport: STUNTransport = .tls) -> EventLoopFuture<Void> {
        // The shard the kernel would have steered this source to, so its per-source limits hold.
        let remote = channel.remoteAddress.flatMap(TransportAddress.init)
        let shard = shards[remote.map { TURNShardSteering.shard(of: $0.ip, shards: shards.count) } ?? 0]
        let timeout = streamIdleTimeout
        let keepalive = streamKeepalive
        let ledger = self.ledger
        let source = channel.remoteAddress.map(SourceAddressKey.init) ?? .unidentified
        guard shard.admitStream(from: source) else {
            return channel.eventLoop.makeFailedFuture(TURNError(.socket, detail: "too many connections"))
        }
        return channel.eventLoop.submit {
            try shard.serveAdmittedStream(channel, from: source, tls: nil, transport: transport, idleTimeout: timeout,
                                          keepalive: keepalive, ledger: ledger)
        }
    }

    /// Closes listeners, client connections and relay sockets.
    public func shutdown() async {
        var others: [any Channel] = []
        for shard in shards { others += await shard.shutdown() }
        for c in listeners + others { try? await c.close() }
        for shard in shards { await shard.stop() }
        logger.info("turn server stopped")
    }
}

extension TURNShard {
    /// Adds the stream pipeline to an admitted connection: TLS when `tls` is given (else none, or already
    /// in the pipeline), STUN and padded ChannelData framing, idle timeout, TURN handling (RFC 8656 §12.5);
    /// turns on TCP `keepalive` when given; releases `source`'s admission on close. Must run on the channel's event loop.
    func serveAdmittedStream(_ channel: any Channel, from source: SourceAddressKey, tls: NIOSSLContext?, transport: STUNTransport,
                             idleTimeout: TimeAmount, keepalive: TURNStreamKeepalive?, ledger: TURNSharedLedger) throws {
        channel.closeFuture.whenComplete { _ in ledger.releaseStream(from: source) }
        // A channel that is not a socket (a test's) has no keepalive to turn on.
        if let keepalive, let options = channel.syncOptions { try? keepalive.apply(to: options) }
        if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
        // The idle timer sits after the framer: only whole messages reset it.
        try channel.pipeline.syncOperations.addHandlers(
            ByteToMessageHandler(STUNFrameDecoder(allowsChannelData: true)),
            IdleStateHandler(readTimeout: idleTimeout),
            TURNStreamHandler(shard: self, transport: transport))
    }
}

/// One client TCP or TLS connection: frames in (STUN and padded ChannelData, RFC 8656 §12.5), replies out.
///
/// The frames of one read go to the shard together, at the read's end (or, at the latest, after the event loop's
/// turn): one hop to the shard's thread per read, not per frame (a client streaming ChannelData sends many frames
/// per segment).
final class TURNStreamHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let core: TURNShard
    private let transport: STUNTransport
    private var fiveTuple: TURNFiveTuple?
    /// Frames of the current read, not yet handed to the shard.
    private var frames: [ByteBuffer] = []

    init(shard: TURNShard, transport: STUNTransport) {
        self.core = shard
        self.transport = transport
    }

    func channelActive(context: ChannelHandlerContext) {
        if fiveTuple == nil, let client = context.channel.remoteAddress.flatMap(TransportAddress.init),
           let server = context.channel.localAddress.flatMap(TransportAddress.init) {
            let ft = TURNFiveTuple(client: client, server: server, transport: transport)
            fiveTuple = ft
            let channel = context.channel
            core.run { $0.streamOpened(ft, channel) }
        } else if fiveTuple == nil {
            context.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { channelActive(context: context) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        handOver()
        if let ft = fiveTuple { core.run { $0.streamClosed(ft) } }
        fiveTuple = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard fiveTuple != nil else { return }
        if frames.isEmpty {
            // Also handed over after this turn of the event loop: a frame replayed outside a read (by a handler that
            // sniffed the connection's first bytes, then removed itself) has no read-complete to follow it.
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.execute { handler.value.handOver() }
        }
        frames.append(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        handOver()
        context.fireChannelReadComplete()
    }

    /// Hands the frames read so far to the shard, in order.
    private func handOver() {
        guard let ft = fiveTuple, !frames.isEmpty else { return }
        let batch = frames
        frames.removeAll(keepingCapacity: true)
        core.run { $0.fromClient(batch, ft) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) } else { context.fireUserInboundEventTriggered(event) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}


/// Ends the shards' threads when the server goes away without ``TURNServer/shutdown()``: an
/// owner for them either way.
final class TURNShardStopper: Sendable {
    private let shards: [TURNShard]

    init(_ shards: [TURNShard]) { self.shards = shards }

    deinit {
        let shards = self.shards
        Task {
            for shard in shards {
                _ = await shard.shutdown()
                await shard.stop()
            }
        }
    }
}

/// TCP keepalive on a relay's client connections (``TURNServer/Configuration/streamKeepalive``): the first probe
/// after ``idle`` of silence, then one every ``interval``; after ``probes`` unanswered the kernel resets the connection.
public struct TURNStreamKeepalive: Sendable, Hashable {
    /// Silence before the first probe (`TCP_KEEPIDLE`).
    public var idle: Duration
    /// Between probes (`TCP_KEEPINTVL`).
    public var interval: Duration
    /// Unanswered probes that end the connection (`TCP_KEEPCNT`).
    public var probes: Int

    /// A keepalive; durations are applied in whole seconds, at least one.
    public init(idle: Duration, interval: Duration, probes: Int) {
        self.idle = idle
        self.interval = interval
        self.probes = probes
    }

    /// The default: first probe after 30 s of silence, then every 10 s, 3 probes: a vanished client's
    /// connection ends within 60 s.
    public static let standard = TURNStreamKeepalive(idle: .seconds(30), interval: .seconds(10), probes: 3)

    /// The first probe after `idle`, then 3 probes `idle` / 3 apart (at least 1 s): a vanished client's connection
    /// ends about 2 × `idle` after its last message (``standard`` is this for 30 s).
    public static func after(idle: Duration) -> TURNStreamKeepalive {
        TURNStreamKeepalive(idle: idle, interval: max(.seconds(1), idle / 3), probes: 3)
    }

    /// Silence after which a client that answers no probe has lost its connection: idle + interval × probes.
    public var deadAfter: Duration { idle + interval * probes }

    /// Sets `SO_KEEPALIVE` and the three TCP keepalive options on a socket channel.
    func apply(to options: any NIOSynchronousChannelOptions) throws {
        func seconds(_ d: Duration) -> Int { Int(max(1, min(Int64(Int32.max), d.components.seconds))) }
        try options.setOption(.socketOption(.so_keepalive), value: 1)
        try options.setOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: TCP_KEEPIDLE)), value: seconds(idle))
        try options.setOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: TCP_KEEPINTVL)), value: seconds(interval))
        try options.setOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: TCP_KEEPCNT)),
                              value: max(1, min(probes, 127)))
    }
}
