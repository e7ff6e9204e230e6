import Crypto

/// A Noise `SymmetricState`: chaining key, handshake hash and a cipher state (Noise §5.2).
public struct NoiseSymmetricState: Sendable {
    /// The chaining key `ck`.
    var chainingKey: [UInt8]
    /// The handshake hash `h`.
    public private(set) var handshakeHash: [UInt8]
    /// The handshake's cipher state.
    var cipher = NoiseCipherState()

    /// `InitializeSymmetric(protocol_name)`: `h` is the name zero-padded, or its hash if longer
    /// than `HASHLEN`; `ck = h`.
    public init(protocolName: String) {
        let name = Array(protocolName.utf8)
        if name.count <= Noise.hashLength {
            handshakeHash = name + [UInt8](repeating: 0, count: Noise.hashLength - name.count)
        } else {
            handshakeHash = Array(SHA256.hash(data: name))
        }
        chainingKey = handshakeHash
    }

    /// `MixKey(input_key_material)`: advances `ck` and keys the cipher (Noise §5.2).
    public mutating func mixKey(_ inputKeyMaterial: [UInt8]) {
        let (nextChainingKey, key) = Self.hkdf(chainingKey: chainingKey, inputKeyMaterial: inputKeyMaterial)
        chainingKey = nextChainingKey
        cipher = NoiseCipherState(key: key)
    }

    /// `MixHash(data)`: `h = SHA-256(h ‖ data)`.
    public mutating func mixHash(_ data: [UInt8]) {
        var hasher = SHA256()
        hasher.update(data: handshakeHash)
        hasher.update(data: data)
        handshakeHash = Array(hasher.finalize())
    }

    /// `EncryptAndHash(plaintext)`: encrypts with `h` as associated data, then mixes the ciphertext.
    public mutating func encryptAndHash(_ plaintext: [UInt8]) throws -> [UInt8] {
        let ciphertext = try cipher.encrypt(associatedData: handshakeHash, plaintext: plaintext)
        mixHash(ciphertext)
        return ciphertext
    }

    /// `DecryptAndHash(ciphertext)`: decrypts with `h` as associated data, then mixes the ciphertext.
    public mutating func decryptAndHash(_ ciphertext: [UInt8]) throws -> [UInt8] {
        let plaintext = try cipher.decrypt(associatedData: handshakeHash, ciphertext: ciphertext)
        mixHash(ciphertext)
        return plaintext
    }

    /// `Split()`: the initiator-to-responder and responder-to-initiator cipher states.
    public func split() -> (initiatorToResponder: NoiseCipherState, responderToInitiator: NoiseCipherState) {
        let (first, second) = Self.hkdf(chainingKey: chainingKey, inputKeyMaterial: [])
        return (NoiseCipherState(key: first), NoiseCipherState(key: second))
    }

    /// `HKDF(ck, ikm, 2)` as Noise §4.3 defines it on HMAC-SHA256 (RFC 2104).
    static func hkdf(chainingKey: [UInt8], inputKeyMaterial: [UInt8]) -> ([UInt8], [UInt8]) {
        let tempKey = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(
            for: inputKeyMaterial, using: SymmetricKey(data: chainingKey))))
        let output1 = Array(HMAC<SHA256>.authenticationCode(for: [UInt8(1)], using: tempKey))
        let output2 = Array(HMAC<SHA256>.authenticationCode(for: output1 + [UInt8(2)], using: tempKey))
        return (output1, output2)
    }
}
