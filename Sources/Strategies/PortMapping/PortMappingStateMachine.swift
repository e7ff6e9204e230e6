/// The life of one router port mapping, sans I/O: request with retransmission, renew at half the
/// granted lifetime, notice a gateway that lost its state, release.
///
/// ```
///  start ─► requesting ──answer──► mapped ──½ lifetime──► renewing ──answer──► mapped …
///              │ no answer after the schedule      │ renewals unanswered until expiry ─► failed(expired)
///              ▼                                    ▼ release()
///           failed                           releasing (lifetime 0) ──answer / schedule spent──► released
/// ```
///
/// Retransmission: RFC 6886 §3.1 (NAT-PMP: 250 ms, doubling) and RFC 6887 §8.1.1 (PCP: IRT 3 s,
/// doubling up to MRT 1024 s); the ``Schedule`` holds the timeouts, so a race can use a short one.
/// The driver performs each ``Action`` and reports what happened with `now`; it never sleeps here.
public struct PortMappingStateMachine: Sendable {
    /// Timeouts of successive attempts of one request.
    public struct Schedule: Sendable, Hashable {
        /// How long to wait for each attempt's answer; the count is the number of attempts.
        public var timeouts: [Duration]

        /// Creates a schedule.
        public init(timeouts: [Duration]) {
            precondition(!timeouts.isEmpty, "a schedule has at least one attempt")
            self.timeouts = timeouts
        }

        /// RFC 6886 §3.1: 250 ms doubling, nine attempts (about 64 s in all).
        public static let natPMP = Schedule(timeouts: (0..<9).map { .milliseconds(250 << $0) })
        /// RFC 6887 §8.1.1: IRT 3 s doubling up to MRT 1024 s; bounded here at seven attempts (about 6 min).
        public static let pcp = Schedule(timeouts: (0..<7).map { .seconds(min(1024, 3 << $0)) })
        /// For the strategy race, which must gather within `ConnectorConfiguration.gatherTimeout`:
        /// 250 ms then 500 ms, the first two steps of RFC 6886 §3.1 (an absent gateway costs 750 ms).
        public static let race = Schedule(timeouts: [.milliseconds(250), .milliseconds(500)])
    }

    /// What the driver does next.
    public enum Action: Sendable, Hashable {
        /// Send a request for `lifetime` seconds (0: release) and wait at most `timeout` for its answer.
        case request(lifetime: UInt32, timeout: Duration)
        /// Nothing to send before `until` (then call ``timedOut(now:)``).
        case wait(until: ContinuousClock.Instant)
        /// The mapping is granted or renewed: advertise it (and wait until `renewAt`).
        case mapped(GrantedMapping, renewAt: ContinuousClock.Instant)
        /// Gave up (the first request, or renewals until the mapping expired).
        case failed(PortMappingError)
        /// The release was answered or its schedule spent: nothing more to do.
        case released
    }

    enum State: Sendable, Hashable {
        case idle
        case requesting(attempt: Int)
        case mapped(GrantedMapping, at: ContinuousClock.Instant, renewing: Int?)
        case releasing(attempt: Int)
        case done
    }

    private(set) var state: State = .idle
    /// The lifetime asked for, seconds.
    public let lifetime: UInt32
    /// Timeouts for the first request and for a release.
    public let schedule: Schedule
    /// The last epoch the gateway reported, and when.
    private var lastEpoch: (UInt32, ContinuousClock.Instant)?

    /// A machine that will ask for `lifetime` seconds with `schedule`.
    public init(lifetime: UInt32, schedule: Schedule) {
        self.lifetime = lifetime
        self.schedule = schedule
    }

    /// The mapping now held, if any.
    public var mapping: GrantedMapping? {
        if case .mapped(let m, _, _) = state { return m }
        return nil
    }

    /// Sends the first request.
    public mutating func start(now: ContinuousClock.Instant) -> Action {
        guard case .idle = state else { return .failed(PortMappingError(.mismatched, "already started")) }
        state = .requesting(attempt: 0)
        return .request(lifetime: lifetime, timeout: schedule.timeouts[0])
    }

    /// Renewal attempts are spaced like the first request's, and never past the mapping's expiry.
    private func renewTimeout(_ attempt: Int) -> Duration {
        schedule.timeouts[min(attempt, schedule.timeouts.count - 1)]
    }

    /// The gateway answered the outstanding request.
    public mutating func answered(_ result: Result<GrantedMapping, PortMappingError>, now: ContinuousClock.Instant) -> Action {
        switch state {
        case .idle, .done:
            return .released
        case .releasing:
            state = .done
            return .released
        case .requesting:
            switch result {
            case .failure(let e):
                state = .done
                return .failed(e)
            case .success(let m):
                return grant(m, now: now)
            }
        case .mapped(let held, let at, let renewing):
            switch result {
            case .success(let m):
                return grant(m, now: now)
            case .failure(let e):
                // A refused renewal: the gateway no longer keeps it for us.
                guard renewing != nil else { return .wait(until: renewAt(held, at)) }
                state = .done
                return .failed(e)
            }
        }
    }

    private mutating func grant(_ m: GrantedMapping, now: ContinuousClock.Instant) -> Action {
        lastEpoch = m.epoch.map { ($0, now) }
        guard m.lifetime > 0 else {
            state = .done
            return .failed(PortMappingError(.refused, "granted a lifetime of 0"))
        }
        state = .mapped(m, at: now, renewing: nil)
        return .mapped(m, renewAt: renewAt(m, now))
    }

    private func renewAt(_ m: GrantedMapping, _ at: ContinuousClock.Instant) -> ContinuousClock.Instant {
        at + .seconds(Int64(m.lifetime) / 2)
    }

    /// Any answer or announcement carrying the gateway's epoch (RFC 6887 §8.5, RFC 6886 §3.6): when
    /// it shows the gateway lost its state, the mapping is asked for again at once.
    public mutating func observedEpoch(_ epoch: UInt32, now: ContinuousClock.Instant) -> Action? {
        defer { lastEpoch = (epoch, now) }
        guard let (previous, at) = lastEpoch, case .mapped(let m, let since, _) = state,
              PCPMessage.epochSaysStateLost(previous: previous, previousAt: at, current: epoch, now: now) else { return nil }
        state = .mapped(m, at: since, renewing: 0)
        return .request(lifetime: lifetime, timeout: renewTimeout(0))
    }

    /// The wait of the last action ended without an answer.
    public mutating func timedOut(now: ContinuousClock.Instant) -> Action {
        switch state {
        case .idle, .done:
            return .released
        case .requesting(let attempt):
            guard attempt + 1 < schedule.timeouts.count else {
                state = .done
                let total = schedule.timeouts.reduce(Duration.zero, +)
                return .failed(PortMappingError(.noAnswer, "no answer to \(schedule.timeouts.count) requests in \(total)"))
            }
            state = .requesting(attempt: attempt + 1)
            return .request(lifetime: lifetime, timeout: schedule.timeouts[attempt + 1])
        case .mapped(let m, let at, let renewing):
            let expiry = at + .seconds(Int64(m.lifetime))
            if now >= expiry {
                state = .done
                return .failed(PortMappingError(.expired, "\(m.external) lapsed after \(m.lifetime) s without a renewal answered"))
            }
            if renewing == nil, now < renewAt(m, at) { return .wait(until: renewAt(m, at)) }
            let attempt = renewing.map { $0 + 1 } ?? 0
            state = .mapped(m, at: at, renewing: attempt)
            return .request(lifetime: lifetime, timeout: min(renewTimeout(attempt), expiry - now))
        case .releasing(let attempt):
            guard attempt + 1 < schedule.timeouts.count else {
                state = .done
                return .released
            }
            state = .releasing(attempt: attempt + 1)
            return .request(lifetime: 0, timeout: schedule.timeouts[attempt + 1])
        }
    }

    /// The owner is done with the mapping: ask the gateway to delete it (lifetime 0, RFC 6886 §3.4,
    /// RFC 6887 §15); nothing to do when none is held.
    public mutating func release(now: ContinuousClock.Instant) -> Action {
        switch state {
        case .mapped, .requesting:
            // A request in flight may have been granted already: delete whatever it made.
            state = .releasing(attempt: 0)
            return .request(lifetime: 0, timeout: schedule.timeouts[0])
        case .releasing:
            return .wait(until: now)
        case .idle, .done:
            state = .done
            return .released
        }
    }
}
