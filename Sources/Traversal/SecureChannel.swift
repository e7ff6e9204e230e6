/// A channel that protects application data with the transport keys of a ``SecureSession``.
public protocol SecureTransportChannel: Sendable {
    /// A channel sealing with `send` and opening with `receive` (both keyed).
    init(send: NoiseCipherState, receive: NoiseCipherState)
}

extension SecureTransportChannel {
    /// A channel over a finished handshake's keys.
    public init(session: SecureSession) {
        self.init(send: session.send, receive: session.receive)
    }
}

/// Encrypted datagrams for UDP paths: each packet carries its own counter, used as the nonce.
///
/// Packet format:
///
/// ```
/// +--------------------------------+-----------------------------------+
/// | counter (8 bytes, big-endian)  | ChaChaPoly ciphertext ‖ tag (16)  |
/// +--------------------------------+-----------------------------------+
/// ```
///
/// The receiver checks the counter against a ``ReplayWindow`` before decrypting and records it
/// only after the tag verifies (Noise §11.4 out-of-order transport; RFC 6479 window). Reordered
/// packets inside the window are accepted.
public struct SecureDatagramChannel: SecureTransportChannel {
    /// Bytes of the explicit counter header.
    public static let counterLength = 8
    /// Largest plaintext in one datagram.
    public static let maxPlaintextLength = Noise.maxPlaintextLength

    /// Seals outgoing packets (its own counter is unused: nonces are explicit).
    var sendCipher: NoiseCipherState
    /// Opens incoming packets.
    let receiveCipher: NoiseCipherState
    /// Counter for the next outgoing packet.
    public private(set) var nextCounter: UInt64 = 0
    /// Anti-replay state for incoming packets.
    public private(set) var replayWindow = ReplayWindow()

    /// A datagram channel over two keyed cipher states.
    public init(send: NoiseCipherState, receive: NoiseCipherState) {
        self.sendCipher = send
        self.receiveCipher = receive
    }

    /// Encrypts `plaintext` into one packet, consuming one counter.
    public mutating func seal(_ plaintext: [UInt8]) throws -> [UInt8] {
        try SecureChannelError.checkSealable(plaintext)
        let counter = nextCounter
        let header = Self.encode(counter: counter)
        let sealed = try sendCipher.encrypt(nonce: counter, associatedData: header, plaintext: plaintext)
        nextCounter += 1
        return header + sealed
    }

    /// Authenticates and decrypts one packet; rejects replays, too-old and tampered packets.
    public mutating func open(_ packet: [UInt8]) throws -> [UInt8] {
        guard packet.count >= Self.counterLength + Noise.tagLength else {
            throw SecureChannelError(
                code: .truncated, detail: "packet of \(packet.count) bytes is shorter than header and tag")
        }
        let header = Array(packet[..<Self.counterLength])
        let counter = header.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        switch replayWindow.check(counter) {
        case .fresh: break
        case .replayed: throw SecureChannelError(code: .replayed, detail: "counter \(counter) seen before")
        case .tooOld:
            throw SecureChannelError(
                code: .tooOld, detail: "counter \(counter) is below the window (highest \(replayWindow.highest))")
        }
        let plaintext: [UInt8]
        do {
            plaintext = try receiveCipher.decrypt(
                nonce: counter, associatedData: header, ciphertext: Array(packet[Self.counterLength...]))
        } catch {
            throw SecureChannelError(code: .authenticationFailed, detail: "packet \(counter): \(error)")
        }
        replayWindow.accept(counter)
        return plaintext
    }

    /// The 8-byte big-endian header for `counter`.
    static func encode(counter: UInt64) -> [UInt8] {
        counter.bigEndianBytes
    }
}

/// Encrypted, length-prefixed frames for stream paths (TCP, TLS relay); nonces are implicit.
///
/// ```
/// +--------------------------------+-----------------------------------+
/// | length (4 bytes, big-endian)   | ChaChaPoly ciphertext ‖ tag (16)  |
/// +--------------------------------+-----------------------------------+
/// ```
///
/// After any receive error the stream is unusable (framing or keys are lost) and every later
/// call throws `.streamFailed`.
public struct SecureStreamChannel: SecureTransportChannel {
    /// Seals outgoing frames, nonce counting up from 0.
    var sendCipher: NoiseCipherState
    /// Opens incoming frames in order.
    var receiveCipher: NoiseCipherState
    /// Splits incoming bytes into frames.
    var decoder = LengthPrefixedFrameDecoder()
    /// Whether a receive error has poisoned the stream.
    var failed = false

    /// A stream channel over two keyed cipher states.
    public init(send: NoiseCipherState, receive: NoiseCipherState) {
        self.sendCipher = send
        self.receiveCipher = receive
    }

    /// Encrypts one message into one frame.
    public mutating func seal(_ plaintext: [UInt8]) throws -> [UInt8] {
        try SecureChannelError.checkSealable(plaintext)
        let sealed = try sendCipher.encrypt(associatedData: [], plaintext: plaintext)
        return LengthPrefixedFrameDecoder.header(for: sealed.count) + sealed
    }

    /// Feeds received bytes (any split) and returns every message completed by them, in order.
    public mutating func receive(_ bytes: [UInt8]) throws -> [[UInt8]] {
        guard !failed else {
            throw SecureChannelError(code: .streamFailed, detail: "stream already failed")
        }
        do {
            return try decoder.decode(bytes).map { frame in
                do {
                    return try receiveCipher.decrypt(associatedData: [], ciphertext: frame)
                } catch {
                    throw SecureChannelError(code: .authenticationFailed, detail: "frame: \(error)")
                }
            }
        } catch {
            failed = true
            throw error
        }
    }
}

/// Splits a byte stream into frames prefixed by a 4-byte big-endian length.
///
/// A frame whose announced length exceeds ``maxFrameLength`` is refused as soon as its header
/// arrives, before any of its body is buffered; partial frames wait for more input.
public struct LengthPrefixedFrameDecoder: Sendable {
    /// Bytes of the length prefix.
    public static let headerLength = 4
    /// Default largest frame body: one Noise transport message (Noise §3).
    public static let defaultMaxFrameLength = Noise.maxMessageLength

    /// Largest frame body this decoder accepts.
    public let maxFrameLength: Int
    /// Bytes received but not yet returned.
    var buffer: [UInt8] = []

    /// A decoder refusing frames larger than `maxFrameLength`.
    public init(maxFrameLength: Int = defaultMaxFrameLength) {
        self.maxFrameLength = maxFrameLength
    }

    /// Number of bytes held waiting for the rest of a frame.
    public var bufferedByteCount: Int { buffer.count }

    /// Appends `bytes` and returns every complete frame body, in order.
    public mutating func decode(_ bytes: [UInt8]) throws -> [[UInt8]] {
        var frames = [[UInt8]]()
        var offset = 0
        var input = buffer + bytes
        buffer = []
        while input.count - offset >= Self.headerLength {
            let length = input[offset..<(offset + Self.headerLength)].reduce(0) { $0 << 8 | Int($1) }
            guard length <= maxFrameLength else {
                input = []
                throw SecureChannelError(
                    code: .tooLarge, detail: "frame announces \(length) bytes, limit \(maxFrameLength)")
            }
            let end = offset + Self.headerLength + length
            guard input.count >= end else { break }
            frames.append(Array(input[(offset + Self.headerLength)..<end]))
            offset = end
        }
        buffer = Array(input[offset...])
        return frames
    }

    /// The 4-byte big-endian length prefix for a body of `length` bytes.
    static func header(for length: Int) -> [UInt8] {
        withUnsafeBytes(of: UInt32(length).bigEndian) { Array($0) }
    }
}

/// Why a secure channel refused to send or receive.
public struct SecureChannelError: CodedError, Hashable {
    /// A stable reason code.
    public struct Code: ErrorCode {
        /// The code's stable name.
        public let name: String
        /// The packet's counter was accepted before.
        public static let replayed = Code(name: "replayed")
        /// The packet's counter is below the replay window.
        public static let tooOld = Code(name: "too-old")
        /// The tag did not verify: tampered, or not for these keys.
        public static let authenticationFailed = Code(name: "authentication-failed")
        /// The packet is shorter than its header and tag.
        public static let truncated = Code(name: "truncated")
        /// A message or frame exceeds the maximum size.
        public static let tooLarge = Code(name: "too-large")
        /// The stream failed earlier and cannot continue.
        public static let streamFailed = Code(name: "stream-failed")
    }

    /// What went wrong.
    public let code: Code
    /// Why.
    public let detail: String

    /// Throws `.tooLarge` unless `plaintext` fits one Noise transport message.
    static func checkSealable(_ plaintext: [UInt8]) throws {
        guard plaintext.count <= Noise.maxPlaintextLength else {
            throw SecureChannelError(
                code: .tooLarge, detail: "plaintext of \(plaintext.count) bytes exceeds \(Noise.maxPlaintextLength)")
        }
    }
}
