import Logging
import NIOCore

/// Which side of a connection this process plays.
public enum ConnectionRole: String, Sendable, Codable, Hashable {
    /// The side that asks for a device by UID and starts the secure handshake.
    case viewer
    /// The device that registered with the cloud and answers.
    case camera
}

/// What a strategy may use while gathering and connecting.
public struct StrategyContext: Sendable {
    /// Our side.
    public var role: ConnectionRole
    /// STUN servers (`ip:port`) for server-reflexive discovery, typically the cloud's (the
    /// ``Connector`` resolves names in its configuration before they get here).
    public var stunServers: [String]
    /// Which certificates a relay reached through ``relay`` must present: the cloud's trust
    /// (``TravCloud/trust``) when the configuration names a cloud, `nil` otherwise.
    public var relayTrust: CloudEndpoint.Trust?
    /// Relay credentials for this session, if the cloud issued any.
    public var relay: RelayGrant?
    /// A random token both sides learn from the introduction, so probes of two sessions never mix.
    public var sessionToken: [UInt8]
    /// Renews ``relay`` through the cloud before it expires, if the signalling can (``RelayGrant``).
    public var renewRelay: (@Sendable (RelayGrant) async throws -> RelayGrant)?
    /// The logger.
    public var logger: Logger
    /// What may be sent toward the peer's offered addresses before it answers (a camera's, per
    /// introduction); `nil`: not limited (the viewer, which chose whom to reach).
    public var probeBudget: ProbeAllowance?

    /// Creates a context.
    public init(role: ConnectionRole, stunServers: [String] = [], relay: RelayGrant? = nil, sessionToken: [UInt8] = [],
                logger: Logger = Logger(label: "trav.strategy")) {
        self.role = role
        self.stunServers = stunServers
        self.relay = relay
        self.sessionToken = sessionToken
        self.logger = logger
    }
}

/// A way to find a path between camera and viewer; third parties conform to add one, with no change here.
///
/// ```
///  prepare (both sides, before the cloud exchange) ── candidates ──► offer / answer
///  start signal ─► after startDelay: connect(remote offer) ─► PeerTransport ─► secure handshake
/// ```
public protocol TraversalStrategy: Sendable {
    /// The kebab-case id used in logs, metrics, reports and CLI flags (e.g. `udp-hole-punch`).
    var id: String { get }
    /// Gathers candidates and holds whatever resources (sockets) connecting will need.
    func prepare(_ context: StrategyContext) async throws -> any PreparedStrategy
    /// Whether a session the relay carries runs this strategy again in the background to move to its
    /// (direct, datagram) path while it runs (``PathMigrationStateMachine``).
    var upgradesRelayedSessions: Bool { get }
    /// Whether this strategy's path (a relay) can stand by beside a direct datagram path a session won on,
    /// for it to fall back to when the direct path dies (``ConnectorConfiguration/relayStandby``).
    var standsByForDirectSessions: Bool { get }
}

extension TraversalStrategy {
    /// No by default.
    public var upgradesRelayedSessions: Bool { false }
    /// No by default.
    public var standsByForDirectSessions: Bool { false }
}

/// A strategy after gathering: its candidates, and how to turn the peer's into a transport.
public protocol PreparedStrategy: Sendable {
    /// Candidates to offer the other side.
    var candidates: [Candidate] { get }
    /// How long after the start signal to begin (happy-eyeballs stagger), given both offers: our
    /// own and the peer's. Both sides see the same two offers, so a rule on them starts both alike.
    func startDelay(local: PeerOffer, remote: PeerOffer) -> Duration
    /// Reaches the peer; returns a transport on which both sides can exchange messages.
    /// Must honour task cancellation promptly and release what it opened when it throws.
    func connect(remote: PeerOffer, context: StrategyContext) async throws -> any PeerTransport
    /// Releases resources that `connect` did not hand over.
    func close() async
}

/// A message transport between the two peers, before encryption (the Connector adds the secure session).
public protocol PeerTransport: Sendable {
    /// True for datagram paths (loss and reordering possible), false for streams.
    var isDatagram: Bool { get }
    /// True when a relay carries the messages: a session on it looks for a direct path while it runs.
    var isRelayed: Bool { get }
    /// `udp 10.0.0.2:4000 -> 10.0.0.3:5000`, for reports.
    var pathDescription: String { get }
    /// The address the peer's messages come from (for a relay: the peer's relayed address), which
    /// per-source limits key on; `nil` when unknown.
    var remoteAddress: SocketAddress? { get }
    /// Largest message `send` accepts.
    var maxMessageSize: Int { get }
    /// Largest message `send` accepts for a path MTU probe (RFC 8899): above ``maxMessageSize`` when the
    /// transport may carry more than it promises (a UDP path over 1500-byte links), which probes find out.
    var probeMessageSize: Int { get }
    /// Sends one message.
    func send(_ message: [UInt8]) async throws
    /// Receives the next message; one consumer at a time.
    func receive() async throws -> [UInt8]
    /// Closes the transport; a pending `receive` throws.
    func close() async
}

/// A datagram transport on a socket where the peer may turn up at another address (its NAT remapped the
/// port, RFC 9000 §9.3): it hands on session messages from any source with that source, sends to an
/// address the session is checking, and moves to it once the session has validated it (RFC 9000 §8.2).
public protocol RebindablePeerTransport: PeerTransport {
    /// The next session message from the peer's address or any other, with its source; one consumer at a time.
    /// A message from another source is unauthenticated until the session has opened it.
    func receiveFromAnyAddress() async throws -> (message: [UInt8], source: SocketAddress)
    /// Sends one message on the same socket to `address` (a check of an address not yet validated).
    func send(_ message: [UInt8], to address: SocketAddress) async throws
    /// Sends to `address` from now on (``PeerTransport/remoteAddress`` becomes it).
    func rebind(to address: SocketAddress)
}

extension PeerTransport {
    /// Unknown by default: limits then count the transport under ``SourceAddressKey/unidentified``.
    public var remoteAddress: SocketAddress? { nil }
    /// ``maxMessageSize``: nothing to probe by default.
    public var probeMessageSize: Int { maxMessageSize }
    /// Direct by default.
    public var isRelayed: Bool { false }
}

/// Why a strategy did not produce a path.
public struct StrategyError: CodedError, Hashable {
    /// The class of failure.
    public struct Code: ErrorCode {
        /// The stable name.
        public let name: String
        /// The peer offered nothing this strategy can use.
        public static let notApplicable = Code(name: "not-applicable")
        /// Nothing came back from the peer before the deadline.
        public static let unreachable = Code(name: "unreachable")
        /// The strategy judged success impossible for this pair and gave up early.
        public static let impossible = Code(name: "impossible")
        /// A socket or protocol failure.
        public static let failed = Code(name: "failed")
        /// A server on the path (a relay) refused a request, and said why.
        public static let refused = Code(name: "refused")
    }

    /// What went wrong.
    public let code: Code
    /// Detail for people.
    public let detail: String

    /// Creates an error.
    public init(code: Code, detail: String) {
        self.code = code
        self.detail = detail
    }
}
