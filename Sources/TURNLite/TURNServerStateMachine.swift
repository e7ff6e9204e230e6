import SourceLimits
import STUNLite

/// The timers of RFC 8656, in seconds.
public enum TURNTimers {
    /// An allocation lives at least this long: 10 minutes (RFC 8656 §3.2, §7.2).
    public static let defaultAllocationLifetime: Double = 600
    /// An allocation lives at most this long per request; RFC 8656 §7.2 suggests 3600 s.
    public static let maxAllocationLifetime: Double = 3600
    /// A permission lasts 300 s from its last CreatePermission or ChannelBind (RFC 8656 §9).
    public static let permissionLifetime: Double = 300
    /// A channel binding lasts 600 s from its last ChannelBind (RFC 8656 §12).
    public static let channelLifetime: Double = 600
    /// After a channel expires, neither its number nor its peer may be bound to anything else for 300 s (RFC 8656 §12).
    public static let channelReuseCooldown: Double = 300
    /// A port reserved by EVEN-PORT with the R bit waits this long for its RESERVATION-TOKEN (RFC 8656 §7.2: about 30 s).
    public static let reservationLifetime: Double = 30

    /// The lifetime granted for a requested one: 0 stays 0 (Refresh deletes), else clamped to default…max (RFC 8656 §7.2, §8.2).
    public static func grantedLifetime(requested: UInt32?) -> UInt32 {
        guard let requested else { return UInt32(defaultAllocationLifetime) }
        if requested == 0 { return 0 }
        return UInt32(min(max(Double(requested), defaultAllocationLifetime), maxAllocationLifetime))
    }
}

/// A client's 5-tuple as the server sees it: client address, server address, transport (RFC 8656 §2, §3.1).
public struct TURNFiveTuple: Hashable, Sendable, CustomStringConvertible {
    /// The client's transport address (its server-reflexive address).
    public var client: TransportAddress
    /// The server address the client talks to.
    public var server: TransportAddress
    /// UDP, TCP or TLS between client and server.
    public var transport: STUNTransport

    /// Creates a 5-tuple.
    public init(client: TransportAddress, server: TransportAddress, transport: STUNTransport) {
        self.client = client
        self.server = server
        self.transport = transport
    }

    /// `udp 1.2.3.4:5->5.6.7.8:3478`.
    public var description: String { "\(transport.rawValue) \(client)->\(server)" }
}

/// Names one allocation for the life of the server (RFC 8656 §2 "allocation").
public struct TURNAllocationID: Hashable, Sendable, CustomStringConvertible {
    /// The number.
    public let rawValue: UInt64
    /// Wraps a number.
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    /// `alloc#7`.
    public var description: String { "alloc#\(rawValue)" }
}

/// What the I/O layer must do for the server state machine (RFC 8656 §7–12).
public enum TURNServerAction: Sendable, Equatable {
    /// Send bytes to the client over the 5-tuple.
    case sendToClient(TURNFiveTuple, [UInt8])
    /// Send a datagram from the allocation's relay socket to a peer.
    case sendToPeer(TURNAllocationID, TransportAddress, [UInt8])
    /// Open a relay socket for the allocation, then call ``TURNServerStateMachine/relayOpened(_:at:reserving:now:)`` or ``TURNServerStateMachine/relayFailed(_:)``.
    case openRelay(TURNAllocationID, family: TURNAddressFamily, evenPort: Bool)
    /// Open a relay socket on an even port and hold the next port too (EVEN-PORT with the R bit, RFC 8656 §7.2),
    /// then call ``TURNServerStateMachine/relayOpened(_:at:reserving:now:)`` or ``TURNServerStateMachine/relayFailed(_:)``.
    case openRelayReservingNext(TURNAllocationID, family: TURNAddressFamily)
    /// Make the held socket at the address the allocation's relay socket (RESERVATION-TOKEN, RFC 8656 §7.2), then
    /// call ``TURNServerStateMachine/relayOpened(_:at:reserving:now:)``, or ``TURNServerStateMachine/relayFailed(_:)`` if none is held.
    case adoptReservedRelay(TURNAllocationID, TransportAddress)
    /// Close the socket held for a reservation that expired unused.
    case releaseReservation(TransportAddress)
    /// Close the allocation's relay socket.
    case closeRelay(TURNAllocationID)
    /// Close a TCP/TLS client connection (it held no allocation for ``TURNServerConfiguration/streamAuthenticationTimeout``).
    case closeClient(TURNFiveTuple)
}

/// Where a peer's datagram goes: as ChannelData on a bound channel, or in a Data indication (RFC 8656 §11.3, §12.7).
public enum TURNPeerDelivery: Sendable, Equatable {
    /// Prefix a ChannelData header for `channel` (padded on streams) and send to the client.
    case channelData(UInt16, to: TURNFiveTuple)
    /// Wrap in a Data indication with XOR-PEER-ADDRESS and send to the client.
    case dataIndication(to: TURNFiveTuple)
}

/// Why the relay refused a request: the error code and reason phrase it answers with, and a stable
/// name for metrics and reports (RFC 8656 §7.2, §10.2, §12.2).
public struct TURNRefusal: Hashable, Sendable, CustomStringConvertible {
    /// The STUN error code.
    public let code: Int
    /// A stable kebab-case name, e.g. `special-peer` (a metric label).
    public let name: String
    /// The reason phrase sent with the code.
    public let reason: String

    /// Creates a refusal.
    public init(_ code: Int, _ name: String, _ reason: String) {
        self.code = code
        self.name = name
        self.reason = reason
    }

    /// 403: the peer is in a special range (loopback, private, link-local, …) the peer policy refuses.
    public static let specialPeer = TURNRefusal(403, "special-peer", "Forbidden: peer address in a special range")
    /// 403: the peer is an address of the relay's own host and no allocation's relayed address.
    public static let relayHostPeer = TURNRefusal(403, "relay-host-peer", "Forbidden: peer address on the relay's own host")
    /// 486: the user holds as many allocations as it may.
    public static let allocationQuota = TURNRefusal(486, "allocation-quota", "Allocation Quota Reached")
    /// 486: the user's relayed traffic is over its bandwidth (``TURNServerConfiguration/bandwidthPerUser``) right now,
    /// so another allocation for it is refused until ``TURNServerConfiguration/bandwidthCutHoldSeconds`` pass without a cut.
    public static let bandwidth = TURNRefusal(486, "bandwidth", "Allocation Quota Reached: bandwidth exceeded")
    /// 508: the relay holds as many allocations as it may.
    public static let capacity = TURNRefusal(508, "capacity", "Insufficient Capacity: relay full")
    /// 508: the relay is draining before it stops and takes no new allocations.
    public static let draining = TURNRefusal(508, "draining", "Insufficient Capacity: relay draining")
    /// 508: no relay port could be opened (or no even port, or no pair).
    public static let noRelayPort = TURNRefusal(508, "relay-port", "Insufficient Capacity: no relay port")
    /// 508: the RESERVATION-TOKEN names no live reservation.
    public static let noReservation = TURNRefusal(508, "reservation", "Insufficient Capacity: no such reservation")
    /// 508: the allocation holds as many permissions as it may.
    public static let permissionLimit = TURNRefusal(508, "permission-limit", "Insufficient Capacity: too many permissions")
    /// 508: the allocation holds as many channels as it may.
    public static let channelLimit = TURNRefusal(508, "channel-limit", "Insufficient Capacity: too many channels")
    /// 440: the relay allocates in no such address family.
    public static let addressFamily = TURNRefusal(440, "address-family", "Address Family not Supported")
    /// 443: the peer is of another family than the allocation.
    public static let peerFamily = TURNRefusal(443, "peer-family", "Peer Address Family Mismatch")

    /// The name for a refusal by code alone (malformed requests and the like).
    static func named(code: Int) -> String {
        switch code {
        case 400: "bad-request"
        case 420: "unknown-attribute"
        case 437: "allocation-mismatch"
        case 441: "wrong-credentials"
        case 442: "unsupported-transport"
        default: "error-\(code)"
        }
    }

    /// `486 allocation-quota (Allocation Quota Reached)`.
    public var description: String { "\(code) \(name) (\(reason))" }
}

/// Why the relay dropped a datagram for bandwidth: a stable name for metrics (RFC 8656 §21.1.4 resource exhaustion).
public struct TURNBandwidthCut: Hashable, Sendable, CustomStringConvertible {
    /// A stable kebab-case name, e.g. `user-bandwidth` (a metric label).
    public let name: String

    /// Creates a reason.
    public init(_ name: String) { self.name = name }

    /// The datagram's user relays more bytes per second than ``TURNServerConfiguration/bandwidthPerUser``.
    public static let userBandwidth = TURNBandwidthCut("user-bandwidth")

    /// The name.
    public var description: String { name }
}

/// What the relay did since it was last asked: counts for metrics, kept by the state machine without I/O.
public struct TURNServerStatistics: Sendable, Equatable {
    /// Allocations whose relay socket opened.
    public var allocationsCreated = 0
    /// Datagrams relayed from clients to peers, and their payload bytes.
    public var packetsToPeers = 0
    /// Payload bytes relayed from clients to peers.
    public var bytesToPeers = 0
    /// Datagrams relayed from peers to clients.
    public var packetsToClients = 0
    /// Payload bytes relayed from peers to clients.
    public var bytesToClients = 0
    /// Datagrams dropped because a bandwidth limit was exceeded, by ``TURNBandwidthCut/name``.
    public var bandwidthCuts: [String: Int] = [:]
    /// Payload bytes of those datagrams, by ``TURNBandwidthCut/name``.
    public var bandwidthCutBytes: [String: Int] = [:]
    /// Error responses to authenticated requests, by ``TURNRefusal/name``.
    public var refusals: [String: Int] = [:]

    /// Nothing counted.
    public init() {}

    /// Whether nothing was counted.
    public var isEmpty: Bool { self == TURNServerStatistics() }
}

/// How a TURN server behaves: who may use it, which peers it reaches, and its quotas (RFC 8656 §21).
public struct TURNServerConfiguration: Sendable {
    /// Users and realm.
    public var credentials: TURNCredentials
    /// Which peers may be reached.
    public var peerPolicy: TURNPeerPolicy
    /// The addresses of the relay's own host. A peer there is refused with 403, whatever the peer
    /// policy says, unless it is the relayed address of a live allocation (two allocations on one
    /// relay may reach each other; the relay's other ports, its listeners and the host's other
    /// services may not). ``TURNServer`` fills this in from its listen and relay addresses and the
    /// host's interface addresses.
    public var relayHostAddresses: Set<IPAddress> = []
    /// Families the server can allocate relayed addresses in; others earn 440 (RFC 8656 §7.2).
    public var relayFamilies: Set<TURNAddressFamily>
    /// Allocations one user may hold at once; more earn 486 Allocation Quota Reached (RFC 8656 §7.2).
    public var maxAllocationsPerUser: Int
    /// Allocations the server holds at once; more earn 508 Insufficient Capacity (RFC 8656 §7.2).
    public var maxAllocations: Int
    /// Permissions one allocation may hold; more earn 508 (RFC 8656 §10.2).
    public var maxPermissionsPerAllocation: Int
    /// Channels one allocation may bind; more earn 508 (RFC 8656 §12.2).
    public var maxChannelsPerAllocation: Int
    /// Relayed bytes per second per user, both directions together; excess datagrams are dropped (`nil`: no limit).
    public var bandwidthPerUser: Double?
    /// After a user's datagram was dropped for bandwidth, its new Allocates are refused for this long,
    /// seconds (486, ``TURNRefusal/bandwidth``): the refusal names the cut, where dropped datagrams say nothing.
    public var bandwidthCutHoldSeconds: Double = defaultBandwidthCutHoldSeconds
    /// Default of ``bandwidthCutHoldSeconds``: 2 s.
    public static let defaultBandwidthCutHoldSeconds: Double = 2
    /// 401/438 challenges one source (IPv4 address or IPv6 /64) may draw at once (RFC 8656 §21.1.4).
    public var challengeBurst: Double
    /// 401/438 challenges per second a source's bucket refills with.
    public var challengeRatePerSecond: Double
    /// A fixed nonce secret (several servers, or tests); random when `nil`.
    public var nonceSecret: [UInt8]?
    /// Channel numbers ChannelBind accepts; others earn 400. RFC 8656 §12 allows 0x4000–0x4FFF
    /// (the default); ``rfc5766ChannelNumbers`` re-admits the older 0x4000–0x7FFF for legacy clients.
    public var channelNumbers: ClosedRange<UInt16> = ChannelNumber.validRange
    /// Default of ``challengeBurst``: 32 challenges at once per source.
    public static let defaultChallengeBurst: Double = 32
    /// Default of ``challengeRatePerSecond``: 8 per second per source.
    public static let defaultChallengeRatePerSecond: Double = 8
    /// The largest answer to an unauthenticated request, as a multiple of the request's size: a
    /// challenge that would be bigger is not sent, so the relay is no amplifier for spoofed sources.
    public static let maxUnauthenticatedAmplification = 3
    /// A TCP/TLS connection without an allocation is closed this long (seconds) after it opened or
    /// lost its allocation: holding a connection takes a successful, authenticated Allocate, which
    /// bytes alone cannot replace.
    public var streamAuthenticationTimeout: Double = defaultStreamAuthenticationTimeout
    /// Default of ``streamAuthenticationTimeout``: 10 s, ample for a challenge and an Allocate round trip.
    public static let defaultStreamAuthenticationTimeout: Double = 10
    /// The channel range of RFC 5766 §11, which coturn's `turnutils_uclient` still draws from.
    public static let rfc5766ChannelNumbers: ClosedRange<UInt16> = 0x4000...0x7FFF

    /// Creates a configuration with the defaults: IPv4 and IPv6 relays, 10 allocations per user,
    /// 10 000 in all, 256 permissions and 256 channels per allocation, 10 MB/s per user,
    /// challenges in bursts of 32 refilling at 8/s per source.
    public init(credentials: TURNCredentials, peerPolicy: TURNPeerPolicy = TURNPeerPolicy(),
                relayFamilies: Set<TURNAddressFamily> = [.ipv4, .ipv6], maxAllocationsPerUser: Int = 10,
                maxAllocations: Int = 10_000, maxPermissionsPerAllocation: Int = 256, maxChannelsPerAllocation: Int = 256,
                bandwidthPerUser: Double? = 10_000_000, challengeBurst: Double = defaultChallengeBurst,
                challengeRatePerSecond: Double = defaultChallengeRatePerSecond,
                nonceSecret: [UInt8]? = nil) {
        self.credentials = credentials
        self.peerPolicy = peerPolicy
        self.relayFamilies = relayFamilies
        self.maxAllocationsPerUser = maxAllocationsPerUser
        self.maxAllocations = maxAllocations
        self.maxPermissionsPerAllocation = maxPermissionsPerAllocation
        self.maxChannelsPerAllocation = maxChannelsPerAllocation
        self.bandwidthPerUser = bandwidthPerUser
        self.challengeBurst = challengeBurst
        self.challengeRatePerSecond = challengeRatePerSecond
        self.nonceSecret = nonceSecret
    }
}

/// What an allocation looks like from outside, for tests and diagnostics (RFC 8656 §3).
public struct TURNAllocationSnapshot: Sendable, Equatable {
    /// The allocation.
    public var id: TURNAllocationID
    /// The user that created it.
    public var username: String
    /// The relayed transport address; `nil` while the relay socket opens.
    public var relayed: TransportAddress?
    /// When it expires (seconds since 1970).
    public var expiry: Double
    /// Peer IPs with a permission, and when each expires.
    public var permissions: [IPAddress: Double]
    /// Bound channels: peer and expiry.
    public var channels: [UInt16: TURNChannelBinding]
}

/// One channel binding (RFC 8656 §12).
public struct TURNChannelBinding: Sendable, Equatable {
    /// The peer the channel is bound to.
    public var peer: TransportAddress
    /// When the binding expires; it stays reserved for ``TURNTimers/channelReuseCooldown`` after.
    public var expiry: Double
    /// The peer is on the relay's own host (another allocation's relayed address): checked again per datagram.
    var onRelayHost = false
}

/// The TURN server's allocation logic without I/O: bytes and time in, ``TURNServerAction``s out (RFC 8656 §5–12).
///
/// ```
///  client                 state machine                      I/O layer
///    | Allocate (no MI) ----->| 401 REALM NONCE (stateless) ------>|
///    | Allocate (MI) -------->| .openRelay(id) ------------------->| binds a UDP socket
///    |                        |<------------------ relayOpened(id, at:)
///    |<----------------------- .sendToClient(success XOR-RELAYED-ADDRESS)
///    | CreatePermission ----->| 403 for special ranges, else permission (300 s)
///    | ChannelBind 0x4000 --->| channel (600 s) + permission
///    | ChannelData ---------->| routeChannelData → (relay, peer) ----> sendmmsg from relay socket
/// ```
///
/// Nothing is stored for a client until its request authenticates: nonces are stateless MACs,
/// and the only per-source state before that is the bounded 401/438 rate limiter.
public struct TURNServerStateMachine: Sendable {
    private struct Allocation {
        let id: TURNAllocationID
        let fiveTuple: TURNFiveTuple
        let username: String
        let family: TURNAddressFamily
        let creatingTransaction: STUNTransactionID
        let creatingHadFingerprint: Bool
        /// The key of the latest authenticated request (a renewed REST grant brings a new one).
        var key: [UInt8]
        var grantedLifetime: UInt32
        var successResponse: [UInt8]?
        var relayed: TransportAddress?
        var expiry: Double
        var permissions: [IPAddress: Double] = [:]
        var channels: [UInt16: TURNChannelBinding] = [:]
        var channelByPeer: [TransportAddress: UInt16] = [:]
    }

    /// The configuration in force.
    public let configuration: TURNServerConfiguration
    private let nonces: TURNNonceIssuer
    private var limiter: TURNChallengeRateLimiter
    private var allocations: [TURNAllocationID: Allocation] = [:]
    private var byFiveTuple: [TURNFiveTuple: TURNAllocationID] = [:]
    /// Per-user quotas, byte buckets and relayed addresses, shared with the other shards of the same server.
    public let ledger: TURNSharedLedger
    /// Open TCP/TLS connections, and since when each has had no allocation (nil while it has one).
    private var streams: [TURNFiveTuple: Double?] = [:]
    private var nextID: UInt64 = 1
    /// Ports held by EVEN-PORT reservations, by token (RFC 8656 §7.2).
    private var reservations: [[UInt8]: Reservation] = [:]
    private var statistics = TURNServerStatistics()
    /// Whether new allocations are refused (``startDraining()``).
    public private(set) var isDraining = false

    private struct Reservation {
        let address: TransportAddress
        let family: TURNAddressFamily
        let expiry: Double
    }

    /// Creates a machine with no allocations; shards of one server pass the same `ledger`.
    public init(configuration: TURNServerConfiguration, ledger: TURNSharedLedger = TURNSharedLedger()) {
        self.configuration = configuration
        self.ledger = ledger
        self.nonces = TURNNonceIssuer(secret: configuration.nonceSecret)
        self.limiter = TURNChallengeRateLimiter(burst: configuration.challengeBurst,
                                                ratePerSecond: configuration.challengeRatePerSecond)
    }

    // MARK: Inspection

    /// Allocations held (including those whose relay socket is still opening).
    public var allocationCount: Int { allocations.count }

    /// Ports held for EVEN-PORT reservations.
    public var reservationCount: Int { reservations.count }

    /// Returns what was counted since the last call, and starts counting afresh.
    public mutating func takeStatistics() -> TURNServerStatistics {
        defer { statistics = TURNServerStatistics() }
        return statistics
    }

    /// From now on, new allocations are refused with 508 (``TURNRefusal/draining``); existing ones keep
    /// relaying, refreshing and binding until they expire or are deleted.
    public mutating func startDraining() { isDraining = true }

    /// The allocation of a 5-tuple, if any.
    public func allocation(for fiveTuple: TURNFiveTuple) -> TURNAllocationSnapshot? {
        byFiveTuple[fiveTuple].flatMap { allocation($0) }
    }

    /// An allocation by ID, if it exists.
    public func allocation(_ id: TURNAllocationID) -> TURNAllocationSnapshot? {
        guard let a = allocations[id] else { return nil }
        return TURNAllocationSnapshot(id: a.id, username: a.username, relayed: a.relayed, expiry: a.expiry,
                                      permissions: a.permissions, channels: a.channels)
    }

    /// The transport an allocation's client uses (the I/O layer pads ChannelData on streams, RFC 8656 §12.5).
    public func fiveTuple(of id: TURNAllocationID) -> TURNFiveTuple? { allocations[id]?.fiveTuple }

    /// The earliest time ``expire(now:)`` has work to do, if any allocation or connection without one exists.
    public var nextDeadline: Double? {
        let timeout = configuration.streamAuthenticationTimeout
        return (allocations.values.map { a in
            ([a.expiry] + a.permissions.values + a.channels.values.map { $0.expiry + TURNTimers.channelReuseCooldown }).min()!
        } + streams.values.compactMap { $0.map { $0 + timeout } } + reservations.values.map(\.expiry)).min()
    }

    // MARK: Input from clients

    /// Handles one STUN message or ChannelData frame from a client (RFC 8656 §6–12).
    public mutating func receiveFromClient(_ bytes: [UInt8], from fiveTuple: TURNFiveTuple, now: Double) -> [TURNServerAction] {
        guard let first = bytes.first else { return [] }
        if ChannelData.looksLikeChannelData(first) {
            guard let frame = try? ChannelData.decode(bytes),
                  case let (id, peer)? = routeChannelData(channel: frame.channel, length: frame.payload.count, from: fiveTuple, now: now)
            else { return [] }
            return [.sendToPeer(id, peer, frame.payload)]
        }
        guard let message = try? STUNMessage.decode(bytes), !message.isClassic, message.fingerprintValid != false else { return [] }
        switch message.messageClass {
        case .request:
            return handleRequest(message, bytes: bytes, from: fiveTuple, now: now)
        case .indication where message.method == .send:
            return handleSend(message, from: fiveTuple, now: now)
        default:
            return []
        }
    }

    /// The fast path for ChannelData from a client: the relay and peer to send `length` payload bytes to,
    /// or `nil` to drop (no such channel, no permission, or over the user's bandwidth) (RFC 8656 §12.6).
    public mutating func routeChannelData(channel: UInt16, length: Int, from fiveTuple: TURNFiveTuple,
                                          now: Double) -> (TURNAllocationID, TransportAddress)? {
        guard let id = byFiveTuple[fiveTuple], let a = allocations[id], a.relayed != nil,
              let binding = a.channels[channel], binding.expiry > now,
              let perm = a.permissions[binding.peer.ip], perm > now,
              !binding.onRelayHost || ledger.isRelayed(binding.peer),
              takeBandwidth(a.username, length, now: now) else { return nil }
        statistics.packetsToPeers += 1
        statistics.bytesToPeers += length
        return (id, binding.peer)
    }

    // MARK: Input from peers

    /// The fast path for a datagram from a peer to a relay socket: how to deliver it to the client, or
    /// `nil` to drop (no permission, or over bandwidth) (RFC 8656 §11.3, §12.7).
    public mutating func routeFromPeer(_ id: TURNAllocationID, peer: TransportAddress, length: Int, now: Double) -> TURNPeerDelivery? {
        guard let a = allocations[id], let perm = a.permissions[peer.ip], perm > now,
              takeBandwidth(a.username, length, now: now) else { return nil }
        statistics.packetsToClients += 1
        statistics.bytesToClients += length
        if let c = a.channelByPeer[peer], let b = a.channels[c], b.expiry > now {
            return .channelData(c, to: a.fiveTuple)
        }
        return .dataIndication(to: a.fiveTuple)
    }

    /// Handles a datagram from a peer and builds the bytes for the client (the slow path of ``routeFromPeer(_:peer:length:now:)``).
    public mutating func receiveFromPeer(_ id: TURNAllocationID, peer: TransportAddress, bytes: [UInt8], now: Double) -> [TURNServerAction] {
        switch routeFromPeer(id, peer: peer, length: bytes.count, now: now) {
        case .channelData(let c, let ft):
            return [.sendToClient(ft, ChannelData(channel: c, payload: bytes).encode(padded: ft.transport != .udp))]
        case .dataIndication(let ft):
            return [.sendToClient(ft, TURNMessages.dataIndication(peer: peer, payload: bytes))]
        case nil:
            return []
        }
    }

    // MARK: Relay sockets

    /// The relay socket for `id` is bound at `address`: answers the Allocate (RFC 8656 §7.2). With
    /// `reserving`, the I/O layer holds that next port too: the answer carries a RESERVATION-TOKEN for it,
    /// good for ``TURNTimers/reservationLifetime``; when `id` is gone, the held port is released at once.
    public mutating func relayOpened(_ id: TURNAllocationID, at address: TransportAddress, reserving: TransportAddress? = nil,
                                     now: Double) -> [TURNServerAction] {
        guard var a = allocations[id] else { return [.closeRelay(id)] + (reserving.map { [.releaseReservation($0)] } ?? []) }
        a.relayed = address
        ledger.insertRelayed(address)
        statistics.allocationsCreated += 1
        var m = STUNMessage(method: .allocate, messageClass: .successResponse, transactionID: a.creatingTransaction)
        m.append(XORRelayedAddress(address))
        m.append(Lifetime(seconds: a.grantedLifetime))
        m.append(XORMappedAddress(a.fiveTuple.client))
        if let reserving {
            var token: [UInt8]
            repeat { token = (0..<8).map { _ in UInt8.random(in: 0...255) } } while reservations[token] != nil
            reservations[token] = Reservation(address: reserving, family: a.family, expiry: now + TURNTimers.reservationLifetime)
            m.append(ReservationToken(token))
        }
        let bytes = m.encode(integrityKey: a.key, fingerprint: a.creatingHadFingerprint)
        a.successResponse = bytes
        allocations[id] = a
        return [.sendToClient(a.fiveTuple, bytes)]
    }

    /// No relay socket could be opened for `id`: the Allocate fails with 508 (RFC 8656 §7.2).
    public mutating func relayFailed(_ id: TURNAllocationID) -> [TURNServerAction] {
        guard let a = allocations[id] else { return [] }
        remove(id)
        count(TURNRefusal.noRelayPort.name)
        var m = STUNMessage(method: .allocate, messageClass: .errorResponse, transactionID: a.creatingTransaction)
        m.append(ErrorCode(TURNRefusal.noRelayPort.code, reason: TURNRefusal.noRelayPort.reason))
        return [.sendToClient(a.fiveTuple, m.encode(integrityKey: a.key, fingerprint: a.creatingHadFingerprint))]
    }

    /// A TCP or TLS client connected: unless it allocates within ``TURNServerConfiguration/streamAuthenticationTimeout``,
    /// ``expire(now:)`` closes it.
    public mutating func clientConnected(_ fiveTuple: TURNFiveTuple, now: Double) {
        streams[fiveTuple] = .some(byFiveTuple[fiveTuple] == nil ? now : nil)
    }

    /// The connection of a TCP or TLS client closed: its allocation goes with it (RFC 8656 §3.1, §7).
    public mutating func clientDisconnected(_ fiveTuple: TURNFiveTuple) -> [TURNServerAction] {
        streams[fiveTuple] = nil
        guard let id = byFiveTuple[fiveTuple] else { return [] }
        remove(id)
        return [.closeRelay(id)]
    }

    // MARK: Timers

    /// Expires allocations, permissions and channels whose time has passed (RFC 8656 §7, §9, §12), and
    /// closes TCP/TLS connections that went ``TURNServerConfiguration/streamAuthenticationTimeout`` without an allocation.
    public mutating func expire(now: Double) -> [TURNServerAction] {
        var actions: [TURNServerAction] = []
        for (token, r) in reservations where r.expiry <= now {
            reservations[token] = nil
            actions.append(.releaseReservation(r.address))
        }
        for (id, a) in allocations {
            if a.expiry <= now {
                remove(id)
                actions.append(.closeRelay(id))
                continue
            }
            var b = a
            b.permissions = b.permissions.filter { $0.value > now }
            for (n, c) in b.channels where c.expiry + TURNTimers.channelReuseCooldown <= now {
                b.channels[n] = nil
                b.channelByPeer[c.peer] = nil
            }
            allocations[id] = b
        }
        // After the allocations: a connection whose allocation just expired starts counting now.
        for (ft, since) in streams {
            if byFiveTuple[ft] != nil {
                streams[ft] = .some(nil)
            } else if let since {
                if now - since >= configuration.streamAuthenticationTimeout { actions.append(.closeClient(ft)) }
            } else {
                streams[ft] = .some(now)
            }
        }
        return actions
    }

    // MARK: Requests

    private mutating func handleRequest(_ req: STUNMessage, bytes: [UInt8], from ft: TURNFiveTuple, now: Double) -> [TURNServerAction] {
        if req.method == .binding {
            let responder = STUNBindingResponder(addresses: [.primary: ft.server])
            guard let reply = responder.respond(to: bytes, from: ft.client, on: .primary, transport: ft.transport) else { return [] }
            return [.sendToClient(ft, reply.bytes)]
        }
        let methods: [STUNMethod] = [.allocate, .refresh, .createPermission, .channelBind]
        guard methods.contains(req.method) else { return reject(req, ft, error: 400, reason: "Unknown method") }

        // RFC 8489 §9.2.4: long-term credential checks, in order.
        guard req.contains(.messageIntegrity) else { return challenge(req, ft, code: 401, requestBytes: bytes.count, now: now) }
        guard let username = try? req.attribute(Username.self), let realm = try? req.attribute(Realm.self),
              let nonce = try? req.attribute(Nonce.self) else {
            return reject(req, ft, error: 400, reason: "USERNAME, REALM and NONCE are required")
        }
        guard nonces.isValid(nonce.text, for: ft.client, now: now) else { return challenge(req, ft, code: 438, requestBytes: bytes.count, now: now) }
        guard realm.text == configuration.credentials.realm,
              let key = configuration.credentials.key(for: username.text, now: now),
              req.verifyMessageIntegrity(key: key) else { return challenge(req, ft, code: 401, requestBytes: bytes.count, now: now) }

        // RFC 8489 §6.3.1: comprehension-required attributes we do not know.
        let unknown = req.unknownComprehensionRequired(known: STUNAttributeType.turnKnown)
        if !unknown.isEmpty {
            return reject(req, ft, error: 420, key: key) { $0.append(UnknownAttributes(unknown)) }
        }
        let auth = Auth(username: configuration.credentials.user(of: username.text), key: key)
        if req.method == .allocate { return allocate(req, ft, auth, now: now) }

        guard let id = byFiveTuple[ft], var a = allocations[id] else { return reject(req, ft, error: 437, key: key) }
        guard a.username == auth.username else { return reject(req, ft, error: 441, key: key) }
        a.key = key
        switch req.method {
        case .refresh:
            return refresh(req, ft, &a, now: now)
        case .createPermission:
            return createPermission(req, ft, &a, now: now)
        default:
            return channelBind(req, ft, &a, now: now)
        }
    }

    private struct Auth {
        var username: String
        var key: [UInt8]
    }

    private mutating func allocate(_ req: STUNMessage, _ ft: TURNFiveTuple, _ auth: Auth, now: Double) -> [TURNServerAction] {
        let key = auth.key
        if let id = byFiveTuple[ft], let a = allocations[id] {
            // A retransmission of the request that created it gets the same answer (RFC 8656 §7.2).
            guard a.creatingTransaction == req.transactionID else { return reject(req, ft, error: 437, key: key) }
            return a.successResponse.map { [.sendToClient(ft, $0)] } ?? []
        }
        let transport: RequestedTransport?
        let evenPort: EvenPort?
        let family: RequestedAddressFamily?
        let lifetime: Lifetime?
        let token: ReservationToken?
        do {
            transport = try req.attribute(RequestedTransport.self)
            evenPort = try req.attribute(EvenPort.self)
            family = try req.attribute(RequestedAddressFamily.self)
            lifetime = try req.attribute(Lifetime.self)
            _ = try req.attribute(DontFragment.self)
            token = try req.attribute(ReservationToken.self)
        } catch {
            return reject(req, ft, error: 400, reason: "\(error)", key: key)
        }
        guard let transport else { return reject(req, ft, error: 400, reason: "REQUESTED-TRANSPORT is required", key: key) }
        guard transport == .udp else { return reject(req, ft, error: 442, key: key) }
        if isDraining { return refuse(req, ft, .draining, key: key) }
        let reserved: (token: [UInt8], reservation: Reservation)?
        if let token {
            if evenPort != nil || family != nil {
                return reject(req, ft, error: 400, reason: "RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY", key: key)
            }
            guard let r = reservations[token.token], r.expiry > now else { return refuse(req, ft, .noReservation, key: key) }
            reserved = (token.token, r)
        } else {
            reserved = nil
        }
        let f: TURNAddressFamily
        if let reserved {
            f = reserved.reservation.family
        } else if let family {
            guard let known = family.family else { return refuse(req, ft, .addressFamily, key: key) }
            f = known
        } else {
            f = .ipv4
        }
        guard configuration.relayFamilies.contains(f) else { return refuse(req, ft, .addressFamily, key: key) }
        if let refusal = ledger.admitAllocation(user: auth.username, configuration: configuration, now: now) {
            return refuse(req, ft, refusal, key: key)
        }

        let granted = TURNTimers.grantedLifetime(requested: lifetime?.seconds ?? UInt32(TURNTimers.defaultAllocationLifetime))
        let id = TURNAllocationID(nextID)
        nextID += 1
        allocations[id] = Allocation(id: id, fiveTuple: ft, username: auth.username, family: f,
                                     creatingTransaction: req.transactionID, creatingHadFingerprint: req.fingerprintValid != nil,
                                     key: key, grantedLifetime: granted, expiry: now + Double(granted))
        byFiveTuple[ft] = id
        if let reserved {
            reservations[reserved.token] = nil
            return [.adoptReservedRelay(id, reserved.reservation.address)]
        }
        if evenPort?.reserveNext == true { return [.openRelayReservingNext(id, family: f)] }
        return [.openRelay(id, family: f, evenPort: evenPort != nil)]
    }

    private mutating func refresh(_ req: STUNMessage, _ ft: TURNFiveTuple, _ a: inout Allocation, now: Double) -> [TURNServerAction] {
        let requested: UInt32?
        do {
            if let f = try req.attribute(RequestedAddressFamily.self), f.family != a.family {
                return refuse(req, ft, .peerFamily, key: a.key)
            }
            requested = try req.attribute(Lifetime.self)?.seconds
        } catch {
            return reject(req, ft, error: 400, reason: "\(error)", key: a.key)
        }
        let granted = TURNTimers.grantedLifetime(requested: requested)
        if granted == 0 {
            remove(a.id)
            return reply(req, ft, key: a.key) { $0.append(Lifetime(seconds: 0)) } + [.closeRelay(a.id)]
        }
        a.expiry = now + Double(granted)
        allocations[a.id] = a
        return reply(req, ft, key: a.key) { $0.append(Lifetime(seconds: granted)) }
    }

    /// Checks a peer for an allocation: family (443), then the relay's own host (403 unless a live
    /// allocation's relayed address), then the peer policy (403).
    private func peerError(_ peer: TransportAddress, _ a: Allocation) -> TURNRefusal? {
        guard TURNAddressFamily(of: peer.ip) == a.family else { return .peerFamily }
        if isOnRelayHost(peer.ip) { return ledger.isRelayed(peer) ? nil : .relayHostPeer }
        guard configuration.peerPolicy.permits(peer.ip) else { return .specialPeer }
        return nil
    }

    /// Whether `ip`, as written or by the IPv4 address it embeds, is an address of the relay's host.
    private func isOnRelayHost(_ ip: IPAddress) -> Bool {
        let hosts = configuration.relayHostAddresses
        return !hosts.isEmpty && (hosts.contains(ip) || hosts.contains(TURNPeerPolicy.normalised(ip)))
    }

    private mutating func createPermission(_ req: STUNMessage, _ ft: TURNFiveTuple, _ a: inout Allocation,
                                           now: Double) -> [TURNServerAction] {
        var peers: [TransportAddress] = []
        for raw in req.attributes where raw.type == .xorPeerAddress {
            guard let p = try? XORPeerAddress(stunValue: raw.value[...], transactionID: req.transactionID) else {
                return reject(req, ft, error: 400, reason: "Malformed XOR-PEER-ADDRESS", key: a.key)
            }
            peers.append(p.address)
        }
        guard !peers.isEmpty else { return reject(req, ft, error: 400, reason: "XOR-PEER-ADDRESS is required", key: a.key) }
        for p in peers {
            if let e = peerError(p, a) { return refuse(req, ft, e, key: a.key) }
        }
        let added = Set(peers.map(\.ip)).subtracting(a.permissions.keys).count
        guard a.permissions.count + added <= configuration.maxPermissionsPerAllocation else {
            return refuse(req, ft, .permissionLimit, key: a.key)
        }
        for p in peers { a.permissions[p.ip] = now + TURNTimers.permissionLifetime }
        allocations[a.id] = a
        return reply(req, ft, key: a.key)
    }

    private mutating func channelBind(_ req: STUNMessage, _ ft: TURNFiveTuple, _ a: inout Allocation, now: Double) -> [TURNServerAction] {
        let number: ChannelNumber?
        let peerAttr: XORPeerAddress?
        do {
            number = try req.attribute(ChannelNumber.self)
            peerAttr = try req.attribute(XORPeerAddress.self)  // duplicates: the first wins
        } catch {
            return reject(req, ft, error: 400, reason: "\(error)", key: a.key)
        }
        guard let number, let peer = peerAttr?.address else {
            return reject(req, ft, error: 400, reason: "CHANNEL-NUMBER and XOR-PEER-ADDRESS are required", key: a.key)
        }
        guard configuration.channelNumbers.contains(number.number) else {
            return reject(req, ft, error: 400, reason: "Channel number out of range", key: a.key)
        }
        if let e = peerError(peer, a) { return refuse(req, ft, e, key: a.key) }
        if let bound = a.channels[number.number], bound.peer != peer {
            return reject(req, ft, error: 400, reason: "Channel bound to another peer", key: a.key)
        }
        if let c = a.channelByPeer[peer], c != number.number {
            return reject(req, ft, error: 400, reason: "Peer bound to another channel", key: a.key)
        }
        if a.channels[number.number] == nil, a.channels.count >= configuration.maxChannelsPerAllocation {
            return refuse(req, ft, .channelLimit, key: a.key)
        }
        if a.permissions[peer.ip] == nil, a.permissions.count >= configuration.maxPermissionsPerAllocation {
            return refuse(req, ft, .permissionLimit, key: a.key)
        }
        a.channels[number.number] = TURNChannelBinding(peer: peer, expiry: now + TURNTimers.channelLifetime,
                                                       onRelayHost: isOnRelayHost(peer.ip))
        a.channelByPeer[peer] = number.number
        a.permissions[peer.ip] = now + TURNTimers.permissionLifetime
        allocations[a.id] = a
        return reply(req, ft, key: a.key)
    }

    private mutating func handleSend(_ ind: STUNMessage, from ft: TURNFiveTuple, now: Double) -> [TURNServerAction] {
        guard let id = byFiveTuple[ft], let a = allocations[id], a.relayed != nil,
              let peer = try? ind.attribute(XORPeerAddress.self), let data = try? ind.attribute(DataAttribute.self),
              let perm = a.permissions[peer.address.ip], perm > now,
              !isOnRelayHost(peer.address.ip) || ledger.isRelayed(peer.address),
              takeBandwidth(a.username, data.bytes.count, now: now) else { return [] }
        statistics.packetsToPeers += 1
        statistics.bytesToPeers += data.bytes.count
        return [.sendToPeer(id, peer.address, data.bytes)]
    }

    // MARK: Helpers

    private mutating func takeBandwidth(_ user: String, _ bytes: Int, now: Double) -> Bool {
        guard configuration.bandwidthPerUser != nil else { return true }
        guard ledger.takeBandwidth(user: user, bytes: bytes, now: now) else {
            let reason = TURNBandwidthCut.userBandwidth.name
            statistics.bandwidthCuts[reason, default: 0] += 1
            statistics.bandwidthCutBytes[reason, default: 0] += bytes
            return false
        }
        return true
    }

    private mutating func remove(_ id: TURNAllocationID) {
        guard let a = allocations.removeValue(forKey: id) else { return }
        byFiveTuple[a.fiveTuple] = nil
        ledger.releaseAllocation(user: a.username, relayed: a.relayed)
    }

    /// A 401 or 438 with REALM and a fresh NONCE, unsigned (RFC 8489 §9.2.4 requires no more: no reason
    /// phrase, no SOFTWARE); dropped when the source has drawn too many, or when it would be more than
    /// ``TURNServerConfiguration/maxUnauthenticatedAmplification`` times the request (a bare header, say).
    private mutating func challenge(_ req: STUNMessage, _ ft: TURNFiveTuple, code: Int, requestBytes: Int,
                                    now: Double) -> [TURNServerAction] {
        guard limiter.allow(SourceAddressKey(ft.client.ip), now: now) else { return [] }
        let nonce = nonces.issue(for: ft.client, now: now)
        let realm = configuration.credentials.realm
        let actions = reply(req, ft, error: code, reason: "") {
            $0.append(Realm(realm))
            $0.append(Nonce(nonce))
        }
        guard case .sendToClient(_, let bytes)? = actions.first,
              bytes.count <= TURNServerConfiguration.maxUnauthenticatedAmplification * requestBytes else { return [] }
        return actions
    }

    /// An error response naming `refusal`, counted under its name.
    private mutating func refuse(_ req: STUNMessage, _ ft: TURNFiveTuple, _ refusal: TURNRefusal, key: [UInt8]) -> [TURNServerAction] {
        count(refusal.name)
        return reply(req, ft, error: refusal.code, reason: refusal.reason, key: key)
    }

    /// An error response, counted by its code's name (``TURNRefusal/named(code:)``).
    private mutating func reject(_ req: STUNMessage, _ ft: TURNFiveTuple, error: Int, reason: String? = nil, key: [UInt8]? = nil,
                                 _ build: (inout STUNMessage) -> Void = { _ in }) -> [TURNServerAction] {
        count(TURNRefusal.named(code: error))
        return reply(req, ft, error: error, reason: reason, key: key, build)
    }

    private mutating func count(_ refusal: String) { statistics.refusals[refusal, default: 0] += 1 }

    /// A response to `req`: success, or an error with `error` as its code; signed when `key` is given.
    private func reply(_ req: STUNMessage, _ ft: TURNFiveTuple, error: Int? = nil, reason: String? = nil, key: [UInt8]? = nil,
                       _ build: (inout STUNMessage) -> Void = { _ in }) -> [TURNServerAction] {
        var m = STUNMessage(method: req.method, messageClass: error == nil ? .successResponse : .errorResponse,
                            transactionID: req.transactionID)
        if let error { m.append(ErrorCode(error, reason: reason)) }
        build(&m)
        return [.sendToClient(ft, m.encode(integrityKey: key, fingerprint: req.fingerprintValid != nil))]
    }
}

/// Builders for TURN's indications (RFC 8656 §11).
public enum TURNMessages {
    /// A Data indication carrying `payload` from `peer` (RFC 8656 §11.3).
    public static func dataIndication(peer: TransportAddress, payload: [UInt8]) -> [UInt8] {
        indication(.data, peer: peer, payload: payload)
    }

    /// A Send indication carrying `payload` to `peer` (RFC 8656 §11.1).
    public static func sendIndication(peer: TransportAddress, payload: [UInt8]) -> [UInt8] {
        indication(.send, peer: peer, payload: payload)
    }

    private static func indication(_ method: STUNMethod, peer: TransportAddress, payload: [UInt8]) -> [UInt8] {
        var m = STUNMessage(method: method, messageClass: .indication)
        m.append(XORPeerAddress(peer))
        m.append(DataAttribute(payload))
        return m.encode()
    }
}
