import Crypto
import Foundation
import Traversal

/// What cloud nodes sharing one fleet need of their database (``PostgresDeviceStore``): leases, where each camera's
/// session is, and a channel per node for the messages between them.
public protocol NodeDirectory: Sendable {
    /// Extends `node`'s lease to `leaseUntil`.
    func heartbeat(node: String, leaseUntil: Date) async throws
    /// The node holding `deviceID`'s session, if that node's lease runs at `now`.
    func liveNode(of deviceID: DeviceID, now: Date) async throws -> String?
    /// Nodes whose lease ran out before `now`.
    func expiredNodes(now: Date) async throws -> [String]
    /// Releases the sessions of a node whose lease ran out before `date`, and its lease.
    func forget(node: String, at date: Date) async throws
    /// Sends `payload` to the node listening on `channel`.
    func notify(channel: String, payload: String) async throws
    /// Hands every payload sent to `channel` to `receive` until the connection fails or the task is cancelled.
    func listen(channel: String, _ receive: @Sendable (String) async -> Void) async throws
}

/// The LISTEN/NOTIFY channel of each node.
public enum NodeChannel {
    /// `trav_node_` and 32 hex digits of SHA-256 of the node's name: a valid identifier whatever the name holds.
    public static func name(of node: String) -> String {
        "trav_node_" + SHA256.hash(data: Data(node.utf8)).prefix(16).map { String(format: "%02x", $0) }.joined()
    }
}

/// Why routing between nodes failed.
public struct NodeRouteError: CodedError, Hashable {
    /// A stable reason code.
    public struct Code: ErrorCode {
        /// The code's stable name.
        public let name: String
        /// The message does not fit one `NOTIFY` payload (``NodeEnvelope/maxPayloadBytes``).
        public static let payloadTooLarge = Code(name: "payload-too-large")
        /// A payload received from another node is not an envelope.
        public static let badEnvelope = Code(name: "bad-envelope")
        /// `--database` is not a `postgres://` URL.
        public static let badDatabaseURL = Code(name: "bad-database-url")
    }

    /// What went wrong.
    public let code: Code
    /// Why.
    public let detail: String
}

/// One message between two nodes of a fleet, JSON in one `NOTIFY` payload.
///
/// A viewer's introduction is served by the node holding the camera (its pending state, rate limits per camera,
/// relay grant), so only the viewer is ever remote:
///
/// ```
///  viewer ──TLS── node B                                    node A ──TLS/UDP── camera
///   introduce R ──► not local; the database says A ──hub(viewer V, R)──► handled as from viewer V
///                                                                        offer ──► camera
///                                                  ◄──viewer(V) start── answer ◄── camera
///   start ◄──────── delivered to connection V
///   any later message naming R ──────────────────────hub(viewer V)──► handled as from viewer V
///   connection closed ───────────────────────────────closed(V)──────► V's pending introductions end
/// ```
///
/// The routing never looks inside a message beyond its `requestID`: every message the hub relays
/// between a viewer and a camera crosses nodes the same way.
public struct NodeEnvelope: Codable, Sendable, Hashable {
    /// What the receiving node does with it.
    public enum Kind: String, Codable, Sendable {
        /// Handle ``NodeEnvelope/message`` as sent by viewer connection ``NodeEnvelope/viewer`` of node ``NodeEnvelope/from``.
        case hub
        /// Send ``NodeEnvelope/message`` to this node's viewer connection ``NodeEnvelope/viewer``.
        case viewer
        /// Viewer connection ``NodeEnvelope/viewer`` of node ``NodeEnvelope/from`` closed.
        case closed
    }

    /// PostgreSQL's `NOTIFY` payload must be shorter than 8000 bytes (`NOTIFY`, PostgreSQL manual).
    public static let maxPayloadBytes = 7999

    /// What to do.
    public var kind: Kind
    /// The sending node.
    public var from: String
    /// The viewer connection (an ID of the viewer's node).
    public var viewer: UUID
    /// The viewer's `ip:port` (``Kind/hub``: its rate-limit key and the requester address the camera sees).
    public var viewerAddress: String?
    /// The message, if the kind carries one.
    public var message: CloudMessage?
    /// ``Kind/viewer``: close the viewer's connection after the message.
    public var close: Bool

    /// An envelope.
    public init(kind: Kind, from: String, viewer: UUID, viewerAddress: String? = nil, message: CloudMessage? = nil, close: Bool = false) {
        self.kind = kind
        self.from = from
        self.viewer = viewer
        self.viewerAddress = viewerAddress
        self.message = message
        self.close = close
    }

    /// The JSON payload.
    ///
    /// - Throws: `NodeRouteError` `.payloadTooLarge` past ``maxPayloadBytes``.
    public func payload() throws -> String {
        let data = try JSONEncoder().encode(self)
        guard data.count <= Self.maxPayloadBytes else {
            throw NodeRouteError(code: .payloadTooLarge, detail: "\(data.count) bytes, at most \(Self.maxPayloadBytes) fit one NOTIFY")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Decodes a payload, validating the message it carries.
    ///
    /// - Throws: `NodeRouteError` `.badEnvelope`.
    public init(payload: String) throws {
        guard payload.utf8.count <= Self.maxPayloadBytes else {
            throw NodeRouteError(code: .badEnvelope, detail: "\(payload.utf8.count) bytes")
        }
        do {
            self = try JSONDecoder().decode(Self.self, from: Data(payload.utf8))
            try message?.validate()
        } catch {
            throw NodeRouteError(code: .badEnvelope, detail: "\(error)")
        }
    }

    /// The `requestID` a message names, read from its encoding, so routing needs no list of message types.
    static func requestID(of message: CloudMessage) -> String? {
        struct Named: Decodable { let requestID: String? }
        guard let data = try? JSONEncoder().encode(message) else { return nil }
        return (try? JSONDecoder().decode(Named.self, from: data))?.requestID
    }
}

/// Which viewer requests of this node another node serves, and which viewers of other nodes this node serves.
///
/// Sans-I/O: every method takes `now`; ``expire(now:)`` returns what timed out, for the router to answer.
struct NodeRoutingStateMachine<Peer: AnyObject> {
    /// Bounds and lifetimes.
    struct Configuration {
        /// Requests routed to other nodes at once, over all viewers.
        var maxRoutes = 10_000
        /// Requests one viewer connection may have routed at once (as its pending introductions on one node).
        var maxRoutesPerViewer = 8
        /// A routed request with no reply for this long is answered `timeout` (the other node's introduction
        /// timeout, plus a margin); one that had a reply is forgotten silently this long after its last message.
        var routeLifetime: Duration = .seconds(15)
        /// Viewers of other nodes served at once.
        var maxRemoteViewers = 10_000
        /// A remote viewer with no message for this long is treated as closed.
        var remoteViewerLifetime: Duration = .seconds(120)
    }

    /// A request of a local viewer connection.
    struct RouteKey: Hashable {
        let viewer: UUID
        let requestID: String
    }

    /// Where a request goes.
    struct Route {
        let node: String
        var expires: ContinuousClock.Instant
        /// Whether anything came back for it (then its expiry is silent).
        var answered = false
    }

    /// A viewer connection of another node.
    struct RemoteViewerKey: Hashable {
        let node: String
        let viewer: UUID
    }

    let configuration: Configuration
    private(set) var routes: [RouteKey: Route] = [:]
    private var routesPerViewer: [UUID: Int] = [:]
    private var remoteViewers: [RemoteViewerKey: (peer: Peer, expires: ContinuousClock.Instant)] = [:]

    init(configuration: Configuration = .init()) { self.configuration = configuration }

    /// Records that `requestID` of `viewer` goes to `node`; false (nothing recorded) when it is already routed or a bound is reached.
    mutating func open(_ requestID: String, viewer: UUID, to node: String, now: ContinuousClock.Instant) -> Bool {
        let key = RouteKey(viewer: viewer, requestID: requestID)
        guard routes[key] == nil, routes.count < configuration.maxRoutes,
            routesPerViewer[viewer, default: 0] < configuration.maxRoutesPerViewer
        else { return false }
        routes[key] = Route(node: node, expires: now + configuration.routeLifetime)
        routesPerViewer[viewer, default: 0] += 1
        return true
    }

    /// Forgets a route (its message could not be sent).
    mutating func close(_ requestID: String, viewer: UUID) {
        remove(RouteKey(viewer: viewer, requestID: requestID))
    }

    /// Whether `viewer` has any routed request (spares the look-up of a request ID otherwise).
    func hasRoutes(_ viewer: UUID) -> Bool { routesPerViewer[viewer] != nil }

    /// The node serving `requestID` of `viewer`, if routed; extends the route's life.
    mutating func node(for requestID: String, viewer: UUID, now: ContinuousClock.Instant) -> String? {
        let key = RouteKey(viewer: viewer, requestID: requestID)
        guard routes[key] != nil else { return nil }
        routes[key]?.expires = now + configuration.routeLifetime
        return routes[key]?.node
    }

    /// A message for `viewer` came back from `node`, about `requestID` if it names one: its route is answered.
    mutating func replied(to viewer: UUID, requestID: String?, now: ContinuousClock.Instant) {
        guard let requestID else { return }
        let key = RouteKey(viewer: viewer, requestID: requestID)
        guard routes[key] != nil else { return }
        routes[key]?.answered = true
        routes[key]?.expires = now + configuration.routeLifetime
    }

    /// The local viewer closed: its routes end; returns the nodes to tell.
    mutating func viewerClosed(_ viewer: UUID) -> Set<String> {
        guard hasRoutes(viewer) else { return [] }
        let mine = routes.filter { $0.key.viewer == viewer }
        for key in mine.keys { remove(key) }
        return Set(mine.values.map(\.node))
    }

    /// The viewer of another node sending a message: the existing one, or a new one from `make`; nil when at the bound.
    mutating func remoteViewer(_ key: RemoteViewerKey, now: ContinuousClock.Instant, make: () -> Peer) -> Peer? {
        let expires = now + configuration.remoteViewerLifetime
        if let known = remoteViewers[key] {
            remoteViewers[key] = (known.peer, expires)
            return known.peer
        }
        guard remoteViewers.count < configuration.maxRemoteViewers else { return nil }
        let peer = make()
        remoteViewers[key] = (peer, expires)
        return peer
    }

    /// A message went to the viewer of another node: it is still there.
    mutating func touchRemoteViewer(_ key: RemoteViewerKey, now: ContinuousClock.Instant) {
        remoteViewers[key]?.expires = now + configuration.remoteViewerLifetime
    }

    /// The viewer of another node closed; returns it if it was known.
    mutating func remoteViewerClosed(_ key: RemoteViewerKey) -> Peer? {
        remoteViewers.removeValue(forKey: key)?.peer
    }

    /// What ran out at `now`: unanswered routes (their viewers hear `timeout`) and silent remote viewers (closed).
    mutating func expire(now: ContinuousClock.Instant) -> (unanswered: [RouteKey], remoteViewers: [Peer]) {
        var unanswered: [RouteKey] = []
        for (key, route) in routes where route.expires <= now {
            if !route.answered { unanswered.append(key) }
            remove(key)
        }
        var closed: [Peer] = []
        for (key, entry) in remoteViewers where entry.expires <= now {
            closed.append(entry.peer)
            remoteViewers[key] = nil
        }
        return (unanswered, closed)
    }

    /// `node` died: routes to it end (unanswered ones are returned, for `unavailable`) and its viewers close.
    mutating func nodeDied(_ node: String) -> (unanswered: [RouteKey], remoteViewers: [Peer]) {
        var unanswered: [RouteKey] = []
        for (key, route) in routes where route.node == node {
            if !route.answered { unanswered.append(key) }
            remove(key)
        }
        var closed: [Peer] = []
        for (key, entry) in remoteViewers where key.node == node {
            closed.append(entry.peer)
            remoteViewers[key] = nil
        }
        return (unanswered, closed)
    }

    private mutating func remove(_ key: RouteKey) {
        guard routes.removeValue(forKey: key) != nil else { return }
        let left = routesPerViewer[key.viewer, default: 1] - 1
        routesPerViewer[key.viewer] = left > 0 ? left : nil
    }
}

/// A node's lease in the shared database, and which other nodes' leases ran out.
///
/// ```
///  every heartbeatInterval: heartbeat(leaseUntil: now + lease), then sweep(now)
///  heartbeat confirmed after our own lease had run out ──► reassertSessions (other nodes may have released them)
///  sweep found nodes whose lease ran out ──► forget each (its sessions released; its cameras re-register elsewhere)
/// ```
struct NodeLivenessStateMachine {
    /// Timing.
    struct Configuration: Sendable {
        /// Between two heartbeats.
        var heartbeatInterval: Duration = .seconds(2)
        /// How long a heartbeat keeps the node alive: several intervals, so one slow write does not kill it.
        var lease: Duration = .seconds(10)
    }

    /// What to do.
    enum Action: Equatable {
        /// Write the lease.
        case heartbeat(leaseUntil: Date)
        /// Look for nodes whose lease ran out before this date.
        case sweep(expiredBefore: Date)
        /// Write this node's sessions again: its lease ran out, so others may have released them.
        case reassertSessions
        /// Release the sessions of this dead node.
        case forget(node: String)
    }

    let node: String
    let configuration: Configuration
    /// The lease the database last confirmed.
    private var confirmedUntil: Date?

    init(node: String, configuration: Configuration = .init()) {
        self.node = node
        self.configuration = configuration
    }

    /// When the next ``tick(now:)`` is due, after one at `now`.
    func nextTick(after now: ContinuousClock.Instant) -> ContinuousClock.Instant { now + configuration.heartbeatInterval }

    /// A heartbeat is due.
    func tick(now: Date) -> [Action] {
        [.heartbeat(leaseUntil: now.addingTimeInterval(configuration.lease / .seconds(1))), .sweep(expiredBefore: now)]
    }

    /// The database confirmed the lease `until` at `now`.
    mutating func heartbeatConfirmed(until: Date, now: Date) -> [Action] {
        let lapsed = confirmedUntil.map { $0 <= now } ?? false
        confirmedUntil = until
        return lapsed ? [.reassertSessions] : []
    }

    /// The sweep found `nodes` with expired leases: the others than this one are forgotten.
    func expired(_ nodes: [String]) -> [Action] {
        nodes.filter { $0 != node }.map { .forget(node: $0) }
    }
}
