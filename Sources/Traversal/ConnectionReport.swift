import Foundation

/// One strategy's part in a connection attempt.
public struct StrategyAttempt: Codable, Sendable, Hashable {
    /// How it ended.
    public enum Outcome: String, Codable, Sendable, Hashable {
        /// Its path completed the secure handshake first and carries the connection.
        case connected
        /// It reached the peer, but another path won.
        case lostRace = "lost-race"
        /// It failed; see `error`.
        case failed
        /// It was still trying when another path won.
        case cancelled
        /// It could not run (e.g. the peer did not enable it).
        case skipped
    }

    /// The strategy id.
    public var strategy: String
    /// How it ended.
    public var outcome: Outcome
    /// Milliseconds from the start signal to its end.
    public var ms: Double
    /// Why it failed, if it did.
    public var error: String?
    /// The path it found, if any.
    public var path: String?

    /// Creates an attempt record.
    public init(strategy: String, outcome: Outcome, ms: Double, error: String? = nil, path: String? = nil) {
        self.strategy = strategy
        self.outcome = outcome
        self.ms = ms
        self.error = error
        self.path = path
    }
}

/// Where a connection's setup time went: milliseconds from the start of `connect` (or of the
/// introduction, on a camera) to the end of each phase.
public struct ConnectionPhases: Codable, Sendable, Hashable, CustomStringConvertible {
    /// Every strategy gathered (or ran out of ``ConnectorConfiguration/gatherTimeout``).
    public var gatheredMs: Double
    /// The viewer holds the camera's answer; the camera has sent its answer.
    public var introducedMs: Double
    /// The winning path's secure handshake completed.
    public var securedMs: Double

    /// Creates a phase record.
    public init(gatheredMs: Double, introducedMs: Double, securedMs: Double) {
        self.gatheredMs = gatheredMs
        self.introducedMs = introducedMs
        self.securedMs = securedMs
    }

    /// `gathered 3.1 ms, introduced 9.8 ms, secured 14.0 ms`.
    public var description: String {
        String(format: "gathered %.1f ms, introduced %.1f ms, secured %.1f ms", gatheredMs, introducedMs, securedMs)
    }
}

/// Everything about how a connection came to be: what won, how long it took, every attempt.
public struct ConnectionReport: Codable, Sendable, Hashable {
    /// The id of the winning strategy, e.g. `direct-lan`.
    public var path: String?
    /// The transport path of the winner, e.g. `udp 10.0.0.2:4000 -> 10.0.0.3:5000`.
    public var route: String?
    /// Milliseconds from the start of `connect` (or of the introduction, on a camera) to an authorised session.
    public var setupMs: Double
    /// Where ``setupMs`` went; the rest after ``ConnectionPhases/securedMs`` is the access check.
    public var phases: ConnectionPhases?
    /// The introduction's id, shared by viewer, cloud and camera logs.
    public var requestID: String?
    /// Every strategy that was tried, in the order they ended.
    public var attempts: [StrategyAttempt]
    /// Every move of the running session to another path (relay → direct, dead path → relay), in order.
    public var moves: [PathMove] = []
    /// The round trip (ms) this side measured on the winning path during the secure handshake
    /// (``SecureSession/roundTrip``); the channel engine's retransmission timer starts from it.
    public var roundTripMs: Double?

    /// Creates a report.
    public init(path: String?, route: String?, setupMs: Double, phases: ConnectionPhases? = nil,
                requestID: String?, attempts: [StrategyAttempt], roundTripMs: Double? = nil) {
        self.path = path
        self.route = route
        self.setupMs = setupMs
        self.phases = phases
        self.requestID = requestID
        self.attempts = attempts
        self.roundTripMs = roundTripMs
    }
}

/// Why a connection could not be made; carries every strategy attempt.
public struct TraversalError: CodedError {
    /// The class of failure.
    public struct Code: ErrorCode {
        /// The stable name.
        public let name: String
        /// The cloud has no reachable device with that UID (unknown and offline look the same).
        public static let unavailable = Code(name: "unavailable")
        /// No strategy produced a path whose secure handshake completed.
        public static let noPath = Code(name: "no-path")
        /// The camera refused our credential.
        public static let accessDenied = Code(name: "access-denied")
        /// Too many failed attempts; try again later.
        public static let rateLimited = Code(name: "rate-limited")
        /// The identity reached, or announced by the cloud, is not the one behind the UID.
        public static let identityMismatch = Code(name: "identity-mismatch")
        /// The cloud could not be reached or misbehaved.
        public static let cloud = Code(name: "cloud")
        /// The connection closed or failed after it was established.
        public static let closed = Code(name: "closed")
        /// A message was larger than the path allows.
        public static let messageTooLarge = Code(name: "message-too-large")
    }

    /// What went wrong.
    public let code: Code
    /// Detail for people.
    public let detail: String
    /// Every strategy attempt made before giving up.
    public let attempts: [StrategyAttempt]

    /// Creates an error.
    public init(code: Code, detail: String, attempts: [StrategyAttempt] = []) {
        self.code = code
        self.detail = detail
        self.attempts = attempts
    }
}
