import NIOCore
import NIOPosix
import STUNLite
import TURNLite

/// Which allocations to make, over what, how many at once and for how long; bounds checked in ``validate()``.
public struct AllocationFloodConfiguration: Sendable {
    /// The TURN server's port for ``transport``; only loopback addresses are accepted.
    public var server = TransportAddress(ip: .v4(0x7F00_0001), port: 3478)
    /// UDP, TCP or TLS.
    public var transport = FloodTransport.udp
    /// Long-term user name.
    public var username = "bench"
    /// Long-term password.
    public var password = "bench"
    /// Allocation cycles in progress at once.
    public var concurrency = 16
    /// Seconds of allocating before counting starts.
    public var warmupSeconds = 0.5
    /// Seconds during which completed cycles are counted.
    public var durationSeconds = 3.0

    /// Creates the defaults: UDP, 16 at once, 0.5 s warm-up, 3 s counted.
    public init() {}

    /// Upper bound of ``concurrency`` (each holds an allocation: keep under the server's per-user quota).
    public static let maxConcurrency = 256
    /// Upper bound of ``warmupSeconds`` + ``durationSeconds``.
    public static let maxRunSeconds = 60.0

    /// Rejects out-of-range settings and any server that is not a loopback address.
    public func validate() throws(FloodError) {
        try FloodTarget.check(server)
        guard (1...Self.maxConcurrency).contains(concurrency) else {
            throw FloodError("--concurrency must be 1…\(Self.maxConcurrency)")
        }
        guard warmupSeconds >= 0, durationSeconds > 0, warmupSeconds + durationSeconds <= Self.maxRunSeconds else {
            throw FloodError("--warmup ≥ 0, --duration > 0, together at most \(Int(Self.maxRunSeconds)) s")
        }
    }
}

/// What an allocation flood counted.
public struct AllocationFloodCounts: Sendable, Equatable {
    /// Cycles completed during the measured period (the rate's numerator).
    public var succeeded = 0
    /// Cycles that failed during the measured period.
    public var failed = 0
    /// Cycles completed over the whole run.
    public var succeededTotal = 0
    /// The first failure, for the report.
    public var firstFailure: String?

    /// Creates zero counts.
    public init() {}

    /// Adds another worker's counts.
    mutating func add(_ other: AllocationFloodCounts) {
        succeeded += other.succeeded
        failed += other.failed
        succeededTotal += other.succeededTotal
        if firstFailure == nil { firstFailure = other.firstFailure }
    }
}

/// The result of an allocation flood.
public struct AllocationFloodReport: Sendable {
    /// The counters.
    public var counts: AllocationFloodCounts
    /// Length of the measured period, seconds.
    public var seconds: Double
    /// CPU time this process used during the run, over its length (1.0 = one core busy).
    public var cpuShare: Double

    /// Completed allocation cycles per second during the measured period.
    public var allocationsPerSecond: Double { Double(counts.succeeded) / seconds }
}

/// Completes allocation cycles against a TURN server as fast as ``AllocationFloodConfiguration/concurrency``
/// workers can, each cycle a new client:
///
/// ```
///  connect (a new UDP socket, TCP connection or TLS session)
///  Allocate ──► 401 REALM NONCE ──► Allocate USERNAME REALM NONCE MI ──► success   (RFC 8656 §7, RFC 8489 §9.2)
///  Refresh LIFETIME 0 ──► success                                                    (RFC 8656 §8: frees it)
///  close
/// ```
///
/// The cycles use ``TURNClient``, the same client the rest of the project uses.
public struct AllocationFlood: Sendable {
    /// The settings.
    public let configuration: AllocationFloodConfiguration

    /// A flood with `configuration`.
    public init(configuration: AllocationFloodConfiguration) { self.configuration = configuration }

    /// Runs the workers on `group` until the measured period is over and reports.
    public func run(group: any EventLoopGroup) async throws(FloodError) -> AllocationFloodReport {
        try configuration.validate()
        let client = configuration.transport.clientConfiguration(server: configuration.server, username: configuration.username,
                                                                 password: configuration.password)
        let start = FloodClock.now()
        let measureFrom = start + configuration.warmupSeconds
        let measureUntil = measureFrom + configuration.durationSeconds
        let cpuBefore = FloodClock.cpuSeconds()
        let counts = await withTaskGroup(of: AllocationFloodCounts.self) { tasks in
            for _ in 0..<configuration.concurrency {
                tasks.addTask {
                    var mine = AllocationFloodCounts()
                    while FloodClock.now() < measureUntil {
                        let outcome = await Self.cycle(client, group: group)
                        let now = FloodClock.now()
                        let measured = now >= measureFrom && now < measureUntil
                        if let failure = outcome {
                            if measured { mine.failed += 1 }
                            if mine.firstFailure == nil { mine.firstFailure = failure }
                        } else {
                            mine.succeededTotal += 1
                            if measured { mine.succeeded += 1 }
                        }
                    }
                    return mine
                }
            }
            var all = AllocationFloodCounts()
            for await c in tasks { all.add(c) }
            return all
        }
        let elapsed = max(FloodClock.now() - start, configuration.durationSeconds)
        return AllocationFloodReport(counts: counts, seconds: configuration.durationSeconds,
                                     cpuShare: (FloodClock.cpuSeconds() - cpuBefore) / elapsed)
    }

    /// One cycle: connect, allocate, free, close; `nil` on success, else why it failed.
    private static func cycle(_ configuration: TURNClient.Configuration, group: any EventLoopGroup) async -> String? {
        let client: TURNClient
        do {
            client = try await TURNClient.connect(configuration, group: group)
        } catch {
            return "connect: \(error)"
        }
        var failure: String?
        do {
            _ = try await client.allocate()
            try await client.refresh(lifetime: 0)
        } catch {
            failure = "\(error)"
        }
        await client.close()
        return failure
    }
}
