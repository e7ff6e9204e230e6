/// The strategy race as a state machine (sans I/O, time injected, as swift-nio's happy-eyeballs
/// resolver is): which contender starts when, which one wins, which are cancelled, and what the
/// report says, unit-tested without sockets or sleeps. ``Connector`` drives it.
///
/// ```
///  contenders (each with its start delay from the two offers) ── tick(now) ──► start(i) once due
///  start(i) ─► connect + handshake … ─► succeeded(i) ─► won(i, attempts) + cancel(running)   (first only)
///                                   └► failed(i)    ─► recorded; the last one ends: exhausted(attempts)
///  every contender must win by start of race + connectTimeout: tick past it ─► cancel(i), failed "timed out"
///  a success after the race was decided ─► close(i): its transport is not used
/// ```
///
/// Attempt order in the report: contenders that could not run (in their given order), then each
/// contender's end as it happened; when a winner is decided, every contender still waiting or
/// connecting is reported `cancelled`.
public struct RaceStateMachine: Sendable {
    /// One strategy in the race.
    public struct Contender: Sendable, Hashable {
        /// The strategy's id.
        public var id: String
        /// How long after the race starts it may begin (``PreparedStrategy/startDelay(local:remote:)``).
        public var startDelay: Duration

        /// A contender starting `startDelay` after the race.
        public init(id: String, startDelay: Duration) {
            self.id = id
            self.startDelay = startDelay
        }
    }

    /// What the driver must do.
    public enum Action: Sendable, Hashable {
        /// Begin contender `index`'s connect and handshake.
        case start(Int)
        /// Stop these contenders (the race is decided, or they ran out of time); their outcomes no longer count.
        case cancel([Int])
        /// Contender `index` succeeded after the race was decided: close what it connected.
        case close(Int)
        /// Contender `index` won: use its path. `attempts` is the report so far.
        case won(Int, attempts: [StrategyAttempt])
        /// Every contender ended without a path.
        case exhausted(attempts: [StrategyAttempt])
    }

    private enum State: Sendable, Hashable {
        case waiting
        case running
        case ended
    }

    /// The contenders, in order.
    public let contenders: [Contender]
    /// When the race started.
    public let startedAt: ContinuousClock.Instant
    /// Every contender must have won by `startedAt + connectTimeout`.
    public let connectTimeout: Duration
    private var states: [State]
    private var attempts: [StrategyAttempt]
    /// The winner, once there is one.
    public private(set) var winner: Int?
    private var reportedEnd = false

    /// A race of `contenders` starting at `now`; `unable` are the strategies that cannot run
    /// (not gathered, not enabled by the peer), reported first as they are.
    public init(contenders: [Contender], unable: [StrategyAttempt] = [], connectTimeout: Duration, now: ContinuousClock.Instant) {
        self.contenders = contenders
        self.startedAt = now
        self.connectTimeout = connectTimeout
        self.states = Array(repeating: .waiting, count: contenders.count)
        self.attempts = unable
    }

    /// Whether the race has ended (won, or exhausted).
    public var isDecided: Bool { reportedEnd }

    /// The next moment ``tick(now:)`` has something to do (a start or a timeout); `nil` once decided.
    public var nextDeadline: ContinuousClock.Instant? {
        guard !reportedEnd else { return nil }
        var next: ContinuousClock.Instant?
        for (i, state) in states.enumerated() {
            let due: ContinuousClock.Instant
            switch state {
            case .waiting: due = startedAt + min(contenders[i].startDelay, connectTimeout)
            case .running: due = startedAt + connectTimeout
            case .ended: continue
            }
            next = next.map { min($0, due) } ?? due
        }
        return next
    }

    /// Starts the contenders that are due and times out those past the race's deadline.
    public mutating func tick(now: ContinuousClock.Instant) -> [Action] {
        guard !reportedEnd else { return [] }
        var actions: [Action] = []
        let deadline = startedAt + connectTimeout
        var timedOut: [Int] = []
        for i in states.indices {
            switch states[i] {
            case .waiting where now >= deadline:
                // Its delay reaches past the race's end: it never starts.
                states[i] = .ended
                attempts.append(StrategyAttempt(strategy: contenders[i].id, outcome: .failed, ms: ms(now),
                                                error: "timed out after \(connectTimeout) before its start delay"))
            case .waiting where now >= startedAt + contenders[i].startDelay:
                states[i] = .running
                actions.append(.start(i))
            case .running where now >= deadline:
                states[i] = .ended
                timedOut.append(i)
                attempts.append(StrategyAttempt(strategy: contenders[i].id, outcome: .failed, ms: ms(now),
                                                error: "timed out after \(connectTimeout)"))
            default:
                continue
            }
        }
        if !timedOut.isEmpty { actions.append(.cancel(timedOut)) }
        return actions + endIfExhausted()
    }

    /// Contender `index` connected and completed its handshake over `path`.
    public mutating func succeeded(_ index: Int, path: String, now: ContinuousClock.Instant) -> [Action] {
        guard states.indices.contains(index), states[index] == .running, !reportedEnd else {
            return states.indices.contains(index) ? [.close(index)] : []
        }
        states[index] = .ended
        winner = index
        reportedEnd = true
        attempts.append(StrategyAttempt(strategy: contenders[index].id, outcome: .connected, ms: ms(now), path: path))
        var cancelled: [Int] = []
        for i in states.indices where states[i] != .ended {
            states[i] = .ended
            cancelled.append(i)
            attempts.append(StrategyAttempt(strategy: contenders[i].id, outcome: .cancelled, ms: ms(now), error: "cancelled"))
        }
        return (cancelled.isEmpty ? [] : [.cancel(cancelled)]) + [.won(index, attempts: attempts)]
    }

    /// Contender `index` failed with `error`; ignored once it was cancelled or timed out.
    public mutating func failed(_ index: Int, error: String, now: ContinuousClock.Instant) -> [Action] {
        guard states.indices.contains(index), states[index] == .running, !reportedEnd else { return [] }
        states[index] = .ended
        attempts.append(StrategyAttempt(strategy: contenders[index].id, outcome: .failed, ms: ms(now), error: error))
        return endIfExhausted()
    }

    /// The report so far.
    public var report: [StrategyAttempt] { attempts }

    private mutating func endIfExhausted() -> [Action] {
        guard !reportedEnd, states.allSatisfy({ $0 == .ended }) else { return [] }
        reportedEnd = true
        return [.exhausted(attempts: attempts)]
    }

    private func ms(_ now: ContinuousClock.Instant) -> Double {
        (now - startedAt).milliseconds
    }
}
