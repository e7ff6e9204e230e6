import Crypto
import Testing
@testable import Traversal

/// `Noise_XX_25519_ChaChaPoly_SHA256` from the cacophony test vectors, as shipped in
/// mcginty/snow `tests/vectors/cacophony.txt` (commit 62fbfae2c84b644a0432ce497a4a47e4fa139a2d).
///
/// The file's `handshake_hash` field (e37b138e…) does not follow Noise §5.2 `GetHandshakeHash()`
/// for any pattern in it (NN too), although every ciphertext — each authenticated with `h` as
/// associated data — matches. So ``handshakeHash`` below is the value that both this code and an
/// independent implementation (Python `noiseprotocol` 0.3.1) compute from the same inputs.
private enum CacophonyXX {
    static let prologue = hexBytes("4a6f686e2047616c74")
    static let initiatorStatic = hexBytes("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1")
    static let initiatorEphemeral = hexBytes("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a")
    static let responderStatic = hexBytes("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893")
    static let responderEphemeral = hexBytes("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b")
    static let handshakeHash = hexBytes("c8e5f64e846193be2a834104c2a009868d6c9f3bd3c186299888b488b2f1f58e")
    /// (payload, ciphertext); messages alternate initiator → responder first, the first three are the handshake.
    static let messages: [(payload: [UInt8], ciphertext: [UInt8])] = [
        (hexBytes("4c756477696720766f6e204d69736573"),
         hexBytes("ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79444c756477696720766f6e204d69736573")),
        (hexBytes("4d757272617920526f746862617264"),
         hexBytes("""
            95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f14480884381cbad1f276e038c48378ffce2b65285e08d6b68aaa3629a5a\
            8639392490e5b9bd5269c2f1e4f488ed8831161f19b7815528f8982ffe09be9b5c412f8a0db50f8814c7194e83f23dbd8d162c9326ad
            """)),
        (hexBytes("462e20412e20486179656b"),
         hexBytes("""
            c7195ffacac1307ff99046f219750fc47693e23c3cb08b89c2af808b444850a80ae475b9df0f169ae80a89be0865b57f58c9fea0d4ec82a2\
            86427402f113e4b6ae769a1d95941d49b25030
            """)),
        (hexBytes("4361726c204d656e676572"),
         hexBytes("96763ed773f8e47bb3712f0e29b3060ffc956ffc146cee53d5e1df")),
        (hexBytes("4a65616e2d426170746973746520536179"),
         hexBytes("3e40f15f6f3a46ae446b253bf8b1d9ffb6ed9b174d272328ff91a7e2e5c79c07f5")),
        (hexBytes("457567656e2042f6686d20766f6e2042617765726b"),
         hexBytes("eb3f3515110702e047a6c9da4478b6ead94873c11c0f2d710ddb3f09fce024b3a58502ae3f")),
    ]

    static func key(_ raw: [UInt8]) -> Curve25519.KeyAgreement.PrivateKey {
        try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: raw)
    }

    static func initiator() -> NoiseHandshakeState {
        NoiseHandshakeState(
            role: .initiator, prologue: prologue, staticKey: key(initiatorStatic),
            ephemeralKey: key(initiatorEphemeral))
    }

    static func responder() -> NoiseHandshakeState {
        NoiseHandshakeState(
            role: .responder, prologue: prologue, staticKey: key(responderStatic),
            ephemeralKey: key(responderEphemeral))
    }
}

/// Runs an XX handshake between two fresh parties and returns both finished states.
private func completedHandshake() throws -> (NoiseHandshakeState, NoiseHandshakeState) {
    var initiator = NoiseHandshakeState(role: .initiator, staticKey: .init())
    var responder = NoiseHandshakeState(role: .responder, staticKey: .init())
    _ = try responder.readMessage(try initiator.writeMessage())
    _ = try initiator.readMessage(try responder.writeMessage())
    _ = try responder.readMessage(try initiator.writeMessage())
    return (initiator, responder)
}

@Suite struct NoiseTests {
    @Test func xxHandshakeAndTransportMatchCacophonyVector() throws {
        var initiator = CacophonyXX.initiator()
        var responder = CacophonyXX.responder()
        for (index, message) in CacophonyXX.messages.prefix(3).enumerated() {
            if index % 2 == 0 {
                #expect(try initiator.writeMessage(payload: message.payload) == message.ciphertext, "message \(index)")
                #expect(try responder.readMessage(message.ciphertext) == message.payload, "message \(index)")
            } else {
                #expect(try responder.writeMessage(payload: message.payload) == message.ciphertext, "message \(index)")
                #expect(try initiator.readMessage(message.ciphertext) == message.payload, "message \(index)")
            }
        }
        #expect(initiator.handshakeHash == CacophonyXX.handshakeHash)
        #expect(responder.handshakeHash == CacophonyXX.handshakeHash)
        #expect(initiator.remoteStaticKey?.rawRepresentation
            == CacophonyXX.key(CacophonyXX.responderStatic).publicKey.rawRepresentation)

        var initiatorKeys = try initiator.split()
        var responderKeys = try responder.split()
        for (index, message) in CacophonyXX.messages.enumerated().dropFirst(3) {
            if index % 2 == 0 {
                #expect(try initiatorKeys.send.encrypt(associatedData: [], plaintext: message.payload) == message.ciphertext)
                #expect(try responderKeys.receive.decrypt(associatedData: [], ciphertext: message.ciphertext) == message.payload)
            } else {
                #expect(try responderKeys.send.encrypt(associatedData: [], plaintext: message.payload) == message.ciphertext)
                #expect(try initiatorKeys.receive.decrypt(associatedData: [], ciphertext: message.ciphertext) == message.payload)
            }
        }
    }

    @Test func freshPartiesAgreeOnHashAndKeys() throws {
        let (initiator, responder) = try completedHandshake()
        #expect(initiator.isComplete && responder.isComplete)
        #expect(initiator.handshakeHash == responder.handshakeHash)
        var initiatorKeys = try initiator.split()
        var responderKeys = try responder.split()
        let sealed = try initiatorKeys.send.encrypt(associatedData: [], plaintext: Array("hello".utf8))
        #expect(try responderKeys.receive.decrypt(associatedData: [], ciphertext: sealed) == Array("hello".utf8))
        let reply = try responderKeys.send.encrypt(associatedData: [], plaintext: [9])
        #expect(try initiatorKeys.receive.decrypt(associatedData: [], ciphertext: reply) == [9])
    }

    @Test func tamperedHandshakeMessageFailsAndLeavesStateUsable() throws {
        var initiator = CacophonyXX.initiator()
        var responder = CacophonyXX.responder()
        _ = try responder.readMessage(try initiator.writeMessage(payload: []))
        let second = try responder.writeMessage(payload: [])
        var tampered = second
        tampered[40] ^= 0x01
        let error = #expect(throws: NoiseError.self) { try initiator.readMessage(tampered) }
        #expect(error?.code == .decryptionFailed)
        #expect(initiator.messageIndex == 1)
        #expect(try initiator.readMessage(second) == [])
    }

    @Test func truncatedHandshakeMessageIsTooShort() throws {
        var responder = CacophonyXX.responder()
        let error = #expect(throws: NoiseError.self) { try responder.readMessage([UInt8](repeating: 1, count: 31)) }
        #expect(error?.code == .messageTooShort)

        var initiator = CacophonyXX.initiator()
        responder = CacophonyXX.responder()
        _ = try responder.readMessage(try initiator.writeMessage())
        let second = try responder.writeMessage()
        let cut = #expect(throws: NoiseError.self) { try initiator.readMessage(Array(second.prefix(60))) }
        #expect(cut?.code == .messageTooShort)
    }

    @Test func messagesOverTheNoiseMaximumAreRejected() throws {
        var initiator = CacophonyXX.initiator()
        let tooLong = #expect(throws: NoiseError.self) {
            try initiator.writeMessage(payload: [UInt8](repeating: 0, count: Noise.maxMessageLength - 31))
        }
        #expect(tooLong?.code == .messageTooLong)
        #expect(try initiator.writeMessage(payload: [UInt8](repeating: 0, count: Noise.maxMessageLength - 32)).count
            == Noise.maxMessageLength)

        var responder = CacophonyXX.responder()
        let oversized = #expect(throws: NoiseError.self) {
            try responder.readMessage([UInt8](repeating: 0, count: Noise.maxMessageLength + 1))
        }
        #expect(oversized?.code == .messageTooLong)
    }

    @Test func writingOrReadingOutOfTurnIsRejected() throws {
        var responder = CacophonyXX.responder()
        let write = #expect(throws: NoiseError.self) { try responder.writeMessage() }
        #expect(write?.code == .outOfOrder)
        var initiator = CacophonyXX.initiator()
        let read = #expect(throws: NoiseError.self) { try initiator.readMessage(CacophonyXX.messages[1].ciphertext) }
        #expect(read?.code == .outOfOrder)
    }

    @Test func splitBeforeTheLastMessageIsRejected() throws {
        var initiator = CacophonyXX.initiator()
        _ = try initiator.writeMessage()
        let error = #expect(throws: NoiseError.self) { try initiator.split() }
        #expect(error?.code == .handshakeIncomplete)
    }

    @Test func lowOrderEphemeralKeyIsRejected() throws {
        var initiator = CacophonyXX.initiator()
        _ = try initiator.writeMessage()
        var responder = CacophonyXX.responder()
        // An all-zero X25519 point gives an all-zero shared secret.
        _ = try responder.readMessage([UInt8](repeating: 0, count: 32))
        let error = #expect(throws: NoiseError.self) { try responder.writeMessage() }
        #expect(error?.code == .invalidKey)
    }
}

@Suite struct NoiseCipherStateTests {
    let key = [UInt8](repeating: 0x42, count: 32)

    @Test func nonceAdvancesOnEncryptAndOnSuccessfulDecryptOnly() throws {
        var sender = NoiseCipherState(key: key)
        var receiver = NoiseCipherState(key: key)
        let first = try sender.encrypt(associatedData: [], plaintext: [1])
        #expect(sender.nonce == 1)
        var forged = first
        forged[0] ^= 0xFF
        let error = #expect(throws: NoiseError.self) { try receiver.decrypt(associatedData: [], ciphertext: forged) }
        #expect(error?.code == .decryptionFailed)
        #expect(receiver.nonce == 0)
        #expect(try receiver.decrypt(associatedData: [], ciphertext: first) == [1])
        #expect(receiver.nonce == 1)
    }

    @Test func explicitNonceMatchesTheCounterNonce() throws {
        var counter = NoiseCipherState(key: key)
        _ = try counter.encrypt(associatedData: [], plaintext: [0])
        _ = try counter.encrypt(associatedData: [], plaintext: [0])
        let third = try counter.encrypt(associatedData: [7], plaintext: [5, 6])
        #expect(try NoiseCipherState(key: key).encrypt(nonce: 2, associatedData: [7], plaintext: [5, 6]) == third)
    }

    @Test func associatedDataIsAuthenticated() throws {
        var cipher = NoiseCipherState(key: key)
        let sealed = try cipher.encrypt(associatedData: [1], plaintext: [2])
        let error = #expect(throws: NoiseError.self) {
            try NoiseCipherState(key: key).decrypt(nonce: 0, associatedData: [9], ciphertext: sealed)
        }
        #expect(error?.code == .decryptionFailed)
    }

    @Test func reservedNonceIsNeverUsed() {
        let error = #expect(throws: NoiseError.self) {
            try NoiseCipherState(key: key).encrypt(nonce: .max, associatedData: [], plaintext: [])
        }
        #expect(error?.code == .nonceExhausted)
    }

    @Test func ciphertextShorterThanATagIsTooShort() {
        let error = #expect(throws: NoiseError.self) {
            try NoiseCipherState(key: key).decrypt(nonce: 0, associatedData: [], ciphertext: [1, 2, 3])
        }
        #expect(error?.code == .messageTooShort)
    }

    @Test func emptyCipherStatePassesPlaintextThrough() throws {
        var empty = NoiseCipherState()
        #expect(try empty.encrypt(associatedData: [], plaintext: [1, 2]) == [1, 2])
    }

    @Test func rekeyChangesTheKeyOnBothSidesAlike() throws {
        var sender = NoiseCipherState(key: key)
        var receiver = NoiseCipherState(key: key)
        let before = try sender.encrypt(nonce: 0, associatedData: [], plaintext: [1])
        try sender.rekey()
        try receiver.rekey()
        let after = try sender.encrypt(nonce: 0, associatedData: [], plaintext: [1])
        #expect(before != after)
        #expect(try receiver.decrypt(nonce: 0, associatedData: [], ciphertext: after) == [1])
    }
}
