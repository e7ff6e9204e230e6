import NIOCore

/// RFC 8489 §6.2.1 retransmission timing for requests over UDP, and §6.2.2's timeout over TCP.
///
/// With the defaults a request is sent at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s and fails at 39.5 s.
public struct STUNRetransmissionPolicy: Sendable, Hashable {
    /// RTO: the first retransmission interval; it doubles after each send (RFC 8489 §6.2.1, default 500 ms).
    public var rto: TimeAmount
    /// Rc: the number of requests sent in all (default 7).
    public var maxRequests: Int
    /// Rm: after the last request, wait this many RTOs before failing (default 16).
    public var finalWaitMultiplier: Int
    /// Ti: how long a request over TCP or TLS waits for its response (RFC 8489 §6.2.2, default 39.5 s).
    public var reliableTimeout: TimeAmount

    /// Creates a policy.
    public init(rto: TimeAmount = .milliseconds(500), maxRequests: Int = 7, finalWaitMultiplier: Int = 16,
                reliableTimeout: TimeAmount = .milliseconds(39_500)) {
        self.rto = rto
        self.maxRequests = max(1, maxRequests)
        self.finalWaitMultiplier = max(1, finalWaitMultiplier)
        self.reliableTimeout = reliableTimeout
    }

    /// The values RFC 8489 recommends.
    public static let rfc8489 = STUNRetransmissionPolicy()

    /// A quick policy for diagnostics on a local network: 4 requests from 200 ms, failing after 2.2 s.
    public static let quick = STUNRetransmissionPolicy(rto: .milliseconds(200), maxRequests: 4, finalWaitMultiplier: 4,
                                                       reliableTimeout: .seconds(3))

    /// Time from the first send until the transaction fails.
    public var totalTimeout: TimeAmount {
        var total = TimeAmount.zero
        var interval = rto
        for _ in 1..<maxRequests {
            total = total + interval
            interval = interval * 2
        }
        return total + rto * Int64(finalWaitMultiplier)
    }
}

/// The retransmission timer of one UDP transaction as a state machine: it takes `now` and returns
/// what to do and when to call it next; it never sleeps (RFC 8489 §6.2.1).
public struct STUNRetransmissionStateMachine: Sendable {
    /// What the caller must do.
    public enum Action: Sendable, Equatable {
        /// Send (or re-send) the request, and call ``deadlineReached(now:)`` at the deadline.
        case send(nextDeadline: NIODeadline)
        /// Give up: the transaction timed out.
        case fail
    }

    private let policy: STUNRetransmissionPolicy
    private var sent = 0
    private var interval: TimeAmount

    /// Creates a machine for one transaction.
    public init(policy: STUNRetransmissionPolicy) {
        self.policy = policy
        self.interval = policy.rto
    }

    /// Requests sent so far.
    public var requestsSent: Int { sent }

    /// Starts the transaction: the first send.
    public mutating func start(now: NIODeadline) -> Action {
        sent = 1
        return .send(nextDeadline: now + (policy.maxRequests == 1 ? policy.rto * Int64(policy.finalWaitMultiplier) : interval))
    }

    /// The deadline passed with no response.
    public mutating func deadlineReached(now: NIODeadline) -> Action {
        guard sent < policy.maxRequests else { return .fail }
        sent += 1
        interval = interval * 2
        if sent == policy.maxRequests {
            return .send(nextDeadline: now + policy.rto * Int64(policy.finalWaitMultiplier))
        }
        return .send(nextDeadline: now + interval)
    }
}
