import Crypto

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Which side of a Noise handshake this is.
public enum NoiseRole: Sendable, Hashable {
    /// Sends the first message.
    case initiator
    /// Receives the first message.
    case responder
}

/// A token of a Noise message pattern (Noise §7.1).
public enum NoiseToken: Sendable, Hashable {
    /// Send or receive an ephemeral public key.
    case e
    /// Send or receive a static public key, encrypted once a key is set.
    case s
    /// DH between the two ephemeral keys.
    case ee
    /// DH between initiator ephemeral and responder static.
    case es
    /// DH between initiator static and responder ephemeral.
    case se
    /// DH between the two static keys.
    case ss
}

/// A Noise handshake pattern without pre-messages (Noise §7).
public struct NoisePattern: Sendable, Hashable {
    /// The pattern's name, e.g. `XX`.
    public let name: String
    /// Message patterns, alternating initiator → responder, responder → initiator, ….
    public let messages: [[NoiseToken]]

    /// `XX` (Noise §7.5): mutual authentication, each static key sent encrypted.
    ///
    /// ```
    /// -> e
    /// <- e, ee, s, es
    /// -> s, se
    /// ```
    public static let xx = NoisePattern(name: "XX", messages: [[.e], [.e, .ee, .s, .es], [.s, .se]])

    /// The full protocol name with this library's DH, cipher and hash (Noise §8).
    public var protocolName: String { "Noise_\(name)_25519_ChaChaPoly_SHA256" }
}

/// The two transport cipher states after a finished handshake, from one side's point of view.
public struct NoiseTransportKeys: Sendable {
    /// Encrypts what this side sends.
    public var send: NoiseCipherState
    /// Decrypts what this side receives.
    public var receive: NoiseCipherState
    /// The final handshake hash, a unique channel binding (Noise §11.2).
    public let handshakeHash: [UInt8]
}

/// A Noise `HandshakeState` for `Noise_XX_25519_ChaChaPoly_SHA256` (Noise §5.3); sans-I/O.
///
/// Feed it the peer's messages with ``readMessage(_:)`` and get yours from
/// ``writeMessage(payload:)``; after the last message, ``split()`` gives the transport keys.
/// A failed read or write leaves the state unchanged.
public struct NoiseHandshakeState: Sendable {
    /// This side's role.
    public let role: NoiseRole
    /// The handshake pattern.
    public let pattern: NoisePattern
    /// Symmetric state (`ck`, `h`, cipher).
    var symmetric: NoiseSymmetricState
    /// Local static key `s`.
    let localStatic: Curve25519.KeyAgreement.PrivateKey
    /// Local ephemeral key `e`: injected, or generated when the `e` token is written.
    var localEphemeral: Curve25519.KeyAgreement.PrivateKey?
    /// Remote static key `rs`, once received.
    public private(set) var remoteStaticKey: Curve25519.KeyAgreement.PublicKey?
    /// Remote ephemeral key `re`, once received.
    var remoteEphemeral: Curve25519.KeyAgreement.PublicKey?
    /// Index of the next message pattern to process.
    public private(set) var messageIndex = 0

    /// `Initialize(...)`: starts a handshake; pass `ephemeralKey` only to reproduce test vectors.
    public init(
        role: NoiseRole,
        pattern: NoisePattern = .xx,
        prologue: [UInt8] = [],
        staticKey: Curve25519.KeyAgreement.PrivateKey,
        ephemeralKey: Curve25519.KeyAgreement.PrivateKey? = nil
    ) {
        self.role = role
        self.pattern = pattern
        self.localStatic = staticKey
        self.localEphemeral = ephemeralKey
        self.symmetric = NoiseSymmetricState(protocolName: pattern.protocolName)
        symmetric.mixHash(prologue)
    }

    /// Whether every message of the pattern has been written or read.
    public var isComplete: Bool { messageIndex >= pattern.messages.count }

    /// Whether the next message is ours to write.
    public var isOurTurn: Bool {
        !isComplete && (messageIndex % 2 == 0) == (role == .initiator)
    }

    /// The current handshake hash `h` (`GetHandshakeHash()`), a channel binding once complete.
    public var handshakeHash: [UInt8] { symmetric.handshakeHash }

    /// `WriteMessage(payload, message_buffer)`: the next handshake message carrying `payload`.
    public mutating func writeMessage(payload: [UInt8] = []) throws -> [UInt8] {
        guard isOurTurn else {
            throw NoiseError(code: .outOfOrder, detail: "message \(messageIndex) is not ours to write")
        }
        var next = self
        var message = [UInt8]()
        for token in pattern.messages[messageIndex] {
            switch token {
            case .e:
                let ephemeral = next.localEphemeral ?? Curve25519.KeyAgreement.PrivateKey()
                next.localEphemeral = ephemeral
                let publicKey = Array(ephemeral.publicKey.rawRepresentation)
                message += publicKey
                next.symmetric.mixHash(publicKey)
            case .s:
                message += try next.symmetric.encryptAndHash(Array(localStatic.publicKey.rawRepresentation))
            case .ee, .es, .se, .ss:
                try next.mixDH(token)
            }
        }
        message += try next.symmetric.encryptAndHash(payload)
        guard message.count <= Noise.maxMessageLength else {
            throw NoiseError(
                code: .messageTooLong,
                detail: "handshake message of \(message.count) bytes exceeds \(Noise.maxMessageLength)")
        }
        next.messageIndex += 1
        self = next
        return message
    }

    /// `ReadMessage(message, payload_buffer)`: processes the peer's message, returning its payload.
    public mutating func readMessage(_ message: [UInt8]) throws -> [UInt8] {
        guard !isComplete, !isOurTurn else {
            throw NoiseError(code: .outOfOrder, detail: "message \(messageIndex) is not the peer's to send")
        }
        guard message.count <= Noise.maxMessageLength else {
            throw NoiseError(
                code: .messageTooLong,
                detail: "handshake message of \(message.count) bytes exceeds \(Noise.maxMessageLength)")
        }
        var next = self
        var offset = 0
        let index = messageIndex
        func take(_ count: Int, _ field: String) throws -> [UInt8] {
            guard message.count - offset >= count else {
                throw NoiseError(
                    code: .messageTooShort,
                    detail: "message \(index) ends at byte \(message.count) inside \(field) at offset \(offset)")
            }
            defer { offset += count }
            return Array(message[offset..<(offset + count)])
        }
        for token in pattern.messages[messageIndex] {
            switch token {
            case .e:
                let raw = try take(Noise.dhLength, "ephemeral key")
                next.remoteEphemeral = try Self.publicKey(raw)
                next.symmetric.mixHash(raw)
            case .s:
                let length = Noise.dhLength + (next.symmetric.cipher.hasKey ? Noise.tagLength : 0)
                let raw = try next.symmetric.decryptAndHash(try take(length, "static key"))
                next.remoteStaticKey = try Self.publicKey(raw)
            case .ee, .es, .se, .ss:
                try next.mixDH(token)
            }
        }
        let payload = try next.symmetric.decryptAndHash(Array(message[offset...]))
        next.messageIndex += 1
        self = next
        return payload
    }

    /// `Split()` after the last message: the transport cipher states, oriented for this side.
    public func split() throws -> NoiseTransportKeys {
        guard isComplete else {
            throw NoiseError(code: .handshakeIncomplete, detail: "handshake is at message \(messageIndex)")
        }
        let (initiatorToResponder, responderToInitiator) = symmetric.split()
        switch role {
        case .initiator:
            return NoiseTransportKeys(
                send: initiatorToResponder, receive: responderToInitiator, handshakeHash: handshakeHash)
        case .responder:
            return NoiseTransportKeys(
                send: responderToInitiator, receive: initiatorToResponder, handshakeHash: handshakeHash)
        }
    }

    /// Performs the DH a token names and mixes the result into the chaining key (Noise §5.3).
    mutating func mixDH(_ token: NoiseToken) throws {
        let initiator = role == .initiator
        let pair: (Curve25519.KeyAgreement.PrivateKey?, Curve25519.KeyAgreement.PublicKey?)
        switch token {
        case .ee: pair = (localEphemeral, remoteEphemeral)
        case .es: pair = initiator ? (localEphemeral, remoteStaticKey) : (localStatic, remoteEphemeral)
        case .se: pair = initiator ? (localStatic, remoteEphemeral) : (localEphemeral, remoteStaticKey)
        case .ss: pair = (localStatic, remoteStaticKey)
        case .e, .s: return
        }
        guard let local = pair.0, let remote = pair.1 else {
            throw NoiseError(code: .outOfOrder, detail: "\(token) before both of its keys are known")
        }
        let secret: SharedSecret
        do {
            secret = try local.sharedSecretFromKeyAgreement(with: remote)
        } catch {
            throw NoiseError(code: .invalidKey, detail: "\(token): X25519 gave no usable shared secret")
        }
        let bytes = secret.withUnsafeBytes { Array($0) }
        // A low-order peer key yields all zeros; refuse it so both keys always contribute (Noise §12.1 allows this).
        guard bytes.contains(where: { $0 != 0 }) else {
            throw NoiseError(code: .invalidKey, detail: "\(token): all-zero X25519 shared secret (low-order key)")
        }
        symmetric.mixKey(bytes)
    }

    /// An X25519 public key from 32 raw bytes.
    static func publicKey(_ raw: [UInt8]) throws -> Curve25519.KeyAgreement.PublicKey {
        do {
            return try Curve25519.KeyAgreement.PublicKey(rawRepresentation: raw)
        } catch {
            throw NoiseError(code: .invalidKey, detail: "not an X25519 public key")
        }
    }
}
