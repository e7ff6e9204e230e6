import Logging
import Synchronization
import STUNLite
import Traversal

/// `direct-lan`: both sides ping each other's interface addresses; works when they share a LAN
/// (or a host), at once and without any server.
public struct DirectLAN: TraversalStrategy {
    /// The strategy id.
    public let id = "direct-lan"
    /// Interval between ping rounds.
    public var probeInterval: Duration
    /// Ping rounds before giving up (with the default interval: 3 s).
    public var maxPings: Int
    /// Which interface addresses to offer.
    public enum Scope: Sendable, Hashable {
        /// Every IPv4 interface address, loopback last (camera and viewer on one LAN or one host).
        case allInterfaces
        /// Loopback addresses only: a demo or test on one host that must not touch the real network.
        case loopbackOnly
    }

    /// Which interface addresses to offer.
    public var scope: Scope

    /// Creates the strategy; defaults: 50 ms between pings, 60 pings (3 s), every interface.
    public init(probeInterval: Duration = .milliseconds(50), maxPings: Int = 60, scope: Scope = .allInterfaces) {
        self.probeInterval = probeInterval
        self.maxPings = maxPings
        self.scope = scope
    }

    /// Opens a socket and offers one host candidate per interface address.
    public func prepare(_ context: StrategyContext) async throws -> any PreparedStrategy {
        let socket = try await UDPPathSocket.open()
        let port = socket.client.localAddress.port
        let addresses = localIPv4Addresses().filter { scope == .allInterfaces || isLoopback($0) }
        let candidates = addresses.map {
            Candidate(strategy: id, kind: .host, address: TransportAddress(ip: $0, port: port).description)
        }
        return PreparedUDP(id: id, socket: socket, candidates: candidates, delay: .zero, active: true,
                           targetKinds: [.host], probeInterval: probeInterval, maxPings: maxPings)
    }

    private func isLoopback(_ ip: IPAddress) -> Bool {
        if case .v4(let a) = ip { return a >> 24 == 127 }
        return false
    }
}

/// `stun-discovery`: learn our server-reflexive address from the cloud's STUN server; the viewer
/// connects to the camera's, the camera only answers. Works when the camera's NAT filters nothing
/// (open or full-cone), without coordinated punching.
public struct STUNDiscovery: TraversalStrategy {
    /// The strategy id.
    public let id = "stun-discovery"
    /// Interval between ping rounds.
    public var probeInterval: Duration
    /// Ping rounds before giving up.
    public var maxPings: Int
    /// Retransmission schedule for the STUN Binding (short: the cloud is a round trip away).
    public var stunPolicy: STUNRetransmissionPolicy

    /// Creates the strategy; defaults: 50 ms between pings, 100 pings (5 s), STUN's quick schedule.
    public init(probeInterval: Duration = .milliseconds(50), maxPings: Int = 100, stunPolicy: STUNRetransmissionPolicy = .quick) {
        self.probeInterval = probeInterval
        self.maxPings = maxPings
        self.stunPolicy = stunPolicy
    }

    /// Opens a socket and asks the first STUN server for its mapping.
    public func prepare(_ context: StrategyContext) async throws -> any PreparedStrategy {
        guard let server = context.stunServers.lazy.compactMap({ TransportAddress($0, defaultPort: 3478) }).first else {
            throw StrategyError(code: .notApplicable, detail: "no STUN server configured")
        }
        let socket = try await UDPPathSocket.open()
        do {
            let response = try await socket.client.binding(to: server, policy: stunPolicy)
            guard let mapped = response.mappedAddress else {
                throw StrategyError(code: .failed, detail: "STUN response without a mapped address")
            }
            let candidate = Candidate(strategy: id, kind: .serverReflexive, address: mapped.description)
            return PreparedUDP(id: id, socket: socket, candidates: [candidate], delay: .milliseconds(20),
                               active: context.role == .viewer, targetKinds: [.serverReflexive],
                               probeInterval: probeInterval, maxPings: maxPings)
        } catch {
            await socket.close()
            throw error
        }
    }
}

/// A prepared UDP strategy: a socket, its candidates, and how to probe the peer's.
final class PreparedUDP: PreparedStrategy {
    let id: String
    let socket: UDPPathSocket
    let candidates: [Candidate]
    let delay: Duration
    let active: Bool
    let targetKinds: Set<Candidate.Kind>
    let probeInterval: Duration
    let maxPings: Int
    let handedOver = Mutex(false)

    init(id: String, socket: UDPPathSocket, candidates: [Candidate], delay: Duration, active: Bool,
         targetKinds: Set<Candidate.Kind>, probeInterval: Duration, maxPings: Int) {
        self.id = id
        self.socket = socket
        self.candidates = candidates
        self.delay = delay
        self.active = active
        self.targetKinds = targetKinds
        self.probeInterval = probeInterval
        self.maxPings = maxPings
    }

    func startDelay(local: PeerOffer, remote: PeerOffer) -> Duration { delay }

    func connect(remote: PeerOffer, context: StrategyContext) async throws -> any PeerTransport {
        try await connect(remote: remote, context: context, active: active)
    }

    /// ``connect(remote:context:)`` probing the peer's candidates (`active`) or waiting for its probes.
    func connect(remote: PeerOffer, context: StrategyContext, active: Bool) async throws -> any PeerTransport {
        let targets = remote.candidates
            .filter { $0.strategy == id && $0.transport == "udp" && targetKinds.contains($0.kind) }
            .compactMap { TransportAddress($0.address) }
        guard !targets.isEmpty || !active else {
            throw StrategyError(code: .notApplicable, detail: "the peer offered no \(id) candidates")
        }
        let session = socket.session(token: context.sessionToken, budget: context.probeBudget)
        let (probeInterval, maxPings) = (self.probeInterval, self.maxPings)
        let deadline = probeInterval * maxPings
        let peer: TransportAddress
        do {
            peer = try await withThrowingTaskGroup(of: TransportAddress.self) { group in
                group.addTask { try await session.probe(targets, active: active, interval: probeInterval, maxPings: maxPings) }
                group.addTask {
                    try await Task.sleep(for: deadline + probeInterval * 2)
                    throw StrategyError(code: .unreachable, detail: "no answer from \(targets.map(\.description)) in \(deadline)")
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
        } catch {
            await session.close()
            throw error
        }
        context.logger.debug("path found", metadata: ["strategy": "\(id)", "peer": "\(peer)"])
        handedOver.withLock { $0 = true }
        return session.transport(to: peer)
    }

    /// Closes the socket unless a transport took it over (its owner closes it then).
    func close() async {
        if !handedOver.withLock({ $0 }) { await socket.close() }
    }
}
