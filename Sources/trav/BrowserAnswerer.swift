import Logging
import Media
import Traversal
import WebRTC

/// `trav camera`'s answer to browsers: one ``BrowserViewerSession`` per admitted browser, on UDP sockets of its
/// own at `hosts`, fed by the camera's `MediaSender` as native viewers are; each session is forgotten when it
/// closes (the browser went away, ICE or DTLS failed, or it never connected) and every one is closed at ``closeAll()``.
actor BrowserAnswerer: BrowserViewerAnswering {
    /// Browser sessions at once; one more is refused (each holds UDP sockets and a DTLS endpoint).
    static let maxSessions = 16
    private let identity: DeviceIdentity
    private let certificate: DTLSCertificate
    private let hosts: [String]
    private let media: MediaSender?
    private let logger: Logger
    private var sessions: [String: BrowserViewerSession] = [:]

    /// An answerer signing with `identity`, one DTLS certificate for every session of this run.
    init(identity: DeviceIdentity, hosts: [String], media: MediaSender?, logger: Logger) throws {
        self.identity = identity
        self.certificate = try DTLSCertificate.generate()
        self.hosts = hosts
        self.media = media
        self.logger = logger
    }

    func answer(_ offer: BrowserOffer) async throws -> String {
        guard sessions.count < Self.maxSessions else {
            throw TraversalError(code: .rateLimited, detail: "\(Self.maxSessions) browsers already watching")
        }
        let session = try await BrowserViewerSession.start(
            offer: try SessionDescription(parsing: offer.sessionDescription), identity: identity, certificate: certificate,
            hosts: hosts, logger: logger)
        sessions[offer.requestID] = session
        let requestID = offer.requestID
        let media = self.media
        Task {
            for await event in session.events {
                switch event {
                case .selected(let remote):
                    say("browser \(requestID): ICE selected \(remote)")
                case .connected:
                    say("browser \(requestID) connected")
                    if let media {
                        do { try await media.add(session, start: .recentGOP) } catch { say("browser \(requestID): not fed: \(error)") }
                    }
                case .closed(let reason):
                    say("browser \(requestID) closed: \(reason)")
                }
            }
            self.forget(requestID)
        }
        return session.answer.text
    }

    private func forget(_ requestID: String) {
        sessions[requestID] = nil
    }

    /// Closes every session (their sockets with them).
    func closeAll() async {
        let open = sessions.values
        sessions = [:]
        for session in open { await session.close() }
    }
}
