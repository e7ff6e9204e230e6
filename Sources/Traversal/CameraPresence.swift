import Crypto
import Foundation
import NIOCore
import NIOPosix

/// A camera's side of UDP presence (the flow: ``PresenceProtocol``), sans-I/O: time is passed in as
/// `now`; it returns the datagrams to send and what happened, and says when it next needs to run.
///
/// It first probes: ``Configuration/probes`` keepalives ``Configuration/probeInterval`` apart while the
/// camera still holds TLS. An ack confirms that UDP works (the camera may then drop TLS); no ack to
/// those means UDP is blocked or the cloud too busy to answer (a reconnect storm), so the camera keeps
/// TLS presence and probes on, one keepalive at a time, from one keepalive interval apart doubling to
/// ``Configuration/maxReprobeInterval``: a camera that registered in a storm, or whose network lets UDP
/// through later, still moves to UDP. Once confirmed, a keepalive goes every
/// ``Configuration/keepaliveInterval``; no ack for ``Configuration/livenessTimeout``, or the cloud's
/// `unknownSession` answer to the latest keepalive, loses the presence, and an authenticated wake ends it (the camera reconnects over TLS for the introduction);
/// an authenticated `goAway` ends it too, with the delay after which to register again.
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

        /// Default of ``maxReprobeInterval``: 5 minutes (a camera behind a UDP-blocking network sends one
        /// 41-byte datagram every 5 minutes).
        public static let defaultMaxReprobeInterval: Duration = .seconds(300)

        /// Keepalives every `keepaliveInterval`, 3 probes 1 s apart, then probes from `keepaliveInterval` to
        /// `maxReprobeInterval` apart.
        public init(
            keepaliveInterval: Duration, probes: Int = 3, probeInterval: Duration = .seconds(1), livenessTimeout: Duration? = nil,
            maxReprobeInterval: Duration = defaultMaxReprobeInterval
        ) {
            self.keepaliveInterval = keepaliveInterval
            self.probes = max(1, probes)
            self.probeInterval = probeInterval
            self.livenessTimeout = livenessTimeout ?? keepaliveInterval * 2 + .seconds(5)
            self.maxReprobeInterval = max(maxReprobeInterval, keepaliveInterval)
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

    /// What the caller does.
    public enum Action: Sendable, Hashable {
        /// Send these bytes to the cloud's presence port.
        case send([UInt8])
        /// The first ack: UDP reaches the cloud and back; TLS may be dropped.
        case confirmed
        /// The cloud asks the camera to connect over TLS now (a viewer is waiting).
        case wake
        /// Acks stopped, or the cloud holds no such session: presence lost, connect over TLS again.
        case lost
        /// The cloud shuts down: connect over TLS again after `retryAfter` (at the next node, if several).
        case goAway(retryAfter: Duration)
        /// The first ``Configuration/probes`` probes went unanswered: keep TLS (reported once; probing goes on, and a
        /// later ack is ``confirmed``).
        case unavailable
    }

    /// The timing.
    public let configuration: Configuration
    /// The current state.
    public private(set) var state: State = .probing(sent: 0)
    private let session: PresenceSessionID
    private let key: SymmetricKey
    private var sent: UInt64 = 0
    private var received: UInt64 = 0
    private var nextSend: ContinuousClock.Instant

    /// A presence for the granted `session` and `key`; the first probe is due at `now`.
    public init(session: PresenceSessionID, key: SymmetricKey, configuration: Configuration, now: ContinuousClock.Instant) {
        self.session = session
        self.key = key
        self.configuration = configuration
        self.nextSend = now
    }

    /// When ``tick(now:)`` should run next; nil once ended.
    public var nextDeadline: ContinuousClock.Instant? {
        switch state {
        case .probing, .confirmed: nextSend
        case .ended: nil
        }
    }

    /// Sends what is due and notices silence.
    public mutating func tick(now: ContinuousClock.Instant) -> [Action] {
        switch state {
        case .ended:
            return []
        case .probing(let probes):
            guard now >= nextSend else { return [] }
            state = .probing(sent: probes + 1)
            if probes < configuration.probes {
                nextSend = now + configuration.probeInterval
                return [keepalive()]
            }
            // The fast probes went unanswered: TLS stays; one probe at a time, the wait doubling.
            let doublings = min(probes - configuration.probes, 16)
            nextSend = now + min(configuration.keepaliveInterval * (1 << doublings), configuration.maxReprobeInterval)
            return probes == configuration.probes ? [.unavailable, keepalive()] : [keepalive()]
        case .confirmed(let lastAck):
            if now - lastAck >= configuration.livenessTimeout {
                state = .ended
                return [.lost]
            }
            guard now >= nextSend else { return [] }
            // Due again at the next interval, or in time to notice the liveness timeout.
            nextSend = min(now + configuration.keepaliveInterval, lastAck + configuration.livenessTimeout)
            return [keepalive()]
        }
    }

    /// Handles a datagram from the cloud's presence address; nil when it is dropped or changes nothing visible.
    public mutating func receive(_ bytes: some Collection<UInt8>, now: ContinuousClock.Instant) -> Action? {
        if let header = try? PresenceDatagram.peek(bytes), header.kind == .unknownSession {
            // Unauthenticated: believed only for this session and the latest keepalive's counter.
            guard state != .ended, header.session == session, header.counter == sent, sent > 0 else { return nil }
            state = .ended
            return .lost
        }
        guard state != .ended, let datagram = try? PresenceDatagram.open(bytes, with: key), datagram.session == session,
            datagram.kind != .keepalive, datagram.counter > received
        else { return nil }
        received = datagram.counter
        switch (datagram.kind, state) {
        case (.wake, _):
            state = .ended
            return .wake
        case (.goAway, _):
            state = .ended
            return .goAway(retryAfter: .milliseconds(Int64(datagram.retryAfterMilliseconds)))
        case (_, .probing):
            state = .confirmed(lastAck: now)
            nextSend = now + configuration.keepaliveInterval
            return .confirmed
        default:
            state = .confirmed(lastAck: now)
            return nil
        }
    }

    /// The camera stops: the authenticated `leave` datagram to send (the cloud ends the session at once, not after
    /// its timeout), or nil when the presence already ended; it ends now.
    public mutating func leave() -> [UInt8]? {
        guard state != .ended else { return nil }
        state = .ended
        sent += 1
        return PresenceDatagram(kind: .leave, session: session, counter: sent).sealed(with: key)
    }

    private mutating func keepalive() -> Action {
        sent += 1
        return .send(PresenceDatagram(kind: .keepalive, session: session, counter: sent).sealed(with: key))
    }
}

/// Runs a camera's UDP presence over a socket of its own until it ends (``CameraPresenceStateMachine``).
///
/// The machine lives in a channel handler on the socket's event loop: a keepalive is an event-loop timer and one
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

    /// Sends keepalives for `grant` to `host` at the grant's port from a fresh socket; `onConfirmed` runs at the first ack.
    ///
    /// - Throws: ``CloudError`` when the grant or the host is unusable or the socket cannot be opened; `CancellationError`.
    static func run(
        grant: PresenceGrant, host: String, probes: Int = 3,
        onConfirmed: @escaping @Sendable () async -> Void
    ) async throws -> Outcome {
        let (session, key) = try grant.decoded()
        let remote: SocketAddress
        do {
            remote = try SocketAddress.makeAddressResolvingHost(host, port: grant.port)
        } catch {
            throw CloudError(code: .connectionFailed, detail: "presence address \(host):\(grant.port): \(error)")
        }
        let machine = CameraPresenceStateMachine(
            session: session, key: key,
            configuration: .init(keepaliveInterval: .seconds(grant.keepaliveSeconds), probes: probes), now: .now)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let outcome = loop.makePromise(of: Outcome.self)
        let channel: any Channel
        do {
            channel = try await DatagramBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            CameraPresenceHandler(machine: machine, remote: remote, outcome: outcome, onConfirmed: onConfirmed))
                    }
                }
                .bind(host: remote.protocol == .inet6 ? "::" : "0.0.0.0", port: 0).get()
        } catch {
            // A second completion of the promise (the handler's, at its removal) is ignored.
            loop.execute { outcome.fail(error) }
            throw error
        }
        return try await withTaskCancellationHandler {
            defer { channel.close(promise: nil) }
            return try await outcome.futureResult.get()
        } onCancel: {
            // The camera stops or registers anew: the handler sends `leave` before the socket closes (both run on the
            // socket's event loop, in this order), and fails the outcome with `CancellationError` as it is removed.
            channel.pipeline.fireUserInboundEventTriggered(CameraPresenceHandler.Leave())
            channel.close(promise: nil)
        }
    }
}

/// A ``CameraPresenceStateMachine`` on its socket's event loop: reads feed it, a timer ticks it at its deadline, and
/// its end completes `outcome` (a closed socket fails it with `CancellationError`).
private final class CameraPresenceHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    /// The user event that sends the machine's `leave` (``CameraPresenceStateMachine/leave()``).
    struct Leave: Sendable {}

    private var machine: CameraPresenceStateMachine
    private let remote: SocketAddress
    private let outcome: EventLoopPromise<CameraPresenceLink.Outcome>
    private let onConfirmed: @Sendable () async -> Void
    private var timer: Scheduled<Void>?
    private var timerDeadline: ContinuousClock.Instant?

    init(
        machine: CameraPresenceStateMachine, remote: SocketAddress, outcome: EventLoopPromise<CameraPresenceLink.Outcome>,
        onConfirmed: @escaping @Sendable () async -> Void
    ) {
        self.machine = machine
        self.remote = remote
        self.outcome = outcome
        self.onConfirmed = onConfirmed
    }

    func channelActive(context: ChannelHandlerContext) {
        tick(context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard envelope.remoteAddress == remote,
            let action = machine.receive(envelope.data.readableBytesView, now: .now)
        else { return }
        perform([action], context: context)
        schedule(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is Leave else { return context.fireUserInboundEventTriggered(event) }
        if let bytes = machine.leave() {
            context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: bytes))), promise: nil)
        }
        schedule(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        outcome.fail(CancellationError())
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A send refused by the network (UDP blocked) is what the probes find out; not an end here.
    }

    private func tick(context: ChannelHandlerContext) {
        timerDeadline = nil
        perform(machine.tick(now: .now), context: context)
        schedule(context: context)
    }

    /// Arms the timer for the machine's next deadline (one timer at a time; an unchanged deadline keeps it).
    private func schedule(context: ChannelHandlerContext) {
        guard let deadline = machine.nextDeadline else {
            timer?.cancel()
            timer = nil
            return
        }
        guard deadline != timerDeadline else { return }
        timer?.cancel()
        timerDeadline = deadline
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: TimeAmount(max(.zero, deadline - .now))) {
            let (handler, context) = loopBound.value
            handler.tick(context: context)
        }
    }

    private func perform(_ actions: [CameraPresenceStateMachine.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .send(let bytes):
                context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: bytes))), promise: nil)
            case .confirmed:
                let onConfirmed = onConfirmed
                Task { await onConfirmed() }
            case .unavailable:
                // TLS stays; the machine probes on, and a later ack confirms.
                break
            case .wake: outcome.succeed(.wake)
            case .goAway(let delay): outcome.succeed(.goAway(retryAfter: delay))
            case .lost: outcome.succeed(.lost)
            }
        }
    }
}
