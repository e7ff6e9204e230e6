/// Why a channel could not be opened, or stopped carrying messages.
public struct ChannelError: CodedError, Hashable {
    /// A stable reason code.
    public struct Code: ErrorCode {
        /// The stable name.
        public let name: String
        /// The channel or its connection is closed.
        public static let closed = Code(name: "closed")
        /// A message exceeds ``PeerChannel/maxMessageSize``.
        public static let tooLarge = Code(name: "too-large")
        /// The peer has more channels open than ``PeerChannel/maxChannels`` allows.
        public static let tooManyChannels = Code(name: "too-many-channels")
        /// The application did not read: more than ``PeerChannel/receiveBufferLimit`` bytes waited.
        public static let receiveOverflow = Code(name: "receive-overflow")
        /// The peer broke the channel protocol (RFC 8832).
        public static let protocolViolation = Code(name: "protocol-violation")
        /// The SCTP engine failed or the association ended.
        public static let engineFailed = Code(name: "engine-failed")
        /// The association did not come up in time.
        public static let timeout = Code(name: "timeout")
    }

    /// What went wrong.
    public let code: Code
    /// Why, for people.
    public let detail: String

    /// Creates an error.
    public init(code: Code, detail: String) {
        self.code = code
        self.detail = detail
    }
}
