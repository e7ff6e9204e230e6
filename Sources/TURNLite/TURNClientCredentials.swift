import STUNLite

/// The client side of long-term credentials without I/O: signs requests once REALM and NONCE are known
/// and learns them from 401 and 438 answers (RFC 8489 §9.2.5, RFC 8656 §7.3).
///
/// ```
///  client                                   server
///    | request (unsigned) -------------------->|
///    |<--------------------- 401 REALM NONCE    |   absorb(…): retry
///    | request USERNAME REALM NONCE MI -------->|
///    |<--------------------- 438 NONCE          |   absorb(…): retry (stale nonce)
///    | request with the new NONCE ------------->|
///    |<--------------------- success            |
/// ```
///
/// One value serves every request of one client; the ``Transaction`` a request carries remembers
/// whether its key was already refused, so a second 401 ends it instead of looping.
public struct TURNClientCredentials: Sendable {
    /// The long-term user name.
    public let username: String
    /// The long-term password.
    public let password: String
    /// REALM from the last challenge, if any.
    public private(set) var realm: String?
    /// NONCE from the last challenge, if any.
    public private(set) var nonce: String?
    /// The long-term key for ``realm`` (RFC 8489 §9.2.2), once a REALM is known.
    public private(set) var key: [UInt8]?

    /// Per-request memory across challenge rounds.
    public struct Transaction: Sendable {
        /// The key the last attempt was signed with, `nil` when it went unsigned.
        public fileprivate(set) var signingKey: [UInt8]?
        fileprivate var keyRefused = false
        /// A fresh transaction.
        public init() {}
    }

    /// Creates credentials with nothing learned yet.
    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// Adds USERNAME, REALM and NONCE when a challenge has been seen and returns the key to sign with,
    /// or returns `nil` and leaves the message unsigned (RFC 8489 §9.2.3).
    public func sign(_ message: inout STUNMessage, in transaction: inout Transaction) -> [UInt8]? {
        guard let realm, let nonce, let key else {
            transaction.signingKey = nil
            return nil
        }
        message.append(Username(username))
        message.append(Realm(realm))
        message.append(Nonce(nonce))
        transaction.signingKey = key
        return key
    }

    /// Learns from an error response to a request of `transaction`: returns after a usable 401 or 438
    /// (send the request again, signed), else throws the error that ends the request (RFC 8489 §9.2.5).
    public mutating func absorb(_ response: STUNMessage, method: STUNMethod,
                                in transaction: inout Transaction) throws(TURNError) {
        let error = (try? response.attribute(ErrorCode.self)) ?? ErrorCode(500, reason: "missing ERROR-CODE")
        switch error.code {
        case ErrorCode.unauthenticated where !transaction.keyRefused:
            // First challenge, or our nonce was replaced: take REALM and NONCE and sign.
            guard let r = try? response.attribute(Realm.self), let n = try? response.attribute(Nonce.self) else {
                throw TURNError(.badResponse, errorCode: error, detail: "401 without REALM and NONCE")
            }
            transaction.keyRefused = transaction.signingKey != nil
            nonce = n.text
            learnRealm(r.text)
        case ErrorCode.unauthenticated:
            throw TURNError(.unauthenticated, errorCode: error, detail: "credentials rejected for \(username)")
        case ErrorCode.staleNonce:
            guard let n = try? response.attribute(Nonce.self) else {
                throw TURNError(.badResponse, errorCode: error, detail: "438 without NONCE")
            }
            nonce = n.text
            if let r = try? response.attribute(Realm.self) { learnRealm(r.text) }
        default:
            throw TURNError(.errorResponse, errorCode: error, detail: "\(method) refused")
        }
    }

    /// The same REALM and NONCE under another user name and password, so a renewed TURN REST grant
    /// signs its first request at once.
    public func renewed(username: String, password: String) -> TURNClientCredentials {
        var c = TURNClientCredentials(username: username, password: password)
        c.nonce = nonce
        if let realm { c.learnRealm(realm) }
        return c
    }

    private mutating func learnRealm(_ text: String) {
        guard text != realm || key == nil else { return }
        realm = text
        key = STUNCredentials.longTermKey(username: username, realm: text, password: password)
    }
}
