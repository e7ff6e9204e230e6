import Crypto
import Foundation
import SourceLimits
import Testing
import Traversal
import WebRTC

/// The page answers a camera's access challenge as a native viewer does (`BrowserViewerScript.travProve`):
/// it checks the challenge's signature and that its key is behind the UID, then seals the password, its own
/// Ed25519 key and its signature over the challenge with HPKE (X25519, HKDF-SHA256, ChaCha20-Poly1305 in
/// the page's code) to the challenge's one-time key; the camera's `AccessProver.open` opens it.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct BrowserAccessProofTests {
    /// The glue: the challenge from the query, the proof (or the error) reported.
    static let glue = #"""
        (async () => {
          const report = text => fetch('/result', {method: 'POST', body: text});
          const q = new URLSearchParams(location.search);
          try {
            const uid = travCanonicalUID(q.get('uid'));
            if (!uid) throw new Error('uid: not a UID');
            const viewer = await crypto.subtle.generateKey({name: 'Ed25519'}, true, ['sign', 'verify']);
            report(await travProve({uid, requestID: q.get('request'), answerKey: travBytes.fromBase64(q.get('answerKey')),
                                    challenge: JSON.parse(q.get('challenge')), password: q.get('password'), viewer}));
          } catch (e) { report('error: ' + e.message); }
        })();
        """#

    /// Which challenge the page gets.
    enum Variant: Sendable, CaseIterable {
        /// The camera's own challenge, the right password.
        case genuine
        /// The camera's own challenge, a wrong password: the proof opens and the camera's access check denies it.
        case wrongPassword
        /// A challenge signed by a key that is not behind the UID (a cloud answering for the camera).
        case impostorKey
    }

    @Test(.enabled(if: BrowserHarness.chromium != nil, "chromium is not installed"), arguments: Variant.allCases)
    func cameraOpensThePagesProof(_ variant: Variant) async throws {
        let camera = DeviceIdentity.generate()
        let signer = variant == .impostorKey ? DeviceIdentity.generate() : camera
        let requestID = UUID().uuidString
        let answerKey = Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation.base64EncodedString()
        let (challenge, key) = try AccessChallenge.make(identity: signer, deviceID: camera.deviceID, requestID: requestID, answerKey: answerKey)
        let password = "correct horse ✓ battery"
        let typed = variant == .wrongPassword ? "correct horse ✓ battery!" : password
        var query = URLComponents()
        // The UID as a person might type it: lower case, no dashes.
        query.queryItems = [
            .init(name: "uid", value: camera.deviceID.description.lowercased().replacingOccurrences(of: "-", with: "")),
            .init(name: "request", value: requestID), .init(name: "answerKey", value: answerKey),
            .init(name: "challenge", value: String(decoding: try JSONEncoder().encode(challenge), as: UTF8.self)),
            .init(name: "password", value: typed),
        ]
        let encoded = try #require(query.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B"))
        let (report, chromiumLog) = try await BrowserHarness.run(glue: Self.glue, query: encoded) { _ in "" }
        let text = try #require(report, "chromium: \(chromiumLog)")
        // The camera's check, under the same limits as native viewers' (cheap scrypt parameters for the test).
        var access = AccessController(passwordVerifier: try PasswordVerifier(password: password, parameters: .init(log2Rounds: 4, blockSize: 8, parallelism: 1)))
        let source = SourceAddressKey(ipv4: 0x7F00_0001)
        switch variant {
        case .genuine, .wrongPassword:
            let claim = try AccessProver.open(text, with: key, deviceID: camera.deviceID, requestID: requestID)
            guard case .password(let presented) = claim.credential else {
                Issue.record("the proof presents \(claim.credential)")
                return
            }
            #expect(presented == typed)
            if variant == .wrongPassword {
                #expect(throws: AccessControlError.self, "a wrong password is refused") {
                    try access.authorize(viewer: claim.viewerKey, source: source, credential: claim.credential, now: .now)
                }
                return
            }
            #expect(try access.authorize(viewer: claim.viewerKey, source: source, credential: claim.credential, now: .now) == .password)
            // Sealed to this introduction only: another request's key and info do not open it.
            #expect(throws: CloudProtocolError.self) {
                try AccessProver.open(text, with: key, deviceID: camera.deviceID, requestID: requestID + "x")
            }
        case .impostorKey:
            #expect(text == "error: identity: key is not behind the UID")
        }
    }

    /// The glue for a deposit: the deposit and the camera's key from the query, the `{sealingKey, sealed}` (or the error) reported.
    static let depositGlue = #"""
        (async () => {
          const report = text => fetch('/result', {method: 'POST', body: text});
          const q = new URLSearchParams(location.search);
          try {
            const uid = travCanonicalUID(q.get('uid'));
            const viewer = await crypto.subtle.generateKey({name: 'Ed25519'}, true, ['sign', 'verify']);
            const proof = await travProveDeposit({uid, requestID: q.get('request'), answerKey: travBytes.fromBase64(q.get('answerKey')),
                                                  identityKey: travBytes.fromBase64(q.get('identityKey')), deposit: JSON.parse(q.get('deposit')),
                                                  password: q.get('password'), viewer});
            report(JSON.stringify(proof));
          } catch (e) { report('error: ' + e.message); }
        })();
        """#

    /// Which deposit the page gets.
    enum DepositVariant: Sendable, CaseIterable {
        /// The camera's own deposit, unexpired.
        case genuine
        /// Signed by a key that is not behind the UID.
        case impostorKey
        /// The camera's, expired.
        case expired
    }

    /// The page seals its proof to a deposit as `AccessProver.open(deposited:…)` opens it: the signature and the HPKE info
    /// bind the UID, the request, the deposit's key and the answer key.
    @Test(.enabled(if: BrowserHarness.chromium != nil, "chromium is not installed"), arguments: DepositVariant.allCases)
    func cameraOpensThePagesProofSealedToADeposit(_ variant: DepositVariant) async throws {
        let camera = DeviceIdentity.generate()
        let signer = variant == .impostorKey ? DeviceIdentity.generate() : camera
        let requestID = UUID().uuidString
        let answerKey = Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation.base64EncodedString()
        let now = Int(Date().timeIntervalSince1970)
        let (deposit, key) = try AccessDeposit.make(identity: signer, deviceID: camera.deviceID, expires: variant == .expired ? now - 1 : now + 600)
        let password = "correct horse ✓ battery"
        var query = URLComponents()
        query.queryItems = [
            .init(name: "uid", value: camera.deviceID.description), .init(name: "request", value: requestID),
            .init(name: "answerKey", value: answerKey), .init(name: "password", value: password),
            .init(name: "identityKey", value: signer.publicKey.rawRepresentation.base64EncodedString()),
            .init(name: "deposit", value: String(decoding: try JSONEncoder().encode(deposit), as: UTF8.self)),
        ]
        let encoded = try #require(query.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B"))
        let (report, chromiumLog) = try await BrowserHarness.run(glue: Self.depositGlue, query: encoded) { _ in "" }
        let text = try #require(report, "chromium: \(chromiumLog)")
        switch variant {
        case .genuine:
            let proof = try JSONDecoder().decode(DepositedProof.self, from: Data(text.utf8))
            #expect(proof.sealingKey == deposit.sealingKey)
            let claim = try AccessProver.open(deposited: proof.sealed, with: key, deviceID: camera.deviceID, requestID: requestID, answerKey: answerKey)
            guard case .password(let presented) = claim.credential else {
                Issue.record("the proof presents \(claim.credential)")
                return
            }
            #expect(presented == password)
            // Bound to this introduction's answer key: the cloud swapping it makes the proof useless.
            let swapped = Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation.base64EncodedString()
            #expect(throws: CloudProtocolError.self) {
                try AccessProver.open(deposited: proof.sealed, with: key, deviceID: camera.deviceID, requestID: requestID, answerKey: swapped)
            }
        case .impostorKey:
            #expect(text == "error: identity: key is not behind the UID")
        case .expired:
            #expect(text == "error: deposit: expired")
        }
    }
}
