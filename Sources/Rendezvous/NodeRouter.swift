import Foundation
import Logging
import Metrics
import NIOCore
import SourceLimits
import STUNLite
import Traversal

/// Makes one cloud node part of a fleet that shares a `NodeDirectory` (PostgreSQL): it keeps the node's lease,
/// releases the sessions of nodes that died, and carries viewers' messages to the node holding the camera and
/// the answers back (`NodeEnvelope` shows the flow), over one LISTEN/NOTIFY channel per node (`NodeChannel`).
///
/// A camera's introductions are served by the node it is registered on, as on a single node; a viewer on
/// another node is, there, a ``RendezvousPeer`` whose messages go back through its own node.
actor NodeRouter {
    /// This node's name (its lease, its sessions, its channel).
    let node: String
    let directory: any NodeDirectory
    let logger: Logger
    private var routing: NodeRoutingStateMachine<RendezvousPeer>
    private var liveness: NodeLivenessStateMachine
    /// Local viewer connections with routed requests, by their ID.
    private var viewers: [UUID: RendezvousPeer] = [:]
    /// Envelopes to send, in order, by one task.
    private let outbox: AsyncStream<(node: String, envelope: NodeEnvelope)>.Continuation
    private let outgoing: AsyncStream<(node: String, envelope: NodeEnvelope)>
    private var tasks: [Task<Void, Never>] = []
    private var sender: Task<Void, Never>?
    /// Envelopes waiting to be sent, at most; more are dropped (and logged): a database that stopped taking
    /// them must not grow the node's memory.
    static let maxQueuedEnvelopes = 10_000

    init(node: String, directory: any NodeDirectory, routing: NodeRoutingStateMachine<RendezvousPeer>.Configuration = .init(),
         liveness: NodeLivenessStateMachine.Configuration = .init(), logger: Logger) {
        self.node = node
        self.directory = directory
        self.logger = logger
        self.routing = NodeRoutingStateMachine(configuration: routing)
        self.liveness = NodeLivenessStateMachine(node: node, configuration: liveness)
        (outgoing, outbox) = AsyncStream.makeStream(
            of: (node: String, envelope: NodeEnvelope).self, bufferingPolicy: .bufferingOldest(Self.maxQueuedEnvelopes))
    }

    /// Starts listening on this node's channel, sending, and the lease; `handle` runs a message of a remote viewer
    /// through the hub as if the viewer were connected here.
    func start(hub: RendezvousHub, store: any DeviceStore, handle: @escaping @Sendable (RendezvousPeer, CloudMessage) async -> Void) async {
        let channel = NodeChannel.name(of: node)
        let (directory, logger, outgoing) = (directory, logger, outgoing)
        sender = Task {
            for await item in outgoing {
                do {
                    try await directory.notify(channel: NodeChannel.name(of: item.node), payload: item.envelope.payload())
                    NodeMetrics.count(item.envelope.kind, "sent")
                } catch {
                    NodeMetrics.count(item.envelope.kind, "failed")
                    logger.warning("message to node lost", metadata: ["node": "\(item.node)", "error": "\(error)"])
                }
            }
        }
        tasks.append(Task {
            while !Task.isCancelled {
                do {
                    try await directory.listen(channel: channel) { payload in
                        await self.received(payload, hub: hub, handle: handle)
                    }
                } catch {
                    logger.warning("listening for other nodes failed; again in 1 s", metadata: ["error": "\(error)"])
                }
                guard (try? await Task.sleep(for: .seconds(1))) != nil else { break }
            }
        })
        let interval = liveness.configuration.heartbeatInterval
        tasks.append(Task {
            repeat {
                await self.tick(hub: hub, store: store)
            } while (try? await Task.sleep(for: interval)) != nil
        })
    }

    /// Stops listening and the lease, and sends what is queued.
    func stop() async {
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
        tasks = []
        outbox.finish()
        await sender?.value
    }

    // MARK: Viewers connected here

    /// What ``intercept(_:from:hub:)`` did with a viewer's message.
    enum Interception: Equatable {
        /// Sent to (or refused on the way to) another node: this node's hub does nothing with it.
        case routed
        /// Left to this node's hub.
        case local
        /// Left to this node's hub, an introduction whose look-up token was already taken here: the hub takes none.
        case localLookupAdmitted
    }

    /// Routes a message of a viewer connected here to the node that serves it, or leaves it to this node's hub.
    ///
    /// An introduction goes to the node the database names for the camera, when that is another live node; any
    /// later message naming a routed request goes where its introduction went. One introduction takes one token
    /// of the look-up limit, wherever it is served.
    func intercept(_ message: CloudMessage, from peer: RendezvousPeer, hub: RendezvousHub) async -> Interception {
        if case .introduce(let requestID, let deviceIDText, _, let answerKey) = message {
            // Without an answer key or with a bad UID the hub answers at once, before any look-up.
            guard answerKey != nil, let deviceID = try? DeviceID(deviceIDText), await hub.registry.lookup(deviceID) == nil else {
                return .local
            }
            guard await hub.admitLookup(from: peer.source) else {
                peer.send(.error(requestID: requestID, code: CloudError.Code.rateLimited.name, message: "too many look-ups"))
                return .routed
            }
            let owner: String?
            do {
                owner = try await directory.liveNode(of: deviceID, now: Date())
            } catch {
                logger.warning("device look-up in the database failed", metadata: ["error": "\(error)"])
                return .localLookupAdmitted
            }
            guard let owner, owner != node else { return .localLookupAdmitted }
            guard routing.open(requestID, viewer: peer.id, to: owner, now: .now) else {
                peer.send(.error(requestID: requestID, code: CloudError.Code.overloaded.name, message: "too many pending introductions"))
                return .routed
            }
            viewers[peer.id] = peer
            send(message, from: peer, requestID: requestID, to: owner)
            return .routed
        }
        guard routing.hasRoutes(peer.id), let requestID = NodeEnvelope.requestID(of: message),
            let owner = routing.node(for: requestID, viewer: peer.id, now: .now)
        else { return .local }
        send(message, from: peer, requestID: requestID, to: owner)
        return .routed
    }

    /// Queues a viewer's message for `owner`; one too large for a `NOTIFY` is refused to the viewer.
    private func send(_ message: CloudMessage, from peer: RendezvousPeer, requestID: String, to owner: String) {
        let envelope = NodeEnvelope(kind: .hub, from: node, viewer: peer.id, viewerAddress: peer.observedAddress, message: message)
        do {
            _ = try envelope.payload()
        } catch {
            NodeMetrics.count(envelope.kind, "failed")
            routing.close(requestID, viewer: peer.id)
            peer.send(.error(requestID: requestID, code: CloudError.Code.badRequest.name, message: "\(error)"))
            return
        }
        enqueue(envelope, to: owner)
    }

    /// A viewer connected here closed: the nodes serving its requests end them.
    func viewerClosed(_ peer: RendezvousPeer) {
        guard viewers.removeValue(forKey: peer.id) != nil else { return }
        for owner in routing.viewerClosed(peer.id) {
            enqueue(NodeEnvelope(kind: .closed, from: node, viewer: peer.id), to: owner)
        }
    }

    private func enqueue(_ envelope: NodeEnvelope, to node: String) {
        if case .dropped = outbox.yield((node, envelope)) {
            NodeMetrics.count(envelope.kind, "dropped")
            logger.warning("message to node dropped: queue full", metadata: ["node": "\(node)"])
        }
    }

    // MARK: Messages from other nodes

    /// Handles one payload from this node's channel.
    private func received(_ payload: String, hub: RendezvousHub, handle: @Sendable (RendezvousPeer, CloudMessage) async -> Void) async {
        let envelope: NodeEnvelope
        do {
            envelope = try NodeEnvelope(payload: payload)
        } catch {
            Counter(label: NodeMetrics.label, dimensions: [("kind", "unknown"), ("outcome", "bad")]).increment()
            logger.warning("bad message from another node", metadata: ["error": "\(error)"])
            return
        }
        NodeMetrics.count(envelope.kind, "received")
        let key = NodeRoutingStateMachine<RendezvousPeer>.RemoteViewerKey(node: envelope.from, viewer: envelope.viewer)
        switch envelope.kind {
        case .viewer:
            guard let peer = viewers[envelope.viewer], let message = envelope.message else { return }
            routing.replied(to: envelope.viewer, requestID: NodeEnvelope.requestID(of: message), now: .now)
            if envelope.close { peer.close(after: message) } else { peer.send(message) }
        case .hub:
            guard let message = envelope.message else { return }
            let peer = routing.remoteViewer(key, now: .now) { remotePeer(envelope) }
            guard let peer else {
                enqueue(NodeEnvelope(kind: .viewer, from: node, viewer: envelope.viewer, message: .error(
                    requestID: NodeEnvelope.requestID(of: message), code: CloudError.Code.overloaded.name,
                    message: "too many viewers"), close: false), to: envelope.from)
                return
            }
            await handle(peer, message)
        case .closed:
            if let peer = routing.remoteViewerClosed(key) { await hub.disconnected(peer, cameraSession: nil) }
        }
    }

    /// A viewer of another node as the hub sees it: its messages go back through that node.
    private func remotePeer(_ envelope: NodeEnvelope) -> RendezvousPeer {
        let address: TransportAddress? = envelope.viewerAddress.flatMap { TransportAddress($0) }
        let socket: SocketAddress? = address.flatMap { try? SocketAddress(ipAddress: $0.ip.description, port: Int($0.port)) }
        let (home, viewer, me) = (envelope.from, envelope.viewer, node)
        let outbox = outbox
        let link = RendezvousPeer.RemoteLink(node: home) { message, close in
            if case .dropped = outbox.yield((home, NodeEnvelope(kind: .viewer, from: me, viewer: viewer, message: message, close: close))) {
                NodeMetrics.count(.viewer, "dropped")
            }
        }
        return RendezvousPeer(
            remote: link, source: socket.map { SourceAddressKey($0) } ?? .unidentified,
            observedAddress: envelope.viewerAddress ?? "unknown", requesterIP: address?.ip.description)
    }

    // MARK: Lease

    /// One heartbeat: renew the lease, forget dead nodes, expire routes.
    private func tick(hub: RendezvousHub, store: any DeviceStore) async {
        let now = Date()
        for action in liveness.tick(now: now) { await run(action, hub: hub, store: store, now: now) }
        let (unanswered, closed) = routing.expire(now: .now)
        for key in unanswered {
            viewers[key.viewer]?.send(.error(requestID: key.requestID, code: CloudError.Code.timeout.name, message: "the device did not answer in time"))
        }
        for peer in closed { await hub.disconnected(peer, cameraSession: nil) }
    }

    private func run(_ action: NodeLivenessStateMachine.Action, hub: RendezvousHub, store: any DeviceStore, now: Date) async {
        do {
            switch action {
            case .heartbeat(let until):
                try await directory.heartbeat(node: node, leaseUntil: until)
                for next in liveness.heartbeatConfirmed(until: until, now: Date()) { await run(next, hub: hub, store: store, now: now) }
            case .sweep(let before):
                let expired = try await directory.expiredNodes(now: before)
                for next in liveness.expired(expired) { await run(next, hub: hub, store: store, now: now) }
            case .forget(let dead):
                try await directory.forget(node: dead, at: now)
                logger.info("node lease ran out: its sessions released", metadata: ["node": "\(dead)"])
                let (unanswered, closed) = routing.nodeDied(dead)
                for key in unanswered {
                    viewers[key.viewer]?.send(.error(
                        requestID: key.requestID, code: CloudError.Code.unavailable.name, message: RendezvousHub.unavailableMessage))
                }
                for peer in closed { await hub.disconnected(peer, cameraSession: nil) }
            case .reassertSessions:
                for (deviceID, publicKey) in await hub.registeredDevices() {
                    try await store.registered(deviceID, publicKey: publicKey, node: node, at: now)
                }
                logger.notice("lease had run out: this node's sessions written again")
            }
        } catch {
            logger.warning("node lease update failed", metadata: ["action": "\(action)", "error": "\(error)"])
        }
    }
}

/// The counter of messages between nodes (listed with the others at ``RendezvousMetrics``).
enum NodeMetrics {
    static let label = "cloud_node_messages_total"

    /// Counts one envelope of `kind` with `outcome`.
    static func count(_ kind: NodeEnvelope.Kind, _ outcome: String) {
        Counter(label: label, dimensions: [("kind", kind.rawValue), ("outcome", outcome)]).increment()
    }
}
