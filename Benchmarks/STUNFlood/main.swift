#if canImport(Glibc)
import Glibc
#endif

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
        + "loss \(percent(report.loss))  invalid \(c.invalid)  late \(c.late)  client-cpu \(percent(report.cpuShare))")
    if let why = c.firstInvalid { print("first invalid answer: \(why)") }
    // One machine-readable line for scripts.
    print("RESULT answers_per_s=\(Int(report.answersPerSecond.rounded())) sent=\(c.sent) answered=\(c.answered) "
        + "answered_total=\(c.answeredTotal) "
        + "lost=\(c.lost) loss_pct=\(String(format2(report.loss * 100))) invalid=\(c.invalid) client_cpu_pct=\(Int((report.cpuShare * 100).rounded()))")
    exit(c.invalid == 0 && c.answered > 0 ? 0 : 1)
} catch {
    let text = "stun-flood: \(error)\n"
    _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    exit(2)
}

func percent(_ x: Double) -> String { format2(x * 100) + "%" }

/// Two decimals without Foundation.
func format2(_ x: Double) -> String {
    let hundredths = Int((x * 100).rounded())
    let fraction = abs(hundredths % 100)
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}
