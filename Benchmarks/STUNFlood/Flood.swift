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

    /// Floods until the measured period and the drain are over or ``FloodConfiguration/maxRequests`` are sent.
    func run() throws(FloodError) -> Report {
        let start = FloodClock.now()
        var lanes: [FloodLane] = []
        for i in 0..<configuration.sockets { lanes.append(try FloodLane(lane: i, configuration: configuration, now: start)) }
        var counts = FloodCounts()
        var budget = configuration.maxRequests
        let timeline = FloodTimeline(warmupSeconds: configuration.warmupSeconds, durationSeconds: configuration.durationSeconds,
                                     drainSeconds: configuration.drainSeconds)
        let cpuShare = try timeline.run(from: start, pollingOn: lanes.map(\.socket.fd)) { now, sending, measuring throws(FloodError) in
            if sending {
                for lane in lanes { try lane.fill(measured: measuring, budget: &budget, counts: &counts) }
            }
            var received = 0
            for lane in lanes { received += try lane.receive(now: now, inMeasuredPeriod: measuring, counts: &counts) }
            return received
        }
        for lane in lanes { lane.finish(counts: &counts) }
        return Report(counts: counts, seconds: configuration.durationSeconds, cpuShare: cpuShare)
    }
}
