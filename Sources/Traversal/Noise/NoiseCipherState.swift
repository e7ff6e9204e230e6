import Crypto

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A Noise `CipherState`: a ChaChaPoly key and a 64-bit nonce counter (Noise §5.1, §12.3).
///
/// Value type: copying it copies the counter, so keep one owner per direction.
public struct NoiseCipherState: Sendable {
    /// `2^64 − 1`, reserved by Noise §5.1 and never used to encrypt.
    public static let reservedNonce = UInt64.max

    /// The key `k`, or nil while empty.
    var key: SymmetricKey?
    /// The next nonce `n` for ``encrypt(associatedData:plaintext:)``.
    public private(set) var nonce: UInt64 = 0

    /// An empty cipher state (`InitializeKey(empty)`).
    public init() {}

    /// A cipher state keyed with 32 bytes `key` and nonce 0 (`InitializeKey(key)`).
    public init(key: some ContiguousBytes) {
        self.key = SymmetricKey(data: key)
    }

    /// Whether a key is set (`HasKey()`).
    public var hasKey: Bool { key != nil }

    /// `EncryptWithAd(ad, plaintext)`: seals with the current nonce, then increments it.
    ///
    /// Without a key, returns the plaintext unchanged, as Noise §5.1 defines.
    public mutating func encrypt(associatedData: [UInt8], plaintext: [UInt8]) throws -> [UInt8] {
        guard key != nil else { return plaintext }
        let sealed = try encrypt(nonce: nonce, associatedData: associatedData, plaintext: plaintext)
        nonce += 1
        return sealed
    }

    /// `DecryptWithAd(ad, ciphertext)`: opens with the current nonce, incrementing it only on success.
    public mutating func decrypt(associatedData: [UInt8], ciphertext: [UInt8]) throws -> [UInt8] {
        guard key != nil else { return ciphertext }
        let opened = try decrypt(nonce: nonce, associatedData: associatedData, ciphertext: ciphertext)
        nonce += 1
        return opened
    }

    /// Seals with an explicit nonce, leaving the counter alone (for datagrams, Noise §11.4).
    public func encrypt(nonce: UInt64, associatedData: [UInt8], plaintext: [UInt8]) throws -> [UInt8] {
        guard let key else {
            throw NoiseError(code: .handshakeIncomplete, detail: "cipher state has no key")
        }
        guard nonce != Self.reservedNonce else {
            throw NoiseError(code: .nonceExhausted, detail: "nonce 2^64-1 is reserved")
        }
        guard plaintext.count <= Noise.maxPlaintextLength else {
            throw NoiseError(
                code: .messageTooLong,
                detail: "plaintext of \(plaintext.count) bytes exceeds \(Noise.maxPlaintextLength)")
        }
        do {
            let box = try ChaChaPoly.seal(
                plaintext, using: key, nonce: Self.chaChaNonce(nonce), authenticating: associatedData)
            return Array(box.ciphertext) + Array(box.tag)
        } catch {
            throw NoiseError(code: .invalidKey, detail: "ChaChaPoly seal failed: \(error)")
        }
    }

    /// Opens with an explicit nonce, leaving the counter alone (for datagrams, Noise §11.4).
    public func decrypt(nonce: UInt64, associatedData: [UInt8], ciphertext: [UInt8]) throws -> [UInt8] {
        guard let key else {
            throw NoiseError(code: .handshakeIncomplete, detail: "cipher state has no key")
        }
        guard nonce != Self.reservedNonce else {
            throw NoiseError(code: .nonceExhausted, detail: "nonce 2^64-1 is reserved")
        }
        guard ciphertext.count >= Noise.tagLength else {
            throw NoiseError(
                code: .messageTooShort, detail: "ciphertext of \(ciphertext.count) bytes has no room for a tag")
        }
        guard ciphertext.count <= Noise.maxMessageLength else {
            throw NoiseError(
                code: .messageTooLong,
                detail: "ciphertext of \(ciphertext.count) bytes exceeds \(Noise.maxMessageLength)")
        }
        do {
            let split = ciphertext.count - Noise.tagLength
            let box = try ChaChaPoly.SealedBox(
                nonce: Self.chaChaNonce(nonce), ciphertext: ciphertext[..<split], tag: ciphertext[split...])
            return Array(try ChaChaPoly.open(box, using: key, authenticating: associatedData))
        } catch {
            throw NoiseError(code: .decryptionFailed, detail: "authentication failed at nonce \(nonce)")
        }
    }

    /// `Rekey()`: replaces the key with `ENCRYPT(k, 2^64−1, empty, zeros)[0..<32]` (Noise §4.2, §11.3).
    public mutating func rekey() throws {
        guard let key else {
            throw NoiseError(code: .handshakeIncomplete, detail: "cipher state has no key")
        }
        let zeros = [UInt8](repeating: 0, count: 32)
        let box = try ChaChaPoly.seal(zeros, using: key, nonce: Self.chaChaNonce(Self.reservedNonce), authenticating: [UInt8]())
        self.key = SymmetricKey(data: Array(box.ciphertext.prefix(32)))
    }

    /// The 96-bit ChaChaPoly nonce: 32 zero bits then `n` little-endian (Noise §12.3).
    static func chaChaNonce(_ counter: UInt64) throws -> ChaChaPoly.Nonce {
        var bytes = [UInt8](repeating: 0, count: 4)
        withUnsafeBytes(of: counter.littleEndian) { bytes.append(contentsOf: $0) }
        return try ChaChaPoly.Nonce(data: bytes)
    }
}
