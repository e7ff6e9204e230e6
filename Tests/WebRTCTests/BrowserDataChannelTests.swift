import Foundation
import Logging
import NATLab
import NIOCore
import NIOPosix
import STUNLite
import Synchronization
import Testing
@testable import Traversal
import WebRTC

/// A real browser (headless Chromium) opens a WebRTC data channel to our stack on loopback: its offer
/// read by `SessionDescription`, its ICE checks answered by `ICEAgent`, its DTLS handshake by
/// `DTLSEndpoint` (fingerprints checked both ways), its SCTP and DCEP by the channel engine, and
/// messages cross both ways. Signalling is a plain HTTP exchange with the test (the cloud's page and
/// WebSocket are not built yet).
@Suite(.serialized, .timeLimit(.minutes(2)))
struct BrowserDataChannelTests {
    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// The page: a data channel, the offer once ICE gathering completes, the answer, then one message each way.
    static let page = #"""
        <!doctype html><meta charset="utf-8"><title>trav</title><script>
        (async () => {
          const report = text => fetch('/result', {method: 'POST', body: text});
          try {
            const pc = new RTCPeerConnection();
            const dc = pc.createDataChannel('video');
            dc.onopen = () => dc.send('hello from chromium');
            dc.binaryType = 'arraybuffer';
            dc.onmessage = e => report(typeof e.data === 'string' ? 'text: ' + e.data : new TextDecoder().decode(e.data));
            await pc.setLocalDescription(await pc.createOffer());
            await new Promise(done => {
              if (pc.iceGatheringState === 'complete') return done();
              pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') done(); };
              setTimeout(done, 3000);
            });
            const answer = await (await fetch('/offer', {method: 'POST', body: pc.localDescription.sdp})).text();
            // The camera's identity key must vouch for the certificate in this answer and ours (IdentityBinding).
            const b64 = s => Uint8Array.from(atob(s), c => c.charCodeAt(0));
            const fingerprint = sdp => Uint8Array.from(sdp.match(/a=fingerprint:sha-256 ([0-9A-Fa-f:]+)/)[1].split(':').map(h => parseInt(h, 16)));
            const binding = answer.match(/a=trav-identity:(\S+) (\S+)/);
            if (!binding) { report('identity: missing'); return; }
            const uid = new URLSearchParams(location.search).get('uid');
            const head = new TextEncoder().encode('trav/webrtc-identity/v1\0' + uid + '\0');
            const signed = new Uint8Array([...head, ...fingerprint(answer), ...fingerprint(pc.localDescription.sdp)]);
            const key = await crypto.subtle.importKey('raw', b64(binding[1]), {name: 'Ed25519'}, false, ['verify']);
            if (!await crypto.subtle.verify({name: 'Ed25519'}, key, b64(binding[2]), signed)) { report('identity: bad signature'); return; }
            await pc.setRemoteDescription({type: 'answer', sdp: answer});
          } catch (e) { report('error: ' + e); }
        })();
        </script>
        """#

    /// Our side of the browser's peer connection: ICE, DTLS and SCTP over one UDP socket.
    actor CameraSide {
        let certificate: DTLSCertificate
        let identity: DeviceIdentity
        let deviceID: String
        /// Signs over another certificate than the one it presents (a cloud substituting the certificate).
        let forge: Bool
        let local: TransportAddress
        let outbound: NIOAsyncChannelOutboundWriter<AddressedEnvelope<ByteBuffer>>
        let received: AsyncStream<String>.Continuation
        var ice: ICEAgent?
        var dtls: DTLSEndpoint?
        var session: ChannelSession?
        var peer: TransportAddress?
        var log: [String] = []

        init(certificate: DTLSCertificate, identity: DeviceIdentity, deviceID: String, forge: Bool, local: TransportAddress,
             outbound: NIOAsyncChannelOutboundWriter<AddressedEnvelope<ByteBuffer>>, received: AsyncStream<String>.Continuation) {
            self.certificate = certificate
            self.identity = identity
            self.deviceID = deviceID
            self.forge = forge
            self.local = local
            self.outbound = outbound
            self.received = received
        }

        /// Reads the browser's offer and returns our answer.
        func answer(_ offerText: String) throws -> String {
            let offer = try SessionDescription(parsing: offerText)
            let ours = ICEAgent.Credentials(ufrag: "trav", pwd: String((0..<24).map { _ in "abcdefghijklmnopqrstuvwxyz0123456789".randomElement()! }))
            var agent = ICEAgent(role: .controlled, local: ours, remote: .init(ufrag: offer.iceUfrag, pwd: offer.icePwd),
                                 locals: [.init(socket: 0, address: local, priority: ICECandidate.priority(kind: .host))], now: .now)
            for c in offer.candidates where c.transport == "udp" {
                if let ip = IPAddress(c.address) { agent.addRemote(TransportAddress(ip: ip, port: UInt16(c.port)), priority: c.priority) }
            }
            ice = agent
            dtls = try DTLSEndpoint(role: .server, certificate: certificate, peerFingerprint: offer.fingerprint)
            log.append("offer: \(offer.candidates.count) candidates")
            return SessionDescription(
                sessionID: UInt64.random(in: 1...UInt64(Int64.max)), mid: offer.mid, iceUfrag: ours.ufrag, icePwd: ours.pwd,
                fingerprint: certificate.fingerprint, setup: .passive, maxMessageSize: 262144,
                candidates: [ICECandidate(foundation: "1", priority: ICECandidate.priority(kind: .host), address: "\(local.ip)",
                                          port: Int(local.port), kind: .host)],
                endOfCandidates: true,
                identity: try IdentityBinding.sign(
                    publicKey: Array(identity.publicKey.rawRepresentation), deviceID: deviceID,
                    cameraFingerprint: forge ? [UInt8](repeating: 0xEE, count: 32) : certificate.fingerprint,
                    browserFingerprint: offer.fingerprint, using: { try identity.signature(for: $0) })).text
        }

        /// One datagram from the browser, demultiplexed by its first byte (RFC 7983 §7: 0–3 STUN, 20–63 DTLS).
        func datagram(_ bytes: [UInt8], from source: TransportAddress) async {
            guard let first = bytes.first else { return }
            if first <= 3 {
                guard var agent = ice else { return }
                let actions = agent.receive(bytes, from: source, on: 0, now: .now)
                ice = agent
                await perform(actions)
            } else if (20...63).contains(first), let dtls {
                peer = source
                guard let out = try? dtls.receive(bytes) else { log.append("dtls refused a datagram"); return }
                for d in out.datagrams { await write(d, to: source) }
                if dtls.isConnected, session == nil { startSCTP() }
                for packet in out.data { session?.input(packet) }
            }
        }

        func tick() async {
            guard var agent = ice else { return }
            let actions = agent.tick(now: .now)
            ice = agent
            await perform(actions)
        }

        private func perform(_ actions: [ICEAgent.Action]) async {
            for action in actions {
                switch action {
                case .send(let bytes, _, let to): await write(bytes, to: to)
                case .selected(_, let remote): log.append("ice selected \(remote)")
                case .failed: log.append("ice failed")
                case .consentExpired: log.append("consent expired")
                }
            }
        }

        private func write(_ bytes: [UInt8], to: TransportAddress) async {
            try? await outbound.write(AddressedEnvelope(remoteAddress: to.socketAddress, data: ByteBuffer(bytes: bytes)))
        }

        /// SCTP packets to DTLS records to the browser; the browser's channel answered once.
        private func startSCTP() {
            log.append("dtls connected")
            // DTLS server: odd stream IDs (RFC 8832 §6), as the engine's camera role.
            guard let session = try? ChannelSession(role: .camera, configuration: .datagram(pathMTU: 1100), logger: Logger(label: "browser-test"),
                                                    send: { [weak self] packet in await self?.sendSCTP(packet) }) else { return }
            self.session = session
            session.connect()
            let sink = received
            Task {
                for await channel in session.incoming {
                    var messages = channel.messages.makeAsyncIterator()
                    guard let first = try? await messages.next() else { continue }
                    sink.yield("\(channel.label): " + String(decoding: first, as: UTF8.self))
                    try? await channel.send(Array("hello from trav".utf8))
                }
            }
        }

        private func sendSCTP(_ packet: [UInt8]) async {
            guard let dtls, dtls.isConnected, let peer, let out = try? dtls.send(packet) else { return }
            for d in out.datagrams { await write(d, to: peer) }
        }

        func close() {
            session?.close(reason: "test over")
        }
    }

    @Test(.enabled(if: chromium != nil, "chromium is not installed"), arguments: [false, true])
    func chromiumOpensADataChannelToOurStack(forgedIdentity: Bool) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("trav-browser-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let certificate = try DTLSCertificate.generate()
        let identity = DeviceIdentity.generate()
        let deviceID = identity.deviceID.description
        let (results, resultSink) = AsyncStream.makeStream(of: String.self)
        let (channelMessages, channelSink) = AsyncStream.makeStream(of: String.self)

        let udp = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0)
            .flatMapThrowing { try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: $0) }
            .get()
        let local = try #require(udp.channel.localAddress.flatMap(TransportAddress.init))
        let http = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        let httpPort = try #require(http.channel.localAddress?.port)
        // Bounded: everything is closed after 60 s whatever happens.
        let (udpChannel, httpChannel) = (udp.channel, http.channel)
        let watchdog = Task {
            try? await Task.sleep(for: .seconds(60))
            udpChannel.close(promise: nil)
            httpChannel.close(promise: nil)
        }
        defer { watchdog.cancel() }

        try await udp.executeThenClose { inbound, outbound in
            let camera = CameraSide(certificate: certificate, identity: identity, deviceID: deviceID, forge: forgedIdentity,
                                    local: local, outbound: outbound, received: channelSink)
            let pump = Task {
                for try await envelope in inbound {
                    guard let source = TransportAddress(envelope.remoteAddress) else { continue }
                    await camera.datagram(Array(envelope.data.readableBytesView), from: source)
                }
            }
            let ticker = Task {
                for _ in 0..<3000 where !Task.isCancelled {
                    await camera.tick()
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }
            let server = Task {
                try await http.executeThenClose { connections in
                    for try await connection in connections {
                        Task { try? await Self.serveHTTP(connection, camera: camera, results: resultSink) }
                    }
                }
            }
            let browser = try ChildProcess([Self.chromium!, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                            "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
                                            "--user-data-dir=\(dir.path)", "http://127.0.0.1:\(httpPort)/?uid=\(deviceID)"])
            defer {
                browser.kill()
                browser.removeFiles()
                pump.cancel()
                ticker.cancel()
                server.cancel()
            }
            let result = try? await withDeadline(.seconds(45)) { () -> String? in
                for await r in results { return r }
                return nil
            }
            if forgedIdentity {
                #expect(result == "identity: bad signature", "the page refuses a certificate the camera's key did not vouch for: \(String(describing: result))")
                await camera.close()
                return
            }
            let heard = try? await withDeadline(.seconds(1)) { () -> String? in
                for await m in channelMessages { return m }
                return nil
            }
            let log = await camera.log
            #expect(heard == "video: hello from chromium", "our side: \(log)")
            #expect(result == "hello from trav", "the page: \(String(describing: result)); our side: \(log); chromium: \(browser.output().stderr.suffix(600))")
            await camera.close()
        }
    }

    /// One HTTP/1.1 exchange: `GET /` the page, `POST /offer` our answer, `POST /result` the page's report.
    static func serveHTTP(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, camera: CameraSide,
                          results: AsyncStream<String>.Continuation) async throws {
        try await connection.executeThenClose { inbound, outbound in
            var request: [UInt8] = []
            for try await chunk in inbound {
                request += chunk.readableBytesView
                guard request.count < 256 * 1024 else { return }
                guard let end = request.firstRange(of: Array("\r\n\r\n".utf8)) else { continue }
                let head = String(decoding: request[..<end.lowerBound], as: UTF8.self)
                let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                guard request.count >= end.upperBound + length else { continue }
                let body = String(decoding: request[end.upperBound..<(end.upperBound + length)], as: UTF8.self)
                let (status, type, reply): (String, String, String)
                if head.hasPrefix("GET / ") || head.hasPrefix("GET /?") {
                    (status, type, reply) = ("200 OK", "text/html", page)
                } else if head.hasPrefix("POST /offer ") {
                    do {
                        (status, type, reply) = ("200 OK", "application/sdp", try await camera.answer(body))
                    } catch {
                        (status, type, reply) = ("400 Bad Request", "text/plain", "\(error)")
                        results.yield("our side refused the offer: \(error)\n\(body)")
                    }
                } else if head.hasPrefix("POST /result ") {
                    results.yield(body)
                    (status, type, reply) = ("204 No Content", "text/plain", "")
                } else {
                    (status, type, reply) = ("404 Not Found", "text/plain", "")
                }
                let bytes = Array(reply.utf8)
                try await outbound.write(ByteBuffer(string: "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(bytes.count)\r\nConnection: close\r\n\r\n"))
                try await outbound.write(ByteBuffer(bytes: bytes))
                return
            }
        }
    }
}
