import Foundation
import NIOCore
import NIOPosix
import STUNLite
import Testing
import Traversal
import WebRTC

/// `BrowserViewerSession` without a browser: our own ICE agent (controlling) and DTLS client play the browser
/// on loopback, so the session's gates and its resource ownership are checked where Chromium is not installed.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct BrowserViewerSessionTests {
    /// A browser's offer: its ICE credentials, its certificate's fingerprint, one host candidate (or none).
    static func offer(fingerprint: [UInt8], candidate: TransportAddress?) -> SessionDescription {
        SessionDescription(
            sessionID: 1, iceUfrag: "page", icePwd: "thebrowserspasswordxyz", fingerprint: fingerprint, setup: .actpass,
            candidates: candidate.map { [ICECandidate(foundation: "1", priority: ICECandidate.priority(kind: .host),
                                                      address: "\($0.ip)", port: Int($0.port), kind: .host)] } ?? [],
            endOfCandidates: true)
    }

    /// Datagrams a test socket received, in order.
    actor Received {
        private(set) var datagrams: [[UInt8]] = []
        private var read = 0
        func append(_ d: [UInt8]) { datagrams.append(d) }
        /// The datagrams not taken yet.
        func take() -> [[UInt8]] {
            defer { read = datagrams.count }
            return Array(datagrams[read...])
        }
    }

    @Test func aSessionWithoutALocalAddressIsRefused() async throws {
        await #expect(throws: BrowserSessionError(.noLocalAddress, "none of [] could be bound")) {
            _ = try await BrowserViewerSession.start(
                offer: Self.offer(fingerprint: try DTLSCertificate.generate().fingerprint, candidate: nil), identity: .generate(),
                certificate: try .generate(), hosts: [])
        }
    }

    @Test func aSessionNobodyConnectsToClosesAndReleasesItsSocket() async throws {
        var configuration = BrowserViewerSession.Configuration()
        configuration.connectTimeout = .milliseconds(300)
        let session = try await BrowserViewerSession.start(
            offer: Self.offer(fingerprint: try DTLSCertificate.generate().fingerprint, candidate: nil), identity: .generate(),
            certificate: try .generate(), hosts: ["127.0.0.1"], configuration: configuration)
        let port = try #require(session.answer.candidates.first?.port)
        // While the session lives its socket holds the port.
        await #expect(throws: (any Error).self) {
            try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: port).get().close()
        }
        let reason = try await withDeadline(.seconds(10)) { () -> String? in
            for await event in session.events { if case .closed(let reason) = event { return reason } }
            return nil
        }
        #expect(reason?.hasPrefix("not connected") == true, "\(String(describing: reason))")
        // Closed on its own, without close(): the port is free again.
        let again = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: port).get()
        try await again.close()
    }

    @Test func dtlsIsAnsweredOnlyOnceTheSourceProvedTheICEPassword() async throws {
        let browserCertificate = try DTLSCertificate.generate()
        let cameraCertificate = try DTLSCertificate.generate()
        let udp = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0)
            .flatMapThrowing { try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: $0) }
            .get()
        let local = try #require(udp.channel.localAddress.flatMap(TransportAddress.init))
        let offer = Self.offer(fingerprint: browserCertificate.fingerprint, candidate: local)
        let session = try await BrowserViewerSession.start(offer: offer, identity: .generate(), certificate: cameraCertificate,
                                                           hosts: ["127.0.0.1"])
        let answer = session.answer
        let camera = TransportAddress(ip: try #require(IPAddress("127.0.0.1")), port: UInt16(try #require(answer.candidates.first?.port)))
        let client = try DTLSEndpoint(role: .client, certificate: browserCertificate, peerFingerprint: cameraCertificate.fingerprint)
        let clientHello = try client.start().datagrams
        let received = Received()
        let isDTLS: ([UInt8]) -> Bool = { ($0.first.map { (20...63).contains($0) }) ?? false }

        try await udp.executeThenClose { inbound, outbound in
            let pump = Task {
                for try await envelope in inbound { await received.append(Array(envelope.data.readableBytesView)) }
            }
            defer { pump.cancel() }
            func send(_ datagrams: [[UInt8]]) async throws {
                for d in datagrams { try await outbound.write(AddressedEnvelope(remoteAddress: camera.socketAddress, data: ByteBuffer(bytes: d))) }
            }
            // 1. DTLS before any check: the camera's own checks reach us, its DTLS does not.
            try await send(clientHello)
            var heardCheck = false
            for _ in 0..<200 where !heardCheck {
                try await Task.sleep(for: .milliseconds(10))
                heardCheck = await received.datagrams.contains { $0.first.map { $0 <= 3 } ?? false }
            }
            #expect(heardCheck, "the camera checks the pair with our candidate")
            try await send(clientHello)
            try await Task.sleep(for: .milliseconds(300))
            #expect(await !received.datagrams.contains(where: isDTLS), "no DTLS answer to an address that proved nothing")

            // 2. Our ICE agent (the browser's role) proves the password and nominates; then DTLS completes.
            var agent = ICEAgent(role: .controlling, local: .init(ufrag: offer.iceUfrag, pwd: offer.icePwd),
                                 remote: .init(ufrag: answer.iceUfrag, pwd: answer.icePwd),
                                 locals: [.init(socket: 0, address: local, priority: ICECandidate.priority(kind: .host))], now: .now)
            agent.addRemote(camera, priority: try #require(answer.candidates.first?.priority))
            var selected = false
            var sentHello = false
            for _ in 0..<500 where !client.isConnected {
                var actions = agent.tick(now: .now)
                for d in await received.take() {
                    if isDTLS(d) {
                        try await send((try client.receive(d)).datagrams)
                    } else {
                        actions += agent.receive(d, from: camera, on: 0, now: .now)
                    }
                }
                for action in actions {
                    switch action {
                    case .send(let bytes, _, _): try await send([bytes])
                    case .selected: selected = true
                    case .failed, .consentExpired: Issue.record("our agent: \(action)")
                    }
                }
                if selected, !sentHello {
                    sentHello = true
                    try await send(clientHello)
                }
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(selected)
            #expect(client.isConnected, "the DTLS handshake completes once ICE has run")
        }
        let events = try await withDeadline(.seconds(5)) { () -> [BrowserViewerSession.Event] in
            var seen: [BrowserViewerSession.Event] = []
            for await event in session.events {
                seen.append(event)
                if event == .connected { break }
            }
            return seen
        }
        #expect(events.contains(.selected(remote: local)))
        #expect(events.contains(.connected))
        await session.close()
    }
}
