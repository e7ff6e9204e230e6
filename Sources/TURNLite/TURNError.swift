import STUNLite

/// Why a TURN operation failed (RFC 8656 §6–12): STUNLite's client error, whose open codes TURN extends,
/// so a transaction's timeout or error response reaches TURN callers as it is.
public typealias TURNError = STUNClientError

extension STUNClientError.Code {
    /// The server rejected our credentials after the challenge (RFC 8489 §9.2.5).
    public static let unauthenticated = Self("unauthenticated")
    /// The operation needs an allocation and there is none (RFC 8656 §7).
    public static let noAllocation = Self("no-allocation")
    /// The TURN client was closed, or its socket or connection closed under it.
    public static let closed = Self("closed")
}
