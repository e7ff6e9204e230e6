import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import STUNLite
import ServiceLifecycle

/// Prometheus text at `GET /metrics` over HTTP/1.1, for scrapers; a service that closes on graceful shutdown.
final class MetricsEndpoint: Service {
    /// Where it listens.
    let address: TransportAddress
    private let channel: any Channel

    private init(address: TransportAddress, channel: any Channel) {
        self.address = address
        self.channel = channel
    }

    /// Makes Prometheus the process's metrics backend (once per process) and returns its registry.
    static func bootstrapPrometheus() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }

    /// Listens on `address` and answers every `GET /metrics` with what `registry` holds.
    static func start(_ address: TransportAddress, registry: PrometheusCollectorRegistry) async throws -> MetricsEndpoint {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try child.pipeline.syncOperations.addHandler(MetricsHTTPHandler(registry: registry))
                }
            }
            .bind(to: address.socketAddress).get()
        guard let local = channel.localAddress.flatMap(TransportAddress.init) else {
            try? await channel.close()
            throw CLIError("metrics listener has no local address")
        }
        return MetricsEndpoint(address: local, channel: channel)
    }

    /// Serves until a graceful shutdown or cancellation, then stops listening.
    func run() async throws {
        try? await gracefulShutdown()
        await stop()
    }

    /// Stops listening.
    func stop() async {
        try? await channel.close()
    }
}

/// One scrape connection: `GET /metrics` gets the registry's text (format 0.0.4), anything else 404 or 405.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let registry: PrometheusCollectorRegistry
    private var request: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break
        case .end:
            guard let head = request else { return }
            request = nil
            let status: HTTPResponseStatus
            var body: [UInt8] = []
            if head.method != .GET {
                status = .methodNotAllowed
            } else if head.uri.split(separator: "?").first != "/metrics" {
                status = .notFound
            } else {
                status = .ok
                registry.emit(into: &body)
            }
            var headers = HTTPHeaders([("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                                       ("Content-Length", "\(body.count)"), ("Connection", "close")])
            if status == .methodNotAllowed { headers.add(name: "Allow", value: "GET") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in bound.value.close(promise: nil) }
        }
    }
}
