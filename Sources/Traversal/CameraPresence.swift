import Crypto
import Foundation
import NIOCore
import NIOPosix

/// A camera's side of presence (the flow: ``PresenceProtocol``), sans-I/O: time is passed in as `now`; it returns
/// the datagrams to send, on which path, and what happened, and says when it next needs to run.
///
/// It first probes over UDP: ``Configuration/probes`` keepalives ``Configuration/probeInterval`` apart while the
/// camera still holds TLS. An ack confirms that UDP works (the camera may then drop TLS). No ack to those means UDP
/// is blocked or the cloud too busy to answer (a reconnect storm): the machine reports ``Action/unavailable`` and,
/// with ``Configuration/usesStream``, asks for a presence stream (``Action/openStream``: a TCP connection to the
/// cloud's signalling port carrying the same datagrams). An ack on the stream confirms it as well, and keepalives go
/// there. UDP probes go on meanwhile, one at a time, from one keepalive interval apart doubling to
/// ``Configuration/maxReprobeInterval``: a camera that registered in a storm, or whose network lets UDP through
/// later, moves to UDP (``Action/closeStream``), which costs the cloud no socket. A stream that closes is opened
/// again after a jittered backoff (``ReconnectBackoff``, from ``Configuration/streamRetryDelay`` doubling to
/// ``Configuration/maxReprobeInterval``, back to the start at each ack on it).
///
/// ```
///  probing(UDP) ── ack on UDP ──────────────────────────────► confirmed on UDP
///     └─ probes unanswered ─► unavailable + openStream
///          stream open ─► keepalive on it ── ack ─► confirmed on the stream ── ack on UDP ─► confirmed on UDP + closeStream
///          stream closed ─► reopened after backoff (liveness still counts from the last ack)
///  confirmed ── no ack for livenessTimeout, or unknownSession for the latest keepalive ─► lost
///  any ── authentic wake / goAway ─► ended
/// ```
public struct CameraPresenceStateMachine: Sendable {
    /// Timing.
    public struct Configuration: Sendable, Hashable {
        /// Between keepalives once confirmed (the cloud's ``PresenceGrant/keepaliveSeconds``).
        public var keepaliveInterval: Duration
        /// Keepalives sent to find out whether UDP reaches the cloud at all.
        public var probes: Int
        /// Between probes.
        public var probeInterval: Duration
        /// No ack for this long after the last one: presence lost (two keepalive intervals and 5 s, under
        /// the cloud's three intervals and 5 s, so the camera notices first).
        public var livenessTimeout: Duration
        /// Longest wait between two probes after the first ``probes`` went unanswered (the wait starts at
        /// ``keepaliveInterval`` and doubles up to this).
        public var maxReprobeInterval: Duration
        /// Whether unanswered probes lead to a presence stream (TCP) instead of keeping TLS.
        public var usesStream: Bool
        /// The first ceiling of the jittered wait before a closed stream is opened again (doubling to ``maxReprobeInterval``).
        public var streamRetryDelay: Duration

        /// Default of ``maxReprobeInterval``: 5 minutes (a camera behind a UDP-blocking network sends one
        /// 41-byte datagram every 5 minutes).
        public static let defaultMaxReprobeInterval: Duration = .seconds(300)
        /// Default of ``streamRetryDelay``: 1 s.
        public static let defaultStreamRetryDelay: Duration = .seconds(1)

        /// Keepalives every `keepaliveInterval`, 3 probes 1 s apart, then probes from `keepaliveInterval` to
        /// `maxReprobeInterval` apart; a stream when UDP is unavailable.
        public init(
            keepaliveInterval: Duration, probes: Int = 3, probeInterval: Duration = .seconds(1), livenessTimeout: Duration? = nil,
            maxReprobeInterval: Duration = defaultMaxReprobeInterval, usesStream: Bool = true,
            streamRetryDelay: Duration = defaultStreamRetryDelay
        ) {
            self.keepaliveInterval = keepaliveInterval
            self.probes = max(1, probes)
            self.probeInterval = probeInterval
            self.livenessTimeout = livenessTimeout ?? keepaliveInterval * 2 + .seconds(5)
            self.maxReprobeInterval = max(maxReprobeInterval, keepaliveInterval)
            self.usesStream = usesStream
            self.streamRetryDelay = min(streamRetryDelay, self.maxReprobeInterval)
        }
    }

    /// Where the presence is.
    public enum State: Sendable, Hashable {
        /// Probes sent, no ack yet (past ``Configuration/probes``: ``Action/unavailable`` was reported, probing goes on slowly).
        case probing(sent: Int)
        /// Acks arrive; the last one at `lastAck`.
        case confirmed(lastAck: ContinuousClock.Instant)
        /// Over: woken, lost, or sent away.
        case ended
    }

    /// The presence stream's phase.
    public enum StreamPhase: Sendable, Hashable {
        /// None wanted: UDP works, or has not been found blocked yet.
        case none
        /// ``Action/openStream`` was asked; waiting for ``streamOpened(now:)`` or ``streamClosed(now:using:)``.
        case opening
        /// Open; its next keepalive is due at `nextSend`.
        case open(nextSend: ContinuousClock.Instant)
        /// Closed or failed to open: opened again at `until`.
        case waiting(until: ContinuousClock.Instant)
    }

    /// What the caller does.
    public enum Action: Sendable, Hashable {
        /// Send these bytes to the cloud on `path`.
        case send([UInt8], on: PresencePath)
        /// The first ack: the cloud hears the camera without TLS; TLS may be dropped.
        case confirmed
        /// The cloud asks the camera to connect over TLS now (a viewer is waiting).
        case wake
        /// Acks stopped, or the cloud holds no such session: presence lost, connect over TLS again.
        case lost
        /// The cloud shuts down: connect over TLS again after `retryAfter` (at the next node, if several).
        case goAway(retryAfter: Duration)
        /// The first ``Configuration/probes`` probes went unanswered: UDP does not reach the cloud (reported once;
        /// probing goes on, and a later ack is ``confirmed``).
        case unavailable
        /// Open a presence stream to the cloud and report ``streamOpened(now:)`` or ``streamClosed(now:using:)``.
        case openStream
        /// Close the presence stream: UDP works (nothing more is sent on it).
        case closeStream
    }

    /// The timing.
    public let configuration: Configuration
    /// The current state.
    public private(set) var state: State = .probing(sent: 0)
    /// The presence stream's phase.
    public private(set) var stream: StreamPhase = .none
    /// The path keepalives go on once confirmed (and where a `leave` goes).
    public private(set) var path: PresencePath = .datagram
    private let session: PresenceSessionID
    private let key: SymmetricKey
    private var sent: UInt64 = 0
    private var received: UInt64 = 0
    /// When the next UDP datagram (probe or keepalive) is due.
    private var nextSend: ContinuousClock.Instant
    /// UDP probes sent past ``Configuration/probes`` (each wait doubles).
    private var reprobes = 0
    private var streamBackoff: ReconnectBackoff

    /// A presence for the granted `session` and `key`; the first probe is due at `now`.
    public init(session: PresenceSessionID, key: SymmetricKey, configuration: Configuration, now: ContinuousClock.Instant) {
        self.session = session
        self.key = key
        self.configuration = configuration
        self.nextSend = now
        self.streamBackoff = ReconnectBackoff(initialDelay: configuration.streamRetryDelay, maxDelay: configuration.maxReprobeInterval)
    }

    /// When ``tick(now:)`` should run next; nil once ended (or while a stream is opening and nothing else is due).
    public var nextDeadline: ContinuousClock.Instant? {
        var deadlines: [ContinuousClock.Instant] = []
        switch state {
        case .ended: return nil
        case .probing: deadlines.append(nextSend)
        case .confirmed(let lastAck):
            deadlines.append(nextSend)
            deadlines.append(lastAck + configuration.livenessTimeout)
        }
        switch stream {
        case .open(let next): deadlines.append(next)
        case .waiting(let until): deadlines.append(until)
        case .none, .opening: break
        }
        return deadlines.min()
    }

    /// Sends what is due and notices silence.
    public mutating func tick(now: ContinuousClock.Instant) -> [Action] {
        var actions: [Action] = []
        switch state {
        case .ended:
            return []
        case .probing(let probes):
            if now >= nextSend {
                state = .probing(sent: probes + 1)
                if probes < configuration.probes {
                    nextSend = now + configuration.probeInterval
                    actions.append(keepalive(on: .datagram))
                } else {
                    if probes == configuration.probes {
                        actions.append(.unavailable)
                        if configuration.usesStream, stream == .none {
                            stream = .opening
                            actions.append(.openStream)
                        }
                    }
                    actions.append(reprobe(now: now))
                }
            }
        case .confirmed(let lastAck):
            if now - lastAck >= configuration.livenessTimeout {
                state = .ended
                return [.lost]
            }
            if now >= nextSend {
                if path == .datagram {
                    // Due again at the next interval, or in time to notice the liveness timeout.
                    nextSend = min(now + configuration.keepaliveInterval, lastAck + configuration.livenessTimeout)
                    actions.append(keepalive(on: .datagram))
                } else {
                    actions.append(reprobe(now: now))
                }
            }
        }
        switch stream {
        case .open(let next) where now >= next:
            var due = now + configuration.keepaliveInterval
            if case .confirmed(let lastAck) = state { due = min(due, lastAck + configuration.livenessTimeout) }
            stream = .open(nextSend: due)
            actions.append(keepalive(on: .stream))
        case .waiting(let until) where now >= until:
            stream = .opening
            actions.append(.openStream)
        default:
            break
        }
        return actions
    }

    /// The presence stream asked for is open: its first keepalive goes now.
    public mutating func streamOpened(now: ContinuousClock.Instant) -> [Action] {
        guard state != .ended, stream == .opening else { return state == .ended || stream == .none ? [.closeStream] : [] }
        stream = .open(nextSend: now)
        return tick(now: now)
    }

    /// The presence stream closed or could not be opened: it is opened again after a wait drawn from `generator`
    /// (until then, a presence confirmed on it counts toward its liveness timeout).
    public mutating func streamClosed(now: ContinuousClock.Instant, using generator: inout some RandomNumberGenerator) {
        guard state != .ended, stream != .none else { return }
        stream = .waiting(until: now + streamBackoff.nextDelay(using: &generator))
    }

    /// ``streamClosed(now:using:)`` with the system's generator.
    public mutating func streamClosed(now: ContinuousClock.Instant) {
        var generator = SystemRandomNumberGenerator()
        streamClosed(now: now, using: &generator)
    }

    /// Handles a datagram from the cloud that came on `path`; returns what follows (nothing for one dropped).
    public mutating func receive(_ bytes: some Collection<UInt8>, on path: PresencePath = .datagram, now: ContinuousClock.Instant) -> [Action] {
        if let header = try? PresenceDatagram.peek(bytes), header.kind == .unknownSession {
            // Unauthenticated: believed only for this session and the latest keepalive's counter.
            guard state != .ended, header.session == session, header.counter == sent, sent > 0 else { return [] }
            state = .ended
            return [.lost]
        }
        guard state != .ended, let datagram = try? PresenceDatagram.open(bytes, with: key), datagram.session == session,
            datagram.kind != .keepalive, datagram.counter > received
        else { return [] }
        received = datagram.counter
        switch datagram.kind {
        case .wake:
            state = .ended
            return [.wake]
        case .goAway:
            state = .ended
            return [.goAway(retryAfter: .milliseconds(Int64(datagram.retryAfterMilliseconds)))]
        default:
            break
        }
        let first: Bool = if case .probing = state { true } else { false }
        state = .confirmed(lastAck: now)
        if path == .stream { streamBackoff.reset() }
        var actions: [Action] = first ? [.confirmed] : []
        if path == .datagram, first || self.path == .stream {
            // UDP works: keepalives go there, and a stream is no longer needed.
            self.path = .datagram
            nextSend = now + configuration.keepaliveInterval
            reprobes = 0
            if stream != .none {
                stream = .none
                actions.append(.closeStream)
            }
        } else if path == .stream, first {
            self.path = .stream
            stream = .open(nextSend: now + configuration.keepaliveInterval)
        }
        return actions
    }

    /// The camera stops: the authenticated `leave` datagram to send on ``path`` (the cloud ends the session at once,
    /// not after its timeout), or nil when the presence already ended; it ends now.
    public mutating func leave() -> [UInt8]? {
        guard state != .ended else { return nil }
        state = .ended
        sent += 1
        return PresenceDatagram(kind: .leave, session: session, counter: sent).sealed(with: key)
    }

    /// One UDP probe after the first ``Configuration/probes``: the wait before the next doubles from the keepalive
    /// interval to ``Configuration/maxReprobeInterval``.
    private mutating func reprobe(now: ContinuousClock.Instant) -> Action {
        let doublings = min(reprobes, 16)
        reprobes += 1
        nextSend = now + min(configuration.keepaliveInterval * (1 << doublings), configuration.maxReprobeInterval)
        return keepalive(on: .datagram)
    }

    private mutating func keepalive(on path: PresencePath) -> Action {
        sent += 1
        return .send(PresenceDatagram(kind: .keepalive, session: session, counter: sent).sealed(with: key), on: path)
    }
}

/// How a camera's presence datagrams travel to the cloud.
public enum PresencePath: Sendable, Hashable {
    /// UDP datagrams to the cloud's presence port.
    case datagram
    /// A presence stream: TCP to the cloud's signalling port, for networks that block UDP.
    case stream
}

/// Runs a camera's presence until it ends (``CameraPresenceStateMachine``): UDP from a socket of its own, and a
/// presence stream (TCP to the cloud's signalling port) when UDP does not reach the cloud.
///
/// The machine lives in a driver on one event loop with both sockets: a keepalive is an event-loop timer and one
/// write, an ack one read, with no task or actor hop (a fleet generator holds tens of thousands of these, so their
/// cost is per-keepalive CPU). The caller's task waits once, for the outcome.
enum CameraPresenceLink {
    /// How a presence ended.
    enum Outcome: Sendable, Hashable {
        /// Woken: a viewer waits; connect over TLS now.
        case wake
        /// Acks stopped.
        case lost
        /// The cloud shuts down: connect over TLS again after the delay.
        case goAway(retryAfter: Duration)
    }

    /// Bounds a presence stream's TCP connect.
    static let streamConnectTimeout: TimeAmount = .seconds(10)

    /// Sends keepalives for `grant` to `host` at the grant's port from a fresh socket, and on a presence stream to
    /// `host:streamPort` when UDP does not get through (nil: never); `onConfirmed` runs at the first ack.
    ///
    /// - Throws: ``CloudError`` when the grant or the host is unusable or the socket cannot be opened; `CancellationError`.
    static func run(
        grant: PresenceGrant, host: String, streamPort: Int?, probes: Int = 3,
        onConfirmed: @escaping @Sendable (PresencePath) async -> Void
    ) async throws -> Outcome {
        let (session, key) = try grant.decoded()
        let remote: SocketAddress
        let streamRemote: SocketAddress?
        do {
            remote = try SocketAddress.makeAddressResolvingHost(host, port: grant.port)
            streamRemote = try streamPort.map { try SocketAddress.makeAddressResolvingHost(host, port: $0) }
        } catch {
            throw CloudError(code: .connectionFailed, detail: "presence address \(host):\(grant.port): \(error)")
        }
        let machine = CameraPresenceStateMachine(
            session: session, key: key,
            configuration: .init(keepaliveInterval: .seconds(grant.keepaliveSeconds), probes: probes, usesStream: streamRemote != nil),
            now: .now)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let outcome = loop.makePromise(of: Outcome.self)
        let driver = try await loop.submit {
            NIOLoopBound(CameraPresenceDriver(machine: machine, remote: remote, streamRemote: streamRemote, loop: loop,
                                              outcome: outcome, onConfirmed: onConfirmed), eventLoop: loop)
        }.get()
        do {
            let channel = try await DatagramBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(CameraPresenceDatagramHandler(driver: driver.value))
                    }
                }
                .bind(host: remote.protocol == .inet6 ? "::" : "0.0.0.0", port: 0).get()
            loop.execute { driver.value.started(channel) }
        } catch {
            // A second completion of the promise (at the driver's end) is ignored.
            loop.execute { outcome.fail(error) }
            throw error
        }
        return try await withTaskCancellationHandler {
            defer { loop.execute { driver.value.closeAll() } }
            return try await outcome.futureResult.get()
        } onCancel: {
            // The camera stops or registers anew: the driver sends `leave` on the path in use, then closes its sockets
            // and fails the outcome with `CancellationError`.
            loop.execute { driver.value.leave() }
        }
    }
}

/// A ``CameraPresenceStateMachine`` on its event loop with the sockets it uses: reads feed it, a timer ticks it at its
/// deadline, its actions are carried out, and its end completes `outcome`.
private final class CameraPresenceDriver {
    private var machine: CameraPresenceStateMachine
    /// The cloud's presence address: datagrams from anywhere else are not read.
    let remote: SocketAddress
    private let streamRemote: SocketAddress?
    private let loop: any EventLoop
    private let outcome: EventLoopPromise<CameraPresenceLink.Outcome>
    private let onConfirmed: @Sendable (PresencePath) async -> Void
    private var datagrams: (any Channel)?
    private var stream: (any Channel)?
    private var timer: Scheduled<Void>?
    private var timerDeadline: ContinuousClock.Instant?
    private var closed = false

    init(
        machine: CameraPresenceStateMachine, remote: SocketAddress, streamRemote: SocketAddress?, loop: any EventLoop,
        outcome: EventLoopPromise<CameraPresenceLink.Outcome>, onConfirmed: @escaping @Sendable (PresencePath) async -> Void
    ) {
        self.machine = machine
        self.remote = remote
        self.streamRemote = streamRemote
        self.loop = loop
        self.outcome = outcome
        self.onConfirmed = onConfirmed
    }

    /// The UDP socket is bound: the first probe goes now.
    func started(_ channel: any Channel) {
        guard !closed else {
            channel.close(promise: nil)
            return
        }
        datagrams = channel
        tick()
    }

    /// A datagram from the cloud, on `path`.
    func received(_ bytes: some Collection<UInt8>, on path: PresencePath) {
        perform(machine.receive(bytes, on: path, now: .now))
    }

    /// The presence stream `channel` ended (closed by the cloud, the network, or garbage on it).
    func streamEnded(_ channel: any Channel) {
        guard let stream, stream === channel else { return }
        self.stream = nil
        machine.streamClosed(now: .now)
        schedule()
    }

    /// Sends the machine's `leave` on the path in use, then closes everything.
    func leave() {
        if let bytes = machine.leave() { send(bytes, on: machine.path) }
        closeAll()
    }

    /// Closes both sockets and ends the outcome (with `CancellationError` if nothing else ended it first).
    func closeAll() {
        guard !closed else { return }
        closed = true
        timer?.cancel()
        timer = nil
        datagrams?.close(promise: nil)
        stream?.close(promise: nil)
        stream = nil
        outcome.fail(CancellationError())
    }

    private func tick() {
        timerDeadline = nil
        perform(machine.tick(now: .now))
    }

    private func perform(_ actions: [CameraPresenceStateMachine.Action]) {
        guard !closed else { return }
        for action in actions {
            switch action {
            case .send(let bytes, let path):
                send(bytes, on: path)
            case .confirmed:
                let (onConfirmed, path) = (onConfirmed, machine.path)
                Task { await onConfirmed(path) }
            case .unavailable:
                // UDP does not reach the cloud (yet): a stream is asked for when there is one to ask.
                break
            case .openStream:
                openStream()
            case .closeStream:
                let old = stream
                stream = nil
                old?.close(promise: nil)
            case .wake: outcome.succeed(.wake)
            case .goAway(let delay): outcome.succeed(.goAway(retryAfter: delay))
            case .lost: outcome.succeed(.lost)
            }
        }
        schedule()
    }

    private func send(_ bytes: [UInt8], on path: PresencePath) {
        switch path {
        case .datagram:
            datagrams?.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: bytes)), promise: nil)
        case .stream:
            stream?.writeAndFlush(ByteBuffer(bytes: bytes), promise: nil)
        }
    }

    private func openStream() {
        guard let streamRemote else {
            machine.streamClosed(now: .now)
            return
        }
        let bound = NIOLoopBound(self, eventLoop: loop)
        ClientBootstrap(group: loop)
            .connectTimeout(CameraPresenceLink.streamConnectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(CameraPresenceStreamHandler(driver: bound.value))
                }
            }
            .connect(to: streamRemote)
            .hop(to: loop)
            .assumeIsolated()
            .whenComplete { result in
                let driver = bound.value
                switch result {
                case .success(let channel):
                    guard !driver.closed, driver.stream == nil else {
                        channel.close(promise: nil)
                        return
                    }
                    driver.stream = channel
                    driver.perform(driver.machine.streamOpened(now: .now))
                    // Closed before it was kept: report it now (its handler's report found another stream, or none).
                    if !channel.isActive { driver.streamEnded(channel) }
                case .failure:
                    guard !driver.closed else { return }
                    driver.machine.streamClosed(now: .now)
                    driver.schedule()
                }
            }
    }

    /// Arms the timer for the machine's next deadline (one timer at a time; an unchanged deadline keeps it).
    private func schedule() {
        guard !closed, let deadline = machine.nextDeadline else {
            timer?.cancel()
            timer = nil
            timerDeadline = nil
            return
        }
        guard deadline != timerDeadline else { return }
        timer?.cancel()
        timerDeadline = deadline
        let bound = NIOLoopBound(self, eventLoop: loop)
        timer = loop.scheduleTask(in: TimeAmount(max(.zero, deadline - .now))) { bound.value.tick() }
    }
}

/// The presence UDP socket's reads, for the driver (only from the cloud's presence address).
private final class CameraPresenceDatagramHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    private let driver: CameraPresenceDriver

    init(driver: CameraPresenceDriver) { self.driver = driver }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard envelope.remoteAddress == driver.remote else { return }
        driver.received(envelope.data.readableBytesView, on: .datagram)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A send refused by the network (UDP blocked) is what the probes find out; not an end here.
    }
}

/// A presence stream's reads, cut into datagrams for the driver; garbage closes the stream.
private final class CameraPresenceStreamHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let driver: CameraPresenceDriver
    private var framer = PresenceStreamFramer()

    init(driver: CameraPresenceDriver) { self.driver = driver }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        do {
            try framer.feed(bytes.readableBytesView) { driver.received($0, on: .stream) }
        } catch {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        driver.streamEnded(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
