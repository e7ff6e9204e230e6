import Crypto
import Testing
@testable import Traversal

/// A camera identity and its UID, computed once (UID derivation is deliberately slow).
private let camera = DeviceIdentity.generate()
private let cameraID = camera.deviceID

/// Runs the three-message handshake, letting `tamper` alter each message in flight.
private func runHandshake(
    viewer: inout SecureHandshakeStateMachine,
    camera: inout SecureHandshakeStateMachine,
    tamper: (Int, inout [UInt8]) -> Void = { _, _ in }
) throws -> (viewer: SecureSession, camera: SecureSession) {
    var first = try viewer.start()
    tamper(0, &first)
    guard case .send(var second) = try camera.receive(first) else {
        Issue.record("camera should reply to the first message")
        throw CancellationError()
    }
    tamper(1, &second)
    guard case .sendAndComplete(var third, let viewerSession) = try viewer.receive(second) else {
        Issue.record("viewer should send the last message and complete")
        throw CancellationError()
    }
    tamper(2, &third)
    guard case .complete(let cameraSession) = try camera.receive(third) else {
        Issue.record("camera should complete on the last message")
        throw CancellationError()
    }
    return (viewerSession, cameraSession)
}

@Suite struct SecureHandshakeTests {
    @Test func goodHandshakeAuthenticatesBothIdentitiesAndSharesKeys() throws {
        let viewerIdentity = DeviceIdentity.ephemeral()
        var viewer = try SecureHandshakeStateMachine.initiator(identity: viewerIdentity, expecting: cameraID)
        var responder = SecureHandshakeStateMachine.responder(identity: camera)
        var (viewerSession, cameraSession) = try runHandshake(viewer: &viewer, camera: &responder)

        #expect(viewerSession.peerIdentity.rawRepresentation == camera.publicKey.rawRepresentation)
        #expect(cameraSession.peerIdentity.rawRepresentation == viewerIdentity.publicKey.rawRepresentation)
        #expect(viewerSession.handshakeHash == cameraSession.handshakeHash)
        let sealed = try viewerSession.send.encrypt(associatedData: [], plaintext: Array("play".utf8))
        #expect(try cameraSession.receive.decrypt(associatedData: [], ciphertext: sealed) == Array("play".utf8))
        let video = try cameraSession.send.encrypt(associatedData: [], plaintext: [0xFF, 0xD8])
        #expect(try viewerSession.receive.decrypt(associatedData: [], ciphertext: video) == [0xFF, 0xD8])
    }

    @Test func responderWithAnotherIdentityThanTheUIDIsRefused() throws {
        let impostor = DeviceIdentity.generate()
        var viewer = try SecureHandshakeStateMachine.initiator(identity: .ephemeral(), expecting: cameraID)
        var responder = SecureHandshakeStateMachine.responder(identity: impostor)
        let error = #expect(throws: SecureHandshakeError.self) {
            _ = try runHandshake(viewer: &viewer, camera: &responder)
        }
        #expect(error?.code == .identityMismatch)
    }

    @Test func cloudAnnouncedKeyThatDoesNotMatchTheUIDIsDetected() {
        let hijacker = DeviceIdentity.generate()
        let error = #expect(throws: SecureHandshakeError.self) {
            _ = try SecureHandshakeStateMachine.initiator(
                identity: .ephemeral(), expecting: cameraID, announcedIdentityKey: hijacker.publicKey)
        }
        #expect(error?.code == .announcedKeyMismatch)
    }

    @Test func cloudAnnouncedKeyThatMatchesTheUIDIsAccepted() throws {
        var viewer = try SecureHandshakeStateMachine.initiator(
            identity: .ephemeral(), expecting: cameraID, announcedIdentityKey: camera.publicKey)
        var responder = SecureHandshakeStateMachine.responder(identity: camera)
        let sessions = try runHandshake(viewer: &viewer, camera: &responder)
        #expect(sessions.viewer.peerIdentity.rawRepresentation == camera.publicKey.rawRepresentation)
    }

    @Test(arguments: [1, 2])
    func tamperedHandshakeMessageIsRejected(messageIndex: Int) throws {
        var viewer = try SecureHandshakeStateMachine.initiator(identity: .ephemeral(), expecting: cameraID)
        var responder = SecureHandshakeStateMachine.responder(identity: camera)
        #expect(throws: NoiseError.self) {
            _ = try runHandshake(viewer: &viewer, camera: &responder) { index, message in
                if index == messageIndex { message[message.count - 20] ^= 0x80 }
            }
        }
    }

    @Test func tamperedFirstMessageMakesTheHandshakeFail() throws {
        var viewer = try SecureHandshakeStateMachine.initiator(identity: .ephemeral(), expecting: cameraID)
        var responder = SecureHandshakeStateMachine.responder(identity: camera)
        #expect(throws: (any Error).self) {
            _ = try runHandshake(viewer: &viewer, camera: &responder) { index, message in
                if index == 0 { message[3] ^= 0x01 }
            }
        }
    }

    @Test(arguments: [true, false])
    func signedPayloadReplayedIntoAnotherSessionIsRejected(staticKeyLeaked: Bool) throws {
        let cameraStatic = Curve25519.KeyAgreement.PrivateKey()
        // Session A: a malicious viewer collects the camera's signed payload.
        var cameraA = SecureHandshakeStateMachine.responder(identity: camera, noiseStaticKey: cameraStatic)
        var spy = NoiseHandshakeState(
            role: .initiator, prologue: SecureHandshakeStateMachine.prologue, staticKey: .init())
        guard case .send(let second) = try cameraA.receive(try spy.writeMessage()) else {
            Issue.record("camera should reply")
            return
        }
        let capturedPayload = try spy.readMessage(second)
        #expect(capturedPayload.count == SecureHandshakeStateMachine.payloadLength)

        // Session B: the spy poses as the camera, with the camera's leaked Noise static key or its own.
        var viewer = try SecureHandshakeStateMachine.initiator(identity: .ephemeral(), expecting: cameraID)
        var impostor = NoiseHandshakeState(
            role: .responder, prologue: SecureHandshakeStateMachine.prologue,
            staticKey: staticKeyLeaked ? cameraStatic : .init())
        _ = try impostor.readMessage(try viewer.start())
        let forged = try impostor.writeMessage(payload: capturedPayload)
        let error = #expect(throws: SecureHandshakeError.self) { try viewer.receive(forged) }
        #expect(error?.code == .badSignature)
    }

    @Test func malformedPayloadIsRejected() throws {
        var viewer = try SecureHandshakeStateMachine.initiator(identity: .ephemeral(), expecting: cameraID)
        var noise = NoiseHandshakeState(
            role: .responder, prologue: SecureHandshakeStateMachine.prologue, staticKey: .init())
        _ = try noise.readMessage(try viewer.start())
        let reply = try noise.writeMessage(payload: [1, 2, 3])
        let error = #expect(throws: SecureHandshakeError.self) { try viewer.receive(reply) }
        #expect(error?.code == .malformedPayload)
    }

    /// Found by fuzzing (Fuzz/Corpus/noise-handshake/crash-small-order-identity): a viewer "identity"
    /// that is a small-order point with signature R = that point, S = 0 verifies under RFC 8032 for any
    /// message, so the camera completed handshakes for identities nobody holds a key for.
    @Test(arguments: Curve25519.Signing.PublicKey.smallOrderEncodings.flatMap { [$0, $0.prefix(31) + [$0[31] | 0x80]] })
    func smallOrderViewerIdentityIsRefusedEvenWithAVerifyingSignature(_ key: [UInt8]) throws {
        var responder = SecureHandshakeStateMachine.responder(identity: camera)
        var viewer = NoiseHandshakeState(role: .initiator, prologue: SecureHandshakeStateMachine.prologue, staticKey: .init())
        guard case .send(let second) = try responder.receive(try viewer.writeMessage()) else {
            Issue.record("camera should reply to the first message")
            return
        }
        _ = try viewer.readMessage(second)
        // The neutral element verifies every message with R = A, S = 0; the others do for some messages.
        let forged = key + key + [UInt8](repeating: 0, count: 32)
        let error = #expect(throws: SecureHandshakeError.self) { try responder.receive(try viewer.writeMessage(payload: forged)) }
        #expect(error?.code == .weakIdentityKey)
    }

    @Test func identityKeysOfRealIdentitiesAreNotSmallOrder() {
        for _ in 0..<32 { #expect(!DeviceIdentity.ephemeral().publicKey.hasSmallOrder) }
        let neutral = try? Curve25519.Signing.PublicKey(rawRepresentation: [1] + [UInt8](repeating: 0, count: 31))
        #expect(neutral?.hasSmallOrder == true)
        #expect(neutral?.isValidSignature([1] + [UInt8](repeating: 0, count: 63), for: [UInt8]("anything".utf8)) == true,
                "the neutral element verifies R = A, S = 0 for any message: the reason for the check")
    }

    @Test func receivingAfterCompletionIsRejected() throws {
        var viewer = try SecureHandshakeStateMachine.initiator(identity: .ephemeral(), expecting: cameraID)
        var responder = SecureHandshakeStateMachine.responder(identity: camera)
        _ = try runHandshake(viewer: &viewer, camera: &responder)
        let error = #expect(throws: NoiseError.self) { try responder.receive([0]) }
        #expect(error?.code == .outOfOrder)
    }
}
