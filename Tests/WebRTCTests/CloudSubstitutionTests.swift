import Crypto
import Foundation
import NATLab
import Rendezvous
import Testing
import Traversal
import WebRTC

/// The cloud's own page against a cloud that lies. Chromium loads the viewer page through a ``SignallingProxy`` that
/// plays a malicious cloud (it holds the connection, so it reads and rewrites every signalling message), with a real
/// cloud behind it and two real `trav camera`s: the camera the person watches (UID X) and the attacker's own camera
/// (UID Y, another key, the same password, so that a page that trusted it would get video from it).
///
/// What the attacker can and cannot do, message by message (`BrowserSignalling.swift`, the page's script):
/// - It sees the page's `watch{uid, sdp, answerKey}`: the UID, its offer's SDP and answer key (public), the camera's challenge (public key,
///   one-time sealing key, signature), the sealed proof and the sealed answer, and it can send anything to either side.
/// - It cannot open the proof (sealed to the camera's one-time key) nor the camera's answer (sealed to the page's
///   key), so it never holds the camera's identity binding for this page's offer: the camera answers only after a
///   proof with the password, and the page proves only to a challenge signed over its own UID and answer key. So
///   "the camera's binding with the attacker's fingerprint" does not exist for it to send; what it can send instead
///   is its own camera's genuine answer to the page's offer (sealed again to the page's key, which it saw), carrying
///   the camera's key with its own signature, or its own key with a valid signature over the watched UID.
/// - It holds its own camera's key, so it can sign challenges and bindings naming the watched UID with it, and deposits
///   (`AccessDeposit`) too; the page seals its proof to a deposit only after the same key-behind-UID check, and a
///   proof sealed to the camera's deposit binds the UID, the request and the answer key as a live one does.
///
/// Each attack must end in an `identity:` error shown by the page, no decoded frame, and no password for anyone but
/// the watched camera; the same proxy passing messages unchanged lets the page watch, so the proxy is not what fails.
/// The attacks are real ones: with the page's key-behind-UID check and `travCheckAnswer` taken out of the script,
/// the re-signed challenge hands the attacker the password and the substituted answer shows the decoy's video.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct CloudSubstitutionTests {
    /// Frames the page decodes before it reports, when it watches.
    static let framesWanted = 10

    /// A cloud with its page, the watched camera and the attacker's camera, both `--password` `CloudBrowserTests.password`;
    /// everything stopped and removed after `body`.
    static func withCloudAndTwoCameras(
        _ body: (_ web: BrowserViewerServer, _ watched: (uid: String, camera: ChildProcess),
                 _ decoy: (identity: DeviceIdentity, camera: ChildProcess)) async throws -> Void
    ) async throws {
        try await CloudBrowserTests.withCloud { cloud, web, _, dir in
            let (watchedIdentity, watched) = try await CloudBrowserTests.startCamera(cloud, dir: dir, name: "watched")
            defer {
                watched.kill()
                watched.removeFiles()
            }
            let (decoyIdentity, decoy) = try await CloudBrowserTests.startCamera(cloud, dir: dir, name: "decoy")
            defer {
                decoy.kill()
                decoy.removeFiles()
            }
            try await body(web, (watchedIdentity.deviceID.description, watched), (decoyIdentity, decoy))
        }
    }

    /// Chromium opens the page through a proxy playing `attacker`, watching `uid` with the right password; returns what
    /// the page reported (as the proxy saw it go to the cloud) and the end of Chromium's log.
    static func watch(_ uid: String, through attacker: MaliciousCloud, cloudPort: Int) async throws -> (BrowserReport?, String) {
        let proxy = try await SignallingProxy.start(cloudPort: cloudPort) { direction, text in await attacker.intercept(direction, text) }
        defer { proxy.stop() }
        let password = CloudBrowserTests.password.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        return try await CloudBrowserTests.visit(port: proxy.port, fragment: "uid=\(uid)&password=\(password)&report=\(framesWanted)") {
            await attacker.pageReports.first
        }
    }

    @Test(.enabled(if: BrowserHarness.chromium != nil, "chromium is not installed"),
          .enabled(if: FileManager.default.isExecutableFile(atPath: TravLab.debugTrav), "needs `swift build` (.build/debug/trav)"))
    func thePageWatchesThroughTheProxyWhenItChangesNothing() async throws {
        try await Self.withCloudAndTwoCameras { web, watched, decoy in
            let attacker = MaliciousCloud(.passThrough, watched: watched.uid, decoy: decoy.identity, cloudPort: try #require(web.address.port))
            let (seen, log) = try await Self.watch(watched.uid, through: attacker, cloudPort: try #require(web.address.port))
            let report = try #require(seen, "the page reports through the proxy; chromium: \(log)")
            #expect(report.error == nil, "\(report)")
            #expect((report.decoded ?? 0) >= Self.framesWanted, "frames decoded through the proxy: \(report)")
            #expect(await attacker.depositedFromPage == 1, "the page proved its access to the watched camera, with its watch")
            #expect(report.deposited == true, "\(report)")
        }
    }

    /// The cloud hands the page a deposit of its own (the decoy's key, signed over the watched UID) with `located`: the
    /// page finds the key is not behind the UID, seals nothing to it, and proves to the camera's live challenge instead.
    @Test(.enabled(if: BrowserHarness.chromium != nil, "chromium is not installed"),
          .enabled(if: FileManager.default.isExecutableFile(atPath: TravLab.debugTrav), "needs `swift build` (.build/debug/trav)"))
    func aCloudThatHandsOutADepositOfItsOwnGetsNoProof() async throws {
        try await Self.withCloudAndTwoCameras { web, watched, decoy in
            let attacker = MaliciousCloud(.forgeDeposit, watched: watched.uid, decoy: decoy.identity, cloudPort: try #require(web.address.port))
            let (seen, log) = try await Self.watch(watched.uid, through: attacker, cloudPort: try #require(web.address.port))
            let report = try #require(seen, "the page reports; chromium: \(log)")
            #expect(await attacker.depositsForged == 1, "the forged deposit reached the page")
            #expect(await attacker.depositedFromPage == 0, "nothing sealed to the forged deposit")
            #expect(await attacker.stolenPassword == nil)
            #expect(report.error == nil && report.deposited == false, "the page watched through the live challenge: \(report)")
            #expect(await attacker.proofsFromPage == 1)
        }
    }

    @Test(.enabled(if: BrowserHarness.chromium != nil, "chromium is not installed"),
          .enabled(if: FileManager.default.isExecutableFile(atPath: TravLab.debugTrav), "needs `swift build` (.build/debug/trav)"))
    func aCloudThatIntroducesThePageToAnotherCameraIsRefusedBeforeThePasswordLeaves() async throws {
        try await Self.withCloudAndTwoCameras { web, watched, decoy in
            let cloudPort = try #require(web.address.port)
            // The look-up for X goes to Y: Y's challenge is signed over Y's UID, not the one the page asked for.
            let redirected = MaliciousCloud(.introduceToDecoy(resign: false), watched: watched.uid, decoy: decoy.identity, cloudPort: cloudPort)
            let (plain, plainLog) = try await Self.watch(watched.uid, through: redirected, cloudPort: cloudPort)
            let refused = try #require(plain, "the page reports; chromium: \(plainLog)")
            #expect(refused.error == "identity: bad challenge signature", "\(refused)")
            #expect(refused.shown == refused.error, "the page shows why: \(refused)")
            #expect(refused.decoded == nil)
            #expect(await redirected.proofsFromPage == 0, "the page sealed its password to nobody")
            #expect(await redirected.challengesToPage == 1, "the decoy camera challenged the page")
            #expect(await redirected.challengeKey == decoy.identity.publicKey.rawRepresentation.base64EncodedString(),
                    "the challenge carried the decoy's key")

            // The same, with the challenge signed again by the attacker over X's UID and a sealing key of its own,
            // which would let it open the page's proof and read the password: the key is not behind X.
            let resigned = MaliciousCloud(.introduceToDecoy(resign: true), watched: watched.uid, decoy: decoy.identity, cloudPort: cloudPort)
            let (forged, forgedLog) = try await Self.watch(watched.uid, through: resigned, cloudPort: cloudPort)
            let caught = try #require(forged, "the page reports; chromium: \(forgedLog)")
            #expect(caught.error == "identity: key is not behind the UID", "\(caught)")
            #expect(caught.decoded == nil)
            #expect(await resigned.challengesToPage == 1, "the forged challenge reached the page")
            #expect(await resigned.challengeKey == decoy.identity.publicKey.rawRepresentation.base64EncodedString(),
                    "the forged challenge carried the decoy's key")
            #expect(await resigned.proofsFromPage == 0, "the page sealed its password to nobody")
            #expect(await resigned.stolenPassword == nil)
        }
    }

    @Test(.enabled(if: BrowserHarness.chromium != nil, "chromium is not installed"),
          .enabled(if: FileManager.default.isExecutableFile(atPath: TravLab.debugTrav), "needs `swift build` (.build/debug/trav)"))
    func aCloudThatSubstitutesTheAnswersFingerprintIsRefused() async throws {
        try await Self.withCloudAndTwoCameras { web, watched, decoy in
            let cloudPort = try #require(web.address.port)
            for binding in [MaliciousCloud.BindingKey.watchedCamera, .decoy] {
                let attacker = MaliciousCloud(.substituteAnswer(binding), watched: watched.uid, decoy: decoy.identity, cloudPort: cloudPort)
                let (seen, log) = try await Self.watch(watched.uid, through: attacker, cloudPort: cloudPort)
                let report = try #require(seen, "the page reports (\(binding)); chromium: \(log)")
                let substitution = await attacker.substitution
                let forkError = await attacker.forkError
                #expect(forkError == nil, "the decoy camera answered the page's offer")
                let decoyRequest = try #require(substitution?.decoyRequestID, "the page got the decoy's answer in place of the camera's")
                switch binding {
                case .watchedCamera:
                    // The watched camera's key, the attacker's signature: it does not verify.
                    #expect(report.error == "identity: bad signature", "\(report)")
                    #expect(substitution?.bindingVerifies == false)
                case .decoy:
                    // A signature that holds over X's UID and both fingerprints, by a key that is not behind X.
                    #expect(substitution?.bindingVerifies == true, "the forged binding's signature verifies")
                    #expect(report.error == "identity: key is not behind the UID", "\(report)")
                }
                #expect(report.decoded == nil, "\(report)")
                let proofs = await attacker.proofsFromPage + attacker.depositedFromPage
                #expect(proofs == 1, "the page's one proof went to the watched camera")
                let pageRequest = await attacker.pageRequestID ?? "?"
                let watchedLog = watched.camera.output().stdout
                #expect(watchedLog.contains("browser \(pageRequest) answered"),
                        "the watched camera opened the proof and answered: \(watchedLog.suffix(600))")
                let decoyLog = decoy.camera.output().stdout
                #expect(decoyLog.contains("browser \(decoyRequest) answered"), "the decoy answered the page's offer: \(decoyLog.suffix(600))")
                #expect(!decoyLog.contains("browser \(decoyRequest) connected"), "the page never connected to the decoy: \(decoyLog.suffix(600))")
            }
        }
    }
}

extension CloudSubstitutionTests {
    /// The attacker cannot open the camera's answer, so it cannot swap fingerprints there; it can swap the page's
    /// fingerprint in the offer the camera gets, hoping the camera takes the attacker's certificate for the page's.
    /// The camera signs the fingerprint it got, and the page, checking its own, refuses; the camera, whose ICE
    /// password went sealed to the page, is never reached by the attacker either.
    @Test(.enabled(if: BrowserHarness.chromium != nil, "chromium is not installed"),
          .enabled(if: FileManager.default.isExecutableFile(atPath: TravLab.debugTrav), "needs `swift build` (.build/debug/trav)"))
    func aCloudThatSubstitutesTheOffersFingerprintIsRefused() async throws {
        try await Self.withCloudAndTwoCameras { web, watched, decoy in
            let cloudPort = try #require(web.address.port)
            let attacker = MaliciousCloud(.substituteOfferFingerprint, watched: watched.uid, decoy: decoy.identity, cloudPort: cloudPort)
            let (seen, log) = try await Self.watch(watched.uid, through: attacker, cloudPort: cloudPort)
            let report = try #require(seen, "the page reports; chromium: \(log)")
            #expect(await attacker.offerFingerprintReplaced, "the camera got the attacker's fingerprint")
            #expect(report.error == "identity: bad signature", "\(report)")
            #expect(report.decoded == nil, "\(report)")
            let pageRequest = await attacker.pageRequestID ?? "?"
            let watchedLog = watched.camera.output().stdout
            #expect(watchedLog.contains("browser \(pageRequest) answered"), "the camera answered the altered offer: \(watchedLog.suffix(600))")
            #expect(!watchedLog.contains("browser \(pageRequest) connected"), "nobody connected to the camera: \(watchedLog.suffix(600))")
        }
    }
}

/// A cloud that lies to the page (``SignallingProxy``'s interception), and what it saw on the way.
actor MaliciousCloud {
    /// What it does.
    enum Attack: Sendable {
        /// Nothing: every message passes unchanged.
        case passThrough
        /// `located` carries the decoy's key and a deposit the attacker made with it over the watched UID, so a proof
        /// sealed to it would open with the attacker's key.
        case forgeDeposit
        /// The page's look-up goes to the decoy camera (`watch` names the decoy's UID); with `resign`, the decoy's
        /// challenge is replaced by one the attacker signs with the decoy's key over the watched UID and the page's
        /// answer key, sealed to a key whose private half it holds.
        case introduceToDecoy(resign: Bool)
        /// The watched camera's answer is replaced by the decoy's genuine answer to the page's own offer (the
        /// attacker introduces itself to the decoy with the decoy's password), sealed again to the page's answer
        /// key, its identity binding re-signed by the decoy's key over the watched UID, naming `BindingKey`.
        case substituteAnswer(BindingKey)
        /// The page's offer reaches the camera with another DTLS fingerprint (the attacker's): the camera would
        /// take the attacker's certificate for the page's, so the attacker could watch.
        case substituteOfferFingerprint
    }

    /// The key the substituted answer's binding names.
    enum BindingKey: Sendable, CustomStringConvertible {
        /// The watched camera's (from its challenge), with the decoy's signature.
        case watchedCamera
        /// The decoy's own.
        case decoy

        var description: String { self == .decoy ? "decoy key" : "watched camera's key" }
    }

    /// What a substituted answer carried.
    struct Substitution: Sendable {
        /// The decoy's introduction whose answer replaced the camera's.
        var decoyRequestID: String
        /// Whether the binding's signature verifies over the watched UID and both fingerprints.
        var bindingVerifies: Bool
    }

    let attack: Attack
    let watched: String
    let decoy: DeviceIdentity
    let decoyUID: String
    let cloudPort: Int

    /// Reports the page sent.
    private(set) var pageReports: [BrowserReport] = []
    /// Access proofs the page sent (`proof`, to a live challenge).
    private(set) var proofsFromPage = 0
    /// Access proofs the page sent with its watch, sealed to a deposit.
    private(set) var depositedFromPage = 0
    /// Forged deposits handed to the page.
    private(set) var depositsForged = 0
    /// Challenges that reached the page.
    private(set) var challengesToPage = 0
    /// A password read from a proof sealed to the attacker's key, if the page ever sent one.
    private(set) var stolenPassword: String?
    /// The page's introduction.
    private(set) var pageRequestID: String?
    /// The substituted answer, once sent.
    private(set) var substitution: Substitution?
    /// Why the decoy's answer could not be had, if it could not.
    private(set) var forkError: String?
    /// Whether the offer went on with the attacker's fingerprint.
    private(set) var offerFingerprintReplaced = false

    /// The identity key of the last challenge the page got (after any change).
    private(set) var challengeKey: String?

    private var preparedRequestID: String?
    private var pageAnswerKey: String?
    private var pageOffer: String?
    private var watchedKey: String?
    private var sealingKey: Curve25519.KeyAgreement.PrivateKey?
    private var forgedDepositKey: Curve25519.KeyAgreement.PrivateKey?
    private var decoyAnswer: Task<(answer: SealedAnswer, requestID: String), any Error>?

    init(_ attack: Attack, watched: String, decoy: DeviceIdentity, cloudPort: Int) {
        self.attack = attack
        self.watched = watched
        self.decoy = decoy
        self.decoyUID = decoy.deviceID.description
        self.cloudPort = cloudPort
    }

    /// One signalling message on its way: what goes on instead.
    func intercept(_ direction: SignalDirection, _ text: String) async -> [String] {
        guard var message = try? JSONDecoder().decode(SignalMessage.self, from: Data(text.utf8)) else { return [text] }
        var changed = false
        // UIDs are rewritten both ways: whatever names the decoy reaches the page naming the camera it asked for.
        if case .introduceToDecoy = attack, direction == .toPage, text.contains(decoyUID),
           let renamed = try? JSONDecoder().decode(SignalMessage.self, from: Data(text.replacingOccurrences(of: decoyUID, with: watched).utf8)) {
            message = renamed
            changed = true
        }
        switch (direction, message.type) {
        case (.toCloud, "watch"):
            // The page watches on the socket it prepared last (after a failure it prepares another, unused here).
            pageRequestID = preparedRequestID
            if case .introduceToDecoy = attack {
                message.uid = decoyUID
                changed = true
            }
            pageAnswerKey = message.answerKey
            pageOffer = message.sdp
            if let deposited = message.deposited {
                depositedFromPage += 1
                if let forgedDepositKey, let requestID = pageRequestID, let device = try? DeviceID(watched), let answerKey = message.answerKey,
                   let claim = try? AccessProver.open(deposited: deposited.sealed, with: forgedDepositKey, deviceID: device,
                                                      requestID: requestID, answerKey: answerKey),
                   case .password(let password) = claim.credential {
                    stolenPassword = password
                }
            }
            if case .substituteOfferFingerprint = attack, let sdp = message.sdp {
                let line = "a=fingerprint:sha-256 "
                let attackers = (0..<32).map { _ in String(format: "%02X", UInt8.random(in: 0...255)) }.joined(separator: ":")
                message.sdp = sdp.components(separatedBy: "\r\n").map { $0.hasPrefix(line) ? line + attackers : $0 }.joined(separator: "\r\n")
                offerFingerprintReplaced = message.sdp != sdp
                changed = changed || offerFingerprintReplaced
            }
            if case .substituteAnswer = attack, let sdp = message.sdp {
                let (port, uid, password) = (cloudPort, decoyUID, CloudBrowserTests.password)
                decoyAnswer = Task { try await Self.answer(from: uid, to: sdp, password: password, cloudPort: port) }
            }
        case (.toCloud, "proof"):
            proofsFromPage += 1
            if let sealingKey, let sealed = message.sealed, let requestID = pageRequestID, let device = try? DeviceID(watched),
               let claim = try? AccessProver.open(sealed, with: sealingKey, deviceID: device, requestID: requestID),
               case .password(let password) = claim.credential {
                stolenPassword = password
            }
        case (.toCloud, "report"):
            if let report = message.report { pageReports.append(report) }
        case (.toPage, "ice"):
            preparedRequestID = message.requestID
        case (.toPage, "located"):
            watchedKey = watchedKey ?? message.identityKey
            if case .forgeDeposit = attack, message.deposit != nil, let device = try? DeviceID(watched),
               let made = try? AccessDeposit.make(identity: decoy, deviceID: device, expires: Int(Date().timeIntervalSince1970) + 600) {
                message.identityKey = decoy.publicKey.rawRepresentation.base64EncodedString()
                message.deposit = made.deposit
                forgedDepositKey = made.key
                depositsForged += 1
                changed = true
            }
        case (.toPage, "challenge"):
            challengesToPage += 1
            watchedKey = message.challenge?.identityKey
            if case .introduceToDecoy(resign: true) = attack, let requestID = pageRequestID, let answerKey = pageAnswerKey,
               let device = try? DeviceID(watched),
               let made = try? AccessChallenge.make(identity: decoy, deviceID: device, requestID: requestID, answerKey: answerKey) {
                message.challenge = made.challenge
                sealingKey = made.key
                changed = true
            }
            challengeKey = message.challenge?.identityKey
        case (.toPage, "answer"):
            if case .substituteAnswer(let bindingKey) = attack {
                do {
                    message.sealed = try await substitute(bindingKey)
                    changed = true
                } catch {
                    forkError = "\(error)"
                }
            }
        default:
            break
        }
        return [changed ? message.text : text]
    }

    /// The decoy's answer to the page's offer, its binding re-signed over the watched UID, sealed to the page.
    private func substitute(_ bindingKey: BindingKey) async throws -> String {
        guard let decoyAnswer, let offerSDP = pageOffer, let answerKey = pageAnswerKey, let requestID = pageRequestID,
              let watchedKey, let watchedKeyBytes = Data(base64Encoded: watchedKey) else {
            throw AttackFailed(description: "the page's offer or the camera's challenge was not seen")
        }
        let (opened, decoyRequestID) = try await decoyAnswer.value
        guard let sdp = opened.offer.sessionDescription else { throw AttackFailed(description: "the decoy's answer has no description") }
        let answer = try SessionDescription(parsing: sdp)
        let offer = try SessionDescription(parsing: offerSDP)
        let device = try DeviceID(watched)
        let key = bindingKey == .decoy ? Array(decoy.publicKey.rawRepresentation) : Array(watchedKeyBytes)
        let binding = try IdentityBinding.sign(publicKey: key, deviceID: device.description, cameraFingerprint: answer.fingerprint,
                                               browserFingerprint: offer.fingerprint) { try decoy.signature(for: $0) }
        // The decoy's own SDP, only its binding line replaced: everything else is what a page would connect with.
        let line = "a=\(IdentityBinding.attribute):"
        var forged = opened
        forged.offer.sessionDescription = sdp.components(separatedBy: "\r\n")
            .map { $0.hasPrefix(line) ? line + binding.attributeValue : $0 }.joined(separator: "\r\n")
        substitution = Substitution(
            decoyRequestID: decoyRequestID,
            bindingVerifies: binding.verifies(deviceID: device.description, cameraFingerprint: answer.fingerprint, browserFingerprint: offer.fingerprint))
        return try forged.sealed(to: answerKey, deviceID: device, requestID: requestID)
    }

    /// The attacker's own introduction to its camera `uid` with the page's offer: the camera's answer, opened.
    private static func answer(from uid: String, to offer: String, password: String,
                               cloudPort: Int) async throws -> (answer: SealedAnswer, requestID: String) {
        try await withDeadline(.seconds(30)) {
            try await SignalLink.with(cloudPort: cloudPort) { link in
                let device = try DeviceID(uid)
                try await link.send(SignalMessage(type: "prepare"))
                let ice = try await link.receive()
                guard let requestID = ice.requestID else { throw AttackFailed(description: "ice: \(ice.text)") }
                let answerKey = Curve25519.KeyAgreement.PrivateKey()
                try await link.send(SignalMessage(type: "watch", uid: uid, sdp: offer,
                                                  answerKey: answerKey.publicKey.rawRepresentation.base64EncodedString()))
                var challenged = try await link.receive()
                if challenged.type == "located" { challenged = try await link.receive() }
                guard let challenge = challenged.challenge else { throw AttackFailed(description: "challenge: \(challenged.text)") }
                let (sealed, _) = try await AccessProver(identity: .ephemeral(), credential: .password(password))
                    .prove(challenge, device: device, requestID: requestID, answerKey: answerKey.publicKey)
                try await link.send(SignalMessage(type: "proof", sealed: sealed))
                let answered = try await link.receive()
                guard let answer = answered.sealed else { throw AttackFailed(description: "answer: \(answered.text)") }
                return (try SealedAnswer.open(answer, with: answerKey, deviceID: device, requestID: requestID), requestID)
            }
        }
    }
}

/// The attacker could not carry out its part (the test then fails: the page was not attacked).
struct AttackFailed: Error, CustomStringConvertible {
    var description: String
}
