import Logging
import Media
import STUNLite
import Traversal
import WebRTC

/// `trav camera`'s answer to browsers: one ``BrowserViewerSession`` per admitted browser, on UDP sockets of its
/// own at `hosts` (each also offered at its mapping as the cloud's STUN server sees it), fed by the camera's `MediaSender` as native viewers are; each session is forgotten when it
/// closes (the browser went away, ICE or DTLS failed, or it never connected) and every one is closed at ``closeAll()``.
actor BrowserAnswerer: BrowserViewerAnswering {
    /// Browser sessions at once; one more is refused (each holds UDP sockets and a DTLS endpoint).
    static let maxSessions = 16
    private let identity: DeviceIdentity
    private let certificate: DTLSCertificate
    private let hosts: [String]
    private let stunServers: [String]
    private var stunServer: TransportAddress?
    private let media: MediaSender?
    private let logger: Logger
    private var sessions: [String: BrowserViewerSession] = [:]
    /// Sessions being started (binding sockets, asking STUN): they count against ``maxSessions`` too.
    private var starting = 0
    /// Sockets prepared while a browser proves access, by introduction; they count against ``maxSessions`` too.
    private var prepared: [String: Task<BrowserViewerSession.Sockets, any Error>] = [:]
    /// How long prepared sockets wait for their answer before they are closed (the cloud's access timeout is shorter).
    static let preparedLifetime: Duration = .seconds(30)

    /// An answerer signing with `identity`, one DTLS certificate for every session of this run; `stunServers`
    /// (`host:port`, names allowed: the cloud's) give each session's server-reflexive candidates.
    init(identity: DeviceIdentity, hosts: [String], stunServers: [String] = [], media: MediaSender?, logger: Logger) throws {
        self.identity = identity
        self.certificate = try DTLSCertificate.generate()
        self.hosts = hosts
        self.stunServers = stunServers
        self.media = media
        self.logger = logger
    }

    func prepare(requestID: String) async {
        guard prepared[requestID] == nil, sessions.count + starting + prepared.count < Self.maxSessions else { return }
        prepared[requestID] = await preparing()
        // Bounded: an introduction that neither answers nor cancels (its camera-side task died) still releases them.
        Task { [weak self] in
            try? await Task.sleep(for: Self.preparedLifetime)
            await self?.cancel(requestID: requestID)
        }
    }

    func cancel(requestID: String) async {
        guard let task = prepared.removeValue(forKey: requestID) else { return }
        await (try? task.value)?.close()
    }

    func answer(_ offer: BrowserOffer) async throws -> String {
        let ready = prepared.removeValue(forKey: offer.requestID)
        guard sessions.count + starting + prepared.count < Self.maxSessions else {
            await (try? ready?.value)?.close()
            throw TraversalError(code: .rateLimited, detail: "\(Self.maxSessions) browsers already watching")
        }
        starting += 1
        defer { starting -= 1 }
        let description: SessionDescription
        do {
            description = try SessionDescription(parsing: offer.sessionDescription)
        } catch {
            await (try? ready?.value)?.close()
            throw error
        }
        // Sockets prepared while the browser proved access, or prepared now.
        let sockets = if let ready { ready } else { await preparing() }
        let session = try await BrowserViewerSession.start(
            offer: description, identity: identity, certificate: certificate, sockets: try await sockets.value, logger: logger)
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

    /// A session's sockets being bound and their mappings asked for (the first STUN server's).
    private func preparing() async -> Task<BrowserViewerSession.Sockets, any Error> {
        let (hosts, logger, stunServer) = (self.hosts, self.logger, await resolvedSTUNServer())
        return Task { try await BrowserViewerSession.Sockets.prepare(hosts: hosts, stunServer: stunServer, logger: logger) }
    }

    /// The first STUN server as an address: names resolved on first use, remembered once one resolves.
    private func resolvedSTUNServer() async -> TransportAddress? {
        if let stunServer { return stunServer }
        guard !stunServers.isEmpty else { return nil }
        stunServer = await ServerName.resolve(stunServers, logger: logger).lazy
            .compactMap { TransportAddress($0, defaultPort: TravCloud.defaultSTUNPort) }.first
        return stunServer
    }

    private func forget(_ requestID: String) {
        sessions[requestID] = nil
    }

    /// Closes every session (their sockets with them), and every prepared socket.
    func closeAll() async {
        let open = sessions.values
        sessions = [:]
        for session in open { await session.close() }
        let waiting = prepared.values
        prepared = [:]
        for task in waiting { await (try? task.value)?.close() }
    }
}
