import Foundation
import TURNLite
import Traversal

/// Issues the short-lived TURN REST credentials the cloud hands both sides of an introduction.
///
/// User name `EXPIRY:REQUESTID` (EXPIRY in seconds since 1970), password
/// `base64(HMAC-SHA1(secret, username))`, which the relay checks with the same secret and no other
/// state (draft-uberti-behave-turn-rest §2.2; `TURNLite/TURNCredentials`).
public struct RelayGrantIssuer: Sendable {
    /// How long a grant lets its holder allocate and refresh, by default (the session must be set up and
    /// relayed within it: a refresh after expiry is refused).
    public static let defaultLifetime: Duration = .seconds(3600)

    /// The secret shared with the relay.
    public let secret: String
    /// Relay URLs put in every grant, e.g. `turns:203.0.113.10:5349` (the signalling's TLS port, shared by
    /// ALPN), `turn:203.0.113.10:3479?transport=udp`.
    public let urls: [String]
    /// How long each grant is valid.
    public let lifetime: Duration

    /// Creates an issuer.
    public init(secret: String, urls: [String], lifetime: Duration = Self.defaultLifetime) {
        self.secret = secret
        self.urls = urls
        self.lifetime = lifetime
    }

    /// A grant for one introduction, valid from `now` for ``lifetime``.
    public func grant(label: String, now: Date = Date()) -> RelayGrant {
        let expires = Int(now.timeIntervalSince1970) + Int(lifetime.components.seconds)
        let username = "\(expires):\(label)"
        return RelayGrant(urls: urls, username: username,
                          password: TURNCredentials.restPassword(secret: secret, username: username), expires: expires)
    }

    /// The same grant with a later expiry, valid from `now` for ``lifetime``: `grant` must be one this
    /// issuer's secret signed (its password the HMAC of its user name) and not yet expired; else `nil`.
    public func renew(_ grant: RelayGrant, now: Date = Date()) -> RelayGrant? {
        let parts = grant.username.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].allSatisfy(\.isNumber), let expires = Int(parts[0]),
              expires > Int(now.timeIntervalSince1970) else { return nil }
        let expected = Array(TURNCredentials.restPassword(secret: secret, username: grant.username).utf8)
        let given = Array(grant.password.utf8)
        // Compared in constant time: the password is a MAC.
        guard given.count == expected.count, zip(given, expected).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0 else { return nil }
        return self.grant(label: String(parts[1]), now: now)
    }

    /// A fresh random secret for one run of the cloud (32 random bytes, base64).
    public static func randomSecret() -> String {
        var rng = SystemRandomNumberGenerator()
        return Data((0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }).base64EncodedString()
    }
}
