/// Exponential back-off after failures, for one thing as a whole (e.g. a camera's password, whoever guesses).
///
/// The first ``freeFailures`` failures cost nothing; each one after that closes the door for
/// ``initialDelay``, doubling per further failure up to ``maxDelay``. The count is forgotten once
/// ``forgetAfter`` passes without a failure, and only then: a success does not reset it, so a
/// guesser cannot earn fresh free failures by timing its guesses around a legitimate login.
/// Time is passed in as `now`; nothing reads a clock or sleeps.
public struct FailureBackoff: Sendable, Hashable {
    /// Failures allowed before any back-off.
    public let freeFailures: Int
    /// The first back-off.
    public let initialDelay: Duration
    /// The longest back-off.
    public let maxDelay: Duration
    /// Failures are forgotten after this long without one.
    public let forgetAfter: Duration
    /// Failures counted so far.
    public private(set) var failures = 0
    private var lastFailure: ContinuousClock.Instant?
    private var closedUntil: ContinuousClock.Instant?

    /// A back-off: `freeFailures` free, then `initialDelay` doubling up to `maxDelay`; forgotten after `forgetAfter` quiet.
    public init(freeFailures: Int, initialDelay: Duration, maxDelay: Duration, forgetAfter: Duration) {
        precondition(freeFailures >= 0 && initialDelay > .zero && maxDelay >= initialDelay && forgetAfter >= maxDelay,
                     "invalid back-off")
        self.freeFailures = freeFailures
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.forgetAfter = forgetAfter
    }

    /// Nil if an attempt may be made now, else how long until one may.
    public func retryDelay(now: ContinuousClock.Instant) -> Duration? {
        guard let closedUntil, closedUntil > now else { return nil }
        return closedUntil - now
    }

    /// Counts a failure at `now` and closes the door for the back-off it earns, if any.
    public mutating func recordFailure(now: ContinuousClock.Instant) {
        if let last = lastFailure, now - last >= forgetAfter { failures = 0 }
        failures += 1
        lastFailure = max(lastFailure ?? now, now)
        let over = failures - freeFailures
        guard over > 0 else { return }
        var delay = initialDelay
        for _ in 1..<min(over, 64) where delay < maxDelay { delay *= 2 }
        let until = now + min(delay, maxDelay)
        closedUntil = max(closedUntil ?? until, until)
    }
}
