import Crypto
import Foundation
import Testing
@testable import Traversal

/// Deposited access keys (`AccessDeposit`): the camera's signature over each, and the viewer's proof sealed to one,
/// bound to one introduction (UID, request ID, the deposit's key, the answer key).
struct AccessDepositTests {
    static let camera = DeviceIdentity.generate()
    static let device = camera.deviceID
    static let now = 1_800_000_000
    static let answer = Curve25519.KeyAgreement.PrivateKey().publicKey

    @Test func aDepositVerifiesOnlyUnderItsCamerasKeyForItsUIDUntilItExpires() throws {
        let (deposit, key) = try AccessDeposit.make(identity: Self.camera, deviceID: Self.device, expires: Self.now + 600)
        let sealing = try deposit.verified(by: Self.camera.publicKey, deviceID: Self.device, now: Self.now)
        #expect(sealing == key.publicKey.rawRepresentation)

        // Another camera's key, another UID, a tampered signature, key or expiry: refused with typed errors.
        #expect(throws: CloudProtocolError.self) { try deposit.verified(by: DeviceIdentity.generate().publicKey, deviceID: Self.device, now: Self.now) }
        #expect(throws: CloudProtocolError.self) { try deposit.verified(by: Self.camera.publicKey, deviceID: DeviceIdentity.generate().deviceID, now: Self.now) }
        var tampered = deposit
        var signature = try #require(Data(base64Encoded: deposit.signature))
        signature[5] ^= 1
        tampered.signature = signature.base64EncodedString()
        let bad = #expect(throws: CloudProtocolError.self) { try tampered.verified(by: Self.camera.publicKey, deviceID: Self.device, now: Self.now) }
        #expect(bad?.code == .malformed)
        var otherKey = deposit
        otherKey.sealingKey = Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation.base64EncodedString()
        #expect(throws: CloudProtocolError.self) { try otherKey.verified(by: Self.camera.publicKey, deviceID: Self.device, now: Self.now) }
        var later = deposit
        later.expires += 3600
        #expect(throws: CloudProtocolError.self, "the expiry is signed") { try later.verified(by: Self.camera.publicKey, deviceID: Self.device, now: Self.now) }

        // Expired: at its expiry and after.
        let expired = #expect(throws: CloudProtocolError.self) { try deposit.verified(by: Self.camera.publicKey, deviceID: Self.device, now: Self.now + 600) }
        #expect(expired?.code == .invalidField)
        // Bad sizes are typed errors, not traps.
        var short = deposit
        short.signature = Data(count: 10).base64EncodedString()
        #expect(throws: CloudProtocolError.self) { try short.verified(by: Self.camera.publicKey, deviceID: Self.device, now: Self.now) }
    }

    @Test func aProofSealedToADepositOpensOnlyForItsIntroduction() async throws {
        let (deposit, key) = try AccessDeposit.make(identity: Self.camera, deviceID: Self.device, expires: Self.now + 600)
        let viewer = DeviceIdentity.generate()
        let prover = AccessProver(identity: viewer, credential: .password("correct horse"))
        let proof = try await prover.prove(deposit: deposit, cameraKey: Self.camera.publicKey, device: Self.device, requestID: "r1",
                                           answerKey: Self.answer, now: Self.now)
        #expect(proof.sealingKey == deposit.sealingKey)
        let answerKey = Self.answer.rawRepresentation.base64EncodedString()
        let claim = try AccessProver.open(deposited: proof.sealed, with: key, deviceID: Self.device, requestID: "r1", answerKey: answerKey)
        #expect(claim.viewerKey.rawRepresentation == viewer.publicKey.rawRepresentation)
        guard case .password("correct horse") = claim.credential else {
            Issue.record("\(claim.credential)")
            return
        }
        // Another request, another answer key (the cloud swapping it), another UID, or another key: it does not open.
        let otherAnswer = Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation.base64EncodedString()
        #expect(throws: CloudProtocolError.self) {
            try AccessProver.open(deposited: proof.sealed, with: key, deviceID: Self.device, requestID: "r2", answerKey: answerKey)
        }
        #expect(throws: CloudProtocolError.self) {
            try AccessProver.open(deposited: proof.sealed, with: key, deviceID: Self.device, requestID: "r1", answerKey: otherAnswer)
        }
        #expect(throws: CloudProtocolError.self) {
            try AccessProver.open(deposited: proof.sealed, with: key, deviceID: DeviceIdentity.generate().deviceID, requestID: "r1", answerKey: answerKey)
        }
        #expect(throws: CloudProtocolError.self) {
            try AccessProver.open(deposited: proof.sealed, with: Curve25519.KeyAgreement.PrivateKey(), deviceID: Self.device, requestID: "r1",
                                  answerKey: answerKey)
        }
        // Nor does it open as a live challenge's proof (distinct labels), nor a live proof as a deposited one.
        #expect(throws: CloudProtocolError.self) { try AccessProver.open(proof.sealed, with: key, deviceID: Self.device, requestID: "r1") }
        let live = try prover.seal(to: key.publicKey.rawRepresentation,
                                   signed: AccessProver.signedBytes(deviceID: Self.device, requestID: "r1", sealingKey: key.publicKey.rawRepresentation),
                                   info: AccessProver.info(deviceID: Self.device, requestID: "r1"), field: "k")
        #expect(throws: CloudProtocolError.self) {
            try AccessProver.open(deposited: live, with: key, deviceID: Self.device, requestID: "r1", answerKey: answerKey)
        }
    }

    @Test func theViewerRefusesADepositThatIsNotTheCamerasOrHasExpired() async throws {
        let prover = AccessProver(identity: .generate(), credential: .password("p"))
        let impostor = DeviceIdentity.generate()
        let (forged, _) = try AccessDeposit.make(identity: impostor, deviceID: Self.device, expires: Self.now + 600)
        // Signed by a key that is not behind the UID (a cloud answering for the camera).
        let notBehind = await #expect(throws: TraversalError.self) {
            _ = try await prover.prove(deposit: forged, cameraKey: impostor.publicKey, device: Self.device, requestID: "r", answerKey: Self.answer, now: Self.now)
        }
        #expect(notBehind?.code == .identityMismatch)
        let (deposit, _) = try AccessDeposit.make(identity: Self.camera, deviceID: Self.device, expires: Self.now + 600)
        await #expect(throws: TraversalError.self) {
            _ = try await prover.prove(deposit: deposit, cameraKey: Self.camera.publicKey, device: Self.device, requestID: "r", answerKey: Self.answer,
                                       now: Self.now + 601)
        }
    }

    @Test func aReplayedProofIsRefusedBecauseTheKeyIsUsedOnce() async throws {
        var stock = AccessDepositStock()
        let deposits = try stock.registered(now: Self.now, identity: Self.camera, deviceID: Self.device)
        let deposit = try #require(deposits.first)
        let proof = try await AccessProver(identity: .generate(), credential: .pairedKey)
            .prove(deposit: deposit, cameraKey: Self.camera.publicKey, device: Self.device, requestID: "r1", answerKey: Self.answer, now: Self.now)
        let sealing = try #require(Data(base64Encoded: proof.sealingKey))
        guard case .key(let key) = stock.consume(sealing, now: Self.now + 1) else {
            Issue.record("the first use gets the key")
            return
        }
        _ = try AccessProver.open(deposited: proof.sealed, with: key, deviceID: Self.device, requestID: "r1",
                                  answerKey: Self.answer.rawRepresentation.base64EncodedString())
        guard case .used = stock.consume(sealing, now: Self.now + 2) else {
            Issue.record("the same proof again is a replay")
            return
        }
    }
}
