import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A UDP socket that runs STUN transactions (RFC 8489 §6.2.1) and hands every other datagram on.
///
/// Transactions are matched by transaction ID alone, so a response from another address (RFC 5780
/// CHANGE-REQUEST) still completes its transaction. Datagrams that are not responses to a pending
/// transaction go to ``otherDatagrams``, so the same socket (and so the same NAT mapping) can carry
/// peer traffic after discovery.
public final class STUNUDPClient: Sendable {
    /// Datagrams buffered in ``otherDatagrams`` before the oldest are dropped, unless `bind` is given another bound.
    public static let otherDatagramBufferLimit = 256

    /// The local address the socket is bound to.
    public let localAddress: TransportAddress
    /// Datagrams that were not answers to our transactions: (source, bytes).
    public let otherDatagrams: AsyncStream<(TransportAddress, [UInt8])>
    private let channel: Channel
    private let handler: NIOLoopBound<STUNClientUDPHandler>

    private init(channel: Channel, handler: NIOLoopBound<STUNClientUDPHandler>, local: TransportAddress,
                 others: AsyncStream<(TransportAddress, [UInt8])>) {
        self.channel = channel
        self.handler = handler
        self.localAddress = local
        self.otherDatagrams = others
    }

    /// Datagram bytes read by default: NIO's default receive buffer, ample for STUN.
    public static let defaultMaxDatagramSize = 2048

    /// Opens a UDP socket bound to `local` (default: any IPv4 address, any port); `broadcast` allows
    /// sending to broadcast addresses; datagrams longer than `maxDatagramSize` are truncated to it;
    /// `dontFragment` sends every datagram with DF set and never fragments locally (Linux `IP_PMTUDISC_PROBE`),
    /// so a datagram larger than the path carries is lost rather than fragmented: what path MTU probes need
    /// (RFC 8899 §3, requirement 5); ``otherDatagrams`` holds at most `otherDatagramBuffer` unread datagrams.
    public static func bind(to local: TransportAddress = TransportAddress(ip: .v4(0), port: 0),
                            reuseAddress: Bool = false, broadcast: Bool = false, dontFragment: Bool = false,
                            maxDatagramSize: Int = defaultMaxDatagramSize, otherDatagramBuffer: Int = otherDatagramBufferLimit,
                            group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> STUNUDPClient {
        let (stream, continuation) = AsyncStream.makeStream(of: (TransportAddress, [UInt8]).self,
                                                            bufferingPolicy: .bufferingNewest(max(1, otherDatagramBuffer)))
        let loop = group.next()
        let handlerBox = NIOLockedValueBox<NIOLoopBound<STUNClientUDPHandler>?>(nil)
        let channel: Channel
        do {
            var bootstrap = DatagramBootstrap(group: loop)
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: maxDatagramSize))
            if reuseAddress {
                bootstrap = bootstrap.channelOption(.socketOption(.so_reuseaddr), value: 1)
                    .channelOption(.socketOption(.reusePort), value: 1)
            }
            if broadcast {
                bootstrap = bootstrap.channelOption(.socketOption(.so_broadcast), value: 1)
            }
            #if os(Linux)
            if dontFragment {
                bootstrap = local.ip.isIPv4
                    ? bootstrap.channelOption(ChannelOptions.Types.SocketOption(level: .ip, name: .init(rawValue: CInt(IP_MTU_DISCOVER))),
                                              value: Int(IP_PMTUDISC_PROBE))
                    : bootstrap.channelOption(ChannelOptions.Types.SocketOption(level: .ipv6, name: .init(rawValue: CInt(IPV6_MTU_DISCOVER))),
                                              value: Int(IPV6_PMTUDISC_PROBE))
            }
            #endif
            channel = try await bootstrap
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        let h = STUNClientUDPHandler(others: continuation, eventLoop: ch.eventLoop)
                        handlerBox.withLockedValue { $0 = NIOLoopBound(h, eventLoop: ch.eventLoop) }
                        try ch.pipeline.syncOperations.addHandler(h)
                    }
                }
                .bind(to: local.socketAddress).get()
        } catch {
            continuation.finish()
            throw STUNClientError(.socket, detail: "bind \(local): \(error)")
        }
        channel.closeFuture.whenComplete { _ in continuation.finish() }
        guard let bound = channel.localAddress.flatMap(TransportAddress.init),
              let handler = handlerBox.withLockedValue({ $0 }) else {
            try? await channel.close()
            throw STUNClientError(.socket, detail: "no local address")
        }
        return STUNUDPClient(channel: channel, handler: handler, local: bound, others: stream)
    }

    /// Runs one request/response transaction with RFC 8489 retransmissions.
    ///
    /// Adds FINGERPRINT (and MESSAGE-INTEGRITY when `integrityKey` is given). Throws
    /// ``STUNClientError`` with `timeout` when the schedule runs out, `errorResponse` for an error
    /// response; `CancellationError` when the task is cancelled.
    public func request(_ message: STUNMessage, to server: TransportAddress, policy: STUNRetransmissionPolicy = .rfc8489,
                        integrityKey: [UInt8]? = nil, fingerprint: Bool = true) async throws -> STUNResponse {
        let bytes = message.encode(integrityKey: integrityKey, fingerprint: fingerprint)
        let promise = channel.eventLoop.makePromise(of: STUNResponse.self)
        let tid = message.transactionID
        let handler = self.handler
        let destination = server.socketAddress
        let local = localAddress
        return try await withTaskCancellationHandler {
            channel.eventLoop.execute {
                handler.value.start(tid: tid, bytes: bytes, to: destination, local: local, policy: policy, promise: promise)
            }
            return try await promise.futureResult.get()
        } onCancel: {
            promise.fail(CancellationError())
            channel.eventLoop.execute { handler.value.forget(tid) }
        }
    }

    /// One Binding transaction; with `change`, asks an RFC 5780 server to answer from another IP and/or port.
    public func binding(to server: TransportAddress, change: ChangeRequest? = nil, responsePort: UInt16? = nil,
                        policy: STUNRetransmissionPolicy = .rfc8489) async throws -> STUNResponse {
        var m = STUNMessage(method: .binding, messageClass: .request)
        if let change { m.append(change) }
        if let responsePort { m.append(ResponsePort(responsePort)) }
        return try await request(m, to: server, policy: policy)
    }

    /// Sends one raw datagram from this socket (peer traffic that should share the STUN mapping).
    public func send(_ bytes: [UInt8], to destination: TransportAddress) async throws {
        let buffer = channel.allocator.buffer(bytes: bytes)
        try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: destination.socketAddress, data: buffer))
    }

    /// Closes the socket; pending transactions fail with `socket`.
    public func close() async {
        try? await channel.close()
    }
}

/// The transactions of one UDP socket (``STUNTransactionTable``) and its other datagrams; event loop only.
final class STUNClientUDPHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let transactions: STUNTransactionTable
    private var context: ChannelHandlerContext?
    private let others: AsyncStream<(TransportAddress, [UInt8])>.Continuation

    init(others: AsyncStream<(TransportAddress, [UInt8])>.Continuation, eventLoop: any EventLoop) {
        self.others = others
        self.transactions = STUNTransactionTable(eventLoop: eventLoop)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        transactions.failAll(STUNClientError(.socket, detail: "socket closed"))
    }

    func channelInactive(context: ChannelHandlerContext) {
        transactions.failAll(STUNClientError(.socket, detail: "socket closed"))
        context.fireChannelInactive()
    }

    func start(tid: STUNTransactionID, bytes: [UInt8], to destination: SocketAddress, local: TransportAddress,
               policy: STUNRetransmissionPolicy, promise: EventLoopPromise<STUNResponse>) {
        guard context != nil else {
            promise.fail(STUNClientError(.socket, detail: "socket closed"))
            return
        }
        transactions.start(tid, bytes: bytes, local: local, policy: policy, reliable: false, promise: promise) { [weak self] bytes in
            self?.write(bytes, to: destination)
        }
    }

    func forget(_ tid: STUNTransactionID) {
        transactions.forget(tid)
    }

    private func write(_ bytes: [UInt8], to destination: SocketAddress) {
        guard let context else { return }
        let buffer = context.channel.allocator.buffer(bytes: bytes)
        context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: destination, data: buffer)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let bytes = Array(envelope.data.readableBytesView)
        guard let source = TransportAddress(envelope.remoteAddress) else { return }
        if STUNMessage.looksLikeSTUN(bytes), let message = try? STUNMessage.decode(bytes),
           transactions.complete(message, from: source) {
            return
        }
        others.yield((source, bytes))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP errors (port unreachable) on UDP: the transactions keep retransmitting until their schedule ends.
    }
}
