import Foundation
import Rendezvous
import Testing
import Traversal

/// A page's signalling, without sockets: the order of the exchange, what reaches the hub, the rate limit.
struct BrowserSignallingStateMachineTests {
    static let uid = DeviceIdentity.generate().deviceID
    static let answerKey = Data(repeating: 9, count: 32).base64EncodedString()

    static func machine(_ limits: BrowserSignallingStateMachine.Limits = .init()) -> BrowserSignallingStateMachine {
        BrowserSignallingStateMachine(limits: limits) { requestID in [.init(urls: ["turn:127.0.0.1:3479?transport=udp"], username: "1:\(requestID)", credential: "p")] }
    }

    /// The page's `watch`: the UID with its offer.
    static var watch: String { json(["type": "watch", "uid": uid.description, "sdp": "v=0\r\n", "answerKey": answerKey]) }

    static func json(_ object: [String: String]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }

    @Test func aPageIsIntroducedChallengedAndAnsweredInOrder() throws {
        var m = Self.machine()
        let now = ContinuousClock.now
        // A proof or report before anything is out of order; so is a watch before the page prepared.
        var unprepared = m
        let watchFirst = unprepared.page(Self.json(["type": "watch", "uid": Self.uid.description, "sdp": "v=0\r\n", "answerKey": Self.answerKey]), now: now) { "x" }
        #expect(watchFirst.contains { if case .close(1008, _) = $0 { true } else { false } })
        let ice = m.page(Self.json(["type": "prepare"]), now: now) { "r1" }
        guard case .send(let text)? = ice.first else { Issue.record("\(ice)"); return }
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(object["type"] as? String == "ice" && object["requestID"] as? String == "r1")
        #expect(((object["iceServers"] as? [[String: Any]])?.first?["username"] as? String) == "1:r1", "REST credentials for this request")

        // A second prepare on the same socket is out of order: one introduction per socket.
        var twice = m
        let again = twice.page(Self.json(["type": "prepare"]), now: now) { "r9" }
        #expect(again.contains { if case .close(1008, _) = $0 { true } else { false } })
        let introduced = m.page(Self.json(["type": "watch", "uid": Self.uid.description.lowercased(), "sdp": "v=0\r\n",
                                           "answerKey": Self.answerKey]), now: now) { "unused" }
        guard case .introduce(let requestID, let deviceID, let offer, let key, let deposited)? = introduced.first else { Issue.record("\(introduced)"); return }
        #expect(requestID == "r1" && deviceID == Self.uid && key == Self.answerKey && deposited == nil)
        #expect(offer.sessionDescription == "v=0\r\n", "the offer carries the SDP, which marks the viewer as a browser")

        // The hub names the camera's registered key for this request only, and only before its challenge.
        let cameraKey = Data(repeating: 7, count: 32)
        guard case .send(let locatedText)? = m.located(deviceID: Self.uid, cameraKey: cameraKey).first else { Issue.record("no located"); return }
        #expect(locatedText.contains(#""type":"located""#) && locatedText.contains(cameraKey.base64EncodedString()))
        #expect(m.located(deviceID: DeviceIdentity.generate().deviceID, cameraKey: cameraKey).isEmpty, "another camera than the one introduced")

        // A proof before the challenge is out of order and ends the connection.
        var early = m
        let earlyActions = early.page(Self.json(["type": "proof", "sealed": "AAAA"]), now: now) { "x" }
        #expect(earlyActions.contains { if case .close = $0 { true } else { false } })

        let (challenge, _) = try AccessChallenge.make(identity: .generate(), deviceID: Self.uid, requestID: "r1", answerKey: Self.answerKey)
        let forwarded = m.cloud(.accessChallenge(requestID: "r1", challenge: challenge))
        guard case .send(let challengeText)? = forwarded.first else { Issue.record("\(forwarded)"); return }
        #expect(challengeText.contains(#""type":"challenge""#) && challengeText.contains(#""challenge":{"#))
        // A challenge for another request is not this page's.
        let stray = m.cloud(.accessChallenge(requestID: "r2", challenge: challenge))
        #expect(stray.isEmpty)

        #expect(m.located(deviceID: Self.uid, cameraKey: cameraKey).isEmpty, "challenged: the challenge itself carries the key")
        let proved = m.page(Self.json(["type": "proof", "sealed": "c2VhbGVk"]), now: now) { "x" }
        guard case .forwardProof("r1", "c2VhbGVk")? = proved.first else { Issue.record("\(proved)"); return }
        let answered = m.cloud(.start(requestID: "r1", answer: nil, relay: nil, sealed: "YW5zd2Vy"))
        guard case .send(let answerText)? = answered.first else { Issue.record("\(answered)"); return }
        #expect(answerText.contains(#""type":"answer""#) && answerText.contains("YW5zd2Vy"))

        let reported = m.page(#"{"type":"report","report":{"decoded":31,"path":"direct"}}"#, now: now) { "x" }
        guard case .report(let report)? = reported.first else { Issue.record("\(reported)"); return }
        #expect(report.decoded == 31 && report.requestID == "r1" && report.uid == Self.uid.description, "the cloud, not the page, names the request")
        #expect(reported.contains { if case .close(1000, _) = $0 { true } else { false } })
    }

    /// Before it watches, a page may look up the key behind a UID it was typed, a few times (a corrected typo), each a look-up.
    @Test func aPageLocatesAFewTimesBeforeItWatches() {
        var m = Self.machine()
        let now = ContinuousClock.now
        let early = m.page(Self.json(["type": "locate", "uid": Self.uid.description]), now: now) { "x" }
        #expect(early.contains { if case .close(1008, _) = $0 { true } else { false } }, "before prepare: out of order")
        var p = Self.machine()
        _ = p.page(Self.json(["type": "prepare"]), now: now) { "r1" }
        var looked: [DeviceID] = []
        for i in 0..<6 {
            for action in p.page(Self.json(["type": "locate", "uid": Self.uid.description]), now: now + .seconds(i), requestID: { "x" }) {
                if case .locate(let d) = action { looked.append(d) }
            }
        }
        #expect(looked == Array(repeating: Self.uid, count: BrowserSignallingStateMachine.Limits().locatesPerSocket))
        guard case .send(let text)? = p.located(deviceID: Self.uid, cameraKey: Data(count: 32)).first else { Issue.record("no located"); return }
        #expect(text.contains(#""uid":"\#(Self.uid.description)""#))
        var bad = p
        let notUID = bad.page(Self.json(["type": "locate", "uid": "TRAV-nope"]), now: now + .seconds(9)) { "x" }
        #expect(notUID.contains { if case .close(1007, _) = $0 { true } else { false } })
        // Watching still works after locating.
        let watched = p.page(Self.watch, now: now + .seconds(10)) { "x" }
        #expect(watched.contains { if case .introduce = $0 { true } else { false } })
        #expect(p.page(Self.json(["type": "locate", "uid": Self.uid.description]), now: now + .seconds(11)) { "x" }
            .contains { if case .close(1008, _) = $0 { true } else { false } }, "after watch: out of order")
    }

    @Test func aRefusalReachesThePageAsRefused() {
        var m = Self.machine()
        let now = ContinuousClock.now
        _ = m.page(Self.json(["type": "prepare"]), now: now) { "r1" }
        _ = m.page(Self.watch, now: now) { "x" }
        let refused = m.cloud(.error(requestID: "r1", code: AccessRefusal.accessDenied.rawValue, message: "the camera refused the credential"))
        guard case .send(let text)? = refused.first else { Issue.record("\(refused)"); return }
        #expect(text.contains(#""type":"refused""#) && text.contains("access-denied"))
        var u = Self.machine()
        _ = u.page(Self.json(["type": "prepare"]), now: now) { "r2" }
        let unavailable = u.cloud(.error(requestID: "r2", code: "unavailable", message: "device unavailable"))
        guard case .send(let t)? = unavailable.first else { Issue.record("\(unavailable)"); return }
        #expect(t.contains(#""type":"error""#))
    }

    @Test func badInputAndFloodsCloseTheSocket() {
        let now = ContinuousClock.now
        let isInvalid = { (actions: [BrowserSignallingStateMachine.Action]) in actions.contains { if case .close(1007, _) = $0 { true } else { false } } }
        var garbage = Self.machine()
        let garbageActions = garbage.page("not json", now: now) { "x" }
        #expect(isInvalid(garbageActions))
        var notUID = Self.machine()
        _ = notUID.page(Self.json(["type": "prepare"]), now: now) { "r" }
        let notUIDActions = notUID.page(Self.json(["type": "watch", "uid": "TRAV-nope", "sdp": "v=0\r\n", "answerKey": Self.answerKey]), now: now) { "x" }
        #expect(isInvalid(notUIDActions))
        var tooLong = Self.machine()
        _ = tooLong.page(Self.json(["type": "prepare"]), now: now) { "r" }
        let huge = String(repeating: "a", count: PeerOffer.maxSessionDescriptionLength + 1)
        let tooLongActions = tooLong.page(Self.json(["type": "watch", "uid": Self.uid.description, "sdp": huge, "answerKey": Self.answerKey]), now: now) { "x" }
        #expect(isInvalid(tooLongActions), "an SDP over the limit is refused")
        // The burst, then the rate (2 per second by default): the next message at once closes with 1008; later it passes.
        var limits = BrowserSignallingStateMachine.Limits()
        limits.messageBurst = 1
        var flood = Self.machine(limits)
        _ = flood.page(Self.json(["type": "prepare"]), now: now) { "r" }
        let flooded = flood.page(Self.watch, now: now) { "x" }
        #expect(flooded.contains { if case .close(1008, "too many messages") = $0 { true } else { false } })
        var patient = Self.machine(limits)
        _ = patient.page(Self.json(["type": "prepare"]), now: now) { "r" }
        let waited = patient.page(Self.watch, now: now + .milliseconds(600)) { "x" }
        #expect(waited.contains { if case .introduce = $0 { true } else { false } })
    }

    /// A `watch` carrying a proof sealed to a deposit, as the page sends it.
    static func depositedWatch(sealed: String = "c2VhbGVk") -> String {
        let object: [String: Any] = ["type": "watch", "uid": uid.description, "sdp": "v=0\r\n", "answerKey": answerKey,
                                     "deposited": ["sealingKey": Data(repeating: 4, count: 32).base64EncodedString(), "sealed": sealed]]
        return String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }

    /// A page that located the camera gets one deposit with `located`; its watch then carries the proof, and the page is
    /// answered without a challenge.
    @Test func aWatchWithADepositedProofIsIntroducedAsProvedAndAnswered() throws {
        var m = Self.machine()
        let now = ContinuousClock.now
        _ = m.page(Self.json(["type": "prepare"]), now: now) { "r1" }
        let camera = DeviceIdentity.generate()
        let (deposit, _) = try AccessDeposit.make(identity: camera, deviceID: Self.uid, expires: 1_800_000_000)
        guard case .send(let text)? = m.located(deviceID: Self.uid, cameraKey: camera.publicKey.rawRepresentation, deposit: deposit).first else {
            Issue.record("no located")
            return
        }
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let handed = try #require(object["deposit"] as? [String: Any], "the deposit goes with located: \(text)")
        #expect(handed["sealingKey"] as? String == deposit.sealingKey && handed["signature"] as? String == deposit.signature
                && handed["expires"] as? Int == deposit.expires)

        let introduced = m.page(Self.depositedWatch(), now: now) { "x" }
        guard case .introduce("r1", Self.uid, _, Self.answerKey, let deposited?)? = introduced.first else { Issue.record("\(introduced)"); return }
        #expect(deposited.sealed == "c2VhbGVk")
        // Proved already: a proof message is out of order, and the hub's located for the request carries nothing.
        #expect(m.located(deviceID: Self.uid, cameraKey: camera.publicKey.rawRepresentation, deposit: deposit).isEmpty)
        var early = m
        #expect(early.page(Self.json(["type": "proof", "sealed": "AAAA"]), now: now) { "x" }.contains { if case .close(1008, _) = $0 { true } else { false } })
        let answered = m.cloud(.start(requestID: "r1", answer: nil, relay: nil, sealed: "YW5zd2Vy"))
        guard case .send(let answerText)? = answered.first else { Issue.record("\(answered)"); return }
        #expect(answerText.contains(#""type":"answer""#))
        // A deposit in an introduction's located (a page that watched without locating) is not handed to the page.
        var plain = Self.machine()
        _ = plain.page(Self.json(["type": "prepare"]), now: now) { "r2" }
        _ = plain.page(Self.watch, now: now) { "x" }
        guard case .send(let plainText)? = plain.located(deviceID: Self.uid, cameraKey: camera.publicKey.rawRepresentation, deposit: deposit).first
        else { Issue.record("no located"); return }
        #expect(!plainText.contains("deposit"))
    }

    /// The camera does not hold the deposit's key (it restarted): it challenges, and the page proves as without a deposit.
    @Test func aCameraWithoutTheDepositsKeyFallsBackToALiveChallenge() throws {
        var m = Self.machine()
        let now = ContinuousClock.now
        _ = m.page(Self.json(["type": "prepare"]), now: now) { "r1" }
        _ = m.page(Self.depositedWatch(), now: now) { "x" }
        let (challenge, _) = try AccessChallenge.make(identity: .generate(), deviceID: Self.uid, requestID: "r1", answerKey: Self.answerKey)
        let forwarded = m.cloud(.accessChallenge(requestID: "r1", challenge: challenge))
        guard case .send(let challengeText)? = forwarded.first else { Issue.record("\(forwarded)"); return }
        #expect(challengeText.contains(#""type":"challenge""#))
        // Only once: a second challenge is not forwarded.
        #expect(m.cloud(.accessChallenge(requestID: "r1", challenge: challenge)).isEmpty)
        let proved = m.page(Self.json(["type": "proof", "sealed": "c2VhbGVk"]), now: now) { "x" }
        guard case .forwardProof("r1", "c2VhbGVk")? = proved.first else { Issue.record("\(proved)"); return }
        let answered = m.cloud(.start(requestID: "r1", answer: nil, relay: nil, sealed: "YW5zd2Vy"))
        #expect(answered.contains { if case .send(let t) = $0 { t.contains(#""type":"answer""#) } else { false } })

        // A plain watch's proof cannot be followed by a second challenge either.
        var plain = Self.machine()
        _ = plain.page(Self.json(["type": "prepare"]), now: now) { "r2" }
        _ = plain.page(Self.watch, now: now) { "x" }
        _ = plain.cloud(.accessChallenge(requestID: "r2", challenge: challenge))
        _ = plain.page(Self.json(["type": "proof", "sealed": "c2VhbGVk"]), now: now) { "x" }
        #expect(plain.cloud(.accessChallenge(requestID: "r2", challenge: challenge)).isEmpty)
    }

    @Test func aDepositedProofOverTheLimitsClosesTheSocket() {
        let now = ContinuousClock.now
        var m = Self.machine()
        _ = m.page(Self.json(["type": "prepare"]), now: now) { "r1" }
        let huge = String(repeating: "A", count: AccessChallenge.maxSealedProofLength + 4)
        #expect(m.page(Self.depositedWatch(sealed: huge), now: now) { "x" }.contains { if case .close(1007, _) = $0 { true } else { false } })
        var notBase64 = Self.machine()
        _ = notBase64.page(Self.json(["type": "prepare"]), now: now) { "r1" }
        #expect(notBase64.page(Self.depositedWatch(sealed: "not base64!"), now: now) { "x" }.contains { if case .close(1007, _) = $0 { true } else { false } })
    }
}
