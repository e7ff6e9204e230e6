import Foundation
import Logging
import Media
import NIOCore
import STUNLite
import Synchronization
@_spi(WebRTC) import Traversal

/// A camera's side of one browser's peer connection: the browser's offer in, the answer out, then ICE,
/// DTLS and SCTP with data channels over the camera's UDP sockets, owned by the session. It is a
/// `MediaViewerConnection`, so a `MediaSender` feeds it as it feeds native viewers.
///
/// ```
///  browser offer (SDP) ─► BrowserViewerSession.start ─► each socket asks the STUN server for its mapping (bounded)
///                       ─► answer (SDP, host and server-reflexive candidates, a=trav-identity)
///  datagrams on each socket, demultiplexed by the first byte (RFC 7983 §7):
///     0–3   STUN: ICEAgent (controlled, RFC 8445) ─► checks answered, the browser's nomination selected
///           the first check that proves our ICE password ─► our ClientHello to its source
///     20–63 DTLS: DTLSEndpoint (client, RFC 6347; the browser's fingerprint checked) ─► application data
///                 ─► DataChannelEngine (SCTP over DTLS, RFC 8261; DCEP, RFC 8832) ─► channels
/// ```
///
/// The camera answers `a=setup:active` (RFC 8842 §5.3) and is the DTLS client, so its ClientHello leaves with its answer
/// to the browser's first authenticated check instead of waiting for the browser's: Chromium keeps a ClientHello that
/// arrives before its own check succeeded and answers it once ICE is writable, which saves a round trip. Only an offer
/// with `a=setup:active` makes the camera the server.
///
/// The answer carries the ``IdentityBinding``: the camera's identity key signs both certificates'
/// fingerprints and its UID, so a page that checks it (and the key against the UID) cannot be answered
/// by anyone else — neither the cloud that carried the offer nor a relay on the path.
///
/// Bounds: the offer is bounded by ``SessionDescription``'s limits and ``Configuration/maxRemoteCandidates``;
/// pairs by ``ICEAgent/maxPairs``; DTLS datagrams by ``DTLSEndpoint/maxDatagram``; a session that has not
/// connected within ``Configuration/connectTimeout`` closes itself. However it ends (``close()``, ICE failure,
/// lost consent, DTLS failure, the timeout) it releases its sockets and tasks.
public final class BrowserViewerSession: MediaViewerConnection {
    /// Tunables.
    public struct Configuration: Sendable, Hashable {
        /// Largest SCTP packet put into one DTLS record: fits a 1280-byte IPv6 path with DTLS, UDP and IP headers.
        public var pathMTU = 1100
        /// The `a=max-message-size` announced (RFC 8841 §6): Chromium's own receive limit.
        public var maxMessageSize = 256 * 1024
        /// Remote candidates taken from the offer; the rest are ignored.
        public var maxRemoteCandidates = 16
        /// Time from the answer to a connected DTLS session before the session gives up and closes.
        public var connectTimeout: Duration = .seconds(20)
        /// Datagrams a socket holds unread before the oldest are dropped.
        public var socketQueue = 256
        /// How each socket asks the STUN server for its server-reflexive address before the answer goes out
        /// (RFC 8489 §6.2.1's schedule, shortened: the answer waits for it). Default ``serverReflexiveDiscovery``.
        public var serverReflexivePolicy = BrowserViewerSession.serverReflexiveDiscovery
        /// Longest sleep of the timer task between deadlines (new input can bring a deadline forward).
        public var timerGranularity: Duration = .milliseconds(20)

        /// Defaults.
        public init() {}
    }

    /// What happened, in order.
    public enum Event: Sendable, Hashable {
        /// ICE selected a pair: the browser's address and our socket.
        case selected(remote: TransportAddress)
        /// The DTLS handshake completed and the browser's certificate matched its fingerprint.
        case connected
        /// The session ended: ICE failed, consent expired, DTLS failed, it timed out, or ``close()``.
        case closed(reason: String)
    }

    /// The STUN schedule for server-reflexive candidates: sends at 0, 100 and 300 ms, no candidate after 500 ms in all
    /// (`totalTimeout`), so a silent or unreachable STUN server delays the answer by half a second at most.
    public static let serverReflexiveDiscovery = STUNRetransmissionPolicy(rto: .milliseconds(100), maxRequests: 3, finalWaitMultiplier: 2)

    /// Our description for the browser: `setAnswer` it.
    public let answer: SessionDescription
    /// Channels the browser opened (its `createDataChannel`), in the order they arrive; finishes when the session closes.
    public let incomingChannels: AsyncStream<PeerChannel>
    /// What happened, in order; finishes when the session closes.
    public let events: AsyncStream<Event>

    private let core: Core
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let sockets: [STUNUDPClient]

    /// Answers `offer` from new UDP sockets on `hosts` (IP literals; one host candidate each), signing the
    /// answer's identity binding with `identity`. The browser's DTLS certificate must match the offer's fingerprint.
    ///
    /// With `stunServer`, each socket first asks it for its server-reflexive address (RFC 8445 §5.1.1.2) on
    /// ``Configuration/serverReflexivePolicy``; the answer then also carries a `typ srflx` candidate per distinct
    /// mapping that differs from its host address (RFC 8839 §5.1). The ICE agent keeps the host socket as the base
    /// of both (RFC 8445 §6.1.2.4): checks to the mapped address arrive on that socket. A server that does not answer
    /// in time, or answers wrongly, costs the srflx candidate only.
    ///
    /// - Throws: ``BrowserSessionError`` `noLocalAddress` when no socket has an address, ``DTLSError`` on
    ///   OpenSSL setup, `STUNClientError` `socket` when a socket cannot be bound.
    public static func start(offer: SessionDescription, identity: DeviceIdentity, certificate: DTLSCertificate,
                             hosts: [String], stunServer: TransportAddress? = nil, configuration: Configuration = Configuration(),
                             logger: Logger = Logger(label: "trav.webrtc")) async throws -> BrowserViewerSession {
        let sockets = try await Sockets.prepare(hosts: hosts, stunServer: stunServer, configuration: configuration, logger: logger)
        return try await start(offer: offer, identity: identity, certificate: certificate, sockets: sockets,
                               configuration: configuration, logger: logger)
    }

    /// Answers `offer` on sockets prepared beforehand (``Sockets/prepare(hosts:stunServer:configuration:logger:)``, e.g.
    /// while the browser proves access), which the session then owns; as ``start(offer:identity:certificate:hosts:stunServer:configuration:logger:)``
    /// otherwise.
    ///
    /// - Throws: ``BrowserSessionError`` `noLocalAddress` when `sockets` were already taken, ``DTLSError`` on OpenSSL setup.
    public static func start(offer: SessionDescription, identity: DeviceIdentity, certificate: DTLSCertificate,
                             sockets: Sockets, configuration: Configuration = Configuration(),
                             logger: Logger = Logger(label: "trav.webrtc")) async throws -> BrowserViewerSession {
        guard let (bound, mapped) = sockets.take() else {
            throw BrowserSessionError(.noLocalAddress, "the prepared sockets were already taken or closed")
        }
        do {
            return try BrowserViewerSession(offer: offer, identity: identity, certificate: certificate, bound: bound,
                                            mapped: mapped, configuration: configuration, logger: logger)
        } catch {
            for b in bound { await b.close() }
            throw error
        }
    }

    /// A session's UDP sockets before its offer is answered: bound, and each one's server-reflexive address asked for.
    /// They are closed by ``close()``, or when this is dropped, unless a session took them.
    public final class Sockets: Sendable {
        private let state: Mutex<(bound: [STUNUDPClient], mapped: [Int: TransportAddress])?>

        private init(bound: [STUNUDPClient], mapped: [Int: TransportAddress]) {
            state = Mutex((bound, mapped))
        }

        /// New UDP sockets on `hosts` (IP literals; the others are skipped), each asking `stunServer` for its mapping on
        /// ``Configuration/serverReflexivePolicy`` (RFC 8445 §5.1.1.2); a server that does not answer in time costs only
        /// that candidate.
        ///
        /// - Throws: ``BrowserSessionError`` `noLocalAddress` when no socket has an address, `STUNClientError` `socket`
        ///   when a socket cannot be bound.
        public static func prepare(hosts: [String], stunServer: TransportAddress? = nil, configuration: Configuration = Configuration(),
                                   logger: Logger = Logger(label: "trav.webrtc")) async throws -> Sockets {
            var bound: [STUNUDPClient] = []
            do {
                for host in hosts {
                    guard let ip = IPAddress(host) else {
                        logger.notice("browser host is not an IP address, skipped", metadata: ["host": "\(host)"])
                        continue
                    }
                    bound.append(try await STUNUDPClient.bind(to: TransportAddress(ip: ip, port: 0),
                                                              otherDatagramBuffer: configuration.socketQueue))
                }
            } catch {
                for b in bound { await b.close() }
                throw error
            }
            guard !bound.isEmpty else { throw BrowserSessionError(.noLocalAddress, "none of \(hosts) could be bound") }
            var mapped: [Int: TransportAddress] = [:]
            if let stunServer { mapped = await serverReflexive(bound, server: stunServer, policy: configuration.serverReflexivePolicy) }
            return Sockets(bound: bound, mapped: mapped)
        }

        /// The sockets' local addresses (empty once taken or closed).
        public var localAddresses: [TransportAddress] { state.withLock { $0?.bound.map(\.localAddress) ?? [] } }

        /// The sockets and their mappings, once: a session takes them.
        func take() -> (bound: [STUNUDPClient], mapped: [Int: TransportAddress])? {
            state.withLock { taken in
                defer { taken = nil }
                return taken
            }
        }

        /// Closes the sockets, unless a session took them.
        public func close() async {
            for socket in take()?.bound ?? [] { await socket.close() }
        }

        deinit {
            guard let left = take()?.bound, !left.isEmpty else { return }
            Task { for socket in left { await socket.close() } }
        }
    }

    /// Each socket's mapped address as `server` reports it (one Binding transaction per socket of the server's family,
    /// all at once, on `policy`), keyed by the socket's index; sockets without an answer in time are left out.
    private static func serverReflexive(_ sockets: [STUNUDPClient], server: TransportAddress,
                                        policy: STUNRetransmissionPolicy) async -> [Int: TransportAddress] {
        await withTaskGroup(of: (Int, TransportAddress?).self) { group in
            for (i, socket) in sockets.enumerated() where socket.localAddress.ip.isIPv4 == server.ip.isIPv4 {
                group.addTask { (i, try? await socket.binding(to: server, policy: policy).mappedAddress) }
            }
            var mapped: [Int: TransportAddress] = [:]
            for await (i, address) in group { if let address { mapped[i] = address } }
            return mapped
        }
    }

    /// The answer's candidates: one host candidate per socket, then a server-reflexive one per socket whose mapping
    /// is neither its own address nor a mapping already listed (RFC 8445 §5.1.3: redundant candidates are removed).
    /// Priorities per RFC 8445 §5.1.2; a srflx candidate keeps its base's local preference and has a foundation
    /// of its own (§5.1.1.3: a different type).
    static func candidates(locals: [ICEAgent.Local], mapped: [Int: TransportAddress]) -> [ICECandidate] {
        var out = locals.enumerated().map { i, l in
            ICECandidate(foundation: "\(i + 1)", priority: l.priority, address: "\(l.address.ip)", port: Int(l.address.port), kind: .host)
        }
        var listed = Set(locals.map(\.address))
        for (i, l) in locals.enumerated() {
            guard let reflexive = mapped[l.socket], !listed.contains(reflexive) else { continue }
            listed.insert(reflexive)
            out.append(ICECandidate(
                foundation: "\(locals.count + i + 1)",
                priority: ICECandidate.priority(kind: .srflx, localPreference: l.priority >> 8 & 0xFFFF),
                address: "\(reflexive.ip)", port: Int(reflexive.port), kind: .srflx,
                related: (address: "\(l.address.ip)", port: Int(l.address.port))))
        }
        return out
    }

    /// The type preference of the camera's host candidates when the browser is behind another NAT: below
    /// server-reflexive (100), above relayed (0).
    static let remoteHostTypePreference: UInt32 = 90

    /// The type preference for the camera's host candidates (RFC 8445 §5.1.2.1): the recommended 126, unless the browser is
    /// known to be behind another NAT, then ``remoteHostTypePreference``. Known: the camera has a mapping other than its
    /// host addresses, the browser offered a server-reflexive candidate, and none of the browser's addresses is one of the
    /// camera's mappings (a browser behind the same NAT shows the same public address). The camera's private addresses
    /// then reach the browser only in rare set-ups (a VPN, a routed site), so its server-reflexive pairs go first in the
    /// browser's checks (which it paces ~50 ms apart) instead of after pairs that cannot work; the host candidates are still
    /// offered and checked. §5.1.2.2's values are recommendations; a distinct preference per type is what §5.1.2.1 asks.
    static func hostTypePreference(offer: SessionDescription, hosts: [TransportAddress], mapped: [Int: TransportAddress]) -> UInt32 {
        let hostIPs = Set(hosts.map(\.ip))
        let publicIPs = Set(mapped.values.map(\.ip)).subtracting(hostIPs)
        let browserIPs = Set(offer.candidates.compactMap { IPAddress($0.address) })
        let browserBehindNAT = offer.candidates.contains { $0.kind == .srflx }
        guard !publicIPs.isEmpty, browserBehindNAT, publicIPs.isDisjoint(with: browserIPs) else { return ICECandidate.Kind.host.typePreference }
        return remoteHostTypePreference
    }

    private init(offer: SessionDescription, identity: DeviceIdentity, certificate: DTLSCertificate,
                 bound: [STUNUDPClient], mapped: [Int: TransportAddress], configuration: Configuration, logger: Logger) throws {
        let deviceID = identity.deviceID.description
        let hostPreference = Self.hostTypePreference(offer: offer, hosts: bound.map(\.localAddress), mapped: mapped)
        let locals = bound.enumerated().map { i, b in
            ICEAgent.Local(socket: i, address: b.localAddress,
                           priority: ICECandidate.priority(typePreference: hostPreference, localPreference: UInt32(65535 - min(i, 65535))))
        }
        let ours = ICEAgent.Credentials(ufrag: Self.randomICEString(8), pwd: Self.randomICEString(24))
        var agent = ICEAgent(role: .controlled, local: ours, remote: .init(ufrag: offer.iceUfrag, pwd: offer.icePwd),
                             locals: locals, now: .now)
        for c in offer.candidates.prefix(configuration.maxRemoteCandidates) where c.transport.lowercased() == "udp" {
            if let ip = IPAddress(c.address), (1...65535).contains(c.port) {
                agent.addRemote(TransportAddress(ip: ip, port: UInt16(c.port)), priority: c.priority)
            }
        }
        if offer.endOfCandidates { agent.remoteCandidatesComplete() }
        let setup = offer.setup.answer
        let dtls = try DTLSEndpoint(role: setup == .active ? .client : .server, certificate: certificate,
                                    peerFingerprint: offer.fingerprint)
        let binding = try IdentityBinding.sign(
            publicKey: Array(identity.publicKey.rawRepresentation), deviceID: deviceID,
            cameraFingerprint: certificate.fingerprint, browserFingerprint: offer.fingerprint,
            using: { try identity.signature(for: $0) })
        answer = SessionDescription(
            sessionID: UInt64.random(in: 1...UInt64(Int64.max)), mid: offer.mid, iceUfrag: ours.ufrag, icePwd: ours.pwd,
            fingerprint: certificate.fingerprint, setup: setup, maxMessageSize: configuration.maxMessageSize,
            candidates: Self.candidates(locals: locals, mapped: mapped),
            endOfCandidates: true, identity: binding)
        let (channels, channelSink) = AsyncStream.makeStream(of: PeerChannel.self, bufferingPolicy: .bufferingNewest(16))
        let (events, eventSink) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(64))
        incomingChannels = channels
        self.events = events
        sockets = bound
        core = Core(ice: agent, dtls: dtls, sockets: bound, configuration: configuration, logger: logger,
                    channelSink: channelSink, eventSink: eventSink)
        start(bound: bound, configuration: configuration)
    }

    private func start(bound: [STUNUDPClient], configuration: Configuration) {
        let core = self.core
        var started: [Task<Void, Never>] = []
        for (index, b) in bound.enumerated() {
            // What is not an answer to the socket's own STUN transactions: the browser's checks, DTLS, strays.
            let datagrams = b.otherDatagrams
            started.append(Task {
                for await (source, bytes) in datagrams {
                    await core.datagram(bytes, from: source, on: index)
                }
            })
        }
        let deadline = ContinuousClock.now + configuration.connectTimeout
        started.append(Task {
            while !Task.isCancelled {
                guard let pause = await core.tick(now: .now, connectBy: deadline) else { return }
                try? await Task.sleep(for: pause)
            }
        })
        tasks.withLock { $0 = started }
    }

    /// Opens a channel toward the browser (its `ondatachannel` fires): an ordered one returns once its open message
    /// is sent, so the first messages follow it within the same round trip (RFC 8832 §6), any other once the
    /// browser acknowledged it.
    ///
    /// - Throws: `ChannelError` when the session is not connected in time or closes.
    public func openChannel(label: String, delivery: ChannelDelivery = .reliable,
                            priority: ChannelPriority = .normal) async throws -> PeerChannel {
        try await core.open(label: label, delivery: delivery, priority: priority)
    }

    /// Bytes sent on the session's channels that the browser has not yet acknowledged (0 before DTLS is up).
    public var channelBufferedAmount: Int { core.engineRef.withLock { $0?.bufferedAmount ?? 0 } }

    /// Ends the session: close_notify to the browser, every channel closed, sockets and tasks released.
    public func close() async {
        await core.close(reason: "closed by the camera")
        for task in tasks.withLock({ $0 }) { task.cancel() }
    }

    deinit {
        for task in tasks.withLock({ $0 }) { task.cancel() }
        let sockets = self.sockets
        Task { for socket in sockets { await socket.close() } }
    }

    /// An ICE ufrag or password of `length` ice-chars (RFC 8839 §5.4), from the system's random generator.
    static func randomICEString(_ length: Int) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")
        return String((0..<length).map { _ in alphabet.randomElement()! })
    }
}

/// Why a browser session could not start (a coded error, as Traversal's are).
public struct BrowserSessionError: Traversal.CodedError, Hashable {
    /// A stable reason code.
    public struct Code: Traversal.ErrorCode {
        /// The stable name.
        public let name: String
        /// No socket could be bound on the hosts given: the session would have no candidate.
        public static let noLocalAddress = Code(name: "no-local-address")
    }

    /// What went wrong.
    public let code: Code
    /// Why, for people.
    public let detail: String

    /// An error with this code and detail.
    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }
}

extension BrowserViewerSession {
    /// The session's state: the ICE agent and DTLS endpoint (neither Sendable on its own), the channel engine once
    /// DTLS is up. Every input and timer runs here, one at a time.
    actor Core {
        private var ice: ICEAgent
        private let dtls: DTLSEndpoint
        private var engine: DataChannelEngine?
        /// The engine, for reads outside the actor (``BrowserViewerSession/channelBufferedAmount``).
        nonisolated let engineRef = Mutex<DataChannelEngine?>(nil)
        private var peer: (socket: Int, address: TransportAddress)?
        /// Sources whose connectivity check passed integrity (we answered it): the only ones DTLS is taken from.
        private var authenticated: [TransportAddress: Int] = [:]
        /// Whether the DTLS client's first flight still waits for a source that proves the ICE password.
        private var clientHelloPending: Bool
        private var closed = false
        private var engineWaiters: [CheckedContinuation<DataChannelEngine, any Error>] = []
        private let sockets: [STUNUDPClient]
        private let configuration: Configuration
        private let logger: Logger
        private let channelSink: AsyncStream<PeerChannel>.Continuation
        private let eventSink: AsyncStream<Event>.Continuation

        init(ice: ICEAgent, dtls: DTLSEndpoint, sockets: [STUNUDPClient], configuration: Configuration, logger: Logger,
             channelSink: AsyncStream<PeerChannel>.Continuation, eventSink: AsyncStream<Event>.Continuation) {
            self.ice = ice
            self.dtls = dtls
            clientHelloPending = dtls.role == .client
            self.sockets = sockets
            self.configuration = configuration
            self.logger = logger
            self.channelSink = channelSink
            self.eventSink = eventSink
        }

        /// One datagram on socket `index`, demultiplexed by its first byte (RFC 7983 §7: 0–3 STUN, 20–63 DTLS).
        func datagram(_ bytes: [UInt8], from source: TransportAddress, on index: Int) async {
            guard !closed, let first = bytes.first else { return }
            if first <= 3 {
                let actions = ice.receive(bytes, from: source, on: index, now: .now)
                // The agent answers only checks that passed integrity with our password (RFC 8445 §7.3).
                let answered = actions.contains { if case .send(_, _, let to) = $0 { to == source } else { false } }
                if answered, authenticated[source] == nil, authenticated.count < ICEAgent.maxPairs { authenticated[source] = index }
                await perform(actions)
                if answered, clientHelloPending { await sendClientHello(to: source, on: index) }
            } else if (20...63).contains(first) {
                // DTLS from the selected pair, or from any source that proved the ICE password, which then becomes
                // where we send (the browser's flight can overtake our own check of the nominated pair, and the
                // browser may carry on its handshake over another pair while it moves its nomination); never from
                // an address that proved nothing.
                if peer?.address != source, let socket = authenticated[source] { peer = (socket, source) }
                guard let peer, peer.address == source else { return }
                let out: DTLSEndpoint.Output
                do {
                    out = try dtls.receive(bytes)
                } catch {
                    logger.debug("browser DTLS refused", metadata: ["error": "\(error)"])
                    if dtls.isClosed { await close(reason: "DTLS: \(error)") }
                    return
                }
                await write(out.datagrams)
                if dtls.isConnected, engine == nil { startEngine() }
                for packet in out.data { engine?.input(packet) }
                if dtls.isClosed { await close(reason: "the browser closed DTLS") }
            }
        }

        /// The DTLS client's first flight, right after our answer to the first check that proved the ICE password, to
        /// that check's source (or to the selected pair, if ICE selected one already). Retransmissions and the rest of the
        /// handshake follow the pair in use: a later nomination, or DTLS from another authenticated source, moves it.
        private func sendClientHello(to source: TransportAddress, on socket: Int) async {
            clientHelloPending = false
            if peer == nil { peer = (socket, source) }
            do {
                await write(try dtls.start().datagrams)
            } catch {
                await close(reason: "DTLS: \(error)")
            }
        }

        /// Runs ICE's and DTLS's timers; returns how long to wait before the next call, nil once the session is over.
        /// While connecting that is ``Configuration/timerGranularity`` (input can bring a deadline forward); once
        /// connected, until ICE's next consent check, at most a second.
        func tick(now: ContinuousClock.Instant, connectBy: ContinuousClock.Instant) async -> Duration? {
            guard !closed else { return nil }
            if !dtls.isConnected, now >= connectBy {
                await close(reason: "not connected within \(configuration.connectTimeout)")
                return nil
            }
            if let at = ice.nextDeadline, now >= at { await perform(ice.tick(now: now)) }
            if !dtls.isConnected, peer != nil, let delay = dtls.retransmissionDelay, delay <= .zero {
                await write(dtls.handleTimeout().datagrams)
            }
            guard !closed else { return nil }
            guard dtls.isConnected, ice.selected != nil else { return configuration.timerGranularity }
            let untilDeadline = ice.nextDeadline.map { max(.zero, $0 - .now) } ?? .seconds(1)
            return max(configuration.timerGranularity, min(untilDeadline, .seconds(1)))
        }

        func open(label: String, delivery: ChannelDelivery, priority: ChannelPriority) async throws -> PeerChannel {
            let engine: DataChannelEngine
            if let ready = self.engine {
                engine = ready
            } else {
                guard !closed else { throw ChannelError(code: .closed, detail: "the browser session is closed") }
                engine = try await withCheckedThrowingContinuation { engineWaiters.append($0) }
            }
            return try await engine.open(label: label, delivery: delivery, priority: priority, early: true)
        }

        func close(reason: String) async {
            guard !closed else { return }
            closed = true
            if dtls.isConnected { await write(dtls.close().datagrams) }
            engine?.close(reason: reason)
            for waiter in engineWaiters { waiter.resume(throwing: ChannelError(code: .closed, detail: reason)) }
            engineWaiters = []
            // The session ends whoever ends it (ICE, DTLS, the connect timeout, the camera): its sockets go with it.
            for socket in sockets { await socket.close() }
            eventSink.yield(.closed(reason: reason))
            eventSink.finish()
            channelSink.finish()
        }

        private func perform(_ actions: [ICEAgent.Action]) async {
            for action in actions {
                switch action {
                case .send(let bytes, let socket, let to):
                    await send(bytes, on: socket, to: to)
                case .selected(let socket, let remote):
                    peer = (socket, remote)
                    eventSink.yield(.selected(remote: remote))
                case .failed:
                    await close(reason: "ICE: every candidate pair failed")
                case .consentExpired:
                    await close(reason: "ICE: the browser stopped answering consent checks")
                }
            }
        }

        /// The channel engine once DTLS is up; the browser's channels are passed on as they open.
        private func startEngine() {
            let sink = channelSink
            do {
                // The stream ids the camera opens follow its DTLS role (RFC 8832 §6): even as client, odd as server.
                let engine = try DataChannelEngine(side: dtls.role == .client ? .client : .server, pathMTU: configuration.pathMTU,
                                                   logger: logger,
                                                   send: { [weak self] packet in await self?.sendSCTP(packet) })
                self.engine = engine
                engineRef.withLock { $0 = engine }
                engine.connect()
                for waiter in engineWaiters { waiter.resume(returning: engine) }
                engineWaiters = []
                eventSink.yield(.connected)
                Task {
                    for await channel in engine.incoming { sink.yield(channel) }
                }
            } catch {
                logger.warning("browser channel engine did not start", metadata: ["error": "\(error)"])
            }
        }

        private func sendSCTP(_ packet: [UInt8]) async {
            guard !closed || dtls.isConnected, let out = try? dtls.send(packet) else { return }
            await write(out.datagrams)
        }

        private func write(_ datagrams: [[UInt8]]) async {
            guard let peer else { return }
            for d in datagrams { await send(d, on: peer.socket, to: peer.address) }
        }

        private func send(_ bytes: [UInt8], on socket: Int, to: TransportAddress) async {
            guard sockets.indices.contains(socket) else { return }
            try? await sockets[socket].send(bytes, to: to)
        }
    }
}
