import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import ServiceLifecycle
import SourceLimits
import Synchronization
import Traversal

/// The cloud's viewer page over HTTPS, with the cloud's certificate, on a port of its own (`trav cloud
/// --web-port`): `GET /` the page, `GET /viewer.js` its script (both given as ``Assets``, no inline script,
/// nothing from anywhere else), and the WebSocket `/signal` through which a page is introduced to a camera
/// (``BrowserSignallingStateMachine``).
///
/// ```
///  accept ─► slot (per source address / IPv6 /64, and in all) ─► TLS ─► idle timeout
///         ─► HTTP/1.1 (request ≤ Limits.maxRequestBytes) ─► GET / · GET /viewer.js · 404 · 405
///         ─► Upgrade: websocket on /signal from our own origin ─► frames ≤ Limits.maxMessageBytes ─► the state machine
/// ```
///
/// A port of its own, and also the signalling port when its server was started with
/// `RendezvousServer.Configuration.servesViewerPage`: there a ClientHello offering ALPN `http/1.1` passes the
/// signalling port's accept caps and handshake, and the connection is then handed here (`adopt`), under these
/// limits and this idle timeout rather than the signalling's authentication deadline. So one TLS port (443) can
/// carry the page, signalling and TURN over TLS for a network that lets nothing else out.
public final class BrowserViewerServer: Service, Sendable {
    /// Every bound on what a browser may send.
    public struct Limits: Sendable {
        /// Bytes a connection may send before its WebSocket upgrade (request lines and headers; no request has a body).
        public var maxRequestBytes = 16 * 1024
        /// Largest WebSocket message (one frame, or fragments together); more closes the socket with 1009.
        public var maxMessageBytes = 32 * 1024
        /// Connections open at once from one source address (IPv4) or IPv6 /64.
        public var maxConnectionsPerSource = 16
        /// Connections open at once in all.
        public var maxConnections = 4096
        /// A connection that sends nothing for this long is closed.
        public var idleTimeout: Duration = .seconds(60)
        /// Messages per WebSocket.
        public var signalling = BrowserSignallingStateMachine.Limits()

        /// Defaults: 16 KiB requests, 32 KiB messages, 16 connections per source and 4096 in all, 60 s idle.
        public init() {}
    }

    /// The page and its script.
    public struct Assets: Sendable {
        /// `GET /` (HTML).
        public var page: String
        /// `GET /viewer.js` (JavaScript).
        public var script: String

        /// Assets with this page and script.
        public init(page: String, script: String) {
            self.page = page
            self.script = script
        }
    }

    /// Where the server listens.
    public let address: SocketAddress
    /// What pages reported, in order; finishes when the server stops.
    public let reports: AsyncStream<BrowserReport>
    /// The page's own listener; nil when it is served on the signalling port alone.
    private let channel: (any Channel)?
    private let pipeline: ViewerPipeline
    private let reportSink: AsyncStream<BrowserReport>.Continuation

    private init(channel: (any Channel)?, address: SocketAddress, pipeline: ViewerPipeline, reports: AsyncStream<BrowserReport>,
                 reportSink: AsyncStream<BrowserReport>.Continuation) {
        self.channel = channel
        self.pipeline = pipeline
        self.address = address
        self.reports = reports
        self.reportSink = reportSink
    }

    /// Binds `listenIP:port` (0 picks a free port) with the certificate and key files and serves the viewer
    /// through `rendezvous`'s introductions; `iceServers(requestID)` are what each page is told to use.
    public static func start(listenIP: String, port: UInt16, certificatePath: String, keyPath: String, names: [String],
                             assets: Assets, rendezvous: RendezvousServer,
                             iceServers: @escaping @Sendable (String) -> [BrowserSignallingStateMachine.IceServer],
                             limits: Limits = Limits(), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                             logger: Logger = Logger(label: "trav.cloud.web")) async throws -> BrowserViewerServer {
        let chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        let key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv12
        tls.applicationProtocols = ["http/1.1"]
        let context = try NIOSSLContext(configuration: tls)
        let (reports, reportSink) = AsyncStream.makeStream(of: BrowserReport.self, bufferingPolicy: .bufferingNewest(256))
        let pipeline = ViewerPipeline(limits: limits, names: names, assets: assets, hub: rendezvous.hub, iceServers: iceServers,
                                      reports: reportSink, logger: logger)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try pipeline.configure(channel, tls: context) }
            }
            .bind(host: listenIP, port: Int(port)).get()
        logger.info("viewer page listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        return BrowserViewerServer(channel: channel, address: channel.localAddress!, pipeline: pipeline, reports: reports, reportSink: reportSink)
    }

    /// Serves the page on `rendezvous`'s own TLS port alone (no listener of its own): that server must have been
    /// started with `RendezvousServer.Configuration.servesViewerPage`; this attaches the page to it.
    public static func onSignallingPort(
        of rendezvous: RendezvousServer, names: [String], assets: Assets,
        iceServers: @escaping @Sendable (String) -> [BrowserSignallingStateMachine.IceServer],
        limits: Limits = Limits(), logger: Logger = Logger(label: "trav.cloud.web")
    ) -> BrowserViewerServer {
        let (reports, reportSink) = AsyncStream.makeStream(of: BrowserReport.self, bufferingPolicy: .bufferingNewest(256))
        let pipeline = ViewerPipeline(limits: limits, names: names, assets: assets, hub: rendezvous.hub, iceServers: iceServers,
                                      reports: reportSink, logger: logger)
        let server = BrowserViewerServer(channel: nil, address: rendezvous.address.socketAddress, pipeline: pipeline,
                                         reports: reports, reportSink: reportSink)
        rendezvous.attachViewerPage(server)
        logger.info("viewer page on the signalling port", metadata: ["address": "\(rendezvous.address)"])
        return server
    }

    /// Serves the page on `channel`, a connection of another TLS port whose handshake negotiated ALPN `http/1.1`
    /// (the signalling port's, RFC 7301 §3.2), under this server's limits; runs on the channel's event loop.
    package func adopt(_ channel: any Channel) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture { try pipeline.configure(channel, tls: nil) }
    }

    /// The page's origins as a browser sends them in `Origin` (RFC 6454 §6.2: the default port 443 is left out), one per name.
    package static func origins(names: [String], port: Int) -> Set<String> {
        Set(names.map { port == 443 ? "https://\($0)" : "https://\($0):\(port)" })
    }

    /// Serves until a graceful shutdown or cancellation, then stops.
    public func run() async throws {
        try? await gracefulShutdown()
        await stop()
    }

    /// Stops accepting and closes the listening socket (open WebSockets end with their pages).
    public func stop() async {
        try? await channel?.close()
        reportSink.finish()
    }
}

/// How a browser's connection is served, on the viewer page's own port or adopted from the signalling port: its
/// slot (per source and in all), TLS when the port's own, the idle timeout, HTTP and the WebSocket upgrade.
struct ViewerPipeline: Sendable {
    let slots: SharedConnectionSlots
    let limits: BrowserViewerServer.Limits
    let names: [String]
    let assets: BrowserViewerServer.Assets
    let hub: RendezvousHub
    let iceServers: @Sendable (String) -> [BrowserSignallingStateMachine.IceServer]
    let reports: AsyncStream<BrowserReport>.Continuation
    let logger: Logger

    /// A pipeline under `limits`, with connection slots of its own (per source and in all, from `limits`).
    init(limits: BrowserViewerServer.Limits, names: [String], assets: BrowserViewerServer.Assets, hub: RendezvousHub,
         iceServers: @escaping @Sendable (String) -> [BrowserSignallingStateMachine.IceServer],
         reports: AsyncStream<BrowserReport>.Continuation, logger: Logger) {
        slots = SharedConnectionSlots(maxPerSource: limits.maxConnectionsPerSource, maxTotal: limits.maxConnections)
        self.limits = limits
        self.names = names
        self.assets = assets
        self.hub = hub
        self.iceServers = iceServers
        self.reports = reports
        self.logger = logger
    }

    /// Sets up `channel`'s pipeline (on its event loop), with `tls` first unless its handshake is already done; the
    /// page's origin and policy name the port the connection came in on.
    ///
    /// - Throws: when the source or the server has no connection slot left (the channel is then closed by NIO).
    func configure(_ channel: any Channel, tls: NIOSSLContext?) throws {
        let source = channel.remoteAddress.map(SourceAddressKey.init) ?? .unidentified
        guard slots.admit(source) == nil else { throw NIOCore.ChannelError.inputClosed }
        channel.closeFuture.whenComplete { _ in slots.release(source) }
        let port = channel.localAddress?.port ?? 0
        let origins = BrowserViewerServer.origins(names: names, port: port)
        let connectSources = names.map { "wss://\($0):\(port)" }.joined(separator: " ")
        let (limits, hub, iceServers, reports, logger) = (self.limits, self.hub, self.iceServers, self.reports, self.logger)
        let sync = channel.pipeline.syncOperations
        if let tls { try sync.addHandler(NIOSSLServerHandler(context: tls)) }
        try sync.addHandler(IdleStateHandler(readTimeout: TimeAmount(limits.idleTimeout)))
        try sync.addHandler(CloseOnIdleHandler())
        try sync.addHandler(RequestSizeLimiter(limit: limits.maxRequestBytes), name: RequestSizeLimiter.name)
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: limits.maxMessageBytes, automaticErrorHandling: true,
            shouldUpgrade: { channel, head in
                // Only our own page may signal: a page elsewhere cannot drive a visitor's browser to introduce.
                let origin = head.headers["Origin"].first ?? ""
                guard head.uri == "/signal", origins.contains(origin) else { return channel.eventLoop.makeSucceededFuture(nil) }
                return channel.eventLoop.makeSucceededFuture(HTTPHeaders())
            },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOWebSocketFrameAggregator(
                        minNonFinalFragmentSize: 1, maxAccumulatedFrameCount: 64, maxAccumulatedFrameSize: limits.maxMessageBytes))
                    try sync.addHandler(SignalHandler(hub: hub, source: source, limits: limits.signalling,
                                                      iceServers: iceServers, reports: reports, logger: logger))
                }
            })
        try sync.configureHTTPServerPipeline(withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
            context.pipeline.removeHandler(name: RequestSizeLimiter.name, promise: nil)
            context.pipeline.removeHandler(name: PageHandler.name, promise: nil)
        }))
        try sync.addHandler(PageHandler(assets: assets, connectSources: connectSources), name: PageHandler.name)
    }
}

/// Closes a connection that sends more than `limit` bytes before its WebSocket upgrade (removed at the upgrade).
final class RequestSizeLimiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    /// Its name in the pipeline.
    static let name = "trav.request-limit"
    private let limit: Int
    private var seen = 0

    init(limit: Int) { self.limit = limit }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        seen += unwrapInboundIn(data).readableBytes
        guard seen <= limit else {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
    }
}

/// Serves the page and its script with a strict Content-Security-Policy; every other request gets 404 or 405.
final class PageHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    /// Its name in the pipeline.
    static let name = "trav.pages"
    private let assets: BrowserViewerServer.Assets
    private let policy: String

    init(assets: BrowserViewerServer.Assets, connectSources: String) {
        self.assets = assets
        policy = "default-src 'none'; script-src 'self'; connect-src 'self' \(connectSources); img-src 'self'; style-src 'self'; "
            + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        let (status, type, body): (HTTPResponseStatus, String, String) = switch (head.method, path) {
        case (.GET, "/"): (.ok, "text/html; charset=utf-8", assets.page)
        case (.GET, "/viewer.js"): (.ok, "text/javascript; charset=utf-8", assets.script)
        case (.GET, _): (.notFound, "text/plain; charset=utf-8", "not found\n")
        default: (.methodNotAllowed, "text/plain; charset=utf-8", "method not allowed\n")
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        headers.add(name: "Content-Security-Policy", value: policy)
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        headers.add(name: "Referrer-Policy", value: "no-referrer")
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// One page's WebSocket: text messages and the hub's messages into ``BrowserSignallingStateMachine``, one at a time,
/// in order; the browser is a viewer of the hub (a ``RendezvousPeer`` whose messages come back here).
final class SignalHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    /// What the connection's task handles.
    enum Input: Sendable {
        case page(String)
        case cloud(CloudMessage)
    }

    private let inputs: AsyncStream<Input>
    private let sink: AsyncStream<Input>.Continuation
    private let hub: RendezvousHub
    private let source: SourceAddressKey
    private let limits: BrowserSignallingStateMachine.Limits
    private let iceServers: @Sendable (String) -> [BrowserSignallingStateMachine.IceServer]
    private let reports: AsyncStream<BrowserReport>.Continuation
    private let logger: Logger

    init(hub: RendezvousHub, source: SourceAddressKey, limits: BrowserSignallingStateMachine.Limits,
         iceServers: @escaping @Sendable (String) -> [BrowserSignallingStateMachine.IceServer],
         reports: AsyncStream<BrowserReport>.Continuation, logger: Logger) {
        // Bounded: a page gets few messages through the rate limit, the hub sends a handful per introduction.
        (inputs, sink) = AsyncStream.makeStream(of: Input.self, bufferingPolicy: .bufferingNewest(32))
        self.hub = hub
        self.source = source
        self.limits = limits
        self.iceServers = iceServers
        self.reports = reports
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        let sink = self.sink
        let remote = channel.remoteAddress
        let peer = RendezvousPeer(
            remote: .init(node: "browser", deliver: { message, _ in sink.yield(.cloud(message)) }),
            source: source, observedAddress: remote.map { "\($0)" } ?? "unknown", requesterIP: remote?.ipAddress)
        let (inputs, hub, reports, logger, limits, iceServers) = (self.inputs, self.hub, self.reports, self.logger, self.limits, self.iceServers)
        channel.closeFuture.whenComplete { _ in sink.finish() }
        Task {
            var machine = BrowserSignallingStateMachine(limits: limits, iceServers: iceServers)
            func sendText(_ text: String) {
                channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text)), promise: nil)
            }
            loop: for await input in inputs {
                let actions = switch input {
                case .page(let text): machine.page(text, now: .now) { UUID().uuidString.lowercased() }
                case .cloud(let message): machine.cloud(message)
                }
                for action in actions {
                    switch action {
                    case .send(let text):
                        sendText(text)
                    case .introduce(let requestID, let deviceID, let offer, let answerKey, let deposited):
                        await hub.introduce(from: peer, requestID: requestID, deviceID: deviceID, offer: offer, answerKey: answerKey,
                                            deposited: deposited)
                        if let key = await hub.cameraKey(of: requestID, for: peer) {
                            for case .send(let text) in machine.located(deviceID: deviceID, cameraKey: key) { sendText(text) }
                        }
                    case .locate(let deviceID):
                        if let found = await hub.registeredKey(of: deviceID, for: peer.source) {
                            for case .send(let text) in machine.located(deviceID: deviceID, cameraKey: found.key, deposit: found.deposit) {
                                sendText(text)
                            }
                        }
                    case .forwardProof(let requestID, let sealed):
                        await hub.accessProof(from: peer, requestID: requestID, sealed: sealed)
                    case .report(let report):
                        logger.info("browser report", metadata: ["requestID": "\(report.requestID ?? "")", "path": "\(report.path ?? "")",
                                                                 "decoded": "\(report.decoded ?? 0)", "error": "\(report.error ?? "")"])
                        reports.yield(report)
                    case .close(let code, let reason):
                        SignalHandler.close(channel, code: code, reason: reason)
                        break loop
                    }
                }
            }
            await hub.disconnected(peer, cameraSession: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            sink.yield(.page(String(buffer: frame.unmaskedData)))
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .connectionClose:
            Self.close(context.channel, code: 1000)
        case .binary:
            Self.close(context.channel, code: 1003, reason: "text messages only")
        default:
            break
        }
    }

    /// Sends a close frame with `code` (RFC 6455 §7.4.1) and `reason`, then closes the connection.
    static func close(_ channel: any Channel, code: UInt16, reason: String = "") {
        var data = ByteBuffer()
        data.writeInteger(code)
        data.writeString(String(reason.utf8.prefix(120)) ?? "")
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
