import Logging
import Synchronization

/// The channels of one connection over one SCTP association: opening and accepting channels (RFC 8832),
/// routing received messages to them, and one writer that feeds the association's send buffer in
/// priority order, suspending senders while it is full.
///
/// ```
///  PeerChannel.send ─► queue (by priority) ─► writer ─► SCTPAssociation ─► packets ─► sealed, to the peer
///  peer's packets ─► SCTPAssociation.input ─► events ─► DCEP / message routing ─► PeerChannel.messages
/// ```
///
/// Stream ids: the viewer opens even ids, the camera odd ones (as RFC 8832 §6 splits them by DTLS role),
/// so both can open channels at once without a collision.
final class ChannelSession: Sendable {
    /// How long `openChannel` waits for the association and the peer's ACK.
    static let openTimeout: Duration = .seconds(10)

    private struct Pending {
        var message: [UInt8]
        var ppid: UInt32
        var stream: UInt16
        var delivery: SCTPAssociation.Delivery
        var priority: UInt16
        var sequence: UInt64
        var done: CheckedContinuation<Void, any Error>?
    }

    private enum Phase {
        case connecting
        case up
        case down(String)
    }

    private struct State {
        var phase: Phase = .connecting
        var upWaiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
        var channels: [UInt16: PeerChannel] = [:]
        var acks: [UInt16: CheckedContinuation<Void, any Error>] = [:]
        var nextStream: UInt16
        var freeStreams: [UInt16] = []
        var queue: [Pending] = []
        var sequence: UInt64 = 0
    }

    /// Channels the peer opened.
    let incoming: AsyncStream<PeerChannel>
    /// Bytes received on every channel and not yet read.
    let unread = ChannelMessages.Counter()
    private let incomingSink: AsyncStream<PeerChannel>.Continuation
    private let association: SCTPAssociation
    private let state: Mutex<State>
    private let work: AsyncStream<Void>
    private let workSink: AsyncStream<Void>.Continuation
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let logger: Logger

    /// Creates the association and the tasks that carry its packets through `send`; ``connect()`` starts it.
    init(role: ConnectionRole, configuration: SCTPAssociation.Configuration, logger: Logger,
         send: @escaping @Sendable ([UInt8]) async -> Void) throws {
        association = try SCTPAssociation(configuration: configuration)
        state = Mutex(State(nextStream: role == .viewer ? 0 : 1))
        (incoming, incomingSink) = AsyncStream.makeStream(of: PeerChannel.self)
        (work, workSink) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.logger = logger
        let association = self.association
        let pump = Task {
            for await packet in association.packets { await send(packet) }
        }
        let events = Task { [weak self] in
            for await event in association.events {
                guard let self else { return }
                self.handle(event)
            }
        }
        let writer = Task { [weak self] in
            guard let self else { return }
            await self.runWriter()
        }
        tasks.withLock { $0 = [pump, events, writer] }
    }

    deinit {
        close(reason: "connection released")
    }

    /// Starts the association (``SCTPAssociation/connect()``).
    func connect() { association.connect() }

    /// Feeds a packet from the peer.
    func input(_ packet: [UInt8]) {
        association.input(packet)
    }

    /// Bytes accepted and not yet acknowledged.
    var bufferedAmount: Int { association.bufferedAmount }

    /// Largest SCTP packet emitted so far.
    var largestPacketSize: Int { association.largestPacketSize }

    /// Smoothed RTT and congestion window of the association.
    var status: (srttMs: Int, cwnd: Int, mtu: Int)? { association.status }

    /// The association's tuning.
    var configuration: SCTPAssociation.Configuration { association.configuration }

    /// Whether the association negotiated PR-SCTP (``SCTPAssociation/partialReliability``).
    var partialReliability: Bool? { association.partialReliability }

    /// Changes the engine's packet size (``SCTPAssociation/setPathMTU(_:)``).
    func setPathMTU(_ size: Int) { association.setPathMTU(size) }

    /// Sets the engine's retransmission timer bounds to `timing`'s (the session moved to a path of another kind).
    func setRetransmissionTiming(_ timing: SCTPAssociation.Configuration) { association.setRetransmissionTiming(timing) }

    /// The engine's retransmission timer bounds in force (ms).
    var retransmissionBounds: (initial: UInt32, min: UInt32, max: UInt32)? { association.retransmissionBounds }

    /// Opens a channel and waits for the peer's acknowledgement; with `early` an ordered channel is returned as soon
    /// as the association has taken its DATA_CHANNEL_OPEN (RFC 8832 §6: messages may follow it before the
    /// acknowledgement, sent ordered, as the channel's are), saving the round trip. A peer that refuses it resets
    /// the stream, which ends the channel.
    func open(label: String, delivery: ChannelDelivery, priority: ChannelPriority, early: Bool = false) async throws -> PeerChannel {
        try await Self.within(Self.openTimeout, "the association coming up") { try await self.waitUp() }
        let channel: PeerChannel = try state.withLock { s in
            if case .down(let why) = s.phase { throw ChannelError(code: .closed, detail: why) }
            let id: UInt16
            if let free = s.freeStreams.popLast() {
                id = free
            } else {
                guard s.nextStream < association.configuration.streams else {
                    throw ChannelError(code: .tooManyChannels, detail: "all \(association.configuration.streams) streams in use")
                }
                id = s.nextStream
                s.nextStream += 2
            }
            let c = PeerChannel(label: label, delivery: delivery, priority: priority, streamID: id, session: self)
            s.channels[id] = c
            return c
        }
        association.setPriority(Self.schedulerValue(priority), stream: channel.streamID)
        let open = DataChannelProtocol.encodeOpen(.init(delivery: delivery, priority: priority, label: label, proto: ""))
        if early, delivery.ordered {
            do {
                try await enqueue(open, ppid: DataChannelProtocol.PPID.control, stream: channel.streamID,
                                  delivery: .init(ordered: true, policy: 0, value: 0), priority: .extraHigh)
            } catch {
                channel.fail(error)
                throw error
            }
            return channel
        }
        do {
            try await Self.within(Self.openTimeout, "the peer's channel acknowledgement") {
                try await withTaskCancellationHandler {
                    try await withCheckedThrowingContinuation { (ack: CheckedContinuation<Void, any Error>) in
                        self.state.withLock { $0.acks[channel.streamID] = ack }
                        Task { try? await self.enqueue(open, ppid: DataChannelProtocol.PPID.control, stream: channel.streamID,
                                                       delivery: .init(ordered: true, policy: 0, value: 0), priority: .extraHigh) }
                    }
                } onCancel: {
                    let ack = self.state.withLock { $0.acks.removeValue(forKey: channel.streamID) }
                    ack?.resume(throwing: CancellationError())
                }
            }
        } catch {
            channel.fail(error)
            throw error
        }
        return channel
    }

    /// Queues a user message of `channel`; returns when the association has taken it.
    func enqueue(_ message: [UInt8], ppid: UInt32, channel: PeerChannel) async throws {
        try await enqueue(message, ppid: ppid, stream: channel.streamID,
                          delivery: DataChannelProtocol.engineDelivery(channel.delivery), priority: channel.priority)
    }

    /// A channel closed on our side: reset its stream (the peer then resets its own, RFC 8831 §6.7).
    func closed(_ channel: PeerChannel, resetStream: Bool) {
        state.withLock { s in
            s.channels[channel.streamID] = nil
            if let ack = s.acks.removeValue(forKey: channel.streamID) {
                ack.resume(throwing: ChannelError(code: .closed, detail: "channel closed"))
            }
        }
        if resetStream { association.resetStream(channel.streamID) }
    }

    /// Ends every channel and the association.
    func close(reason: String) {
        let (channels, waiters, acks, queue) = state.withLock { s in
            if case .down = s.phase {} else { s.phase = .down(reason) }
            defer {
                s.channels = [:]
                s.upWaiters = [:]
                s.acks = [:]
                s.queue = []
            }
            return (Array(s.channels.values), Array(s.upWaiters.values), Array(s.acks.values), s.queue)
        }
        let error = ChannelError(code: .closed, detail: reason)
        for c in channels { c.finish(nil) }
        for w in waiters { w.resume(throwing: error) }
        for a in acks { a.resume(throwing: error) }
        for p in queue { p.done?.resume(throwing: error) }
        incomingSink.finish()
        workSink.finish()
        association.close()
        for t in tasks.withLock({ $0 }) { t.cancel() }
    }

    // MARK: - internals

    /// ``withDeadline(_:_:)`` failing with ``ChannelError/Code/timeout``.
    private static func within(_ limit: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> Void) async throws {
        do {
            try await withDeadline(limit, body)
        } catch is DeadlineExceeded {
            throw ChannelError(code: .timeout, detail: "no \(what) within \(limit)")
        }
    }

    private static func schedulerValue(_ priority: ChannelPriority) -> UInt16 {
        // usrsctp's priority scheduler sends the lowest value first.
        UInt16(ChannelPriority.extraHigh.rawValue / priority.rawValue)
    }

    private func waitUp() async throws {
        let id = state.withLock { s in
            s.sequence += 1
            return s.sequence
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                state.withLock { s in
                    switch s.phase {
                    case .up: c.resume()
                    case .down(let why): c.resume(throwing: ChannelError(code: .closed, detail: why))
                    case .connecting: s.upWaiters[id] = c
                    }
                }
            }
        } onCancel: {
            let c = state.withLock { $0.upWaiters.removeValue(forKey: id) }
            c?.resume(throwing: CancellationError())
        }
    }

    private func enqueue(_ message: [UInt8], ppid: UInt32, stream: UInt16, delivery: SCTPAssociation.Delivery,
                         priority: ChannelPriority) async throws {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
            let accepted: Bool = state.withLock { s in
                if case .down = s.phase { return false }
                s.sequence += 1
                s.queue.append(Pending(message: message, ppid: ppid, stream: stream, delivery: delivery,
                                       priority: priority.rawValue, sequence: s.sequence, done: done))
                return true
            }
            if accepted { workSink.yield() } else { done.resume(throwing: ChannelError(code: .closed, detail: "connection closed")) }
        }
    }

    /// The one writer: highest priority first, then oldest; waits for room when the send buffer is full.
    private func runWriter() async {
        var workSignals = work.makeAsyncIterator()
        var room = association.writable.makeAsyncIterator()
        while !Task.isCancelled {
            let next: Pending? = state.withLock { s in
                guard let i = s.queue.indices.max(by: { a, b in
                    (s.queue[a].priority, UInt64.max - s.queue[a].sequence) < (s.queue[b].priority, UInt64.max - s.queue[b].sequence)
                }) else { return nil }
                return s.queue[i]
            }
            guard let next else {
                guard await workSignals.next() != nil else { return }
                continue
            }
            switch association.send(next.message, stream: next.stream, ppid: next.ppid, delivery: next.delivery) {
            case .sent:
                take(next.sequence)?.resume()
            case .wouldBlock:
                guard await room.next() != nil else { return }
            case .failed(let errno):
                take(next.sequence)?.resume(throwing: ChannelError(code: .engineFailed, detail: "SCTP send failed (errno \(errno))"))
            }
        }
    }

    private func take(_ sequence: UInt64) -> CheckedContinuation<Void, any Error>? {
        state.withLock { s in
            guard let i = s.queue.firstIndex(where: { $0.sequence == sequence }) else { return nil }
            return s.queue.remove(at: i).done
        }
    }

    private func handle(_ event: SCTPAssociation.Event) {
        switch event {
        case .up:
            association.applyPathParameters()
            let waiters = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
                if case .connecting = s.phase { s.phase = .up }
                defer { s.upWaiters = [:] }
                return Array(s.upWaiters.values)
            }
            for w in waiters { w.resume() }
        case .down(let why):
            close(reason: why)
        case .oversized(let stream):
            channel(stream)?.fail(ChannelError(code: .tooLarge, detail: "the peer sent a message over \(PeerChannel.maxMessageSize) bytes"))
        case .streamsReset(let streams):
            for id in streams {
                // A channel we were still opening: the peer refused it.
                let refused = state.withLock { $0.acks.removeValue(forKey: id) }
                refused?.resume(throwing: ChannelError(code: .tooManyChannels, detail: "the peer refused the channel (stream \(id))"))
                let c = state.withLock { s -> PeerChannel? in
                    defer {
                        s.channels[id] = nil
                        if id % 2 == s.nextStream % 2, !s.freeStreams.contains(id) { s.freeStreams.append(id) }
                    }
                    return s.channels[id]
                }
                if let c, c.finish(nil) { association.resetStream(id) }
            }
        case .message(let stream, let ppid, let payload):
            if ppid == DataChannelProtocol.PPID.control {
                control(payload, stream: stream)
                return
            }
            guard let c = channel(stream) else { return }
            switch ppid {
            case DataChannelProtocol.PPID.binary, DataChannelProtocol.PPID.string: _ = c.deliver(payload)
            case DataChannelProtocol.PPID.binaryEmpty, DataChannelProtocol.PPID.stringEmpty: _ = c.deliver([])
            default: c.fail(ChannelError(code: .protocolViolation, detail: "unknown payload protocol \(ppid)"))
            }
        }
    }

    private func channel(_ stream: UInt16) -> PeerChannel? {
        state.withLock { $0.channels[stream] }
    }

    private func control(_ payload: [UInt8], stream: UInt16) {
        let open: DataChannelProtocol.Open?
        do {
            open = try DataChannelProtocol.decode(payload)
        } catch {
            logger.debug("channel control refused", metadata: ["stream": "\(stream)", "reason": "\(error.reason)"])
            refuse(stream)
            return
        }
        guard let open else {
            let ack = state.withLock { $0.acks.removeValue(forKey: stream) }
            ack?.resume()
            return
        }
        let localParity: UInt16 = state.withLock { $0.nextStream % 2 }
        let accepted: PeerChannel? = state.withLock { s in
            guard stream % 2 != localParity, s.channels[stream] == nil,
                  s.channels.keys.count(where: { $0 % 2 != localParity }) < PeerChannel.maxChannels else { return nil }
            if case .up = s.phase {} else { return nil }
            let c = PeerChannel(label: open.label, delivery: open.delivery, priority: open.priority, streamID: stream, session: self)
            s.channels[stream] = c
            return c
        }
        guard let accepted else {
            logger.debug("channel open refused", metadata: ["stream": "\(stream)"])
            refuse(stream)
            return
        }
        association.setPriority(Self.schedulerValue(open.priority), stream: stream)
        Task { try? await self.enqueue(DataChannelProtocol.ack, ppid: DataChannelProtocol.PPID.control, stream: stream,
                                       delivery: .init(ordered: true, policy: 0, value: 0), priority: .extraHigh) }
        incomingSink.yield(accepted)
    }

    private func refuse(_ stream: UInt16) {
        association.resetStream(stream)
    }
}
