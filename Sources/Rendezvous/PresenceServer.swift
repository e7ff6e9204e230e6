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

/// The UDP socket of presence (`Traversal/PresenceProtocol`) and its table (``PresenceStateMachine``):
/// datagrams are answered on the socket's event loop, with no hop to the hub, so a keepalive costs one
/// look-up, one Poly1305 check and one send.
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

    /// The presence thread's nice value after trying to raise it to ``threadNice`` (the process's when that was not
    /// allowed); nil when it could not be read.
    let threadNice: Int32?

    private init(
        address: SocketAddress, channel: any Channel, table: PresenceTable, loop: MultiThreadedEventLoopGroup, threadNice: Int32?
    ) {
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
        return PresenceServer(address: address, channel: channel, table: table, loop: loop, threadNice: threadNice)
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

    /// Sends `session` a wake; false when it has no UDP address to wake.
    func wake(_ session: PresenceSessionID) -> Bool {
        guard case .send(let bytes, let to)? = table.withLock({ $0.wake(session) }) else { return false }
        PresenceMetrics.wakes.increment()
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: to, data: ByteBuffer(bytes: bytes)), promise: nil)
        return true
    }

    /// Tells `session` the cloud shuts down and when to register again; false when it has no UDP address.
    func goAway(_ session: PresenceSessionID, retryAfterMilliseconds: Int) -> Bool {
        let milliseconds = UInt32(clamping: retryAfterMilliseconds)
        guard case .send(let bytes, let to)? = table.withLock({ $0.goAway(session, retryAfterMilliseconds: milliseconds) }) else {
            return false
        }
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: to, data: ByteBuffer(bytes: bytes)), promise: nil)
        return true
    }

    /// Whether `session` is kept alive over UDP now.
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

    /// Closes the socket and ends its event loop.
    func stop() async {
        try? await channel.close()
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
    /// Where the keepalive came from.
    let address: SocketAddress
}

/// The metrics of presence (listed with the others at ``RendezvousMetrics``).
enum PresenceMetrics {
    static let answered = Counter(label: "cloud_presence_datagrams_total", dimensions: [("outcome", "answered")])
    static let wakes = Counter(label: "cloud_presence_wakes_total")
    static let restored = Counter(label: "cloud_presence_restored_total")
    static let left = Counter(label: "cloud_presence_datagrams_total", dimensions: [("outcome", "left")])
    static let sessions = Gauge(label: "cloud_presence_sessions")
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
        switch action {
        case .send(let bytes, let to):
            PresenceMetrics.answered.increment()
            context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: to, data: ByteBuffer(bytes: bytes))), promise: nil)
        case .refuse(let error, let bytes, let to):
            PresenceMetrics.dropped(error.code).increment()
            context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: to, data: ByteBuffer(bytes: bytes))), promise: nil)
        case .restored(let session, let deviceID, let bytes, let to):
            PresenceMetrics.restored.increment()
            table.restored(PresenceRestoration(session: session, deviceID: deviceID, address: to))
            context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: to, data: ByteBuffer(bytes: bytes))), promise: nil)
        case .left:
            PresenceMetrics.left.increment()
        case .drop(let error):
            PresenceMetrics.dropped(error.code).increment()
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
