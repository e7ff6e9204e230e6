import Logging
import Testing
@_spi(WebRTC) @testable import Traversal
import WebRTC

/// The channel engine's SCTP packets carried as DTLS application data (RFC 8261), as a WebRTC data
/// channel runs: DCEP opens a channel (RFC 8832) and messages cross, reliable and large, both ways.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct SCTPOverDTLSTests {
    /// One side: its DTLS endpoint, the SCTP engine above it (its packet input), the other side below it.
    actor Side {
        let dtls: DTLSEndpoint
        var input: (@Sendable ([UInt8]) -> Void)?
        var peer: Side?
        /// When set, this side's packets are lost on the way.
        var mute = false
        func setMute(_ on: Bool) { mute = on }
        init(_ dtls: DTLSEndpoint) { self.dtls = dtls }
        func attach(_ input: @escaping @Sendable ([UInt8]) -> Void, peer: Side) {
            self.input = input
            self.peer = peer
        }
        /// A datagram from the peer: handshake or records; application data goes up to SCTP.
        func deliver(_ datagram: [UInt8]) async {
            guard let out = try? dtls.receive(datagram) else { return }
            for d in out.datagrams { await peer?.deliver(d) }
            for packet in out.data { input?(packet) }
        }
        /// An SCTP packet from above: sealed into one DTLS record (dropped before the handshake, as a lost packet).
        func send(_ packet: [UInt8]) async {
            guard !mute, dtls.isConnected, let out = try? dtls.send(packet) else { return }
            for d in out.datagrams { await peer?.deliver(d) }
        }
        func start() async throws {
            for d in try dtls.start().datagrams { await peer?.deliver(d) }
        }
        var connected: Bool { dtls.isConnected }
    }

    /// A browser and a camera side, DTLS connected, their channel sessions on top (not yet connected).
    static func pair() async throws -> (client: Side, server: Side, browser: ChannelSession, camera: ChannelSession) {
        let (a, b) = (try DTLSCertificate.generate(), try DTLSCertificate.generate())
        let client = Side(try DTLSEndpoint(role: .client, certificate: a, peerFingerprint: b.fingerprint))
        let server = Side(try DTLSEndpoint(role: .server, certificate: b, peerFingerprint: a.fingerprint))
        // Room for DTLS 1.2's record overhead (13-byte header, 8-byte explicit nonce, 16-byte tag) under the 1200-byte MTU.
        let sctp = SCTPAssociation.Configuration.datagram(pathMTU: 1100)
        let browser = try ChannelSession(role: .viewer, configuration: sctp, logger: Logger(label: "browser")) { await client.send($0) }
        let camera = try ChannelSession(role: .camera, configuration: sctp, logger: Logger(label: "camera")) { await server.send($0) }
        await client.attach({ browser.input($0) }, peer: server)
        await server.attach({ camera.input($0) }, peer: client)
        try await client.start()
        let clientConnected = await client.connected
        let serverConnected = await server.connected
        #expect(clientConnected && serverConnected)
        return (client, server, browser, camera)
    }

    @Test func aDataChannelOpensAndCarriesMessagesOverDTLS() async throws {
        let (_, _, browser, camera) = try await Self.pair()
        browser.connect()
        camera.connect()

        async let accepted: PeerChannel? = { for await c in camera.incoming { return c }; return nil }()
        let channel = try await browser.open(label: "video", delivery: .reliable, priority: .normal)
        let incoming = try #require(await accepted)
        #expect(incoming.label == "video" && incoming.delivery == .reliable)

        let frame = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try await channel.send(Array("hello".utf8))
        try await channel.send(frame)
        var received = incoming.messages.makeAsyncIterator()
        #expect(try await received.next() == Array("hello".utf8))
        #expect(try await received.next() == frame, "a 100 kB message, fragmented by SCTP, each fragment a DTLS record")
        try await incoming.send(Array("ack".utf8))
        var back = channel.messages.makeAsyncIterator()
        #expect(try await back.next() == Array("ack".utf8))
        browser.close(reason: "done")
        camera.close(reason: "done")
    }

    /// A connected pair with one channel opened the usual way (the association is up both ways), then the browser muted
    /// (nothing it sends arrives any more: neither its DATA_CHANNEL_ACKs nor its SACKs) and the camera's early channel
    /// `trav.media` opened.
    static func mutedBrowser() async throws -> (browser: ChannelSession, camera: ChannelSession, media: PeerChannel) {
        let (client, _, browser, camera) = try await Self.pair()
        browser.connect()
        camera.connect()
        async let first: PeerChannel? = { for await c in browser.incoming { return c }; return nil }()
        _ = try await camera.open(label: "up", delivery: .reliable, priority: .normal)
        _ = try #require(await first)
        await client.setMute(true)
        return (browser, camera, try await camera.open(label: "trav.media", delivery: .reliable, priority: .high, early: true))
    }

    @Test func anEarlyChannelCarriesItsFirstMessageWithoutWaitingForTheAcknowledgement() async throws {
        let (browser, camera, channel) = try await Self.mutedBrowser()
        try await channel.send(Array("first frame".utf8))
        var incoming = browser.incoming.makeAsyncIterator()
        let opened = try #require(await incoming.next())
        #expect(opened.label == "trav.media")
        var received = opened.messages.makeAsyncIterator()
        #expect(try await received.next() == Array("first frame".utf8))
        browser.close(reason: "done")
        camera.close(reason: "done")
    }

    @Test func theDTLSClientsEngineOpensEvenStreamsAndTheServersOddOnes() async throws {
        let (a, b) = (try DTLSCertificate.generate(), try DTLSCertificate.generate())
        let client = Side(try DTLSEndpoint(role: .client, certificate: a, peerFingerprint: b.fingerprint))
        let server = Side(try DTLSEndpoint(role: .server, certificate: b, peerFingerprint: a.fingerprint))
        let active = try DataChannelEngine(side: .client, pathMTU: 1100, logger: Logger(label: "client")) { await client.send($0) }
        let passive = try DataChannelEngine(side: .server, pathMTU: 1100, logger: Logger(label: "server")) { await server.send($0) }
        await client.attach({ active.input($0) }, peer: server)
        await server.attach({ passive.input($0) }, peer: client)
        try await client.start()
        active.connect()
        passive.connect()
        // RFC 8832 §6: the DTLS client opens even stream ids, the server odd ones; each side takes the other's.
        async let atServer: PeerChannel? = { for await c in passive.incoming { return c }; return nil }()
        let fromClient = try await active.open(label: "a", delivery: .reliable, priority: .normal)
        #expect(fromClient.streamID % 2 == 0)
        #expect(try #require(await atServer).streamID == fromClient.streamID)
        async let atClient: PeerChannel? = { for await c in active.incoming { return c }; return nil }()
        let fromServer = try await passive.open(label: "b", delivery: .reliable, priority: .normal)
        #expect(fromServer.streamID % 2 == 1)
        #expect(try #require(await atClient).streamID == fromServer.streamID)
        active.close(reason: "done")
        passive.close(reason: "done")
    }

    @Test func aKeyframeOfTenPacketsLeavesInTheInitialWindowWithoutAnyAcknowledgement() async throws {
        // No SACK reaches the camera: only what its initial congestion window allows ever arrives.
        let (browser, camera, channel) = try await Self.mutedBrowser()
        // 8 KB, a keyframe of the size browsers are sent first: 8 packets of the 1100-byte path, more than RFC 9260
        // §7.2.1's 4404 bytes and less than the 10-packet window SCTPStack sets.
        let keyframe = (0..<8000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try await channel.send(keyframe)
        let arrived = try await withDeadline(.seconds(5)) { () -> [UInt8]? in
            for await opened in browser.incoming where opened.label == "trav.media" {
                var messages = opened.messages.makeAsyncIterator()
                return try await messages.next()
            }
            return nil
        }
        #expect(arrived == keyframe)
        browser.close(reason: "done")
        camera.close(reason: "done")
    }
}
