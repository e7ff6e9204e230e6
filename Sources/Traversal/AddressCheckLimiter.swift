import Metrics
import NIOCore
import SourceLimits
import Synchronization

/// Bounds what all of a process's sessions send toward peer addresses not yet validated: the checks of
/// a candidate new address after a NAT rebinding, and the answers to a peer's checks sent to its new
/// address (RFC 9000 §8.2, §9.3).
///
/// Each session already keeps what it sends to a candidate within ``PathMigrationStateMachine/amplificationFactor``
/// times what came from it. But the peer holds the session keys, so it can make its datagrams appear to
/// come from any address (spoofed), and a viewer with sessions to many cameras could aim all their
/// checks at one victim. This limiter caps that across sessions:
///
/// ```
///  check or answer toward unvalidated address A
///    ── A's destination (IPv4 address, IPv6 /64) bucket empty? ──► refused: .perDestination
///    ── the process's bucket empty?                            ──► refused: .global
///    └─ sent (one token from each)
/// ```
///
/// A refused check is simply not sent: the candidate is retried at its next check or given up after
/// ``PathMigrationStateMachine/Configuration/addressValidationTimeout``, and the session stays on the
/// address it had. Refusals are counted in `trav_address_checks_refused_total` (swift-metrics, label
/// `reason`: ``Refusal/name``). Time is passed in as `now`.
public final class AddressCheckLimiter: Sendable {
    /// Why a check was not sent.
    public enum Refusal: Sendable, Hashable {
        /// The destination's address (IPv4) or /64 (IPv6) had its share.
        case perDestination
        /// The process had its share, wherever the checks went.
        case global

        /// The metric label: `per-destination` or `global`.
        public var name: String {
            switch self {
            case .perDestination: "per-destination"
            case .global: "global"
            }
        }
    }

    /// The limits.
    public struct Limits: Sendable, Hashable {
        /// Checks toward one destination (an IPv4 address or an IPv6 /64) in a burst.
        public var perDestinationBurst: Int
        /// Time to regain one check toward a destination.
        public var perDestinationInterval: Duration
        /// Checks toward any destination in a burst, for the whole process.
        public var globalBurst: Int
        /// Time to regain one check for the whole process.
        public var globalInterval: Duration
        /// Destinations tracked at once (a flood of new ones cannot grow memory past this).
        public var maxTrackedDestinations: Int

        /// Limits; by default the limiter's `default…` values.
        public init(perDestinationBurst: Int = AddressCheckLimiter.defaultPerDestinationBurst,
                    perDestinationInterval: Duration = AddressCheckLimiter.defaultPerDestinationInterval,
                    globalBurst: Int = AddressCheckLimiter.defaultGlobalBurst,
                    globalInterval: Duration = AddressCheckLimiter.defaultGlobalInterval,
                    maxTrackedDestinations: Int = AddressCheckLimiter.defaultMaxTrackedDestinations) {
            self.perDestinationBurst = perDestinationBurst
            self.perDestinationInterval = perDestinationInterval
            self.globalBurst = globalBurst
            self.globalInterval = globalInterval
            self.maxTrackedDestinations = maxTrackedDestinations
        }
    }

    /// 32 checks toward one destination at once: a household of viewers behind one NAT whose bindings all
    /// move together (one session checks at most every ``PathMigrationStateMachine/Configuration/probeInterval``
    /// for ``PathMigrationStateMachine/Configuration/addressValidationTimeout``, 10 checks).
    public static let defaultPerDestinationBurst = 32
    /// One more check toward a destination every 50 ms (20 per second, about 1 KB/s of ~50-byte checks).
    public static let defaultPerDestinationInterval: Duration = .milliseconds(50)
    /// 256 checks at once for the whole process.
    public static let defaultGlobalBurst = 256
    /// One more check for the process every 5 ms (200 per second).
    public static let defaultGlobalInterval: Duration = .milliseconds(5)
    /// 4 096 destinations tracked at most.
    public static let defaultMaxTrackedDestinations = 4_096

    /// The limiter the sessions of a process share unless configured otherwise
    /// (``ConnectorConfiguration/addressChecks``).
    public static let shared = AddressCheckLimiter()

    /// The limits this limiter applies.
    public let limits: Limits

    private struct State {
        var perDestination: TokenBucketRateLimiter<SourceAddressKey>
        var global: TokenBucketRateLimiter<Int>
        var refused: [Refusal: Int] = [:]
    }

    private let state: Mutex<State>
    private let refusedPerDestination = Counter(label: "trav_address_checks_refused_total", dimensions: [("reason", Refusal.perDestination.name)])
    private let refusedGlobal = Counter(label: "trav_address_checks_refused_total", dimensions: [("reason", Refusal.global.name)])

    /// A limiter applying `limits`.
    public init(_ limits: Limits = Limits()) {
        self.limits = limits
        state = Mutex(State(
            perDestination: TokenBucketRateLimiter(capacity: limits.perDestinationBurst, refillInterval: limits.perDestinationInterval,
                                                   maxTrackedKeys: limits.maxTrackedDestinations),
            global: TokenBucketRateLimiter(capacity: limits.globalBurst, refillInterval: limits.globalInterval, maxTrackedKeys: 1)))
    }

    /// Takes one check toward `address` from its destination's share and the process's: nil when it may be
    /// sent now, else why not (and nothing is taken).
    public func admit(_ address: SocketAddress, now: ContinuousClock.Instant) -> Refusal? {
        let key = SourceAddressKey(address)
        let refusal = state.withLock { s -> Refusal? in
            let refusal: Refusal? = if s.perDestination.retryDelay(for: key, now: now) != nil {
                .perDestination
            } else if s.global.retryDelay(for: 0, now: now) != nil {
                .global
            } else {
                nil
            }
            if let refusal {
                s.refused[refusal, default: 0] += 1
            } else {
                s.perDestination.recordFailure(for: key, now: now)
                s.global.recordFailure(for: 0, now: now)
            }
            return refusal
        }
        switch refusal {
        case .perDestination: refusedPerDestination.increment()
        case .global: refusedGlobal.increment()
        case nil: break
        }
        return refusal
    }

    /// Checks refused so far, by reason.
    public var refused: [Refusal: Int] { state.withLock { $0.refused } }
}
