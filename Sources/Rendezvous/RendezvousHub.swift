import Foundation
import Logging
import NIOCore
import SourceLimits
import Traversal

/// One client connection as the hub sees it; sends are fire-and-forget and ordered per connection.
final class RendezvousPeer: Sendable, Hashable {
    /// The connection's channel.
    let channel: any Channel
    /// Where the client connects from (the rate-limiting key).
    let source: SourceAddressKey
    /// The client's `ip:port`.
    let observedAddress: String

    init(channel: any Channel, source: SourceAddressKey, observedAddress: String) {
        self.channel = channel
        self.source = source
        self.observedAddress = observedAddress
    }

    /// Queues `message`; a client that stopped reading (write buffer above its high-water mark) is closed.
    func send(_ message: CloudMessage) {
        guard channel.isWritable else {
            channel.close(promise: nil)
            return
        }
        channel.writeAndFlush(message, promise: nil)
    }

    /// Sends `message` (if any), then closes the connection.
    func close(after message: CloudMessage? = nil) {
        if let message { channel.write(message, promise: nil) }
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
    }

    /// The one answer for an unknown, offline or declining device, so they cannot be told apart.
    static let unavailableMessage = "device unavailable"

    let configuration: RendezvousServer.Configuration
    let registry: any DeviceRegistry
    let logger: Logger
    private var peers: Set<RendezvousPeer> = []
    private var cameras: [UUID: (peer: RendezvousPeer, deviceID: DeviceID)] = [:]
    private var pending: [String: PendingIntroduction] = [:]
    private var lookupLimiter: TokenBucketRateLimiter<SourceAddressKey>
    private var registrationLimiter: TokenBucketRateLimiter<SourceAddressKey>
    private var ledger: IntroductionLedger

    init(configuration: RendezvousServer.Configuration, registry: any DeviceRegistry, logger: Logger) {
        self.configuration = configuration
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

    /// Admits a new connection unless ``RendezvousServer/Configuration/maxConnections`` are open.
    func connected(_ peer: RendezvousPeer) -> Bool {
        guard peers.count < configuration.maxConnections else { return false }
        peers.insert(peer)
        return true
    }

    /// Forgets a closed connection: its camera session, its pending introductions either way.
    func disconnected(_ peer: RendezvousPeer, cameraSession: UUID?) async {
        peers.remove(peer)
        for (requestID, introduction) in pending where introduction.viewer == peer {
            endIntroduction(requestID)
        }
        guard let session = cameraSession, let camera = cameras.removeValue(forKey: session) else { return }
        failIntroductions(ofCameraSession: session)
        await registry.remove(camera.deviceID, sessionID: session)
        logger.debug("camera disconnected", metadata: ["device": "\(camera.deviceID)"])
    }

    /// Closes every connection (server shutdown).
    func closeAll() {
        for peer in peers { peer.close() }
    }

    /// Whether a camera may register: camera sessions stay below ``RendezvousServer/Configuration/maxConnections``
    /// less the ``RendezvousServer/Configuration/viewerReserve``.
    func hasRoomForCamera() -> Bool {
        cameras.count < max(1, configuration.maxConnections - configuration.viewerReserve)
    }

    /// Takes one token of the unverified-registration limit for `source`; false when its bucket is empty.
    func admitRegistration(from source: SourceAddressKey) -> Bool {
        take(from: &registrationLimiter, source)
    }

    private func take(from limiter: inout TokenBucketRateLimiter<SourceAddressKey>, _ source: SourceAddressKey) -> Bool {
        limiter.admit(source, now: .now)
    }

    /// Records a proven registration; the session it replaces (same key) is closed.
    func register(_ peer: RendezvousPeer, deviceID: DeviceID, publicKey: Data) async throws -> UUID {
        let session = UUID()
        let record = DeviceRegistration(
            deviceID: deviceID, publicKey: publicKey, sessionID: session, observedAddress: peer.observedAddress)
        let replaced = try await registry.register(record)
        cameras[session] = (peer, deviceID)
        if let replaced, let old = cameras.removeValue(forKey: replaced.sessionID) {
            failIntroductions(ofCameraSession: replaced.sessionID)
            old.peer.close(after: .error(requestID: nil, code: "replaced", message: "a newer session registered this device"))
            logger.info("camera session replaced", metadata: ["device": "\(deviceID)"])
        }
        logger.info("camera registered", metadata: ["device": "\(deviceID)", "observed": "\(peer.observedAddress)"])
        return session
    }

    /// A viewer asks for `deviceID`: rate-limit, look up, forward the offer and its `answerKey` to the camera.
    ///
    /// What an asker learns before the camera has seen its `answerKey`: an introduction without one is
    /// `unavailable` for every UID, before the look-up; with one, an unknown, offline, declining or busy
    /// camera is `unavailable` alike, and an online camera's answer and relay grant come back only sealed
    /// to that key (``SealedAnswer``): nothing in clear names an address or carries a grant.
    func introduce(from viewer: RendezvousPeer, requestID: String, deviceID: DeviceID, offer: PeerOffer, answerKey: String?) async {
        guard take(from: &lookupLimiter, viewer.source) else {
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
        pending[requestID] = PendingIntroduction(
            viewer: viewer, cameraSession: record.sessionID, cameraKey: record.publicKey, timer: timer, relay: relay)
        camera.peer.send(.offer(
            requestID: requestID, offer: offer, relay: relay, requester: viewer.channel.remoteAddress?.ipAddress, answerKey: answerKey))
    }

    /// The camera answered: send `start` to both, back to back; the viewer's carries only the sealed answer.
    func answer(from session: UUID, requestID: String, offer: PeerOffer, sealed: String?) {
        guard let camera = cameras[session]?.peer else { return }
        guard let introduction = pending[requestID], introduction.cameraSession == session else {
            camera.send(.error(requestID: requestID, code: CloudError.Code.timeout.name, message: "no such pending introduction"))
            return
        }
        guard offer.identityKey == introduction.cameraKey, offer.candidates.isEmpty, let sealed else {
            endIntroduction(requestID)
            camera.send(.error(
                requestID: requestID, code: CloudError.Code.badRequest.name,
                message: "answer must carry the registered key, and its candidates only sealed"))
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
