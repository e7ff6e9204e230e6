import Crypto
import Foundation

/// Presence: how a registered camera stays reachable without holding a TLS connection (UDP datagrams, or the same
/// datagrams on a TCP stream where UDP is blocked).
///
/// ```
///  camera (behind NAT)                         cloud
///    │ TLS: register … prove ───────────────────►│
///    │◄─────────── registered{…, presence{port, session, key, keepaliveSeconds}}
///    │ UDP keepalive{session, n=1} ─────────────►│  authenticated, counter fresh: the camera is present,
///    │◄──────────────────────── UDP ack{m=1}     │  reachable at the datagram's source (its NAT mapping)
///    │ (ack seen, no introduction for a while: closes TLS; the cloud keeps the registration)
///    │ UDP keepalive{n=2} every keepaliveSeconds ►│  (also holds the NAT mapping open)
///    │◄──────────────────────── UDP ack{m=2}     │
///    │                                           │◄──── introduce (viewer)
///    │◄──────────────────────── UDP wake{m=3}     │  offer held until the camera is back on TLS
///    │ TLS: register … prove (known key: one signature check) ►│
///    │◄──────────── registered, offer{…}          │  … answer, start as on any TLS session
///    │◄──────────────────────── UDP ack{m}        │  (a cloud restarted on its store: the session comes back
///    │                                           │   from the keepalive itself, its identifier a ticket)
///    │◄──────────────── UDP unknownSession{n}     │  (a restarted cloud without it: register over TLS again)
///    │◄──────────── UDP goAway{m, retryAfter}     │  (the cloud shuts down gracefully: register over TLS
///    │                                           │   again after retryAfter, at the next node if several)
///    │ UDP leave{n} (the camera stops) ─────────►│  session and registration end now (no answer)
///    │ no ack for ``CameraPresenceStateMachine/Configuration/livenessTimeout``: TLS again (presence lost)
///    │ no ack to the first ``CameraPresenceStateMachine/Configuration/probes`` keepalives (UDP blocked, or a busy
///    │ cloud dropped them): the same datagrams go on a presence stream instead ───────────────────────────────┐
///    │ TCP to the signalling port: keepalive{n} ─────────────────────────────►│  first byte 1, not a TLS record's
///    │◄──────────────────────── ack{m} on the stream (wake, goAway alike)   │  (20–23): a stream, no TLS
///    │ (ack seen, no introduction for a while: closes TLS, keeps the stream: a socket, no TLS state, at the cloud)
///    │ UDP probes go on, one keepalive interval apart doubling to five minutes; an ack over UDP moves the camera
///    │ there and it closes the stream; a stream that closes is opened again after a jittered backoff
/// ```
///
/// A stream carries the datagrams back to back, each as long as its kind says (``PresenceStreamFramer``); the cloud
/// closes it at the first datagram that does not authenticate (a reliable stream carries nothing else from a camera)
/// and when its keepalives stop for the session timeout. It counts against the signalling port's connection limits.
///
/// A datagram is 41 bytes, sealed with ChaCha20-Poly1305 (RFC 8439) under the session key the cloud
/// sent inside the authenticated TLS registration; the header is the associated data:
///
/// ```
///  0      1                  17                 25                 41
///  ┌──────┬──────────────────┬──────────────────┬──────────────────┐
///  │ kind │ session (16 B)   │ counter (u64 BE) │ Poly1305 tag     │
///  └──────┴──────────────────┴──────────────────┴──────────────────┘
///  nonce = direction (u32 BE: 1 camera→cloud, 2 cloud→camera) ‖ counter
/// ```
///
/// `goAway` alone is 45 bytes: its header has a retry-after in milliseconds (u32 BE) after the counter,
/// authenticated with the rest. The cloud sends it unasked, once, to each camera present over UDP alone when it
/// shuts down gracefully (cameras on TLS get `busy` there), so the fleet returns spread over the retry-afters
/// instead of after the liveness timeout all at once.
///
/// A cloud with a store issues session identifiers as tickets (`Rendezvous/PresenceTickets`): the identifier
/// carries the camera's UID masked under a secret the store keeps and the key is derived from it, so after a crash
/// and restart the cloud takes each camera back from its next keepalive, with no TLS registration: a fleet
/// returns within one keepalive interval for one HMAC and one Poly1305 check per camera. The camera does
/// nothing different.
///
/// Each sender's counter starts at 1 and only grows; a receiver accepts a counter only above the highest
/// it accepted, so a replayed or reordered datagram is dropped (keepalives are an interval apart, so
/// a dropped reordered one costs nothing). The cloud answers authenticated keepalives with an ack of
/// the same size and wakes only the address of the last one; a keepalive for a session it does not hold
/// gets an `unknownSession` of the same size (rate-limited per source like everything): no amplification.
/// That one answer is unauthenticated, so someone who sees a camera's keepalives can make it register
/// again over TLS — no more than dropping its datagrams would do — and a restarted cloud gets its
/// fleet back within one keepalive interval, spread over it, instead of after the liveness timeout.
public enum PresenceProtocol {
    /// Bytes of every presence datagram.
    public static let datagramLength = headerLength + tagLength
    /// Bytes of the header (kind, session, counter), authenticated as associated data.
    public static let headerLength = 1 + PresenceSessionID.length + 8
    /// Bytes of the Poly1305 tag (RFC 8439 §2.8).
    public static let tagLength = 16
    /// Bytes of the session key (ChaCha20, RFC 8439 §2.3).
    public static let keyLength = 32
    /// Default keepalive interval the cloud announces: under the 30 s after which many NATs forget a UDP mapping.
    public static let defaultKeepaliveSeconds = 20
}

/// What a presence datagram says.
public enum PresenceDatagramKind: UInt8, Sendable, Hashable {
    /// Camera → cloud: still here, at this address.
    case keepalive = 1
    /// Cloud → camera: keepalive received.
    case ack = 2
    /// Cloud → camera: a viewer asks for you; connect over TLS now.
    case wake = 3
    /// Cloud → camera, not authenticated (the cloud has no key for it): this cloud holds no such session
    /// (it restarted, or the session expired); register over TLS again. It echoes the keepalive's counter,
    /// and the camera believes it only for its own session and its latest keepalive.
    case unknownSession = 4
    /// Cloud → camera, authenticated: this cloud is shutting down; register over TLS again after the
    /// retry-after the datagram carries (``PresenceDatagram/retryAfterMilliseconds``), at the next node if several.
    case goAway = 5
    /// Camera → cloud, authenticated like a keepalive: the camera stops (its owner turned it off, or it registers
    /// anew); the cloud ends the session and, once the camera holds no TLS connection either, its registration at
    /// once, instead of after the session's timeout. Not answered.
    case leave = 6

    /// The nonce prefix of this kind's direction.
    var direction: UInt32 { self == .keepalive || self == .leave ? 1 : 2 }
}

/// A presence session's identifier, random per registration (16 bytes).
public struct PresenceSessionID: Sendable, Hashable, CustomStringConvertible {
    /// Bytes of the identifier.
    public static let length = 16
    /// The first 8 bytes, big-endian.
    public let high: UInt64
    /// The last 8 bytes, big-endian.
    public let low: UInt64

    /// An identifier from its two halves.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// A fresh random identifier drawn from `generator`.
    public static func random(using generator: inout some RandomNumberGenerator) -> PresenceSessionID {
        PresenceSessionID(high: generator.next(), low: generator.next())
    }

    /// The identifier from its 16 bytes, or nil for another length.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.length else { return nil }
        let array = Array(bytes)
        high = UInt64(bigEndianBytes: array[0..<8])
        low = UInt64(bigEndianBytes: array[8..<16])
    }

    /// The 16 bytes.
    public var bytes: [UInt8] { high.bigEndianBytes + low.bigEndianBytes }

    /// The identifier as base64, as ``PresenceGrant`` carries it.
    public var description: String { Data(bytes).base64EncodedString() }

}

/// What the cloud hands a registered camera for UDP presence, inside the TLS `registered` message.
public struct PresenceGrant: Codable, Sendable, Hashable {
    /// The cloud's presence UDP port, on the address the camera dialled.
    public var port: Int
    /// The session identifier (base64 of ``PresenceSessionID/length`` bytes).
    public var session: String
    /// The session key (base64 of ``PresenceProtocol/keyLength`` bytes); it never leaves TLS.
    public var key: String
    /// How often the camera sends a keepalive, in seconds.
    public var keepaliveSeconds: Int

    /// A grant for `session` under `key`.
    public init(port: Int, session: PresenceSessionID, key: SymmetricKey, keepaliveSeconds: Int) {
        self.port = port
        self.session = session.description
        self.key = key.withUnsafeBytes { Data($0).base64EncodedString() }
        self.keepaliveSeconds = keepaliveSeconds
    }

    /// The session identifier and key, checked.
    ///
    /// - Throws: ``CloudProtocolError`` `.invalidField` naming the field.
    public func decoded() throws -> (session: PresenceSessionID, key: SymmetricKey) {
        let id = try CloudMessage.base64(session, length: PresenceSessionID.length, field: "presence.session")
        let key = try CloudMessage.base64(key, length: PresenceProtocol.keyLength, field: "presence.key")
        return (PresenceSessionID(bytes: id)!, SymmetricKey(data: key))
    }

    /// Checks every field (port, lengths, interval).
    func validate() throws {
        guard (1...65535).contains(port) else { throw CloudProtocolError.invalid("presence.port", "out of range") }
        guard (1...CloudProtocol.maxKeepaliveSeconds).contains(keepaliveSeconds) else {
            throw CloudProtocolError.invalid("presence.keepaliveSeconds", "out of range")
        }
        _ = try decoded()
    }
}

/// One presence datagram: sealing and opening (pure: bytes in, values or a typed error out).
public struct PresenceDatagram: Sendable, Hashable {
    /// What it says.
    public var kind: PresenceDatagramKind
    /// Whose session.
    public var session: PresenceSessionID
    /// The sender's counter (nonce and replay protection).
    public var counter: UInt64
    /// ``PresenceDatagramKind/goAway``: when to register again, in milliseconds (0 for other kinds).
    public var retryAfterMilliseconds: UInt32

    /// A datagram to seal.
    public init(kind: PresenceDatagramKind, session: PresenceSessionID, counter: UInt64, retryAfterMilliseconds: UInt32 = 0) {
        self.kind = kind
        self.session = session
        self.counter = counter
        self.retryAfterMilliseconds = kind == .goAway ? retryAfterMilliseconds : 0
    }

    /// Bytes of a datagram of `kind`: ``PresenceProtocol/datagramLength``, and 4 more for the retry-after of `goAway`.
    public static func length(of kind: PresenceDatagramKind) -> Int {
        PresenceProtocol.datagramLength + (kind == .goAway ? 4 : 0)
    }

    /// The header bytes: kind, session, counter (and a `goAway`'s retry-after).
    var header: [UInt8] {
        let retryAfter: [UInt8] = kind == .goAway ? retryAfterMilliseconds.bigEndianBytes : []
        return [kind.rawValue] + session.bytes + counter.bigEndianBytes + retryAfter
    }

    /// The 12-byte ChaCha20-Poly1305 nonce: direction ‖ counter.
    var nonce: ChaChaPoly.Nonce {
        try! ChaChaPoly.Nonce(data: kind.direction.bigEndianBytes + counter.bigEndianBytes)
    }

    /// The ``PresenceDatagramKind/unknownSession`` answer to this keepalive: its session and counter, no tag.
    public var unknownSessionAnswer: [UInt8] {
        PresenceDatagram(kind: .unknownSession, session: session, counter: counter).header
            + [UInt8](repeating: 0, count: PresenceProtocol.tagLength)
    }

    /// The datagram's ``PresenceProtocol/datagramLength`` bytes, authenticated under `key`.
    public func sealed(with key: SymmetricKey) -> [UInt8] {
        let header = header
        let box = try! ChaChaPoly.seal(Data(), using: key, nonce: nonce, authenticating: header)
        return header + Array(box.tag)
    }

    /// Reads the header without authenticating it (to find the session's key).
    ///
    /// - Throws: ``PresenceError`` `.malformed` for a wrong length or an unknown kind.
    public static func peek(_ bytes: some Collection<UInt8>) throws -> PresenceDatagram {
        guard bytes.count >= PresenceProtocol.datagramLength else {
            throw PresenceError(code: .malformed, detail: "\(bytes.count) bytes, not \(PresenceProtocol.datagramLength)")
        }
        let array = Array(bytes)
        guard let kind = PresenceDatagramKind(rawValue: array[0]) else {
            throw PresenceError(code: .malformed, detail: "unknown kind \(array[0]) at offset 0")
        }
        guard array.count == length(of: kind) else {
            throw PresenceError(code: .malformed, detail: "\(array.count) bytes, not \(length(of: kind)) for \(kind)")
        }
        let session = PresenceSessionID(bytes: array[1..<17])!
        let counter = UInt64(bigEndianBytes: array[17..<25])
        let retryAfter = kind == .goAway ? UInt32(bigEndianBytes: array[25..<29]) : 0
        return PresenceDatagram(kind: kind, session: session, counter: counter, retryAfterMilliseconds: retryAfter)
    }

    /// Reads and authenticates a datagram under `key`.
    ///
    /// - Throws: ``PresenceError`` `.malformed`, or `.unauthenticated` when the tag does not verify.
    public static func open(_ bytes: some Collection<UInt8>, with key: SymmetricKey) throws -> PresenceDatagram {
        let datagram = try peek(bytes)
        let array = Array(bytes)
        let headerLength = array.count - PresenceProtocol.tagLength
        do {
            let box = try ChaChaPoly.SealedBox(
                nonce: datagram.nonce, ciphertext: Data(), tag: Data(array[headerLength...]))
            _ = try ChaChaPoly.open(box, using: key, authenticating: Array(array[0..<headerLength]))
        } catch {
            throw PresenceError(code: .unauthenticated, detail: "tag of \(datagram.kind) does not verify")
        }
        return datagram
    }
}

/// Cuts a presence stream (TCP) into its datagrams: a stream carries the same datagrams as UDP, back to back, each
/// as long as its kind says (``PresenceDatagram/length(of:)``), so no length prefix is needed. At most one partial
/// datagram is held (under 64 bytes), whatever the peer sends.
public struct PresenceStreamFramer: Sendable {
    private var partial: [UInt8] = []

    /// An empty framer.
    public init() {}

    /// Bytes of a datagram held until the rest arrives.
    public var heldBytes: Int { partial.count }

    /// Feeds `bytes` and calls `deliver` with each whole datagram, in order.
    ///
    /// - Throws: ``PresenceError`` `.malformed` when a datagram starts with an unknown kind (the stream is then
    ///   unusable: where the next datagram starts cannot be known); nothing after it is delivered.
    public mutating func feed(_ bytes: some Collection<UInt8>, _ deliver: ([UInt8]) throws -> Void) throws {
        var rest = bytes[...]
        while !rest.isEmpty {
            if partial.isEmpty {
                guard let kind = PresenceDatagramKind(rawValue: rest.first!) else {
                    throw PresenceError(code: .malformed, detail: "unknown kind \(rest.first!) on a presence stream")
                }
                let length = PresenceDatagram.length(of: kind)
                if rest.count >= length {
                    try deliver(Array(rest.prefix(length)))
                    rest = rest.dropFirst(length)
                    continue
                }
                partial.reserveCapacity(length)
            }
            let length = PresenceDatagram.length(of: PresenceDatagramKind(rawValue: partial.first ?? rest.first!)!)
            let taken = rest.prefix(length - partial.count)
            partial.append(contentsOf: taken)
            rest = rest.dropFirst(taken.count)
            if partial.count == length {
                let whole = partial
                partial = []
                try deliver(whole)
            }
        }
    }
}

/// Why a presence datagram was dropped.
public struct PresenceError: CodedError, Hashable {
    /// A stable reason code (also the `reason` of the drop metric).
    public struct Code: ErrorCode {
        /// The code's stable name.
        public let name: String
        /// Wrong length or unknown kind.
        public static let malformed = Code(name: "malformed")
        /// No such session (never granted, expired or replaced).
        public static let unknownSession = Code(name: "unknown-session")
        /// The tag does not verify under the session's key.
        public static let unauthenticated = Code(name: "unauthenticated")
        /// A counter not above the highest accepted: a replay or a reordered datagram.
        public static let replayed = Code(name: "replayed")
        /// A kind this side never receives (e.g. a wake sent to the cloud).
        public static let unexpectedKind = Code(name: "unexpected-kind")
        /// The source sent more than its rate allows.
        public static let rateLimited = Code(name: "rate-limited")
    }

    /// What went wrong.
    public let code: Code
    /// Where and why.
    public let detail: String

    /// An error with a code and detail.
    public init(code: Code, detail: String) {
        self.code = code
        self.detail = detail
    }
}
