import Foundation
import Traversal

/// One browser's signalling over the cloud's WebSocket (`/signal`), as a state machine: the page's JSON
/// messages and the hub's `CloudMessage`s in, actions out. The browser is introduced to the camera as a native
/// viewer is (`RendezvousHub.introduce(from:requestID:deviceID:offer:answerKey:lookupAdmitted:)`), its
/// offer carrying the page's SDP (`PeerOffer.sessionDescription`, which marks it as a browser), and the
/// access challenge, the sealed proof and the sealed answer pass through unread.
///
/// ```
///  page                                       cloud                         camera
///   prepare (as the page loads) ───────────────►│
///   ◄── ice{requestID, iceServers}              │  STUN, TURN (REST credentials for this request)
///      (the page makes its peer connection and gathers while the person types)
///   locate{uid} (a whole UID typed; ≤ 4) ──────►│  a look-up (the hub's look-up limit)
///   ◄── located{uid, identityKey, deposit?}     │  (when registered: the page checks the key against the UID meanwhile;
///                                               │   deposit: one of the camera's one-time keys, handed out once)
///  with a deposit (checked: signature, UID, expiry) — one round trip to the camera less:
///   watch{uid, sdp, answerKey, deposited} ─────►│ introduce ── offer{sdp, deposited} ──►│ password check (SharedAccess)
///   ◄── answer{sealed} | refused{reason} | error│◄── answer{sealed SDP} | refuse│
///      (the camera does not hold the key, e.g. it restarted: it challenges, and the page proves as below)
///  without one:
///   watch{uid, sdp, answerKey} (connect) ──────►│ introduce ── offer{sdp} ─────►│
///   ◄── located{uid, identityKey}               │  (the same, for a page that did not locate first)
///   ◄── challenge{challenge}                    │◄── accessChallenge ───────────│ (sockets bound, STUN asked meanwhile)
///   proof{sealed} ─────────────────────────────►│ accessProof ─────────────────►│ password check (SharedAccess)
///   ◄── answer{sealed} | refused{reason} | error│◄── answer{sealed SDP} | refuse│
///   report{…} ─────────────────────────────────►│  (what the page saw: frames, path; logged)
/// ```
///
/// States: `fresh ─prepare─► iced ─watch─► introduced ─challenge─► challenged ─proof─► proved ─answer─► ended`; a watch
/// carrying a deposited proof goes from `iced` straight to `proved` (marked deposited), where a challenge (the camera's
/// fallback) leads to `challenged` as after a plain watch.
///
/// `located` names the key the camera registered with, which is the only key the camera's challenge may carry (the hub
/// forwards no other): the page starts its UID check of it (scrypt, about 100 ms in script) while the person types the
/// password, or while the challenge comes. It is a hint the page acts on only to warm that check; what it trusts is the
/// challenge, checked in full. It tells a page no more than an introduction's challenge would, under the same look-up limit.
///
/// The ICE servers come before the camera is named, so a page gathers its candidates (one TURN allocation: two round
/// trips to the cloud) before the person presses connect; pressing it sends the UID and the offer in one message.
///
/// Each connection introduces once; every message out of order ends it. Messages are limited to
/// ``Limits/messagesPerSecond`` (a burst of ``Limits/messageBurst``).
public struct BrowserSignallingStateMachine: Sendable {
    /// The per-connection bounds.
    public struct Limits: Sendable, Hashable {
        /// Messages a page may send in a burst.
        public var messageBurst = 8
        /// Messages per second a page may sustain after the burst.
        public var messagesPerSecond = 2
        /// `locate`s a page may send before it watches; later ones are not answered.
        public var locatesPerSocket = 4
        /// Defaults: a burst of 8, then 2 per second (one introduction needs 4: prepare, watch, proof, report), 4 locates.
        public init() {}
    }

    /// What the page sends.
    public struct PageMessage: Decodable, Sendable {
        /// `prepare`, `locate`, `watch`, `proof` or `report`.
        public var type: String
        /// `locate`, `watch`: the camera's UID.
        public var uid: String?
        /// `watch`: the page's SDP offer.
        public var sdp: String?
        /// `watch`: the X25519 key (base64) the camera seals its answer to.
        public var answerKey: String?
        /// `watch`: the page's access proof sealed to a deposit it was handed in `located` (`AccessDeposit`).
        public var deposited: DepositedProof?
        /// `proof`: the sealed access proof.
        public var sealed: String?
        /// `report`: what the page saw.
        public var report: BrowserReport?
    }

    /// What to do.
    public enum Action: Sendable {
        /// Send this JSON text to the page.
        case send(String)
        /// Look up the key `deviceID` registered with (one look-up token) and take one of its deposits, then tell the page
        /// (``located(deviceID:cameraKey:deposit:)``).
        case locate(deviceID: DeviceID)
        /// Introduce the browser to `deviceID` through the hub, with its proof sealed to a deposit if it has one.
        case introduce(requestID: String, deviceID: DeviceID, offer: PeerOffer, answerKey: String, deposited: DepositedProof?)
        /// Forward the page's sealed proof.
        case forwardProof(requestID: String, sealed: String)
        /// The page's report, to log.
        case report(BrowserReport)
        /// Close the WebSocket with this status (RFC 6455 §7.4.1) and reason.
        case close(code: UInt16, reason: String)
    }

    /// Where the exchange is.
    enum State: Sendable, Equatable {
        case fresh
        case iced(requestID: String)
        case introduced(requestID: String, deviceID: DeviceID)
        case challenged(requestID: String, deviceID: DeviceID)
        /// The proof went to the camera: through `proof`, or `deposited` with the watch.
        case proved(requestID: String, deviceID: DeviceID, deposited: Bool)
        /// Answered, refused or failed: only a report may follow.
        case ended(requestID: String, deviceID: DeviceID?)
        case closed
    }

    private(set) var state: State = .fresh
    private var limiter: TokenBucketRateLimiter<Int>
    private var locatesLeft: Int
    private let iceServers: @Sendable (String) -> [IceServer]

    /// A page's ICE server, as `RTCPeerConnection` takes it.
    public struct IceServer: Codable, Sendable, Hashable {
        /// `stun:`, `turn:` or `turns:` URLs.
        public var urls: [String]
        /// TURN user name.
        public var username: String?
        /// TURN password.
        public var credential: String?

        /// A server with these URLs and credentials.
        public init(urls: [String], username: String? = nil, credential: String? = nil) {
            self.urls = urls
            self.username = username
            self.credential = credential
        }
    }

    /// A machine for one connection; `iceServers(requestID)` names the page's STUN and TURN servers (with the
    /// request's REST credentials).
    public init(limits: Limits = Limits(), iceServers: @escaping @Sendable (String) -> [IceServer]) {
        self.limiter = TokenBucketRateLimiter(capacity: limits.messageBurst,
                                              refillInterval: .milliseconds(1000 / max(1, limits.messagesPerSecond)))
        self.iceServers = iceServers
        self.locatesLeft = limits.locatesPerSocket
    }

    /// A text message from the page.
    public mutating func page(_ text: String, now: ContinuousClock.Instant, requestID makeRequestID: () -> String) -> [Action] {
        guard state != .closed else { return [] }
        guard limiter.admit(0, now: now) else { return end(1008, "too many messages") }
        guard let message = try? JSONDecoder().decode(PageMessage.self, from: Data(text.utf8)) else {
            return end(1007, "not a signalling message")
        }
        switch (message.type, state) {
        case ("prepare", .fresh):
            let requestID = makeRequestID()
            state = .iced(requestID: requestID)
            return [.send(Self.json(["type": "ice", "requestID": requestID], iceServers: iceServers(requestID)))]
        case ("locate", .iced):
            guard let uid = message.uid, let deviceID = try? DeviceID(uid) else { return end(1007, "not a UID") }
            guard locatesLeft > 0 else { return [] }
            locatesLeft -= 1
            return [.locate(deviceID: deviceID)]
        case ("watch", .iced(let requestID)):
            guard let uid = message.uid, let deviceID = try? DeviceID(uid) else { return end(1007, "not a UID") }
            guard let sdp = message.sdp, let answerKey = message.answerKey else { return end(1007, "watch needs sdp and answerKey") }
            // The viewer's identity key travels in its sealed proof; the offer's is a placeholder of the right size.
            let offer = PeerOffer(identityKey: Data(count: CloudProtocol.publicKeyLength), candidates: [], strategies: [],
                                  sessionDescription: sdp)
            guard (try? CloudMessage.introduce(requestID: requestID, deviceID: deviceID.description, offer: offer,
                                               answerKey: answerKey).validate()) != nil,
                (try? CloudMessage.offer(requestID: requestID, offer: offer, relay: nil, answerKey: answerKey,
                                         deposited: message.deposited).validate()) != nil
            else {
                return end(1007, "the offer breaks the signalling limits")
            }
            state = message.deposited == nil ? .introduced(requestID: requestID, deviceID: deviceID)
                                             : .proved(requestID: requestID, deviceID: deviceID, deposited: true)
            return [.introduce(requestID: requestID, deviceID: deviceID, offer: offer, answerKey: answerKey, deposited: message.deposited)]
        case ("proof", .challenged(let requestID, let deviceID)):
            guard let sealed = message.sealed, sealed.utf8.count <= AccessChallenge.maxSealedProofLength else {
                return end(1007, "a proof needs a sealed proof")
            }
            state = .proved(requestID: requestID, deviceID: deviceID, deposited: false)
            return [.forwardProof(requestID: requestID, sealed: sealed)]
        case ("report", .ended(let requestID, let deviceID)):
            guard var report = message.report else { return end(1007, "a report needs a report") }
            report.requestID = requestID
            report.uid = deviceID?.description
            return [.report(report)] + end(1000, "done")
        default:
            return end(1008, "\(message.type) out of order")
        }
    }

    /// `deviceID` is registered with `cameraKey` (a look-up the page asked for, or the camera the hub introduced its request
    /// to): the page may start checking that key against the UID (`located`), and seal its proof to `deposit` (a look-up's
    /// answer only). Nothing once the page's request is past its introduction, or for another camera than the one introduced.
    public mutating func located(deviceID: DeviceID, cameraKey: Data, deposit: AccessDeposit? = nil) -> [Action] {
        var handed = deposit
        switch state {
        case .iced: break
        case .introduced(_, let introduced) where introduced == deviceID: handed = nil
        default: return []
        }
        return [.send(Self.json(["type": "located", "uid": deviceID.description, "identityKey": cameraKey.base64EncodedString()],
                                deposit: handed))]
    }

    /// A message from the hub for this browser.
    public mutating func cloud(_ message: CloudMessage) -> [Action] {
        switch (message, state) {
        case (.accessChallenge(let id, let challenge), .introduced(let requestID, let deviceID)) where id == requestID,
             // After a deposited proof: the camera does not hold the deposit's key (it restarted, or the key expired or was
             // used), and the page proves live.
             (.accessChallenge(let id, let challenge), .proved(let requestID, let deviceID, true)) where id == requestID:
            state = .challenged(requestID: requestID, deviceID: deviceID)
            guard let data = try? JSONEncoder().encode(challenge), let object = String(data: data, encoding: .utf8) else { return [] }
            return [.send(#"{"type":"challenge","challenge":"# + object + "}")]
        case (.start(let id, _, _, let sealed?), .proved(let requestID, let deviceID, _)) where id == requestID:
            state = .ended(requestID: requestID, deviceID: deviceID)
            return [.send(Self.json(["type": "answer", "sealed": sealed]))]
        case (.error(let id, let code, let text), _) where id == nil || id == requestID:
            let refused = AccessRefusal(rawValue: code) != nil
            state = .ended(requestID: requestID ?? "", deviceID: deviceID)
            return [.send(Self.json(refused ? ["type": "refused", "reason": code, "message": text]
                                             : ["type": "error", "code": code, "message": text]))]
        default:
            return []
        }
    }

    /// The request in flight, if any.
    var requestID: String? {
        switch state {
        case .iced(let id), .introduced(let id, _), .challenged(let id, _), .proved(let id, _, _), .ended(let id, _): id
        case .fresh, .closed: nil
        }
    }

    private var deviceID: DeviceID? {
        switch state {
        case .introduced(_, let d), .challenged(_, let d), .proved(_, let d, _): d
        case .ended(_, let d): d
        case .fresh, .iced, .closed: nil
        }
    }

    private mutating func end(_ code: UInt16, _ reason: String) -> [Action] {
        state = .closed
        return [.close(code: code, reason: reason)]
    }

    /// A JSON object of string fields (and the ICE servers, or a deposit, when given).
    static func json(_ fields: [String: String], iceServers: [IceServer]? = nil, deposit: AccessDeposit? = nil) -> String {
        var object: [String: Any] = fields
        if let deposit {
            object["deposit"] = ["sealingKey": deposit.sealingKey, "expires": deposit.expires, "signature": deposit.signature] as [String: Any]
        }
        if let iceServers {
            object["iceServers"] = iceServers.map { server -> [String: Any] in
                var entry: [String: Any] = ["urls": server.urls]
                if let username = server.username { entry["username"] = username }
                if let credential = server.credential { entry["credential"] = credential }
                return entry
            }
        }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}

/// What a page reports once it watched (or failed to): the figures the test and `Scripts/bench-browser.sh` read.
public struct BrowserReport: Codable, Sendable, Hashable {
    /// The introduction (set by the cloud, not the page).
    public var requestID: String?
    /// The UID watched (set by the cloud).
    public var uid: String?
    /// Frames decoded by WebCodecs.
    public var decoded: Int?
    /// Frames received on the media channel.
    public var received: Int?
    /// `direct` or `relay`.
    public var path: String?
    /// The selected pair's candidate types, e.g. `host→host`.
    public var candidates: String?
    /// How the browser reached its TURN relay when its end of the pair is relayed: `udp`, `tcp` or `tls`.
    public var relayProtocol: String?
    /// From pressing connect to the first decoded frame, in milliseconds.
    public var firstFrameMs: Int?
    /// Whether the page's access proof went with its `watch`, sealed to a deposit the cloud handed out (`AccessDeposit`),
    /// and the camera took it (false: the page proved to a live challenge).
    public var deposited: Bool?
    /// When each step before it was reached, in milliseconds from pressing connect.
    public var phases: BrowserPhases?
    /// Distinct colours in a sample of the canvas (a blank canvas has one).
    public var colours: Int?
    /// The canvas as 16 × 12 cell means (RGB, row by row, base64 of 576 bytes): what the page showed.
    public var thumbnail: String?
    /// The error, when the page did not get video.
    public var error: String?
    /// What the page's status line showed at the end.
    public var shown: String?
}

/// When a page reached each step of watching, in milliseconds from pressing connect (each nil until reached): the
/// breakdown `Scripts/bench-browser.sh` prints. The page prepares the first three as it loads; each is 0 when it was
/// ready before connect was pressed.
public struct BrowserPhases: Codable, Sendable, Hashable {
    /// The signalling WebSocket to the cloud is open.
    public var signalling: Int?
    /// The cloud named the ICE servers (`ice`, the answer to `prepare`).
    public var servers: Int?
    /// The offer is ready: the browser gathered its candidates.
    public var offer: Int?
    /// The camera's access challenge arrived (nil on the deposit path: no challenge comes).
    public var challenge: Int?
    /// The access proof went out (after the challenge's key was checked against the UID), or went with the watch, sealed
    /// to a deposit (``BrowserReport/deposited``).
    public var proof: Int?
    /// The camera's sealed answer arrived (before the page opened it).
    public var sealed: Int?
    /// The camera's sealed answer opened.
    public var answer: Int?
    /// The answer's identity binding checked out.
    public var checked: Int?
    /// ICE connected (`iceConnectionState`).
    public var ice: Int?
    /// DTLS connected (`connectionState`).
    public var dtls: Int?
    /// The camera's media channel opened.
    public var channel: Int?
    /// The first video frame arrived.
    public var received: Int?
    /// The first frame was decoded.
    public var decoded: Int?
}
