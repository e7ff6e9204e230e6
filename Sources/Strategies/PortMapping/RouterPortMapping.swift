import Logging
import NIOCore
import STUNLite
import Synchronization
import Traversal

/// `port-mapping`: each side asks its router for a UDP port mapping (PCP, NAT-PMP or UPnP IGD) for the
/// socket it will use and offers the mapped public address; a side probes the peer's mapping when it offered
/// one, and otherwise waits for the peer's probes to its own. Works behind any NAT whose router grants
/// mappings, symmetric ones included, on either side, with no punching.
///
/// ```
///  camera ──PCP MAP / NAT-PMP / AddPortMapping──► its router ──► public ip:port
///  camera ──offer(public ip:port)──► cloud ──► viewer ──probe──► public ip:port ──DNAT──► camera
///  (the camera's router maps nothing, the viewer's does: the same the other way round, the camera probing)
///  session ends ─► lifetime 0 / DeletePortMapping
/// ```
///
public struct RouterPortMapping: TraversalStrategy {
    /// The strategy id.
    public let id = "port-mapping"
    /// Which protocols may be used, in any order (PCP, then NAT-PMP, then UPnP IGD are tried as available).
    public var protocols: Set<PortMappingProtocol>
    /// The lifetime asked for, seconds (RFC 6886 §3.3 recommends 7200).
    public var lifetime: UInt32
    /// Retransmission schedule of each PCP and NAT-PMP request; an absent gateway costs its total.
    public var schedule: PortMappingStateMachine.Schedule
    /// How long one UPnP SOAP call (over TCP, which retransmits by itself) may take.
    public var upnpTimeout: Duration
    /// The router and our address toward it; nil: the default gateway.
    public var route: GatewayRoute?
    /// Interval between the viewer's probes.
    public var probeInterval: Duration
    /// Probe rounds before giving up.
    public var maxPings: Int

    /// Creates the strategy; defaults: every protocol, 7200 s, the race schedule (750 ms), 1 s per SOAP call,
    /// probes every 50 ms for 5 s.
    public init(protocols: Set<PortMappingProtocol> = Set(PortMappingProtocol.allCases), lifetime: UInt32 = 7200,
                schedule: PortMappingStateMachine.Schedule = .race, upnpTimeout: Duration = .seconds(1), route: GatewayRoute? = nil,
                probeInterval: Duration = .milliseconds(50), maxPings: Int = 100) {
        self.protocols = protocols
        self.lifetime = lifetime
        self.schedule = schedule
        self.upnpTimeout = upnpTimeout
        self.route = route
        self.probeInterval = probeInterval
        self.maxPings = maxPings
    }

    /// Maps a fresh socket on this side's router and offers the mapping; a router that maps nothing leaves the
    /// socket to probe the peer's mapping from (the viewer's gathering waits for the attempt: up to the
    /// ``schedule``'s total, 750 ms by default, where no gateway answers).
    public func prepare(_ context: StrategyContext) async throws -> any PreparedStrategy {
        let socket = try await UDPPathSocket.open()
        let lease: PortMappingLease?
        let refusal: String?
        do {
            let route = try self.route ?? GatewayRoute.current()
            lease = try await acquire(route: route, port: socket.client.localAddress.port, logger: context.logger)
            refusal = nil
        } catch is CancellationError {
            await socket.close()
            throw CancellationError()
        } catch {
            lease = nil
            refusal = (error as? StrategyError)?.detail ?? "\(error)"
            context.logger.debug("no router mapping", metadata: ["error": "\(error)"])
        }
        let candidates = lease.map {
            [Candidate(strategy: id, kind: .serverReflexive, address: $0.granted.external.description, detail: ["protocol": $0.kind.rawValue])]
        } ?? []
        return PreparedPortMapping(inner: PreparedUDP(id: id, socket: socket, candidates: candidates, delay: .zero, active: true,
                                                      targetKinds: [.serverReflexive], probeInterval: probeInterval, maxPings: maxPings),
                                   lease: lease, refusal: refusal)
    }

    /// A mapping for local UDP `port` by the first protocol that grants one.
    func acquire(route: GatewayRoute, port: UInt16, logger: Logger) async throws -> PortMappingLease {
        let total = schedule.timeouts.reduce(Duration.zero, +)
        // UPnP discovery runs beside PCP / NAT-PMP so an absent gateway costs one schedule, not two.
        let upnp: Task<UPnPMappingExchange, any Error>? = protocols.contains(.upnpIGD)
            ? Task { [upnpTimeout] in
                try await UPnPMappingExchange.discover(route: route, internalPort: port, within: total, callTimeout: upnpTimeout)
            } : nil
        var failures: [String] = []
        var gatewayListens = true
        for kind in [PortMappingProtocol.pcp, .natPMP] where protocols.contains(kind) && gatewayListens {
            do {
                let exchange = try await UDPMappingExchange(kind: kind, route: route, internalPort: port)
                let lease = try await PortMappingLease.acquire(exchange, lifetime: lifetime, schedule: schedule, logger: logger)
                upnp?.cancel()
                return lease
            } catch let e as PortMappingError {
                failures.append("\(kind.rawValue): \(e.detail)")
                // Nobody answered on port 5351: NAT-PMP, on the same port, would not fare better.
                if e.code == .noAnswer { gatewayListens = false }
            }
        }
        if let upnp {
            do {
                let exchange = try await upnp.value
                return try await PortMappingLease.acquire(exchange, lifetime: lifetime, schedule: .init(timeouts: [upnpTimeout]), logger: logger)
            } catch let e as PortMappingError {
                failures.append("upnp-igd: \(e.detail)")
            } catch is DeadlineExceeded {
                failures.append("upnp-igd: no IGD answered within \(total)")
            } catch {
                failures.append("upnp-igd: \(error)")
            }
        }
        throw StrategyError(code: .notApplicable, detail: "router \(route.gateway) grants no mapping (\(failures.joined(separator: "; ")))")
    }
}

/// A prepared port mapping: the socket and the lease behind its candidate, if this side's router granted one.
final class PreparedPortMapping: PreparedStrategy {
    let inner: PreparedUDP
    let lease: PortMappingLease?
    /// Why this side's router granted no mapping (nil: it did).
    let refusal: String?
    private let handedOver = Mutex(false)

    init(inner: PreparedUDP, lease: PortMappingLease?, refusal: String? = nil) {
        self.inner = inner
        self.lease = lease
        self.refusal = refusal
    }

    var candidates: [Candidate] { inner.candidates }

    func startDelay(local: PeerOffer, remote: PeerOffer) -> Duration { .zero }

    /// Probes the peer's mapping if it offered one (both do when both routers mapped), else waits for the peer's
    /// probes to ours; neither mapped: not applicable.
    func connect(remote: PeerOffer, context: StrategyContext) async throws -> any PeerTransport {
        let theirs = remote.candidates.first { $0.strategy == inner.id }
        guard theirs != nil || lease != nil else {
            throw StrategyError(code: .notApplicable, detail: "neither router granted a mapping (ours: \(refusal ?? "none asked"))")
        }
        let transport = try await inner.connect(remote: remote, context: context, active: theirs != nil)
        handedOver.withLock { $0 = true }
        // A side without a mapping of its own names the peer's, as its offer announced it.
        let via = lease.map { "\($0.kind.rawValue) mapping \($0.granted.external)" }
            ?? theirs.map { "peer's \($0.detail["protocol"] ?? "router") mapping \($0.address)" }
        return MappedPeerTransport(inner: transport, lease: lease, via: via)
    }

    /// Closes the socket and deletes the mapping unless a transport took them over.
    func close() async {
        await inner.close()
        if !handedOver.withLock({ $0 }) { await lease?.release() }
    }
}

/// A UDP transport that owns the router mapping it arrived through: closing it deletes the mapping.
struct MappedPeerTransport: PeerTransport {
    let inner: any PeerTransport
    let lease: PortMappingLease?
    let via: String?

    var isDatagram: Bool { inner.isDatagram }
    var pathDescription: String { inner.pathDescription + (via.map { " (\($0))" } ?? "") }
    var remoteAddress: SocketAddress? { inner.remoteAddress }
    var maxMessageSize: Int { inner.maxMessageSize }
    var probeMessageSize: Int { inner.probeMessageSize }
    func send(_ message: [UInt8]) async throws { try await inner.send(message) }
    func receive() async throws -> [UInt8] { try await inner.receive() }
    func close() async {
        await inner.close()
        await lease?.release()
    }
}
