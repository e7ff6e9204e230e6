import PeerTestSupport
import Testing
@testable import Traversal

/// The secure handshake measures the path's round trip, and the channel engine's first retransmission timer
/// starts from it (RFC 9260 §6.3.1 C2) instead of the 1 s default.
struct HandshakeRoundTripTests {
    @Test func bothSidesMeasureAtLeastOneRoundTripOfThePath() async throws {
        var conditions = MemoryLink.Conditions()
        conditions.delay = .milliseconds(25)
        let (a, b, _) = MemoryLink.pair(conditions)
        let viewer = DeviceIdentity.generate(), camera = DeviceIdentity.generate()
        let responder = Task { try await SecureSessionDriver.respond(over: b, identity: camera) }
        let (session, final) = try await withDeadline(.seconds(20)) {
            try await SecureSessionDriver.initiate(over: a, identity: viewer, pinning: camera.publicKey)
        }
        // The viewer's final message is sent by its caller (the race's winner); the camera completes on it.
        try await a.send(final)
        let answered = try await withDeadline(.seconds(20)) { try await responder.value }
        let viewerRTT = try #require(session.roundTrip)
        let cameraRTT = try #require(answered.roundTrip)
        #expect(viewerRTT >= .milliseconds(50), "\(viewerRTT)")
        #expect(cameraRTT >= .milliseconds(50), "\(cameraRTT)")
    }

    @Test func theEnginesInitialRTOIsThreeRoundTripsWithinItsBounds() {
        let plain = SCTPAssociation.Configuration.datagram(pathMTU: 1200)
        #expect(plain.rtoInitial == 1000)
        #expect(SCTPAssociation.Configuration.datagram(pathMTU: 1200, roundTripMs: 120).rtoInitial == 360)
        // Never under RTO.min, never above the default.
        #expect(SCTPAssociation.Configuration.datagram(pathMTU: 1200, roundTripMs: 20).rtoInitial == plain.rtoMin)
        #expect(SCTPAssociation.Configuration.datagram(pathMTU: 1200, roundTripMs: 900).rtoInitial == 1000)
        #expect(SCTPAssociation.Configuration.datagram(pathMTU: 1200, roundTripMs: .infinity).rtoInitial == 1000)
        #expect(SCTPAssociation.Configuration.datagram(pathMTU: 1200, roundTripMs: -5).rtoInitial == 1000)
        // Stream paths keep their own timer whatever was measured (TCP repairs losses there).
        #expect(SCTPAssociation.Configuration.stream(pathMTU: 16_384).rtoInitial == 3000)
    }

    @Test func aConnectionsEngineStartsFromTheRoundTripItsReportCarries() async throws {
        let (a, _, _) = MemoryLink.pair()
        let report = ConnectionReport(path: "memory", route: nil, setupMs: 0, requestID: nil, attempts: [], roundTripMs: 100)
        let k = NoiseCipherState(key: [UInt8](repeating: 1, count: 32))
        let connection = PeerConnection(role: .viewer, report: report, peerIdentity: DeviceIdentity.generate().publicKey, transport: a,
                                        channel: SecureDatagramChannel(send: k, receive: k), replayOnHello: nil, keepalive: nil)
        #expect(connection.channelRTOInitial == 300)
        await connection.close()
    }
}
