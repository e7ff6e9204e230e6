import Foundation
import Logging
import Rendezvous
import Strategies
import Testing
import Traversal

/// A camera's event stream on loopback with a real cloud: a viewer admitted with its path and report,
/// an introduction that failed with its reason, the cloud lost and back.
@Suite(.serialized) struct CameraEventsTests {
    /// Longest wait for one event: a reconnect after the cloud returns takes at most the backoff ceiling
    /// (``CloudClient/reconnectMaxDelay``) plus the registration.
    static let eventTimeout: Duration = .seconds(30)

    /// The next event that `match` accepts (others are skipped), or nil when none came within ``eventTimeout``.
    static func next<T: Sendable>(_ events: AsyncStream<CameraEvent>, _ match: @escaping @Sendable (CameraEvent) -> T?) async -> T? {
        try? await withDeadline(eventTimeout) {
            for await event in events {
                if let value = match(event) { return value }
            }
            return nil
        }
    }

    @Test func eventsReportViewersFailuresAndTheCloudLostAndBack() async throws {
        let dir = NSTemporaryDirectory() + "trav-events-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var service = try await CloudService.start(.init(listenIP: "127.0.0.1", dataDirectory: dir, stunPort: 0, tlsPort: 0),
                                                   logger: TLSRelayTests.quiet)
        let port = service.rendezvous.address.port
        do {
            let cloud = TravCloud(host: "127.0.0.1", port: port, stunPort: service.stun.udpAddresses[.primary]!.port,
                                  trust: try .pinnedCA(file: service.caPath!))
            let identity = DeviceIdentity.generate()
            let strategies: [any TraversalStrategy] = [UDPHolePunch()]
            let camera = Connector(configuration: .init(identity: identity, cloud: cloud, strategies: strategies,
                                                        gatherTimeout: TLSRelayTests.gatherTimeout, logger: TLSRelayTests.quiet))
            let session = try await camera.startCamera(access: try .password("secret", parameters: testCost))
            #expect(session.deviceID == identity.deviceID)
            let viewer = Connector(configuration: .init(identity: .ephemeral(), cloud: cloud, strategies: strategies,
                                                        gatherTimeout: TLSRelayTests.gatherTimeout, logger: TLSRelayTests.quiet))

            // Admitted: the event carries the connection with its path and report.
            let connected = try await viewer.connect(to: identity.deviceID, credential: .password("secret"))
            let admitted = await Self.next(session.events) { event -> PeerConnection? in
                if case .viewerConnected(let c) = event { return c }
                return nil
            }
            #expect(admitted?.path == "udp-hole-punch")
            #expect(admitted?.report.attempts.contains { $0.strategy == "udp-hole-punch" && $0.outcome == .connected } == true)
            await connected.close()
            await admitted?.close()

            // Refused: the camera reports the failed introduction and why; the viewer hears it through
            // the cloud before any path was tried (the camera revealed no address to try).
            let refusal = await #expect(throws: TraversalError.self) {
                _ = try await viewer.connect(to: identity.deviceID, credential: .password("wrong"))
            }
            #expect(refusal?.code == .accessDenied, "\(String(describing: refusal))")
            #expect(refusal?.attempts.isEmpty == true, "\(String(describing: refusal?.attempts))")
            let failed = await Self.next(session.events) { event -> TraversalError? in
                if case .introductionFailed(_, let error) = event { return error }
                return nil
            }
            #expect(failed?.code == .accessDenied, "\(String(describing: failed))")

            // The cloud goes away and comes back on the same port: lost, then back.
            await service.stop()
            let lost = await Self.next(session.events) { event -> String? in
                if case .cloudLost(let reason) = event { return reason }
                return nil
            }
            #expect(lost != nil)
            service = try await CloudService.start(.init(listenIP: "127.0.0.1", dataDirectory: dir, stunPort: 0, tlsPort: port),
                                                   logger: TLSRelayTests.quiet)
            let back = await Self.next(session.events) { event -> String? in
                if case .cloudBack(let observed) = event { return observed }
                return nil
            }
            #expect(back?.hasPrefix("127.0.0.1") == true, "\(String(describing: back))")
            await session.stop()
        } catch {
            await service.stop()
            throw error
        }
        await service.stop()
    }
}
