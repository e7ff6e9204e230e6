import Foundation
import NIOCore
import NIOPosix
import PeerTestSupport
import STUNLite
import Testing
import Traversal
import WebRTC

/// `BrowserViewerSession` without a browser: our own ICE agent (controlling) and DTLS endpoint play the browser
/// on loopback, so the session's gates and its resource ownership are checked where Chromium is not installed.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct BrowserViewerSessionTests {
    /// A browser's offer: its ICE credentials, its certificate's fingerprint, its DTLS setup (a browser offers `actpass`),
    /// one host candidate (or none).
    static func offer(fingerprint: [UInt8], candidate: TransportAddress?, setup: DTLSSetup = .actpass) -> SessionDescription {
        SessionDescription(
            sessionID: 1, iceUfrag: "page", icePwd: "thebrowserspasswordxyz", fingerprint: fingerprint, setup: setup,
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

    /// Plays the browser after the offer: our controlling ICE agent checks and nominates the pair, the browser's DTLS
    /// `firstFlight` goes out once it is selected (its ClientHello when it is the client, nothing when the camera is),
    /// and both run to the end (bounded: 500 rounds of 10 ms). Returns whether ICE selected the pair.
    static func connect(offer: SessionDescription, answer: SessionDescription, local: TransportAddress, camera: TransportAddress,
                        dtls: DTLSEndpoint, firstFlight: [[UInt8]], received: Received,
                        send: ([[UInt8]]) async throws -> Void) async throws -> Bool {
        var agent = ICEAgent(role: .controlling, local: .init(ufrag: offer.iceUfrag, pwd: offer.icePwd),
                             remote: .init(ufrag: answer.iceUfrag, pwd: answer.icePwd),
                             locals: [.init(socket: 0, address: local, priority: ICECandidate.priority(kind: .host))], now: .now)
        agent.addRemote(camera, priority: try #require(answer.candidates.first?.priority))
        var selected = false
        var sentHello = false
        // Both, in either order: a camera that is the DTLS client can finish its handshake before ICE selects the pair.
        for _ in 0..<500 where !(dtls.isConnected && selected) {
            var actions = agent.tick(now: .now)
            for d in await received.take() {
                if let first = d.first, (20...63).contains(first) {
                    try await send((try dtls.receive(d)).datagrams)
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
                try await send(firstFlight)
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        return selected
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

    /// The browser's side on a loopback socket (our certificate, offer and DTLS endpoint in the role the answer left it)
    /// and the session answering it.
    struct Stage {
        let offer: SessionDescription
        let session: BrowserViewerSession
        let local: TransportAddress
        let camera: TransportAddress
        let dtls: DTLSEndpoint
        /// The browser's ClientHello when it is the DTLS client; empty when the camera is.
        let firstFlight: [[UInt8]]
        let received = Received()
    }

    /// Starts a session for a browser offering `setup` on a fresh loopback socket and runs `body` with a way to send to
    /// the session while everything that socket receives is collected in ``Stage/received``; the socket is closed after.
    static func withStage(setup: DTLSSetup = .actpass,
                          _ body: (Stage, _ send: ([[UInt8]]) async throws -> Void) async throws -> Void) async throws -> Stage {
        let browserCertificate = try DTLSCertificate.generate()
        let cameraCertificate = try DTLSCertificate.generate()
        let udp = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0)
            .flatMapThrowing { try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: $0) }
            .get()
        let local = try #require(udp.channel.localAddress.flatMap(TransportAddress.init))
        let offer = Self.offer(fingerprint: browserCertificate.fingerprint, candidate: local, setup: setup)
        let session = try await BrowserViewerSession.start(offer: offer, identity: .generate(), certificate: cameraCertificate,
                                                           hosts: ["127.0.0.1"])
        let port = try #require(session.answer.candidates.first?.port)
        let dtls = try DTLSEndpoint(role: session.answer.setup == .active ? .server : .client, certificate: browserCertificate,
                                    peerFingerprint: cameraCertificate.fingerprint)
        let stage = Stage(offer: offer, session: session, local: local,
                          camera: TransportAddress(ip: try #require(IPAddress("127.0.0.1")), port: UInt16(port)),
                          dtls: dtls, firstFlight: try dtls.start().datagrams)
        let received = stage.received
        try await udp.executeThenClose { inbound, outbound in
            let pump = Task {
                for try await envelope in inbound { await received.append(Array(envelope.data.readableBytesView)) }
            }
            defer { pump.cancel() }
            try await body(stage) { datagrams in
                for d in datagrams {
                    try await outbound.write(AddressedEnvelope(remoteAddress: stage.camera.socketAddress, data: ByteBuffer(bytes: d)))
                }
            }
        }
        return stage
    }

    /// The session's events up to `.connected` (bounded: 5 s).
    static func eventsUntilConnected(_ session: BrowserViewerSession) async throws -> [BrowserViewerSession.Event] {
        try await withDeadline(.seconds(5)) { () -> [BrowserViewerSession.Event] in
            var seen: [BrowserViewerSession.Event] = []
            for await event in session.events {
                seen.append(event)
                if event == .connected { break }
            }
            return seen
        }
    }

    /// Whether a datagram is DTLS (RFC 7983 §7: first byte 20–63).
    static func isDTLS(_ datagram: [UInt8]) -> Bool { datagram.first.map { (20...63).contains($0) } ?? false }

    /// Whether the camera checked the pair with our candidate (one of its checks reached us), polled for at most 2 s.
    static func heardCheck(_ received: Received) async throws -> Bool {
        for _ in 0..<200 {
            if await received.datagrams.contains(where: { $0.first.map { $0 <= 3 } ?? false }) { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    /// The first connectivity check a controlling agent with the offer's credentials sends to the camera, its
    /// integrity keyed with `cameraPassword` (the answer's, or a wrong one), without USE-CANDIDATE.
    static func firstCheck(_ stage: Stage, cameraPassword: String) -> [[UInt8]] {
        var agent = ICEAgent(role: .controlling, local: .init(ufrag: stage.offer.iceUfrag, pwd: stage.offer.icePwd),
                             remote: .init(ufrag: stage.session.answer.iceUfrag, pwd: cameraPassword),
                             locals: [.init(socket: 0, address: stage.local, priority: ICECandidate.priority(kind: .host))], now: .now)
        agent.addRemote(stage.camera, priority: ICECandidate.priority(kind: .host))
        return agent.tick(now: .now).compactMap { if case .send(let bytes, _, _) = $0 { bytes } else { nil } }
    }

    @Test func theAnswerTakesTheDTLSClientRoleUnlessTheOfferInsistsOnIt() async throws {
        let fingerprint = try DTLSCertificate.generate().fingerprint
        for (offered, answered) in [(DTLSSetup.actpass, DTLSSetup.active), (.passive, .active), (.active, .passive)] {
            let session = try await BrowserViewerSession.start(
                offer: Self.offer(fingerprint: fingerprint, candidate: nil, setup: offered), identity: .generate(),
                certificate: try .generate(), hosts: ["127.0.0.1"])
            #expect(session.answer.setup == answered, "offer \(offered)")
            #expect(session.answer.text.contains("a=setup:\(answered.rawValue)\r\n"))
            await session.close()
        }
    }

    @Test func theClientHelloGoesOnlyToASourceThatProvedTheICEPassword() async throws {
        let stage = try await Self.withStage { stage, send in
            let received = stage.received
            #expect(stage.session.answer.setup == .active && stage.firstFlight.isEmpty)
            // 1. A check with the wrong password, then garbage DTLS: the camera's own checks reach us, nothing else does.
            let forged = Self.firstCheck(stage, cameraPassword: "notthecamerasicepassword")
            #expect(forged.count == 1)
            try await send(forged)
            try await send([[22, 254, 253] + [UInt8](repeating: 0, count: 40)])
            #expect(try await Self.heardCheck(received), "the camera checks the pair with our candidate")
            try await Task.sleep(for: .milliseconds(300))
            #expect(await !received.datagrams.contains(where: Self.isDTLS), "no ClientHello to an address that proved nothing")

            // 2. One check with the right password, nothing nominated: our answer and the ClientHello follow it.
            let check = Self.firstCheck(stage, cameraPassword: stage.session.answer.icePwd)
            #expect(check.count == 1)
            try await send(check)
            var hello: [UInt8]?
            for _ in 0..<200 where hello == nil {
                try await Task.sleep(for: .milliseconds(10))
                hello = await received.datagrams.first(where: Self.isDTLS)
            }
            // A DTLS handshake record (content type 22) carrying a ClientHello (handshake type 1, RFC 6347 §4.2.2).
            let record = try #require(hello, "a ClientHello follows the first authenticated check")
            #expect(record.count > 13 && record[0] == 22 && record[13] == 1)

            // 3. The browser (DTLS server here) answers it; ICE and DTLS complete.
            let selected = try await Self.connect(offer: stage.offer, answer: stage.session.answer, local: stage.local, camera: stage.camera,
                                                  dtls: stage.dtls, firstFlight: stage.firstFlight, received: received, send: send)
            #expect(selected)
            #expect(stage.dtls.isConnected, "the handshake the camera started completes")
        }
        let events = try await Self.eventsUntilConnected(stage.session)
        #expect(events.contains(.connected))
        await stage.session.close()
    }

    @Test func asServerDTLSIsAnsweredOnlyOnceTheSourceProvedTheICEPassword() async throws {
        let stage = try await Self.withStage(setup: .active) { stage, send in
            let received = stage.received
            #expect(stage.session.answer.setup == .passive)
            // 1. DTLS before any check: the camera's own checks reach us, its DTLS does not.
            try await send(stage.firstFlight)
            #expect(try await Self.heardCheck(received), "the camera checks the pair with our candidate")
            try await send(stage.firstFlight)
            try await Task.sleep(for: .milliseconds(300))
            #expect(await !received.datagrams.contains(where: Self.isDTLS), "no DTLS answer to an address that proved nothing")

            // 2. Our ICE agent (the browser's role) proves the password and nominates; then DTLS completes.
            let selected = try await Self.connect(offer: stage.offer, answer: stage.session.answer, local: stage.local, camera: stage.camera,
                                                  dtls: stage.dtls, firstFlight: stage.firstFlight, received: received, send: send)
            #expect(selected)
            #expect(stage.dtls.isConnected, "the DTLS handshake completes once ICE has run")
        }
        let events = try await Self.eventsUntilConnected(stage.session)
        #expect(events.contains(.selected(remote: stage.local)))
        #expect(events.contains(.connected))
        await stage.session.close()
    }

    @Test func garbageBeforeTheHandshakeChangesNothing() async throws {
        var random = SplitMix64(seed: 15)
        // First bytes across every demultiplexing range (RFC 7983): STUN, DTLS, and neither.
        let firsts: [UInt8] = [0, 1, 2, 3, 4, 19, 20, 22, 23, 63, 64, 128, 255]
        let garbage: [[UInt8]] = (0..<2000).map { i in
            let length = Int.random(in: 0...300, using: &random)
            var d = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
            if !d.isEmpty { d[0] = firsts[i % firsts.count] }
            // Every fourth a STUN-shaped header (binding request, magic cookie) with a random body.
            if i % 4 == 0, d.count >= 20 { d.replaceSubrange(0..<8, with: [0, 1, UInt8((d.count - 20) >> 8), UInt8((d.count - 20) & 0xFF), 0x21, 0x12, 0xA4, 0x42]) }
            return d
        }
        let stage = try await Self.withStage { stage, send in
            try await send(garbage)
            let selected = try await Self.connect(offer: stage.offer, answer: stage.session.answer, local: stage.local, camera: stage.camera,
                                                  dtls: stage.dtls, firstFlight: stage.firstFlight, received: stage.received, send: send)
            #expect(selected)
            #expect(stage.dtls.isConnected, "the session still completes its handshake")
        }
        let events = try await Self.eventsUntilConnected(stage.session)
        #expect(events.contains(.connected))
        #expect(!events.contains { if case .closed = $0 { true } else { false } })
        await stage.session.close()
    }
}
