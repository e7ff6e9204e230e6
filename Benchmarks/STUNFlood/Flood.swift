#if canImport(Glibc)
import Glibc
#endif
import FloodKit
import STUNLite

/// Runs one flood: warm-up, measured period, drain; then reports what was counted.
struct Flood {
    /// The settings.
    let configuration: FloodConfiguration

    /// Result of a run.
    struct Report {
        /// The counters, summed over lanes.
        var counts: FloodCounts
        /// Length of the measured period, seconds.
        var seconds: Double
        /// CPU time this process used during the measured period, over its length (1.0 = one core busy).
        var cpuShare: Double

        /// Valid answers per second during the measured period.
        var answersPerSecond: Double { Double(counts.answered) / seconds }
        /// Share of measured requests never answered, 0…1.
        var loss: Double { counts.sent == 0 ? 0 : Double(counts.lost) / Double(counts.sent) }
    }

    /// Longest wait in `poll` when nothing arrived, milliseconds; keeps the clock checks frequent.
    static let pollMilliseconds: Int32 = 2
    /// Empty receive rounds in a row before sleeping in `poll`: the generator owns its core, and
    /// spinning briefly spares the server the cost of waking it for every answer batch.
    static let spinsBeforePoll = 200

    /// Floods until the measured period and the drain are over or ``FloodConfiguration/maxRequests`` are sent.
    func run() throws(FloodError) -> Report {
        let start = FloodClock.now()
        var lanes: [FloodLane] = []
        for i in 0..<configuration.sockets { lanes.append(try FloodLane(lane: i, configuration: configuration, now: start)) }
        var fds = lanes.map { pollfd(fd: $0.socket.fd, events: Int16(POLLIN), revents: 0) }
        var counts = FloodCounts()
        var budget = configuration.maxRequests
        let measureFrom = start + configuration.warmupSeconds
        let measureUntil = measureFrom + configuration.durationSeconds
        let stopAt = measureUntil + configuration.drainSeconds
        var cpuAtStart: Double?
        var cpuAtEnd: Double?
        var idleRounds = 0
        while true {
            let now = FloodClock.now()
            if now >= stopAt { break }
            let measuring = now >= measureFrom && now < measureUntil
            if measuring, cpuAtStart == nil { cpuAtStart = FloodClock.cpuSeconds() }
            if now >= measureUntil, cpuAtEnd == nil { cpuAtEnd = FloodClock.cpuSeconds() }
            if now < measureUntil {
                for lane in lanes { try lane.fill(measured: measuring, budget: &budget, counts: &counts) }
            }
            var received = 0
            for lane in lanes { received += try lane.receive(now: now, inMeasuredPeriod: measuring, counts: &counts) }
            if received > 0 {
                idleRounds = 0
            } else {
                idleRounds += 1
                if idleRounds >= Self.spinsBeforePoll {
                    _ = poll(&fds, nfds_t(fds.count), Self.pollMilliseconds)
                    idleRounds = 0
                }
            }
        }
        for lane in lanes { lane.finish(counts: &counts) }
        let cpu = (cpuAtEnd ?? FloodClock.cpuSeconds()) - (cpuAtStart ?? 0)
        return Report(counts: counts, seconds: configuration.durationSeconds, cpuShare: cpu / configuration.durationSeconds)
    }
}
