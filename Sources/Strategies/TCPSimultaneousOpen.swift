import Logging
import NIOCore
import NIOPosix
import STUNLite
import Synchronization
import Traversal

/// `tcp-simultaneous-open`: both sides learn their TCP mapping by STUN over TCP from a fixed local
/// port, then connect to each other from that same port at the start signal, retrying on RST, so
/// the SYNs cross and both kernels (and NATs) accept one connection (RFC 5128 §4.2.2). Useful when
/// UDP is blocked but TCP is allowed, and as a second direct path.
public struct TCPSimultaneousOpen: TraversalStrategy {
    /// The strategy id.
    public let id = "tcp-simultaneous-open"
    /// How long TCP waits after the start signal when a UDP path may exist too (happy eyeballs).
    public static let udpPreference: Duration = .milliseconds(150)
    /// STUN-over-TCP Bindings that learn the mapping: another from a fresh port each ``bindingRepeatDelay`` while
    /// none has answered, since gathering waits for this one and TCP repeats a lost SYN only after 1 s
    /// (RFC 6298 §2.1): one lost SYN on a lossy line would otherwise hold up every strategy's offer that long.
    public static let bindingAttempts = 3
    /// See ``bindingAttempts``: a few round trips on any usual path (RFC 8305 §5 suggests 250 ms between attempts).
    public static let bindingRepeatDelay: Duration = .milliseconds(250)
    /// Pause between connection attempts after a refusal.
    public var retryInterval: Duration
    /// How long one connect may wait for the crossing SYN.
    public var attemptTimeout: Duration
    /// How long to keep trying in all.
    public var deadline: Duration
    /// Time allowed for the STUN-over-TCP Binding that learns the mapping.
    public var stunTimeout: Duration

    /// Creates the strategy; defaults: retry every 100 ms, 1 s per attempt, 6 s in all, 3 s for STUN.
    public init(retryInterval: Duration = .milliseconds(100), attemptTimeout: Duration = .seconds(1),
                deadline: Duration = .seconds(6), stunTimeout: Duration = .seconds(3)) {
        self.retryInterval = retryInterval
        self.attemptTimeout = attemptTimeout
        self.deadline = deadline
        self.stunTimeout = stunTimeout
    }

    /// Learns the TCP mapping of a fresh local port.
    public func prepare(_ context: StrategyContext) async throws -> any PreparedStrategy {
        guard let server = context.stunServers.lazy.compactMap({ TransportAddress($0, defaultPort: 3478) }).first else {
            throw StrategyError(code: .notApplicable, detail: "no STUN server configured")
        }
        // Each attempt from a fresh port: whichever mapping is learned first is the one used.
        let timeout = TimeAmount(stunTimeout)
        let response = try await firstSuccess(ofAttempts: Self.bindingAttempts, every: Self.bindingRepeatDelay) { _ in
            try await STUNTCPClient.binding(to: server, from: TransportAddress(ip: .v4(0), port: 0), timeout: timeout)
        }
        guard let mapped = response.mappedAddress else { throw StrategyError(code: .failed, detail: "no TCP mapped address") }
        let local = response.local
        var candidates = [Candidate(strategy: id, kind: .serverReflexive, transport: "tcp", address: mapped.description)]
        if mapped != local, local.ip != .v4(0) {
            candidates.append(Candidate(strategy: id, kind: .host, transport: "tcp", address: local.description))
        }
        return PreparedTCP(strategy: self, localPort: local.port, candidates: candidates)
    }
}

struct PreparedTCP: PreparedStrategy {
    let strategy: TCPSimultaneousOpen
    let localPort: UInt16
    let candidates: [Candidate]

    /// ``TCPSimultaneousOpen/udpPreference`` after the UDP strategies when both sides can be
    /// reached over UDP (a UDP path suits video better); at once when one of them cannot.
    func startDelay(local: PeerOffer, remote: PeerOffer) -> Duration {
        local.hasReflexive("udp") && remote.hasReflexive("udp") ? TCPSimultaneousOpen.udpPreference : .zero
    }

    func connect(remote: PeerOffer, context: StrategyContext) async throws -> any PeerTransport {
        let targets = remote.candidates.filter { $0.strategy == strategy.id && $0.transport == "tcp" }
            .compactMap { TransportAddress($0.address) }
        guard !targets.isEmpty else { throw StrategyError(code: .notApplicable, detail: "the peer offered no TCP candidates") }
        let local = TransportAddress(ip: .v4(0), port: localPort)
        // Listen on the same port too (SO_REUSEPORT): when one SYN arrives before the other side's
        // connect (no NAT, or a NAT that forwarded it), it is accepted instead of refused.
        // Only the camera listens: with both sides listening and dialling, each could settle on a
        // different socket of the crossing attempts; one listener leaves one way to meet.
        let listener = context.role == .camera ? try? await TCPPeerTransport.listen(on: local) : nil
        defer { if let listener { Task { await listener.close() } } }
        let settings = self.strategy
        return try await withThrowingTaskGroup(of: (any PeerTransport).self) { group in
            if let listener {
                group.addTask { try await listener.accepted() }
            }
            group.addTask {
                // A camera that listens dials a moment later: where the viewer's SYN can reach the listener
                // (no NAT in the way) it is accepted before any SYN of ours is in flight. A SYN of ours for
                // the same four-tuple as the accepted connection would cross it and could reset it. Across
                // NATs the viewer's SYNs are dropped until ours opens the way, so this costs one retry interval.
                if listener != nil { try await Task.sleep(for: settings.retryInterval) }
                let started = ContinuousClock.now
                var lastError = "no attempt"
                var attempts = 0
                while ContinuousClock.now - started < settings.deadline {
                    try Task.checkCancellation()
                    for target in targets {
                        // A camera's SYNs toward an offer's unvouched addresses come out of its probe budget.
                        guard context.probeBudget?.spend(ProbeBudget.connectionAttemptBytes, to: target.socketAddress) ?? true else {
                            lastError = "probe budget spent"
                            continue
                        }
                        attempts += 1
                        do {
                            let channel = try await TCPPeerTransport.connect(from: local, to: target, timeout: settings.attemptTimeout)
                            context.logger.debug("tcp simultaneous open", metadata: ["peer": "\(target)", "attempts": "\(attempts)"])
                            return channel
                        } catch {
                            lastError = "\(error)"
                        }
                    }
                    try await Task.sleep(for: settings.retryInterval)
                }
                throw StrategyError(code: .unreachable, detail: "\(attempts) connection attempts in \(settings.deadline); last: \(lastError)")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    func close() async {}
}

/// A `PeerTransport` over one TCP connection, messages framed by a 4-byte big-endian length.
public final class TCPPeerTransport: PeerTransport {
    /// Largest message accepted on a TCP path.
    public static let maxFrame = 64 * 1024
    /// Frames buffered before the connection is read no further (TCP flow control takes over).
    public static let bufferLimit = 256

    private let channel: Channel
    private let frames: AsyncStream<[UInt8]>
    private let flow: FlowControl
    /// `tcp LOCAL -> PEER`.
    public let pathDescription: String
    /// The peer's address.
    public var remoteAddress: SocketAddress? { channel.remoteAddress }

    init(channel: Channel, frames: AsyncStream<[UInt8]>, flow: FlowControl) {
        self.channel = channel
        self.frames = frames
        self.flow = flow
        let l = channel.localAddress.flatMap(TransportAddress.init)?.description ?? "?"
        let r = channel.remoteAddress.flatMap(TransportAddress.init)?.description ?? "?"
        self.pathDescription = "tcp \(l) -> \(r)"
    }

    /// Connects from `local` (address and port reused, as simultaneous open needs) to `remote`.
    static func connect(from local: TransportAddress, to remote: TransportAddress, timeout: Duration,
                        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> TCPPeerTransport {
        let (frames, sink) = makeFrameStream()
        let flow = FlowControl()
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.socketOption(.reusePort), value: 1)
            .connectTimeout(TimeAmount(timeout))
            .bind(to: local.socketAddress)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try addFraming(to: ch, sink: sink, flow: flow) }
            }
            .connect(to: remote.socketAddress).get()
        return TCPPeerTransport(channel: channel, frames: frames, flow: flow)
    }

    /// A listener on `local` (address and port reused) that hands over the first accepted connection.
    static func listen(on local: TransportAddress, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> Listener {
        let (accepted, sink) = AsyncStream.makeStream(of: TCPPeerTransport.self, bufferingPolicy: .bufferingNewest(1))
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.socketOption(.reusePort), value: 1)
            .serverChannelOption(.backlog, value: 4)
            .childChannelInitializer { ch in
                let (frames, frameSink) = makeFrameStream()
                let flow = FlowControl()
                return ch.eventLoop.makeCompletedFuture {
                    try addFraming(to: ch, sink: frameSink, flow: flow)
                    sink.yield(TCPPeerTransport(channel: ch, frames: frames, flow: flow))
                }
            }
            .bind(to: local.socketAddress).get()
        return Listener(server: server, accepted: accepted)
    }

    /// The frames of one connection and their sink: never dropped; ``FlowControl`` stops reading the socket
    /// while ``bufferLimit`` frames wait, so TCP's own window pushes back on the sender.
    private static func makeFrameStream() -> (AsyncStream<[UInt8]>, AsyncStream<[UInt8]>.Continuation) {
        AsyncStream.makeStream(of: [UInt8].self, bufferingPolicy: .unbounded)
    }

    /// The pipeline of every TCP path, dialled or accepted: 4-byte length prefixes cut, whole frames into `sink`.
    private static func addFraming(to channel: Channel, sink: AsyncStream<[UInt8]>.Continuation, flow: FlowControl) throws {
        try channel.pipeline.syncOperations.addHandlers(ByteToMessageHandler(LengthPrefixDecoder()), FrameSink(sink: sink, flow: flow))
    }

    /// Frames waiting for `receive`, and whether reading from the socket is paused because of them.
    final class FlowControl: Sendable {
        /// Reading resumes once this few frames wait.
        static let resumeAt = TCPPeerTransport.bufferLimit / 4
        let waiting = Atomic<Int>(0)
        let paused = Atomic<Bool>(false)
    }

    /// A listening socket that yields its first accepted connection.
    struct Listener: Sendable {
        let server: Channel
        let accepted: AsyncStream<TCPPeerTransport>
        func accepted() async throws -> TCPPeerTransport {
            for await t in accepted { return t }
            try Task.checkCancellation()
            throw StrategyError(code: .failed, detail: "listener closed")
        }
        func close() async { try? await server.close() }
    }

    /// Streams: false.
    public var isDatagram: Bool { false }
    /// ``maxFrame``.
    public var maxMessageSize: Int { Self.maxFrame }

    /// Sends one length-prefixed message.
    public func send(_ message: [UInt8]) async throws {
        var b = channel.allocator.buffer(capacity: 4 + message.count)
        b.writeInteger(UInt32(message.count))
        b.writeBytes(message)
        try await channel.writeAndFlush(b)
    }

    /// The next whole message.
    public func receive() async throws -> [UInt8] {
        for await f in frames {
            let left = flow.waiting.subtract(1, ordering: .sequentiallyConsistent).newValue
            if left <= FlowControl.resumeAt, flow.paused.exchange(false, ordering: .sequentiallyConsistent) {
                channel.setOption(ChannelOptions.autoRead, value: true).whenSuccess { [channel] in channel.read() }
            }
            return f
        }
        try Task.checkCancellation()
        throw StrategyError(code: .failed, detail: "connection closed")
    }

    /// Closes the connection.
    public func close() async {
        try? await channel.close()
    }

    struct LengthPrefixDecoder: ByteToMessageDecoder {
        typealias InboundOut = ByteBuffer
        mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
            guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
            guard length <= TCPPeerTransport.maxFrame else {
                throw StrategyError(code: .failed, detail: "frame of \(length) bytes exceeds \(TCPPeerTransport.maxFrame)")
            }
            guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
            buffer.moveReaderIndex(forwardBy: 4)
            context.fireChannelRead(Self.wrapInboundOut(buffer.readSlice(length: Int(length))!))
            return .continue
        }
    }

    final class FrameSink: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let sink: AsyncStream<[UInt8]>.Continuation
        let flow: FlowControl
        init(sink: AsyncStream<[UInt8]>.Continuation, flow: FlowControl) {
            self.sink = sink
            self.flow = flow
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            sink.yield(Array(unwrapInboundIn(data).readableBytesView))
            if flow.waiting.add(1, ordering: .sequentiallyConsistent).newValue >= TCPPeerTransport.bufferLimit,
               !flow.paused.exchange(true, ordering: .sequentiallyConsistent) {
                context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
                // The reader may have drained everything between the count and the pause, and then it will
                // not look again: check once more (it checks after counting down, so one of us sees the other).
                if flow.waiting.load(ordering: .sequentiallyConsistent) <= FlowControl.resumeAt,
                   flow.paused.exchange(false, ordering: .sequentiallyConsistent) {
                    context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
                    context.read()
                }
            }
        }
        func channelInactive(context: ChannelHandlerContext) {
            sink.finish()
            context.fireChannelInactive()
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            sink.finish()
            context.close(promise: nil)
        }
    }
}
