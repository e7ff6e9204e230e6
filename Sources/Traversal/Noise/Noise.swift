/// Constants of `Noise_XX_25519_ChaChaPoly_SHA256` (Noise Protocol Framework, revision 34).
public enum Noise {
    /// Largest Noise message, handshake or transport, in bytes (Noise §3).
    public static let maxMessageLength = 65535
    /// Length of a ChaChaPoly authentication tag (Noise §5.1, RFC 8439).
    public static let tagLength = 16
    /// Length of an X25519 public key or shared secret (Noise §12.1, `DHLEN`).
    public static let dhLength = 32
    /// Length of a SHA-256 digest (Noise §12.5, `HASHLEN`).
    public static let hashLength = 32
    /// Largest plaintext that fits one transport message.
    public static let maxPlaintextLength = maxMessageLength - tagLength
}

/// Why a Noise operation failed.
public struct NoiseError: CodedError, Hashable {
    /// A stable reason code.
    public struct Code: ErrorCode {
        /// The code's stable name.
        public let name: String
        /// Authentication failed: the message was tampered with, or the keys differ (Noise §5.1).
        public static let decryptionFailed = Code(name: "decryption-failed")
        /// The message ended before all its fields (Noise §5.3 `ReadMessage`).
        public static let messageTooShort = Code(name: "message-too-short")
        /// The message exceeds ``Noise/maxMessageLength`` (Noise §3).
        public static let messageTooLong = Code(name: "message-too-long")
        /// The nonce reached 2^64−1, which is reserved (Noise §5.1).
        public static let nonceExhausted = Code(name: "nonce-exhausted")
        /// A public key was malformed or gave an all-zero shared secret.
        public static let invalidKey = Code(name: "invalid-key")
        /// A message was written or read out of turn, or after the handshake ended.
        public static let outOfOrder = Code(name: "out-of-order")
        /// Transport keys were requested before the handshake finished.
        public static let handshakeIncomplete = Code(name: "handshake-incomplete")
    }

    /// What went wrong.
    public let code: Code
    /// Where and why.
    public let detail: String
}
