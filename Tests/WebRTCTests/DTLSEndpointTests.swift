import Foundation
import Testing
import WebRTC

/// Two DTLS endpoints over an in-memory link: the handshake, data both ways, the fingerprint check,
/// and a lost flight recovered by the retransmission timer.
@Suite(.serialized) struct DTLSEndpointTests {
    /// Runs both sides until neither has anything to send (bounded); `drop` loses datagrams by index.
    static func exchange(_ client: DTLSEndpoint, _ server: DTLSEndpoint, first: [[UInt8]],
                         drop: (Int) -> Bool = { _ in false }) throws -> (toClient: [[UInt8]], toServer: [[UInt8]]) {
        var toServer = first
        var toClient: [[UInt8]] = []
        var clientData: [[UInt8]] = []
        var serverData: [[UInt8]] = []
        var sent = 0
        /// Hands `datagrams` to `endpoint` (those `drop` spares); returns what it sends back, adding what it read to `data`.
        func deliver(_ datagrams: [[UInt8]], to endpoint: DTLSEndpoint, data: inout [[UInt8]]) throws -> [[UInt8]] {
            var replies: [[UInt8]] = []
            for d in datagrams {
                sent += 1
                if drop(sent) { continue }
                let out = try endpoint.receive(d)
                replies += out.datagrams
                data += out.data
            }
            return replies
        }
        for _ in 0..<50 where !(toServer.isEmpty && toClient.isEmpty) {
            toClient = try deliver(toServer, to: server, data: &serverData)
            toServer = try deliver(toClient, to: client, data: &clientData)
            toClient = []
        }
        return (clientData, serverData)
    }

    @Test func aHandshakeCarriesDataBothWaysAndChecksFingerprints() throws {
        let (a, b) = (try DTLSCertificate.generate(), try DTLSCertificate.generate())
        #expect(a.fingerprint.count == 32 && a.fingerprint != b.fingerprint)
        let client = try DTLSEndpoint(role: .client, certificate: a, peerFingerprint: b.fingerprint)
        let server = try DTLSEndpoint(role: .server, certificate: b, peerFingerprint: a.fingerprint)
        let hello = try client.start()
        #expect(!hello.datagrams.isEmpty, "the client's first flight")
        _ = try Self.exchange(client, server, first: hello.datagrams)
        #expect(client.isConnected && server.isConnected)
        #expect(hello.datagrams.allSatisfy { $0.count <= DTLSEndpoint.defaultMTU })

        let message = Array("a frame".utf8)
        let sealed = try client.send(message)
        #expect(sealed.datagrams.count == 1 && sealed.datagrams[0] != message)
        #expect(try server.receive(sealed.datagrams[0]).data == [message])
        let reply = try server.send(Array(repeating: 7, count: 1000))
        #expect(try client.receive(reply.datagrams[0]).data == [Array(repeating: 7, count: 1000)])

        let bye = client.close()
        #expect(!bye.datagrams.isEmpty)
        _ = try server.receive(bye.datagrams[0])
        #expect(server.isClosed)
    }

    @Test func aPeerWithAnotherCertificateIsRefused() throws {
        let (a, b, impostor) = (try DTLSCertificate.generate(), try DTLSCertificate.generate(), try DTLSCertificate.generate())
        let client = try DTLSEndpoint(role: .client, certificate: a, peerFingerprint: b.fingerprint)
        // The server the client reaches holds another certificate than the one the description named.
        let server = try DTLSEndpoint(role: .server, certificate: impostor, peerFingerprint: a.fingerprint)
        #expect {
            _ = try Self.exchange(client, server, first: try client.start().datagrams)
        } throws: { ($0 as? DTLSError)?.code == .fingerprintMismatch }
        #expect(!client.isConnected)
        #expect(throws: DTLSError.self) { _ = try client.send([1]) }
    }

    @Test func aLostFlightIsSentAgainWhenTheTimerFires() throws {
        let (a, b) = (try DTLSCertificate.generate(), try DTLSCertificate.generate())
        let client = try DTLSEndpoint(role: .client, certificate: a, peerFingerprint: b.fingerprint)
        let server = try DTLSEndpoint(role: .server, certificate: b, peerFingerprint: a.fingerprint)
        // The first ClientHello is lost.
        _ = try Self.exchange(client, server, first: try client.start().datagrams, drop: { $0 == 1 })
        #expect(!client.isConnected)
        #expect(client.retransmissionDelay != nil, "the client's timer runs")
        // Not yet expired: nothing is resent. (OpenSSL reads the wall clock; the first timeout is 1 s.)
        #expect(client.handleTimeout().datagrams.isEmpty)
        try? waitWallClock(client.retransmissionDelay ?? .seconds(1))
        let again = client.handleTimeout()
        #expect(!again.datagrams.isEmpty, "the flight is sent again")
        _ = try Self.exchange(client, server, first: again.datagrams)
        #expect(client.isConnected && server.isConnected)
    }

    @Test func garbageIsNotData() throws {
        let (a, b) = (try DTLSCertificate.generate(), try DTLSCertificate.generate())
        let server = try DTLSEndpoint(role: .server, certificate: b, peerFingerprint: a.fingerprint)
        for junk in [[UInt8](), [0x16, 0xFE, 0xFD], [UInt8](repeating: 0x17, count: 300), (0..<200).map { UInt8($0) }] {
            let out = try? server.receive(junk)
            #expect(out?.data.isEmpty ?? true)
        }
        #expect(!server.isConnected)
        #expect(throws: DTLSError.self) { _ = try server.receive([UInt8](repeating: 0, count: DTLSEndpoint.maxDatagram + 1)) }
    }
}

/// Waits `d` (the one place these tests wait: OpenSSL's DTLS timer reads the wall clock).
func waitWallClock(_ d: Duration) throws {
    let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    Thread.sleep(forTimeInterval: min(max(seconds, 0) + 0.05, 2))
}
