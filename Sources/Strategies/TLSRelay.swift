import Foundation
import Logging
import NIOCore
import NIOSSL
import STUNLite
import Synchronization
import TURNLite
import Traversal

/// `tls-relay`: both sides allocate on the cloud's TURN relay (over TLS by default, so it passes
/// networks that let only TCP out) and exchange the session through it (RFC 8656).
///
/// ```
///  camera (has the grant with the offer)        relay                 viewer (grant arrives with `start`)
///   prepare: Allocate ─────────────────────────►│
///            CreatePermission(relay's own IP) ─►│   (permissions are per IP, RFC 8656 §9: every
///            answer offers `relayed R_cam` ─────┼──► cloud ──►          allocation on this relay shares it)
///                                               │◄──────────────────── connect: Allocate, CreatePermission(relay IP)
///            ◄── ping(token) from R_view ───────│◄──────────────────── ping(token) to R_cam, paced
///            pong(token) to R_view ────────────►│────────────────────► pong: path proven both ways
///            ChannelBind(R_view)                │                      ChannelBind(R_cam); secure handshake
/// ```
///
/// While the session lasts, each side refreshes its allocation, permission and channel every
/// ``refreshInterval`` and renews its grant through the cloud before it expires, then signs with the
/// renewed one (the relay counts both as one user, `TURNLite/TURNCredentials/user(of:)`):
///
/// ```
///  side                         cloud                          relay
///   │ … expires − min(60 s, ⅓ of the grant's life) …
///   │ renewRelay{grant} ───────►│  (camera: its registration; viewer: a brief connection)
///   │◄────── relayRenewed{grant'}│
///   │ Refresh, CreatePermission, ChannelBind signed with grant' ─────►│ same allocation, later expiry
/// ```
///
/// A refresh the relay refuses (the grant expired unrenewed, the allocation is gone) closes the
/// path, so the session learns it has ended instead of waiting on a dead relay.
///
/// The relay sees only the peers' end-to-end encrypted session. It starts ``startDelay`` after the
/// direct strategies, or at once when the peer offered no server-reflexive UDP address (its UDP
/// does not get out, so nothing but a relay can carry the pair).
public struct TLSRelay: TraversalStrategy {
    /// How the strategy reaches the relay.
    public enum RelayTransport: String, Sendable, CaseIterable {
        /// TURN over TLS (`turns:`): passes firewalls that allow only TCP, and hides the TURN exchange.
        case tls
        /// TURN over TCP (`turn:…?transport=tcp`).
        case tcp
        /// TURN over UDP (`turn:…?transport=udp`): least overhead, but not where UDP is blocked.
        case udp
    }

    /// The strategy id.
    public let id = "tls-relay"
    /// Yes: a session that won on a direct path can keep a relay path beside it to fall back to.
    public var standsByForDirectSessions: Bool { true }
    /// Largest peer message: a TURN Send indication or ChannelData around it still fits a 1280-byte path.
    public static let maxMessageSize = 1100
    /// Default stagger after the start signal, so a direct path wins when one exists.
    public static let defaultStartDelay: Duration = .milliseconds(500)
    /// Stagger when `udp-hole-punch` needs the birthday method (one side maps randomly): it
    /// typically takes a few hundred milliseconds, and a direct path costs nothing per byte.
    public static let birthdayStartDelay: Duration = .milliseconds(1500)
    /// How often to refresh the allocation, permission and channel by default: well inside the 5-minute permission lifetime (RFC 8656 §9).
    public static let defaultRefreshInterval: Duration = .seconds(120)
    /// Renewal retries this often while the grant is still valid.
    static let renewalRetryInterval: Duration = .seconds(2)

    /// How to reach the relay.
    public var transport: RelayTransport
    /// PEM file of the CA the relay's TLS certificate must chain to; `nil` applies the context's
    /// `StrategyContext/relayTrust` (the cloud's, from `TravCloud`), and without that accepts any
    /// certificate (the relay is untrusted by design: it carries only the end-to-end encrypted session).
    public var trustedCAPath: String?
    /// Delay after the start signal when a direct path may still exist.
    public var startDelay: Duration
    /// Interval between the viewer's pings through the relay.
    public var probeInterval: Duration
    /// How long connecting through the relay may take in all.
    public var connectTimeout: Duration
    /// Request timeouts towards the relay.
    public var retransmission: STUNRetransmissionPolicy
    /// How often to refresh the allocation, permission and channel.
    public var refreshInterval: Duration = Self.defaultRefreshInterval

    /// Creates the strategy: TLS to the relay, 500 ms stagger, pings every 100 ms, 10 s to connect.
    public init(transport: RelayTransport = .tls, trustedCAPath: String? = nil, startDelay: Duration = Self.defaultStartDelay,
                probeInterval: Duration = .milliseconds(100), connectTimeout: Duration = .seconds(10),
                retransmission: STUNRetransmissionPolicy = .quick) {
        self.transport = transport
        self.trustedCAPath = trustedCAPath
        self.startDelay = startDelay
        self.probeInterval = probeInterval
        self.connectTimeout = connectTimeout
        self.retransmission = retransmission
    }

    /// The camera allocates now and offers its relayed address; the viewer, which learns the grant
    /// only with the camera's answer, allocates in `connect`.
    ///
    /// A camera whose allocation the relay refuses offers the refusal instead of an address, so the
    /// viewer's report says why there is no relayed path (a quota, a draining relay, a forbidden peer).
    public func prepare(_ context: StrategyContext) async throws -> any PreparedStrategy {
        guard context.role == .camera else { return PreparedTLSRelay(strategy: self, link: nil) }
        guard var grant = context.relay else {
            throw StrategyError(code: .notApplicable, detail: "the cloud issued no relay grant")
        }
        // A fresh end of a standby, allocated late in a long session, may hold a grant near its end: renewed first.
        if let renew = context.renewRelay, RelayLink.renewalTime(of: grant) <= Date() {
            grant = (try? await renew(grant)) ?? grant
        }
        do {
            let link = try await RelayLink.open(grant: grant, strategy: self, context: context)
            return PreparedTLSRelay(strategy: self, link: link)
        } catch let e as StrategyError where e.code == .refused {
            return PreparedTLSRelay(strategy: self, link: nil, refusal: e.detail)
        }
    }

    /// The relay server to use from `grant`, for ``transport``.
    func server(in grant: RelayGrant, trust: CloudEndpoint.Trust? = nil) -> (TransportAddress, TURNClient.Transport)? {
        for text in grant.urls {
            guard let url = RelayURL(text) else { continue }
            switch (transport, url.secure, url.transport) {
            case (.tls, true, _):
                return (url.address, .tls(tlsConfiguration(trust), serverHostname: nil))
            case (.tcp, false, "tcp"), (.udp, false, "udp"):
                return (url.address, transport == .tcp ? .tcp : .udp)
            default:
                continue
            }
        }
        return nil
    }

    /// TLS toward the relay: ``trustedCAPath`` if set, else `trust`, else no verification.
    private func tlsConfiguration(_ trust: CloudEndpoint.Trust?) -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        // The grant names the relay by IP; the chain is what is checked.
        tls.certificateVerification = .noHostnameVerification
        if let trustedCAPath {
            tls.trustRoots = .file(trustedCAPath)
        } else if case .pinnedCA(let pem)? = trust {
            // A PEM that does not parse trusts nothing, rather than everything.
            tls.trustRoots = .certificates((try? NIOSSLCertificate.fromPEMBytes(Array(pem.utf8))) ?? [])
        } else if case .systemDefault? = trust {
            tls.trustRoots = .default
        } else {
            tls.certificateVerification = .none
        }
        return tls
    }
}

/// A `turn:` / `turns:` URL of a grant (RFC 7065): `turn:IP:PORT?transport=udp`, `turns:IP:PORT`.
struct RelayURL: Hashable {
    /// `turns:`.
    var secure: Bool
    /// The server.
    var address: TransportAddress
    /// `udp` or `tcp` (for `turns:`, `tcp`).
    var transport: String

    init?(_ text: String) {
        let secure: Bool
        let rest: Substring
        if text.hasPrefix("turns:") {
            (secure, rest) = (true, text.dropFirst("turns:".count))
        } else if text.hasPrefix("turn:") {
            (secure, rest) = (false, text.dropFirst("turn:".count))
        } else {
            return nil
        }
        let parts = rest.split(separator: "?", maxSplits: 1)
        guard let hostPort = parts.first,
              let address = TransportAddress(String(hostPort), defaultPort: secure ? 5349 : 3478) else { return nil }
        var transport = secure ? "tcp" : "udp"
        if parts.count == 2, let value = parts[1].split(separator: "&").first(where: { $0.hasPrefix("transport=") }) {
            transport = String(value.dropFirst("transport=".count))
        }
        self.secure = secure
        self.address = address
        self.transport = transport
    }
}

/// One allocation on the relay with its session pump: answers token pings, collects session messages.
final class RelayLink: Sendable {
    let client: TURNClient
    let allocation: TURNAllocation
    let server: TransportAddress
    let via: String
    let token: [UInt8]
    let refreshInterval: Duration
    let logger: Logger
    private let probes: AsyncStream<(TransportAddress, UDPPathSocket.ProbeKind)>
    private let messages: AsyncStream<(TransportAddress, [UInt8])>
    /// Addresses that proved the session token (shared with the pump).
    private final class Verified: Sendable {
        let peers = Mutex<Set<TransportAddress>>([])
    }
    private let verified = Verified()
    private let tasks = Mutex<[Task<Void, Never>]>([])
    /// Peers whose channels each refresh binds again.
    private let channelPeers = Mutex<Set<TransportAddress>>([])

    /// Connects to the grant's relay, allocates, and permits the relay's own IP (where the peer's allocation is);
    /// keeps all three refreshed, and the grant renewed through `context` while the link lives.
    static func open(grant: RelayGrant, strategy: TLSRelay, context: StrategyContext) async throws -> RelayLink {
        let logger = context.logger
        guard let found = strategy.server(in: grant, trust: context.relayTrust) else {
            throw StrategyError(code: .notApplicable, detail: "the relay grant offers no \(strategy.transport.rawValue) URL: \(grant.urls)")
        }
        let (server, transport) = found
        let configuration = TURNClient.Configuration(server: server, transport: transport, username: grant.username,
                                                     password: grant.password, retransmission: strategy.retransmission)
        let (client, allocation): (TURNClient, TURNAllocation)
        do {
            (client, allocation) = try await TURNClient.allocate(configuration)
        } catch is CancellationError {
            throw CancellationError()
        } catch let e as TURNError where e.errorCode != nil {
            throw refused(e, "relay \(server) refused the allocation")
        } catch {
            throw StrategyError(code: .failed, detail: "relay \(server) allocation: \(error)")
        }
        do {
            // The peer's relayed address is on this relay's IP too (RFC 8656 §9: permissions ignore ports).
            try await client.createPermission(for: [allocation.relayed])
        } catch {
            await client.close()
            if error is CancellationError { throw error }
            if let e = error as? TURNError, e.errorCode != nil {
                throw refused(e, "relay \(server) refused the permission for \(allocation.relayed.ip)")
            }
            throw StrategyError(code: .failed, detail: "relay \(server) permission: \(error)")
        }
        logger.debug("relay allocated", metadata: ["relayed": "\(allocation.relayed)", "server": "\(server)"])
        let link = RelayLink(client: client, allocation: allocation, server: server, via: strategy.transport.rawValue,
                             token: context.sessionToken, refreshInterval: strategy.refreshInterval, logger: logger)
        link.maintain(grant: grant, renew: context.renewRelay)
        return link
    }

    /// A `StrategyError` with code `refused`: what was refused, the relay's error code and its reason
    /// (`… refused the allocation: 486 Allocation Quota Reached`, RFC 8656 §7.2).
    static func refused(_ error: TURNError, _ what: String) -> StrategyError {
        StrategyError(code: .refused, detail: "\(what): \(error.errorCode.map { "\($0)" } ?? "\(error)")")
    }

    private init(client: TURNClient, allocation: TURNAllocation, server: TransportAddress, via: String, token: [UInt8],
                 refreshInterval: Duration, logger: Logger) {
        self.refreshInterval = refreshInterval
        self.logger = logger
        self.client = client
        self.allocation = allocation
        self.server = server
        self.via = via
        self.token = token
        let (probes, probeSink) = AsyncStream.makeStream(of: (TransportAddress, UDPPathSocket.ProbeKind).self,
                                                         bufferingPolicy: .bufferingNewest(UDPPathSocket.bufferLimit))
        let (messages, messageSink) = AsyncStream.makeStream(of: (TransportAddress, [UInt8]).self,
                                                             bufferingPolicy: .bufferingNewest(UDPPathSocket.bufferLimit))
        self.probes = probes
        self.messages = messages
        let verified = self.verified
        let pump = Task { [client, token] in
            for await data in client.received {
                let bytes = data.payload
                guard let first = bytes.first else { continue }
                if first == PeerWire.probe {
                    guard bytes.count == 2 + token.count, Array(bytes[2...]) == token,
                          let kind = UDPPathSocket.ProbeKind(rawValue: bytes[1]) else { continue }
                    verified.peers.withLock { v in if v.count < UDPPathSocket.maxPeers { v.insert(data.peer) } }
                    if kind == .ping {
                        try? await client.send([PeerWire.probe, UDPPathSocket.ProbeKind.pong.rawValue] + token, to: data.peer)
                    }
                    probeSink.yield((data.peer, kind))
                } else if PeerWire.isSessionMessage(bytes), verified.peers.withLock({ $0.contains(data.peer) }) {
                    messageSink.yield((data.peer, bytes))
                }
            }
            probeSink.finish()
            messageSink.finish()
        }
        tasks.withLock { $0 = [pump] }
    }

    /// When to renew a grant received at `now`: min(60 s, a third of its remaining life) before it expires.
    static func renewalTime(of grant: RelayGrant, now: Date = Date()) -> Date {
        let expires = Date(timeIntervalSince1970: TimeInterval(grant.expires))
        let remaining = max(0, expires.timeIntervalSince(now))
        return expires - min(60, remaining / 3)
    }

    /// Refreshes the allocation and permission every ``refreshInterval``, renews the grant before it
    /// expires (when `renew` is given) and refreshes at once with the renewed one; closes the link when
    /// the relay refuses a refresh.
    private func maintain(grant first: RelayGrant, renew: (@Sendable (RelayGrant) async throws -> RelayGrant)?) {
        let interval = refreshInterval
        // Weak: a link nobody holds any more stops refreshing after its next wait.
        let task = Task { [weak self] in
            var grant = first
            var renewAt = Self.renewalTime(of: grant)
            var nextRefresh = ContinuousClock.now + interval
            while !Task.isCancelled {
                let untilRenewal = renew == nil ? interval : Duration.seconds(max(0, renewAt.timeIntervalSinceNow))
                let wait = min(nextRefresh - ContinuousClock.now, untilRenewal)
                guard (try? await Task.sleep(for: max(.zero, wait))) != nil, let self else { return }
                var refreshNow = ContinuousClock.now >= nextRefresh
                if let renew, Date() >= renewAt {
                    do {
                        grant = try await renew(grant)
                        await client.renewCredentials(username: grant.username, password: grant.password)
                        renewAt = Self.renewalTime(of: grant)
                        refreshNow = true
                        logger.debug("relay grant renewed", metadata: ["expires": "\(grant.expires)"])
                    } catch is CancellationError {
                        return
                    } catch {
                        // Retried while the grant lasts; after that the relay refuses the refresh.
                        logger.warning("relay grant renewal failed", metadata: ["error": "\(error)"])
                        renewAt = Date() + TimeInterval(TLSRelay.renewalRetryInterval.components.seconds)
                    }
                }
                guard refreshNow else { continue }
                nextRefresh = ContinuousClock.now + interval
                do {
                    try await client.refresh()
                    try await client.createPermission(for: [allocation.relayed])
                    for peer in channelPeers.withLock({ $0 }) { try await client.bindChannel(to: peer) }
                } catch let e as TURNError where e.errorCode != nil {
                    logger.warning("relay refused a refresh; the relayed path ends", metadata: ["error": "\(e)"])
                    await close()
                    return
                } catch {
                    continue
                }
            }
        }
        tasks.withLock { $0.append(task) }
    }

    /// Pings `peer` every `interval` until it answers (viewer), or waits for the first ping (camera, `peer == nil`);
    /// returns the peer's relayed address, with a channel bound to it.
    func reach(_ peer: TransportAddress?, interval: Duration) async throws -> TransportAddress {
        let ping = [PeerWire.probe, UDPPathSocket.ProbeKind.ping.rawValue] + token
        let sender: Task<Void, Never>? = peer.map { target in
            Task { [client] in
                while !Task.isCancelled {
                    try? await client.send(ping, to: target)
                    try? await Task.sleep(for: interval)
                }
            }
        }
        defer { sender?.cancel() }
        for await (source, kind) in probes {
            if let peer {
                guard kind == .pong, source == peer else { continue }
            } else if kind != .ping {
                continue
            }
            // ChannelData costs 4 bytes per message instead of a Send indication's 36 (RFC 8656 §12).
            _ = try? await client.bindChannel(to: source)
            return source
        }
        try Task.checkCancellation()
        throw StrategyError(code: .failed, detail: "relay connection closed while probing")
    }

    /// The next session message from any peer that proved the session token, with its relayed address.
    func receiveAny() async throws -> (source: TransportAddress, message: [UInt8]) {
        for await (source, bytes) in messages {
            return (source, bytes)
        }
        try Task.checkCancellation()
        throw StrategyError(code: .failed, detail: "relay connection closed")
    }

    /// Whether `peer` proved the session token.
    func isVerified(_ peer: TransportAddress) -> Bool {
        verified.peers.withLock { $0.contains(peer) }
    }

    /// Keeps the channel to `peer` bound with each refresh (channels last 10 minutes, RFC 8656 §12).
    func keepChannel(to peer: TransportAddress) {
        channelPeers.withLock { _ = $0.insert(peer) }
    }

    /// Makes `peer` the only one the link serves: the peer replaced its end of the session (a fresh allocation
    /// that proved the token, then answered a sealed check), so the old address is forgotten, its channel no
    /// longer refreshed, and the new one gets a channel.
    func follow(_ peer: TransportAddress) {
        verified.peers.withLock { $0 = [peer] }
        channelPeers.withLock { $0 = [peer] }
        let task = Task { [client] in _ = try? await client.bindChannel(to: peer) }
        tasks.withLock { $0.append(task) }
    }

    /// Deletes the allocation and closes the connection to the relay.
    func close() async {
        let all = tasks.withLock { t -> [Task<Void, Never>] in let c = t; t = []; return c }
        for t in all { t.cancel() }
        await client.close()
    }
}

/// A prepared relay: the camera's allocation, or nothing yet on the viewer.
final class PreparedTLSRelay: PreparedStrategy {
    let strategy: TLSRelay
    let candidates: [Candidate]
    private let owned = Mutex<[RelayLink]>([])
    private let link: RelayLink?
    /// Why the relay refused the camera's allocation, when it did.
    private let refusal: String?
    /// The candidate detail key under which a camera offers its relay's refusal instead of an address.
    static let refusedKey = "refused"

    init(strategy: TLSRelay, link: RelayLink?, refusal: String? = nil) {
        self.strategy = strategy
        self.link = link
        self.refusal = refusal
        if let link {
            candidates = [Candidate(strategy: strategy.id, kind: .relayed, address: link.allocation.relayed.description,
                                    detail: ["via": link.via])]
            owned.withLock { $0 = [link] }
        } else if let refusal {
            candidates = [Candidate(strategy: strategy.id, kind: .relayed, address: "-",
                                    detail: [Self.refusedKey: String(refusal.prefix(CloudProtocol.maxShortStringLength))])]
        } else {
            candidates = []
        }
    }

    /// ``TLSRelay/startDelay``, or zero when the two offers share no transport with a
    /// server-reflexive address on both sides: then no direct strategy across the NATs can work.
    /// Nor can it between two NATs that both map randomly. A pair that both have TCP still gets
    /// its chance at `tcp-simultaneous-open` first; a pair that needs the birthday method waits
    /// ``TLSRelay/birthdayStartDelay`` (or `startDelay`, if longer).
    func startDelay(local: PeerOffer, remote: PeerOffer) -> Duration {
        let direct = !UDPHolePunch.bothMapRandomly(local, remote)
            && ["udp", "tcp"].contains { local.hasReflexive($0) && remote.hasReflexive($0) }
        guard direct else { return .zero }
        return UDPHolePunch.needsBirthday(local, remote) ? max(strategy.startDelay, TLSRelay.birthdayStartDelay) : strategy.startDelay
    }

    func connect(remote: PeerOffer, context: StrategyContext) async throws -> any PeerTransport {
        let timeout = strategy.connectTimeout
        let interval = strategy.probeInterval
        if let link {
            // Camera: the viewer pings our relayed address from its own.
            let peer = try await deadline(timeout, "no ping from the viewer through the relay") {
                try await link.reach(nil, interval: interval)
            }
            return hand(link, peer: peer)
        }
        if let refusal { throw StrategyError(code: .refused, detail: refusal) }
        guard var grant = context.relay else {
            throw StrategyError(code: .notApplicable, detail: "the cloud issued no relay grant")
        }
        // A standby connected again late in a long session may hold a grant near its end: renewed first.
        if let renew = context.renewRelay, RelayLink.renewalTime(of: grant) <= Date() {
            grant = (try? await renew(grant)) ?? grant
        }
        let theirs = remote.candidates.first { $0.strategy == strategy.id && $0.kind == .relayed }
        if let refused = theirs?.detail[Self.refusedKey] {
            throw StrategyError(code: .refused, detail: "the peer's relay allocation failed: \(refused)")
        }
        guard let theirs, let target = TransportAddress(theirs.address) else {
            throw StrategyError(code: .notApplicable, detail: "the peer offered no relayed address")
        }
        let link = try await RelayLink.open(grant: grant, strategy: strategy, context: context)
        owned.withLock { $0.append(link) }
        do {
            let peer = try await deadline(timeout, "the camera's relayed address \(target) did not answer") {
                try await link.reach(target, interval: interval)
            }
            return hand(link, peer: peer)
        } catch {
            await closeAll()
            throw error
        }
    }

    private func hand(_ link: RelayLink, peer: TransportAddress) -> RelayPeerTransport {
        owned.withLock { $0.removeAll { $0 === link } }
        link.keepChannel(to: peer)
        return RelayPeerTransport(link: link, peer: peer)
    }

    private func deadline<T: Sendable>(_ limit: Duration, _ detail: String,
                                       _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: limit)
                throw StrategyError(code: .unreachable, detail: "\(detail) within \(limit)")
            }
            defer { group.cancelAll() }
            guard let first = try await group.next() else { throw CancellationError() }
            return first
        }
    }

    private func closeAll() async {
        let all = owned.withLock { o -> [RelayLink] in let c = o; o = []; return c }
        for l in all { await l.close() }
    }

    func close() async {
        await closeAll()
    }
}

/// A `PeerTransport` through a TURN allocation to the peer's relayed address. The peer may replace its end
/// (a fresh allocation after it roamed or lost its relay connection): a message from another relayed address
/// that proved the session token is handed up with its source, and the session moves there only after a sealed
/// check (``rebind(to:)``), as a direct path follows a rebinding NAT.
public struct RelayPeerTransport: RebindablePeerTransport {
    /// The peer's relayed address, replaceable.
    private final class Current: Sendable {
        let peer: Mutex<TransportAddress>
        init(_ peer: TransportAddress) { self.peer = Mutex(peer) }
    }

    let link: RelayLink
    private let current: Current

    init(link: RelayLink, peer: TransportAddress) {
        self.link = link
        self.current = Current(peer)
    }

    /// The peer's relayed address.
    public var peer: TransportAddress { current.peer.withLock { $0 } }
    /// Datagrams: true (the relay forwards UDP between the two allocations).
    public var isDatagram: Bool { true }
    /// The relay carries it: true.
    public var isRelayed: Bool { true }
    /// `relay tls LOCAL -> SERVER relayed OURS -> PEER`.
    public var pathDescription: String {
        "relay \(link.via) \(link.client.localAddress) -> \(link.server) relayed \(link.allocation.relayed) -> \(peer)"
    }
    /// The peer's relayed address (an address of the relay).
    public var remoteAddress: SocketAddress? { peer.socketAddress }
    /// ``TLSRelay/maxMessageSize``.
    public var maxMessageSize: Int { TLSRelay.maxMessageSize }
    /// Sends one message to the peer through the relay.
    public func send(_ message: [UInt8]) async throws {
        try await send(message, toRelayed: peer)
    }
    /// Receives the next session message from the peer.
    public func receive() async throws -> [UInt8] {
        // Bounded by the stream: each turn consumes one message.
        while true {
            let (source, message) = try await link.receiveAny()
            if source == peer { return message }
        }
    }
    /// The next session message from the peer's relayed address or another one that proved the session token.
    public func receiveFromAnyAddress() async throws -> (message: [UInt8], source: SocketAddress) {
        let (source, message) = try await link.receiveAny()
        return (message, source.socketAddress)
    }
    /// Sends to `address`, a relayed address that proved the session token (a check of the peer's replacement).
    public func send(_ message: [UInt8], to address: SocketAddress) async throws {
        guard let target = TransportAddress(address), link.isVerified(target) else {
            throw StrategyError(code: .failed, detail: "\(address) has not proved the session token on this relay")
        }
        try await send(message, toRelayed: target)
    }
    /// Sends to `address` from now on, and serves only it: the peer's replacement answered its check.
    public func rebind(to address: SocketAddress) {
        guard let target = TransportAddress(address), link.isVerified(target) else { return }
        current.peer.withLock { $0 = target }
        link.follow(target)
    }
    /// Deletes the allocation and closes the connection to the relay.
    public func close() async {
        await link.close()
    }

    private func send(_ message: [UInt8], toRelayed target: TransportAddress) async throws {
        guard message.count <= TLSRelay.maxMessageSize else {
            throw StrategyError(code: .failed, detail: "message of \(message.count) bytes exceeds \(TLSRelay.maxMessageSize)")
        }
        try await link.client.send(message, to: target)
    }
}
