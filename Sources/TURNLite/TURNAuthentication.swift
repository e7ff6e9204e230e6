import Crypto
import Foundation
import SourceLimits
import STUNLite

/// Who may allocate: static long-term users and TURN REST users, within one realm (RFC 8489 §9.2, RFC 8656 §5).
///
/// REST users (draft-uberti-behave-turn-rest) have `username = "EXPIRY:LABEL"` (or just `"EXPIRY"`),
/// EXPIRY in seconds since 1970, and `password = base64(HMAC-SHA1(secret, username))`, so a
/// signalling service can hand out short-lived credentials without telling the relay.
public struct TURNCredentials: Sendable {
    /// The REALM every key is derived with (RFC 8489 §14.9).
    public var realm: String
    /// Long-term keys of static users, by user name: MD5(name ":" realm ":" password) (RFC 8489 §9.2.2).
    private var keys: [String: [UInt8]]
    /// The shared secret for REST credentials, if any.
    public var restSecret: [UInt8]?

    /// Creates a store from `name → password` and an optional REST secret.
    public init(realm: String, users: [String: String] = [:], restSecret: String? = nil) {
        self.realm = realm
        self.keys = users.reduce(into: [:]) { out, u in
            out[u.key] = STUNCredentials.longTermKey(username: u.key, realm: realm, password: u.value)
        }
        self.restSecret = restSecret.map { Array($0.utf8) }
    }

    /// The REST password for a user name: base64(HMAC-SHA1(secret, username)).
    public static func restPassword(secret: String, username: String) -> String {
        Data(STUNCrypto.hmacSHA1(key: Array(secret.utf8), Array(username.utf8))).base64EncodedString()
    }

    /// Whose allocations a request may touch: for a REST name `EXPIRY:LABEL`, `:LABEL`, so a grant renewed
    /// with a later expiry keeps refreshing what the earlier one allocated; any other name is itself.
    public func user(of username: String) -> String {
        guard restSecret != nil, keys[username] == nil, let colon = username.firstIndex(of: ":"),
              colon != username.startIndex, username[..<colon].allSatisfy(\.isNumber) else { return username }
        return String(username[colon...])
    }

    /// The long-term key for `username` at `now` (seconds since 1970); `nil` for unknown or expired users.
    public func key(for username: String, now: Double) -> [UInt8]? {
        if let k = keys[username] { return k }
        guard let secret = restSecret else { return nil }
        let stamp = username.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)[0]
        guard let expiry = Double(stamp), stamp.allSatisfy(\.isNumber), expiry > now else { return nil }
        let password = Data(STUNCrypto.hmacSHA1(key: secret, Array(username.utf8))).base64EncodedString()
        return STUNCredentials.longTermKey(username: username, realm: realm, password: password)
    }
}

/// Stateless time-stamped nonces: `EXPIRY(8 hex digits) || base64(HMAC-SHA256(secret, EXPIRY || client address))`,
/// so the server keeps nothing about a client before it authenticates (RFC 8489 §9.2, §9.2.4 "438 Stale Nonce").
/// Short (``nonceLength`` characters), as it goes out in answers to unauthenticated requests.
public struct TURNNonceIssuer: Sendable {
    /// How long a nonce stays valid; an older one earns 438 Stale Nonce (RFC 8489 §9.2 leaves the value to the server).
    public static let nonceLifetime: Double = 600
    /// Bytes of the MAC kept in the nonce (96 bits: forging one takes 2^96 tries, each a request).
    public static let macBytes = 12
    /// Hex digits of the expiry (seconds since 1970, 32 bits: until 2106).
    static let expiryDigits = 8
    /// Characters of a nonce: the expiry and the base64 MAC.
    public static let nonceLength = expiryDigits + (macBytes + 2) / 3 * 4
    private let secret: SymmetricKey

    /// Creates an issuer with a random 256-bit secret, or a given one (tests, or several servers sharing nonces).
    public init(secret: [UInt8]? = nil) {
        self.secret = secret.map { SymmetricKey(data: $0) } ?? SymmetricKey(size: .bits256)
    }

    /// A fresh nonce for `client` at `now` (seconds since 1970).
    public func issue(for client: TransportAddress, now: Double) -> String {
        let expiry = UInt32(clamping: Int64(max(0, now + Self.nonceLifetime)))
        let hex = String(expiry, radix: 16)
        return String(repeating: "0", count: Self.expiryDigits - hex.count) + hex + mac(expiry: expiry, client: client)
    }

    /// True when `nonce` was issued by this server for `client` and has not expired at `now`.
    public func isValid(_ nonce: String, for client: TransportAddress, now: Double) -> Bool {
        let u = Array(nonce.utf8)
        guard u.count == Self.nonceLength,
              let expiry = UInt32(String(decoding: u[0..<Self.expiryDigits], as: UTF8.self), radix: 16) else {
            return false
        }
        let expected = mac(expiry: expiry, client: client)
        return STUNCrypto.constantTimeEqual(Array(expected.utf8), Array(u[Self.expiryDigits...])) && Double(expiry) > now
    }

    /// base64 of the truncated HMAC of the expiry and the client's transport address.
    private func mac(expiry: UInt32, client: TransportAddress) -> String {
        var input = withUnsafeBytes(of: expiry.bigEndian) { Array($0) }
        input += client.ip.bytes + [UInt8(client.port >> 8), UInt8(client.port & 0xFF)]
        return Data(HMAC<SHA256>.authenticationCode(for: input, using: secret).prefix(Self.macBytes)).base64EncodedString()
    }
}

/// A token bucket per source (an IPv4 address or IPv6 /64), bounding how many challenges (401/438) one source can draw (RFC 8656 §21.1.4).
public struct TURNChallengeRateLimiter: Sendable {
    /// Challenges a source may draw at once (the bucket size).
    public var burst: Double
    /// Challenges per second a bucket refills with.
    public var ratePerSecond: Double
    /// Sources tracked at most; when full, buckets that have refilled are forgotten, then the oldest.
    public static let maxTrackedSources = 4096
    private var buckets: [SourceAddressKey: (tokens: Double, at: Double)] = [:]

    /// Creates a limiter: by default a burst of 32, refilling at 8 per second.
    public init(burst: Double = 32, ratePerSecond: Double = 8) {
        self.burst = burst
        self.ratePerSecond = ratePerSecond
    }

    /// Takes one token for `source` at `now`; false when its bucket is empty.
    public mutating func allow(_ source: SourceAddressKey, now: Double) -> Bool {
        var b = buckets[source] ?? (burst, now)
        b.tokens = min(burst, b.tokens + max(0, now - b.at) * ratePerSecond)
        b.at = now
        guard b.tokens >= 1 else {
            buckets[source] = b
            return false
        }
        b.tokens -= 1
        if buckets[source] == nil, buckets.count >= Self.maxTrackedSources { prune(now: now) }
        buckets[source] = b
        return true
    }

    /// Sources currently tracked.
    public var trackedSources: Int { buckets.count }

    private mutating func prune(now: Double) {
        buckets = buckets.filter { $0.value.tokens + (now - $0.value.at) * ratePerSecond < burst }
        if buckets.count >= Self.maxTrackedSources, let oldest = buckets.min(by: { $0.value.at < $1.value.at }) {
            buckets[oldest.key] = nil
        }
    }
}

/// A token bucket of bytes per second, for per-user bandwidth quotas (RFC 8656 §21.1.4 resource exhaustion).
struct TURNByteBucket: Sendable {
    var tokens: Double
    var at: Double
    let rate: Double
    let burst: Double

    init(bytesPerSecond: Double, now: Double) {
        rate = bytesPerSecond
        burst = bytesPerSecond
        tokens = bytesPerSecond
        at = now
    }

    mutating func take(_ bytes: Int, now: Double) -> Bool {
        tokens = min(burst, tokens + max(0, now - at) * rate)
        at = now
        guard tokens >= Double(bytes) else { return false }
        tokens -= Double(bytes)
        return true
    }
}
