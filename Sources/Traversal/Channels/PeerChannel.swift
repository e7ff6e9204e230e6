import Synchronization

/// A message channel inside a ``PeerConnection``: reliable, unordered or partially reliable (see
/// ``ChannelDelivery``), with a priority, carrying messages of up to ``maxMessageSize`` bytes whole
/// (fragmented and reassembled by the engine). Open one with ``PeerConnection/openChannel(label:delivery:priority:)``;
/// the peer's appear on ``PeerConnection/incomingChannels``.
///
/// `send` suspends while the connection's send buffer (``sendBufferLimit`` bytes, shared by its channels)
/// has no room: backpressure, never a silent drop. Received messages wait in ``messages`` until read; a
/// reader that falls more than ``receiveBufferLimit`` bytes behind gets the channel closed with
/// ``ChannelError/Code/receiveOverflow``.
public final class PeerChannel: Sendable {
    /// Largest message (bytes) `send` accepts and the receiver reassembles.
    public static let maxMessageSize = 4 << 20
    /// Bytes a connection's send buffer holds before `send` suspends (all its channels together).
    public static let sendBufferLimit = maxMessageSize + 1 << 20
    /// Bytes of received messages a channel holds for a reader that has not caught up.
    public static let receiveBufferLimit = 16 << 20
    /// Bytes of received messages all channels of one connection hold together (so a peer opening many
    /// channels cannot multiply ``receiveBufferLimit``).
    public static let connectionReceiveBufferLimit = 32 << 20
    /// Channels the peer may have open on one connection at once; more are refused (their stream reset).
    public static let maxChannels = 256

    /// The label the opener gave.
    public let label: String
    /// How messages are delivered.
    public let delivery: ChannelDelivery
    /// Its share of the path when others have data queued.
    public let priority: ChannelPriority
    /// The SCTP stream carrying it.
    public let streamID: UInt16
    /// Messages from the peer, whole, in the channel's delivery order; finishes when the channel closes
    /// (throwing if it closed for a reason other than either side's `close`).
    public let messages: ChannelMessages

    private let session: ChannelSession
    private let sink: AsyncThrowingStream<[UInt8], any Error>.Continuation
    private let state = Mutex<Bool>(true)

    init(label: String, delivery: ChannelDelivery, priority: ChannelPriority, streamID: UInt16, session: ChannelSession) {
        self.label = label
        self.delivery = delivery
        self.priority = priority
        self.streamID = streamID
        self.session = session
        let (stream, sink) = AsyncThrowingStream.makeStream(of: [UInt8].self, throwing: (any Error).self)
        self.sink = sink
        let counter = ChannelMessages.Counter(parent: session.unread)
        self.messages = ChannelMessages(stream: stream, counter: counter)
        counterBox = counter
    }

    private let counterBox: ChannelMessages.Counter

    /// Sends one message (at most ``maxMessageSize`` bytes); returns once the engine has taken it.
    public func send(_ message: [UInt8]) async throws {
        guard message.count <= Self.maxMessageSize else {
            throw ChannelError(code: .tooLarge, detail: "\(message.count) bytes, at most \(Self.maxMessageSize)")
        }
        guard isOpen else { throw ChannelError(code: .closed, detail: "channel \(label) is closed") }
        try await session.enqueue(message, ppid: message.isEmpty ? DataChannelProtocol.PPID.binaryEmpty : DataChannelProtocol.PPID.binary,
                                  channel: self)
    }

    /// Bytes the connection has accepted for sending and the peer has not yet acknowledged (all channels).
    public var bufferedAmount: Int { session.bufferedAmount }

    /// Whether the channel still carries messages.
    public var isOpen: Bool { state.withLock { $0 } }

    /// Closes the channel (RFC 8831 §6.7: its stream is reset); the peer's ``messages`` finish.
    public func close() {
        guard finish(nil) else { return }
        session.closed(self, resetStream: true)
    }

    /// Hands a received message to the reader; false (and the channel closed) when the reader is too far behind.
    func deliver(_ message: [UInt8]) -> Bool {
        guard isOpen else { return true }
        let (mine, all) = counterBox.add(message.count)
        guard mine <= Self.receiveBufferLimit, all <= Self.connectionReceiveBufferLimit else {
            _ = counterBox.add(-message.count)
            fail(ChannelError(code: .receiveOverflow,
                              detail: "more than \(mine > Self.receiveBufferLimit ? "\(Self.receiveBufferLimit) bytes unread on \(label)" : "\(Self.connectionReceiveBufferLimit) bytes unread on the connection")"))
            return false
        }
        sink.yield(message)
        return true
    }

    /// Ends the channel with `error` (nil: closed normally); true if it was open.
    @discardableResult
    func finish(_ error: (any Error)?) -> Bool {
        let wasOpen = state.withLock { open in
            defer { open = false }
            return open
        }
        guard wasOpen else { return false }
        counterBox.detach()
        if let error { sink.finish(throwing: error) } else { sink.finish() }
        return true
    }

    /// Ends the channel with `error` and resets its stream.
    func fail(_ error: any Error) {
        guard finish(error) else { return }
        session.closed(self, resetStream: true)
    }
}

/// The messages of a ``PeerChannel``: an async sequence that also frees the channel's receive budget as it is read.
public struct ChannelMessages: AsyncSequence, Sendable {
    /// Each element is one whole message.
    public typealias Element = [UInt8]

    /// Unread bytes of one channel, and of its connection (the parent).
    final class Counter: Sendable {
        let bytes = Atomic<Int>(0)
        let parent: Counter?
        let detached = Atomic<Bool>(false)
        init(parent: Counter? = nil) { self.parent = parent }
        /// Adds `n` here and to the parent; returns both new totals.
        func add(_ n: Int) -> (Int, Int) {
            let total = detached.load(ordering: .relaxed) ? 0 : parent?.add(n).0 ?? 0
            return (bytes.add(n, ordering: .relaxed).newValue, total)
        }
        /// Gives this channel's unread bytes back to the parent (the channel has ended; what is left is the reader's).
        func detach() {
            guard !detached.exchange(true, ordering: .relaxed) else { return }
            _ = parent?.add(-bytes.load(ordering: .relaxed))
        }
    }

    let stream: AsyncThrowingStream<[UInt8], any Error>
    let counter: Counter

    /// Iterates the messages.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<[UInt8], any Error>.AsyncIterator
        let counter: Counter

        /// The next message, or nil when the channel has closed.
        public mutating func next() async throws -> [UInt8]? {
            let message = try await base.next()
            if let message { _ = counter.add(-message.count) }
            return message
        }
    }

    /// A new iterator (one reader at a time).
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator(), counter: counter)
    }
}
