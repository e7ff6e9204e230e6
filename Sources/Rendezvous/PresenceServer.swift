#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Crypto
import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import STUNLite
import Synchronization
import Traversal

/// The UDP socket of presence (`Traversal/PresenceProtocol`), its streams and its table (``PresenceStateMachine``):
/// datagrams are answered on the socket's event loop, with no hop to the hub, so a keepalive costs one
/// look-up, one Poly1305 check and one send.
///
/// A camera whose network blocks UDP keeps the same datagrams on a presence stream instead: a TCP connection to
/// the signalling port whose first byte is a presence datagram's kind, never a TLS record's (`RendezvousServer`
/// tells them apart, ``adoptStream(_:)``). The stream costs the cloud a socket and a small handler, not a TLS
/// connection; it counts against the signalling's connection limits (per source and in all), and it is closed
/// when no authenticated keepalive came for the table's ``PresenceStateMachine/Configuration/timeout`` (the first
/// within ``streamFirstKeepaliveTimeout``), or at the first datagram that does not authenticate.
///
/// The socket has an event loop (a thread) of its own: a fleet's keepalives arrive at a steady rate (100 000 cameras
/// every 20 s: 5 000 a second), and the receive buffer holds about a second of them, so a loop that also ran TLS
/// handshakes through a registration storm fell behind and the kernel dropped keepalives by the hundred thousand; a
/// camera whose acks stop for ``CameraPresenceStateMachine/Configuration/livenessTimeout`` goes back to TLS, which
/// feeds the storm.
final class PresenceServer: Sendable {
    /// The UDP address cameras send keepalives to.
    let address: SocketAddress
    private let channel: any Channel
    private let table: PresenceTable
    private let loop: MultiThreadedEventLoopGroup
    private let streams = PresenceStreams()
    private let logger: Logger

    /// The presence thread's nice value after trying to raise it to ``threadNice`` (the process's when that was not
    /// allowed); nil when it could not be read.
    let threadNice: Int32?

    private init(
        address: SocketAddress, channel: any Channel, table: PresenceTable, loop: MultiThreadedEventLoopGroup, threadNice: Int32?,
        logger: Logger
    ) {
        self.logger = logger
        self.address = address
        self.channel = channel
        self.table = table
        self.loop = loop
        self.threadNice = threadNice
    }

    /// Nice value asked for the presence thread: above every other thread of the cloud, so a registration storm's TLS
    /// handshakes and signature checks, which can wait, do not make keepalives wait (a camera whose acks stop goes back
    /// to TLS and feeds the storm). Setting it needs `CAP_SYS_NICE` (root) or an `RLIMIT_NICE` that allows it;
    /// without, the thread keeps the process's priority and the cloud says so in its log.
    static let threadNice: Int32 = -10

    /// Sets the calling thread's nice value to `nice` (on Linux, `setpriority(PRIO_PROCESS, 0, …)` applies to the
    /// calling thread only); the value it has afterwards, or nil when it could not be read.
    static func setCurrentThreadNice(_ nice: Int32) -> (set: Bool, now: Int32?) {
        #if os(Linux)
        let set = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice) == 0
        errno = 0
        let now = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        return (set, errno == 0 ? now : nil)
        #else
        return (false, nil)
        #endif
    }

    /// Receive buffer asked of the kernel for the presence socket (capped by `net.core.rmem_max`): thousands of
    /// keepalives, so a fleet's probes and keepalives that arrive while the cloud's cores are busy with a reconnect
    /// storm wait instead of being dropped.
    static let receiveBufferBytes = 4 << 20
    /// Datagrams read per system call (`recvmmsg`): a fleet's keepalives arrive many at a time.
    static let vectorReadCount = 32
    /// Bytes read of a datagram: every presence datagram is shorter; a longer one is cut and refused as malformed.
    static let maxDatagramSize = 128

    /// Binds `host:port` (0 picks a free port) on an event loop of its own and starts answering keepalives; with
    /// `tickets`, sessions survive a restart of the cloud (``PresenceTickets``).
    static func start(
        host: String, port: Int, configuration: PresenceStateMachine.Configuration, tickets: PresenceTickets?,
        logger: Logger
    ) async throws -> PresenceServer {
        let table = PresenceTable(configuration: configuration, tickets: tickets)
        let loop = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (raised, threadNice) = (try? await loop.next().submit { setCurrentThreadNice(Self.threadNice) }.get()) ?? (false, nil)
        if raised {
            logger.info("presence thread priority raised", metadata: ["nice": "\(Self.threadNice)"])
        } else {
            logger.notice("presence thread keeps the process's priority (raising it needs CAP_SYS_NICE)",
                          metadata: ["nice": "\(threadNice.map(String.init) ?? "unknown")"])
        }
        let bootstrap = UDPServerSocket.listener(
            DatagramBootstrap(group: loop), receiveBufferBytes: receiveBufferBytes, vectorReadCount: vectorReadCount,
            maxDatagramSize: maxDatagramSize)
        let channel: any Channel
        do {
            channel = try await bootstrap
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(PresenceDatagramHandler(table: table, logger: logger))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            try? await loop.shutdownGracefully()
            throw error
        }
        guard let address = channel.localAddress else {
            try? await channel.close()
            try? await loop.shutdownGracefully()
            throw CloudError(code: .connectionFailed, detail: "the presence socket has no local address")
        }
        logger.info("presence listening", metadata: ["address": "\(address)"])
        return PresenceServer(address: address, channel: channel, table: table, loop: loop, threadNice: threadNice, logger: logger)
    }

    /// The keepalive interval announced to cameras.
    var keepaliveInterval: Duration { table.configuration.keepaliveInterval }

    /// A grant (and its session) for a camera that just proved its key; nil when the table is full.
    func open(_ deviceID: DeviceID) -> (grant: PresenceGrant, session: PresenceSessionID)? {
        guard let (session, key) = table.withLock({ machine in
            var generator = SystemRandomNumberGenerator()
            return machine.open(deviceID, now: .now, using: &generator)
        }) else { return nil }
        let seconds = Int(table.configuration.keepaliveInterval / .seconds(1))
        return (PresenceGrant(port: address.port ?? 0, session: session, key: key, keepaliveSeconds: seconds), session)
    }

    /// Sends `session` a wake; false when it has no route to wake (no keepalive yet, or its stream closed).
    func wake(_ session: PresenceSessionID) -> Bool {
        guard case .send(let bytes, let to)? = table.withLock({ $0.wake(session) }), send(bytes, on: to) else { return false }
        PresenceMetrics.wakes.increment()
        return true
    }

    /// Tells `session` the cloud shuts down and when to register again; false when it has no route.
    func goAway(_ session: PresenceSessionID, retryAfterMilliseconds: Int) -> Bool {
        let milliseconds = UInt32(clamping: retryAfterMilliseconds)
        guard case .send(let bytes, let to)? = table.withLock({ $0.goAway(session, retryAfterMilliseconds: milliseconds) }) else {
            return false
        }
        return send(bytes, on: to)
    }

    /// Sends `bytes` on `route`; false when it is a stream no longer open.
    private func send(_ bytes: [UInt8], on route: PresenceRoute) -> Bool {
        switch route {
        case .datagram(let address):
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: ByteBuffer(bytes: bytes)), promise: nil)
            return true
        case .stream(let id):
            guard let stream = streams.channel(id) else { return false }
            stream.writeAndFlush(ByteBuffer(bytes: bytes), promise: nil)
            return true
        }
    }

    /// A stream's first authenticated keepalive must come within this (its first bytes already did): 10 s.
    static let streamFirstKeepaliveTimeout: Duration = .seconds(10)
    /// Bytes a presence stream reads from its socket at once: a few datagrams.
    static let streamReceiveBytes = 256

    /// Takes `channel` as a presence stream from here on: its reads are datagrams for the table, its answers and
    /// wakes go back on it. The caller has removed every other handler's claim on it; runs on `channel`'s event loop.
    func adoptStream(_ channel: any Channel) throws {
        let id = streams.add(channel)
        try channel.syncOptions?.setOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: Self.streamReceiveBytes))
        try channel.pipeline.syncOperations.addHandler(
            PresenceStreamHandler(id: id, table: table, streams: streams, timeout: table.configuration.timeout,
                                  firstTimeout: Self.streamFirstKeepaliveTimeout, logger: logger))
    }

    /// Presence streams open now.
    var streamCount: Int { streams.count }

    /// Whether `session` is kept alive (over UDP or a stream) now.
    func isLive(_ session: PresenceSessionID) -> Bool { table.withLock { $0.isLive(session, now: .now) } }

    /// The TLS connection that opened `session` closed: it lives on only while keepalives arrive.
    func release(_ session: PresenceSessionID) { table.withLock { $0.release(session) } }

    /// Forgets `session`.
    func close(_ session: PresenceSessionID) { table.withLock { $0.close(session) } }

    /// Forgets the sessions that timed out; returns them.
    func expire() -> [(session: PresenceSessionID, deviceID: DeviceID)] {
        let expired = table.withLock { $0.expire(now: .now) }
        PresenceMetrics.sessions.record(table.withLock { $0.count })
        return expired
    }

    /// Sessions held.
    var count: Int { table.withLock { $0.count } }

    /// Sessions restored from their tickets, in the order their first keepalive came; ends at ``stop()``.
    var restorations: AsyncStream<PresenceRestoration> { table.restorations }

    /// Closes the socket and every stream, and ends its event loop.
    func stop() async {
        try? await channel.close()
        for stream in streams.all { try? await stream.close() }
        table.finish()
        try? await loop.shutdownGracefully()
    }
}

/// The presence table shared by the socket's handler and the hub.
final class PresenceTable: Sendable {
    let configuration: PresenceStateMachine.Configuration
    private let machine: Mutex<PresenceStateMachine>
    /// Sessions restored from their tickets, for the hub; one event per session added to the table, so
    /// never more than ``PresenceStateMachine/Configuration/maxSessions`` wait.
    let restorations: AsyncStream<PresenceRestoration>
    private let restorationSink: AsyncStream<PresenceRestoration>.Continuation

    init(configuration: PresenceStateMachine.Configuration, tickets: PresenceTickets?) {
        self.configuration = configuration
        self.machine = Mutex(PresenceStateMachine(configuration: configuration, tickets: tickets))
        (restorations, restorationSink) = AsyncStream.makeStream(of: PresenceRestoration.self)
    }

    /// Hands a restored session to the hub.
    func restored(_ restoration: PresenceRestoration) { restorationSink.yield(restoration) }

    /// Ends ``restorations``.
    func finish() { restorationSink.finish() }

    /// Counts what ``PresenceStateMachine/receive(_:from:over:now:)`` decided for a datagram from `source`, hands a
    /// restored session to the hub, and returns the answer to write back where the datagram came from (nil: none).
    /// The UDP socket and the streams both settle their datagrams here.
    func settle(_ action: PresenceStateMachine.Action, from source: SocketAddress) -> [UInt8]? {
        switch action {
        case .send(let bytes, _):
            PresenceMetrics.answered.increment()
            return bytes
        case .refuse(let error, let bytes, _):
            PresenceMetrics.dropped(error.code).increment()
            return bytes
        case .restored(let session, let deviceID, let bytes, _):
            PresenceMetrics.restored.increment()
            restored(PresenceRestoration(session: session, deviceID: deviceID, address: source))
            return bytes
        case .left:
            PresenceMetrics.left.increment()
            return nil
        case .drop(let error):
            PresenceMetrics.dropped(error.code).increment()
            return nil
        }
    }

    func withLock<T: Sendable>(_ body: (inout PresenceStateMachine) -> T) -> T {
        machine.withLock { body(&$0) }
    }
}

/// A presence session a keepalive restored from its ticket after a restart.
struct PresenceRestoration: Sendable {
    /// The session.
    let session: PresenceSessionID
    /// Its camera.
    let deviceID: DeviceID
    /// Where the keepalive came from (a stream's peer address for a stream).
    let address: SocketAddress
}

/// The metrics of presence (listed with the others at ``RendezvousMetrics``).
enum PresenceMetrics {
    static let answered = Counter(label: "cloud_presence_datagrams_total", dimensions: [("outcome", "answered")])
    static let wakes = Counter(label: "cloud_presence_wakes_total")
    static let restored = Counter(label: "cloud_presence_restored_total")
    static let left = Counter(label: "cloud_presence_datagrams_total", dimensions: [("outcome", "left")])
    static let sessions = Gauge(label: "cloud_presence_sessions")
    static let streams = Gauge(label: "cloud_presence_streams")
    static func dropped(_ code: PresenceError.Code) -> Counter {
        if code == .rateLimited { RendezvousMetrics.rateLimitHit("presence") }
        return Counter(label: "cloud_presence_datagrams_total", dimensions: [("outcome", code.name)])
    }
}

/// Feeds each datagram to the table and queues its answer; the answers of one batch of reads leave together
/// at the batch's end (`channelReadComplete`: one `sendmmsg` for up to ``PresenceServer/vectorReadCount`` acks
/// instead of a system call each).
final class PresenceDatagramHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let table: PresenceTable
    private let logger: Logger

    init(table: PresenceTable, logger: Logger) {
        self.table = table
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let action = table.withLock { $0.receive(envelope.data.readableBytesView, from: envelope.remoteAddress, now: .now) }
        // What a datagram is answered with goes back to its source (its route is that address).
        if let answer = table.settle(action, from: envelope.remoteAddress) {
            context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: answer))), promise: nil)
        } else if case .drop(let error) = action {
            logger.trace("presence datagram dropped", metadata: ["from": "\(envelope.remoteAddress)", "error": "\(error)"])
        }
    }

    /// Sends the answers the batch queued.
    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    /// A send error on UDP (an ICMP unreachable reported later) ends nothing.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.trace("presence socket error", metadata: ["error": "\(error)"])
    }
}

/// The open presence streams, by identifier: where wakes and goAways for stream sessions are written.
final class PresenceStreams: Sendable {
    private let channels = Mutex<[PresenceStreamID: any Channel]>([:])
    private let next = Atomic<UInt64>(0)

    /// Registers `channel` under a new identifier.
    func add(_ channel: any Channel) -> PresenceStreamID {
        let id = PresenceStreamID(next.wrappingAdd(1, ordering: .relaxed).newValue)
        let count = channels.withLock { c -> Int in
            c[id] = channel
            return c.count
        }
        PresenceMetrics.streams.record(count)
        return id
    }

    /// Forgets stream `id` (it closed).
    func remove(_ id: PresenceStreamID) {
        let count = channels.withLock { c -> Int in
            c[id] = nil
            return c.count
        }
        PresenceMetrics.streams.record(count)
    }

    /// The channel of stream `id`, while open.
    func channel(_ id: PresenceStreamID) -> (any Channel)? { channels.withLock { $0[id] } }

    /// Streams open.
    var count: Int { channels.withLock { $0.count } }

    /// Every open stream's channel.
    var all: [any Channel] { channels.withLock { Array($0.values) } }
}

/// One presence stream: cuts its bytes into datagrams for the table (``PresenceStreamFramer``) and writes the answers
/// back, flushed once per read batch; closes the stream at a datagram that is not a camera's authentic keepalive or
/// leave (on an ordered, reliable stream nothing else comes from a camera), or when keepalives stop.
final class PresenceStreamHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let id: PresenceStreamID
    private let table: PresenceTable
    private let streams: PresenceStreams
    private let timeout: Duration
    private let firstTimeout: Duration
    private let logger: Logger
    private var framer = PresenceStreamFramer()
    private var source: SocketAddress?
    /// When the last authentic keepalive came, on the event loop's clock.
    private var lastAuthentic: NIODeadline?
    private var opened = NIODeadline.now()
    private var timer: Scheduled<Void>?

    init(id: PresenceStreamID, table: PresenceTable, streams: PresenceStreams, timeout: Duration, firstTimeout: Duration, logger: Logger) {
        self.id = id
        self.table = table
        self.streams = streams
        self.timeout = timeout
        self.firstTimeout = firstTimeout
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        source = context.channel.remoteAddress
        opened = context.eventLoop.now
        guard context.channel.isActive else {
            // Closed before it was adopted: no channelInactive will come to forget it.
            streams.remove(id)
            return
        }
        arm(context: context, in: firstTimeout)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        guard let source else { return context.close(promise: nil) }
        do {
            try framer.feed(bytes.readableBytesView) { datagram in
                try handle(datagram, from: source, context: context)
            }
        } catch {
            PresenceMetrics.dropped((error as? PresenceError)?.code ?? .malformed).increment()
            logger.debug("presence stream closed", metadata: ["stream": "\(id)", "from": "\(source)", "error": "\(error)"])
            context.flush()
            context.close(promise: nil)
        }
    }

    /// Hands one datagram to the table and queues its answer; throws to close the stream.
    private func handle(_ datagram: [UInt8], from source: SocketAddress, context: ChannelHandlerContext) throws {
        let action = table.withLock { $0.receive(datagram, from: source, over: id, now: .now) }
        switch action {
        case .send, .restored:
            lastAuthentic = context.eventLoop.now
        case .drop(let error) where error.code != .rateLimited:
            throw error
        case .refuse, .left, .drop:
            // A refused camera registers over TLS again; it closes this stream, or the timeout does.
            break
        }
        if let answer = table.settle(action, from: source) {
            context.write(wrapOutboundOut(ByteBuffer(bytes: answer)), promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        streams.remove(id)
        table.withLock { $0.streamClosed(id) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// Checks the stream's deadline in `delay`: closed if no authentic keepalive came in time, else checked again
    /// when the next one would be due.
    private func arm(context: ChannelHandlerContext, in delay: Duration) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: TimeAmount(max(delay, .milliseconds(1)))) {
            let (handler, context) = loopBound.value
            let deadline = handler.lastAuthentic.map { $0 + TimeAmount(handler.timeout) }
                ?? handler.opened + TimeAmount(handler.firstTimeout)
            let now = context.eventLoop.now
            if now >= deadline {
                handler.logger.debug("presence stream silent: closed", metadata: ["stream": "\(handler.id)"])
                context.close(promise: nil)
            } else {
                handler.arm(context: context, in: .nanoseconds((deadline - now).nanoseconds))
            }
        }
    }
}
