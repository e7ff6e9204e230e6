import Crypto
import Foundation
import NIOCore

/// The cloud's signalling protocol: JSON messages, each framed by a 4-byte big-endian length.
///
/// ```
///  camera                      cloud                        viewer
///    │ register{deviceID,key} ──►│                              │
///    │◄── challenge{nonce}       │                              │
///    │ prove{signature} ────────►│  (Ed25519 over CloudProtocol.registrationMessage)
///    │◄── registered{observed…, presence?}  (UDP presence: ``PresenceProtocol``)
///    │ deposit{deposits} ───────►│  one-time keys for browsers' proofs ahead of time (``AccessDeposit``)
///    │ ping ────────────────────►│ ◄──── introduce{requestID, deviceID, offer, answerKey}
///    │◄── pong                   │                              │
///    │◄── offer{requestID, offer, relay?, requester, answerKey, deposited?}
///    │    (deposited: a browser's proof sealed to a deposit; the camera answers at once, or challenges if the key is unknown)
///    │ accessChallenge{requestID, challenge} ►│ accessChallenge ──────►│  (``AccessChallenge``)
///    │◄── accessProof{requestID, sealed}      │◄── accessProof{sealed} │
///    │ answer{requestID, offer, sealed} ►│  (or refuse{requestID, reason}, decline{requestID})
///    │◄── start{requestID}       │ start{requestID, sealed} ───►│  (both at once)
///    │                           │ error{requestID?, code, message} on any failure
///    │        … while the session is relayed, before the grant expires (either side) …
///    │ renewRelay{requestID, relay} ─►│◄── renewRelay{requestID, relay} (a brief connection)
///    │◄── relayRenewed{requestID, relay} ──relayRenewed{requestID, relay} ─►│
/// ```
///
/// The camera's answer (its addresses) and the relay grant reach the viewer only sealed to the
/// viewer's `answerKey` (``SealedAnswer``, HPKE), and only after the camera has checked the viewer's
/// sealed access proof (``AccessChallenge``): the cloud forwards them without reading them, forwards
/// no answer before it has carried the proof, and answers an `introduce` without an `answerKey`
/// `unavailable` for every UID, online or not, before any look-up.
///
/// A relay grant renews itself: the cloud checks its HMAC under the relay secret and its expiry, and
/// issues the same label with a later expiry, so renewal needs no state and no registration.
///
/// Every message is validated on receipt (``CloudMessage/validate()``): sizes, counts, key
/// lengths. A frame longer than ``maxFrameSize`` closes the connection.
public enum CloudProtocol {
    /// The ALPN protocol ID of signalling (RFC 7301 §3.1): the cloud's TLS port also carries TURN (`stun.turn`,
    /// RFC 7443 §2) and picks by ALPN; a client that offers none gets signalling too.
    public static let alpnProtocol = "trav/1"
    /// Largest frame body accepted or sent, in bytes (64 KiB); a longer length prefix closes the connection.
    public static let maxFrameSize = 64 * 1024
    /// Bytes of the big-endian length prefix in front of each frame.
    public static let lengthPrefixSize = 4
    /// Domain-separation label of the registration signature.
    public static let registrationDomain = "trav/cloud-register/v1"
    /// Bytes of the registration challenge nonce.
    public static let nonceLength = 32
    /// Bytes of an Ed25519 public key.
    public static let publicKeyLength = 32
    /// Bytes of an Ed25519 signature.
    public static let signatureLength = 64
    /// Longest request ID (letters, digits, `-`, `_`).
    public static let maxRequestIDLength = 64
    /// Longest string field not limited more tightly (addresses, names, detail values).
    public static let maxShortStringLength = 256
    /// Longest error message.
    public static let maxMessageLength = 512
    /// Most strategy ids one offer may list.
    public static let maxStrategies = 32
    /// Most `detail` entries one candidate may carry.
    public static let maxCandidateDetails = 8
    /// Most relay URLs one grant may carry.
    public static let maxRelayURLs = 8
    /// Largest keepalive interval the cloud may announce, in seconds.
    public static let maxKeepaliveSeconds = 3600
    /// Largest retry-after a `busy` answer may carry (an hour).
    public static let maxRetryAfterMilliseconds = 3_600_000
    /// Bytes of an `answerKey`: an X25519 public key.
    public static let answerKeyLength = 32
    /// Longest `sealed` answer (base64 text); a frame holds at most ``maxFrameSize`` anyway.
    public static let maxSealedAnswerLength = 60 * 1024

    /// The bytes a camera signs to prove it holds its device key:
    /// `domain ‖ 0x00 ‖ nonce ‖ deviceID (UTF-8) ‖ 0x00 ‖ cloud name (UTF-8)`.
    ///
    /// The cloud name is the name the camera dialled (not anything from TLS), so a signature made
    /// for one cloud is useless at another.
    public static func registrationMessage(nonce: Data, deviceID: String, cloudName: String) -> Data {
        var bytes = Data(registrationDomain.utf8)
        bytes.append(0)
        bytes.append(nonce)
        bytes.append(contentsOf: Array(deviceID.utf8))
        bytes.append(0)
        bytes.append(contentsOf: Array(cloudName.utf8))
        return bytes
    }
}

/// One signalling message; on the wire a JSON object whose `type` field names the case.
public enum CloudMessage: Sendable, Hashable, Codable {
    /// Camera → cloud: "I am this UID, with this key" (`publicKey` base64, 32 bytes).
    case register(deviceID: String, publicKey: String)
    /// Cloud → camera: sign this nonce (base64, ``CloudProtocol/nonceLength`` bytes).
    case challenge(nonce: String)
    /// Camera → cloud: the Ed25519 signature (base64) of ``CloudProtocol/registrationMessage(nonce:deviceID:cloudName:)``.
    case prove(signature: String)
    /// Cloud → camera: registered; its control connection comes from `observedAddress`; ping every `keepaliveSeconds`;
    /// with `presence`, it may keep its presence over UDP instead and close this connection (``PresenceProtocol``).
    case registered(observedAddress: String, keepaliveSeconds: Int, presence: PresenceGrant? = nil)
    /// Keepalive request (either direction).
    case ping
    /// Keepalive answer.
    case pong
    /// Viewer → cloud: introduce me to `deviceID` with `offer`; the camera seals its answer to
    /// `answerKey` (base64 X25519 public key, ``SealedAnswer``). Without one, every UID is `unavailable`.
    case introduce(requestID: String, deviceID: String, offer: PeerOffer, answerKey: String? = nil)
    /// Cloud → camera: a viewer's offer, and the IP address the cloud saw the viewer's request come from
    /// (over TCP, so not spoofed): the one address the camera may probe beyond its ``ProbeBudget``;
    /// `answerKey` is the viewer's, to seal the answer to; `deposited`, a browser's access proof sealed to one of the
    /// camera's ``AccessDeposit``s, stands for the challenge and proof exchange.
    case offer(requestID: String, offer: PeerOffer, relay: RelayGrant?, requester: String? = nil, answerKey: String? = nil,
               deposited: DepositedProof? = nil)
    /// Camera → cloud: the camera's answer to an offer: `offer` carries only its identity key (the
    /// cloud checks it is the registered one); its candidates and the relay grant are in `sealed`.
    case answer(requestID: String, offer: PeerOffer, sealed: String? = nil)
    /// Camera → cloud → viewer: prove access first (``AccessChallenge``); the cloud checks its
    /// identity key is the registered one and forwards it to the introduction's viewer only.
    case accessChallenge(requestID: String, challenge: AccessChallenge)
    /// Viewer → cloud → camera: the viewer's credential, sealed to the challenge's one-time key
    /// (``AccessProver``); accepted once per introduction, after its challenge.
    case accessProof(requestID: String, sealed: String)
    /// Camera → cloud: the proof failed; the viewer hears an `error` with `reason`'s code.
    case refuse(requestID: String, reason: AccessRefusal)
    /// Camera → cloud: the camera declines an offer.
    case decline(requestID: String)
    /// Cloud → both: start now; the viewer's copy carries the camera's `sealed` answer (``SealedAnswer``).
    /// `answer` and `relay` in clear are not sent to viewers (older fields, still decoded).
    case start(requestID: String, answer: PeerOffer?, relay: RelayGrant?, sealed: String? = nil)
    /// Either direction: a request failed, or the connection is about to close.
    case error(requestID: String?, code: String, message: String)
    /// Camera or viewer → cloud: renew this unexpired relay grant (same label, later expiry).
    case renewRelay(requestID: String, relay: RelayGrant)
    /// Cloud → camera or viewer: the renewed grant.
    case relayRenewed(requestID: String, relay: RelayGrant)
    /// Camera → cloud: one-time keys a browser may seal its access proof to before the camera hears of it
    /// (``AccessDeposit``; 1…``AccessDeposit/maxPerMessage``); the cloud answers bad ones with an `error` (no request ID).
    case deposit(deposits: [AccessDeposit])
    /// Cloud → client: the cloud cannot take this request now and closes; come back after
    /// `retryAfterMilliseconds` (1…``CloudProtocol/maxRetryAfterMilliseconds``), not sooner.
    case busy(retryAfterMilliseconds: Int)

    /// The `type` field's value for this case.
    public var type: String {
        switch self {
        case .register: "register"
        case .challenge: "challenge"
        case .prove: "prove"
        case .registered: "registered"
        case .ping: "ping"
        case .pong: "pong"
        case .introduce: "introduce"
        case .offer: "offer"
        case .answer: "answer"
        case .accessChallenge: "accessChallenge"
        case .accessProof: "accessProof"
        case .refuse: "refuse"
        case .decline: "decline"
        case .start: "start"
        case .error: "error"
        case .renewRelay: "renewRelay"
        case .relayRenewed: "relayRenewed"
        case .busy: "busy"
        case .deposit: "deposit"
        }
    }

    private enum Key: String, CodingKey {
        case type, deviceID, publicKey, nonce, signature, observedAddress, keepaliveSeconds, presence
        case requestID, offer, relay, requester, answer, code, message, retryAfterMilliseconds, answerKey, sealed
        case challenge, reason, deposited, deposits
    }

    /// Decodes a message from its JSON object; an unknown `type` is a decoding error.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        let type = try c.decode(String.self, forKey: .type)
        switch type {
        case "register":
            self = .register(
                deviceID: try c.decode(String.self, forKey: .deviceID), publicKey: try c.decode(String.self, forKey: .publicKey))
        case "challenge": self = .challenge(nonce: try c.decode(String.self, forKey: .nonce))
        case "prove": self = .prove(signature: try c.decode(String.self, forKey: .signature))
        case "registered":
            self = .registered(
                observedAddress: try c.decode(String.self, forKey: .observedAddress),
                keepaliveSeconds: try c.decode(Int.self, forKey: .keepaliveSeconds),
                presence: try c.decodeIfPresent(PresenceGrant.self, forKey: .presence))
        case "ping": self = .ping
        case "pong": self = .pong
        case "introduce":
            self = .introduce(
                requestID: try c.decode(String.self, forKey: .requestID),
                deviceID: try c.decode(String.self, forKey: .deviceID), offer: try c.decode(PeerOffer.self, forKey: .offer),
                answerKey: try c.decodeIfPresent(String.self, forKey: .answerKey))
        case "offer":
            self = .offer(
                requestID: try c.decode(String.self, forKey: .requestID), offer: try c.decode(PeerOffer.self, forKey: .offer),
                relay: try c.decodeIfPresent(RelayGrant.self, forKey: .relay),
                requester: try c.decodeIfPresent(String.self, forKey: .requester),
                answerKey: try c.decodeIfPresent(String.self, forKey: .answerKey),
                deposited: try c.decodeIfPresent(DepositedProof.self, forKey: .deposited))
        case "answer":
            self = .answer(
                requestID: try c.decode(String.self, forKey: .requestID), offer: try c.decode(PeerOffer.self, forKey: .offer),
                sealed: try c.decodeIfPresent(String.self, forKey: .sealed))
        case "accessChallenge":
            self = .accessChallenge(
                requestID: try c.decode(String.self, forKey: .requestID), challenge: try c.decode(AccessChallenge.self, forKey: .challenge))
        case "accessProof":
            self = .accessProof(requestID: try c.decode(String.self, forKey: .requestID), sealed: try c.decode(String.self, forKey: .sealed))
        case "refuse":
            self = .refuse(requestID: try c.decode(String.self, forKey: .requestID), reason: try c.decode(AccessRefusal.self, forKey: .reason))
        case "decline": self = .decline(requestID: try c.decode(String.self, forKey: .requestID))
        case "start":
            self = .start(
                requestID: try c.decode(String.self, forKey: .requestID),
                answer: try c.decodeIfPresent(PeerOffer.self, forKey: .answer),
                relay: try c.decodeIfPresent(RelayGrant.self, forKey: .relay),
                sealed: try c.decodeIfPresent(String.self, forKey: .sealed))
        case "error":
            self = .error(
                requestID: try c.decodeIfPresent(String.self, forKey: .requestID),
                code: try c.decode(String.self, forKey: .code), message: try c.decode(String.self, forKey: .message))
        case "renewRelay":
            self = .renewRelay(requestID: try c.decode(String.self, forKey: .requestID), relay: try c.decode(RelayGrant.self, forKey: .relay))
        case "relayRenewed":
            self = .relayRenewed(requestID: try c.decode(String.self, forKey: .requestID), relay: try c.decode(RelayGrant.self, forKey: .relay))
        case "busy": self = .busy(retryAfterMilliseconds: try c.decode(Int.self, forKey: .retryAfterMilliseconds))
        case "deposit": self = .deposit(deposits: try c.decode([AccessDeposit].self, forKey: .deposits))
        default:
            throw DecodingError.dataCorruptedError(forKey: .type, in: c, debugDescription: "unknown message type")
        }
    }

    /// Encodes the message as one JSON object with a `type` field.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(type, forKey: .type)
        switch self {
        case .register(let deviceID, let publicKey):
            try c.encode(deviceID, forKey: .deviceID)
            try c.encode(publicKey, forKey: .publicKey)
        case .challenge(let nonce): try c.encode(nonce, forKey: .nonce)
        case .prove(let signature): try c.encode(signature, forKey: .signature)
        case .registered(let observedAddress, let keepaliveSeconds, let presence):
            try c.encode(observedAddress, forKey: .observedAddress)
            try c.encode(keepaliveSeconds, forKey: .keepaliveSeconds)
            try c.encodeIfPresent(presence, forKey: .presence)
        case .ping, .pong: break
        case .introduce(let requestID, let deviceID, let offer, let answerKey):
            try c.encode(requestID, forKey: .requestID)
            try c.encode(deviceID, forKey: .deviceID)
            try c.encode(offer, forKey: .offer)
            try c.encodeIfPresent(answerKey, forKey: .answerKey)
        case .offer(let requestID, let offer, let relay, let requester, let answerKey, let deposited):
            try c.encode(requestID, forKey: .requestID)
            try c.encode(offer, forKey: .offer)
            try c.encodeIfPresent(relay, forKey: .relay)
            try c.encodeIfPresent(requester, forKey: .requester)
            try c.encodeIfPresent(answerKey, forKey: .answerKey)
            try c.encodeIfPresent(deposited, forKey: .deposited)
        case .answer(let requestID, let offer, let sealed):
            try c.encode(requestID, forKey: .requestID)
            try c.encode(offer, forKey: .offer)
            try c.encodeIfPresent(sealed, forKey: .sealed)
        case .accessChallenge(let requestID, let challenge):
            try c.encode(requestID, forKey: .requestID)
            try c.encode(challenge, forKey: .challenge)
        case .accessProof(let requestID, let sealed):
            try c.encode(requestID, forKey: .requestID)
            try c.encode(sealed, forKey: .sealed)
        case .refuse(let requestID, let reason):
            try c.encode(requestID, forKey: .requestID)
            try c.encode(reason, forKey: .reason)
        case .decline(let requestID): try c.encode(requestID, forKey: .requestID)
        case .start(let requestID, let answer, let relay, let sealed):
            try c.encode(requestID, forKey: .requestID)
            try c.encodeIfPresent(answer, forKey: .answer)
            try c.encodeIfPresent(relay, forKey: .relay)
            try c.encodeIfPresent(sealed, forKey: .sealed)
        case .error(let requestID, let code, let message):
            try c.encodeIfPresent(requestID, forKey: .requestID)
            try c.encode(code, forKey: .code)
            try c.encode(message, forKey: .message)
        case .renewRelay(let requestID, let relay), .relayRenewed(let requestID, let relay):
            try c.encode(requestID, forKey: .requestID)
            try c.encode(relay, forKey: .relay)
        case .busy(let retryAfterMilliseconds):
            try c.encode(retryAfterMilliseconds, forKey: .retryAfterMilliseconds)
        case .deposit(let deposits):
            try c.encode(deposits, forKey: .deposits)
        }
    }

    /// Checks every field against the protocol's limits.
    ///
    /// - Throws: ``CloudProtocolError`` `.invalidField` naming the message type and field.
    public func validate() throws {
        switch self {
        case .register(let deviceID, let publicKey):
            try check(deviceID: deviceID)
            _ = try Self.base64(publicKey, length: CloudProtocol.publicKeyLength, field: "register.publicKey")
        case .challenge(let nonce):
            _ = try Self.base64(nonce, length: CloudProtocol.nonceLength, field: "challenge.nonce")
        case .prove(let signature):
            _ = try Self.base64(signature, length: CloudProtocol.signatureLength, field: "prove.signature")
        case .registered(let observedAddress, let keepaliveSeconds, let presence):
            try Self.check(observedAddress, max: CloudProtocol.maxShortStringLength, field: "registered.observedAddress")
            guard (1...CloudProtocol.maxKeepaliveSeconds).contains(keepaliveSeconds) else {
                throw CloudProtocolError.invalid("registered.keepaliveSeconds", "out of range")
            }
            try presence?.validate()
        case .ping, .pong: break
        case .introduce(let requestID, let deviceID, let offer, let answerKey):
            try Self.check(requestID: requestID)
            try check(deviceID: deviceID)
            try offer.validate(field: "introduce.offer")
            if let answerKey { _ = try Self.base64(answerKey, length: CloudProtocol.answerKeyLength, field: "introduce.answerKey") }
        case .offer(let requestID, let offer, let relay, let requester, let answerKey, let deposited):
            try Self.check(requestID: requestID)
            try offer.validate(field: "offer.offer")
            try relay?.validate(field: "offer.relay")
            if let requester { try Self.check(requester, max: CloudProtocol.maxShortStringLength, field: "offer.requester") }
            if let answerKey { _ = try Self.base64(answerKey, length: CloudProtocol.answerKeyLength, field: "offer.answerKey") }
            try deposited?.validate(field: "offer.deposited")
        case .answer(let requestID, let offer, let sealed):
            try Self.check(requestID: requestID)
            try offer.validate(field: "answer.offer")
            if let sealed { try Self.check(sealed: sealed, field: "answer.sealed") }
        case .accessChallenge(let requestID, let challenge):
            try Self.check(requestID: requestID)
            try challenge.validate(field: "accessChallenge.challenge")
        case .accessProof(let requestID, let sealed):
            try Self.check(requestID: requestID)
            guard !sealed.isEmpty, sealed.utf8.count <= AccessChallenge.maxSealedProofLength, Data(base64Encoded: sealed) != nil else {
                throw CloudProtocolError.invalid("accessProof.sealed", "not base64 of at most \(AccessChallenge.maxSealedProofLength) characters")
            }
        case .refuse(let requestID, _), .decline(let requestID):
            try Self.check(requestID: requestID)
        case .start(let requestID, let answer, let relay, let sealed):
            try Self.check(requestID: requestID)
            try answer?.validate(field: "start.answer")
            try relay?.validate(field: "start.relay")
            if let sealed { try Self.check(sealed: sealed, field: "start.sealed") }
        case .error(let requestID, let code, let message):
            if let requestID { try Self.check(requestID: requestID) }
            guard !code.isEmpty, code.utf8.count <= CloudProtocol.maxRequestIDLength,
                code.utf8.allSatisfy({ Self.isCodeByte($0) })
            else { throw CloudProtocolError.invalid("error.code", "not a kebab-case code") }
            try Self.check(message, max: CloudProtocol.maxMessageLength, field: "error.message")
        case .renewRelay(let requestID, let relay), .relayRenewed(let requestID, let relay):
            try Self.check(requestID: requestID)
            try relay.validate(field: "\(type).relay")
        case .busy(let retryAfterMilliseconds):
            guard (1...CloudProtocol.maxRetryAfterMilliseconds).contains(retryAfterMilliseconds) else {
                throw CloudProtocolError.invalid("busy.retryAfterMilliseconds", "out of range")
            }
        case .deposit(let deposits):
            guard (1...AccessDeposit.maxPerMessage).contains(deposits.count) else {
                throw CloudProtocolError.invalid("deposit.deposits", "not 1…\(AccessDeposit.maxPerMessage) deposits")
            }
            for (index, deposit) in deposits.enumerated() { try deposit.validate(field: "deposit.deposits[\(index)]") }
        }
    }

    /// Decodes base64 of exactly `length` bytes, or throws ``CloudProtocolError`` naming `field`.
    public static func base64(_ text: String, length: Int, field: String) throws -> Data {
        guard text.utf8.count <= (length + 2) / 3 * 4, let data = Data(base64Encoded: text), data.count == length else {
            throw CloudProtocolError.invalid(field, "not base64 of \(length) bytes")
        }
        return data
    }

    /// Checks a request ID: 1…``CloudProtocol/maxRequestIDLength`` of `[A-Za-z0-9_-]`.
    static func check(requestID: String) throws {
        let bytes = requestID.utf8
        guard !bytes.isEmpty, bytes.count <= CloudProtocol.maxRequestIDLength,
            bytes.allSatisfy({ isCodeByte($0) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) || $0 == UInt8(ascii: "_") })
        else { throw CloudProtocolError.invalid("requestID", "must be 1…\(CloudProtocol.maxRequestIDLength) of [A-Za-z0-9_-]") }
    }

    /// A lower-case letter, digit or dash.
    static func isCodeByte(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
            || byte == UInt8(ascii: "-")
    }

    /// Checks a sealed answer: non-empty base64 text of at most ``CloudProtocol/maxSealedAnswerLength``.
    static func check(sealed: String, field: String) throws {
        guard !sealed.isEmpty, sealed.utf8.count <= CloudProtocol.maxSealedAnswerLength, Data(base64Encoded: sealed) != nil else {
            throw CloudProtocolError.invalid(field, "not base64 of at most \(CloudProtocol.maxSealedAnswerLength) characters")
        }
    }

    /// Checks a string's length in UTF-8 bytes.
    static func check(_ text: String, max: Int, field: String) throws {
        guard text.utf8.count <= max else { throw CloudProtocolError.invalid(field, "longer than \(max) bytes") }
    }

    private func check(deviceID: String) throws {
        guard deviceID.utf8.count <= CloudProtocol.maxShortStringLength, (try? DeviceID(deviceID)) != nil else {
            throw CloudProtocolError.invalid("\(type).deviceID", "not a device ID")
        }
    }
}

extension PeerOffer {
    /// Checks key length, candidate and strategy counts and string lengths.
    func validate(field: String) throws {
        guard identityKey.count == CloudProtocol.publicKeyLength else {
            throw CloudProtocolError.invalid("\(field).identityKey", "must be \(CloudProtocol.publicKeyLength) bytes")
        }
        guard candidates.count <= PeerOffer.maxCandidates else {
            throw CloudProtocolError.invalid("\(field).candidates", "more than \(PeerOffer.maxCandidates)")
        }
        guard strategies.count <= CloudProtocol.maxStrategies else {
            throw CloudProtocolError.invalid("\(field).strategies", "more than \(CloudProtocol.maxStrategies)")
        }
        if let sessionDescription {
            try CloudMessage.check(sessionDescription, max: PeerOffer.maxSessionDescriptionLength, field: "\(field).sessionDescription")
        }
        let limit = CloudProtocol.maxShortStringLength
        for strategy in strategies { try CloudMessage.check(strategy, max: limit, field: "\(field).strategies") }
        for (index, candidate) in candidates.enumerated() {
            let name = "\(field).candidates[\(index)]"
            for text in [candidate.strategy, candidate.transport, candidate.address] {
                try CloudMessage.check(text, max: limit, field: name)
            }
            guard candidate.detail.count <= CloudProtocol.maxCandidateDetails else {
                throw CloudProtocolError.invalid("\(name).detail", "more than \(CloudProtocol.maxCandidateDetails) entries")
            }
            for (key, value) in candidate.detail {
                try CloudMessage.check(key, max: limit, field: "\(name).detail")
                try CloudMessage.check(value, max: limit, field: "\(name).detail")
            }
        }
    }
}

extension RelayGrant {
    /// Checks URL count and string lengths.
    func validate(field: String) throws {
        guard urls.count <= CloudProtocol.maxRelayURLs else {
            throw CloudProtocolError.invalid("\(field).urls", "more than \(CloudProtocol.maxRelayURLs)")
        }
        for text in urls + [username, password] {
            try CloudMessage.check(text, max: CloudProtocol.maxShortStringLength, field: field)
        }
    }
}

/// Why bytes from the network are not a valid signalling message.
public struct CloudProtocolError: CodedError, Hashable {
    /// A stable reason code.
    public struct Code: ErrorCode {
        /// The code's stable name.
        public let name: String
        /// A length prefix above ``CloudProtocol/maxFrameSize``.
        public static let frameTooLarge = Code(name: "frame-too-large")
        /// The frame is not a JSON message of a known type.
        public static let malformed = Code(name: "malformed")
        /// A field breaks a limit (length, count, encoding).
        public static let invalidField = Code(name: "invalid-field")
    }

    /// What went wrong.
    public let code: Code
    /// Which field or offset, and why.
    public let detail: String

    /// An error with a code and detail.
    public init(code: Code, detail: String) {
        self.code = code
        self.detail = detail
    }

    static func invalid(_ field: String, _ why: String) -> CloudProtocolError {
        CloudProtocolError(code: .invalidField, detail: "\(field): \(why)")
    }
}

/// Splits a byte stream into length-prefixed frames and decodes and validates each message.
public struct CloudFrameDecoder: ByteToMessageDecoder {
    /// Decoded, validated messages.
    public typealias InboundOut = CloudMessage

    /// A decoder.
    public init() {}

    /// Decodes one frame if a whole one is buffered.
    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
        guard length <= CloudProtocol.maxFrameSize else {
            throw CloudProtocolError(code: .frameTooLarge, detail: "length prefix \(length) > \(CloudProtocol.maxFrameSize)")
        }
        guard buffer.readableBytes >= CloudProtocol.lengthPrefixSize + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: CloudProtocol.lengthPrefixSize)
        let body = buffer.readSlice(length: Int(length))!
        context.fireChannelRead(NIOAny(try Self.message(from: body)))
        return .continue
    }

    /// Parses and validates one frame body.
    public static func message(from body: ByteBuffer) throws -> CloudMessage {
        let message: CloudMessage
        do {
            message = try JSONDecoder().decode(CloudMessage.self, from: Data(body.readableBytesView))
        } catch {
            throw CloudProtocolError(code: .malformed, detail: "frame of \(body.readableBytes) bytes is not a message")
        }
        try message.validate()
        return message
    }
}

/// Encodes messages as JSON frames with a 4-byte big-endian length prefix.
public struct CloudFrameEncoder: MessageToByteEncoder {
    /// Messages to send.
    public typealias OutboundIn = CloudMessage

    /// An encoder.
    public init() {}

    /// Writes one frame; a message above ``CloudProtocol/maxFrameSize`` is refused.
    public func encode(data: CloudMessage, out: inout ByteBuffer) throws {
        let body = try JSONEncoder().encode(data)
        guard body.count <= CloudProtocol.maxFrameSize else {
            throw CloudProtocolError(code: .frameTooLarge, detail: "outgoing \(data.type) of \(body.count) bytes")
        }
        out.writeInteger(UInt32(body.count))
        out.writeBytes(body)
    }
}

/// Why a camera refused a viewer's access proof (``CloudMessage/refuse(requestID:reason:)``); the
/// raw value is the code of the `error` the viewer hears.
public enum AccessRefusal: String, Codable, Sendable, Hashable {
    /// The credential does not grant access.
    case accessDenied = "access-denied"
    /// Too many attempts (``PasswordAttemptLimits``); try later.
    case rateLimited = "rate-limited"

    /// The error a viewer raises for this refusal.
    var traversalCode: TraversalError.Code { self == .rateLimited ? .rateLimited : .accessDenied }
}

/// Why a cloud request failed; the code is also the `code` of the wire's `error` message.
public struct CloudError: CodedError, Hashable {
    /// A stable reason code (wire `error.code` values are codes with the same name).
    public struct Code: ErrorCode {
        /// The code's stable name.
        public let name: String
        /// Creates a code from its wire name.
        public init(name: String) { self.name = name }
        /// The device is unknown, offline or declined (deliberately indistinguishable).
        public static let unavailable = Code(name: "unavailable")
        /// Too many requests from this source; try later.
        public static let rateLimited = Code(name: "rate-limited")
        /// The request broke the protocol.
        public static let badRequest = Code(name: "bad-request")
        /// No answer in time.
        public static let timeout = Code(name: "timeout")
        /// Registration was refused: the signature or the key does not match the UID.
        public static let unauthorized = Code(name: "unauthorized")
        /// The cloud could not be reached or the connection was lost.
        public static let connectionFailed = Code(name: "connection-failed")
        /// The TLS handshake failed (untrusted certificate, wrong name).
        public static let tlsFailed = Code(name: "tls-failed")
        /// The cloud sent something that breaks the protocol.
        public static let protocolViolation = Code(name: "protocol-violation")
        /// The cloud's resources are exhausted (too many pending requests).
        public static let overloaded = Code(name: "overloaded")
        /// The camera checked the viewer's access proof and refused it (``AccessRefusal/accessDenied``).
        public static let accessDenied = Code(name: "access-denied")
    }

    /// What went wrong.
    public let code: Code
    /// Why (never a key).
    public let detail: String
    /// When the cloud asked to be tried again, not sooner (a `busy` answer); `nil` otherwise.
    public let retryAfter: Duration?

    /// An error with a code and detail, and the cloud's retry-after if it gave one.
    public init(code: Code, detail: String, retryAfter: Duration? = nil) {
        self.code = code
        self.detail = detail
        self.retryAfter = retryAfter
    }
}
