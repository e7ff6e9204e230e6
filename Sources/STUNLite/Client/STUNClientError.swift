/// Why a STUN client call failed; TURNLite's `TURNError` is this type too, with TURN's codes added.
public struct STUNClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The class of failure; new codes may be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// A short kebab-case name.
        public let name: String
        /// A code; modules built on STUNLite declare their own codes with it.
        package init(_ name: String) { self.name = name }
        /// The name.
        public var description: String { name }
        /// No response within the retransmission schedule or Ti.
        public static let timeout = Code("timeout")
        /// The socket could not be opened, bound or connected, or closed under us.
        public static let socket = Code("socket")
        /// The server answered with an error response (see ``STUNClientError/errorCode`` and ``STUNClientError/response``).
        public static let errorResponse = Code("error-response")
        /// The response lacked the attribute we asked for, or was malformed.
        public static let badResponse = Code("bad-response")
        /// The connection ended before a response arrived.
        public static let connectionClosed = Code("connection-closed")
    }

    /// What went wrong.
    public var code: Code
    /// The server's ERROR-CODE, for `errorResponse`.
    public var errorCode: ErrorCode?
    /// The error response itself, for `errorResponse`: its REALM and NONCE answer a 401 or 438 (RFC 8489 §9.2.5).
    public var response: STUNMessage?
    /// Extra words for people.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, errorCode: ErrorCode? = nil, response: STUNMessage? = nil, detail: String = "") {
        self.code = code
        self.errorCode = errorCode
        self.response = response
        self.detail = detail
    }

    /// `error-response 486 Allocation Quota Reached: detail`.
    public var description: String {
        var s = code.name
        if let errorCode { s += " \(errorCode)" }
        if !detail.isEmpty { s += ": \(detail)" }
        return s
    }
}
