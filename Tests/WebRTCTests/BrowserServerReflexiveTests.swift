import NIOCore
import STUNLite
import Testing
import Traversal
@testable import WebRTC

/// The camera's server-reflexive candidates in its answer to a browser: each session socket asks the cloud's STUN
/// server for its mapping before the answer goes out, briefly, and offers it beside the host address.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct BrowserServerReflexiveTests {
    /// The address a NAT in front of the camera would give its socket (TEST-NET-3: never on this machine).
    static let natMapping = TransportAddress(ip: IPAddress("203.0.113.9")!, port: 61000)

    /// A STUN server on a loopback socket that plays a NAT: every Binding request is answered, after `before` strays,
    /// with `natMapping` as XOR-MAPPED-ADDRESS; `answers: false` keeps it silent. The socket closes after `body`.
    static func withServer<T>(answers: Bool = true, before: @escaping @Sendable (STUNTransactionID) -> [[UInt8]] = { _ in [] },
                              _ body: (TransportAddress) async throws -> T) async throws -> T {
        let server = try await STUNUDPClient.bind(to: TransportAddress(ip: IPAddress("127.0.0.1")!, port: 0))
        let serving = Task {
            for await (source, bytes) in server.otherDatagrams where answers {
                guard let request = try? STUNMessage.decode(bytes), request.messageClass == .request else { continue }
                for stray in before(request.transactionID) { try? await server.send(stray, to: source) }
                var ok = STUNMessage(method: .binding, messageClass: .successResponse, transactionID: request.transactionID)
                ok.append(XORMappedAddress(natMapping))
                try? await server.send(ok.encode(fingerprint: true), to: source)
            }
        }
        defer { serving.cancel() }
        do {
            let result = try await body(server.localAddress)
            await server.close()
            return result
        } catch {
            await server.close()
            throw error
        }
    }

    static func start(stunServer: TransportAddress) async throws -> BrowserViewerSession {
        try await BrowserViewerSession.start(
            offer: BrowserViewerSessionTests.offer(fingerprint: try DTLSCertificate.generate().fingerprint, candidate: nil),
            identity: .generate(), certificate: try .generate(), hosts: ["127.0.0.1"], stunServer: stunServer)
    }

    @Test func theAnswerCarriesTheMappingAsAServerReflexiveCandidate() async throws {
        let session = try await Self.withServer { try await Self.start(stunServer: $0) }
        defer { Task { await session.close() } }
        let candidates = session.answer.candidates
        let host = try #require(candidates.first { $0.kind == .host })
        let srflx = try #require(candidates.first { $0.kind == .srflx }, "\(candidates)")
        #expect(srflx.address == "203.0.113.9" && srflx.port == 61000)
        // RFC 8839 §5.1: the related address is the base, the host socket the ICE agent sends from.
        #expect(srflx.related?.address == host.address && srflx.related?.port == host.port)
        // RFC 8445 §5.1.2: type preference 100 for srflx, the base's local preference, component 1.
        #expect(srflx.priority == ICECandidate.priority(kind: .srflx, localPreference: 65535))
        #expect(srflx.priority < host.priority)
        #expect(srflx.foundation != host.foundation, "another type, another foundation (RFC 8445 §5.1.1.3)")
        #expect(session.answer.text.contains("typ srflx raddr \(host.address) rport \(host.port)"))
        // The browser parses what we send.
        let parsed = try SessionDescription(parsing: session.answer.text)
        #expect(parsed.candidates.contains(srflx))
    }

    /// Sockets prepared while the browser proves access: the answer made on them carries their mapping, a session
    /// takes them once, and sockets never answered are released (by `close()`, or when dropped).
    @Test func preparedSocketsAreTakenOnceAndReleasedWhenNotAnswered() async throws {
        let offer = BrowserViewerSessionTests.offer(fingerprint: try DTLSCertificate.generate().fingerprint, candidate: nil)
        let (identity, certificate) = (DeviceIdentity.generate(), try DTLSCertificate.generate())
        try await Self.withServer { server in
            let sockets = try await BrowserViewerSession.Sockets.prepare(hosts: ["127.0.0.1"], stunServer: server)
            let session = try await BrowserViewerSession.start(offer: offer, identity: identity, certificate: certificate, sockets: sockets)
            #expect(session.answer.candidates.contains { $0.kind == .srflx && $0.address == "203.0.113.9" })
            #expect(sockets.localAddresses.isEmpty, "the session owns them now")
            await #expect(throws: BrowserSessionError.self) {
                _ = try await BrowserViewerSession.start(offer: offer, identity: identity, certificate: certificate, sockets: sockets)
            }
            await session.close()

            // Closed: the port is free again (binding it while the socket is open fails).
            let unanswered = try await BrowserViewerSession.Sockets.prepare(hosts: ["127.0.0.1"], stunServer: server)
            let address = try #require(unanswered.localAddresses.first)
            await #expect(throws: (any Error).self) { try await STUNUDPClient.bind(to: address).close() }
            await unanswered.close()
            try await STUNUDPClient.bind(to: address).close()
        }
        // Dropped: released by its owner going away (asynchronously; bounded: 50 × 20 ms).
        let address = try #require(try await BrowserViewerSession.Sockets.prepare(hosts: ["127.0.0.1"]).localAddresses.first)
        var rebound: STUNUDPClient?
        for _ in 0..<50 where rebound == nil {
            rebound = try? await STUNUDPClient.bind(to: address)
            if rebound == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(rebound != nil, "a dropped preparation closes its sockets")
        await rebound?.close()
    }

    /// A browser behind another NAT (its server-reflexive address is not the camera's) checks the camera's
    /// server-reflexive candidate before its private host ones; a browser behind the same NAT, or one whose NAT is
    /// unknown, sees the recommended order.
    @Test func hostCandidatesGoBelowServerReflexiveOnlyForABrowserBehindAnotherNAT() async throws {
        let fingerprint = try DTLSCertificate.generate().fingerprint
        func offer(browserSrflx: String?) -> SessionDescription {
            var o = BrowserViewerSessionTests.offer(fingerprint: fingerprint, candidate: TransportAddress(ip: IPAddress("10.9.0.2")!, port: 5000))
            if let browserSrflx {
                o.candidates.append(ICECandidate(foundation: "2", priority: ICECandidate.priority(kind: .srflx), address: browserSrflx,
                                                 port: 41000, kind: .srflx, related: (address: "10.9.0.2", port: 5000)))
            }
            return o
        }
        let host = [TransportAddress(ip: IPAddress("10.1.0.2")!, port: 6000)]
        let mapped = [0: Self.natMapping]
        let elsewhere = offer(browserSrflx: "198.51.100.7")
        #expect(BrowserViewerSession.hostTypePreference(offer: elsewhere, hosts: host, mapped: mapped) == 90)
        #expect(BrowserViewerSession.hostTypePreference(offer: offer(browserSrflx: "203.0.113.9"), hosts: host, mapped: mapped) == 126,
                "behind the same NAT: the LAN path first")
        #expect(BrowserViewerSession.hostTypePreference(offer: offer(browserSrflx: nil), hosts: host, mapped: mapped) == 126,
                "the browser's NAT unknown")
        #expect(BrowserViewerSession.hostTypePreference(offer: elsewhere, hosts: host, mapped: [:]) == 126, "the camera has no mapping")
        #expect(BrowserViewerSession.hostTypePreference(offer: elsewhere, hosts: host, mapped: [0: host[0]]) == 126,
                "a mapping equal to the host address: not behind a NAT")

        // In the answer: the srflx candidate outranks the host one, and the host one still outranks nothing relayed.
        let session = try await Self.withServer { server in
            try await BrowserViewerSession.start(offer: elsewhere, identity: .generate(), certificate: try .generate(),
                                                 hosts: ["127.0.0.1"], stunServer: server)
        }
        defer { Task { await session.close() } }
        let answered = try #require(session.answer.candidates.first { $0.kind == .host })
        let reflexive = try #require(session.answer.candidates.first { $0.kind == .srflx })
        #expect(reflexive.priority > answered.priority && answered.priority >> 24 == 90, "\(session.answer.candidates)")
    }

    @Test func aSilentSTUNServerGivesHostCandidatesOnlyWithinTheBound() async throws {
        // The bound is the schedule's: the answer waits at most this long for the mapping.
        #expect(BrowserViewerSession.serverReflexiveDiscovery.totalTimeout <= .milliseconds(500))
        #expect(BrowserViewerSession.Configuration().serverReflexivePolicy == BrowserViewerSession.serverReflexiveDiscovery)
        let session = try await Self.withServer(answers: false) { try await Self.start(stunServer: $0) }
        defer { Task { await session.close() } }
        #expect(!session.answer.candidates.isEmpty)
        #expect(session.answer.candidates.allSatisfy { $0.kind == .host }, "\(session.answer.candidates)")
    }

    @Test func strayAndMalformedResponsesAreIgnored() async throws {
        let strays: @Sendable (STUNTransactionID) -> [[UInt8]] = { transaction in
            // Another transaction's answer, naming another mapping.
            var other = STUNMessage(method: .binding, messageClass: .successResponse)
            other.append(XORMappedAddress(TransportAddress(ip: IPAddress("198.51.100.66")!, port: 666)))
            // Our transaction's header with an attribute running past the end.
            let truncated: [UInt8] = [0x01, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42] + transaction.bytes + [0x00, 0x20, 0x00, 0x40, 1, 2, 3, 4]
            // Our transaction's answer with a FINGERPRINT that does not match (RFC 8489 §7.3: not for us).
            var forged = STUNMessage(method: .binding, messageClass: .successResponse, transactionID: transaction)
            forged.append(XORMappedAddress(TransportAddress(ip: IPAddress("198.51.100.77")!, port: 777)))
            var badFingerprint = forged.encode(fingerprint: true)
            badFingerprint[badFingerprint.count - 1] ^= 0xFF
            return [[], [0xFF, 0x00], Array(repeating: 0x16, count: 40), other.encode(fingerprint: true), truncated, badFingerprint]
        }
        let session = try await Self.withServer(before: strays) { try await Self.start(stunServer: $0) }
        defer { Task { await session.close() } }
        let srflx = session.answer.candidates.filter { $0.kind == .srflx }
        #expect(srflx.map(\.address) == ["203.0.113.9"], "only the true answer counts: \(session.answer.candidates)")
    }

    @Test func aMappingEqualToTheHostAddressIsNotOfferedTwice() async throws {
        // Our own STUN server on loopback sees the socket's own address: the srflx would be redundant (RFC 8445 §5.1.3).
        let server = try await STUNServer.start(.init(listenIP: IPAddress("127.0.0.1")!, port: 0, tcp: false))
        let address = try #require(server.udpAddresses.values.first)
        do {
            let session = try await Self.start(stunServer: address)
            #expect(session.answer.candidates.map(\.kind) == [.host])
            await session.close()
        } catch {
            await server.shutdown()
            throw error
        }
        await server.shutdown()
    }
}
