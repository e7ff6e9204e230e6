import Foundation
import SourceLimits

/// A way to reach a peer that one strategy gathered, offered to the other side through the cloud.
public struct Candidate: Codable, Sendable, Hashable, CustomStringConvertible {
    /// Where the address came from (RFC 8445 §5.1.1 vocabulary where it applies).
    public enum Kind: String, Codable, Sendable, Hashable {
        /// An address of a local interface.
        case host
        /// The address a NAT maps us to, as a STUN server saw it.
        case serverReflexive = "server-reflexive"
        /// An address on a relay (TURN).
        case relayed
        /// A port predicted for a NAT with sequential allocation (hard-NAT punching).
        case predicted
    }

    /// The id of the strategy that gathered it, e.g. `udp-hole-punch`.
    public var strategy: String
    /// Where the address came from.
    public var kind: Kind
    /// `udp` or `tcp`.
    public var transport: String
    /// `ip:port` or `[ipv6]:port`.
    public var address: String
    /// Optional strategy-specific detail (e.g. a NAT mapping behaviour), kept small.
    public var detail: [String: String]

    /// Creates a candidate.
    public init(strategy: String, kind: Kind, transport: String = "udp", address: String, detail: [String: String] = [:]) {
        self.strategy = strategy
        self.kind = kind
        self.transport = transport
        self.address = address
        self.detail = detail
    }

    /// `udp-hole-punch server-reflexive udp 203.0.113.5:4000`.
    public var description: String { "\(strategy) \(kind.rawValue) \(transport) \(address)" }
}

/// What one side tells the other through the cloud before both race their strategies.
public struct PeerOffer: Codable, Sendable, Hashable {
    /// Most candidates one offer may carry; more are a protocol error.
    public static let maxCandidates = 64

    /// The sender's Ed25519 identity public key (32 bytes): the camera's device key, or the viewer's key.
    public var identityKey: Data
    /// Every candidate the sender's enabled strategies gathered.
    public var candidates: [Candidate]
    /// The ids of the strategies the sender has enabled.
    public var strategies: [String]
    /// A browser's WebRTC session description (RFC 8866) in a viewer's offer, which marks the viewer as a
    /// browser; the camera's answer description in its sealed answer. At most ``maxSessionDescriptionLength`` bytes.
    public var sessionDescription: String?

    /// Longest ``sessionDescription``, in UTF-8 bytes: a data-channel offer with its candidates is 1–4 KiB.
    public static let maxSessionDescriptionLength = 16 * 1024

    /// Creates an offer.
    public init(identityKey: Data, candidates: [Candidate], strategies: [String], sessionDescription: String? = nil) {
        self.identityKey = identityKey
        self.candidates = candidates
        self.strategies = strategies
        self.sessionDescription = sessionDescription
    }
}

extension PeerOffer {
    /// Whether the offer carries a server-reflexive candidate over `transport` (`udp` or `tcp`):
    /// the sender can be reached through its NAT over that transport, if at all.
    public func hasReflexive(_ transport: String) -> Bool {
        candidates.contains { $0.kind == .serverReflexive && $0.transport == transport }
    }
}

/// The viewer's result of an introduction: the camera's answer, delivered with the start signal.
public struct Introduction: Sendable {
    /// Identifies this introduction in logs on all three sides.
    public var requestID: String
    /// The camera's answer, including the identity key the cloud claims for the UID (checked against the UID, never trusted).
    public var answer: PeerOffer
    /// Relay credentials the cloud issued for this session, if it runs a relay.
    public var relay: RelayGrant?

    /// Creates an introduction.
    public init(requestID: String, answer: PeerOffer, relay: RelayGrant? = nil) {
        self.requestID = requestID
        self.answer = answer
        self.relay = relay
    }
}

/// Short-lived relay credentials issued by the cloud for one session (TURN REST scheme).
public struct RelayGrant: Codable, Sendable, Hashable {
    /// Relay addresses, e.g. `turn:203.0.113.10:3478?transport=udp` or `turns:…:443`.
    public var urls: [String]
    /// `expiry:label` user name.
    public var username: String
    /// Base64 HMAC of the user name.
    public var password: String
    /// Unix time after which the credentials stop working.
    public var expires: Int

    /// Creates a grant.
    public init(urls: [String], username: String, password: String, expires: Int) {
        self.urls = urls
        self.username = username
        self.password = password
        self.expires = expires
    }
}

/// A viewer's offer as the camera receives it through the cloud.
public protocol IncomingIntroduction: Sendable {
    /// Identifies this introduction in logs on all three sides.
    var requestID: String { get }
    /// The viewer's offer.
    var offer: PeerOffer { get }
    /// Relay credentials for this session, if the cloud runs a relay.
    var relay: RelayGrant? { get }
    /// Sends the camera's answer and returns when the cloud says start (both sides then race at once).
    func accept(answer: PeerOffer) async throws
    /// Declines (the viewer sees the same "unavailable" as for an unknown UID).
    func decline() async
    /// Renews this session's relay grant before it expires (same label, later expiry).
    func renewRelay(_ grant: RelayGrant) async throws -> RelayGrant
    /// Challenges the viewer to prove access before the camera gathers or answers anything
    /// (``AccessChallenge``) and returns the viewer's verified claim; `nil` when this signalling
    /// carries no proof (the credential then arrives only inside the session).
    func requestAccess() async throws -> ViewerAccessClaim?
    /// Refuses the viewer whose claim (``requestAccess()``) failed the camera's access check.
    func refuse(_ reason: AccessRefusal) async
    /// The source the viewer's request came from, as a cloud saw it over TCP (so not spoofed); `nil`
    /// when nobody vouches for it (a LAN question). Probes toward it do not count against the
    /// introduction's ``ProbeBudget``, and only it may receive the birthday method.
    var vouchedRequester: SourceAddressKey? { get }
}

extension IncomingIntroduction {
    /// Unsupported by default: the grant is used until it expires.
    public func renewRelay(_ grant: RelayGrant) async throws -> RelayGrant {
        throw CloudError(code: .badRequest, detail: "this signalling cannot renew relay grants")
    }

    /// Nobody vouches for the requester by default.
    public var vouchedRequester: SourceAddressKey? { nil }

    /// No proof before the session by default: the credential comes inside it.
    public func requestAccess() async throws -> ViewerAccessClaim? { nil }

    /// Declines by default.
    public func refuse(_ reason: AccessRefusal) async { await decline() }
}

/// What a camera needs from its cloud: a registration kept alive across reconnects, and offers.
public protocol CameraSignalling: Sendable {
    /// Offers from viewers, in arrival order, across reconnects; finishes when the registration is stopped.
    var introductions: AsyncStream<any IncomingIntroduction> { get }
    /// The camera's server-reflexive address as the cloud sees its control connection, if known.
    var observedAddress: String? { get async }
    /// Stops keeping the registration alive and closes the connection.
    func stop() async
    /// The registration's losses and returns, in order; finishes when the registration is stopped.
    var connectionEvents: AsyncStream<CloudConnectionEvent> { get }
}

extension CameraSignalling {
    /// None by default (a signalling that is never lost): a finished stream.
    public var connectionEvents: AsyncStream<CloudConnectionEvent> { AsyncStream { $0.finish() } }
}

/// A change in a camera's registration with its cloud.
public enum CloudConnectionEvent: Sendable, Hashable {
    /// Events kept for a consumer that has not read them yet; older ones are dropped first.
    public static let bufferLimit = 16

    /// The registered connection was lost (the client is reconnecting with backoff); viewers cannot reach the camera through the cloud.
    case lost(reason: String)
    /// Registered again after ``lost(reason:)``; `observedAddress` is the camera's address as the cloud sees it now.
    case back(observedAddress: String)
}

/// What a viewer needs from the cloud: an introduction to a camera by UID.
public protocol ViewerSignalling: Sendable {
    /// Asks the cloud to introduce us to `device` with `offer`; returns the camera's answer at the start signal.
    func introduce(to device: DeviceID, offer: PeerOffer) async throws -> Introduction
    /// ``introduce(to:offer:)``, answering the camera's access challenge with `prover` where the
    /// signalling carries one (``AccessChallenge``).
    func introduce(to device: DeviceID, offer: PeerOffer, prover: AccessProver) async throws -> Introduction
    /// Renews a relay grant of an introduction before it expires (same label, later expiry).
    func renewRelay(_ grant: RelayGrant) async throws -> RelayGrant
}

extension ViewerSignalling {
    /// A signalling without access challenges ignores `prover`.
    public func introduce(to device: DeviceID, offer: PeerOffer, prover: AccessProver) async throws -> Introduction {
        try await introduce(to: device, offer: offer)
    }

    /// Unsupported by default: the grant is used until it expires.
    public func renewRelay(_ grant: RelayGrant) async throws -> RelayGrant {
        throw CloudError(code: .badRequest, detail: "this signalling cannot renew relay grants")
    }
}
