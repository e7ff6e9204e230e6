import Foundation

/// What happens on a camera, as ``Connector/events(_:cloud:access:)`` and ``CameraSession/events`` report it.
public enum CameraEvent: Sendable {
    /// A viewer completed the handshake and passed the access policy; its ``PeerConnection/report``
    /// says by which path (``PeerConnection/path``), how fast, and what every strategy did.
    case viewerConnected(PeerConnection)
    /// A browser passed the access check and got the camera's WebRTC answer
    /// (``ConnectorConfiguration/browserViewers`` runs its session).
    case browserAnswered(requestID: String)
    /// An introduction ended without a viewer: no path, access refused, the cloud's start never came,
    /// or declined because too many were being answered at once.
    case introductionFailed(requestID: String, error: TraversalError)
    /// The registration with the cloud was lost; the camera reconnects with backoff meanwhile.
    case cloudLost(reason: String)
    /// Registered with the cloud again after ``cloudLost(reason:)``.
    case cloudBack(observedAddress: String)
}

extension TraversalError {
    /// `error` as a traversal error: itself if it is one, a cloud error as `cloud`, anything else as `no-path`.
    public init(_ error: any Error) {
        switch error {
        case let e as TraversalError:
            self = e
        case let e as CloudError:
            self.init(code: .cloud, detail: e.description)
        default:
            self.init(code: .noPath, detail: "\(error)")
        }
    }
}

/// A camera registered with its cloud and serving viewers; owns the registration.
///
/// Stopping it, or dropping the last reference, ends the registration; ``events`` then finishes once
/// every other source given to ``Connector/startCamera(access:alsoServing:)`` has finished too.
public final class CameraSession: Sendable {
    /// The camera's UID.
    public let deviceID: DeviceID
    /// Viewers admitted, introductions failed, the cloud lost and back, in order.
    public let events: AsyncStream<CameraEvent>
    /// The cloud registration.
    public let signalling: any CameraSignalling

    init(deviceID: DeviceID, events: AsyncStream<CameraEvent>, signalling: any CameraSignalling) {
        self.deviceID = deviceID
        self.events = events
        self.signalling = signalling
    }

    /// Ends the registration with the cloud (viewers already connected stay connected).
    public func stop() async {
        await signalling.stop()
    }

    deinit {
        let signalling = self.signalling
        Task { await signalling.stop() }
    }
}

extension Connector {
    /// Registers the configuration's identity with its ``ConnectorConfiguration/cloud`` and serves
    /// viewers under `access`, from the cloud and from `extra` sources (e.g. LAN discovery).
    ///
    /// - Throws: ``TraversalError`` `cloud` when the configuration names no cloud; ``CloudError``
    ///   when the first registration fails (`tls-failed`, `unauthorized`, `connection-failed`, …).
    public func startCamera(access: CameraAccessPolicy,
                            alsoServing extra: [AsyncStream<any IncomingIntroduction>] = []) async throws -> CameraSession {
        guard let cloud = configuration.cloud else {
            throw TraversalError(code: .cloud, detail: "the configuration names no cloud")
        }
        let identity = configuration.identity
        let deviceID = identity.deviceID
        let signalling = CloudCameraSession(identity: identity, deviceID: deviceID, endpoint: cloud.signalling, logger: configuration.logger)
        try await signalling.start()
        let events = events([signalling.introductions] + extra, cloud: signalling.connectionEvents, access: access)
        return CameraSession(deviceID: deviceID, events: events, signalling: signalling)
    }

    /// Connects to `device` through the configuration's ``ConnectorConfiguration/cloud``
    /// (``connect(to:via:credential:)`` with the cloud's signalling).
    ///
    /// - Throws: ``TraversalError``, `cloud` also when the configuration names no cloud.
    public func connect(to device: DeviceID, credential: AccessCredential) async throws -> PeerConnection {
        guard let cloud = configuration.cloud else {
            throw TraversalError(code: .cloud, detail: "the configuration names no cloud")
        }
        return try await connect(to: device, via: CloudClient.viewer(endpoint: cloud.signalling, logger: configuration.logger),
                                 credential: credential)
    }
}
