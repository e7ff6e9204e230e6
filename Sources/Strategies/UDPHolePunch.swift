import Logging
import STUNLite
import Synchronization
import Traversal

/// `udp-hole-punch`: both sides send to each other's server-reflexive (and predicted) addresses
/// from the start signal on, paced, until one side's probe is answered (RFC 5128 §3.3).
///
/// Mapping behaviour comes from two STUN Bindings from one socket: to the server and to its
/// OTHER-ADDRESS (RFC 5780 §4.3). Endpoint-independent pairs punch directly whatever their
/// filtering. Against a peer whose mapping changes per destination ("symmetric"):
/// - when that NAT allocates sequentially, the next ports are predicted and probed;
/// - otherwise the birthday method: the hard side opens ``birthdaySockets`` sockets, each probing
///   the easy side, while the easy side probes ``birthdayProbes`` random ports of the hard side's
///   address, so one of them meets an open mapping with high probability;
/// - when both sides are symmetric it gives up at once with the reason (a relay must carry it).
public struct UDPHolePunch: TraversalStrategy {
    /// The strategy id.
    public let id = "udp-hole-punch"
    /// Interval between probe rounds to the peer's candidates.
    public var probeInterval: Duration
    /// Probe rounds before giving up (with the defaults: 5 s).
    public var maxPings: Int
    /// Sockets the hard (symmetric) side opens for the birthday method.
    public var birthdaySockets: Int
    /// Random ports the easy side probes on the hard side's address in the birthday method.
    public var birthdayProbes: Int
    /// How long the birthday method may take in all.
    public var birthdayBudget: Duration
    /// Ports predicted beyond the last observed one for a sequential symmetric NAT.
    public var predictedPorts: Int
    /// STUN schedule for discovering the mapping.
    public var stunPolicy: STUNRetransmissionPolicy
    /// A relayed session punches again in the background and moves to the punched path: true.
    public var upgradesRelayedSessions: Bool { true }

    /// Creates the strategy with the defaults: 20 ms pacing for 5 s; birthday 256 sockets × 2048 probes
    /// within 5 s (a hit with probability 1 − (1 − 256/64512)^2048 ≈ 99.97% once the mappings are open); 8 predicted ports.
    public init(probeInterval: Duration = .milliseconds(20), maxPings: Int = 250, birthdaySockets: Int = 256,
                birthdayProbes: Int = 2048, birthdayBudget: Duration = .seconds(5), predictedPorts: Int = 8,
                stunPolicy: STUNRetransmissionPolicy = .quick) {
        self.probeInterval = probeInterval
        self.maxPings = maxPings
        self.birthdaySockets = birthdaySockets
        self.birthdayProbes = birthdayProbes
        self.birthdayBudget = birthdayBudget
        self.predictedPorts = predictedPorts
        self.stunPolicy = stunPolicy
    }

    /// How long the hard side of a birthday gives its gathered socket alone before opening the
    /// birthday sockets: a peer NAT that filters by address only (or not at all) lets that socket
    /// through within a round trip, and opening hundreds of sockets would only slow the handshake.
    public static let birthdayHoldOff: Duration = .milliseconds(50)

    /// Whether a hole punch between these offers takes the birthday method: exactly one side's
    /// NAT maps each destination to a new random port (both random: impossible; neither: direct).
    public static func needsBirthday(_ a: PeerOffer, _ b: PeerOffer) -> Bool {
        guard let ma = mapping(in: a), let mb = mapping(in: b), ma != .unknown, mb != .unknown else { return false }
        return (ma == .random) != (mb == .random)
    }

    /// Whether both offers come from NATs that map each destination to a new random port: no
    /// direct path across them (the hole punch gives up at once, and TCP mappings behave alike).
    public static func bothMapRandomly(_ a: PeerOffer, _ b: PeerOffer) -> Bool {
        mapping(in: a) == .random && mapping(in: b) == .random
    }

    /// The mapping behaviour an offer's `udp-hole-punch` candidate announces.
    static func mapping(in offer: PeerOffer) -> Mapping? {
        offer.candidates.first { $0.strategy == "udp-hole-punch" && $0.kind == .serverReflexive }
            .map { Mapping(rawValue: $0.detail["mapping"] ?? "") ?? .unknown }
    }

    /// How many times the hard side of a birthday announces the socket it picked.
    static let chosenAnnouncements = 15

    /// What our NAT does with mappings, as the candidates tell the peer.
    enum Mapping: String {
        case endpointIndependent = "endpoint-independent"
        case sequential
        case random
        case unknown
    }

    /// Learns the mapping (and its behaviour) from one socket.
    public func prepare(_ context: StrategyContext) async throws -> any PreparedStrategy {
        guard let server = context.stunServers.lazy.compactMap({ TransportAddress($0, defaultPort: 3478) }).first else {
            throw StrategyError(code: .notApplicable, detail: "no STUN server configured")
        }
        let socket = try await UDPPathSocket.open()
        do {
            let first = try await socket.client.binding(to: server, policy: stunPolicy)
            guard let mapped = first.mappedAddress else { throw StrategyError(code: .failed, detail: "no mapped address") }
            var mapping = Mapping.unknown
            var candidates: [Candidate] = []
            var delta = 0
            if let other = first.otherAddress, let second = try? await socket.client.binding(to: other, policy: stunPolicy).mappedAddress {
                delta = Int(second.port) - Int(mapped.port)
                if second == mapped {
                    mapping = .endpointIndependent
                } else if delta > 0, delta <= 16, second.ip == mapped.ip {
                    mapping = .sequential
                } else {
                    mapping = .random
                }
                if second != mapped {
                    candidates.append(Candidate(strategy: id, kind: .serverReflexive, address: second.description,
                                                detail: ["mapping": mapping.rawValue]))
                }
                if mapping == .sequential {
                    // Our next mappings will likely take the next ports: tell the peer (RFC 5128 §3.4 port prediction).
                    for k in 1...predictedPorts {
                        let port = Int(second.port) + delta * k
                        guard port < 65536 else { break }
                        candidates.append(Candidate(strategy: id, kind: .predicted,
                                                    address: TransportAddress(ip: second.ip, port: UInt16(port)).description))
                    }
                }
            }
            candidates.insert(Candidate(strategy: id, kind: .serverReflexive, address: mapped.description,
                                        detail: ["mapping": mapping.rawValue]), at: 0)
            return PreparedHolePunch(strategy: self, socket: socket, candidates: candidates, mapping: mapping, server: server)
        } catch {
            await socket.close()
            throw error
        }
    }
}

/// A prepared hole punch: the discovery socket and what we learned of our NAT.
final class PreparedHolePunch: PreparedStrategy {
    let strategy: UDPHolePunch
    let socket: UDPPathSocket
    let candidates: [Candidate]
    let mapping: UDPHolePunch.Mapping
    let server: TransportAddress
    private let owned = Mutex<[UDPPathSocket]>([])
    private let handedOver = Mutex<UDPPathSocket?>(nil)

    init(strategy: UDPHolePunch, socket: UDPPathSocket, candidates: [Candidate], mapping: UDPHolePunch.Mapping, server: TransportAddress) {
        self.strategy = strategy
        self.socket = socket
        self.candidates = candidates
        self.mapping = mapping
        self.server = server
        owned.withLock { $0 = [socket] }
    }

    func startDelay(local: PeerOffer, remote: PeerOffer) -> Duration { .zero }

    func connect(remote: PeerOffer, context: StrategyContext) async throws -> any PeerTransport {
        let theirs = remote.candidates.filter { $0.strategy == strategy.id && $0.transport == "udp" }
        let targets = theirs.compactMap { TransportAddress($0.address) }
        guard let reflexive = theirs.first(where: { $0.kind == .serverReflexive }),
              let theirAddress = TransportAddress(reflexive.address) else {
            throw StrategyError(code: .notApplicable, detail: "the peer offered no udp-hole-punch candidates")
        }
        let theirMapping = UDPHolePunch.mapping(in: remote) ?? .unknown
        let weAreHard = mapping == .random
        let theyAreHard = theirMapping == .random
        if weAreHard && theyAreHard {
            throw StrategyError(code: .impossible, detail:
                "both NATs map each destination to a new random port (symmetric × symmetric): no direct UDP path; a relay must carry this pair")
        }
        let interval = strategy.probeInterval
        let probeBudget = context.probeBudget
        let session = socket.session(token: context.sessionToken, budget: probeBudget)
        // The birthday method sends thousands of probes: only toward the address a cloud saw the
        // requester at (a camera's budget vouches for it), never toward whatever an offer names.
        let birthdayAllowed = probeBudget?.isVouched(theirAddress.socketAddress) ?? true
        // Birthday, hard side: many more sockets, each opening a mapping toward the easy side.
        let birthdaySockets = weAreHard && theirMapping != .unknown && birthdayAllowed ? strategy.birthdaySockets : 0
        var extraTargets: [TransportAddress] = []
        if theyAreHard && birthdayAllowed {
            // Birthday, easy side: random ports on the hard side's address (their predicted ports come first in `targets`).
            var rng = SystemRandomNumberGenerator()
            extraTargets = (0..<strategy.birthdayProbes).map { _ in
                TransportAddress(ip: theirAddress.ip, port: UInt16.random(in: 1024...65535, using: &rng))
            }
        }
        let budget = (weAreHard || theyAreHard) ? strategy.birthdayBudget : interval * strategy.maxPings
        let maxPings = strategy.maxPings
        let extra = extraTargets
        let token = context.sessionToken
        do {
            let (winner, peer) = try await withThrowingTaskGroup(of: (UDPPathSocket, TransportAddress).self) { group in
                // In a birthday several addresses may reach the peer: the hard side picks the first
                // that hears from the easy side and announces it; the easy side waits for that choice.
                let until: Set<UDPPathSocket.ProbeKind>? = weAreHard ? [.pong, .ping] : theyAreHard ? [.chosen] : nil
                // The gathered socket probes at once: against a peer whose NAT filters by address
                // only (or not at all) it is all a symmetric side needs.
                group.addTask { (session, try await session.probe(targets, active: true, interval: interval, maxPings: maxPings, until: until)) }
                if birthdaySockets > 0 {
                    // Unless the gathered socket got through first, the birthday sockets open side
                    // by side, and each probes as soon as it is open; they only need a few probes
                    // each to open their mappings.
                    group.addTask {
                        try await Task.sleep(for: UDPHolePunch.birthdayHoldOff)
                        return try await withThrowingTaskGroup(of: (UDPPathSocket, TransportAddress)?.self) { births in
                            for _ in 0..<birthdaySockets {
                                births.addTask {
                                    guard let s = try? await UDPPathSocket.open() else { return nil }
                                    self.owned.withLock { $0.append(s) }
                                    let b = s.session(token: token, budget: probeBudget)
                                    return (b, try await b.probe(targets, active: true, interval: interval * 10,
                                                                 maxPings: max(1, maxPings / 10), until: until))
                                }
                            }
                            defer { births.cancelAll() }  // the losers probe until cancelled
                            while let next = try await births.next() {
                                if let next { return next }
                            }
                            throw StrategyError(code: .failed, detail: "no birthday socket could be opened")
                        }
                    }
                }
                if !extra.isEmpty {
                    // Spread the random probes over the budget's first half, a few per pacing interval.
                    group.addTask {
                        let perRound = max(1, extra.count / max(1, Int((budget / 2) / interval)))
                        var i = 0
                        while i < extra.count, !Task.isCancelled {
                            for t in extra[i..<min(i + perRound, extra.count)] {
                                await session.sendProbe([PeerWire.probe, UDPPathSocket.ProbeKind.ping.rawValue] + token, to: t)
                            }
                            i += perRound
                            try? await Task.sleep(for: interval)
                        }
                        try await Task.sleep(for: budget)
                        throw CancellationError()
                    }
                }
                group.addTask {
                    try await Task.sleep(for: budget + interval * 2)
                    throw StrategyError(code: .unreachable, detail: "no probe answered within \(budget)" +
                                        (weAreHard || theyAreHard ? " (birthday method: \(1 + birthdaySockets) sockets, \(extra.count) random probes)" : ""))
                }
                defer { group.cancelAll() }
                while let next = try await group.next() { return next }
                throw StrategyError(code: .unreachable, detail: "probing ended")
            }
            handedOver.withLock { $0 = winner }
            await closeAll(except: winner)
            if weAreHard { winner.announceChosen(to: peer, count: UDPHolePunch.chosenAnnouncements, interval: interval) }
            context.logger.debug("hole punched", metadata: ["peer": "\(peer)", "sockets": "\(1 + birthdaySockets)"])
            return winner.transport(to: peer)
        } catch {
            await closeAll(except: nil)
            throw error
        }
    }

    private func closeAll(except keep: UDPPathSocket?) async {
        let all = owned.withLock { o -> [UDPPathSocket] in let c = o; o = []; return c }
        for s in all where s.client !== keep?.client { await s.close() }
    }

    func close() async {
        if handedOver.withLock({ $0 }) == nil { await closeAll(except: nil) }
    }
}
