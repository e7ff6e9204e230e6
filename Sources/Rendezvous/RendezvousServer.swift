import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SourceLimits
import STUNLite
import Synchronization
import TURNLite
import Traversal

/// The cloud's signalling service: TLS connections from cameras (registration, keepalive) and
/// viewers (introductions). It forwards offers and answers; it never sees session keys or payload.
///
/// With ``Configuration/sharedRelay`` its one TLS port carries TURN over TLS too, chosen by ALPN:
///
/// ```
///  ClientHello ALPN offer         ──►  gate (ALPNOfferGateHandler)  ──►  TLS handshake  ──►  pipeline
///   none, or "trav/1"                                                                  signalling frames
///   "stun.turn" (RFC 7443 §2)                                                          TURNServer.adoptStream
///   only protocols we lack          fatal alert no_application_protocol (RFC 7301 §3.2), closed
/// ```
public final class RendezvousServer: Sendable {
    /// How to run the signalling service.
    public struct Configuration: Sendable {
        /// IP address to listen on.
        public var listenIP: String
        /// TLS port (0 picks a free one).
        public var port: UInt16
        /// PEM file of the server certificate (chain).
        public var certificatePath: String
        /// PEM file of the server's private key.
        public var privateKeyPath: String
        /// Names a camera may sign its registration for (the hosts it may dial: IPs, DNS names).
        public var cloudNames: [String]
        /// Keepalive interval announced to cameras, in seconds.
        public var keepaliveSeconds: Int
        /// A connection that sends nothing for this long is closed (several keepalive intervals).
        public var idleTimeout: Duration
        /// A camera that does not answer an introduction within this long: the viewer gets `timeout`.
        public var introductionTimeout: Duration
        /// Introductions (look-ups) per source (IPv4 address or IPv6 /64): burst and refill.
        public var lookupRateLimit: TokenBucketRateLimiter<SourceAddressKey>
        /// 20 look-ups, then one per 500 ms, per source: enough for a household behind one NAT,
        /// too few to enumerate UIDs.
        public static let defaultLookupRateLimit = TokenBucketRateLimiter<SourceAddressKey>(capacity: 20, refillInterval: .milliseconds(500))
        /// Registration attempts per source (IPv4 address or IPv6 /64; each costs the cloud a UID derivation).
        public var registrationRateLimit: TokenBucketRateLimiter<SourceAddressKey>
        /// Connections open at once (in their TLS handshake, signalling, or handed to the relay), at
        /// most; more are closed on accept.
        public var maxConnections: Int
        /// Connections one source (IPv4 address or IPv6 /64) may hold at once; more are closed on
        /// accept, so one host cannot take every slot.
        public var maxConnectionsPerSource: Int
        /// Default of ``maxConnectionsPerSource``: 256, for a site with many cameras behind one NAT.
        public static let defaultMaxConnectionsPerSource = 256
        /// A connection must finish its TLS handshake and register (a camera, proven) or ask for a
        /// device (a viewer) within this long after it is accepted, else it is closed; keepalives do not extend it.
        public var authenticationTimeout: Duration
        /// Default of ``authenticationTimeout``: 10 s.
        public static let defaultAuthenticationTimeout: Duration = .seconds(10)
        /// Introductions one connection may have pending at once.
        public var maxPendingIntroductionsPerConnection: Int
        /// Introductions pending at once across the server.
        public var maxPendingIntroductions: Int
        /// Issues relay credentials for each introduction when the cloud runs a relay; `nil`: no relay.
        public var relayGrants: RelayGrantIssuer?
        /// A relay that serves TURN over TLS on this port to clients negotiating ALPN `stun.turn` (RFC 7443 §2);
        /// the grants then name this port (`turns:IP:PORT`) first. `nil`: signalling only.
        public var sharedRelay: TURNServer?

        /// A configuration with the defaults: port 5349, 10 s keepalive, 35 s idle timeout, 10 s
        /// introduction timeout, 20 look-ups then one per 500 ms per source, 10 registrations then one
        /// per 2 s per source, 10 000 connections (256 per source, 10 s to authenticate), 8 pending
        /// introductions per connection, 10 000 in all.
        public init(
            listenIP: String, port: UInt16 = CloudEndpoint.defaultPort, certificatePath: String, privateKeyPath: String,
            cloudNames: [String]? = nil, keepaliveSeconds: Int = 10, idleTimeout: Duration = .seconds(35),
            introductionTimeout: Duration = .seconds(10),
            lookupRateLimit: TokenBucketRateLimiter<SourceAddressKey> = Self.defaultLookupRateLimit,
            registrationRateLimit: TokenBucketRateLimiter<SourceAddressKey> = .init(capacity: 10, refillInterval: .seconds(2)),
            maxConnections: Int = 10_000, maxConnectionsPerSource: Int = defaultMaxConnectionsPerSource,
            authenticationTimeout: Duration = defaultAuthenticationTimeout,
            maxPendingIntroductionsPerConnection: Int = 8, maxPendingIntroductions: Int = 10_000
        ) {
            self.listenIP = listenIP
            self.port = port
            self.certificatePath = certificatePath
            self.privateKeyPath = privateKeyPath
            self.cloudNames = cloudNames ?? [listenIP, "localhost"]
            self.keepaliveSeconds = keepaliveSeconds
            self.idleTimeout = idleTimeout
            self.introductionTimeout = introductionTimeout
            self.lookupRateLimit = lookupRateLimit
            self.registrationRateLimit = registrationRateLimit
            self.maxConnections = maxConnections
            self.maxConnectionsPerSource = maxConnectionsPerSource
            self.authenticationTimeout = authenticationTimeout
            self.maxPendingIntroductionsPerConnection = maxPendingIntroductionsPerConnection
            self.maxPendingIntroductions = maxPendingIntroductions
        }
    }

    /// The TLS address the server listens on.
    public let address: TransportAddress
    /// Where registrations are kept.
    public let registry: any DeviceRegistry
    /// The relay URLs every grant carries, shared TLS port first (empty without a relay).
    public let relayURLs: [String]
    private let listener: any Channel
    private let hub: RendezvousHub
    private let acceptLoop: Task<Void, Never>
    private let logger: Logger

    private init(
        address: TransportAddress, registry: any DeviceRegistry, relayURLs: [String], listener: any Channel,
        hub: RendezvousHub, acceptLoop: Task<Void, Never>, logger: Logger
    ) {
        self.address = address
        self.registry = registry
        self.relayURLs = relayURLs
        self.listener = listener
        self.hub = hub
        self.acceptLoop = acceptLoop
        self.logger = logger
    }

    /// Loads the certificate, binds the TLS port and starts serving.
    public static func start(
        _ configuration: Configuration, registry: any DeviceRegistry = InMemoryDeviceRegistry(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "trav.rendezvous")
    ) async throws -> RendezvousServer {
        var configuration = configuration
        let chain = try NIOSSLCertificate.fromPEMFile(configuration.certificatePath)
        let key = try NIOSSLPrivateKey(file: configuration.privateKeyPath, format: .pem)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv12
        let relay = configuration.sharedRelay
        let protocols = [CloudProtocol.alpnProtocol] + (relay == nil ? [] : [TURNTLS.alpnProtocol])
        tls.applicationProtocols = protocols
        let context = try NIOSSLContext(configuration: tls)
        let idle = TimeAmount(configuration.idleTimeout)
        let authenticationTimeout = TimeAmount(configuration.authenticationTimeout)
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: configuration.listenIP, port: Int(configuration.port)) { child in
                child.eventLoop.makeCompletedFuture {
                    // Until the handshake picks a protocol, the signalling idle timeout bounds a silent client.
                    let idleHandler = IdleStateHandler(readTimeout: idle)
                    let closeOnIdle = CloseOnIdleHandler()
                    let negotiation = NIOTypedApplicationProtocolNegotiationHandler<NegotiatedConnection> { result, channel in
                        choosePipeline(result, channel: channel, relay: relay, idleHandlers: (idleHandler, closeOnIdle))
                    }
                    try child.pipeline.syncOperations.addHandler(
                        AuthenticationDeadlineHandler(timeout: authenticationTimeout), name: AuthenticationDeadlineHandler.name)
                    try child.pipeline.syncOperations.addHandlers(
                        ALPNOfferGateHandler(supported: protocols),
                        NIOSSLServerHandler(context: context),
                        idleHandler,
                        closeOnIdle,
                        negotiation)
                    return PendingConnection(channel: child, negotiated: negotiation.protocolNegotiationResult)
                }
            }
        guard let address = listener.channel.localAddress.flatMap(TransportAddress.init) else {
            try? await listener.channel.close()
            throw CloudError(code: .connectionFailed, detail: "the listener has no local address")
        }
        if relay != nil, let grants = configuration.relayGrants {
            configuration.relayGrants = RelayGrantIssuer(
                secret: grants.secret, urls: ["turns:\(address)"] + grants.urls, lifetime: grants.lifetime)
        }
        let hub = RendezvousHub(configuration: configuration, registry: registry, logger: logger)
        let slots = SharedConnectionSlots(maxPerSource: configuration.maxConnectionsPerSource, maxTotal: configuration.maxConnections)
        let acceptLoop = Task {
            await withDiscardingTaskGroup { group in
                try? await listener.executeThenClose { connections in
                    for try await pending in connections {
                        let source = pending.channel.remoteAddress.map(SourceAddressKey.init) ?? .unidentified
                        guard slots.admit(source) == nil else {
                            pending.channel.close(promise: nil)
                            continue
                        }
                        pending.channel.closeFuture.whenComplete { _ in slots.release(source) }
                        group.addTask {
                            // Cancelled at stop: a connection still in its handshake is closed, which ends the wait.
                            let negotiated = try? await withTaskCancellationHandler {
                                try await pending.negotiated.get()
                            } onCancel: {
                                pending.channel.close(promise: nil)
                            }
                            if case .signalling(let connection)? = negotiated {
                                await serve(connection, hub: hub, logger: logger)
                            }
                        }
                    }
                }
                group.cancelAll()
            }
        }
        logger.info("rendezvous listening", metadata: ["address": "\(address)"])
        return RendezvousServer(
            address: address, registry: registry, relayURLs: configuration.relayGrants?.urls ?? [], listener: listener.channel, hub: hub, acceptLoop: acceptLoop, logger: logger)
    }

    /// Stops accepting, closes every connection and returns when all are closed.
    public func stop() async {
        try? await listener.close()
        await hub.closeAll()
        acceptLoop.cancel()
        await acceptLoop.value
        logger.info("rendezvous stopped")
    }

    /// Serves one connection until it closes.
    private static func serve(_ connection: NIOAsyncChannel<CloudMessage, Never>, hub: RendezvousHub, logger: Logger) async {
        let remote = connection.channel.remoteAddress.flatMap(TransportAddress.init)
        let peer = RendezvousPeer(
            channel: connection.channel, source: connection.channel.remoteAddress.map(SourceAddressKey.init) ?? .unidentified,
            observedAddress: remote?.description ?? "unknown")
        guard await hub.connected(peer) else {
            try? await connection.channel.close()
            return
        }
        var state = RendezvousConnectionState.fresh
        do {
            try await connection.executeThenClose { inbound in
                do {
                    for try await message in inbound {
                        let wasAuthenticated = state.isAuthenticated
                        guard try await handle(message, from: peer, state: &state, hub: hub) else { break }
                        if !wasAuthenticated, state.isAuthenticated {
                            try? await connection.channel.pipeline.removeHandler(name: AuthenticationDeadlineHandler.name).get()
                        }
                    }
                } catch let error as CloudProtocolError {
                    logger.debug("bad frame", metadata: ["peer": "\(peer.observedAddress)", "error": "\(error)"])
                    peer.close(after: .error(requestID: nil, code: CloudError.Code.badRequest.name, message: "\(error.code)"))
                }
            }
        } catch {
            logger.trace("connection ended", metadata: ["peer": "\(peer.observedAddress)", "error": "\(error)"])
        }
        if case .camera(let session) = state {
            await hub.disconnected(peer, cameraSession: session)
        } else {
            await hub.disconnected(peer, cameraSession: nil)
        }
    }

    /// Handles one message; false closes the connection.
    private static func handle(
        _ message: CloudMessage, from peer: RendezvousPeer, state: inout RendezvousConnectionState, hub: RendezvousHub
    ) async throws -> Bool {
        func refuse(_ code: CloudError.Code, _ text: String) -> Bool {
            peer.close(after: .error(requestID: nil, code: code.name, message: text))
            return false
        }
        switch (message, state) {
        case (.ping, _):
            peer.send(.pong)
        case (.pong, _):
            break
        case (.register(let deviceID, let publicKey), .fresh):
            guard await hub.admitRegistration(from: peer.source) else {
                return refuse(.rateLimited, "too many registrations")
            }
            let nonce = Data((0..<CloudProtocol.nonceLength).map { _ in UInt8.random(in: 0...255) })
            let key = try CloudMessage.base64(publicKey, length: CloudProtocol.publicKeyLength, field: "register.publicKey")
            state = .challenged(deviceID: try DeviceID(deviceID), publicKey: key, nonce: nonce)
            peer.send(.challenge(nonce: nonce.base64EncodedString()))
        case (.prove(let signatureText), .challenged(let deviceID, let keyBytes, let nonce)):
            let signature = try CloudMessage.base64(signatureText, length: CloudProtocol.signatureLength, field: "prove.signature")
            guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: keyBytes), !key.hasSmallOrder,
                hub.configuration.cloudNames.contains(where: { name in
                    key.isValidSignature(signature, for: CloudProtocol.registrationMessage(
                        nonce: nonce, deviceID: deviceID.description, cloudName: name))
                }),
                DeviceID(publicKey: key) == deviceID
            else {
                return refuse(.unauthorized, "the signature or the key does not prove this device ID")
            }
            do {
                let session = try await hub.register(peer, deviceID: deviceID, publicKey: keyBytes)
                state = .camera(session: session)
            } catch {
                return refuse(.unauthorized, "the device ID is held by another key")
            }
            peer.send(.registered(observedAddress: peer.observedAddress, keepaliveSeconds: hub.configuration.keepaliveSeconds))
        case (.introduce(let requestID, let deviceID, let offer), .fresh), (.introduce(let requestID, let deviceID, let offer), .viewer):
            state = .viewer
            await hub.introduce(from: peer, requestID: requestID, deviceID: try DeviceID(deviceID), offer: offer)
        case (.answer(let requestID, let offer), .camera(let session)):
            await hub.answer(from: session, requestID: requestID, offer: offer)
        case (.decline(let requestID), .camera(let session)):
            await hub.decline(from: session, requestID: requestID)
        default:
            return refuse(.badRequest, "\(message.type) is not expected here")
        }
        return true
    }
}

/// Closes a connection still unauthenticated when its deadline passes (counted from accept); removed
/// once it authenticates, or hands over to a server with its own deadline.
final class AuthenticationDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    /// The handler's name in the pipeline.
    static let name = "authentication-deadline"
    private let timeout: TimeAmount
    private var deadline: Scheduled<Void>?

    /// A deadline `timeout` after the connection is active.
    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    private func arm(_ context: ChannelHandlerContext) {
        guard deadline == nil else { return }
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }
}

/// An accepted connection whose TLS handshake (and so its protocol) may still be under way.
struct PendingConnection: Sendable {
    /// The connection.
    let channel: any Channel
    /// Which protocol it negotiated, once its pipeline is set up.
    let negotiated: EventLoopFuture<NegotiatedConnection>
}

/// What an accepted connection turned out to carry.
enum NegotiatedConnection: Sendable {
    /// Signalling (ALPN `trav/1`, or none).
    case signalling(NIOAsyncChannel<CloudMessage, Never>)
    /// TURN over TLS, handed to the relay (ALPN `stun.turn`).
    case relayed
}

/// Sets up the pipeline for the protocol the handshake negotiated; runs on the connection's event loop.
private func choosePipeline(
    _ result: ALPNResult, channel: any Channel, relay: TURNServer?, idleHandlers: (IdleStateHandler, CloseOnIdleHandler)
) -> EventLoopFuture<NegotiatedConnection> {
    do {
        let sync = channel.pipeline.syncOperations
        switch result {
        case .negotiated(TURNTLS.alpnProtocol):
            guard let relay else { throw CloudError(code: .badRequest, detail: "no relay on this port") }
            // The relay has its own, longer idle timeout (allocations live up to an hour) and its own
            // deadline to allocate.
            sync.removeHandler(idleHandlers.0, promise: nil)
            sync.removeHandler(idleHandlers.1, promise: nil)
            if let deadline = try? sync.context(name: AuthenticationDeadlineHandler.name) {
                sync.removeHandler(context: deadline, promise: nil)
            }
            return relay.adoptStream(channel).map { NegotiatedConnection.relayed }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }
        case .negotiated(CloudProtocol.alpnProtocol), .fallback:
            try sync.addHandlers(ByteToMessageHandler(CloudFrameDecoder()), MessageToByteHandler(CloudFrameEncoder()))
            let connection = try NIOAsyncChannel<CloudMessage, Never>(wrappingChannelSynchronously: channel)
            return channel.eventLoop.makeSucceededFuture(.signalling(connection))
        case .negotiated(let other):
            // The gate lets through only offers naming one of ours, and TLS picks one of ours.
            throw CloudError(code: .badRequest, detail: "unexpected ALPN protocol \(other)")
        }
    } catch {
        channel.close(promise: nil)
        return channel.eventLoop.makeFailedFuture(error)
    }
}

/// What a connection has established so far.
enum RendezvousConnectionState {
    /// Nothing yet: it may register (camera) or introduce (viewer).
    case fresh
    /// A camera was challenged and must prove its key.
    case challenged(deviceID: DeviceID, publicKey: Data, nonce: Data)
    /// A registered camera.
    case camera(session: UUID)
    /// A viewer.
    case viewer

    /// Whether the connection did what it came for (a proven camera, or a viewer that asked for a
    /// device), which ends its authentication deadline.
    var isAuthenticated: Bool {
        switch self {
        case .camera, .viewer: true
        case .fresh, .challenged: false
        }
    }
}

/// Closes a connection when `IdleStateHandler` reports no reads for the idle timeout.
final class CloseOnIdleHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}
