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
/// viewers (introductions). It forwards offers, and answers sealed to the viewer (`SealedAnswer`); it never
/// sees session keys or payload.
///
/// With ``Configuration/sharedRelay`` its one TLS port carries TURN over TLS too, chosen by ALPN:
///
/// ```
///  ClientHello ALPN offer         ──►  gate (ALPNOfferGateHandler)  ──►  TLS handshake  ──►  pipeline
///   none, or "trav/1"                                                                  signalling frames
///   "stun.turn" (RFC 7443 §2)                                                          TURNServer.adoptStream
///   "http/1.1" (servesViewerPage)                                                      the viewer page (BrowserViewerServer)
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
        /// Registrations of keys not yet verified against their UID, per source (IPv4 address or IPv6
        /// /64; each costs the cloud a UID derivation). A key verified before needs no token.
        public var registrationRateLimit: TokenBucketRateLimiter<SourceAddressKey>
        /// Connections open at once (in their TLS handshake, signalling, or handed to the relay), at
        /// most; more are closed on accept.
        public var maxConnections: Int
        /// Connections kept for viewers: registered cameras hold at most `maxConnections - viewerReserve`,
        /// so a cloud full of cameras still serves introductions.
        public var viewerReserve: Int
        /// Connections accepted whose TLS handshake is not done yet, at most; more are closed on accept,
        /// so a reconnect storm queues no more handshakes than finish before their clients give up.
        public var maxPendingHandshakes: Int
        /// Default of ``maxPendingHandshakes``.
        public static let defaultMaxPendingHandshakes = 512
        /// How the UID's scrypt is bounded: threads, queue, retry-after range.
        public var verification: VerificationAdmissionStateMachine.Configuration
        /// Threads set aside for scrypt by default: all cores but one (event loops keep one), at least one.
        public static var defaultVerificationWorkers: Int { max(1, System.coreCount - 1) }
        /// The retry-after a camera gets when the camera places (all but ``viewerReserve``) are taken.
        public var fullRetryAfter: Duration
        /// This node's name in the device store (the node holding a device's session).
        public var nodeName: String
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
        /// Introductions one requester (IPv4 address or IPv6 /64, over all its connections) may have
        /// pending at once; more are refused `overloaded` before the look-up.
        public var maxPendingIntroductionsPerRequester = defaultMaxPendingIntroductionsPerRequester
        /// Default of ``maxPendingIntroductionsPerRequester``: 16.
        public static let defaultMaxPendingIntroductionsPerRequester = 16
        /// Introductions one camera may have pending at once (each costs it sockets and a relay
        /// allocation while it answers); more are answered `unavailable`, as for an unknown UID.
        public var maxPendingIntroductionsPerCamera = defaultMaxPendingIntroductionsPerCamera
        /// Default of ``maxPendingIntroductionsPerCamera``: 16 (about 64 of a camera's descriptors).
        public static let defaultMaxPendingIntroductionsPerCamera = 16
        /// Unexpired relay grants one requester (IPv4 address or IPv6 /64) may hold: a grant is held from
        /// its introduction until it expires, or until the introduction ends without a start; past it,
        /// introductions are refused `overloaded`.
        public var maxRelayGrantsPerRequester = defaultMaxRelayGrantsPerRequester
        /// Default of ``maxRelayGrantsPerRequester``: 32 (with the relay's 10 allocations per grant, 320 of its 10 000).
        public static let defaultMaxRelayGrantsPerRequester = 32
        /// Unexpired relay grants the introductions to one camera may hold; past it, introductions are
        /// answered `unavailable`.
        public var maxRelayGrantsPerCamera = defaultMaxRelayGrantsPerCamera
        /// Default of ``maxRelayGrantsPerCamera``: 64.
        public static let defaultMaxRelayGrantsPerCamera = 64
        /// Deposited one-time keys (`Traversal/AccessDeposit`) kept per registered camera; a camera depositing more
        /// keeps its latest-expiring ones. Each costs about 250 bytes here (its key and signature as base64 text).
        public var maxDepositsPerCamera = defaultMaxDepositsPerCamera
        /// Default of ``maxDepositsPerCamera``: 8 (as many as a camera makes: `Traversal/AccessDepositStock`).
        public static let defaultMaxDepositsPerCamera = 8
        /// Issues relay credentials for each introduction when the cloud runs a relay; `nil`: no relay.
        public var relayGrants: RelayGrantIssuer?
        /// At shutdown every client is told to come back after at least this long (`busy`), so a restart
        /// or a move to another node does not begin with the whole fleet at once.
        public var restartRetryAfter: Duration = .seconds(2)
        /// Cameras per second the shutdown's retry-afters are spread for (over `cameras / restartRate` seconds
        /// after ``restartRetryAfter``): what a node can admit of known cameras (a handshake and a signature each).
        public var restartRate = 2000
        /// UDP presence (`Traversal/PresenceProtocol`): cameras may keep their registration with authenticated
        /// keepalive datagrams and close their TLS connection; nil offers none (every camera keeps TLS).
        public var presence: PresenceStateMachine.Configuration? = .init()
        /// The UDP port of presence; nil: the TLS port's number (over UDP), or any free port if that one is taken.
        public var presencePort: UInt16?
        /// A relay that serves TURN over TLS on this port to clients negotiating ALPN `stun.turn` (RFC 7443 §2);
        /// the grants then name this port (`turns:IP:PORT`) first. `nil`: signalling only.
        public var sharedRelay: TURNServer?
        /// Whether this port also serves the browser viewer page to clients negotiating ALPN `http/1.1` (RFC 7301),
        /// once one is attached (``RendezvousServer/attachViewerPage(_:)``); until then such connections are closed.
        public var servesViewerPage = false

        /// A configuration with the defaults: port 5349, 10 s keepalive, 35 s idle timeout, 10 s
        /// introduction timeout, 20 look-ups then one per 500 ms per source, 10 unverified registrations
        /// then one per 2 s per source, 10 000 connections (256 per source, 5 % kept for viewers, 512
        /// in their TLS handshake, 10 s to authenticate), 8 pending introductions per connection, 10 000 in all.
        public init(
            listenIP: String, port: UInt16 = CloudEndpoint.defaultPort, certificatePath: String, privateKeyPath: String,
            cloudNames: [String]? = nil, keepaliveSeconds: Int = 10, idleTimeout: Duration = .seconds(35),
            introductionTimeout: Duration = .seconds(10),
            lookupRateLimit: TokenBucketRateLimiter<SourceAddressKey> = Self.defaultLookupRateLimit,
            registrationRateLimit: TokenBucketRateLimiter<SourceAddressKey> = .init(capacity: 10, refillInterval: .seconds(2)),
            maxConnections: Int = 10_000, maxConnectionsPerSource: Int = defaultMaxConnectionsPerSource,
            viewerReserve: Int? = nil, maxPendingHandshakes: Int = defaultMaxPendingHandshakes,
            verification: VerificationAdmissionStateMachine.Configuration = .init(workers: defaultVerificationWorkers),
            fullRetryAfter: Duration = .seconds(30), nodeName: String = ProcessInfo.processInfo.hostName,
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
            self.viewerReserve = viewerReserve ?? maxConnections / 20
            self.maxPendingHandshakes = maxPendingHandshakes
            self.verification = verification
            self.fullRetryAfter = fullRetryAfter
            self.nodeName = nodeName
            self.authenticationTimeout = authenticationTimeout
            self.maxPendingIntroductionsPerConnection = maxPendingIntroductionsPerConnection
            self.maxPendingIntroductions = maxPendingIntroductions
        }
    }

    /// The TLS address the server listens on.
    public let address: TransportAddress
    /// Where registrations are kept.
    public let registry: any DeviceRegistry
    /// Where verified key ↔ UID bindings are remembered.
    public let store: any DeviceStore
    /// The relay URLs every grant carries, shared TLS port first (empty without a relay).
    public var relayURLs: [String] { relayGrants?.urls ?? [] }
    /// What signs and renews this server's relay grants; with a relay on the shared TLS port its URLs name that port first.
    let relayGrants: RelayGrantIssuer?
    private let listener: any Channel
    let hub: RendezvousHub
    private let viewerPage: ViewerPageSlot
    private let registrations: RegistrationGate
    private let acceptLoop: Task<Void, Never>
    /// The signalling connections being served.
    private let connections: SignallingConnections
    let presence: PresenceServer?
    private let presenceExpiry: Task<Void, Never>?
    /// Routes introductions between the nodes of a fleet, when the store is shared (`NodeDirectory`).
    private let router: NodeRouter?
    /// Set by the first ``stop()``; later calls return at once.
    private let stopping = Atomic<Bool>(false)
    private let logger: Logger

    private init(
        address: TransportAddress, registry: any DeviceRegistry, relayGrants: RelayGrantIssuer?, listener: any Channel,
        hub: RendezvousHub, viewerPage: ViewerPageSlot, registrations: RegistrationGate, acceptLoop: Task<Void, Never>,
        connections: SignallingConnections, presence: PresenceServer?, presenceExpiry: Task<Void, Never>?, router: NodeRouter?, logger: Logger
    ) {
        self.viewerPage = viewerPage
        self.router = router
        self.presence = presence
        self.presenceExpiry = presenceExpiry
        self.address = address
        self.registry = registry
        self.store = registrations.store
        self.registrations = registrations
        self.relayGrants = relayGrants
        self.listener = listener
        self.hub = hub
        self.acceptLoop = acceptLoop
        self.connections = connections
        self.logger = logger
    }

    /// Serves `page` on this port too, to clients negotiating ALPN `http/1.1`, when the server was started with
    /// ``Configuration/servesViewerPage``.
    public func attachViewerPage(_ page: BrowserViewerServer) {
        viewerPage.server.withLock { $0 = page }
    }

    /// This node's name in the device store.
    public var nodeName: String { registrations.nodeName }

    /// The UDP address of presence, if the server offers it.
    public var presenceAddress: SocketAddress? { presence?.address }
    /// UDP presence sessions held (cameras that registered since, or kept alive within the timeout).
    public var presenceSessions: Int { presence?.count ?? 0 }

    /// Signalling (TLS) connections open now.
    public var signallingConnections: Int { get async { await hub.connectionCount } }
    /// Registered cameras now, and how many of them are present over UDP alone (no TLS connection).
    public var registeredCameras: (all: Int, overUDP: Int) { get async { await hub.cameraCounts } }

    /// UID derivations (scrypt) run so far: one per device whose binding the store did not know.
    public var verifications: Int { registrations.verifier.verifications }

    /// Loads the certificate, binds the TLS port and starts serving; verified bindings are looked up in and added to `store`.
    ///
    /// A `store` that is also a `NodeDirectory` (``PostgresDeviceStore``) makes this server one node of a fleet
    /// named ``Configuration/nodeName``: it holds a lease there, and viewers connected to it reach cameras
    /// registered on the other nodes (`NodeRouter`).
    public static func start(
        _ configuration: Configuration, registry: any DeviceRegistry = InMemoryDeviceRegistry(),
        store: any DeviceStore = InMemoryDeviceStore(),
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
            + (configuration.servesViewerPage ? [ViewerPageSlot.alpnProtocol] : [])
        let viewerPage = ViewerPageSlot()
        tls.applicationProtocols = protocols
        let context = try NIOSSLContext(configuration: tls)
        let idle = TimeAmount(configuration.idleTimeout)
        // The presence server, once started (after the listener: its port may follow the listener's); until then,
        // and without presence, every connection is TLS.
        let presenceSlot = PresenceSlot()
        let authenticationTimeout = TimeAmount(configuration.authenticationTimeout)
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 4096)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // An idle camera's connection is the cloud's per-camera cost: bounded reads, TLS buffers paid per page written.
            .childChannelOption(.recvAllocator, value: SignallingMemory.receiveAllocator)
            .childChannelOption(.allocator, value: SignallingMemory.lazyPagesAllocator)
            .bind(host: configuration.listenIP, port: Int(configuration.port)) { child in
                child.eventLoop.makeCompletedFuture {
                    let decided = child.eventLoop.makePromise(of: NegotiatedConnection.self)
                    // A later completion (the TLS branch's, once decided) is ignored.
                    child.closeFuture.whenComplete { _ in decided.fail(ChannelError.alreadyClosed) }
                    @Sendable func installTLS() throws {
                        // Until the handshake picks a protocol, the signalling idle timeout bounds a silent client.
                        let idleHandler = IdleStateHandler(readTimeout: idle)
                        let closeOnIdle = CloseOnIdleHandler()
                        let negotiation = NIOTypedApplicationProtocolNegotiationHandler<NegotiatedConnection> { result, channel in
                            choosePipeline(result, channel: channel, relay: relay, viewerPage: viewerPage, idleHandlers: (idleHandler, closeOnIdle))
                        }
                        try child.pipeline.syncOperations.addHandlers(
                            ALPNOfferGateHandler(supported: protocols),
                            NIOSSLServerHandler(context: context),
                            idleHandler,
                            closeOnIdle,
                            negotiation)
                        negotiation.protocolNegotiationResult.cascade(to: decided)
                    }
                    try child.pipeline.syncOperations.addHandler(
                        AuthenticationDeadlineHandler(timeout: authenticationTimeout), name: AuthenticationDeadlineHandler.name)
                    if let presence = presenceSlot.server.withLock({ $0 }) {
                        // A camera behind a UDP-blocking network keeps its presence datagrams on a TCP connection to this
                        // port; its first byte tells it from a TLS ClientHello (PresenceStreamSniffer).
                        try child.pipeline.syncOperations.addHandler(PresenceStreamSniffer { isPresence in
                            if isPresence {
                                // The stream has deadlines of its own.
                                child.pipeline.syncOperations.removeHandler(name: AuthenticationDeadlineHandler.name, promise: nil)
                                try presence.adoptStream(child)
                                decided.succeed(.presenceStream)
                            } else {
                                try installTLS()
                            }
                        })
                    } else {
                        try installTLS()
                    }
                    return PendingConnection(channel: child, negotiated: decided.futureResult, acceptedAt: .now)
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
        var presenceServer: PresenceServer?
        if let presenceConfiguration = configuration.presence {
            let port = Int(configuration.presencePort ?? UInt16(address.port))
            do {
                let tickets = await presenceTickets(store: store, logger: logger)
                do {
                    presenceServer = try await PresenceServer.start(
                        host: configuration.listenIP, port: port, configuration: presenceConfiguration, tickets: tickets,
                        logger: logger)
                } catch where configuration.presencePort == nil {
                    presenceServer = try await PresenceServer.start(
                        host: configuration.listenIP, port: 0, configuration: presenceConfiguration, tickets: tickets,
                        logger: logger)
                }
            } catch {
                try? await listener.channel.close()
                throw error
            }
        }
        presenceSlot.server.withLock { $0 = presenceServer }
        let hub = RendezvousHub(configuration: configuration, registry: registry, presence: presenceServer, logger: logger)
        let registrations = RegistrationGate(
            store: store, verifier: KeyBindingVerifier(configuration: configuration.verification),
            nodeName: configuration.nodeName, logger: logger)
        await registrations.releaseSessions()
        let router: NodeRouter?
        if let directory = store as? any NodeDirectory {
            var routing = NodeRoutingStateMachine<RendezvousPeer>.Configuration()
            routing.routeLifetime = configuration.introductionTimeout + .seconds(5)
            routing.maxRoutesPerViewer = configuration.maxPendingIntroductionsPerConnection
            let nodeRouter = NodeRouter(node: configuration.nodeName, directory: directory, routing: routing, logger: logger)
            await nodeRouter.start(hub: hub, store: store) { peer, message in
                await serveRemote(message, from: peer, hub: hub, registrations: registrations, logger: logger)
            }
            router = nodeRouter
        } else {
            router = nil
        }
        let slots = SharedConnectionSlots(maxPerSource: configuration.maxConnectionsPerSource, maxTotal: configuration.maxConnections)
        // Handshakes are counted in all, whatever their source: one shared key.
        let handshakes = SharedConnectionSlots(maxPerSource: configuration.maxPendingHandshakes, maxTotal: configuration.maxPendingHandshakes)
        let served = SignallingConnections()
        let acceptLoop = Task {
            await withDiscardingTaskGroup { group in
                try? await listener.executeThenClose { connections in
                    for try await pending in connections {
                        let source = pending.channel.remoteAddress.map(SourceAddressKey.init) ?? .unidentified
                        // Closed at once, a client retries later (with jitter) instead of waiting for a
                        // handshake that would finish after it gave up.
                        guard handshakes.admit(.unidentified) == nil else {
                            pending.channel.close(promise: nil)
                            continue
                        }
                        guard slots.admit(source) == nil else {
                            handshakes.release(.unidentified)
                            pending.channel.close(promise: nil)
                            continue
                        }
                        pending.negotiated.whenComplete { _ in handshakes.release(.unidentified) }
                        pending.channel.closeFuture.whenComplete { _ in slots.release(source) }
                        group.addTask {
                            // Cancelled at stop: a connection still in its handshake is closed, which ends the wait.
                            let negotiated = try? await withTaskCancellationHandler {
                                let negotiated = try await pending.negotiated.get()
                                guard case .undecided(let later) = negotiated else { return negotiated }
                                return try await later.get()
                            } onCancel: {
                                pending.channel.close(promise: nil)
                            }
                            if case .signalling(let inbox)? = negotiated {
                                served.opened()
                                let acceptedAt = pending.acceptedAt
                                let channel = pending.channel
                                let peer = RendezvousPeer(
                                    channel: channel, source: source,
                                    observedAddress: channel.remoteAddress.flatMap(TransportAddress.init)?.description ?? "unknown")
                                // Each burst of the connection's messages gets a task of its own; an idle connection has none.
                                inbox.start { inbox in
                                    Task {
                                        await drain(
                                            inbox, peer: peer, acceptedAt: acceptedAt, hub: hub, registrations: registrations,
                                            router: router, connections: served, logger: logger)
                                    }
                                }
                            }
                        }
                    }
                }
                group.cancelAll()
            }
        }
        // Housekeeping: expires silent UDP presence sessions (a quarter of the keepalive interval apart, at
        // most 5 s) and records the camera gauges; registers the cameras whose sessions keepalives restored.
        let presence = presenceServer
        let presenceExpiry: Task<Void, Never>? = Task {
            await withTaskGroup(of: Void.self) { tasks in
                tasks.addTask {
                    let period = min((presence?.keepaliveInterval ?? .seconds(20)) / 4, .seconds(5))
                    RendezvousMetrics.cameras((0, 0))
                    while (try? await Task.sleep(for: period)) != nil {
                        for (session, _) in presence?.expire() ?? [] {
                            if let deviceID = await hub.presenceExpired(session) { await registrations.wentOffline(deviceID) }
                        }
                        RendezvousMetrics.cameras(await hub.cameraCounts)
                    }
                }
                if let presence {
                    tasks.addTask {
                        for await restoration in presence.restorations {
                            await restore(restoration, hub: hub, registrations: registrations, presence: presence)
                        }
                    }
                }
            }
        }
        logger.info("rendezvous listening", metadata: ["address": "\(address)"])
        return RendezvousServer(
            address: address, registry: registry, relayGrants: configuration.relayGrants, listener: listener.channel, hub: hub,
            viewerPage: viewerPage,
            registrations: registrations, acceptLoop: acceptLoop, connections: served, presence: presence, presenceExpiry: presenceExpiry, router: router,
            logger: logger)
    }

    /// The tickets presence sessions are issued as, under the store's presence secret (drawn and stored on first
    /// use), so a restarted node takes its cameras' sessions back; a store that cannot answer gives tickets under
    /// a fresh secret (sessions then last as long as this process).
    private static func presenceTickets(store: any DeviceStore, logger: Logger) async -> PresenceTickets {
        let fresh = SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() }
        var encoded = fresh
        do {
            encoded = try await store.secret(.presenceSessions, proposing: fresh)
        } catch {
            logger.warning("device store has no presence secret; sessions will not survive a restart", metadata: ["error": "\(error)"])
        }
        let secret = Data(base64Encoded: encoded).map { SymmetricKey(data: $0) } ?? SymmetricKey(data: Array(encoded.utf8))
        return PresenceTickets(secret: secret)
    }

    /// Registers the camera of a session its keepalive restored: its key from the store (a device the store does not
    /// know loses the session and registers over TLS), present over UDP alone, held by this node.
    private static func restore(
        _ restoration: PresenceRestoration, hub: RendezvousHub, registrations: RegistrationGate, presence: PresenceServer
    ) async {
        let record: DeviceRecord?
        do {
            record = try await registrations.store.record(for: restoration.deviceID)
        } catch {
            registrations.logger.warning("device store look-up failed", metadata: ["error": "\(error)"])
            record = nil
        }
        guard let record,
            await hub.restorePresence(restoration.session, deviceID: restoration.deviceID, publicKey: record.publicKey,
                                      address: restoration.address)
        else {
            presence.close(restoration.session)
            return
        }
        await registrations.registered(restoration.deviceID, publicKey: record.publicKey)
    }

    /// Stops accepting, tells every client when to come back (``Configuration/restartRetryAfter``), closes every
    /// connection and returns when all are closed.
    public func stop() async {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        connections.stop()
        try? await listener.close()
        await hub.closeAll()
        acceptLoop.cancel()
        await acceptLoop.value
        await connections.allClosed()
        await router?.stop()
        presenceExpiry?.cancel()
        await presence?.stop()
        await registrations.verifier.shutdown()
        await registrations.releaseSessions()
        logger.info("rendezvous stopped")
    }

    /// Handles the events queued in a connection's inbox, in order, until none waits (``SignallingInbox``): admits the
    /// connection, handles its messages, and forgets it (and a camera it registered) when it closes.
    private static func drain(
        _ inbox: SignallingInbox, peer: RendezvousPeer, acceptedAt: ContinuousClock.Instant, hub: RendezvousHub,
        registrations: RegistrationGate, router: NodeRouter?, connections: SignallingConnections, logger: Logger
    ) async {
        let channel = inbox.channel
        let deadline = acceptedAt + hub.configuration.authenticationTimeout
        var updated: SignallingInbox.Connection?
        while let (event, current) = inbox.next(storing: updated) {
            var connection = current
            defer { updated = connection }
            switch event {
            case .opened:
                connection.admitted = await hub.connected(peer)
                // A stopping server closes what it admits after its `closeAll`.
                if !connection.admitted || connections.isStopping {
                    connection.finished = true
                    channel.close(promise: nil)
                }
            case .message(let message):
                guard !connection.finished else { continue }
                let wasAuthenticated = connection.state.isAuthenticated
                do {
                    let interception = if let router, connection.state.mayView {
                        await router.intercept(message, from: peer, hub: hub)
                    } else {
                        NodeRouter.Interception.local
                    }
                    if interception == .routed {
                        connection.state = .viewer
                    } else if try await !handle(
                        message, from: peer, state: &connection.state, hub: hub, registrations: registrations,
                        deadline: deadline, lookupAdmitted: interception == .localLookupAdmitted) {
                        connection.finished = true
                        channel.close(promise: nil)
                        continue
                    }
                } catch {
                    connection.finished = true
                    refuse(error, from: peer, logger: logger)
                    continue
                }
                if !wasAuthenticated, connection.state.isAuthenticated {
                    try? await channel.pipeline.removeHandler(name: AuthenticationDeadlineHandler.name).get()
                }
            case .badFrame(let error):
                guard !connection.finished else { continue }
                connection.finished = true
                refuse(error, from: peer, logger: logger)
            case .closed:
                connection.finished = true
                if connection.admitted {
                    connection.admitted = false
                    if case .camera(let session, let deviceID) = connection.state {
                        if await hub.disconnected(peer, cameraSession: session), !connections.isStopping {
                            await registrations.wentOffline(deviceID)
                        }
                    } else {
                        await hub.disconnected(peer, cameraSession: nil)
                        await router?.viewerClosed(peer)
                    }
                }
                connections.closed()
            }
        }
    }

    /// Closes a connection whose message could not be handled: a frame or field that does not decode is answered
    /// `badRequest` first.
    private static func refuse(_ error: any Error, from peer: RendezvousPeer, logger: Logger) {
        guard let error = error as? CloudProtocolError else {
            logger.trace("connection ended", metadata: ["peer": "\(peer.observedAddress)", "error": "\(error)"])
            peer.close()
            return
        }
        logger.debug("bad frame", metadata: ["peer": "\(peer.observedAddress)", "error": "\(error)"])
        peer.close(after: .error(requestID: nil, code: CloudError.Code.badRequest.name, message: "\(error.code)"))
    }

    /// Handles a message of a viewer connected to another node (`NodeRouter`) as if it were connected here.
    private static func serveRemote(
        _ message: CloudMessage, from peer: RendezvousPeer, hub: RendezvousHub, registrations: RegistrationGate, logger: Logger
    ) async {
        var state = RendezvousConnectionState.viewer
        do {
            _ = try await handle(message, from: peer, state: &state, hub: hub, registrations: registrations, deadline: .now)
        } catch {
            logger.debug("bad message from a viewer of another node", metadata: ["peer": "\(peer.observedAddress)", "error": "\(error)"])
            peer.close(after: .error(requestID: nil, code: CloudError.Code.badRequest.name, message: "\(error)"))
        }
    }

    /// Handles one message; false closes the connection.
    private static func handle(
        _ message: CloudMessage, from peer: RendezvousPeer, state: inout RendezvousConnectionState, hub: RendezvousHub,
        registrations: RegistrationGate, deadline: ContinuousClock.Instant, lookupAdmitted: Bool = false
    ) async throws -> Bool {
        func refuse(_ code: CloudError.Code, _ text: String) -> Bool {
            peer.close(after: .error(requestID: nil, code: code.name, message: text))
            return false
        }
        func comeBack(after delay: Duration) -> Bool {
            let milliseconds = min(max(Int(delay / .milliseconds(1)), 1), CloudProtocol.maxRetryAfterMilliseconds)
            peer.close(after: .busy(retryAfterMilliseconds: milliseconds))
            return false
        }
        switch (message, state) {
        case (.ping, _):
            peer.send(.pong)
        case (.pong, _):
            break
        case (.register(let deviceIDText, let publicKey), .fresh):
            let key = try CloudMessage.base64(publicKey, length: CloudProtocol.publicKeyLength, field: "register.publicKey")
            let deviceID = try DeviceID(deviceIDText)
            guard await hub.hasRoomForCamera() else { return comeBack(after: hub.configuration.fullRetryAfter) }
            // Only a key never verified against its UID costs a scrypt, so only those are limited per source.
            let verified = await registrations.isVerified(deviceID, publicKey: key)
            if !verified, await !hub.admitRegistration(from: peer.source) {
                return refuse(.rateLimited, "too many registrations")
            }
            let nonce = Data((0..<CloudProtocol.nonceLength).map { _ in UInt8.random(in: 0...255) })
            state = .challenged(deviceID: deviceID, publicKey: key, nonce: nonce, verified: verified)
            peer.send(.challenge(nonce: nonce.base64EncodedString()))
        case (.prove(let signatureText), .challenged(let deviceID, let keyBytes, let nonce, let verified)):
            let signature = try CloudMessage.base64(signatureText, length: CloudProtocol.signatureLength, field: "prove.signature")
            guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: keyBytes), !key.hasSmallOrder,
                hub.configuration.cloudNames.contains(where: { name in
                    key.isValidSignature(signature, for: CloudProtocol.registrationMessage(
                        nonce: nonce, deviceID: deviceID.description, cloudName: name))
                })
            else {
                return refuse(.unauthorized, "the signature or the key does not prove this device ID")
            }
            if !verified {
                let channel = peer.channel
                switch await registrations.verifier.verify(key, against: deviceID, deadline: deadline, wanted: { channel?.isActive == true }) {
                case .verified(true): break
                case .verified(false): return refuse(.unauthorized, "the signature or the key does not prove this device ID")
                case .retry(let after): return comeBack(after: after)
                case .abandoned: return false
                }
            }
            let grant: PresenceGrant?
            do {
                let registration = try await hub.register(peer, deviceID: deviceID, publicKey: keyBytes)
                state = .camera(session: registration.session, deviceID: deviceID)
                grant = registration.presence
            } catch {
                return refuse(.unauthorized, "the device ID is held by another key")
            }
            await registrations.registered(deviceID, publicKey: keyBytes)
            peer.send(.registered(observedAddress: peer.observedAddress, keepaliveSeconds: hub.configuration.keepaliveSeconds, presence: grant))
            if case .camera(let session, _) = state { await hub.deliverHeldOffers(to: session) }
        case (.introduce(let requestID, let deviceID, let offer, let answerKey), .fresh),
             (.introduce(let requestID, let deviceID, let offer, let answerKey), .viewer):
            state = .viewer
            await hub.introduce(from: peer, requestID: requestID, deviceID: try DeviceID(deviceID), offer: offer, answerKey: answerKey,
                                lookupAdmitted: lookupAdmitted)
        case (.answer(let requestID, let offer, let sealed), .camera(let session, _)):
            await hub.answer(from: session, requestID: requestID, offer: offer, sealed: sealed)
        case (.accessChallenge(let requestID, let challenge), .camera(let session, _)):
            await hub.accessChallenge(from: session, requestID: requestID, challenge: challenge)
        case (.deposit(let deposits), .camera(let session, _)):
            await hub.deposit(from: session, deposits)
        case (.accessProof(let requestID, let sealed), .fresh), (.accessProof(let requestID, let sealed), .viewer):
            await hub.accessProof(from: peer, requestID: requestID, sealed: sealed)
        case (.refuse(let requestID, let reason), .camera(let session, _)):
            await hub.refuse(from: session, requestID: requestID, reason: reason)
        case (.decline(let requestID), .camera(let session, _)):
            await hub.decline(from: session, requestID: requestID)
        case (.renewRelay(let requestID, let grant), .fresh), (.renewRelay(let requestID, let grant), .viewer),
             (.renewRelay(let requestID, let grant), .camera):
            // The grant is its own authority (an HMAC under the relay secret): no registration needed.
            if let renewed = hub.configuration.relayGrants?.renew(grant) {
                peer.send(.relayRenewed(requestID: requestID, relay: renewed))
            } else {
                peer.send(.error(requestID: requestID, code: CloudError.Code.unauthorized.name, message: "relay grant not renewable"))
            }
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
    /// When it was accepted (its authentication deadline counts from here).
    let acceptedAt: ContinuousClock.Instant
}

/// The viewer page a signalling port hands ALPN `http/1.1` connections to, attached after both started.
final class ViewerPageSlot: Sendable {
    /// The ALPN protocol ID of HTTP/1.1 (RFC 7301 §6), what browsers offer beside `h2`.
    static let alpnProtocol = "http/1.1"
    /// The page, once attached.
    let server = Mutex<BrowserViewerServer?>(nil)
}

/// The presence server a signalling port hands presence streams to, set once it started.
final class PresenceSlot: Sendable {
    /// The server, once started.
    let server = Mutex<PresenceServer?>(nil)
}

/// What an accepted connection turned out to carry.
enum NegotiatedConnection: Sendable {
    /// Signalling (ALPN `trav/1`, or none): its events, queued until served.
    case signalling(SignallingInbox)
    /// TURN over TLS, handed to the relay (ALPN `stun.turn`).
    case relayed
    /// A browser's HTTPS, handed to the viewer page (ALPN `http/1.1`).
    case viewerPage
    /// A camera's presence stream (`PresenceServer/adoptStream(_:)`), no TLS: the presence server serves it.
    case presenceStream
    /// No ALPN: which of the others it is follows from its first bytes. (The negotiation handler holds those bytes
    /// until it has its answer, so the answer is this promise of a later one.)
    indirect case undecided(EventLoopFuture<NegotiatedConnection>)
}

/// Sets up the pipeline for the protocol the handshake negotiated; runs on the connection's event loop.
private func choosePipeline(
    _ result: ALPNResult, channel: any Channel, relay: TURNServer?, viewerPage: ViewerPageSlot,
    idleHandlers: (IdleStateHandler, CloseOnIdleHandler)
) -> EventLoopFuture<NegotiatedConnection> {
    do {
        switch result {
        case .negotiated(ViewerPageSlot.alpnProtocol):
            guard let page = viewerPage.server.withLock({ $0 }) else { throw CloudError(code: .badRequest, detail: "no viewer page on this port") }
            // The page's own idle timeout and limits apply from here; a browser never authenticates as a camera would.
            leaveSignallingBounds(channel, idleHandlers: idleHandlers)
            return page.adopt(channel).map { NegotiatedConnection.viewerPage }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }
        case .negotiated(TURNTLS.alpnProtocol):
            guard let relay else { throw CloudError(code: .badRequest, detail: "no relay on this port") }
            return try relayPipeline(channel, relay: relay, idleHandlers: idleHandlers)
        case .negotiated(CloudProtocol.alpnProtocol):
            return channel.eventLoop.makeSucceededFuture(try signallingPipeline(channel))
        case .fallback:
            guard let relay else { return channel.eventLoop.makeSucceededFuture(try signallingPipeline(channel)) }
            // No ALPN: a browser's TURN over TLS offers none (RTCIceServer has no ALPN), nor may an older client's
            // signalling. The first bytes tell them apart (FirstBytesSniffer); until they come, the signalling's idle
            // timeout and authentication deadline still bound the connection.
            let decided = channel.eventLoop.makePromise(of: NegotiatedConnection.self)
            try channel.pipeline.syncOperations.addHandler(FirstBytesSniffer { kind in
                switch kind {
                case .stun:
                    do {
                        let chosen = try relayPipeline(channel, relay: relay, idleHandlers: idleHandlers)
                        chosen.cascade(to: decided)
                        return chosen.map { _ in () }
                    } catch {
                        decided.fail(error)
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                case .other:
                    do {
                        decided.succeed(try signallingPipeline(channel))
                        return channel.eventLoop.makeSucceededVoidFuture()
                    } catch {
                        decided.fail(error)
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                }
            })
            channel.closeFuture.whenComplete { _ in decided.fail(ChannelError.alreadyClosed) }
            return channel.eventLoop.makeSucceededFuture(.undecided(decided.futureResult))
        case .negotiated(let other):
            // The gate lets through only offers naming one of ours, and TLS picks one of ours.
            throw CloudError(code: .badRequest, detail: "unexpected ALPN protocol \(other)")
        }
    } catch {
        channel.close(promise: nil)
        return channel.eventLoop.makeFailedFuture(error)
    }
}

/// Signalling frames on `channel`, queued until the server starts draining them, so nothing the client sends right
/// after its handshake is lost. Runs on the channel's event loop.
private func signallingPipeline(_ channel: any Channel) throws -> NegotiatedConnection {
    let inbox = SignallingInbox(channel: channel)
    try channel.pipeline.syncOperations.addHandlers(
        ByteToMessageHandler(CloudFrameDecoder()), MessageToByteHandler(CloudFrameEncoder()), PingResponder(),
        SignallingInboxHandler(inbox: inbox))
    return .signalling(inbox)
}

/// Hands `channel` to the relay: it has its own, longer idle timeout (allocations live up to an hour) and its own
/// deadline to allocate; it carries media, so it reads the socket as NIO does by default. Runs on the channel's event loop.
private func relayPipeline(_ channel: any Channel, relay: TURNServer,
                           idleHandlers: (IdleStateHandler, CloseOnIdleHandler)) throws -> EventLoopFuture<NegotiatedConnection> {
    try channel.syncOptions?.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator())
    leaveSignallingBounds(channel, idleHandlers: idleHandlers)
    return relay.adoptStream(channel).map { NegotiatedConnection.relayed }.flatMapErrorThrowing { error in
        channel.close(promise: nil)
        throw error
    }
}

/// Removes the signalling's idle timeout and authentication deadline from a connection another service takes over.
private func leaveSignallingBounds(_ channel: any Channel, idleHandlers: (IdleStateHandler, CloseOnIdleHandler)) {
    let sync = channel.pipeline.syncOperations
    sync.removeHandler(idleHandlers.0, promise: nil)
    sync.removeHandler(idleHandlers.1, promise: nil)
    if let deadline = try? sync.context(name: AuthenticationDeadlineHandler.name) {
        sync.removeHandler(context: deadline, promise: nil)
    }
}

/// Tells a STUN/TURN stream from signalling by a connection's first bytes (after TLS), sets up the chosen pipeline
/// behind itself through `choose`, passes on what it held and leaves.
///
/// A signalling frame starts with its 4-byte length, at most `CloudProtocol.maxFrameSize` (64 KiB), so its first two
/// bytes are 0 (a STUN message type never is, RFC 8489 §5) unless the frame is exactly 64 KiB; a STUN message has
/// the magic cookie 0x2112A442 at bytes 4–7 (RFC 8489 §6), where a signalling frame has its JSON's `{`. It holds at
/// most ``decisionBytes`` before deciding.
final class FirstBytesSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// What the first bytes are.
    enum Kind { case stun, other }

    /// Bytes enough to decide (the STUN header up to its magic cookie).
    static let decisionBytes = 8
    private let choose: (Kind) -> EventLoopFuture<Void>
    private var held: ByteBuffer?
    private var deciding = false

    init(choose: @escaping (Kind) -> EventLoopFuture<Void>) { self.choose = choose }

    /// The kind of a connection starting with `bytes`, or nil when more are needed.
    static func kind(of bytes: ByteBuffer) -> Kind? {
        guard let first = bytes.getInteger(at: bytes.readerIndex, as: UInt16.self) else { return nil }
        if first == 0 { return .other }
        guard let cookie = bytes.getInteger(at: bytes.readerIndex + 4, as: UInt32.self) else { return nil }
        return cookie == STUNMessage.magicCookie && first & 0xC000 == 0 ? .stun : .other
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if held == nil { held = bytes } else { held!.writeBuffer(&bytes) }
        guard !deciding, let kind = Self.kind(of: held!) else { return }
        deciding = true
        let sync = context.pipeline.syncOperations
        choose(kind).hop(to: context.eventLoop).assumeIsolated().whenComplete { [self] result in
            guard case .success = result else {
                context.close(promise: nil)
                return
            }
            if let held { context.fireChannelRead(wrapInboundOut(held)) }
            self.held = nil
            sync.removeHandler(self, promise: nil)
        }
    }
}

/// Tells a presence stream from TLS by a connection's first byte: a camera's presence datagram starts with its kind
/// (`keepalive` 1 or `leave` 6, `Traversal/PresenceDatagramKind`), a TLS record with its content type (20–23,
/// RFC 8446 §5.1). It holds the first bytes read, calls `choose` with whether they start a presence stream (which sets
/// up what follows), passes them on and removes itself. A `choose` that throws closes the connection.
final class PresenceStreamSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let choose: (Bool) throws -> Void
    private var decided = false

    init(choose: @escaping (Bool) throws -> Void) { self.choose = choose }

    /// Whether a connection whose first byte is `first` carries presence.
    static func isPresence(_ first: UInt8) -> Bool {
        first == PresenceDatagramKind.keepalive.rawValue || first == PresenceDatagramKind.leave.rawValue
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !decided else { return context.fireChannelRead(data) }
        let bytes = unwrapInboundIn(data)
        guard let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) else { return }
        decided = true
        do {
            try choose(Self.isPresence(first))
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// What a connection has established so far.
enum RendezvousConnectionState {
    /// Nothing yet: it may register (camera) or introduce (viewer).
    case fresh
    /// A camera was challenged and must prove its key; `verified`: the store knows its key ↔ UID binding (no scrypt).
    case challenged(deviceID: DeviceID, publicKey: Data, nonce: Data, verified: Bool)
    /// A registered camera.
    case camera(session: UUID, deviceID: DeviceID)
    /// A viewer.
    case viewer

    /// Whether the connection may ask for devices (nothing yet, or a viewer already).
    var mayView: Bool {
        switch self {
        case .fresh, .viewer: true
        case .challenged, .camera: false
        }
    }

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

/// Answers `ping` with `pong` on the connection's event loop, so liveness never waits behind
/// registrations, look-ups or anything else the connection's task is doing.
final class PingResponder: ChannelInboundHandler, Sendable {
    typealias InboundIn = CloudMessage
    typealias InboundOut = CloudMessage
    typealias OutboundOut = CloudMessage

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .ping = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        context.writeAndFlush(wrapOutboundOut(.pong), promise: nil)
    }
}

/// The registration path's own state: the device store and the verifier of key ↔ UID bindings.
struct RegistrationGate: Sendable {
    /// Verified bindings, remembered across restarts.
    let store: any DeviceStore
    /// Runs the UID's scrypt, bounded.
    let verifier: KeyBindingVerifier
    /// This node's name in the store.
    let nodeName: String
    let logger: Logger

    /// Whether the store knows `publicKey` as verified for `deviceID`; a store error counts as not known.
    func isVerified(_ deviceID: DeviceID, publicKey: Data) async -> Bool {
        do {
            return try await store.isVerified(deviceID, publicKey: publicKey)
        } catch {
            logger.warning("device store look-up failed", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Remembers a proven registration (best effort: a failure costs one scrypt at its next registration).
    func registered(_ deviceID: DeviceID, publicKey: Data) async {
        do {
            try await store.registered(deviceID, publicKey: publicKey, node: nodeName, at: Date())
        } catch {
            logger.warning("device store update failed", metadata: ["error": "\(error)"])
        }
    }

    /// Records that the device's session on this node ended; skipped when the server stops (``releaseSessions()`` covers it).
    func wentOffline(_ deviceID: DeviceID) async {
        guard !Task.isCancelled else { return }
        do {
            try await store.wentOffline(deviceID, node: nodeName, at: Date())
        } catch {
            logger.warning("device store update failed", metadata: ["error": "\(error)"])
        }
    }

    /// Records that this node holds no sessions: at start (after a crash) and at stop.
    func releaseSessions() async {
        do {
            try await store.releaseSessions(of: nodeName, at: Date())
        } catch {
            logger.warning("device store update failed", metadata: ["error": "\(error)"])
        }
    }
}
