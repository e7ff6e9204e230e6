import NIOCore
import NIOPosix

/// STUN over TCP: one connection, one Binding transaction, framed by the length field (RFC 8489 §6.2.2).
public enum STUNTCPClient {
    /// Connects to `server` (optionally from a fixed local address, reusable for TCP simultaneous open),
    /// runs one Binding transaction and closes. Times out after `timeout` (default Ti, 39.5 s).
    public static func binding(to server: TransportAddress, from local: TransportAddress? = nil,
                               timeout: TimeAmount = STUNRetransmissionPolicy.rfc8489.reliableTimeout,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> STUNResponse {
        let request = STUNMessage(method: .binding, messageClass: .request)
        let loop = group.next()
        let promise = loop.makePromise(of: STUNMessage.self)
        let started = NIODeadline.now()
        var bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandlers(
                        ByteToMessageHandler(STUNFrameDecoder()),
                        STUNTCPResponseHandler(transactionID: request.transactionID, promise: promise))
                }
            }
        if let local {
            bootstrap = bootstrap.channelOption(.socketOption(.so_reuseaddr), value: 1)
                .channelOption(.socketOption(.reusePort), value: 1)
                .bind(to: local.socketAddress)
        }
        let channel: Channel
        do {
            channel = try await bootstrap.connect(to: server.socketAddress).get()
        } catch {
            promise.fail(error)
            throw STUNClientError(.socket, detail: "connect \(server): \(error)")
        }
        let timer = loop.scheduleTask(in: timeout) {
            promise.fail(STUNClientError(.timeout, detail: "no response over TCP within \(timeout)"))
        }
        defer {
            timer.cancel()
            channel.close(promise: nil)
        }
        let localAddress = channel.localAddress.flatMap(TransportAddress.init) ?? TransportAddress(ip: .v4(0), port: 0)
        return try await withTaskCancellationHandler {
            channel.writeAndFlush(channel.allocator.buffer(bytes: request.encode(fingerprint: true)), promise: nil)
            let message = try await promise.futureResult.get()
            return STUNResponse(message: message, source: server, local: localAddress,
                                elapsed: .now() - started, requestsSent: 1)
        } onCancel: {
            promise.fail(CancellationError())
        }
    }
}

/// Waits for the response to one transaction on a stream.
final class STUNTCPResponseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let transactionID: STUNTransactionID
    private let promise: EventLoopPromise<STUNMessage>

    init(transactionID: STUNTransactionID, promise: EventLoopPromise<STUNMessage>) {
        self.transactionID = transactionID
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let message = try? STUNMessage.decode(unwrapInboundIn(data).readableBytesView),
              message.transactionID == transactionID, let verdict = STUNResponseCheck.accept(message) else { return }
        switch verdict {
        case .success: promise.succeed(message)
        case .failure(let e): promise.fail(e)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(STUNClientError(.connectionClosed, detail: "closed before a response"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(STUNClientError(.connectionClosed, detail: "\(error)"))
        context.close(promise: nil)
    }
}
