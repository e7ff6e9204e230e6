import NIOCore
import Synchronization
import Traversal

/// A signalling connection's inbound events, queued for one drain task at a time: a task exists for a connection only
/// while it has events to handle, so an idle camera's connection holds no suspended task (whose stack slabs cost
/// kilobytes per camera). The drain handles the events in the order the connection produced them.
///
/// ```
///  event loop (SignallingInboxHandler)        inbox                        drain task (started when idle → busy)
///  channelRead / bad frame / inactive  ──►  queue (≤ maxQueuedEvents)  ──►  handle each, in order; ends when empty
///  read()  held while the queue is full  ◄──  read resumed as it drains
/// ```
final class SignallingInbox: Sendable {
    /// What the drain handles.
    enum Event: Sendable, Equatable {
        /// The connection is served: admit it (`RendezvousHub.connected`).
        case opened
        /// A decoded message.
        case message(CloudMessage)
        /// A frame that does not decode; the connection is answered `badRequest` and closed.
        case badFrame(CloudProtocolError)
        /// The connection closed.
        case closed
    }

    /// What the drain knows of the connection between events.
    struct Connection: Sendable {
        /// What the connection has established.
        var state = RendezvousConnectionState.fresh
        /// Whether the hub admitted it (it then owes `RendezvousHub.disconnected` when it closes).
        var admitted = false
        /// Whether the connection is being closed: later messages are dropped.
        var finished = false
    }

    /// Events queued at most; while this many wait, the connection is not read (the client's TCP window fills).
    static let maxQueuedEvents = 16

    private struct State {
        var events = CircularBuffer<Event>(initialCapacity: 1)
        /// Starts a drain; nil until the connection is served (events queue until then).
        var drainer: (@Sendable (SignallingInbox) -> Void)?
        var draining = false
        var connection = Connection()
        /// A `read()` the handler held back because the queue was full.
        var readHeld = false
    }

    private let state = Mutex(State())
    /// The connection.
    let channel: any Channel

    /// An inbox for `channel`.
    init(channel: any Channel) { self.channel = channel }

    /// Starts serving: queues ``Event/opened`` first and drains with `drainer` from now on.
    func start(drainer: @escaping @Sendable (SignallingInbox) -> Void) {
        let drain = state.withLock { state -> Bool in
            state.drainer = drainer
            state.events.prepend(.opened)
            guard !state.draining else { return false }
            state.draining = true
            return true
        }
        if drain { drainer(self) }
    }

    /// Queues `event` and starts a drain unless one runs (or the connection is not served yet).
    func push(_ event: Event) {
        let drainer = state.withLock { state -> (@Sendable (SignallingInbox) -> Void)? in
            state.events.append(event)
            guard !state.draining, let drainer = state.drainer else { return nil }
            state.draining = true
            return drainer
        }
        drainer?(self)
    }

    /// Whether a `read()` must wait (the queue is full); if so it is remembered and issued once the queue drains.
    func holdsRead() -> Bool {
        state.withLock { state in
            guard state.events.count >= Self.maxQueuedEvents else { return false }
            state.readHeld = true
            return true
        }
    }

    /// For the drain: stores `updated` (what the previous event changed) and returns the next event with the
    /// connection, or nil when none waits (the drain then ends; the next event starts another).
    func next(storing updated: Connection?) -> (Event, Connection)? {
        let (next, resumeRead) = state.withLock { state -> ((Event, Connection)?, Bool) in
            if let updated { state.connection = updated }
            guard let event = state.events.popFirst() else {
                state.draining = false
                return (nil, false)
            }
            let resume = state.readHeld && state.events.count < Self.maxQueuedEvents
            if resume { state.readHeld = false }
            return ((event, state.connection), resume)
        }
        if resumeRead { channel.read() }
        return next
    }
}

/// The last handler of a signalling connection: hands its messages, a bad frame and its closing to the
/// connection's ``SignallingInbox``, and holds reads back while the inbox is full.
final class SignallingInboxHandler: ChannelDuplexHandler {
    typealias InboundIn = CloudMessage
    typealias OutboundIn = CloudMessage
    typealias OutboundOut = CloudMessage

    private let inbox: SignallingInbox

    /// A handler feeding `inbox`.
    init(inbox: SignallingInbox) { self.inbox = inbox }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inbox.push(.message(unwrapInboundIn(data)))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? CloudProtocolError {
            inbox.push(.badFrame(error))
        } else {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        inbox.push(.closed)
        context.fireChannelInactive()
    }

    func read(context: ChannelHandlerContext) {
        if !inbox.holdsRead() { context.read() }
    }
}

/// The signalling connections being served, so that a stopping server waits until each has been handled to its end.
final class SignallingConnections: Sendable {
    private struct State {
        var open = 0
        var stopping = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    /// Whether the server is stopping (a camera going offline then is not recorded one by one: the stop records all).
    var isStopping: Bool { state.withLock { $0.stopping } }

    /// A connection is served from now until ``closed()``.
    func opened() { state.withLock { $0.open += 1 } }

    /// A served connection's close has been handled.
    func closed() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open -= 1
            guard state.open == 0 else { return [] }
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Marks the server stopping: from now on a connection is closed as soon as it is handled.
    func stop() { state.withLock { $0.stopping = true } }

    /// Returns once every served connection's close has been handled.
    func allClosed() async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state -> Bool in
                guard state.open > 0 else { return true }
                state.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}
