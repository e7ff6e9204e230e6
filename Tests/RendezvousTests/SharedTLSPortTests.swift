import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import STUNLite
import TURNLite
import Testing
@testable import NATLab
@testable import Rendezvous
@testable import Traversal

/// The cloud's one TLS port carries signalling and TURN over TLS, told apart by ALPN (RFC 7301, RFC 7443 §2).
@Suite(.serialized, .timeLimit(.minutes(2)))
struct SharedTLSPortTests {
    /// A relay on free ports sharing the signalling's TLS port, loopback peers allowed.
    static let relay = CloudService.RelayConfiguration(port: 0, allowedPeers: [IPPrefix("127.0.0.0/8")!])

    /// A grant for one introduction: a camera registers, a viewer asks for it, the camera accepts.
    static func grant(_ endpoint: CloudEndpoint, camera: any CameraSignalling, cameraIdentity: DeviceIdentity) async throws -> RelayGrant {
        let viewer = DeviceIdentity.ephemeral()
        async let introduction = CloudClient.viewer(endpoint: endpoint, logger: quietLogger)
            .introduce(to: cameraIdentity.deviceID, offer: sampleOffer(viewer))
        var incoming = camera.introductions.makeAsyncIterator()
        let offer = try #require(await incoming.next())
        try await offer.acceptAnyViewer(answer: sampleOffer(cameraIdentity))
        let result = try await introduction
        return try #require(result.relay)
    }

    /// TURN over TLS to `server` with the grant's credentials, certificate not checked (the relay is untrusted by design).
    static func turnOverTLS(_ server: TransportAddress, _ grant: RelayGrant) -> TURNClient.Configuration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        return TURNClient.Configuration(server: server, transport: .tls(tls, serverHostname: nil), username: grant.username,
                                        password: grant.password, retransmission: .quick)
    }

    @Test func grantsNameTheSignallingPortForTURNOverTLS() async throws {
        try await withCloud(relay: Self.relay) { cloud, _ in
            let relay = try #require(cloud.relay)
            #expect(relay.tlsAddress == nil, "no dedicated relay TLS port by default")
            #expect(cloud.rendezvous.relayURLs.first == "turns:\(cloud.rendezvous.address)")
            #expect(cloud.rendezvous.relayURLs.contains("turn:\(relay.udpAddress)?transport=udp"))
            // Browsers are told the same: their only way to the relay from a network that lets only TCP 443 out.
            let page = cloud.browserIceServers(requestID: "r1").flatMap(\.urls)
            #expect(page.contains("turns:\(cloud.rendezvous.address)"), "\(page)")
        }
    }

    @Test func oneTLSPortServesASignallingSessionAndTURNAllocationsAtOnce() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        try await withCloud(relay: Self.relay) { cloud, endpoint in
            let relay = try #require(cloud.relay)
            try await withCamera(cameraIdentity, endpoint) { camera in
                let grant = try await Self.grant(endpoint, camera: camera, cameraIdentity: cameraIdentity)
                let port = cloud.rendezvous.address
                let (a, allocationA) = try await TURNClient.allocate(Self.turnOverTLS(port, grant))
                do {
                    let (b, allocationB) = try await TURNClient.allocate(Self.turnOverTLS(port, grant))
                    do {
                        #expect(await relay.allocationCount == 2)
                        try await a.createPermission(for: [allocationB.relayed])
                        try await b.createPermission(for: [allocationA.relayed])
                        var inbound = b.received.makeAsyncIterator()
                        try await a.send(Array("through the shared port".utf8), to: allocationB.relayed)
                        let got = await inbound.next()
                        #expect(got?.peer == allocationA.relayed)
                        #expect(got.map { String(decoding: $0.payload, as: UTF8.self) } == "through the shared port")
                        // Signalling on the same port still works while both TURN connections are open.
                        let second = try await Self.grant(endpoint, camera: camera, cameraIdentity: cameraIdentity)
                        #expect(second.username != grant.username)
                        #expect(await cloud.rendezvous.registry.lookup(cameraIdentity.deviceID) != nil)
                    } catch {
                        await b.close()
                        throw error
                    }
                    await b.close()
                } catch {
                    await a.close()
                    throw error
                }
                await a.close()
            }
            #expect(await eventually(within: .seconds(10)) { await relay.allocationCount == 0 }, "allocations are released")
        }
    }

    @Test func aClientOfferingNoALPNGetsSignalling() async throws {
        try await withCloud(relay: Self.relay) { _, endpoint in
            let reply = try await withRawConnection(endpoint, applicationProtocols: []) { channel, inbound in
                try await channel.writeAndFlush(CloudMessage.ping)
                return try await inbound.next()
            }
            #expect(reply == .pong)
        }
    }

    @Test func anOfferOfOnlyUnknownProtocolsFailsTheHandshake() async throws {
        try await withCloud(relay: Self.relay) { _, endpoint in
            for offer in [["h2"], ["http/1.1", "stun.nat-discovery"]] {
                let error = await #expect(throws: CloudError.self) {
                    try await withRawConnection(endpoint, applicationProtocols: offer) { _, _ in }
                }
                #expect(error?.code == .tlsFailed, "\(offer): \(String(describing: error))")
                #expect("\(String(describing: error))".contains("NO_APPLICATION_PROTOCOL"), "\(offer): \(String(describing: error))")
            }
            // A known protocol among unknown ones is fine.
            let reply = try await withRawConnection(endpoint, applicationProtocols: ["h2", CloudProtocol.alpnProtocol]) { channel, inbound in
                try await channel.writeAndFlush(CloudMessage.ping)
                return try await inbound.next()
            }
            #expect(reply == .pong)
        }
    }

    @Test func withoutARelayTheTURNProtocolIsUnknown() async throws {
        try await withCloud { _, endpoint in
            let error = await #expect(throws: CloudError.self) {
                try await withRawConnection(endpoint, applicationProtocols: [TURNTLS.alpnProtocol]) { _, _ in }
            }
            #expect("\(String(describing: error))".contains("NO_APPLICATION_PROTOCOL"), "\(String(describing: error))")
        }
    }

    // MARK: the viewer page on the same port

    /// With the viewer page on the port (`servesViewerPage`), a browser's ALPN offer (`h2`, `http/1.1`) gets the page;
    /// a TURN client offering no ALPN, as a browser's `turns:` does, is told from signalling by its first bytes and
    /// reaches the relay; signalling without ALPN still gets signalling.
    @Test func thePageAndTURNWithoutALPNShareThePortWithSignalling() async throws {
        try await withCloud(relay: Self.relay, tuning: { $0.servesViewerPage = true }) { cloud, endpoint in
            let page = cloud.serveBrowserViewerOnSignallingPort(
                assets: .init(page: "<!doctype html><p>the viewer</p>", script: "// the script"), logger: quietLogger)
            let http = String(decoding: try await Self.tlsExchange(
                endpoint, offering: ["h2", "http/1.1"], send: Array("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8)), as: UTF8.self)
            #expect(http.hasPrefix("HTTP/1.1 200 OK") && http.hasSuffix("<p>the viewer</p>"), "\(http.prefix(300))")
            #expect(http.contains("wss://127.0.0.1:\(endpoint.port)"), "the page's policy names the port it came from: \(http.prefix(600))")

            // A Binding request: the relay answers it on its streams (RFC 8656 §12.5, RFC 8489 §6.3), signalling would not.
            let binding = STUNMessage(method: .binding, messageClass: .request)
            let reply = try await Self.tlsExchange(endpoint, offering: [], send: binding.encode()) { bytes in
                bytes.count >= 20 && bytes.count >= 20 + (Int(bytes[2]) << 8 | Int(bytes[3]))
            }
            let answer = try STUNMessage.decode(reply)
            #expect(answer.method == .binding && answer.messageClass == .successResponse && answer.transactionID == binding.transactionID,
                    "\(answer)")

            let pong = try await withRawConnection(endpoint, applicationProtocols: []) { channel, inbound in
                try await channel.writeAndFlush(CloudMessage.ping)
                return try await inbound.next()
            }
            #expect(pong == .pong)
            await page.stop()
        }
    }

    @Test func firstBytesTellSTUNFromSignalling() {
        let kind = { (bytes: [UInt8]) in FirstBytesSniffer.kind(of: ByteBuffer(bytes: bytes)) }
        let stun = STUNMessage(method: .allocate, messageClass: .request).encode()
        #expect(kind(stun) == .stun)
        #expect(kind(Array(stun.prefix(7))) == nil, "the cookie is not all there yet")
        // A signalling frame: a 4-byte length, then JSON; its first two bytes are 0 up to 64 KiB − 1.
        #expect(kind([0, 0]) == .other)
        #expect(kind([0, 0, 0, 2, UInt8(ascii: "{"), UInt8(ascii: "}")]) == .other)
        // A frame of exactly 64 KiB starts 00 01 like a Binding request, but has `{` where the cookie would be.
        #expect(kind([0, 1, 0, 0, UInt8(ascii: "{"), UInt8(ascii: "\""), 0, 0]) == .other)
        #expect(kind([0]) == nil)
    }

    /// Writes `bytes` over TLS offering `protocols` (certificate not checked) and returns what came back until `done`
    /// says so or the server closed, within 10 s.
    static func tlsExchange(_ endpoint: CloudEndpoint, offering protocols: [String], send bytes: [UInt8],
                            done: @escaping @Sendable ([UInt8]) -> Bool = { _ in false }) async throws -> [UInt8] {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        tls.applicationProtocols = protocols
        let context = try NIOSSLContext(configuration: tls)
        let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: endpoint.host, port: Int(endpoint.port)) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await withDeadline(.seconds(10)) {
            try await client.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(bytes: bytes))
                var received: [UInt8] = []
                do {
                    for try await chunk in inbound {
                        received += chunk.readableBytesView
                        if done(received) { break }
                    }
                } catch {
                    // A close without close_notify ends the read as well.
                }
                return received
            }
        }
    }

    // MARK: coturn's client

    static let uclientMissing: String? = FileManager.default.isExecutableFile(atPath: "/usr/bin/turnutils_uclient") ? nil
        : "coturn is not installed (apt-get install coturn)"

    /// coturn's `turnutils_uclient -S` offers ALPN `http/1.1`, `stun.turn`, `stun.nat-discovery`, so the shared port hands it to the relay.
    @Test(.enabled(if: uclientMissing == nil, Comment(rawValue: uclientMissing ?? "")))
    func coturnUClientOverTLSReachesTheRelayOnTheSharedPort() async throws {
        let cameraIdentity = DeviceIdentity.generate()
        try await withCloud(relay: Self.relay) { cloud, endpoint in
            try await withCamera(cameraIdentity, endpoint) { camera in
                let grant = try await Self.grant(endpoint, camera: camera, cameraIdentity: cameraIdentity)
                try await withUDPEcho { echo in
                    // Send indications (-s): uclient's channel numbers come from RFC 5766's wider range.
                    let args = ["/usr/bin/turnutils_uclient", "-t", "-S", "-s", "-c", "-n", "50", "-m", "1", "-l", "200", "-z", "5",
                                "-u", grant.username, "-w", grant.password, "-e", "\(echo.ip)", "-r", "\(echo.port)",
                                "-p", "\(cloud.rendezvous.address.port)", "127.0.0.1"]
                    let result = try await ChildProcess.run(args, timeout: .seconds(30))
                    let out = result.stdout + result.stderr
                    #expect(!result.timedOut, "uclient hung: \(out.suffix(2000))")
                    #expect(result.status == 0, "\(out.suffix(2000))")
                    #expect(out.contains("Total lost packets 0 (0.000000%)"), "\(out.suffix(2000))")
                }
            }
        }
    }
}

/// Test helper: a UDP echo service on 127.0.0.2 (every datagram goes back to its sender; not on the relay's
/// own address, which it refuses as a peer), closed after `body`.
func withUDPEcho(_ body: (TransportAddress) async throws -> Void) async throws {
    let echo = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(UDPEchoHandler()) }
        }
        .bind(host: "127.0.0.2", port: 0).get()
    do {
        try await body(try #require(echo.localAddress.flatMap(TransportAddress.init)))
    } catch {
        try? await echo.close()
        throw error
    }
    try? await echo.close()
}

/// Sends every datagram back where it came from.
final class UDPEchoHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }
}
