import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import STUNLite

/// Whether a TLS handshake with `server` completes within `timeout` (reachability only: the
/// certificate is not checked, since the question is whether the network lets TLS through).
func tlsHandshakeWorks(_ server: TransportAddress, timeout: TimeAmount = .seconds(3)) async -> Bool {
    do {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        let context = try NIOSSLContext(configuration: configuration)
        let group = MultiThreadedEventLoopGroup.singleton
        let done = group.next().makePromise(of: Void.self)
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                    try ch.pipeline.syncOperations.addHandler(HandshakeWatcher(done: done))
                }
            }
            .connect(to: server.socketAddress).get()
        } catch {
            done.fail(error)
            return false
        }
        let timer = channel.eventLoop.scheduleTask(in: timeout) { done.fail(ChannelError.connectTimeout(timeout)) }
        defer { timer.cancel(); channel.close(promise: nil) }
        try await done.futureResult.get()
        return true
    } catch {
        return false
    }
}

/// Completes a promise when the TLS handshake finishes, fails it when the channel ends first.
private final class HandshakeWatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let done: EventLoopPromise<Void>
    init(done: EventLoopPromise<Void>) { self.done = done }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { done.succeed(()) }
        context.fireUserInboundEventTriggered(event)
    }
    func channelInactive(context: ChannelHandlerContext) {
        done.fail(ChannelError.eof)
        context.fireChannelInactive()
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(error)
    }
}
