#if canImport(Glibc)
import Glibc
#endif
import FloodKit

// stun-flood: a bounded, loopback-only Binding-request flood for benchmarking STUN servers.
// See FloodConfiguration.usage and Scripts/bench-stun.sh.

do {
    let configuration = try FloodConfiguration.parse(Array(CommandLine.arguments.dropFirst()))
    let report = try Flood(configuration: configuration).run()
    let c = report.counts
    print("stun-flood target \(configuration.target) sockets \(configuration.sockets) window \(configuration.window) "
        + "batch \(configuration.batch) gso \(configuration.segmentation ? "on" : "off") fingerprint \(configuration.fingerprint ? "yes" : "no") "
        + "warmup \(configuration.warmupSeconds)s duration \(configuration.durationSeconds)s")
    print("sent \(c.sent)  answered \(c.answered)  answers/s \(Int(report.answersPerSecond.rounded()))  "
        + "loss \(FloodFormat.percent(report.loss))  invalid \(c.invalid)  late \(c.late)  client-cpu \(FloodFormat.percent(report.cpuShare))")
    if let why = c.firstInvalid { print("first invalid answer: \(why)") }
    // One machine-readable line for scripts.
    print("RESULT answers_per_s=\(Int(report.answersPerSecond.rounded())) sent=\(c.sent) answered=\(c.answered) "
        + "answered_total=\(c.answeredTotal) "
        + "lost=\(c.lost) loss_pct=\(FloodFormat.decimal2(report.loss * 100)) invalid=\(c.invalid) client_cpu_pct=\(Int((report.cpuShare * 100).rounded()))")
    exit(c.invalid == 0 && c.answered > 0 ? 0 : 1)
} catch {
    FloodFormat.printError("stun-flood: \(error)")
    exit(2)
}
