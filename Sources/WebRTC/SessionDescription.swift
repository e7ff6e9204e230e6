import Foundation

/// Why a session description (or a candidate) was refused; `line` is 1-based, when known.
public struct SDPError: Error, Hashable, CustomStringConvertible {
    /// What kind of problem.
    public enum Code: String, Sendable, Hashable {
        /// Larger than ``SessionDescription/maxSize`` or with more than ``SessionDescription/maxLines`` lines.
        case tooLarge = "too-large"
        /// A line is not `<letter>=<value>`, or a required line is missing or repeated.
        case malformed
        /// No `m=application … UDP/DTLS/SCTP webrtc-datachannel` section, or more than one media section.
        case unsupportedMedia = "unsupported-media"
        /// `ice-ufrag` / `ice-pwd` out of RFC 8839 §5.4's bounds.
        case invalidCredentials = "invalid-credentials"
        /// A fingerprint that is not `sha-256` with 32 colon-separated hex bytes (RFC 8122 §5).
        case invalidFingerprint = "invalid-fingerprint"
        /// A `setup` value outside RFC 8842 §3's, or `sctp-port` / `max-message-size` out of range.
        case invalidAttribute = "invalid-attribute"
        /// A `candidate` attribute that does not parse (RFC 8839 §5.1).
        case invalidCandidate = "invalid-candidate"
    }

    /// The code.
    public var code: Code
    /// What was wrong (never more than a short excerpt of the input).
    public var detail: String
    /// The 1-based line, when known.
    public var line: Int?

    /// An error with a code, detail and line.
    public init(_ code: Code, _ detail: String, line: Int? = nil) {
        self.code = code
        self.detail = detail
        self.line = line
    }

    /// `code: detail (line N)`.
    public var description: String { "\(code.rawValue): \(detail)" + (line.map { " (line \($0))" } ?? "") }

    /// `ALPHA / DIGIT / "+" / "/"` (RFC 8839 §5.1 ice-char).
    static func isICEChar(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == UInt8(ascii: "+") || c == UInt8(ascii: "/")
    }
}

/// The DTLS role a side takes (RFC 8842 §3, `a=setup`).
public enum DTLSSetup: String, Sendable, Hashable {
    /// The offerer lets the answerer choose.
    case actpass
    /// Sends the ClientHello.
    case active
    /// Waits for it.
    case passive

    /// The answerer's role for an offer with this one (RFC 8842 §5.3; RFC 5763 §5 lets the answerer choose): `active`
    /// unless the offerer insists on being active itself.
    public var answer: DTLSSetup { self == .active ? .passive : .active }
}

/// A WebRTC data-channel session description, the subset of SDP (RFC 8866) a browser and a camera
/// exchange for `UDP/DTLS/SCTP webrtc-datachannel` (RFC 8841): ICE credentials and candidates
/// (RFC 8839), the DTLS certificate fingerprint (RFC 8122) and role (RFC 8842), the SCTP port and
/// largest message. Anything else (audio, video, extensions) is ignored when read and never written.
///
/// Parsing is bounded (``maxSize``, ``maxLines``, ``maxCandidates``) and refuses with a typed
/// ``SDPError``; session-level ICE and fingerprint attributes apply when the media section has none.
public struct SessionDescription: Sendable, Hashable {
    /// Largest description accepted, in bytes.
    public static let maxSize = 64 * 1024
    /// Most lines accepted.
    public static let maxLines = 1000
    /// Most candidates kept from one description (more are refused).
    public static let maxCandidates = 64
    /// `ice-ufrag` length bounds (RFC 8839 §5.4: 4–256 ice-chars).
    public static let ufragLengths = 4...256
    /// `ice-pwd` length bounds (RFC 8839 §5.4: 22–256 ice-chars).
    public static let pwdLengths = 22...256
    /// The SCTP port when none is given (RFC 8841 §5.1 leaves it to the offer; 5000 is what browsers use).
    public static let defaultSCTPPort = 5000

    /// The `o=` session id.
    public var sessionID: UInt64
    /// The `o=` version, raised with each new description of the session.
    public var version: UInt64
    /// The `a=mid` of the data-channel section.
    public var mid: String
    /// ICE username fragment.
    public var iceUfrag: String
    /// ICE password.
    public var icePwd: String
    /// The certificate fingerprint's SHA-256 (32 bytes).
    public var fingerprint: [UInt8]
    /// The DTLS role.
    public var setup: DTLSSetup
    /// The SCTP port (`a=sctp-port`).
    public var sctpPort: Int
    /// The largest message the sender of this description accepts (`a=max-message-size`, 0: no limit), if given.
    public var maxMessageSize: Int?
    /// The candidates carried in the description.
    public var candidates: [ICECandidate]
    /// Whether `a=end-of-candidates` was present (no more trickled candidates).
    public var endOfCandidates: Bool
    /// The camera's identity key vouching for its certificate (``IdentityBinding``), in a camera's answer.
    public var identity: IdentityBinding?

    /// A description with these fields.
    public init(sessionID: UInt64, version: UInt64 = 2, mid: String = "0", iceUfrag: String, icePwd: String, fingerprint: [UInt8],
                setup: DTLSSetup, sctpPort: Int = defaultSCTPPort, maxMessageSize: Int? = nil, candidates: [ICECandidate] = [],
                endOfCandidates: Bool = false, identity: IdentityBinding? = nil) {
        self.sessionID = sessionID
        self.version = version
        self.mid = mid
        self.iceUfrag = iceUfrag
        self.icePwd = icePwd
        self.fingerprint = fingerprint
        self.setup = setup
        self.sctpPort = sctpPort
        self.maxMessageSize = maxMessageSize
        self.candidates = candidates
        self.endOfCandidates = endOfCandidates
        self.identity = identity
    }

    /// The description as SDP text, CRLF line ends (RFC 8866 §5), one data-channel section.
    public var text: String {
        var lines = [
            "v=0",
            "o=- \(sessionID) \(version) IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE \(mid)",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "c=IN IP4 0.0.0.0",
            "a=mid:\(mid)",
            "a=ice-ufrag:\(iceUfrag)",
            "a=ice-pwd:\(icePwd)",
            "a=ice-options:trickle",
            "a=fingerprint:sha-256 " + fingerprint.map { hex($0) }.joined(separator: ":"),
            "a=setup:\(setup.rawValue)",
            "a=sctp-port:\(sctpPort)",
        ]
        if let maxMessageSize { lines.append("a=max-message-size:\(maxMessageSize)") }
        if let identity { lines.append("a=\(IdentityBinding.attribute):\(identity.attributeValue)") }
        lines += candidates.map { "a=\($0)" }
        if endOfCandidates { lines.append("a=end-of-candidates") }
        return lines.joined(separator: "\r\n") + "\r\n"
    }

    /// Parses a description; see the type's documentation for what is read.
    ///
    /// - Throws: ``SDPError``.
    public init(parsing sdp: String) throws {
        guard sdp.utf8.count <= Self.maxSize else { throw SDPError(.tooLarge, "\(sdp.utf8.count) bytes") }
        let lines = sdp.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" })
        guard lines.count <= Self.maxLines else { throw SDPError(.tooLarge, "\(lines.count) lines") }
        var session: [String: Substring] = [:]
        var media: [String: Substring] = [:]
        var inData = false
        var sections = 0
        var origin: (UInt64, UInt64)?
        var candidates: [ICECandidate] = []
        var endOfCandidates = false
        for (n, line) in lines.enumerated() {
            let number = n + 1
            guard line.count >= 2, line.utf8.dropFirst().first == UInt8(ascii: "="), let type = line.first, type.isLetter else {
                throw SDPError(.malformed, "not <type>=<value>", line: number)
            }
            let value = line.dropFirst(2)
            switch type {
            case "v" where n == 0:
                guard value == "0" else { throw SDPError(.malformed, "version", line: number) }
            case "v":
                throw SDPError(.malformed, "v= not first", line: number)
            case "o":
                let f = value.split(separator: " ")
                guard f.count == 6, let id = UInt64(f[1]), let version = UInt64(f[2]) else { throw SDPError(.malformed, "origin", line: number) }
                origin = (id, version)
            case "m":
                sections += 1
                let f = value.split(separator: " ")
                inData = f.count >= 4 && f[0] == "application" && f[2] == "UDP/DTLS/SCTP" && f[3] == "webrtc-datachannel"
                guard sections == 1, inData else {
                    throw SDPError(.unsupportedMedia, "only one m=application UDP/DTLS/SCTP webrtc-datachannel section", line: number)
                }
            case "a":
                let (name, attribute) = value.firstIndex(of: ":").map { (String(value[..<$0]), value[value.index(after: $0)...]) }
                    ?? (String(value), Substring(""))
                if name == "candidate" {
                    guard candidates.count < Self.maxCandidates else { throw SDPError(.tooLarge, "more than \(Self.maxCandidates) candidates", line: number) }
                    do {
                        candidates.append(try ICECandidate(parsing: attribute))
                    } catch var e as SDPError {
                        e.line = number
                        throw e
                    }
                } else if name == "end-of-candidates" {
                    endOfCandidates = true
                } else if inData {
                    media[name] = attribute
                } else {
                    session[name] = attribute
                }
            default:
                continue
            }
        }
        guard lines.first?.hasPrefix("v=") == true, let origin else { throw SDPError(.malformed, "no v= first or no o=") }
        guard sections == 1 else { throw SDPError(.unsupportedMedia, "no data-channel section") }
        func attribute(_ name: String) -> Substring? { media[name] ?? session[name] }
        guard let ufrag = attribute("ice-ufrag"), let pwd = attribute("ice-pwd"),
              Self.ufragLengths.contains(ufrag.utf8.count), Self.pwdLengths.contains(pwd.utf8.count),
              ufrag.utf8.allSatisfy(SDPError.isICEChar), pwd.utf8.allSatisfy(SDPError.isICEChar)
        else { throw SDPError(.invalidCredentials, "ice-ufrag 4–256 and ice-pwd 22–256 ice-chars") }
        guard let fingerprintValue = attribute("fingerprint"), let fingerprint = Self.sha256Fingerprint(fingerprintValue) else {
            throw SDPError(.invalidFingerprint, "a=fingerprint:sha-256 with 32 hex bytes")
        }
        guard let setupValue = attribute("setup"), let setup = DTLSSetup(rawValue: String(setupValue)) else {
            throw SDPError(.invalidAttribute, "a=setup must be actpass, active or passive")
        }
        let sctpPort = try media["sctp-port"].map { text -> Int in
            guard let port = Int(text), (1...65535).contains(port) else { throw SDPError(.invalidAttribute, "sctp-port") }
            return port
        } ?? Self.defaultSCTPPort
        let maxMessageSize = try media["max-message-size"].map { text -> Int in
            guard let size = Int(text), size >= 0 else { throw SDPError(.invalidAttribute, "max-message-size") }
            return size
        }
        let mid = media["mid"].map(String.init) ?? "0"
        guard (1...32).contains(mid.utf8.count), mid.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw SDPError(.invalidAttribute, "mid")
        }
        let identity = try attribute(IdentityBinding.attribute).map { value -> IdentityBinding in
            let parts = value.split(separator: " ")
            guard parts.count == 2, let key = Data(base64Encoded: String(parts[0])), key.count == 32,
                  let signature = Data(base64Encoded: String(parts[1])), signature.count == 64 else {
                throw SDPError(.invalidAttribute, "\(IdentityBinding.attribute): a 32-byte key and a 64-byte signature, base64")
            }
            return IdentityBinding(publicKey: Array(key), signature: Array(signature))
        }
        self.init(sessionID: origin.0, version: origin.1, mid: mid, iceUfrag: String(ufrag), icePwd: String(pwd),
                  fingerprint: fingerprint, setup: setup, sctpPort: sctpPort, maxMessageSize: maxMessageSize,
                  candidates: candidates, endOfCandidates: endOfCandidates, identity: identity)
    }

    /// The 32 bytes of `sha-256 AB:CD:…`, or nil.
    static func sha256Fingerprint(_ value: Substring) -> [UInt8]? {
        let parts = value.split(separator: " ")
        guard parts.count == 2, parts[0].lowercased() == "sha-256" else { return nil }
        let bytes = parts[1].split(separator: ":").compactMap { $0.count == 2 ? UInt8($0, radix: 16) : nil }
        return bytes.count == 32 && parts[1].split(separator: ":").count == 32 ? bytes : nil
    }
}

/// Two upper-case hex digits.
private func hex(_ byte: UInt8) -> String {
    let digits = Array("0123456789ABCDEF")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
}
