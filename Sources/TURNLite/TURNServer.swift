import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import NIOSSL
import SourceLimits
import STUNLite

/// A TURN relay over UDP, TCP and TLS: a thin NIO layer around ``TURNServerStateMachine`` (RFC 8656 §5–12).
///
/// The server runs as ``Configuration/shards`` shards, one per event loop (a core each): every shard has
/// its own state machine and its own UDP, TCP and TLS listener on the same ports (`SO_REUSEPORT`), and the
/// kernel steers each client to one shard by its source address (``TURNShardSteering``). Every socket of a
/// shard — its listeners, client connections and relay sockets — lives on the shard's event loop, so its
/// state machine needs no lock; per-user quotas and the server-wide limits are shared
/// (``TURNSharedLedger``). The UDP listeners read in batches (`recvmmsg`)
/// and flush after each batch; relay sockets read one datagram at a time (a media peer's pace) and
/// flush once per event-loop turn, after every ready socket was read: what thousands of relay
/// sockets received in one turn leaves the listener in one `sendmmsg`. ChannelData is relayed by reading its 4-byte header only
/// (RFC 8656 §12.6); within a turn, consecutive payloads of one length for one peer are
/// gathered into one buffer that leaves the relay socket as a single UDP GSO send (Linux), which the
/// kernel splits back into one datagram per payload — a relay's per-packet kernel cost, paid once
/// per run instead.
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
        /// Datagrams read per system call on relay sockets. A media peer sends a packet every few
        /// milliseconds, so one read finds one datagram; a bigger batch only makes every allocation's
        /// receive buffer bigger (``maxDatagramSize`` × this).
        public var relayVectorReadCount: Int = defaultRelayVectorReadCount
        /// Default of ``relayVectorReadCount``: 1.
        public static let defaultRelayVectorReadCount = 1
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
        /// Shards, each on its own event loop of the group given to ``TURNServer/start(_:group:logger:)``
        /// (at most one per loop): 1 serves everything from one core; `System.coreCount` uses every core.
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
    public var shardCount: Int { cores.count }
    private let cores: [TURNCoreReference]
    private let ledger: TURNSharedLedger
    private let listeners: [Channel]
    private let streamIdleTimeout: TimeAmount
    let drainGracePeriod: Duration
    private let logger: Logger

    private init(udp: [TransportAddress], tcp: [TransportAddress], tls: [TransportAddress], cores: [TURNCoreReference],
                 ledger: TURNSharedLedger, listeners: [Channel], streamIdleTimeout: TimeAmount, drainGracePeriod: Duration,
                 logger: Logger) {
        self.drainGracePeriod = drainGracePeriod
        self.udpAddresses = udp
        self.tcpAddresses = tcp
        self.tlsAddresses = tls
        self.cores = cores
        self.ledger = ledger
        self.listeners = listeners
        self.streamIdleTimeout = streamIdleTimeout
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
        let shards = loops.count
        let ledger = TURNSharedLedger(maxStreamConnections: configuration.maxStreamConnections,
                                      maxStreamConnectionsPerSource: configuration.maxStreamConnectionsPerSource)
        var server = configuration.server
        // Shards check each other's nonces: one secret for all.
        if server.nonceSecret == nil { server.nonceSecret = (0..<32).map { _ in UInt8.random(in: 0...255) } }
        var cores: [TURNCoreReference] = []
        for (index, loop) in loops.enumerated() {
            let shardServer = server
            let shardLogger = shards > 1 ? Self.shardLogger(logger, index) : logger
            let bound = try await loop.submit {
                NIOLoopBound(TURNServerCore(configuration: configuration, server: shardServer, ledger: ledger, loop: loop,
                                            logger: shardLogger), eventLoop: loop)
            }.get()
            cores.append(TURNCoreReference(bound: bound, loop: loop))
        }
        var channels: [Channel] = []
        do {
            // With a listener of each family, the IPv6 one takes IPv6 alone, so `::` and `0.0.0.0` can share a port.
            let dualStack = configuration.listenIPs.count > 1
            let reusePort = shards > 1
            /// Binds one listener per shard on `ip`, the first picking the port when asked to; steers them.
            ///
            /// Sharing a port takes `SO_REUSEPORT` on every socket, and the kernel lets a socket with it join
            /// any group of the same user on that port: so the port is first bound alone, without the option
            /// (failing with EADDRINUSE, for ``FreePortRetry``, if anything holds it), then released and shared.
            func bindShards(ip: IPAddress, port: UInt16, tcp: Bool,
                            _ bindOne: (TURNCoreReference, UInt16) async throws -> Channel) async throws -> TransportAddress {
                var group: [Channel] = []
                var local: TransportAddress?
                if reusePort {
                    let at = TransportAddress(ip: ip, port: port).socketAddress
                    let alone: Channel
                    if tcp {
                        // TCP's SO_REUSEADDR only passes connections in TIME_WAIT; UDP's would share the port, so not there.
                        var probe = ServerBootstrap(group: loops[0]).serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                        if dualStack, !ip.isIPv4 { probe = probe.serverChannelOption(Self.ipv6Only, value: 1) }
                        alone = try await probe.bind(to: at).get()
                    } else {
                        var probe = DatagramBootstrap(group: loops[0])
                        if dualStack, !ip.isIPv4 { probe = probe.channelOption(Self.ipv6Only, value: 1) }
                        alone = try await probe.bind(to: at).get()
                    }
                    let picked = alone.localAddress?.port
                    try await alone.close()
                    guard let picked else { throw TURNError(.socket, detail: "no local address") }
                    local = TransportAddress(ip: ip, port: UInt16(picked))
                }
                for core in cores {
                    let channel = try await bindOne(core, local?.port ?? port)
                    channels.append(channel)
                    group.append(channel)
                    guard let address = channel.localAddress.flatMap(TransportAddress.init) else {
                        throw TURNError(.socket, detail: "no local address")
                    }
                    local = local ?? address
                }
                if reusePort { try await TURNShardSteering.attach(to: group[0], shards: shards).get() }
                return local!
            }
            func bindUDP(_ ip: IPAddress, port: UInt16) async throws -> TransportAddress {
                try await bindShards(ip: ip, port: port, tcp: false) { core, port in
                    var bootstrap = UDPServerSocket.listener(
                        DatagramBootstrap(group: core.loop), receiveBufferBytes: configuration.udpReceiveBufferBytes,
                        vectorReadCount: configuration.vectorReadCount, maxDatagramSize: maxDatagramSize, reusePort: reusePort)
                    if dualStack, !ip.isIPv4 { bootstrap = bootstrap.channelOption(Self.ipv6Only, value: 1) }
                    let udp = try await bootstrap
                        .channelInitializer { ch in
                            ch.eventLoop.makeCompletedFuture {
                                try ch.pipeline.syncOperations.addHandler(TURNListenerUDPHandler(core: core.bound.value))
                            }
                        }
                        .bind(to: TransportAddress(ip: ip, port: port).socketAddress).get()
                    if let local = udp.localAddress.flatMap(TransportAddress.init) {
                        try await core.loop.submit { core.bound.value.udpListeners[local] = udp }.get()
                    }
                    return udp
                }
            }
            func bindStream(_ ip: IPAddress, port: UInt16, ssl: NIOSSLContext?) async throws -> TransportAddress {
                let transport: STUNTransport = ssl == nil ? .tcp : .tls
                return try await bindShards(ip: ip, port: port, tcp: true) { core, port in
                    var bootstrap = ServerBootstrap(group: core.loop, childGroup: core.loop)
                    if dualStack, !ip.isIPv4 { bootstrap = bootstrap.serverChannelOption(Self.ipv6Only, value: 1) }
                    if reusePort { bootstrap = bootstrap.serverChannelOption(.socketOption(.reusePort), value: 1) }
                    return try await bootstrap
                        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                        .serverChannelOption(.backlog, value: 256)
                        .childChannelInitializer { child in
                            child.eventLoop.makeCompletedFuture {
                                let source = child.remoteAddress.map(SourceAddressKey.init) ?? .unidentified
                                guard core.bound.value.admitStream(from: source) else { throw TURNError(.socket, detail: "too many connections") }
                                try core.serveAdmittedStream(child, from: source, tls: ssl, transport: transport,
                                                             idleTimeout: configuration.streamIdleTimeout)
                            }
                        }
                        .bind(to: TransportAddress(ip: ip, port: port).socketAddress).get()
                }
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
            for core in cores { try await core.loop.submit { core.bound.value.startSweeping() }.get() }
            logger.info("turn server listening", metadata: [
                "udp": "\(udp)", "tcp": "\(tcp)", "tls": "\(tls)", "shards": "\(shards)",
                "relay": "\(configuration.relayIPs.values.map(\.description).sorted())"])
            return TURNServer(udp: udp, tcp: tcp, tls: tls, cores: cores, ledger: ledger, listeners: channels,
                              streamIdleTimeout: configuration.streamIdleTimeout,
                              drainGracePeriod: configuration.drainGracePeriod, logger: logger)
        } catch {
            for c in channels { try? await c.close() }
            throw error
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
        for core in cores {
            if let value = try? await core.loop.submit({ body(core.bound.value) }).get() { out.append(value) }
        }
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
        let core = cores[remote.map { TURNShardSteering.shard(of: $0.ip, shards: cores.count) } ?? 0]
        let timeout = streamIdleTimeout
        let source = channel.remoteAddress.map(SourceAddressKey.init) ?? .unidentified
        return core.loop.submit { core.bound.value.admitStream(from: source) }
            .hop(to: channel.eventLoop)
            .flatMapThrowing { admitted in
                guard admitted else { throw TURNError(.socket, detail: "too many connections") }
                try core.serveAdmittedStream(channel, from: source, tls: nil, transport: transport, idleTimeout: timeout)
            }
    }

    /// Closes listeners, client connections and relay sockets.
    public func shutdown() async {
        let others = await eachShard { $0.shutdown() }.flatMap { $0 }
        for c in listeners + others { try? await c.close() }
        logger.info("turn server stopped")
    }
}

/// The server's mutable heart: the state machine and the channels its actions name; event loop only.
final class TURNServerCore {
    var machine: TURNServerStateMachine
    /// The UDP listeners by local address: a reply leaves from the one the client talks to.
    var udpListeners: [TransportAddress: Channel] = [:]
    private var streams: [TURNFiveTuple: Channel] = [:]
    private var relays: [TURNAllocationID: Channel] = [:]
    /// Sockets held for EVEN-PORT reservations, by their address; their handler learns its allocation on adoption.
    private var reserved: [TransportAddress: Channel] = [:]
    private let metrics = TURNServerMetrics()
    private var dirty: [ObjectIdentifier: Channel] = [:]
    /// ChannelData payloads of the current read batch waiting to leave a relay socket, per allocation.
    private var runs: [TURNAllocationID: TURNPeerRun] = [:]
    /// Payloads one relay send may carry: the kernel's segment limit, and none when GSO is unavailable.
    /// Drops to 1 for good if the kernel ever refuses a GSO send (some devices cannot checksum-offload).
    private var maxSegmentsPerSend = System.supportsUDPSegmentationOffload ? TURNPeerRun.maxSegments : 1
    private let ledger: TURNSharedLedger
    /// Whether a ``flushAfterThisTurn()`` is pending.
    private var flushScheduled = false
    private var sweeper: RepeatedTask?
    private var closed = false
    private let configuration: TURNServer.Configuration
    private let loop: any EventLoop
    let logger: Logger

    init(configuration: TURNServer.Configuration, server: TURNServerConfiguration, ledger: TURNSharedLedger,
         loop: any EventLoop, logger: Logger) {
        var server = server
        server.relayFamilies = server.relayFamilies.intersection(configuration.relayIPs.keys)
        server.relayHostAddresses.formUnion(Self.hostAddresses(configuration))
        self.machine = TURNServerStateMachine(configuration: server, ledger: ledger)
        self.ledger = ledger
        self.configuration = configuration
        self.loop = loop
        self.logger = logger
    }

    static func now() -> Double { Date().timeIntervalSince1970 }

    /// The addresses peers must not reach on this host: the listen and relay addresses, and every
    /// interface address (a service bound to a wildcard answers on all of them).
    static func hostAddresses(_ configuration: TURNServer.Configuration) -> Set<IPAddress> {
        let bound = Set(configuration.relayIPs.values).union([configuration.listenIP])
        let interfaces = ((try? System.enumerateDevices()) ?? []).compactMap { $0.address.flatMap(TransportAddress.init)?.ip }
        return bound.union(interfaces)
    }

    func startSweeping() {
        let bound = NIOLoopBound(self, eventLoop: loop)
        sweeper = loop.scheduleRepeatedTask(initialDelay: configuration.sweepInterval, delay: configuration.sweepInterval) { _ in
            let core = bound.value
            core.perform(core.machine.expire(now: Self.now()))
            core.flush()
        }
    }

    func shutdown() -> [Channel] {
        closed = true
        sweeper?.cancel()
        let all = Array(streams.values) + Array(relays.values) + Array(reserved.values)
        streams = [:]
        relays = [:]
        reserved = [:]
        metrics.record(machine.takeStatistics(), allocations: 0)
        return all
    }

    /// Takes a stream slot for `source`: false when the server is shut down or the server or source is full.
    func admitStream(from source: SourceAddressKey) -> Bool {
        guard !closed else { return false }
        return ledger.admitStream(from: source)
    }

    func streamOpened(_ ft: TURNFiveTuple, _ channel: Channel) {
        streams[ft] = channel
        machine.clientConnected(ft, now: Self.now())
    }

    func streamReleased(_ source: SourceAddressKey) { ledger.releaseStream(from: source) }

    func streamClosed(_ ft: TURNFiveTuple) {
        streams[ft] = nil
        perform(machine.clientDisconnected(ft))
        flush()
    }

    // MARK: Client input

    /// A datagram or stream frame from a client; ChannelData takes the fast path.
    func fromClient(_ buffer: ByteBuffer, _ ft: TURNFiveTuple) {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        if ChannelData.looksLikeChannelData(first) {
            guard let head = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return }
            let length = Int(head & 0xFFFF)
            guard buffer.readableBytes - ChannelData.headerSize >= length,
                  case let (id, peer)? = machine.routeChannelData(channel: UInt16(head >> 16), length: length, from: ft, now: Self.now()),
                  let relay = relays[id],
                  let payload = buffer.getSlice(at: buffer.readerIndex + ChannelData.headerSize, length: length) else { return }
            relayToPeer(id, relay, peer, payload)
            return
        }
        perform(machine.receiveFromClient(Array(buffer.readableBytesView), from: ft, now: Self.now()))
    }

    /// A datagram from a peer to a relay socket.
    func fromPeer(_ id: TURNAllocationID, _ envelope: AddressedEnvelope<ByteBuffer>) {
        guard let peer = TransportAddress(envelope.remoteAddress) else { return }
        let payload = envelope.data
        switch machine.routeFromPeer(id, peer: peer, length: payload.readableBytes, now: Self.now()) {
        case .channelData(let c, let ft):
            let pad = ft.transport == .udp ? 0 : ChannelData.streamPadding(length: payload.readableBytes)
            var out = ByteBufferAllocator().buffer(capacity: ChannelData.headerSize + payload.readableBytes + pad)
            out.writeInteger(c)
            out.writeInteger(UInt16(payload.readableBytes))
            out.writeImmutableBuffer(payload)
            out.writeRepeatingByte(0, count: pad)
            sendToClient(ft, out)
        case .dataIndication(let ft):
            sendToClient(ft, ByteBuffer(bytes: TURNMessages.dataIndication(peer: peer, payload: Array(payload.readableBytesView))))
        case nil:
            return
        }
    }

    // MARK: Actions

    func perform(_ actions: [TURNServerAction]) {
        for action in actions {
            switch action {
            case .sendToClient(let ft, let bytes):
                sendToClient(ft, ByteBuffer(bytes: bytes))
            case .sendToPeer(let id, let peer, let bytes):
                // Whatever ChannelData is queued for this relay leaves first: order is kept.
                if let run = runs.removeValue(forKey: id) { emit(run) }
                if let relay = relays[id] {
                    write(relay, AddressedEnvelope(remoteAddress: peer.socketAddress, data: ByteBuffer(bytes: bytes)))
                }
            case .openRelay(let id, let family, let evenPort):
                openRelay(id, family: family, evenPort: evenPort, attempt: 1)
            case .openRelayReservingNext(let id, let family):
                openRelay(id, family: family, evenPort: true, reserveNext: true, attempt: 1)
            case .adoptReservedRelay(let id, let address):
                guard let held = reserved.removeValue(forKey: address), held.isActive,
                      let handler = try? held.pipeline.syncOperations.handler(type: TURNRelayHandler.self) else {
                    perform(machine.relayFailed(id))
                    continue
                }
                handler.id = id
                relays[id] = held
                perform(machine.relayOpened(id, at: address, now: Self.now()))
            case .releaseReservation(let address):
                reserved.removeValue(forKey: address)?.close(promise: nil)
            case .closeRelay(let id):
                // What the client relayed before it released the allocation still leaves (its last
                // datagrams, often a goodbye, share a read with the Refresh that deletes it).
                if let run = runs.removeValue(forKey: id) { emit(run) }
                if let relay = relays.removeValue(forKey: id) { flushThenClose(relay) }
            case .closeClient(let ft):
                if let stream = streams[ft] { flushThenClose(stream) }
            }
        }
    }

    private func sendToClient(_ ft: TURNFiveTuple, _ buffer: ByteBuffer) {
        if ft.transport == .udp {
            guard let listener = udpListeners[ft.server] else { return }
            write(listener, AddressedEnvelope(remoteAddress: ft.client.socketAddress, data: buffer))
        } else if let stream = streams[ft] {
            write(stream, buffer)
        }
    }

    /// Sends what is queued on `channel`, then closes it (a close alone would fail unflushed writes).
    private func flushThenClose(_ channel: Channel) {
        if dirty.removeValue(forKey: ObjectIdentifier(channel)) != nil { channel.flush() }
        channel.close(promise: nil)
    }

    private func write<T: Sendable>(_ channel: Channel, _ value: T) {
        channel.write(value, promise: nil)
        dirty[ObjectIdentifier(channel)] = channel
    }

    /// Queues a ChannelData payload for `peer`: appended to the allocation's run when it continues it (same
    /// peer, same length), else the run leaves and a new one starts (RFC 8656 §12.6: each payload is
    /// still its own UDP datagram at the peer).
    private func relayToPeer(_ id: TURNAllocationID, _ relay: Channel, _ peer: TransportAddress, _ payload: ByteBuffer) {
        let length = payload.readableBytes
        if runs[id]?.append(payload, peer: peer, maxSegments: maxSegmentsPerSend) == true { return }
        if let finished = runs.removeValue(forKey: id) { emit(finished) }
        guard maxSegmentsPerSend > 1, length > 0 else {
            write(relay, AddressedEnvelope(remoteAddress: peer.socketAddress, data: payload))
            return
        }
        var buffer = relay.allocator.buffer(capacity: min(TURNPeerRun.maxBytes, length * maxSegmentsPerSend))
        buffer.writeImmutableBuffer(payload)
        runs[id] = TURNPeerRun(channel: relay, peer: peer, segmentSize: length, count: 1, buffer: buffer)
    }

    /// Writes a run: one datagram, or one UDP GSO send the kernel splits into `count` datagrams. Should
    /// the kernel refuse the GSO send, the run's payloads go again one datagram each and GSO stays off.
    private func emit(_ run: TURNPeerRun) {
        guard run.count > 1 else {
            write(run.channel, AddressedEnvelope(remoteAddress: run.peer.socketAddress, data: run.buffer))
            return
        }
        let metadata = AddressedEnvelope<ByteBuffer>.Metadata(ecnState: .transportNotCapable, packetInfo: nil,
                                                              segmentSize: run.segmentSize)
        let promise = run.channel.eventLoop.makePromise(of: Void.self)
        let bound = NIOLoopBound(self, eventLoop: loop)
        promise.futureResult.whenFailure { error in bound.value.segmentedSendFailed(run, error) }
        run.channel.write(AddressedEnvelope(remoteAddress: run.peer.socketAddress, data: run.buffer, metadata: metadata), promise: promise)
        dirty[ObjectIdentifier(run.channel)] = run.channel
    }

    private func segmentedSendFailed(_ run: TURNPeerRun, _ error: any Error) {
        guard !closed, run.channel.isActive else { return }
        if maxSegmentsPerSend > 1 {
            logger.warning("UDP GSO send refused; relaying one datagram per send from now on", metadata: ["error": "\(error)"])
            maxSegmentsPerSend = 1
        }
        var buffer = run.buffer
        while let payload = buffer.readSlice(length: min(run.segmentSize, buffer.readableBytes)), payload.readableBytes > 0 {
            write(run.channel, AddressedEnvelope(remoteAddress: run.peer.socketAddress, data: payload))
        }
        flush()
    }

    /// Flushes once the event loop has handled every socket that was ready in this turn (tasks run after
    /// the turn's I/O): thousands of relay sockets each reading one datagram share one flush, so the
    /// replies and ChannelData for their clients leave the listener in one `sendmmsg`.
    func flushAfterThisTurn() {
        guard !flushScheduled else { return }
        flushScheduled = true
        let bound = NIOLoopBound(self, eventLoop: loop)
        loop.execute {
            let core = bound.value
            core.flushScheduled = false
            core.flush()
        }
    }

    /// Flushes every channel written since the last flush: one `sendmmsg` per socket per batch; hands
    /// what the state machine counted to the metrics.
    func flush() {
        metrics.record(machine.takeStatistics(), allocations: ledger.allocationCount)
        if !runs.isEmpty {
            for run in runs.values { emit(run) }
            runs.removeAll(keepingCapacity: true)
        }
        guard !dirty.isEmpty else { return }
        for c in dirty.values { c.flush() }
        dirty.removeAll(keepingCapacity: true)
    }

    /// Opens the relay socket again for another even port, or fails the Allocate after ``TURNServer/evenPortAttempts``.
    private func retryEvenPort(_ id: TURNAllocationID, family: TURNAddressFamily, reserveNext: Bool, after attempt: Int) {
        if attempt < TURNServer.evenPortAttempts {
            openRelay(id, family: family, evenPort: true, reserveNext: reserveNext, attempt: attempt + 1)
        } else {
            perform(machine.relayFailed(id))
            flush()
        }
    }

    private func openRelay(_ id: TURNAllocationID, family: TURNAddressFamily, evenPort: Bool, reserveNext: Bool = false, attempt: Int) {
        guard let ip = configuration.relayIPs[family] else {
            perform(machine.relayFailed(id))
            flush()
            return
        }
        let bound = NIOLoopBound(self, eventLoop: loop)
        UDPServerSocket.batchedReads(DatagramBootstrap(group: loop), vectorReadCount: configuration.relayVectorReadCount,
                                     maxDatagramSize: TURNServer.maxDatagramSize)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(TURNRelayHandler(core: bound.value, id: id))
                }
            }
            .bind(to: TransportAddress(ip: ip, port: 0).socketAddress)
            .whenComplete { result in
                let core = bound.value
                switch result {
                case .success(let channel):
                    guard let local = channel.localAddress.flatMap(TransportAddress.init), !core.closed else {
                        channel.close(promise: nil)
                        core.perform(core.machine.relayFailed(id))
                        core.flush()
                        return
                    }
                    if evenPort, local.port % 2 != 0 {
                        channel.close(promise: nil)
                        core.retryEvenPort(id, family: family, reserveNext: reserveNext, after: attempt)
                        return
                    }
                    guard reserveNext else {
                        core.relays[id] = channel
                        core.perform(core.machine.relayOpened(id, at: local, now: Self.now()))
                        core.flush()
                        return
                    }
                    // RFC 8656 §7.2: the next-higher port is held for a later Allocate with the token.
                    let next = TransportAddress(ip: local.ip, port: local.port + 1)
                    core.bindRelaySocket(at: next).whenComplete { result in
                        let core = bound.value
                        switch result {
                        case .success(let held) where !core.closed:
                            core.reserved[next] = held
                            core.relays[id] = channel
                            core.perform(core.machine.relayOpened(id, at: local, reserving: next, now: Self.now()))
                            core.flush()
                        case .success(let held):
                            held.close(promise: nil)
                            channel.close(promise: nil)
                            core.perform(core.machine.relayFailed(id))
                            core.flush()
                        case .failure:
                            // The next port is taken: another even port, if attempts are left.
                            channel.close(promise: nil)
                            core.retryEvenPort(id, family: family, reserveNext: true, after: attempt)
                        }
                    }
                case .failure(let error):
                    core.logger.warning("relay socket failed", metadata: ["error": "\(error)"])
                    core.perform(core.machine.relayFailed(id))
                    core.flush()
                }
            }
    }
}

extension TURNServerCore {
    /// Binds a relay socket at `address` whose handler has no allocation yet (a reserved port, RFC 8656 §7.2).
    func bindRelaySocket(at address: TransportAddress) -> EventLoopFuture<Channel> {
        let bound = NIOLoopBound(self, eventLoop: loop)
        return UDPServerSocket.batchedReads(DatagramBootstrap(group: loop), vectorReadCount: configuration.relayVectorReadCount,
                                            maxDatagramSize: TURNServer.maxDatagramSize)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(TURNRelayHandler(core: bound.value, id: nil))
                }
            }
            .bind(to: address.socketAddress)
    }
}

/// Equal-length payloads for one peer, back to back, to leave a relay socket in one UDP GSO send.
struct TURNPeerRun: Sendable {
    /// Payloads one run carries at most (the kernel's `UDP_MAX_SEGMENTS` on older kernels).
    static let maxSegments = 64
    /// Bytes one run carries at most: a UDP datagram's payload limit.
    static let maxBytes = 65_507

    let channel: Channel
    let peer: TransportAddress
    let segmentSize: Int
    var count: Int
    var buffer: ByteBuffer

    /// Appends `payload` when it continues the run (same peer, same length, room left); false otherwise.
    mutating func append(_ payload: ByteBuffer, peer: TransportAddress, maxSegments: Int) -> Bool {
        guard peer == self.peer, payload.readableBytes == segmentSize, count < maxSegments,
              buffer.readableBytes + segmentSize <= Self.maxBytes else { return false }
        buffer.writeImmutableBuffer(payload)
        count += 1
        return true
    }
}

/// The UDP listener: client datagrams in, replies and Data out.
final class TURNListenerUDPHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    private let core: TURNServerCore
    private var local: TransportAddress?

    init(core: TURNServerCore) { self.core = core }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        if local == nil { local = context.channel.localAddress.flatMap(TransportAddress.init) }
        guard let server = local, let client = TransportAddress(envelope.remoteAddress) else { return }
        core.fromClient(envelope.data, TURNFiveTuple(client: client, server: server, transport: .udp))
    }

    func channelReadComplete(context: ChannelHandlerContext) { core.flush() }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        core.logger.trace("udp listener error", metadata: ["error": "\(error)"])
    }
}

/// The server core and the event loop it lives on, usable from any loop: client connections handed
/// over by another listener (``TURNServer/adoptStream(_:transport:)``) may live on another one.
struct TURNCoreReference: Sendable {
    /// The core, bound to ``loop``.
    let bound: NIOLoopBound<TURNServerCore>
    /// The core's event loop.
    let loop: any EventLoop

    /// Runs `body` with the core: at once on the core's loop, else after hopping there (order is kept).
    func run(_ body: @escaping @Sendable (TURNServerCore) -> Void) {
        let bound = self.bound
        if loop.inEventLoop { body(bound.value) } else { loop.execute { body(bound.value) } }
    }

    /// Adds the stream pipeline to an admitted connection: TLS when `tls` is given (else none, or already
    /// in the pipeline), STUN and padded ChannelData framing, idle timeout, TURN handling (RFC 8656 §12.5);
    /// releases `source`'s admission on close. Must run on the channel's event loop.
    func serveAdmittedStream(_ channel: any Channel, from source: SourceAddressKey, tls: NIOSSLContext?, transport: STUNTransport,
                             idleTimeout: TimeAmount) throws {
        let core = self
        channel.closeFuture.whenComplete { _ in core.run { $0.streamReleased(source) } }
        if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
        // The idle timer sits after the framer: only whole messages reset it.
        try channel.pipeline.syncOperations.addHandlers(
            ByteToMessageHandler(STUNFrameDecoder(allowsChannelData: true)),
            IdleStateHandler(readTimeout: idleTimeout),
            TURNStreamHandler(core: self, transport: transport))
    }
}

/// One client TCP or TLS connection: frames in (STUN and padded ChannelData, RFC 8656 §12.5), replies out.
final class TURNStreamHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let core: TURNCoreReference
    private let transport: STUNTransport
    private var fiveTuple: TURNFiveTuple?

    init(core: TURNCoreReference, transport: STUNTransport) {
        self.core = core
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
        if let ft = fiveTuple { core.run { $0.streamClosed(ft) } }
        fiveTuple = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let ft = fiveTuple else { return }
        let frame = unwrapInboundIn(data)
        core.run { $0.fromClient(frame, ft) }
    }

    func channelReadComplete(context: ChannelHandlerContext) { core.run { $0.flush() } }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) } else { context.fireUserInboundEventTriggered(event) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// One relay socket: peer datagrams in (RFC 8656 §11.3, §12.7).
final class TURNRelayHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    private let core: TURNServerCore
    /// The allocation; `nil` while the socket is held for a reservation (its datagrams are dropped).
    var id: TURNAllocationID?

    init(core: TURNServerCore, id: TURNAllocationID?) {
        self.core = core
        self.id = id
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let id else { return }
        core.fromPeer(id, unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) { core.flushAfterThisTurn() }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP port unreachable from a peer: UDP carries on.
    }
}
