import Crypto
import SourceLimits

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A stored password check: a random salt and a slow scrypt hash (RFC 7914), never the password.
///
/// Store ``encoded`` (`$scrypt$ln=15,r=8,p=1$<salt>$<hash>`, base64 fields); neither
/// ``description`` nor ``debugDescription`` reveal salt or hash.
public struct PasswordVerifier: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// scrypt cost of a verifier.
    public struct Parameters: Sendable, Hashable {
        /// log₂ of the CPU/memory cost `N` (RFC 7914 §2).
        public var log2Rounds: Int
        /// Block size `r`.
        public var blockSize: Int
        /// Parallelisation `p`.
        public var parallelism: Int

        /// Cost with `N = 2^log2Rounds`, block size `r` and parallelism `p`.
        public init(log2Rounds: Int, blockSize: Int, parallelism: Int) {
            self.log2Rounds = log2Rounds
            self.blockSize = blockSize
            self.parallelism = parallelism
        }

        /// `N = 2^15, r = 8, p = 1`: 32 MiB and tens of milliseconds per check, fine for a
        /// camera that rate-limits attempts (RFC 7914 §2 suggests 2^14 as the interactive floor).
        public static let standard = Parameters(log2Rounds: 15, blockSize: 8, parallelism: 1)

        /// Largest cost accepted from a stored verifier, so a tampered store cannot exhaust memory.
        static let ceiling = Parameters(log2Rounds: 20, blockSize: 32, parallelism: 16)

        /// Whether these values are in the accepted range.
        var isValid: Bool {
            (1...Self.ceiling.log2Rounds).contains(log2Rounds) && (1...Self.ceiling.blockSize).contains(blockSize)
                && (1...Self.ceiling.parallelism).contains(parallelism)
        }

        /// The same values for ``KeyDerivation``.
        var cost: KeyDerivation.ScryptCost {
            KeyDerivation.ScryptCost(rounds: 1 << log2Rounds, blockSize: blockSize, parallelism: parallelism)
        }
    }

    /// Bytes of random salt.
    public static let saltLength = 16
    /// Bytes of derived hash.
    public static let hashLength = 32

    /// The scrypt cost this verifier was made with.
    public let parameters: Parameters
    /// Random salt.
    let salt: [UInt8]
    /// `scrypt(password, salt)`.
    let hash: [UInt8]

    /// A verifier for `password` with a fresh random salt.
    public init(password: String, parameters: Parameters = .standard) throws {
        var generator = SystemRandomNumberGenerator()
        let salt = (0..<Self.saltLength).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try self.init(password: password, salt: salt, parameters: parameters)
    }

    /// A verifier for `password` with a given salt.
    init(password: String, salt: [UInt8], parameters: Parameters) throws {
        guard parameters.isValid else {
            throw AccessControlError(code: .invalidVerifier, detail: "scrypt parameters out of range")
        }
        self.parameters = parameters
        self.salt = salt
        self.hash = try KeyDerivation.scrypt(
            password: Array(password.utf8), salt: salt, cost: parameters.cost, length: Self.hashLength)
    }

    /// Parses a verifier stored as ``encoded``.
    public init(encoded: String) throws {
        let fields = encoded.split(separator: "$", omittingEmptySubsequences: false)
        guard fields.count == 5, fields[0].isEmpty, fields[1] == "scrypt" else {
            throw AccessControlError(code: .invalidVerifier, detail: "not a $scrypt$ verifier")
        }
        var values = [String: Int]()
        for pair in fields[2].split(separator: ",") {
            let parts = pair.split(separator: "=")
            guard parts.count == 2, let value = Int(parts[1]) else {
                throw AccessControlError(code: .invalidVerifier, detail: "bad parameter field")
            }
            values[String(parts[0])] = value
        }
        guard let log2Rounds = values["ln"], let blockSize = values["r"], let parallelism = values["p"],
            values.count == 3
        else {
            throw AccessControlError(code: .invalidVerifier, detail: "parameters must be ln, r and p")
        }
        let parameters = Parameters(log2Rounds: log2Rounds, blockSize: blockSize, parallelism: parallelism)
        guard parameters.isValid else {
            throw AccessControlError(code: .invalidVerifier, detail: "scrypt parameters out of range")
        }
        guard let salt = Data(base64Encoded: String(fields[3])), !salt.isEmpty,
            let hash = Data(base64Encoded: String(fields[4])), hash.count == Self.hashLength
        else {
            throw AccessControlError(code: .invalidVerifier, detail: "salt or hash is not valid base64")
        }
        self.parameters = parameters
        self.salt = Array(salt)
        self.hash = Array(hash)
    }

    /// The storable form, `$scrypt$ln=…,r=…,p=…$<base64 salt>$<base64 hash>`.
    public var encoded: String {
        "$scrypt$ln=\(parameters.log2Rounds),r=\(parameters.blockSize),p=\(parameters.parallelism)$"
            + "\(Data(salt).base64EncodedString())$\(Data(hash).base64EncodedString())"
    }

    /// Whether `password` is the one this verifier was made from (constant-time comparison).
    public func verify(_ password: String) -> Bool {
        guard let candidate = try? KeyDerivation.scrypt(
            password: Array(password.utf8), salt: salt, cost: parameters.cost, length: hash.count)
        else { return false }
        return KeyDerivation.constantTimeEquals(candidate, hash)
    }

    /// The algorithm and cost only.
    public var description: String {
        "PasswordVerifier(scrypt N=2^\(parameters.log2Rounds) r=\(parameters.blockSize) p=\(parameters.parallelism))"
    }

    /// Same as ``description``: no salt, no hash.
    public var debugDescription: String { description }
}

/// A token bucket per key: ``capacity`` failures at once, then one more per ``refillInterval``.
///
/// Time is passed in as `now`; the limiter never reads a clock or sleeps. Each bucket is kept as
/// the instant it will be full again (the GCRA form of a token bucket), so all arithmetic is exact
/// `Duration` arithmetic. It tracks at most ``maxTrackedKeys`` keys, evicting the least-limited
/// bucket when full, so a flood of new keys (e.g. spoofed addresses) cannot grow its memory.
public struct TokenBucketRateLimiter<Key: Hashable & Sendable>: Sendable {
    /// Tokens in a full bucket: how many failures in a burst.
    public let capacity: Int
    /// Time to regain one token.
    public let refillInterval: Duration
    /// Largest number of keys tracked at once.
    public let maxTrackedKeys: Int
    /// For each key with failures, when its bucket is full again.
    var fullAt: [Key: ContinuousClock.Instant] = [:]

    /// A limiter allowing `capacity` failures in a burst and one more per `refillInterval`.
    public init(capacity: Int, refillInterval: Duration, maxTrackedKeys: Int = 10_000) {
        precondition(capacity >= 1 && refillInterval > .zero && maxTrackedKeys >= 1, "invalid rate limit")
        self.capacity = capacity
        self.refillInterval = refillInterval
        self.maxTrackedKeys = maxTrackedKeys
    }

    /// Number of keys currently tracked.
    public var trackedKeyCount: Int { fullAt.count }

    /// Nil if `key` may try now, else how long until it may.
    public func retryDelay(for key: Key, now: ContinuousClock.Instant) -> Duration? {
        guard let fullAt = fullAt[key] else { return nil }
        let wait = (fullAt - now) - refillInterval * (capacity - 1)
        return wait > .zero ? wait : nil
    }

    /// Takes one token from `key`'s bucket (a failed attempt); an empty bucket stays empty.
    public mutating func recordFailure(for key: Key, now: ContinuousClock.Instant) {
        if fullAt[key] == nil, fullAt.count >= maxTrackedKeys { makeRoom(now: now) }
        let current = fullAt[key].map { max($0, now) } ?? now
        fullAt[key] = min(current + refillInterval, now + refillInterval * capacity)
    }

    /// Takes one token from `key`'s bucket if it has one: true when `key` may go ahead now.
    public mutating func admit(_ key: Key, now: ContinuousClock.Instant) -> Bool {
        guard retryDelay(for: key, now: now) == nil else { return false }
        recordFailure(for: key, now: now)
        return true
    }

    /// Forgets `key`'s failures.
    public mutating func reset(_ key: Key) {
        fullAt[key] = nil
    }

    /// Drops refilled buckets; if none, the one closest to full.
    mutating func makeRoom(now: ContinuousClock.Instant) {
        fullAt = fullAt.filter { $0.value > now }
        if fullAt.count >= maxTrackedKeys, let closest = fullAt.min(by: { $0.value < $1.value }) {
            fullAt[closest.key] = nil
        }
    }
}

/// What a viewer presents to get access, inside the encrypted session.
public enum AccessCredential: Sendable, CustomStringConvertible {
    /// The camera's password.
    case password(String)
    /// The viewer's handshake identity key, which must be paired.
    case pairedKey

    /// The kind of credential, never the password.
    public var description: String {
        switch self {
        case .password: "password(<redacted>)"
        case .pairedKey: "pairedKey"
        }
    }
}

/// How access was granted.
public enum AccessGrant: Sendable, Hashable {
    /// The password matched.
    case password
    /// The viewer's identity key is paired.
    case pairedKey
}

/// How hard a camera makes password guessing: per source address, for the camera as a whole, and
/// in how many slow checks run at once. A paired viewer key is never subject to any of them.
public struct PasswordAttemptLimits: Sendable {
    /// Failed password attempts per source (an IPv4 address or an IPv6 /64, see `SourceAddressKey` in SourceLimits).
    public var perSource: TokenBucketRateLimiter<SourceAddressKey>
    /// Failed password attempts against the camera, from anywhere: exponential back-off.
    public var perCamera: FailureBackoff
    /// Password checks (each a deliberate scrypt) running at once, so guesses cannot take all of the
    /// camera's CPU; an attempt past this waits for a slot (see ``maxWaitingChecks``).
    public var maxConcurrentChecks: Int
    /// Password attempts waiting for a check slot at once; one more is refused as rate-limited.
    public var maxWaitingChecks: Int

    /// Default of ``perSource``: 10 failures in a burst, then one per 30 s from one address or /64.
    public static let defaultPerSource = TokenBucketRateLimiter<SourceAddressKey>(capacity: 10, refillInterval: .seconds(30))
    /// Default of ``perCamera``: 20 failures free, then 2 s doubling up to 10 min; forgotten after 1 h without one.
    public static let defaultPerCamera = FailureBackoff(freeFailures: 20, initialDelay: .seconds(2), maxDelay: .seconds(600),
                                                       forgetAfter: .seconds(3600))
    /// Default of ``maxConcurrentChecks``: one, leaving the camera's other cores to video and paired viewers.
    public static let defaultMaxConcurrentChecks = 1
    /// Default of ``maxWaitingChecks``: 8, a second or so of checks.
    public static let defaultMaxWaitingChecks = 8

    /// Limits; the defaults are ``defaultPerSource``, ``defaultPerCamera``, ``defaultMaxConcurrentChecks``
    /// and ``defaultMaxWaitingChecks``.
    public init(perSource: TokenBucketRateLimiter<SourceAddressKey> = defaultPerSource,
                perCamera: FailureBackoff = defaultPerCamera, maxConcurrentChecks: Int = defaultMaxConcurrentChecks,
                maxWaitingChecks: Int = defaultMaxWaitingChecks) {
        precondition(maxConcurrentChecks >= 1 && maxWaitingChecks >= 0, "invalid password check limits")
        self.perSource = perSource
        self.perCamera = perCamera
        self.maxConcurrentChecks = maxConcurrentChecks
        self.maxWaitingChecks = maxWaitingChecks
    }
}

/// A camera's access policy: a password verifier, paired viewer keys, and the limits on password
/// guessing (``PasswordAttemptLimits``).
///
/// A sans-I/O state machine: a password attempt is ``admitPasswordCheck(from:now:)``, then the slow
/// check runs wherever the caller likes (outside any lock), then ``finishPasswordCheck(from:matched:now:)``
/// and ``releaseCheckSlot()``, which hands the slot to a waiting attempt when there is one.
///
/// ```
///  password ──► admitPasswordCheck ──► .refused(rate-limited)     source or camera backed off, or the queue full
///                                  ├─► .wait ──(a slot handed on)──► resumeWaitingCheck ──► .refused / .check
///                                  └─► .check(verifier) ──► verify (scrypt, off the lock)
///                                        ──► finishPasswordCheck ──► grant / denied (failure counted)
///                                        ──► releaseCheckSlot ──► true: wake the next waiter
///  paired key ──► pairedKeyGrant ──► grant / denied               (no limit, no wait: nothing to guess)
/// ```
public struct AccessController: Sendable {
    /// What to do with a password attempt.
    public enum PasswordAdmission: Sendable {
        /// Run the check with this verifier, then call ``AccessController/finishPasswordCheck(from:matched:now:)``
        /// and ``AccessController/releaseCheckSlot()``.
        case check(PasswordVerifier)
        /// Wait until ``AccessController/releaseCheckSlot()`` hands a slot on, then call
        /// ``AccessController/resumeWaitingCheck(from:now:)``.
        case wait
        /// Refused without checking.
        case refused(AccessControlError)
    }

    /// The password check, if a password is set.
    public var passwordVerifier: PasswordVerifier?
    /// Raw Ed25519 keys of paired viewers.
    var pairedKeys: Set<Data> = []
    /// The limits in force, with their current state.
    public private(set) var limits: PasswordAttemptLimits
    /// Check slots held (checks running, or a slot just handed to a waiting attempt).
    public private(set) var checksInFlight = 0
    /// Attempts waiting for a check slot.
    public private(set) var checksWaiting = 0

    /// An access policy with `limits` on password guessing.
    public init(passwordVerifier: PasswordVerifier?, limits: PasswordAttemptLimits = PasswordAttemptLimits()) {
        self.passwordVerifier = passwordVerifier
        self.limits = limits
    }

    /// Pairs a viewer identity key: it may then connect with ``AccessCredential/pairedKey``.
    public mutating func pair(_ viewer: Curve25519.Signing.PublicKey) {
        pairedKeys.insert(viewer.rawRepresentation)
    }

    /// Removes a paired viewer key.
    public mutating func unpair(_ viewer: Curve25519.Signing.PublicKey) {
        pairedKeys.remove(viewer.rawRepresentation)
    }

    /// Whether a viewer key is paired.
    public func isPaired(_ viewer: Curve25519.Signing.PublicKey) -> Bool {
        pairedKeys.contains(viewer.rawRepresentation)
    }

    /// The verdict on a paired-key credential: immediate, and never limited (the key was proven in the handshake).
    public func pairedKeyGrant(for viewer: Curve25519.Signing.PublicKey) -> Result<AccessGrant, AccessControlError> {
        isPaired(viewer) ? .success(.pairedKey) : .failure(AccessControlError(code: .denied, detail: "pairedKey not accepted"))
    }

    /// How long a password attempt from `source` must wait before it is even checked; nil when it may be checked now.
    public func admissionDelay(source: SourceAddressKey, now: ContinuousClock.Instant) -> Duration? {
        [limits.perSource.retryDelay(for: source, now: now), limits.perCamera.retryDelay(now: now)].compactMap { $0 }.max()
    }

    /// Admits a password attempt from `source` to the slow check, queues it when
    /// ``PasswordAttemptLimits/maxConcurrentChecks`` are running, or refuses it as rate-limited
    /// (source or camera backed off, or ``PasswordAttemptLimits/maxWaitingChecks`` already waiting).
    public mutating func admitPasswordCheck(from source: SourceAddressKey, now: ContinuousClock.Instant) -> PasswordAdmission {
        if let refusal = refusal(from: source, now: now) { return .refused(refusal) }
        guard let passwordVerifier else { return .refused(AccessControlError(code: .denied, detail: "no password is set")) }
        if checksInFlight < limits.maxConcurrentChecks {
            checksInFlight += 1
            return .check(passwordVerifier)
        }
        guard checksWaiting < limits.maxWaitingChecks else {
            return .refused(AccessControlError(code: .rateLimited, detail: "busy checking other passwords", retryAfter: .seconds(1)))
        }
        checksWaiting += 1
        return .wait
    }

    /// A waiting attempt got a slot: `.check`, or `.refused` when its source or the camera was backed
    /// off meanwhile (it holds the slot either way; give it back with ``releaseCheckSlot()``).
    public func resumeWaitingCheck(from source: SourceAddressKey, now: ContinuousClock.Instant) -> PasswordAdmission {
        if let refusal = refusal(from: source, now: now) { return .refused(refusal) }
        guard let passwordVerifier else { return .refused(AccessControlError(code: .denied, detail: "no password is set")) }
        return .check(passwordVerifier)
    }

    /// Gives back a check slot; true when it went straight to a waiting attempt, which the caller must wake.
    public mutating func releaseCheckSlot() -> Bool {
        if checksWaiting > 0 {
            checksWaiting -= 1
            return true
        }
        checksInFlight = max(0, checksInFlight - 1)
        return false
    }

    /// Why an attempt from `source` is refused before any check, if it is.
    private func refusal(from source: SourceAddressKey, now: ContinuousClock.Instant) -> AccessControlError? {
        admissionDelay(source: source, now: now).map {
            AccessControlError(code: .rateLimited, detail: "too many failed attempts", retryAfter: $0)
        }
    }

    /// Judges an admitted check: a grant when the password `matched`, else `.denied` with the failure
    /// counted against `source` and the camera. The slot stays held until ``releaseCheckSlot()``.
    public mutating func finishPasswordCheck(from source: SourceAddressKey, matched: Bool,
                                             now: ContinuousClock.Instant) -> Result<AccessGrant, AccessControlError> {
        if matched { return .success(.password) }
        limits.perSource.recordFailure(for: source, now: now)
        limits.perCamera.recordFailure(now: now)
        return .failure(AccessControlError(code: .denied, detail: "password not accepted"))
    }

    /// Checks a credential from `viewer` (its handshake identity) connecting from `source`, all at once
    /// (the password check runs inline and never waits: for tests and callers without concurrency).
    ///
    /// - Throws: ``AccessControlError`` `.rateLimited` (with ``AccessControlError/retryAfter``)
    ///   before checking a password once too many failures came from the source or the camera;
    ///   `.denied` for a wrong password (counted) or an unpaired key.
    public mutating func authorize(
        viewer: Curve25519.Signing.PublicKey, source: SourceAddressKey, credential: AccessCredential,
        now: ContinuousClock.Instant
    ) throws -> AccessGrant {
        switch credential {
        case .pairedKey:
            return try pairedKeyGrant(for: viewer).get()
        case .password(let password):
            switch admitPasswordCheck(from: source, now: now) {
            case .refused(let error):
                throw error
            case .wait:
                checksWaiting -= 1
                throw AccessControlError(code: .rateLimited, detail: "busy checking other passwords", retryAfter: .seconds(1))
            case .check(let verifier):
                let verdict = finishPasswordCheck(from: source, matched: verifier.verify(password), now: now)
                _ = releaseCheckSlot()
                return try verdict.get()
            }
        }
    }
}

/// Why access was refused.
public struct AccessControlError: CodedError, Hashable {
    /// A stable reason code.
    public struct Code: ErrorCode {
        /// The code's stable name.
        public let name: String
        /// The credential is wrong (deliberately not saying how).
        public static let denied = Code(name: "denied")
        /// Too many failures from this source or against this camera, or too many checks at once; see ``AccessControlError/retryAfter``.
        public static let rateLimited = Code(name: "rate-limited")
        /// A stored password verifier is malformed or has out-of-range parameters.
        public static let invalidVerifier = Code(name: "invalid-verifier")
    }

    /// What went wrong.
    public let code: Code
    /// Why.
    public let detail: String
    /// For `.rateLimited`: how long until another attempt is considered.
    public let retryAfter: Duration?

    /// What the asker is told: only whether to try later, never why a credential failed.
    var refusal: AccessRefusal { code == .rateLimited ? .rateLimited : .accessDenied }

    /// An error with an optional retry delay.
    public init(code: Code, detail: String, retryAfter: Duration? = nil) {
        self.code = code
        self.detail = detail
        self.retryAfter = retryAfter
    }
}
