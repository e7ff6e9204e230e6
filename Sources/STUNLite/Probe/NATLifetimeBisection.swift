/// Plans the mapping-lifetime trials by bisection: pure, no clock (RFC 4787 §4.3 mapping refresh).
///
/// A trial opens a mapping, stays idle for some seconds, then asks the server to answer to that
/// mapping from another socket. The first trial idles the maximum; then the interval between the
/// longest idle survived and the shortest not is halved until it is narrower than the resolution or
/// the next trial would overrun the budget.
public struct NATLifetimeBisection: Sendable, Hashable {
    /// The longest idle time tried.
    public let maxSeconds: Double
    /// Stop when the bracket is at most this wide.
    public let resolutionSeconds: Double
    /// The most idle time all trials together may take.
    public let budgetSeconds: Double
    /// What has been learnt so far.
    public private(set) var observation = NATLifetimeObservation()

    /// Creates a bisection; values are clamped to at least 0.1 s.
    public init(maxSeconds: Double, resolutionSeconds: Double, budgetSeconds: Double) {
        self.maxSeconds = max(0.1, maxSeconds)
        self.resolutionSeconds = max(0.1, resolutionSeconds)
        self.budgetSeconds = max(0.1, budgetSeconds)
    }

    /// Creates a bisection from probe options.
    public init(options: NATProbeOptions) {
        self.init(maxSeconds: options.lifetimeMaxSeconds, resolutionSeconds: options.lifetimeResolutionSeconds,
                  budgetSeconds: options.lifetimeBudgetSeconds)
    }

    /// The idle seconds of the next trial, or nil when done.
    public func nextTrial() -> Double? {
        let next: Double
        switch (observation.aliveSeconds, observation.expiredSeconds) {
        case (nil, nil):
            next = min(maxSeconds, budgetSeconds)
        case (_, nil):
            return nil                                  // survived the longest idle tried
        case (let alive, let expired?):
            let low = alive ?? 0
            guard expired - low > resolutionSeconds else { return nil }
            next = ((low + expired) / 2 * 10).rounded() / 10
        }
        guard observation.spentSeconds + next <= budgetSeconds + 1e-9, next > 0 else { return nil }
        return next
    }

    /// Records a trial's result.
    public mutating func record(idleSeconds: Double, alive: Bool) {
        observation.spentSeconds += idleSeconds
        if alive {
            observation.aliveSeconds = max(observation.aliveSeconds ?? 0, idleSeconds)
        } else {
            observation.expiredSeconds = min(observation.expiredSeconds ?? .infinity, idleSeconds)
        }
    }
}
