import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SourceLimits
import Synchronization

/// Where the cloud's signalling service listens and how to trust its TLS certificate.
public struct CloudEndpoint: Sendable, Hashable {
    /// How the client decides to trust the cloud's certificate.
    public enum Trust: Sendable, Hashable {
        /// Only certificates issued by this CA (PEM text), e.g. the `ca.pem` that `trav cloud` writes.
        case pinnedCA(String)
        /// The operating system's trust store.
        case systemDefault
    }

    /// The signalling port `trav cloud` listens on by default (the TURN-over-TLS port, RFC 8656 §4).
    public static let defaultPort: UInt16 = 5349

    /// Host name or IP address; the certificate must name it.
    public var host: String
    /// TCP port.
    public var port: UInt16
    /// Which certificates to trust.
    public var trust: Trust
    /// The name a camera's registration signature binds to (the host it dialled, by default).
    public var cloudName: String

    /// An endpoint; `cloudName` defaults to `host`.
    public init(host: String, port: UInt16 = CloudEndpoint.defaultPort, trust: Trust, cloudName: String? = nil) {
        self.host = host
        self.port = port
        self.trust = trust
        self.cloudName = cloudName ?? host
    }
}

/// Connects cameras and viewers to the cloud's signalling service (`trav cloud`) over TLS.
public enum CloudClient {
    /// How often a camera pings the cloud (the cloud may ask for less); well under common 30 s NAT timeouts.
    public static let keepaliveInterval: Duration = .seconds(10)
    /// A camera whose connection carried nothing for this long treats it as lost and reconnects.
    public static let livenessTimeout: Duration = .seconds(25)
    /// Ceiling of the first wait before reconnecting after a lost connection; doubles on each failure.
    public static let reconnectInitialDelay: Duration = .milliseconds(250)
    /// Ceiling of the wait between reconnection attempts (each wait is drawn below its ceiling: ``ReconnectBackoff``).
    public static let reconnectMaxDelay: Duration = .seconds(10)
    /// Longest a TCP connect, and then the TLS handshake, may each take.
    public static let connectTimeout: Duration = .seconds(10)
    /// Longest the registration exchange, or the wait for `start` after an answer, may take.
    public static let requestTimeout: Duration = .seconds(10)
    /// Longest a viewer waits for an introduction (above the cloud's own introduction timeout).
    public static let introduceTimeout: Duration = .seconds(15)
    /// With UDP presence confirmed, a camera closes its TLS connection once no introduction has come or
    /// been answered for this long (an offer unanswered by then is useless: the cloud times it out at 10 s).
    public static let presenceLinger: Duration = .seconds(10)

    /// Registers `identity` with the cloud (challenge-response) and keeps it registered: keepalives
    /// every ``keepaliveInterval``, and after a lost connection reconnection with exponential
    /// backoff and full jitter (``ReconnectBackoff``: ``reconnectInitialDelay`` to ``reconnectMaxDelay``)
    /// and re-registration. A cloud answering `busy` is tried again after the time it asked for, not sooner.
    /// `onRegistered` is called with the observed address after each (re-)registration.
    ///
    /// When the cloud grants UDP presence (``PresenceProtocol``) and its keepalives are answered, the
    /// camera closes its TLS connection after `presenceLinger` (``presenceLinger`` by default) without introductions and stays
    /// registered over UDP; a wake brings it back on TLS at once, lost acks after a backoff. Where UDP
    /// is blocked, the probes go unanswered and the same keepalives go on a presence stream (TCP to the signalling
    /// port) instead, which the camera then keeps in place of TLS. `onPresence` is called with the path when the
    /// camera drops TLS for presence, nil when it is back on TLS. The linger
    /// applies to the first registration and to the one after a wake; after a lost presence (a restarted
    /// cloud answers `unknownSession`), a `goAway` or a lost connection no viewer waits, and TLS closes as
    /// soon as the new presence is confirmed.
    ///
    /// A camera holds one socket, and two (its TLS connection and its UDP socket) while it registers with
    /// UDP presence; after a cloud restart every camera of a process registers again at about the same
    /// time, so a process hosting N cameras needs 2·N open files plus its own. On Linux running out of open
    /// files is fatal to any Swift process, not only to a failing `socket()`: libdispatch's worker monitor
    /// traps when it cannot open `/proc/<tid>/stat`.
    ///
    /// A cloud of several nodes (`trav cloud --database`) is given as `endpoint` and `fallbacks`: the camera stays on
    /// one node while it serves, and moves to the next in the list (round robin) whenever its connection or its
    /// UDP presence is lost or a connection attempt fails; the first registration tries each node once.
    /// `deviceID`, when given, is the identity's UID already derived (spares the camera a scrypt; the cloud checks it).
    /// With `accessDeposits`, for a camera that answers browsers, the camera deposits one-time keys with the cloud after
    /// each registration (``AccessDeposit``, kept under those limits), so a browser proves access with its first message;
    /// without (the default), browsers and native viewers prove to a live challenge, and registrations cost no signatures.
    ///
    /// - Throws: ``CloudError`` if the first registration fails (`.tlsFailed`, `.unauthorized`,
    ///   `.connectionFailed`, …) on every node; `CancellationError` if cancelled.
    public static func camera(
        identity: DeviceIdentity, deviceID: DeviceID? = nil, endpoint: CloudEndpoint, fallbacks: [CloudEndpoint] = [],
        logger: Logger = Logger(label: "trav.cloud-client"),
        usePresence: Bool = true, presenceLinger: Duration = CloudClient.presenceLinger,
        accessDeposits: AccessDepositStock.Limits? = nil,
        onRegistered: @escaping @Sendable (_ observedAddress: String) -> Void = { _ in },
        onPresence: @escaping @Sendable (_ path: PresencePath?) -> Void = { _ in }
    ) async throws -> some CameraSignalling {
        let session = CloudCameraSession(
            identity: identity, deviceID: deviceID, endpoint: endpoint, fallbacks: fallbacks, logger: logger, usePresence: usePresence,
            presenceLinger: presenceLinger, accessDeposits: accessDeposits,
            onRegistered: onRegistered, onPresence: onPresence)
        try await session.start()
        return session
    }

    /// A viewer's signalling client; each introduction uses its own short TLS connection.
    public static func viewer(
        endpoint: CloudEndpoint, logger: Logger = Logger(label: "trav.cloud-client")
    ) -> some ViewerSignalling {
        CloudViewerClient(endpoint: endpoint, logger: logger)
    }

    /// TCP connects a viewer's introduction makes at most, one each ``connectRepeatDelay`` while none has
    /// connected: an introduction is on the connection's critical path and TCP repeats a lost SYN only after
    /// 1 s (RFC 6298 §2.1). Cameras connect once (a fleet reconnecting together must not double its SYNs).
    static let viewerConnectAttempts = 3
    /// See ``viewerConnectAttempts`` (RFC 8305 §5's connection attempt delay).
    static let connectRepeatDelay: Duration = .milliseconds(250)

    /// Opens a TLS connection to `endpoint` with the signalling codec in its pipeline, offering
    /// `applicationProtocols` by ALPN (RFC 7301 §3.1; the cloud's port also carries TURN), from
    /// `localAddress` if given; with `attempts` above 1 (and no local address), another TCP connect each
    /// ``connectRepeatDelay`` while none has connected, the first connected one kept.
    static func connect(
        to endpoint: CloudEndpoint, applicationProtocols: [String] = [CloudProtocol.alpnProtocol],
        from localAddress: SocketAddress? = nil, attempts: Int = 1,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> NIOAsyncChannel<CloudMessage, Never> {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.certificateVerification = .fullVerification
        tls.applicationProtocols = applicationProtocols
        switch endpoint.trust {
        case .systemDefault:
            tls.trustRoots = .default
        case .pinnedCA(let pem):
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)))
            } catch {
                throw CloudError(code: .tlsFailed, detail: "the pinned CA is not a PEM certificate")
            }
        }
        let context = try NIOSSLContext(configuration: tls)
        // An IP literal is not sent as SNI; NIOSSL then checks the certificate against the peer's IP.
        let isIPLiteral = (try? SocketAddress(ipAddress: endpoint.host, port: 0)) != nil
        let serverHostname = isIPLiteral ? nil : endpoint.host
        let deadline = ContinuousClock.now + connectTimeout
        do {
            let (connection, handshake) = try await repeatingWhileUnresolved(until: deadline, enabled: attempts > 1) {
                // A round after an unresolved one connects for what is left of the first round's time.
                let timeout = TimeAmount(deadline - ContinuousClock.now)
                return try await firstSuccess(
                    ofAttempts: localAddress == nil ? attempts : 1, every: connectRepeatDelay,
                    discard: { try? await $0.0.channel.close() }
                ) { _ in
                    var bootstrap = ClientBootstrap(group: group)
                    if let localAddress { bootstrap = bootstrap.bind(to: localAddress) }
                    return try await bootstrap
                        .connectTimeout(timeout)
                        .channelOption(.socketOption(.tcp_nodelay), value: 1)
                        .connect(host: endpoint.host, port: Int(endpoint.port)) { channel in
                            channel.eventLoop.makeCompletedFuture {
                                let handshake = channel.eventLoop.makePromise(of: Void.self)
                                try channel.pipeline.syncOperations.addHandlers(
                                    try NIOSSLClientHandler(context: context, serverHostname: serverHostname),
                                    TLSHandshakeWaiter(handshake),
                                    ByteToMessageHandler(CloudFrameDecoder()),
                                    MessageToByteHandler(CloudFrameEncoder()))
                                let connection = try NIOAsyncChannel<CloudMessage, Never>(wrappingChannelSynchronously: channel)
                                return (connection, handshake.futureResult)
                            }
                        }
                }
            }
            let watchdog = closeUnlessCancelled(connection.channel, after: connectTimeout)
            defer { watchdog.cancel() }
            do {
                try await handshake.get()
            } catch {
                try? await connection.channel.close()
                throw error
            }
            return connection
        } catch {
            throw classify(error, during: "connect to \(endpoint.host):\(endpoint.port)")
        }
    }

    /// Runs `round` again while it fails only because the next hop did not answer address resolution
    /// (`EHOSTUNREACH`: ARP, RFC 826, or neighbor discovery, RFC 4861 §7.3.3, gave up after its probes,
    /// which a lossy line does now and then) and `deadline` is more than ``connectRepeatDelay`` away, pausing
    /// that long between rounds; once, if not `enabled`. The kernel resolves the address afresh for the next round's SYN.
    static func repeatingWhileUnresolved<T>(
        until deadline: ContinuousClock.Instant, enabled: Bool, _ round: () async throws -> T
    ) async throws -> T {
        while true {
            do {
                return try await round()
            } catch where enabled && isUnresolvedNextHop(error) && ContinuousClock.now + connectRepeatDelay < deadline {
                try await Task.sleep(for: connectRepeatDelay)
            }
        }
    }

    /// Whether `error` is a connect that failed with `EHOSTUNREACH`, alone or as every failure of NIO's
    /// connection attempts.
    static func isUnresolvedNextHop(_ error: any Error) -> Bool {
        switch error {
        case let error as IOError: return error.errnoCode == EHOSTUNREACH
        case let error as NIOConnectionError: return areUnresolvedNextHops(error.connectionErrors.map(\.error))
        default: return false
        }
    }

    /// Whether every one of `errors` (the failures of NIO's connection attempts to one host) is an unresolved next
    /// hop; false for none.
    static func areUnresolvedNextHops(_ errors: [any Error]) -> Bool {
        !errors.isEmpty && errors.allSatisfy { isUnresolvedNextHop($0) }
    }

    /// Maps a transport error to a ``CloudError``; `CancellationError` and ``CloudError`` pass through.
    static func classify(_ error: any Error, during activity: String) -> any Error {
        switch error {
        case is CancellationError, is CloudError, is TraversalError: return error
        case let error as CloudProtocolError:
            return CloudError(code: .protocolViolation, detail: "\(activity): \(error)")
        case is NIOSSLError, is NIOSSLExtraError, is BoringSSLError:
            if case .uncleanShutdown? = error as? NIOSSLError {
                return CloudError(code: .connectionFailed, detail: "\(activity): connection closed")
            }
            return CloudError(code: .tlsFailed, detail: "\(activity): \(error)")
        default:
            return CloudError(code: .connectionFailed, detail: "\(activity): \(error)")
        }
    }

    /// Sends `message` on `channel`, mapping failures to ``CloudError``.
    static func send(_ message: CloudMessage, on channel: any Channel) async throws {
        do {
            try await channel.writeAndFlush(message)
        } catch {
            throw classify(error, during: "send \(message.type)")
        }
    }
}

/// Completes a promise when the TLS handshake finishes, or fails it with the handshake's error.
final class TLSHandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private var promise: EventLoopPromise<Void>?

    init(_ promise: EventLoopPromise<Void>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted? = event as? TLSUserEvent {
            promise?.succeed()
            promise = nil
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise?.fail(error)
        promise = nil
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(CloudError(code: .connectionFailed, detail: "closed before the TLS handshake finished"))
        promise = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        promise?.fail(CloudError(code: .connectionFailed, detail: "closed before the TLS handshake finished"))
        promise = nil
    }
}

/// Closes `channel` unless cancelled within `timeout`: bounds a wait on the channel's inbound stream.
func closeUnlessCancelled(_ channel: any Channel, after timeout: Duration) -> Task<Void, Never> {
    Task {
        guard (try? await Task.sleep(for: timeout)) != nil else { return }
        channel.close(promise: nil)
    }
}

/// A camera's registration with the cloud, kept alive and re-established across reconnects.
actor CloudCameraSession: CameraSignalling {
    nonisolated let introductions: AsyncStream<any IncomingIntroduction>
    private let sink: AsyncStream<any IncomingIntroduction>.Continuation
    nonisolated let connectionEvents: AsyncStream<CloudConnectionEvent>
    private let eventSink: AsyncStream<CloudConnectionEvent>.Continuation
    /// A lost registration was reported and no re-registration since.
    private var lostReported = false
    private let identity: DeviceIdentity
    private let deviceID: DeviceID
    /// The cloud's nodes: the first, then the others in turn after each loss.
    private let endpoints: [CloudEndpoint]
    /// The node in use.
    private var endpointIndex = 0
    private var endpoint: CloudEndpoint { endpoints[endpointIndex] }
    private let logger: Logger
    private var observed: String?
    private var channel: (any Channel)?
    private var lastReceived = ContinuousClock.now
    private var registeredThisConnection = false
    private var starts = StartHandoffStateMachine<CheckedContinuation<Void, any Error>>(timeout: CloudClient.requestTimeout)
    private var waitingForRenewal: [String: CheckedContinuation<RelayGrant, any Error>] = [:]
    /// Introductions whose access challenge is out, waiting for the viewer's sealed proof.
    private var waitingForProof: [String: CheckedContinuation<String, any Error>] = [:]
    private var firstRegistration: CheckedContinuation<Void, any Error>?
    private var maintenance: Task<Void, Never>?
    private var stopped = false
    private let onRegistered: @Sendable (String) -> Void
    private let onPresence: @Sendable (PresencePath?) -> Void
    /// Whether to use a UDP presence grant at all.
    private let usePresence: Bool
    /// The UDP presence of the current registration, if the cloud granted one.
    private var presence: Task<CameraPresenceLink.Outcome, any Error>?
    /// Whether the presence's keepalives are answered.
    private var presenceConfirmed = false
    /// The path the confirmed presence uses.
    private var presencePath = PresencePath.datagram
    /// Counts presences started, so a stale one's end changes nothing.
    private var presenceGeneration = 0
    /// Whether this side closed TLS to stay present over UDP.
    private var droppedTLS = false
    /// The last introduction activity (registration for a viewer, offer, answer) on the TLS connection; nil: none.
    private var lastActivity: ContinuousClock.Instant?
    /// Whether the next registration may have a viewer waiting (the first one, and the one after a wake), so
    /// TLS stays for the linger; after a lost presence or connection (a cloud restart) none waits, and TLS
    /// closes as soon as the new presence is confirmed: a fleet coming back holds few connections at once.
    private var registrationAwaitsViewer = true
    /// How long TLS stays without introductions before it is dropped for UDP presence.
    private let presenceLinger: Duration
    /// One-time keys deposited with the cloud for browsers' proofs (``AccessDeposit``), kept across reconnections
    /// and UDP presence so a key a page took while the camera slept still opens its proof after the wake; nil: none.
    private var deposits: AccessDepositStock?

    /// A session for `identity`; `deviceID`, when given, stands for its UID (spares the scrypt; the cloud checks it).
    init(
        identity: DeviceIdentity, deviceID: DeviceID? = nil, endpoint: CloudEndpoint, fallbacks: [CloudEndpoint] = [], logger: Logger,
        usePresence: Bool = true,
        presenceLinger: Duration = CloudClient.presenceLinger, accessDeposits: AccessDepositStock.Limits? = nil,
        onRegistered: @escaping @Sendable (String) -> Void = { _ in }, onPresence: @escaping @Sendable (PresencePath?) -> Void = { _ in }
    ) {
        self.usePresence = usePresence
        self.deposits = accessDeposits.map { AccessDepositStock(limits: $0) }
        self.presenceLinger = presenceLinger
        self.onPresence = onPresence
        self.identity = identity
        self.deviceID = deviceID ?? identity.deviceID
        self.endpoints = [endpoint] + fallbacks
        self.logger = logger
        self.onRegistered = onRegistered
        let (stream, continuation) = AsyncStream.makeStream(of: (any IncomingIntroduction).self)
        introductions = stream
        sink = continuation
        (connectionEvents, eventSink) = AsyncStream.makeStream(
            of: CloudConnectionEvent.self, bufferingPolicy: .bufferingNewest(CloudConnectionEvent.bufferLimit))
    }

    var observedAddress: String? { observed }

    /// Registers for the first time and starts the maintenance loop.
    func start() async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                if stopped {
                    continuation.resume(throwing: CancellationError())
                    return
                }
                firstRegistration = continuation
                maintenance = Task { await self.maintain() }
            }
        } onCancel: {
            Task { await self.stop() }
        }
    }

    func stop() async {
        guard !stopped else { return }
        stopped = true
        maintenance?.cancel()
        presence?.cancel()
        channel?.close(promise: nil)
        firstRegistration?.resume(throwing: CancellationError())
        firstRegistration = nil
        failWaiters(CloudError(code: .connectionFailed, detail: "registration stopped"))
        sink.finish()
        eventSink.finish()
    }

    /// Connects, registers and serves until stopped; reconnects with jittered exponential backoff,
    /// or after the retry-after of a busy cloud.
    private func maintain() async {
        var backoff = ReconnectBackoff()
        while !stopped && !Task.isCancelled {
            var retryAfter: Duration?
            do {
                try await runConnection()
            } catch {
                let error = CloudClient.classify(error, during: "cloud session")
                retryAfter = (error as? CloudError)?.retryAfter
                if retryAfter == nil, endpointIndex == endpoints.count - 1, let first = firstRegistration {
                    firstRegistration = nil
                    first.resume(throwing: error)
                    stopped = true
                    sink.finish()
                    eventSink.finish()
                    return
                }
                if !stopped && !droppedTLS { logger.warning("cloud connection lost", metadata: ["error": "\(error)"]) }
                // A TLS connection closed on purpose for UDP presence is not a lost cloud.
                if !stopped, registeredThisConnection, !droppedTLS {
                    lostReported = true
                    eventSink.yield(.lost(reason: "\(error)"))
                }
            }
            if !stopped, registeredThisConnection, !lostReported, !droppedTLS {
                // The cloud closed a registered connection without an error.
                lostReported = true
                eventSink.yield(.lost(reason: "the cloud closed the connection"))
            }
            channel = nil
            failWaiters(CloudError(code: .connectionFailed, detail: "connection to the cloud lost"))
            if registeredThisConnection {
                backoff.reset()
                registeredThisConnection = false
            }
            if droppedTLS, let presence {
                droppedTLS = false
                let outcome = try? await withTaskCancellationHandler { try await presence.value } onCancel: { presence.cancel() }
                onPresence(nil)
                if outcome == .wake {
                    logger.debug("woken over UDP presence")
                    registrationAwaitsViewer = true
                    continue
                }
                if case .goAway(let delay)? = outcome {
                    // The cloud shuts down gracefully: come back when it says (to the next node, if several).
                    retryAfter = delay
                }
                logger.info("UDP presence lost", metadata: ["outcome": "\(outcome.map { "\($0)" } ?? "ended")"])
                if !stopped, !lostReported {
                    lostReported = true
                    eventSink.yield(.lost(reason: retryAfter == nil ? "UDP presence lost" : "the cloud shuts down (UDP presence goAway)"))
                }
            }
            registrationAwaitsViewer = false
            endpointIndex = (endpointIndex + 1) % endpoints.count
            let delay = retryAfter.map { ReconnectBackoff.obeying(retryAfter: $0) } ?? backoff.nextDelay()
            guard !stopped, (try? await Task.sleep(for: delay)) != nil else { break }
        }
        sink.finish()
        eventSink.finish()
    }

    /// One connection: register, then serve messages and keepalives until it closes.
    private func runConnection() async throws {
        let connection = try await CloudClient.connect(to: endpoint)
        guard !stopped else {
            try? await connection.channel.close()
            return
        }
        channel = connection.channel
        lastReceived = .now
        let channel = connection.channel
        try await connection.executeThenClose { inbound in
            var messages = inbound.makeAsyncIterator()
            let (keepalive, grant) = try await register(on: channel, messages: &messages)
            let interval = min(CloudClient.keepaliveInterval, keepalive)
            await depositAfterRegistration(on: channel)
            await startPresence(grant)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await self.keepAlive(channel, every: interval) }
                if grant != nil && usePresence { group.addTask { try await self.dropTLSWhenIdle(channel) } }
                defer { group.cancelAll() }
                while let message = try await messages.next(isolation: self) {
                    lastReceived = .now
                    try await handle(message, on: channel)
                }
            }
        }
    }

    /// Starts the UDP presence of a new registration, once any earlier one has ended and closed its socket (a
    /// camera holds at most one UDP socket, and one TLS connection, at any time).
    private func startPresence(_ grant: PresenceGrant?) async {
        presenceConfirmed = false
        presenceGeneration += 1
        if let previous = presence {
            presence = nil
            previous.cancel()
            _ = try? await previous.value
        }
        lastActivity = registrationAwaitsViewer ? .now : nil
        guard usePresence, let grant, !stopped else { return }
        let host = endpoint.host
        // Where UDP does not get through, the same datagrams go on a stream to the signalling port (reachable: the
        // registration just came through it).
        let streamPort = Int(endpoint.port)
        let generation = presenceGeneration
        presence = Task {
            do {
                let outcome = try await CameraPresenceLink.run(grant: grant, host: host, streamPort: streamPort) { path in
                    await self.confirmPresence(generation, on: path)
                }
                self.presenceEnded(generation)
                return outcome
            } catch {
                self.presenceEnded(generation)
                throw error
            }
        }
    }

    private func confirmPresence(_ generation: Int, on path: PresencePath) {
        guard generation == presenceGeneration else { return }
        presenceConfirmed = true
        presencePath = path
        logger.debug("presence confirmed", metadata: ["path": "\(path)"])
        // No linger to wait for (no viewer may be waiting, or it passed already): TLS closes now.
        if mayDropTLS() { channel?.close(promise: nil) }
    }

    private func presenceEnded(_ generation: Int) {
        if generation == presenceGeneration { presenceConfirmed = false }
    }

    /// Closes the TLS connection once UDP presence is confirmed and no introduction is in flight for
    /// ``presenceLinger`` (``CloudClient/presenceLinger`` by default).
    private nonisolated func dropTLSWhenIdle(_ channel: any Channel) async throws {
        while true {
            try await Task.sleep(for: .seconds(1))
            if await mayDropTLS() {
                channel.close(promise: nil)
                return
            }
        }
    }

    private func mayDropTLS() -> Bool {
        guard presenceConfirmed, !droppedTLS, channel != nil, starts.count == 0, waitingForRenewal.isEmpty, waitingForProof.isEmpty,
            lastActivity.map({ ContinuousClock.now - $0 >= presenceLinger }) ?? true
        else { return false }
        droppedTLS = true
        onPresence(presencePath)
        logger.info(presencePath == .stream ? "present over a presence stream; TLS closed" : "present over UDP; TLS closed",
                    metadata: ["device": "\(deviceID)"])
        return true
    }

    /// The challenge-response registration; returns the keepalive interval the cloud asked for and its presence grant.
    private func register(
        on channel: any Channel, messages: inout NIOAsyncChannelInboundStream<CloudMessage>.AsyncIterator
    ) async throws -> (Duration, PresenceGrant?) {
        let watchdog = closeUnlessCancelled(channel, after: CloudClient.requestTimeout)
        defer { watchdog.cancel() }
        let key = identity.publicKey.rawRepresentation
        try await CloudClient.send(
            .register(deviceID: deviceID.description, publicKey: key.base64EncodedString()), on: channel)
        guard case .challenge(let nonceText)? = try await nextReply(&messages) else {
            throw CloudError(code: .protocolViolation, detail: "expected challenge")
        }
        let nonce = try CloudMessage.base64(nonceText, length: CloudProtocol.nonceLength, field: "challenge.nonce")
        let signature = try identity.signature(
            for: CloudProtocol.registrationMessage(
                nonce: nonce, deviceID: deviceID.description, cloudName: endpoint.cloudName))
        try await CloudClient.send(.prove(signature: signature.base64EncodedString()), on: channel)
        guard case .registered(let observedAddress, let keepaliveSeconds, let grant)? = try await nextReply(&messages) else {
            throw CloudError(code: .protocolViolation, detail: "expected registered")
        }
        observed = observedAddress
        registeredThisConnection = true
        onRegistered(observedAddress)
        if lostReported {
            lostReported = false
            eventSink.yield(.back(observedAddress: observedAddress))
        }
        logger.info("registered with the cloud", metadata: [
            "device": "\(deviceID)", "observed": "\(observedAddress)"])
        if let first = firstRegistration {
            firstRegistration = nil
            first.resume()
        }
        return (.seconds(keepaliveSeconds), grant)
    }

    /// The next message, with an `error` message turned into a thrown ``CloudError``.
    private func nextReply(
        _ messages: inout NIOAsyncChannelInboundStream<CloudMessage>.AsyncIterator
    ) async throws -> CloudMessage? {
        guard let message = try await messages.next(isolation: self) else {
            throw CloudError(code: .connectionFailed, detail: "the cloud closed the connection during registration")
        }
        if case .error(_, let code, let text) = message {
            throw CloudError(code: .init(name: code), detail: text)
        }
        if case .busy(let milliseconds) = message {
            throw CloudError(code: .overloaded, detail: "the cloud is busy; retry after \(milliseconds) ms",
                             retryAfter: .milliseconds(milliseconds))
        }
        return message
    }

    /// Sends a ping every `interval`, and tops up the deposited keys; closes the connection if nothing arrived within
    /// ``CloudClient/livenessTimeout``.
    private nonisolated func keepAlive(_ channel: any Channel, every interval: Duration) async throws {
        while true {
            try await Task.sleep(for: interval)
            guard await isAlive() else {
                channel.close(promise: nil)
                return
            }
            try await CloudClient.send(.ping, on: channel)
            await topUpDeposits()
        }
    }

    /// Deposits every key held (new ones made up to the stock's capacity) after a registration: the cloud may have
    /// restarted and lost them, and it ignores the ones it holds or handed out. Best effort: a browser without a
    /// deposit proves through a live challenge.
    private func depositAfterRegistration(on channel: any Channel) async {
        guard var stock = deposits else { return }
        do {
            let held = try stock.registered(now: AccessDeposit.now(), identity: identity, deviceID: deviceID)
            deposits = stock
            try await sendDeposits(held, on: channel)
        } catch {
            logger.debug("access deposits not sent", metadata: ["error": "\(error)"])
        }
    }

    /// Deposits new keys when the stock runs low (``AccessDepositStock/topUp(now:identity:deviceID:)``), over TLS only.
    private func topUpDeposits() async {
        guard let channel, var stock = deposits else { return }
        do {
            let fresh = try stock.topUp(now: AccessDeposit.now(), identity: identity, deviceID: deviceID)
            deposits = stock
            try await sendDeposits(fresh, on: channel)
        } catch {
            logger.debug("access deposits not topped up", metadata: ["error": "\(error)"])
        }
    }

    private func sendDeposits(_ fresh: [AccessDeposit], on channel: any Channel) async throws {
        var rest = fresh[...]
        while !rest.isEmpty {
            let batch = rest.prefix(AccessDeposit.maxPerMessage)
            rest = rest.dropFirst(batch.count)
            try await CloudClient.send(.deposit(deposits: Array(batch)), on: channel)
        }
    }

    private func isAlive() -> Bool {
        ContinuousClock.now - lastReceived < CloudClient.livenessTimeout
    }

    /// Handles one message on a registered connection.
    private func handle(_ message: CloudMessage, on channel: any Channel) async throws {
        switch message {
        case .offer(let requestID, let offer, let relay, let requester, let answerKey, let deposited):
            // Without a key to seal the answer to, nothing is answered: the viewer hears what an unknown UID gets.
            guard let answerKey else {
                try await CloudClient.send(.decline(requestID: requestID), on: channel)
                return
            }
            lastActivity = .now
            let vouched = requester.flatMap { try? SocketAddress(ipAddress: $0, port: 0) }.map(SourceAddressKey.init)
            sink.yield(CloudIncomingIntroduction(
                requestID: requestID, offer: offer, relay: relay, vouchedRequester: vouched, answerKey: answerKey,
                deposited: deposited, session: self))
        case .accessProof(let requestID, let sealed):
            waitingForProof.removeValue(forKey: requestID)?.resume(returning: sealed)
        case .start(let requestID, _, _, _):
            starts.deliver(requestID, .success(()))?.resume()
        case .relayRenewed(let requestID, let relay):
            waitingForRenewal.removeValue(forKey: requestID)?.resume(returning: relay)
        case .error(let requestID?, let code, let text):
            let error = CloudError(code: .init(name: code), detail: text)
            if let renewal = waitingForRenewal.removeValue(forKey: requestID) {
                renewal.resume(throwing: error)
            } else if let proof = waitingForProof.removeValue(forKey: requestID) {
                proof.resume(throwing: error)
            } else {
                starts.deliver(requestID, .failure(error))?.resume(throwing: error)
            }
        case .error(nil, let code, let text):
            logger.warning("cloud reported an error", metadata: ["code": "\(code)", "message": "\(text)"])
        case .busy(let milliseconds):
            // The cloud is shutting down (or moving us elsewhere): come back when it says, not sooner.
            throw CloudError(code: .overloaded, detail: "the cloud closes; retry after \(milliseconds) ms",
                             retryAfter: .milliseconds(milliseconds))
        case .ping:
            try await CloudClient.send(.pong, on: channel)
        case .pong:
            break
        default:
            throw CloudError(code: .protocolViolation, detail: "unexpected \(message.type) from the cloud")
        }
    }

    /// Seals the answer (and the relay grant) to the viewer's `answerKey`, showing LAN addresses only to a
    /// viewer at this camera's site, sends it and waits for the cloud's `start`, which may arrive before
    /// the send returns (``StartHandoffStateMachine`` keeps it).
    func accept(requestID: String, answer: PeerOffer, relay: RelayGrant?, answerKey: String, requester: SourceAddressKey?) async throws {
        guard let channel else { throw CloudError(code: .connectionFailed, detail: "not connected to the cloud") }
        let shown = answer.shown(to: requester, cameraAt: observed.flatMap(Self.sourceKey(ofObserved:)))
        let sealed = try SealedAnswer(offer: shown, relay: relay).sealed(to: answerKey, deviceID: deviceID, requestID: requestID)
        // In clear only the identity key, which the cloud checks against the registration.
        let cleartext = PeerOffer(identityKey: answer.identityKey, candidates: [], strategies: [])
        lastActivity = .now
        guard starts.expect(requestID, now: .now) else {
            throw CloudError(code: .badRequest, detail: "introduction \(requestID) already answered")
        }
        do {
            try await CloudClient.send(.answer(requestID: requestID, offer: cleartext, sealed: sealed), on: channel)
        } catch {
            starts.cancel(requestID)?.resume(throwing: error)
            throw error
        }
        let timer = Task {
            guard (try? await Task.sleep(for: CloudClient.requestTimeout)) != nil else { return }
            self.expireStarts()
        }
        defer { timer.cancel() }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            switch starts.wait(requestID, waiter: continuation) {
            case .proceed: continuation.resume()
            case .fail(let error): continuation.resume(throwing: error)
            case .suspend: break
            case .unknown:
                continuation.resume(throwing: CloudError(code: .timeout, detail: "no start for \(requestID)"))
            }
        }
    }

    /// The viewer's claim for introduction `requestID`: from the proof it sealed to one of this camera's deposits when the
    /// offer carried one (`deposited`, ``AccessDeposit``: each key opens one proof), else — and when the deposit's key is
    /// used already (a replay), unknown here (made before a restart) or expired — from a live challenge: sends the access
    /// challenge (signed by this camera, for the viewer holding `answerKey`) and opens and verifies the viewer's sealed
    /// proof (``AccessChallenge``), which must come within ``CloudClient/requestTimeout``. A proof that does not open or
    /// verify is refused (`access-denied`) and thrown as ``TraversalError`` `accessDenied`.
    func requestAccess(requestID: String, answerKey: String, deposited: DepositedProof? = nil) async throws -> ViewerAccessClaim {
        if let deposited, let claim = try await openDeposited(deposited, requestID: requestID, answerKey: answerKey) {
            return claim
        }
        return try await challenge(requestID: requestID, answerKey: answerKey)
    }

    /// The claim in a proof sealed to a deposit, or nil when the key is used already, unknown or expired (the caller
    /// challenges live).
    private func openDeposited(_ deposited: DepositedProof, requestID: String, answerKey: String) async throws -> ViewerAccessClaim? {
        let sealing = try CloudMessage.base64(deposited.sealingKey, length: CloudProtocol.answerKeyLength, field: "offer.deposited.sealingKey")
        let key: Curve25519.KeyAgreement.PrivateKey
        guard var stock = deposits else {
            logger.debug("deposited key unknown or expired: live challenge", metadata: ["requestID": "\(requestID)"])
            return nil
        }
        let consumption = stock.consume(sealing, now: AccessDeposit.now())
        deposits = stock
        switch consumption {
        case .key(let held):
            key = held
        case .used:
            // A replay, or a key a cloud that lost its records handed out twice: the proof is not accepted, and only a
            // holder of the credential answers the live challenge.
            logger.info("deposited key used before: live challenge", metadata: ["requestID": "\(requestID)"])
            return nil
        case .expired, .unknown:
            logger.debug("deposited key unknown or expired: live challenge", metadata: ["requestID": "\(requestID)"])
            return nil
        }
        lastActivity = .now
        // Off the viewer's critical path: new keys, if the stock runs low, are made and sent after this answer.
        Task { await self.topUpDeposits() }
        do {
            return try AccessProver.open(deposited: deposited.sealed, with: key, deviceID: deviceID, requestID: requestID, answerKey: answerKey)
        } catch {
            await refuse(requestID: requestID, reason: .accessDenied)
            throw TraversalError(code: .accessDenied, detail: "the viewer's deposited access proof: \(error)")
        }
    }

    /// The live challenge of ``requestAccess(requestID:answerKey:deposited:)``.
    private func challenge(requestID: String, answerKey: String) async throws -> ViewerAccessClaim {
        guard let channel else { throw CloudError(code: .connectionFailed, detail: "not connected to the cloud") }
        guard waitingForProof[requestID] == nil else {
            throw CloudError(code: .badRequest, detail: "introduction \(requestID) already challenged")
        }
        let (challenge, key) = try AccessChallenge.make(identity: identity, deviceID: deviceID, requestID: requestID, answerKey: answerKey)
        lastActivity = .now
        let timer = Task {
            guard (try? await Task.sleep(for: CloudClient.requestTimeout)) != nil else { return }
            self.endProof(requestID, CloudError(code: .timeout, detail: "no access proof for \(requestID)"))
        }
        defer { timer.cancel() }
        // Waiting before sending: the proof cannot overtake the wait.
        let sealed = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<String, any Error>) in
            waitingForProof[requestID] = continuation
            Task {
                do {
                    try await CloudClient.send(.accessChallenge(requestID: requestID, challenge: challenge), on: channel)
                } catch {
                    self.endProof(requestID, error)
                }
            }
        }
        do {
            return try AccessProver.open(sealed, with: key, deviceID: deviceID, requestID: requestID)
        } catch {
            // A proof that does not open or verify is a refused credential, and the viewer hears so at once.
            await refuse(requestID: requestID, reason: .accessDenied)
            throw TraversalError(code: .accessDenied, detail: "the viewer's access proof: \(error)")
        }
    }

    private func endProof(_ requestID: String, _ error: any Error) {
        waitingForProof.removeValue(forKey: requestID)?.resume(throwing: error)
    }

    /// Tells the cloud the viewer's proof for `requestID` was refused (best effort).
    func refuse(requestID: String, reason: AccessRefusal) async {
        guard let channel else { return }
        try? await CloudClient.send(.refuse(requestID: requestID, reason: reason), on: channel)
    }

    /// The per-source key of an `ip:port` or `[ipv6]:port` the cloud reported, or `nil`.
    static func sourceKey(ofObserved text: String) -> SourceAddressKey? {
        let host: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
        } else if let colon = text.lastIndex(of: ":") {
            host = text[..<colon]
        } else {
            host = Substring(text)
        }
        return (try? SocketAddress(ipAddress: String(host), port: 0)).map(SourceAddressKey.init)
    }

    private func expireStarts() {
        for (requestID, waiter) in starts.expire(now: .now) {
            waiter.resume(throwing: CloudError(code: .timeout, detail: "no start for \(requestID)"))
        }
    }

    /// Renews a relay grant over the registered connection (``CloudMessage/renewRelay(requestID:relay:)``).
    func renewRelay(_ grant: RelayGrant) async throws -> RelayGrant {
        guard let channel else {
            // Present over UDP (or reconnecting): the grant is its own authority, a brief connection renews it.
            return try await CloudViewerClient(endpoint: endpoint, logger: logger).renewRelay(grant)
        }
        let requestID = UUID().uuidString.lowercased()
        let timer = Task {
            guard (try? await Task.sleep(for: CloudClient.requestTimeout)) != nil else { return }
            self.endRenewal(requestID, CloudError(code: .timeout, detail: "no renewed relay grant for \(requestID)"))
        }
        defer { timer.cancel() }
        // Waiting before sending: the answer cannot overtake the wait.
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<RelayGrant, any Error>) in
            waitingForRenewal[requestID] = continuation
            Task {
                do {
                    try await CloudClient.send(.renewRelay(requestID: requestID, relay: grant), on: channel)
                } catch {
                    self.endRenewal(requestID, error)
                }
            }
        }
    }

    private func endRenewal(_ requestID: String, _ error: any Error) {
        waitingForRenewal.removeValue(forKey: requestID)?.resume(throwing: error)
    }

    /// Declines an introduction (best effort).
    func decline(requestID: String) async {
        guard let channel else { return }
        try? await CloudClient.send(.decline(requestID: requestID), on: channel)
    }

    private func failWaiters(_ error: CloudError) {
        for waiter in starts.failAll() { waiter.resume(throwing: error) }
        let renewals = waitingForRenewal
        waitingForRenewal = [:]
        for waiter in renewals.values { waiter.resume(throwing: error) }
        let proofs = waitingForProof
        waitingForProof = [:]
        for waiter in proofs.values { waiter.resume(throwing: error) }
    }
}

/// Waits between reconnection attempts: exponential backoff with full jitter, each wait drawn
/// uniformly below a ceiling that doubles per failure from ``CloudClient/reconnectInitialDelay``
/// up to ``CloudClient/reconnectMaxDelay``, so a fleet that lost its cloud at one moment does not
/// come back in lockstep.
public struct ReconnectBackoff: Sendable {
    /// The first ceiling.
    public let initialDelay: Duration
    /// The largest ceiling.
    public let maxDelay: Duration
    /// Failures since the last reset.
    public private(set) var attempts = 0

    /// A backoff from `initialDelay` to `maxDelay`.
    public init(initialDelay: Duration = CloudClient.reconnectInitialDelay, maxDelay: Duration = CloudClient.reconnectMaxDelay) {
        precondition(initialDelay > .zero && maxDelay >= initialDelay, "invalid backoff")
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
    }

    /// The ceiling of the next wait: `initialDelay · 2^attempts`, at most `maxDelay`.
    public var ceiling: Duration {
        var ceiling = initialDelay
        for _ in 0..<min(attempts, 64) where ceiling < maxDelay { ceiling *= 2 }
        return min(ceiling, maxDelay)
    }

    /// The next wait, uniform in `0…ceiling`, drawn from `generator`; counts one more failure.
    public mutating func nextDelay(using generator: inout some RandomNumberGenerator) -> Duration {
        let delay = ceiling * Double.random(in: 0...1, using: &generator)
        attempts += 1
        return delay
    }

    /// The next wait, drawn from the system's generator.
    public mutating func nextDelay() -> Duration {
        var generator = SystemRandomNumberGenerator()
        return nextDelay(using: &generator)
    }

    /// Back to the first ceiling (after a registration succeeded).
    public mutating func reset() { attempts = 0 }

    /// The wait for a cloud that said "retry after": that long plus up to a quarter more, so clients
    /// told the same moment spread out.
    public static func obeying(retryAfter: Duration, using generator: inout some RandomNumberGenerator) -> Duration {
        retryAfter * Double.random(in: 1...1.25, using: &generator)
    }

    /// ``obeying(retryAfter:using:)`` with the system's generator.
    public static func obeying(retryAfter: Duration) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return obeying(retryAfter: retryAfter, using: &generator)
    }
}

/// A viewer's offer delivered to a camera by ``CloudCameraSession``.
struct CloudIncomingIntroduction: IncomingIntroduction {
    let requestID: String
    let offer: PeerOffer
    let relay: RelayGrant?
    let vouchedRequester: SourceAddressKey?
    /// The viewer's key the answer is sealed to (``SealedAnswer``).
    let answerKey: String
    /// A browser's proof sealed to one of the camera's deposits, if the offer carried one.
    let deposited: DepositedProof?
    let session: CloudCameraSession

    func accept(answer: PeerOffer) async throws {
        try await session.accept(requestID: requestID, answer: answer, relay: relay, answerKey: answerKey, requester: vouchedRequester)
    }

    func decline() async {
        await session.decline(requestID: requestID)
    }

    func requestAccess() async throws -> ViewerAccessClaim? {
        try await session.requestAccess(requestID: requestID, answerKey: answerKey, deposited: deposited)
    }

    func refuse(_ reason: AccessRefusal) async {
        await session.refuse(requestID: requestID, reason: reason)
    }

    func renewRelay(_ grant: RelayGrant) async throws -> RelayGrant {
        try await session.renewRelay(grant)
    }
}

/// A viewer's signalling client: one TLS connection per introduction, and one brief one per relay grant renewal.
///
/// ```
///  viewer                                   cloud
///    │ introduce{answerKey} ──────────────────►│   (connection closes after start)
///    │◄────────────── accessChallenge{challenge}   (the camera's identity key, signed: AccessChallenge)
///    │ accessProof{sealed} ───────────────────►│   (the credential, sealed to the challenge's key)
///    │◄──────────────────────── start{sealed}   │   (the camera's answer and grant, sealed to answerKey)
///    │        … relayed session; before relay.expires …
///    │ renewRelay{requestID, relay} ───────────►│   (a new connection, closed after the answer)
///    │◄──────────── relayRenewed{requestID, relay}
/// ```
struct CloudViewerClient: ViewerSignalling {
    let endpoint: CloudEndpoint
    let logger: Logger

    /// Introduces a viewer without a credential: a fresh identity presenting no paired key, which a
    /// camera under a ``CameraAccessPolicy`` refuses (`access-denied`).
    func introduce(to device: DeviceID, offer: PeerOffer) async throws -> Introduction {
        try await introduce(to: device, offer: offer, prover: AccessProver(identity: .ephemeral(), credential: .pairedKey))
    }

    func introduce(to device: DeviceID, offer: PeerOffer, prover: AccessProver) async throws -> Introduction {
        let requestID = UUID().uuidString.lowercased()
        let answerKey = Curve25519.KeyAgreement.PrivateKey()
        let challenged = Mutex<Curve25519.Signing.PublicKey?>(nil)
        let sealed = try await exchange(
            .introduce(requestID: requestID, deviceID: device.description, offer: offer,
                       answerKey: answerKey.publicKey.rawRepresentation.base64EncodedString()),
            requestID: requestID, within: CloudClient.introduceTimeout,
            timeoutDetail: "no introduction to \(device) within \(CloudClient.introduceTimeout)", during: "introduce \(requestID)"
        ) { message -> ExchangeStep<String> in
            switch message {
            case .accessChallenge(requestID, let challenge):
                guard challenged.withLock({ $0 == nil }) else {
                    throw CloudError(code: .protocolViolation, detail: "a second access challenge for \(requestID)")
                }
                let (proof, cameraKey) = try await prover.prove(challenge, device: device, requestID: requestID, answerKey: answerKey.publicKey)
                challenged.withLock { $0 = cameraKey }
                return .reply(.accessProof(requestID: requestID, sealed: proof))
            case .start(requestID, _, _, let sealed?):
                return .done(sealed)
            case .error(requestID, let code, let text) where challenged.withLock({ $0 != nil }):
                guard let refusal = AccessRefusal(rawValue: code) else { return .unhandled }
                throw TraversalError(code: refusal.traversalCode, detail: "the camera refused access: \(text)")
            default:
                return .unhandled
            }
        }
        let answer: SealedAnswer
        do {
            answer = try SealedAnswer.open(sealed, with: answerKey, deviceID: device, requestID: requestID)
        } catch {
            throw CloudError(code: .protocolViolation, detail: "the camera's answer: \(error)")
        }
        guard let cameraKey = challenged.withLock({ $0 }), answer.offer.identityKey == cameraKey.rawRepresentation else {
            throw CloudError(code: .protocolViolation, detail: "the camera's answer does not follow its access challenge")
        }
        return Introduction(requestID: requestID, answer: answer.offer, relay: answer.relay)
    }

    /// What a reply to an exchange's request means.
    enum ExchangeStep<T: Sendable>: Sendable {
        /// The answer sought.
        case done(T)
        /// Send this and keep waiting.
        case reply(CloudMessage)
        /// Not for this exchange (errors, pings and the rest are handled by the exchange itself).
        case unhandled
    }

    func renewRelay(_ grant: RelayGrant) async throws -> RelayGrant {
        let requestID = UUID().uuidString.lowercased()
        return try await exchange(
            .renewRelay(requestID: requestID, relay: grant), requestID: requestID, within: CloudClient.requestTimeout,
            timeoutDetail: "no renewed relay grant within \(CloudClient.requestTimeout)", during: "renew relay grant \(requestID)"
        ) { message -> ExchangeStep<RelayGrant> in
            guard case .relayRenewed(requestID, let relay) = message else { return .unhandled }
            return .done(relay)
        }
    }

    /// Sends `request` on a connection of its own and returns the first reply `answer` settles
    /// (sending what it replies on the way), within `timeout`; answers pings, and turns an error for
    /// `requestID` (or for the connection) into a thrown ``CloudError``.
    private func exchange<T: Sendable>(
        _ request: CloudMessage, requestID: String, within timeout: Duration, timeoutDetail: String, during activity: String,
        answer: @escaping @Sendable (CloudMessage) async throws -> ExchangeStep<T>
    ) async throws -> T {
        let connection = try await CloudClient.connect(to: endpoint, attempts: CloudClient.viewerConnectAttempts)
        let started = ContinuousClock.now
        do {
            return try await connection.executeThenClose { inbound in
                let watchdog = closeUnlessCancelled(connection.channel, after: timeout)
                defer { watchdog.cancel() }
                try await CloudClient.send(request, on: connection.channel)
                for try await message in inbound {
                    switch try await answer(message) {
                    case .done(let value): return value
                    case .reply(let reply):
                        try await CloudClient.send(reply, on: connection.channel)
                        continue
                    case .unhandled: break
                    }
                    switch message {
                    case .error(let id, let code, let text) where id == nil || id == requestID:
                        throw CloudError(code: .init(name: code), detail: text)
                    case .ping:
                        try await CloudClient.send(.pong, on: connection.channel)
                    case .pong:
                        continue
                    default:
                        throw CloudError(code: .protocolViolation, detail: "unexpected \(message.type) from the cloud")
                    }
                }
                try Task.checkCancellation()
                if ContinuousClock.now - started >= timeout {
                    throw CloudError(code: .timeout, detail: timeoutDetail)
                }
                throw CloudError(code: .connectionFailed, detail: "the cloud closed the connection")
            }
        } catch {
            throw CloudClient.classify(error, during: activity)
        }
    }
}
