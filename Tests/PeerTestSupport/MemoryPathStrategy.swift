import Synchronization
@testable import Traversal

/// A direct "network" for in-memory sessions: each upgrade attempt (keyed by its session token) gets a fresh
/// ``MemoryLink``, the viewer one end and the camera the other; while ``blocked`` nothing connects
/// (as when a firewall drops the direct path).
public final class MemoryDirectNetwork: Sendable {
    private let links = Mutex<[[UInt8]: (viewer: MemoryLink.End, camera: MemoryLink.End, link: MemoryLink)]>([:])
    /// While true, connects fail as unreachable.
    public let blocked = Mutex(false)
    /// What links made from now on do to messages.
    public let newLinkConditions = Mutex(MemoryLink.Conditions())

    /// An empty network.
    public init() {}

    /// The link of the attempt with `token` (created by whichever side comes first).
    func ends(token: [UInt8]) -> (viewer: MemoryLink.End, camera: MemoryLink.End, link: MemoryLink) {
        links.withLock { l in
            if let e = l[token] { return e }
            let (a, b, link) = MemoryLink.pair(newLinkConditions.withLock { $0 })
            l[token] = (a, b, link)
            return (a, b, link)
        }
    }

    /// Every link made so far.
    public var allLinks: [MemoryLink] { links.withLock { $0.values.map(\.link) } }
}

/// `memory-direct`: reaches the peer over a ``MemoryDirectNetwork`` link; offered for relayed sessions to move to.
public struct MemoryPathStrategy: TraversalStrategy {
    /// The strategy id.
    public let id = "memory-direct"
    let network: MemoryDirectNetwork

    /// A strategy on `network`.
    public init(network: MemoryDirectNetwork) { self.network = network }

    /// True: relayed sessions try it in the background.
    public var upgradesRelayedSessions: Bool { true }

    public func prepare(_ context: StrategyContext) async throws -> any PreparedStrategy {
        Prepared(network: network)
    }

    struct Prepared: PreparedStrategy {
        let network: MemoryDirectNetwork
        var candidates: [Candidate] { [Candidate(strategy: "memory-direct", kind: .host, address: "127.0.0.1:1")] }
        func startDelay(local: PeerOffer, remote: PeerOffer) -> Duration { .zero }
        func connect(remote: PeerOffer, context: StrategyContext) async throws -> any PeerTransport {
            guard !network.blocked.withLock({ $0 }) else { throw StrategyError(code: .unreachable, detail: "blocked") }
            let ends = network.ends(token: context.sessionToken)
            return context.role == .viewer ? ends.viewer : ends.camera
        }
        func close() async {}
    }
}
