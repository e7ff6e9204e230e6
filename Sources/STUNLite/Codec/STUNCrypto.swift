import Crypto

/// Hashes, MACs and CRC used by STUN's integrity and fingerprint attributes.
public enum STUNCrypto {
    /// FINGERPRINT is the CRC-32 XORed with 0x5354554E (RFC 8489 §14.7).
    public static let fingerprintXOR: UInt32 = 0x5354_554E

    /// HMAC-SHA1, for MESSAGE-INTEGRITY (RFC 8489 §14.5).
    public static func hmacSHA1(key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        Array(HMAC<Insecure.SHA1>.authenticationCode(for: data, using: SymmetricKey(data: key)))
    }

    /// HMAC-SHA256, for MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
    public static func hmacSHA256(key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: key)))
    }

    /// Compares two byte strings in time that depends only on their lengths.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in a.indices { diff |= a[i] ^ b[i] }
        return diff == 0
    }

    /// CRC-32 as in ISO 3309 / ITU-T V.42 (the one zlib computes), used by FINGERPRINT (RFC 8489 §14.7).
    public static func crc32(_ data: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in data {
            crc = crcTable[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8)
        }
        return crc ^ 0xFFFF_FFFF
    }

    private static let crcTable: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }
}

/// Keys for STUN's short-term and long-term credential mechanisms (RFC 8489 §9).
public enum STUNCredentials {
    /// Short-term key: the password itself (RFC 8489 §9.1.1). OpaqueString preparation (RFC 8265)
    /// is left to the caller: passwords here are used as their UTF-8 bytes.
    public static func shortTermKey(password: String) -> [UInt8] { Array(password.utf8) }

    /// Long-term key: MD5 or SHA-256 of `username ":" realm ":" password` (RFC 8489 §9.2.2, §18.5.1).
    public static func longTermKey(username: String, realm: String, password: String,
                                   algorithm: STUNPasswordAlgorithm = .md5) -> [UInt8] {
        let input = Array("\(username):\(realm):\(password)".utf8)
        if algorithm == .sha256 { return Array(SHA256.hash(data: input)) }
        return Array(Insecure.MD5.hash(data: input))
    }

    /// USERHASH: SHA-256 of `username ":" realm` (RFC 8489 §14.4).
    public static func userhash(username: String, realm: String) -> [UInt8] {
        Array(SHA256.hash(data: Array("\(username):\(realm)".utf8)))
    }
}
