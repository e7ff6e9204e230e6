import Foundation
import Testing
import WebRTC

/// Session descriptions as browsers write them, our answers, and what is refused.
struct SessionDescriptionTests {
    /// A data-channel offer in the shape Chromium writes it (values made up), with a trickled mDNS host
    /// candidate and a server-reflexive one inline.
    static let browserOffer = """
        v=0\r
        o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
        s=-\r
        t=0 0\r
        a=group:BUNDLE 0\r
        a=extmap-allow-mixed\r
        a=msid-semantic: WMS\r
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r
        c=IN IP4 0.0.0.0\r
        a=candidate:1467250027 1 udp 2122260223 4f2a31c6-0d51-4b44-9a5e-3f2d1c6a7b8e.local 54400 typ host generation 0 network-cost 999\r
        a=candidate:842163049 1 udp 1686052607 203.0.113.9 61000 typ srflx raddr 0.0.0.0 rport 0 generation 0\r
        a=ice-ufrag:xK3f\r
        a=ice-pwd:Q9vHq1pMZ2a6Yc8Lr0Tn4Wb7\r
        a=ice-options:trickle\r
        a=fingerprint:sha-256 7B:3A:91:0C:DE:55:12:AF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:01:23:45:67:89:AB:CD:EF\r
        a=setup:actpass\r
        a=mid:0\r
        a=sctp-port:5000\r
        a=max-message-size:262144\r

        """

    @Test func aBrowserOfferIsRead() throws {
        let offer = try SessionDescription(parsing: Self.browserOffer)
        #expect(offer.sessionID == 4611731400430051336 && offer.version == 2)
        #expect(offer.iceUfrag == "xK3f" && offer.icePwd == "Q9vHq1pMZ2a6Yc8Lr0Tn4Wb7")
        #expect(offer.fingerprint.count == 32 && offer.fingerprint.first == 0x7B && offer.fingerprint.last == 0xEF)
        #expect(offer.setup == .actpass && offer.mid == "0" && offer.sctpPort == 5000 && offer.maxMessageSize == 262144)
        #expect(offer.candidates.map(\.kind) == [.host, .srflx])
        #expect(offer.candidates[0].address.hasSuffix(".local"), "an mDNS host name is kept as a name")
        #expect(offer.candidates[1].related?.address == "0.0.0.0" && offer.candidates[1].priority == 1686052607)
        #expect(!offer.endOfCandidates)
    }

    @Test func ourAnswerReadsBackTheSame() throws {
        let answer = SessionDescription(
            sessionID: 42, mid: "0", iceUfrag: "camA", icePwd: String(repeating: "p", count: 24),
            fingerprint: (0..<32).map { UInt8($0 * 7 & 0xFF) }, setup: .passive, maxMessageSize: 65536,
            candidates: [ICECandidate(foundation: "1", priority: ICECandidate.priority(kind: .host), address: "192.0.2.7", port: 40000, kind: .host),
                         ICECandidate(foundation: "2", priority: ICECandidate.priority(kind: .relay), address: "198.51.100.4", port: 3478,
                                      kind: .relay, related: ("203.0.113.9", 61000))],
            endOfCandidates: true,
            identity: IdentityBinding(publicKey: Array(repeating: 1, count: 32), signature: Array(repeating: 2, count: 64)))
        #expect(answer.text.hasPrefix("v=0\r\n") && answer.text.hasSuffix("a=end-of-candidates\r\n"))
        #expect(answer.text.contains("a=trav-identity:AQEB"))
        #expect(try SessionDescription(parsing: answer.text) == answer)
    }

    @Test func candidatePrioritiesFollowRFC8445() throws {
        // 2^24·126 + 2^8·65535 + 255: Chromium's host candidates carry exactly this family of values.
        #expect(ICECandidate.priority(kind: .host) == 2_130_706_431)
        #expect(ICECandidate.priority(kind: .srflx, localPreference: 65535) == 1_694_498_815)
        #expect(ICECandidate.priority(kind: .relay) < ICECandidate.priority(kind: .srflx))
        #expect(ICECandidate.priority(kind: .prflx) > ICECandidate.priority(kind: .srflx))
        let tcp = try ICECandidate(parsing: "candidate:3 1 TCP 1518280447 192.0.2.7 9 typ host tcptype active")
        #expect(tcp.transport == "tcp" && tcp.tcpType == "active" && tcp.port == 9)
        #expect(try ICECandidate(parsing: Substring(tcp.description)) == tcp)
    }

    @Test(arguments: [
        ("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", SDPError.Code.unsupportedMedia),
        ("o=- 1 2 IN IP4 0.0.0.0\r\nv=0\r\n", .malformed),
        ("v=0\r\nthis is not sdp\r\n", .malformed),
        (SessionDescriptionTests.browserOffer.replacingOccurrences(of: "a=ice-pwd:Q9vHq1pMZ2a6Yc8Lr0Tn4Wb7", with: "a=ice-pwd:short"), .invalidCredentials),
        (SessionDescriptionTests.browserOffer.replacingOccurrences(of: "a=ice-ufrag:xK3f", with: "a=ice-ufrag:x K"), .invalidCredentials),
        (SessionDescriptionTests.browserOffer.replacingOccurrences(of: "sha-256 7B:3A", with: "sha-1 7B:3A"), .invalidFingerprint),
        (SessionDescriptionTests.browserOffer.replacingOccurrences(of: ":CD:EF\r", with: ":CD\r"), .invalidFingerprint),
        (SessionDescriptionTests.browserOffer.replacingOccurrences(of: "a=setup:actpass", with: "a=setup:holdconn"), .invalidAttribute),
        (SessionDescriptionTests.browserOffer.replacingOccurrences(of: "a=sctp-port:5000", with: "a=sctp-port:70000"), .invalidAttribute),
        (SessionDescriptionTests.browserOffer.replacingOccurrences(of: "typ srflx", with: "typ satellite"), .invalidCandidate),
        (SessionDescriptionTests.browserOffer.replacingOccurrences(of: "udp 1686052607", with: "sctp 1686052607"), .invalidCandidate),
        (SessionDescriptionTests.browserOffer + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", .unsupportedMedia),
        (String(repeating: "a=x\r\n", count: 1001), .tooLarge),
        (String(repeating: "a", count: 70_000), .tooLarge),
    ])
    func badDescriptionsAreRefusedWithATypedError(_ sdp: String, _ code: SDPError.Code) {
        #expect {
            _ = try SessionDescription(parsing: sdp)
        } throws: { ($0 as? SDPError)?.code == code }
    }

    @Test func candidatesBeyondTheLimitAreRefused() {
        let many = (0...SessionDescription.maxCandidates).map { "a=candidate:\($0) 1 udp 100 192.0.2.1 \(1000 + $0) typ host\r\n" }.joined()
        let sdp = Self.browserOffer.replacingOccurrences(of: "a=ice-options:trickle\r\n", with: "a=ice-options:trickle\r\n" + many)
        #expect { _ = try SessionDescription(parsing: sdp) } throws: { ($0 as? SDPError)?.code == .tooLarge }
    }
}
