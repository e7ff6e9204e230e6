import WebRTC

/// A browser's session description as the camera reads it (RFC 8866 subset for data channels, RFC 8839
/// candidates): any text parses or is refused with `SDPError`; what parses writes back and reads the same.
enum SessionDescriptionFuzz {
    static let target = FuzzTarget(
        name: "sdp",
        summary: "SessionDescription(parsing:) and ICECandidate(parsing:) on any UTF-8; write/read round trip",
        run: run, seeds: seeds)

    static func run(_ data: [UInt8]) {
        let text = String(decoding: data, as: UTF8.self)
        if let description = try? SessionDescription(parsing: text) {
            fuzzCheck((try? SessionDescription(parsing: description.text)) == description, "a parsed description reads back differently")
        }
        if let candidate = try? ICECandidate(parsing: Substring(text)) {
            fuzzCheck((try? ICECandidate(parsing: Substring(candidate.description))) == candidate, "a candidate reads back differently")
        }
    }

    static func seeds() -> [(String, [UInt8])] {
        let offer = SessionDescription(
            sessionID: 4611731400430051336, iceUfrag: "xK3f", icePwd: "Q9vHq1pMZ2a6Yc8Lr0Tn4Wb7",
            fingerprint: (0..<32).map { UInt8($0) }, setup: .actpass, maxMessageSize: 262144,
            candidates: [ICECandidate(foundation: "1", priority: 2122260223, address: "4f2a31c6-0d51-4b44-9a5e-3f2d1c6a7b8e.local", port: 54400, kind: .host),
                         ICECandidate(foundation: "2", priority: 1686052607, address: "203.0.113.9", port: 61000, kind: .srflx,
                                      related: ("0.0.0.0", 0))],
            endOfCandidates: true)
        return [
            ("offer", Array(offer.text.utf8)),
            ("candidate", Array("candidate:842163049 1 udp 1686052607 203.0.113.9 61000 typ srflx raddr 0.0.0.0 rport 0 generation 0".utf8)),
            ("tcp-candidate", Array("candidate:3 1 TCP 1518280447 192.0.2.7 9 typ host tcptype active".utf8)),
        ]
    }
}
