import Crypto
import _CryptoExtras

/// Password-style key derivation used by ``DeviceID`` and ``PasswordVerifier``.
enum KeyDerivation {
    /// scrypt cost parameters (RFC 7914 §2).
    struct ScryptCost: Sendable, Hashable {
        /// CPU/memory cost `N`, a power of two greater than 1.
        var rounds: Int
        /// Block size `r`.
        var blockSize: Int
        /// Parallelisation `p`.
        var parallelism: Int

        /// Memory scrypt needs for these parameters, `128 · r · N` bytes (RFC 7914 §5).
        var memoryBytes: Int { 128 * blockSize * rounds }
    }

    /// `scrypt(P, S, N, r, p, dkLen)` (RFC 7914 §6), via swift-crypto's BoringSSL backend.
    static func scrypt(password: [UInt8], salt: [UInt8], cost: ScryptCost, length: Int) throws -> [UInt8] {
        let key = try KDF.Scrypt.deriveKey(
            from: password, salt: salt, outputByteCount: length,
            rounds: cost.rounds, blockSize: cost.blockSize, parallelism: cost.parallelism)
        return key.withUnsafeBytes { Array($0) }
    }

    /// Whether two byte strings are equal, in time that depends only on their lengths.
    static func constantTimeEquals(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
        return difference == 0
    }
}
