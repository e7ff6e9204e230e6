import Crypto
import Foundation
import Logging
import NIOCore
import SourceLimits
import Traversal

/// One client as the hub sees it: a connection to this node, or a viewer connected to another node of the fleet
/// (`NodeRouter`); sends are fire-and-forget and ordered per client.
final class RendezvousPeer: Sendable, Hashable {
    /// A viewer's way back through the node it is connected to.
    struct RemoteLink: Sendable {
        /// The viewer's node.
        let node: String
        /// Queues a message (and whether to close the viewer's connection after it) for that node.
        let deliver: @Sendable (CloudMessage, _ close: Bool) -> Void
    }

    /// The connection, or nil for a viewer of another node.
    let channel: (any Channel)?
    /// The way back to a viewer of another node.
    let remote: RemoteLink?
    /// Where the client connects from (the rate-limiting key).
    let source: SourceAddressKey
    /// The client's `ip:port`.
    let observedAddress: String
    /// The client's IP address, as the camera is told it (the requester of an introduction).
    let requesterIP: String?
    /// Names the client between nodes.
    let id = UUID()

    init(channel: any Channel, source: SourceAddressKey, observedAddress: String) {
        self.channel = channel
        self.remote = nil
        self.source = source
        self.observedAddress = observedAddress
        self.requesterIP = channel.remoteAddress?.ipAddress
    }

    /// A viewer connected to another node.
    init(remote: RemoteLink, source: SourceAddressKey, observedAddress: String, requesterIP: String?) {
        self.channel = nil
        self.remote = remote
        self.source = source
        self.observedAddress = observedAddress
        self.requesterIP = requesterIP
    }

    /// Queues `message`; a client that stopped reading (write buffer above its high-water mark) is closed.
    /// A message for a viewer of another node is counted there, where it is written to the viewer.
    func send(_ message: CloudMessage) {
        guard let channel else {
            remote?.deliver(message, false)
            return
        }
        RendezvousMetrics.sent(message)
        guard channel.isWritable else {
            channel.close(promise: nil)
            return
        }
        channel.writeAndFlush(message, promise: nil)
    }

    /// Sends `message` (if any), then closes the connection.
    func close(after message: CloudMessage? = nil) {
        guard let channel else {
            if let message { remote?.deliver(message, true) }
            return
        }
        if let message {
            RendezvousMetrics.sent(message)
            channel.write(message, promise: nil)
        }
        channel.flush()
        channel.close(promise: nil)
    }

    static func == (lhs: RendezvousPeer, rhs: RendezvousPeer) -> Bool { lhs === rhs }
    func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
}

/// The cloud's shared state: live camera sessions, pending introductions, rate limits.
actor RendezvousHub {
    /// A viewer's introduction waiting for the camera's answer.
    struct PendingIntroduction {
        let viewer: RendezvousPeer
        let cameraSession: UUID
        let cameraKey: Data
        let timer: Task<Void, Never>
        /// The relay grant both sides receive, if the cloud runs a relay.
        let relay: RelayGrant?
        /// The offer, while the camera is being woken over UDP presence and has no TLS connection to take it.
        var undelivered: CloudMessage?
        /// How far the viewer's access proof has come (`AccessChallenge`).
        var access: AccessPhase = .offered
    }

    /// An introduction's access exchange, in order: only an answer after a carried proof reaches the viewer.
    enum AccessPhase {
        /// The offer went to the camera; it owes a challenge.
        case offered
        /// The viewer has the camera's challenge; it owes a proof.
        case challenged
        /// The camera has the viewer's proof; it owes an answer or a refusal.
        case proved
        /// The offer carried a browser's proof sealed to a deposit (`AccessDeposit`): the camera owes an answer or a
        /// refusal, or, when it does not hold the deposit's key, a challenge as after ``offered``.
        case depositProved

        /// The camera may challenge now.
        var mayChallenge: Bool { self == .offered || self == .depositProved }
        /// The camera may answer or refuse now: the viewer's proof went to it.
        var mayAnswer: Bool { self == .proved || self == .depositProved }
    }

    /// A registered camera: its TLS connection, if it holds one, and its UDP presence session, if granted.
    struct Camera {
        /// The TLS connection; nil while the camera keeps its presence over UDP alone.
        var peer: RendezvousPeer?
        let deviceID: DeviceID
        let presence: PresenceSessionID?
        /// The identity key it registered with (deposits are checked against it).
        let publicKey: Data
    }

    /// The one answer for an unknown, offline or declining device, so they cannot be told apart.
    static let unavailableMessage = "device unavailable"

    let configuration: RendezvousServer.Configuration
    let registry: any DeviceRegistry
    let logger: Logger
    private var peers: Set<RendezvousPeer> = []
    private var cameras: [UUID: Camera] = [:]
    /// Cameras present over UDP alone (no TLS connection); they hold no connection slot.
    private var udpOnlyCameras = 0
    /// The camera session of each UDP presence session.
    private var presenceSessions: [PresenceSessionID: UUID] = [:]
    /// UDP presence (``PresenceServer``), if the cloud offers it.
    let presence: PresenceServer?
    private var pending: [String: PendingIntroduction] = [:]
    /// Each registered camera's deposited one-time keys, by device: kept when a new session of the same device (and key)
    /// replaces the old one, as after a wake, and dropped when the camera goes offline.
    private var deposits: [DeviceID: AccessDepositShelf] = [:]
    private var lookupLimiter: TokenBucketRateLimiter<SourceAddressKey>
    private var registrationLimiter: TokenBucketRateLimiter<SourceAddressKey>
    private var ledger: IntroductionLedger

    init(configuration: RendezvousServer.Configuration, registry: any DeviceRegistry, presence: PresenceServer?, logger: Logger) {
        self.configuration = configuration
        self.presence = presence
        self.registry = registry
        self.logger = logger
        self.lookupLimiter = configuration.lookupRateLimit
        self.registrationLimiter = configuration.registrationRateLimit
        self.ledger = IntroductionLedger(limits: .init(
            maxPending: configuration.maxPendingIntroductions,
            maxPendingPerRequester: configuration.maxPendingIntroductionsPerRequester,
            maxPendingPerCamera: configuration.maxPendingIntroductionsPerCamera,
            maxGrantsPerRequester: configuration.maxRelayGrantsPerRequester,
            maxGrantsPerCamera: configuration.maxRelayGrantsPerCamera))
    }

    /// Signalling connections open.
    var connectionCount: Int { peers.count }
    /// The channels of the signalling connections open (admitted, on this node).
    var connectionChannels: [any Channel] { peers.compactMap(\.channel) }
    /// Registered cameras, and how many of them are present over UDP alone.
    var cameraCounts: (all: Int, overUDP: Int) { (cameras.count, udpOnlyCameras) }

    /// Admits a new connection unless ``RendezvousServer/Configuration/maxConnections`` are open.
    func connected(_ peer: RendezvousPeer) -> Bool {
        guard peers.count < configuration.maxConnections else { return false }
        peers.insert(peer)
        return true
    }

    /// Forgets a closed connection: its pending introductions either way, and its camera session unless
    /// the camera keeps its presence over UDP. Returns whether a camera went offline.
    @discardableResult
    func disconnected(_ peer: RendezvousPeer, cameraSession: UUID?) async -> Bool {
        peers.remove(peer)
        for (requestID, introduction) in pending where introduction.viewer == peer {
            endIntroduction(requestID)
        }
        guard let session = cameraSession, var camera = cameras[session], camera.peer == peer else { return false }
        if let id = camera.presence, let presence, presence.isLive(id) {
            presence.release(id)
            camera.peer = nil
            cameras[session] = camera
            udpOnlyCameras += 1
            logger.debug("camera present over UDP", metadata: ["device": "\(camera.deviceID)"])
            return false
        }
        await endCamera(session)
        return true
    }

    /// The UDP presence `session` timed out: a camera present over UDP alone is offline; returns its device.
    func presenceExpired(_ id: PresenceSessionID) async -> DeviceID? {
        guard let session = presenceSessions[id], let camera = cameras[session], camera.peer == nil else { return nil }
        await endCamera(session)
        return camera.deviceID
    }

    /// Removes a camera session, failing its introductions.
    private func endCamera(_ session: UUID) async {
        guard let camera = cameras.removeValue(forKey: session) else { return }
        if camera.peer == nil { udpOnlyCameras -= 1 }
        deposits[camera.deviceID] = nil
        if let id = camera.presence {
            presence?.close(id)
            presenceSessions[id] = nil
        }
        failIntroductions(ofCameraSession: session)
        await registry.remove(camera.deviceID, sessionID: session)
        logger.debug("camera disconnected", metadata: ["device": "\(camera.deviceID)"])
    }

    /// Closes every connection (server shutdown), first telling each client to come back after
    /// ``RendezvousServer/Configuration/restartRetryAfter`` plus a share of a window that grows with the
    /// cameras registered (one second per ``RendezvousServer/Configuration/restartRate`` cameras), drawn at random,
    /// so the fleet does not return at one moment. Cameras present over UDP alone hear it as an authenticated
    /// `goAway` datagram (`Traversal/PresenceProtocol`).
    func closeAll() {
        let window = Duration.seconds(Double(cameras.count) / Double(max(1, configuration.restartRate)))
        func retryAfter() -> Int {
            let delay = configuration.restartRetryAfter + window * Double.random(in: 0...1)
            return min(max(Int(delay / .milliseconds(1)), 1), CloudProtocol.maxRetryAfterMilliseconds)
        }
        for peer in peers {
            peer.close(after: .busy(retryAfterMilliseconds: retryAfter()))
        }
        for camera in cameras.values where camera.peer == nil {
            if let id = camera.presence { _ = presence?.goAway(id, retryAfterMilliseconds: retryAfter()) }
        }
    }

    /// Whether a camera may register: camera sessions stay below ``RendezvousServer/Configuration/maxConnections``
    /// less the ``RendezvousServer/Configuration/viewerReserve``.
    func hasRoomForCamera() -> Bool {
        cameras.count - udpOnlyCameras < max(1, configuration.maxConnections - configuration.viewerReserve)
    }

    /// Takes one token of the unverified-registration limit for `source`; false when its bucket is empty.
    func admitRegistration(from source: SourceAddressKey) -> Bool {
        take(from: &registrationLimiter, source)
    }

    /// Takes one look-up token for `source` (an introduction about to reach the database, `NodeRouter`); false when its bucket is empty.
    func admitLookup(from source: SourceAddressKey) -> Bool {
        take(from: &lookupLimiter, source)
    }

    /// The devices registered on this node and their keys (written to the database again after a lapsed lease).
    func registeredDevices() async -> [(DeviceID, Data)] {
        var devices: [(DeviceID, Data)] = []
        for camera in cameras.values {
            if let record = await registry.lookup(camera.deviceID) { devices.append((camera.deviceID, record.publicKey)) }
        }
        return devices
    }

    private func take(from limiter: inout TokenBucketRateLimiter<SourceAddressKey>, _ source: SourceAddressKey) -> Bool {
        limiter.admit(source, now: .now)
    }

    /// Registers a camera present over UDP alone whose presence `session` a keepalive restored from its ticket after
    /// a restart (`PresenceTickets`); false, and nothing changes, when the device registered again since (its
    /// newer session stands) or its key is not the one on record.
    func restorePresence(_ id: PresenceSessionID, deviceID: DeviceID, publicKey: Data, address: SocketAddress) async -> Bool {
        guard presenceSessions[id] == nil else { return false }
        let session = UUID()
        // In the tables before the registry answers: a TLS registration of the device that comes in meanwhile
        // then replaces this session the usual way (``register(_:deviceID:publicKey:)``).
        cameras[session] = Camera(peer: nil, deviceID: deviceID, presence: id, publicKey: publicKey)
        presenceSessions[id] = session
        udpOnlyCameras += 1
        let record = DeviceRegistration(deviceID: deviceID, publicKey: publicKey, sessionID: session, observedAddress: "\(address)")
        guard (try? await registry.registerUnlessHeld(record)) == true else {
            if cameras.removeValue(forKey: session) != nil {
                udpOnlyCameras -= 1
                presenceSessions[id] = nil
            }
            return false
        }
        logger.debug("camera present over UDP again", metadata: ["device": "\(deviceID)"])
        return cameras[session] != nil
    }

    /// Records a proven registration and grants it UDP presence if the cloud offers it; the session it replaces
    /// (same key) is closed, and offers held for it while it was woken move to the new one (``deliverHeldOffers(to:)``).
    func register(_ peer: RendezvousPeer, deviceID: DeviceID, publicKey: Data) async throws -> (session: UUID, presence: PresenceGrant?) {
        let session = UUID()
        let record = DeviceRegistration(
            deviceID: deviceID, publicKey: publicKey, sessionID: session, observedAddress: peer.observedAddress)
        let replaced = try await registry.register(record)
        let opened = presence?.open(deviceID)
        let presenceSession = opened?.session
        cameras[session] = Camera(peer: peer, deviceID: deviceID, presence: presenceSession, publicKey: publicKey)
        if let presenceSession { presenceSessions[presenceSession] = session }
        if let replaced, let old = cameras.removeValue(forKey: replaced.sessionID) {
            if let id = old.presence {
                presence?.close(id)
                presenceSessions[id] = nil
            }
            if let oldPeer = old.peer {
                oldPeer.close(after: .error(requestID: nil, code: "replaced", message: "a newer session registered this device"))
            } else {
                udpOnlyCameras -= 1
            }
            for (requestID, introduction) in pending where introduction.cameraSession == replaced.sessionID {
                guard introduction.undelivered != nil else { continue }
                pending[requestID] = PendingIntroduction(
                    viewer: introduction.viewer, cameraSession: session, cameraKey: introduction.cameraKey,
                    timer: introduction.timer, relay: introduction.relay, undelivered: introduction.undelivered,
                    access: introduction.access)
            }
            failIntroductions(ofCameraSession: replaced.sessionID)
            logger.info("camera session replaced", metadata: ["device": "\(deviceID)"])
        }
        logger.info("camera registered", metadata: ["device": "\(deviceID)", "observed": "\(peer.observedAddress)"])
        return (session, opened?.grant)
    }

    /// Sends the camera session the offers held for it while it was woken (after its `registered`).
    func deliverHeldOffers(to session: UUID) {
        guard let peer = cameras[session]?.peer else { return }
        for (requestID, introduction) in pending where introduction.cameraSession == session {
            guard let offer = introduction.undelivered else { continue }
            pending[requestID]?.undelivered = nil
            peer.send(offer)
        }
    }

    /// A viewer asks for `deviceID`: rate-limit, look up, forward the offer and its `answerKey` to the camera.
    ///
    /// What an asker learns: an introduction without an `answerKey` is `unavailable` for every UID,
    /// before the look-up; with one, an unknown, offline, declining or busy camera is `unavailable`
    /// alike, and an online camera first sends only its access challenge (its identity key); its
    /// answer and the relay grant come back after the camera has checked the viewer's proof
    /// (`AccessChallenge`), sealed to that key (`SealedAnswer`): nothing in clear names an address or
    /// carries a grant, and no answer is forwarded before a proof was.
    /// `lookupAdmitted`: the node router already took this introduction's look-up token. An introduction
    /// routed here from another node takes a token here too, in this node's bucket for the viewer's source, so
    /// spreading look-ups over several nodes does not reach one node's cameras faster.
    /// `deposited`: a browser's proof sealed to one of the camera's deposits (`AccessDeposit`), forwarded with the offer
    /// in place of the challenge and proof exchange.
    func introduce(from viewer: RendezvousPeer, requestID: String, deviceID: DeviceID, offer: PeerOffer, answerKey: String?,
                   deposited: DepositedProof? = nil, lookupAdmitted: Bool = false) async {
        guard lookupAdmitted || take(from: &lookupLimiter, viewer.source) else {
            viewer.send(.error(requestID: requestID, code: CloudError.Code.rateLimited.name, message: "too many look-ups"))
            return
        }
        guard pending[requestID] == nil else {
            viewer.send(.error(requestID: requestID, code: CloudError.Code.badRequest.name, message: "duplicate request ID"))
            return
        }
        let viewerPending = pending.values.filter { $0.viewer == viewer }.count
        let wantsGrant = configuration.relayGrants != nil
        ledger.expireGrants(now: .now)
        guard viewerPending < configuration.maxPendingIntroductionsPerConnection,
            ledger.checkRequester(viewer.source, wantsGrant: wantsGrant) == nil
        else {
            viewer.send(.error(requestID: requestID, code: CloudError.Code.overloaded.name, message: "too many pending introductions"))
            return
        }
        guard let answerKey else {
            viewer.send(.error(requestID: requestID, code: CloudError.Code.unavailable.name, message: Self.unavailableMessage))
            return
        }
        guard let record = await registry.lookup(deviceID), let camera = cameras[record.sessionID],
            pending[requestID] == nil
        else {
            viewer.send(.error(requestID: requestID, code: CloudError.Code.unavailable.name, message: Self.unavailableMessage))
            return
        }
        // One grant for both sides: the camera allocates with it while answering, the viewer after `start`.
        let relay = configuration.relayGrants?.grant(label: requestID)
        let grantExpires = relay.map { _ in ContinuousClock.now + (configuration.relayGrants?.lifetime ?? .zero) }
        switch ledger.admit(requestID, requester: viewer.source, camera: deviceID, grantExpires: grantExpires) {
        case nil:
            break
        case .cameraPending?, .cameraGrants?:
            // A camera at its bound looks offline: the answer tells nothing a look-up of an unknown UID does not.
            viewer.send(.error(requestID: requestID, code: CloudError.Code.unavailable.name, message: Self.unavailableMessage))
            return
        case .requesterPending?, .requesterGrants?, .full?:
            viewer.send(.error(requestID: requestID, code: CloudError.Code.overloaded.name, message: "too many pending introductions"))
            return
        }
        let timeout = configuration.introductionTimeout
        let timer = Task {
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            self.expire(requestID)
        }
        let message = CloudMessage.offer(requestID: requestID, offer: offer, relay: relay, requester: viewer.requesterIP,
                                         answerKey: answerKey, deposited: deposited)
        var introduction = PendingIntroduction(
            viewer: viewer, cameraSession: record.sessionID, cameraKey: record.publicKey, timer: timer, relay: relay,
            access: deposited == nil ? .offered : .depositProved)
        if let peer = camera.peer {
            peer.send(message)
        } else if let id = camera.presence, presence?.wake(id) == true {
            // Held until the camera is back on TLS (``register(_:deviceID:publicKey:)`` hands it over).
            introduction.undelivered = message
        } else {
            timer.cancel()
            ledger.ended(requestID)
            viewer.send(.error(requestID: requestID, code: CloudError.Code.unavailable.name, message: Self.unavailableMessage))
            return
        }
        pending[requestID] = introduction
    }

    /// The camera challenges the viewer to prove access: forwarded to the viewer once, if it carries
    /// the registered identity key (the viewer checks it against the UID too). After a deposited proof it is the
    /// camera's fallback (it does not hold the deposit's key), and the viewer proves as if it had not deposited.
    func accessChallenge(from session: UUID, requestID: String, challenge: AccessChallenge) {
        guard let camera = cameras[session]?.peer else { return }
        guard let introduction = pending[requestID], introduction.cameraSession == session, introduction.access.mayChallenge else {
            camera.send(.error(requestID: requestID, code: CloudError.Code.timeout.name, message: "no such introduction awaiting a challenge"))
            return
        }
        guard Data(base64Encoded: challenge.identityKey) == introduction.cameraKey else {
            endIntroduction(requestID)
            camera.send(.error(requestID: requestID, code: CloudError.Code.badRequest.name, message: "the challenge must carry the registered key"))
            introduction.viewer.send(.error(requestID: requestID, code: CloudError.Code.unavailable.name, message: Self.unavailableMessage))
            return
        }
        pending[requestID]?.access = .challenged
        introduction.viewer.send(.accessChallenge(requestID: requestID, challenge: challenge))
    }

    /// The registered identity key of the camera that `viewer`'s pending introduction `requestID` went to, while it
    /// awaits the camera's challenge (nil otherwise). The challenge will carry this key (``accessChallenge(from:requestID:challenge:)``
    /// forwards no other), so a browser may start checking it against the UID before the challenge arrives.
    func cameraKey(of requestID: String, for viewer: RendezvousPeer) -> Data? {
        guard let introduction = pending[requestID], introduction.viewer == viewer, introduction.access == .offered else { return nil }
        return introduction.cameraKey
    }

    /// The key `deviceID` is registered with here, for a page that checks it against the UID before it watches
    /// (`BrowserSignallingStateMachine`'s `locate`), and one of the camera's deposits, handed out once (removed), when
    /// it registered on this node and has one; one look-up token of `source`, as an introduction takes. Nil when the
    /// bucket is empty or the device is not registered.
    func registeredKey(of deviceID: DeviceID, for source: SourceAddressKey) async -> (key: Data, deposit: AccessDeposit?)? {
        guard take(from: &lookupLimiter, source), let key = await registry.lookup(deviceID)?.publicKey else { return nil }
        return (key, deposits[deviceID]?.take(now: AccessDeposit.now()))
    }

    /// A registered camera's deposits: each kept if its signature verifies under the key the camera registered with, for
    /// its UID, and it is unexpired (``AccessDepositShelf``, at most ``RendezvousServer/Configuration/maxDepositsPerCamera``);
    /// the camera hears of refused ones in one `bad-request` error without a request ID.
    func deposit(from session: UUID, _ offered: [AccessDeposit]) {
        guard let camera = cameras[session], let peer = camera.peer,
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: camera.publicKey)
        else { return }
        var shelf = deposits[camera.deviceID] ?? AccessDepositShelf(capacity: configuration.maxDepositsPerCamera)
        let refusals = shelf.add(offered, cameraKey: key, deviceID: camera.deviceID, now: AccessDeposit.now())
        deposits[camera.deviceID] = shelf
        if let first = refusals.first {
            peer.send(.error(requestID: nil, code: CloudError.Code.badRequest.name,
                             message: String("\(refusals.count) of \(offered.count) deposits refused: \(first)".prefix(CloudProtocol.maxMessageLength))))
        }
    }

    /// How many deposits the cloud holds for `deviceID` now.
    func heldDeposits(of deviceID: DeviceID) -> Int { deposits[deviceID]?.held.count ?? 0 }

    /// The viewer's sealed access proof: forwarded to the camera once, after its challenge, from the
    /// connection that asked (no one else can answer another's challenge).
    func accessProof(from viewer: RendezvousPeer, requestID: String, sealed: String) {
        guard let introduction = pending[requestID], introduction.viewer == viewer, introduction.access == .challenged else {
            viewer.send(.error(requestID: requestID, code: CloudError.Code.badRequest.name, message: "no challenge awaits a proof"))
            return
        }
        guard let camera = cameras[introduction.cameraSession]?.peer else {
            endIntroduction(requestID)
            viewer.send(.error(requestID: requestID, code: CloudError.Code.unavailable.name, message: Self.unavailableMessage))
            return
        }
        pending[requestID]?.access = .proved
        camera.send(.accessProof(requestID: requestID, sealed: sealed))
    }

    /// The camera refused the viewer's proof: the viewer hears why (it knows the camera is there by now).
    func refuse(from session: UUID, requestID: String, reason: AccessRefusal) {
        guard let introduction = pending[requestID], introduction.cameraSession == session, introduction.access.mayAnswer else { return }
        endIntroduction(requestID)
        let text = switch reason {
        case .accessDenied: "the camera refused the credential"
        case .rateLimited: "the camera is limiting access attempts; try later"
        }
        introduction.viewer.send(.error(requestID: requestID, code: reason.rawValue, message: text))
    }

    /// The camera answered: send `start` to both, back to back; the viewer's carries only the sealed answer.
    func answer(from session: UUID, requestID: String, offer: PeerOffer, sealed: String?) {
        guard let camera = cameras[session]?.peer else { return }
        guard let introduction = pending[requestID], introduction.cameraSession == session else {
            camera.send(.error(requestID: requestID, code: CloudError.Code.timeout.name, message: "no such pending introduction"))
            return
        }
        guard offer.identityKey == introduction.cameraKey, offer.candidates.isEmpty, let sealed, introduction.access.mayAnswer else {
            endIntroduction(requestID)
            camera.send(.error(
                requestID: requestID, code: CloudError.Code.badRequest.name,
                message: "answer must follow the viewer's access proof, carry the registered key, and its candidates only sealed"))
            introduction.viewer.send(.error(requestID: requestID, code: CloudError.Code.unavailable.name, message: Self.unavailableMessage))
            return
        }
        pending[requestID] = nil
        introduction.timer.cancel()
        ledger.started(requestID)
        introduction.viewer.send(.start(requestID: requestID, answer: nil, relay: nil, sealed: sealed))
        camera.send(.start(requestID: requestID, answer: nil, relay: introduction.relay))
    }

    /// The camera declined: the viewer hears exactly what an unknown UID gets.
    func decline(from session: UUID, requestID: String) {
        guard let introduction = pending[requestID], introduction.cameraSession == session else { return }
        endIntroduction(requestID)
        introduction.viewer.send(.error(requestID: requestID, code: CloudError.Code.unavailable.name, message: Self.unavailableMessage))
    }

    private func expire(_ requestID: String) {
        guard let introduction = pending[requestID] else { return }
        endIntroduction(requestID)
        introduction.viewer.send(.error(requestID: requestID, code: CloudError.Code.timeout.name, message: "the device did not answer in time"))
    }

    private func failIntroductions(ofCameraSession session: UUID) {
        for (requestID, introduction) in pending where introduction.cameraSession == session {
            endIntroduction(requestID)
            introduction.viewer.send(.error(requestID: requestID, code: CloudError.Code.unavailable.name, message: Self.unavailableMessage))
        }
    }

    /// Forgets a pending introduction that ends without a start, freeing what it held (its grant too).
    private func endIntroduction(_ requestID: String) {
        pending.removeValue(forKey: requestID)?.timer.cancel()
        ledger.ended(requestID)
    }
}
