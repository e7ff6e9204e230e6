import Foundation
import Testing
import Traversal
import WebRTC

/// A real browser (headless Chromium) opens a WebRTC data channel to the camera's `BrowserViewerSession` on
/// loopback: its offer read by `SessionDescription`, its ICE checks answered by `ICEAgent`, its DTLS handshake
/// by `DTLSEndpoint` (fingerprints checked both ways), its SCTP and DCEP by the channel engine, and
/// messages cross both ways. The page checks the answer's identity binding with `BrowserViewerScript`.
/// Signalling is a plain HTTP exchange with the test (`BrowserHarness`).
@Suite(.serialized, .timeLimit(.minutes(2)))
struct BrowserDataChannelTests {
    /// The glue: a data channel, the offer, the answer checked, then one message each way.
    static let glue = #"""
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
            await travCheckAnswer(answer, pc.localDescription.sdp, new URLSearchParams(location.search).get('uid'));
            await pc.setRemoteDescription({type: 'answer', sdp: answer});
          } catch (e) { report(e.message.startsWith('identity:') ? e.message : 'error: ' + e); }
        })();
        """#

    /// The identity binding the page is given.
    enum Variant: Sendable, CaseIterable {
        /// The camera's own key over its own certificate.
        case genuine
        /// The camera's key over another certificate than the one it presents (a cloud substituting the certificate).
        case forgedCertificate
        /// Another key, validly signing, that is not behind the UID (a cloud substituting the camera's key).
        case impostorKey
    }

    /// The camera in the test: a ``BrowserViewerSession`` per offer, its answer's binding replaced per ``Variant``,
    /// the browser's first message on each channel passed to `heard` and answered.
    actor Camera {
        let identity = DeviceIdentity.generate()
        let certificate: DTLSCertificate
        let variant: Variant
        let heard: AsyncStream<String>.Continuation
        var sessions: [BrowserViewerSession] = []

        init(variant: Variant, heard: AsyncStream<String>.Continuation) throws {
            certificate = try DTLSCertificate.generate()
            self.variant = variant
            self.heard = heard
        }

        /// Reads the browser's offer and returns the answer.
        func answer(_ offerText: String) async throws -> String {
            let offer = try SessionDescription(parsing: offerText)
            let session = try await BrowserViewerSession.start(offer: offer, identity: identity, certificate: certificate, hosts: ["127.0.0.1"])
            sessions.append(session)
            let heard = self.heard
            Task {
                for await channel in session.incomingChannels {
                    var messages = channel.messages.makeAsyncIterator()
                    guard let first = try? await messages.next() else { continue }
                    heard.yield("\(channel.label): " + String(decoding: first, as: UTF8.self))
                    try? await channel.send(Array("hello from trav".utf8))
                }
            }
            var answer = session.answer
            let uid = identity.deviceID.description
            switch variant {
            case .genuine:
                break
            case .forgedCertificate:
                answer.identity = try IdentityBinding.sign(
                    publicKey: Array(identity.publicKey.rawRepresentation), deviceID: uid,
                    cameraFingerprint: [UInt8](repeating: 0xEE, count: 32), browserFingerprint: offer.fingerprint,
                    using: { try identity.signature(for: $0) })
            case .impostorKey:
                let impostor = DeviceIdentity.generate()
                answer.identity = try IdentityBinding.sign(
                    publicKey: Array(impostor.publicKey.rawRepresentation), deviceID: uid,
                    cameraFingerprint: certificate.fingerprint, browserFingerprint: offer.fingerprint,
                    using: { try impostor.signature(for: $0) })
            }
            return answer.text
        }

        func close() async {
            for session in sessions { await session.close() }
            sessions = []
        }
    }

    @Test(.enabled(if: BrowserHarness.chromium != nil, "chromium is not installed"), arguments: Variant.allCases)
    func chromiumOpensADataChannelToOurStack(_ variant: Variant) async throws {
        let (channelMessages, channelSink) = AsyncStream.makeStream(of: String.self)
        let camera = try Camera(variant: variant, heard: channelSink)
        let uid = camera.identity.deviceID.description
        let (result, chromiumLog) = try await BrowserHarness.run(glue: Self.glue, query: "uid=\(uid)") { try await camera.answer($0) }
        switch variant {
        case .genuine:
            let heard = try? await withDeadline(.seconds(1)) { () -> String? in
                for await m in channelMessages { return m }
                return nil
            }
            #expect(heard == "video: hello from chromium")
            #expect(result == "hello from trav", "the page: \(String(describing: result)); chromium: \(chromiumLog)")
        case .forgedCertificate:
            #expect(result == "identity: bad signature", "the page refuses a certificate the camera's key did not vouch for: \(String(describing: result))")
        case .impostorKey:
            #expect(result == "identity: key is not behind the UID", "the page refuses a key the UID does not derive from: \(String(describing: result))")
        }
        await camera.close()
    }
}
