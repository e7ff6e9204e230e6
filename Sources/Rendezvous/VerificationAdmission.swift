import Crypto
import Foundation
import NIOPosix
import Synchronization
import Traversal

/// Decides whether a registration that needs the UID's scrypt is verified now, or told when to
/// come back: the cloud takes only work it can finish before the client gives up, and spreads the
/// rest over the time it will take to serve them.
///
/// ```
///  admit(now, deadline) ──► .run             a worker is free, or the queue drains before `deadline`
///                       └─► .retry(after: d)  queue full or too slow: nothing is spent; each refusal
///                                             is promised a later moment, one service time apart
///  finished(took:)  frees the place, updates the cost estimate (moving average)
///  abandoned()      frees the place of work dropped unstarted (its client left)
/// ```
///
/// Time is passed in; nothing here reads a clock or sleeps.
public struct VerificationAdmissionStateMachine: Sendable {
    /// Limits and estimates.
    public struct Configuration: Sendable, Hashable {
        /// Verifications run at once (threads set aside for scrypt).
        public var workers: Int
        /// Verifications waiting for a worker, at most.
        public var maxQueued: Int
        /// Cost of one verification assumed until one is measured.
        public var initialCost: Duration
        /// The shortest retry-after handed out.
        public var minRetryAfter: Duration
        /// The longest retry-after handed out.
        public var maxRetryAfter: Duration

        /// `workers` threads, `maxQueued` waiting, 50 ms assumed per scrypt, retry-after 1 s … 5 min.
        public init(workers: Int, maxQueued: Int = 256, initialCost: Duration = .milliseconds(50),
                    minRetryAfter: Duration = .seconds(1), maxRetryAfter: Duration = .seconds(300)) {
            precondition(workers >= 1 && maxQueued >= 0 && initialCost > .zero && maxRetryAfter >= minRetryAfter,
                         "invalid verification admission")
            self.workers = workers
            self.maxQueued = maxQueued
            self.initialCost = initialCost
            self.minRetryAfter = minRetryAfter
            self.maxRetryAfter = maxRetryAfter
        }
    }

    /// What to do with one verification.
    public enum Action: Sendable, Hashable {
        /// Run it (a place is taken: report ``VerificationAdmissionStateMachine/finished(took:)`` or ``VerificationAdmissionStateMachine/abandoned()``).
        case run
        /// Refuse it; the client should come back after this long.
        case retry(after: Duration)
    }

    /// The limits.
    public let configuration: Configuration
    /// Verifications running or waiting.
    public private(set) var admitted = 0
    /// The moving average of a verification's cost.
    public private(set) var cost: Duration
    /// The moment promised to the last refused client.
    private var lastPromise: ContinuousClock.Instant?

    /// A machine with nothing admitted.
    public init(configuration: Configuration) {
        self.configuration = configuration
        self.cost = configuration.initialCost
    }

    /// When a verification admitted at `now` would finish: after every one ahead of it, `workers` at a time.
    public func expectedCompletion(now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        let rounds = admitted / configuration.workers + 1
        return now + cost * rounds
    }

    /// Admits a verification whose client waits until `deadline`, or says when to come back.
    public mutating func admit(now: ContinuousClock.Instant, deadline: ContinuousClock.Instant) -> Action {
        if admitted < configuration.workers + configuration.maxQueued, expectedCompletion(now: now) <= deadline {
            admitted += 1
            return .run
        }
        // When the work already admitted is done; refused clients are spaced one service time apart after it.
        let drained = now + cost * (admitted / configuration.workers)
        let spacing = cost / configuration.workers
        var promise = max(drained, (lastPromise ?? now) + spacing)
        promise = min(max(promise, now + configuration.minRetryAfter), now + configuration.maxRetryAfter)
        lastPromise = promise
        return .retry(after: promise - now)
    }

    /// A verification finished after running for `took`.
    public mutating func finished(took: Duration) {
        release()
        cost = cost * 0.8 + took * 0.2
    }

    /// An admitted verification was dropped before it ran (its client left or its deadline passed).
    public mutating func abandoned() {
        release()
    }

    private mutating func release() {
        precondition(admitted > 0, "released a verification that was not admitted")
        admitted -= 1
    }
}

/// Checks key → UID bindings (one scrypt each) on threads of their own, so event loops and the
/// cooperative pool — pongs, look-ups, TLS — never wait behind them; admission by
/// ``VerificationAdmissionStateMachine``.
final class KeyBindingVerifier: Sendable {
    /// The outcome of one request.
    enum Outcome: Sendable, Hashable {
        /// Verified: whether the key derives to the UID.
        case verified(Bool)
        /// Not admitted: come back after this long.
        case retry(after: Duration)
        /// Admitted, but dropped unstarted: the client left or its deadline passed.
        case abandoned
    }

    private let pool: NIOThreadPool
    private let admission: Mutex<VerificationAdmissionStateMachine>
    private let performed = Atomic<Int>(0)

    /// `configuration.workers` threads, started now.
    init(configuration: VerificationAdmissionStateMachine.Configuration) {
        pool = NIOThreadPool(numberOfThreads: configuration.workers)
        pool.start()
        admission = Mutex(VerificationAdmissionStateMachine(configuration: configuration))
    }

    /// Scrypt derivations run so far.
    var verifications: Int { performed.load(ordering: .relaxed) }

    /// Whether `key` derives to `deviceID`, if the work can be done before `deadline`; skipped if `wanted` turns false while queued.
    func verify(
        _ key: Curve25519.Signing.PublicKey, against deviceID: DeviceID, deadline: ContinuousClock.Instant,
        wanted: @escaping @Sendable () -> Bool
    ) async -> Outcome {
        let decision = admission.withLock { $0.admit(now: .now, deadline: deadline) }
        if case .retry(let after) = decision { return .retry(after: after) }
        let result: (matches: Bool, took: Duration)?
        do {
            result = try await pool.runIfActive { () -> (Bool, Duration)? in
                guard wanted(), ContinuousClock.now < deadline else { return nil }
                let started = ContinuousClock.now
                let matches = DeviceID(publicKey: key) == deviceID
                return (matches, ContinuousClock.now - started)
            }
        } catch {
            result = nil
        }
        guard let result else {
            admission.withLock { $0.abandoned() }
            return .abandoned
        }
        performed.add(1, ordering: .relaxed)
        admission.withLock { $0.finished(took: result.took) }
        return .verified(result.matches)
    }

    /// Stops the worker threads once queued work is done.
    func shutdown() async {
        try? await pool.shutdownGracefully()
    }
}
