import Crypto
import Traversal

/// The camera's side of the authenticated Noise XX handshake, with a fixed identity, fed arbitrary
/// bytes as the first or the third message — or a well-encrypted third message whose payload (the
/// viewer's identity key and signature) is arbitrary, which a fuzzer could not forge by itself.
///
/// Input: `mode (1) ‖ bytes`; mode % 4 = 0: raw first message; 1: a valid first message, then `bytes`
/// as the third; 2: valid first, third encrypted by a real initiator around payload `bytes`;
/// 3: like 2 with a valid payload, then `bytes` XORed over the sealed third message.
enum NoiseResponderFuzz {
    static let target = FuzzTarget(
        name: "noise-handshake",
        summary: "SecureHandshakeStateMachine.responder: arbitrary first/third messages and third-message payloads",
        run: run, seeds: seeds)

    static let cameraIdentity = try! DeviceIdentity(seed: Array(repeating: 1, count: 32))
    static let viewerIdentity = try! DeviceIdentity(seed: Array(repeating: 2, count: 32))
    static let cameraStatic = try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: Array(repeating: 3, count: 32))
    static let viewerStatic = try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: Array(repeating: 4, count: 32))
    static let viewerEphemeral = try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: Array(repeating: 5, count: 32))

    static func run(_ data: [UInt8]) {
        guard let mode = data.first else { return }
        let bytes = Array(data.dropFirst())
        var responder = SecureHandshakeStateMachine.responder(identity: cameraIdentity, noiseStaticKey: cameraStatic)
        if mode % 4 == 0 {
            expectNoSession(try? responder.receive(bytes))
            return
        }
        var initiator = NoiseHandshakeState(role: .initiator, prologue: SecureHandshakeStateMachine.prologue,
                                            staticKey: viewerStatic, ephemeralKey: viewerEphemeral)
        guard let first = try? initiator.writeMessage(payload: []),
              case .send(let second)? = try? responder.receive(first) else {
            fuzzCheck(false, "a valid first message was refused")
            return
        }
        guard let responderPayload = try? initiator.readMessage(second) else {
            fuzzCheck(false, "the responder's second message does not decrypt")
            return
        }
        fuzzCheck(responderPayload.count == SecureHandshakeStateMachine.payloadLength, "responder payload of \(responderPayload.count) bytes")
        switch mode % 4 {
        case 1:
            expectNoSession(try? responder.receive(bytes))
        case 2:
            guard let third = try? initiator.writeMessage(payload: bytes) else { return }
            expectNoSession(try? responder.receive(third))
        default:
            // A genuine payload, then damage: any change to the sealed message must be refused.
            let payload = validPayload(initiator)
            guard let third = try? initiator.writeMessage(payload: payload) else { return }
            var damaged = third
            for (i, b) in bytes.prefix(third.count).enumerated() { damaged[i] ^= b }
            let result = try? responder.receive(damaged)
            if damaged == third {
                guard case .complete(let session)? = result else {
                    fuzzCheck(false, "a genuine third message was refused")
                    return
                }
                fuzzCheck(session.peerIdentity.rawRepresentation == viewerIdentity.publicKey.rawRepresentation, "wrong peer identity")
            } else {
                expectNoSession(result)
            }
        }
    }

    /// Garbage never completes the handshake.
    static func expectNoSession(_ action: SecureHandshakeAction?) {
        switch action {
        case .complete?, .sendAndComplete?: fuzzCheck(false, "the responder completed on forged input")
        default: break
        }
    }

    /// The viewer's real `identity key ‖ signature` for this handshake (the SecureHandshake binding).
    static func validPayload(_ initiator: NoiseHandshakeState) -> [UInt8] {
        let signed = SecureHandshakeStateMachine.signatureDomain + [0, UInt8(ascii: "I")]
            + Array(viewerStatic.publicKey.rawRepresentation) + initiator.handshakeHash
        let signature = try! viewerIdentity.signature(for: signed)
        return Array(viewerIdentity.publicKey.rawRepresentation) + Array(signature)
    }

    static func seeds() -> [(String, [UInt8])] {
        var initiator = NoiseHandshakeState(role: .initiator, prologue: SecureHandshakeStateMachine.prologue,
                                            staticKey: viewerStatic, ephemeralKey: viewerEphemeral)
        let first = try! initiator.writeMessage(payload: [])
        return [
            ("first-message", [0] + first),
            ("third-garbage", [1] + Array(repeating: 0x42, count: 64 + 16 + 96 + 16)),
            ("third-payload-zeros", [2] + Array(repeating: 0, count: SecureHandshakeStateMachine.payloadLength)),
            ("third-genuine", [3]),
            ("third-one-bit", [3, 0, 0, 0, 0, 0, 0, 0, 0x01]),
        ]
    }
}
