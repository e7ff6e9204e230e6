import Logging
import NIOCore
import STUNLite
import Synchronization
import Traversal

/// `port-mapping`: the camera asks its router for a UDP port mapping (PCP, NAT-PMP or UPnP IGD)
/// for the socket it will answer on and offers the mapped public address; the viewer probes it.
/// Works behind any NAT whose router grants mappings, symmetric ones included, with no punching.
///
/// ```
///  camera ──PCP MAP / NAT-PMP / AddPortMapping──► its router ──► public ip:port
///  camera ──offer(public ip:port)──► cloud ──► viewer ──probe──► public ip:port ──DNAT──► camera
///  session ends ─► lifetime 0 / DeletePortMapping
/// ```
///
/// Protocols are tried in the order RFC 6887 §9 suggests: PCP first, NAT-PMP when the gateway
/// answers PCP with "unsupported version", and UPnP IGD (discovered by SSDP at the same time) when
/// neither maps. The mapping lives as long as the session's transport (renewed at half its
/// lifetime) and is deleted when the transport closes, or at once when another strategy wins.
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

    /// The camera maps a fresh socket and offers the mapping; the viewer opens a socket to probe from.
    public func prepare(_ context: StrategyContext) async throws -> any PreparedStrategy {
        let socket = try await UDPPathSocket.open()
        guard context.role == .camera else {
            return PreparedPortMapping(inner: PreparedUDP(id: id, socket: socket, candidates: [], delay: .zero, active: true,
                                                          targetKinds: [.serverReflexive], probeInterval: probeInterval, maxPings: maxPings),
                                       lease: nil)
        }
        do {
            let route = try self.route ?? GatewayRoute.current()
            let lease = try await acquire(route: route, port: socket.client.localAddress.port, logger: context.logger)
            let candidate = Candidate(strategy: id, kind: .serverReflexive, address: lease.granted.external.description,
                                      detail: ["protocol": lease.kind.rawValue])
            return PreparedPortMapping(inner: PreparedUDP(id: id, socket: socket, candidates: [candidate], delay: .zero, active: false,
                                                          targetKinds: [.serverReflexive], probeInterval: probeInterval, maxPings: maxPings),
                                       lease: lease)
        } catch {
            await socket.close()
            throw error
        }
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

/// A prepared port mapping: the probing socket and the lease behind its candidate (camera only).
final class PreparedPortMapping: PreparedStrategy {
    let inner: PreparedUDP
    let lease: PortMappingLease?
    private let handedOver = Mutex(false)

    init(inner: PreparedUDP, lease: PortMappingLease?) {
        self.inner = inner
        self.lease = lease
    }

    var candidates: [Candidate] { inner.candidates }

    func startDelay(local: PeerOffer, remote: PeerOffer) -> Duration { .zero }

    func connect(remote: PeerOffer, context: StrategyContext) async throws -> any PeerTransport {
        let transport = try await inner.connect(remote: remote, context: context)
        handedOver.withLock { $0 = true }
        // The viewer names the camera's mapping as its offer announced it.
        let theirs = remote.candidates.first { $0.strategy == inner.id }
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
