#if canImport(Glibc)
import Glibc
#endif

/// The timeline every flood follows — warm-up, measured period, drain — and the loop that drives it.
///
/// ```
///  start ── warm-up ──► measureFrom ── measured ──► measureUntil ── drain (no sending) ──► stop
/// ```
public struct FloodTimeline {
    /// Seconds of load before counting.
    public var warmupSeconds: Double
    /// Seconds counted.
    public var durationSeconds: Double
    /// Seconds after the measured period spent collecting late arrivals, without sending.
    public var drainSeconds: Double

    /// Longest wait in `poll` when nothing arrived, milliseconds; keeps the clock checks frequent.
    public static let pollMilliseconds: Int32 = 2
    /// Empty receive rounds in a row before sleeping in `poll`: the generator owns its core, and
    /// spinning briefly spares the server the cost of waking it for every batch.
    public static let spinsBeforePoll = 200

    /// A timeline of the given lengths.
    public init(warmupSeconds: Double, durationSeconds: Double, drainSeconds: Double) {
        self.warmupSeconds = warmupSeconds
        self.durationSeconds = durationSeconds
        self.drainSeconds = drainSeconds
    }

    /// Calls `step(now, sending, measuring)` from `start` until the drain ends; `step` sends when `sending`,
    /// receives, and returns how many datagrams arrived. After many empty rounds it waits in `poll` on
    /// `descriptors`. Returns the CPU this process used in the measured period over its length.
    public func run(from start: Double, pollingOn descriptors: [Int32],
                    _ step: (_ now: Double, _ sending: Bool, _ measuring: Bool) throws(FloodError) -> Int) throws(FloodError) -> Double {
        var fds = descriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        let measureFrom = start + warmupSeconds
        let measureUntil = measureFrom + durationSeconds
        let stopAt = measureUntil + drainSeconds
        var cpuAtStart: Double?
        var cpuAtEnd: Double?
        var idleRounds = 0
        while true {
            let now = FloodClock.now()
            if now >= stopAt { break }
            let measuring = now >= measureFrom && now < measureUntil
            if measuring, cpuAtStart == nil { cpuAtStart = FloodClock.cpuSeconds() }
            if now >= measureUntil, cpuAtEnd == nil { cpuAtEnd = FloodClock.cpuSeconds() }
            if try step(now, now < measureUntil, measuring) > 0 {
                idleRounds = 0
            } else {
                idleRounds += 1
                if idleRounds >= Self.spinsBeforePoll {
                    _ = poll(&fds, nfds_t(fds.count), Self.pollMilliseconds)
                    idleRounds = 0
                }
            }
        }
        let end = cpuAtEnd ?? FloodClock.cpuSeconds()
        return (end - (cpuAtStart ?? end)) / durationSeconds
    }
}
