import Foundation
import SourceLimits
import STUNLite
import Strategies
import Synchronization
import Testing
import Traversal

/// A camera used as a reflector: an offer naming a third party's addresses (loopback sinks on
/// 127.0.0.3 here) must not make the camera send that party more than 3× the offer's bytes before
/// anyone is authenticated, and a flood of spoofed LAN `find`s gets one answer per source per interval.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct ReflectionBudgetTests {
    /// UDP sockets on 127.0.0.3 that count what reaches them.
    final class Sink: Sendable {
        let sockets: [STUNUDPClient]
        private let received = Mutex((bytes: 0, datagrams: 0))
        private let readers = Mutex<[Task<Void, Never>]>([])

        init(ports: Int) async throws {
            var sockets: [STUNUDPClient] = []
            for _ in 0..<ports {
                sockets.append(try await STUNUDPClient.bind(to: TransportAddress(ip: IPAddress("127.0.0.3")!, port: 0)))
            }
            self.sockets = sockets
            let tasks = sockets.map { socket in
                Task { [self] in
                    for await (_, bytes) in socket.otherDatagrams { self.received.withLock { $0.bytes += bytes.count; $0.datagrams += 1 } }
                }
            }
            readers.withLock { $0 = tasks }
        }

        /// Bytes and datagrams received so far.
        var total: (bytes: Int, datagrams: Int) { received.withLock { $0 } }

        func close() async {
            for r in readers.withLock({ $0 }) { r.cancel() }
            for s in sockets { await s.close() }
        }
    }

    /// A viewer's introduction as the camera receives it, vouched for by nobody or by `vouched`.
    struct Forged: IncomingIntroduction {
        let requestID: String
        let offer: PeerOffer
        var relay: RelayGrant? { nil }
        let vouchedRequester: SourceAddressKey?
        func accept(answer: PeerOffer) async throws {}
        func decline() async {}
    }

    /// An offer of ~7 kB listing the sink's ports for every UDP strategy: host addresses, a reflexive
    /// address whose NAT "maps randomly" (the birthday method toward the sink's host) and predicted ports.
    static func maliciousOffer(_ sink: Sink) -> PeerOffer {
        var candidates: [Candidate] = []
        let pad = ["note": String(repeating: "x", count: 60)]
        for socket in sink.sockets {
            let address = socket.localAddress.description
            candidates.append(Candidate(strategy: "direct-lan", kind: .host, address: address, detail: pad))
            candidates.append(Candidate(strategy: "udp-hole-punch", kind: .serverReflexive, address: address,
                                        detail: ["mapping": "random", "note": pad["note"]!]))
            candidates.append(Candidate(strategy: "udp-hole-punch", kind: .predicted, address: address, detail: pad))
        }
        return PeerOffer(identityKey: DeviceIdentity.ephemeral().publicKey.rawRepresentation, candidates: candidates,
                         strategies: ["direct-lan", "udp-hole-punch"])
    }

    /// Serves one forged introduction on a camera with the UDP strategies until its race is over; returns
    /// the offer's size and what the sink received.
    func reflect(vouched: SourceAddressKey?) async throws -> (offerBytes: Int, sunk: (bytes: Int, datagrams: Int)) {
        let sink = try await Sink(ports: 16)
        let stun = try await STUNServer.start(.init(listenIP: IPAddress("127.0.0.1")!, port: 0, tcp: false))
        let offer = Self.maliciousOffer(sink)
        let offerBytes = try JSONEncoder().encode(offer).count
        let camera = Connector(configuration: .init(
            identity: .generate(), strategies: [DirectLAN(scope: .loopbackOnly), UDPHolePunch()],
            stunServers: [stun.udpAddresses[.primary]!.description], connectTimeout: .seconds(8), gatherTimeout: testGatherTimeout))
        let (introductions, feed) = AsyncStream.makeStream(of: (any IncomingIntroduction).self)
        let served = camera.serve([introductions], access: try .password("pw", parameters: testCost))
        let drain = Task { for await _ in served {} }
        feed.yield(Forged(requestID: "reflect", offer: offer, vouchedRequester: vouched))
        // Direct LAN pings for 3 s, the hole punch (and a birthday) for 5 s: wait for both to give up.
        try await Task.sleep(for: .seconds(6))
        feed.finish()
        drain.cancel()
        let sunk = sink.total
        await sink.close()
        await stun.shutdown()
        return (offerBytes, sunk)
    }

    @Test func anUnvouchedOfferMakesTheCameraSendAThirdPartyAtMostThreeTimesItsBytes() async throws {
        let (offerBytes, sunk) = try await reflect(vouched: nil)
        #expect(offerBytes > 6000, "an offer of \(offerBytes) bytes")
        let factor = Double(sunk.bytes) / Double(offerBytes)
        #expect(sunk.bytes <= 3 * offerBytes, "\(sunk.bytes) bytes in \(sunk.datagrams) datagrams: \(factor)× the offer")
    }

    @Test func aCloudVouchingForAnotherAddressDoesNotLiftTheBound() async throws {
        let (offerBytes, sunk) = try await reflect(vouched: SourceAddressKey(IPAddress("127.0.0.1")!))
        #expect(sunk.bytes <= 3 * offerBytes, "\(sunk.bytes) bytes for an offer of \(offerBytes)")
    }

    /// A LAN `find` as a viewer sends it (``LANDiscovery``'s wire format).
    struct Find: Codable {
        var v = 1
        var type = "find"
        var deviceID: String
        var requestID: String
        var offer: PeerOffer
    }

    @Test func aFloodOfSpoofedFindsFromOneSourceGetsOneAnswerPerInterval() async throws {
        let camera = DeviceIdentity.generate()
        let responder = try await LANDiscovery.Responder(device: camera.deviceID, identity: camera, port: 0)
        let target = TransportAddress(ip: IPAddress("127.0.0.1")!, port: responder.localAddress.port)
        let offer = PeerOffer(identityKey: Data(repeating: 7, count: 32), candidates: [], strategies: ["direct-lan"])
        let victim = try await STUNUDPClient.bind(to: TransportAddress(ip: IPAddress("127.0.0.1")!, port: 0))
        let neighbour = try await STUNUDPClient.bind(to: TransportAddress(ip: IPAddress("127.0.0.2")!, port: 0))
        func find(_ requestID: String, from socket: STUNUDPClient) async throws {
            let bytes = try JSONEncoder().encode(Find(deviceID: camera.deviceID.description, requestID: requestID, offer: offer))
            try await socket.send(Array(bytes), to: target)
        }
        let collector = Task { () -> [String] in
            var ids: [String] = []
            for await intro in responder.introductions {
                ids.append(intro.requestID)
                await intro.decline()
            }
            return ids
        }
        // 50 finds, each a new request, from one source within one interval: one introduction.
        for i in 0..<50 { try await find("flood-\(i)", from: victim) }
        try await find("neighbour-0", from: neighbour)
        try await Task.sleep(for: LANDiscovery.findInterval + .milliseconds(200))
        // The next interval: that source is answered again.
        try await find("later", from: victim)
        try await Task.sleep(for: .milliseconds(300))
        await responder.stop()
        let requestIDs = await collector.value
        await victim.close()
        await neighbour.close()
        #expect(requestIDs.filter { $0.hasPrefix("flood-") } == ["flood-0"], "\(requestIDs)")
        #expect(requestIDs.contains("neighbour-0"), "another source is still answered")
        #expect(requestIDs.contains("later"))
    }
}
