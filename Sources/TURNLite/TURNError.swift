import STUNLite

/// Why a TURN operation failed (RFC 8656 §6–12); codes are open, so new ones don't break callers.
public struct TURNError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The class of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// A short kebab-case name.
        public let name: String
        private init(_ name: String) { self.name = name }
        /// The name.
        public var description: String { name }
        /// A socket or connection could not be opened, or closed under us.
        public static let socket = Code("socket")
        /// No response in time (RFC 8489 §6.2).
        public static let timeout = Code("timeout")
        /// The server answered with an error response; see ``TURNError/errorCode`` (RFC 8656 §6).
        public static let errorResponse = Code("error-response")
        /// The server's challenge or response was malformed or lacked a required attribute.
        public static let badResponse = Code("bad-response")
        /// The server rejected our credentials after the challenge (RFC 8489 §9.2.5).
        public static let unauthenticated = Code("unauthenticated")
        /// The operation needs an allocation and there is none (RFC 8656 §7).
        public static let noAllocation = Code("no-allocation")
        /// The client was closed.
        public static let closed = Code("closed")
    }

    /// What went wrong.
    public var code: Code
    /// The server's ERROR-CODE, for `errorResponse` and `unauthenticated`.
    public var errorCode: ErrorCode?
    /// Extra words for people.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, errorCode: ErrorCode? = nil, detail: String = "") {
        self.code = code
        self.errorCode = errorCode
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
