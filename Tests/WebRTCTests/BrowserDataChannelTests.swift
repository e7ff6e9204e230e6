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
        // The UID's 75 hash bits, as DeviceID derives them: scrypt(SHA-256("trav/device-id/v1" ‖ 0 ‖ key),
        // salt "trav/device-id/v1", N = 2^14, r = 8, p = 1), read 5 bits at a time, MSB first (RFC 7914).
        async function pbkdf2(pass, salt, length) {
          const k = await crypto.subtle.importKey('raw', pass, 'PBKDF2', false, ['deriveBits']);
          return new Uint8Array(await crypto.subtle.deriveBits({name: 'PBKDF2', hash: 'SHA-256', salt, iterations: 1}, k, length * 8));
        }
        function salsa8(B) {
          const x = B.slice(), R = (a, b) => (a << b) | (a >>> (32 - b));
          for (let i = 0; i < 8; i += 2) {
            x[4] ^= R(x[0] + x[12], 7); x[8] ^= R(x[4] + x[0], 9); x[12] ^= R(x[8] + x[4], 13); x[0] ^= R(x[12] + x[8], 18);
            x[9] ^= R(x[5] + x[1], 7); x[13] ^= R(x[9] + x[5], 9); x[1] ^= R(x[13] + x[9], 13); x[5] ^= R(x[1] + x[13], 18);
            x[14] ^= R(x[10] + x[6], 7); x[2] ^= R(x[14] + x[10], 9); x[6] ^= R(x[2] + x[14], 13); x[10] ^= R(x[6] + x[2], 18);
            x[3] ^= R(x[15] + x[11], 7); x[7] ^= R(x[3] + x[15], 9); x[11] ^= R(x[7] + x[3], 13); x[15] ^= R(x[11] + x[7], 18);
            x[1] ^= R(x[0] + x[3], 7); x[2] ^= R(x[1] + x[0], 9); x[3] ^= R(x[2] + x[1], 13); x[0] ^= R(x[3] + x[2], 18);
            x[6] ^= R(x[5] + x[4], 7); x[7] ^= R(x[6] + x[5], 9); x[4] ^= R(x[7] + x[6], 13); x[5] ^= R(x[4] + x[7], 18);
            x[11] ^= R(x[10] + x[9], 7); x[8] ^= R(x[11] + x[10], 9); x[9] ^= R(x[8] + x[11], 13); x[10] ^= R(x[9] + x[8], 18);
            x[12] ^= R(x[15] + x[14], 7); x[13] ^= R(x[12] + x[15], 9); x[14] ^= R(x[13] + x[12], 13); x[15] ^= R(x[14] + x[13], 18);
          }
          for (let i = 0; i < 16; i++) B[i] = (B[i] + x[i]) | 0;
        }
        function blockMix(B, Y, r) {
          const X = B.slice(32 * r - 16, 32 * r);
          for (let i = 0; i < 2 * r; i++) {
            for (let j = 0; j < 16; j++) X[j] ^= B[i * 16 + j];
            salsa8(X);
            Y.set(X, i * 16);
          }
          for (let i = 0; i < r; i++) {
            B.set(Y.subarray(2 * i * 16, 2 * i * 16 + 16), i * 16);
            B.set(Y.subarray((2 * i + 1) * 16, (2 * i + 1) * 16 + 16), (r + i) * 16);
          }
        }
        async function scrypt(pass, salt, N, r, length) {
          const words = 32 * r, bytes = await pbkdf2(pass, salt, 128 * r), view = new DataView(bytes.buffer);
          const B = new Uint32Array(words), V = new Uint32Array(words * N), Y = new Uint32Array(words);
          for (let i = 0; i < words; i++) B[i] = view.getUint32(i * 4, true);
          for (let i = 0; i < N; i++) { V.set(B, i * words); blockMix(B, Y, r); }
          for (let i = 0; i < N; i++) {
            const j = B[(2 * r - 1) * 16] & (N - 1);
            for (let k = 0; k < words; k++) B[k] ^= V[j * words + k];
            blockMix(B, Y, r);
          }
          for (let i = 0; i < words; i++) view.setUint32(i * 4, B[i], true);
          return pbkdf2(pass, bytes, length);
        }
        async function uidSymbols(key) {
          const domain = new TextEncoder().encode('trav/device-id/v1');
          const hashed = new Uint8Array(await crypto.subtle.digest('SHA-256', new Uint8Array([...domain, 0, ...key])));
          const h = await scrypt(hashed, domain, 1 << 14, 8, 32), alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
          let s = '';
          for (let i = 0; i < 15; i++) {
            const bit = i * 5, byte = bit >> 3, w = (h[byte] << 8) | (h[byte + 1] ?? 0);
            s += alphabet[(w >> (11 - (bit & 7))) & 31];
          }
          return s;
        }
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
            if (await uidSymbols(b64(binding[1])) !== uid.replace(/^TRAV-?/, '').replaceAll('-', '').slice(0, 15)) {
              report('identity: key is not behind the UID'); return;
            }
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
        /// What the answer's identity binding is.
        let variant: Variant
        let local: TransportAddress
        let outbound: NIOAsyncChannelOutboundWriter<AddressedEnvelope<ByteBuffer>>
        let received: AsyncStream<String>.Continuation
        var ice: ICEAgent?
        var dtls: DTLSEndpoint?
        var session: ChannelSession?
        var peer: TransportAddress?
        var log: [String] = []

        init(certificate: DTLSCertificate, identity: DeviceIdentity, deviceID: String, variant: Variant, local: TransportAddress,
             outbound: NIOAsyncChannelOutboundWriter<AddressedEnvelope<ByteBuffer>>, received: AsyncStream<String>.Continuation) {
            self.certificate = certificate
            self.identity = identity
            self.deviceID = deviceID
            self.variant = variant
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
                    cameraFingerprint: variant == .forgedCertificate ? [UInt8](repeating: 0xEE, count: 32) : certificate.fingerprint,
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

    /// The identity binding the page is given.
    enum Variant: Sendable, CaseIterable {
        /// The camera's own key over its own certificate.
        case genuine
        /// The camera's key over another certificate than the one it presents (a cloud substituting the certificate).
        case forgedCertificate
        /// Another key, validly signing, that is not behind the UID (a cloud substituting the camera's key).
        case impostorKey
    }

    @Test(.enabled(if: chromium != nil, "chromium is not installed"), arguments: Variant.allCases)
    func chromiumOpensADataChannelToOurStack(_ variant: Variant) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("trav-browser-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let certificate = try DTLSCertificate.generate()
        let identity = DeviceIdentity.generate()
        let deviceID = identity.deviceID.description
        let signer = variant == .impostorKey ? DeviceIdentity.generate() : identity
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
            let camera = CameraSide(certificate: certificate, identity: signer, deviceID: deviceID, variant: variant,
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
            switch variant {
            case .genuine:
                break
            case .forgedCertificate:
                #expect(result == "identity: bad signature", "the page refuses a certificate the camera's key did not vouch for: \(String(describing: result))")
                await camera.close()
                return
            case .impostorKey:
                #expect(result == "identity: key is not behind the UID", "the page refuses a key the UID does not derive from: \(String(describing: result))")
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
