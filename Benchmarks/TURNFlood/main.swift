#if canImport(Glibc)
import Glibc
#endif
import FloodKit
import NIOPosix

// turn-flood: bounded, loopback-only load for benchmarking TURN servers (ChannelData relay throughput
// and allocation rate). See `turn-flood --help` and Scripts/bench-relay.sh.

let usage = """
    usage: turn-flood relay    [--target IP:PORT] [--user NAME:PASSWORD] [--payload BYTES] [--lanes N]
                               [--window N] [--batch N] [--rate PPS] [--warmup S] [--duration S] [--no-gso]
           turn-flood allocate [--target IP:PORT] [--user NAME:PASSWORD] [--transport udp|tcp|tls]
                               [--concurrency N] [--warmup S] [--duration S]

    relay: allocates over UDP (long-term credentials), permits and binds a channel to a peer socket per
    lane, sends ChannelData and counts the payloads the peers receive: packets/s, Mbit/s, loss.
      --payload      application bytes per packet, 1…\(RelayFloodConfiguration.maxPayloadBytes) (default 100)
      --lanes        allocations at once, 1…\(RelayFloodConfiguration.maxLanes) (default 4)
      --window       packets in flight per lane, 1…\(RelayFloodConfiguration.maxWindow) (default 128)
      --batch        datagrams per sendmmsg/recvmmsg, 1…\(RelayFloodConfiguration.maxBatch) (default 32)
      --rate         packets per second over all lanes (default: as fast as the windows allow)
      --no-gso       one sendmmsg message per packet instead of UDP GSO runs
    allocate: completes Allocate (401 challenge, then signed) + Refresh LIFETIME 0 cycles, each on a new
    socket or connection, and counts completed cycles per second.
      --transport    udp, tcp or tls (default udp; tls does not check the certificate)
      --concurrency  cycles at once, 1…\(AllocationFloodConfiguration.maxConcurrency) (default 16)
    both:
      --target       the server, loopback only (default 127.0.0.1:3478)
      --user         long-term credentials (default bench:bench)
      --warmup       seconds before counting (relay 1, allocate 0.5)
      --duration     seconds counted (relay 5, allocate 3)
    """

/// Splits `NAME:PASSWORD`.
func credentials(_ text: String) throws(FloodError) -> (String, String) {
    guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else { throw FloodError("--user must be NAME:PASSWORD") }
    return (String(text[..<colon]), String(text[text.index(after: colon)...]))
}

func relay(_ arguments: [String]) throws(FloodError) -> Int32 {
    var c = RelayFloodConfiguration()
    var it = FloodArguments(arguments)
    while let arg = it.next() {
        switch arg {
        case "--target": c.server = try it.target(arg, defaultPort: 3478)
        case "--user": (c.username, c.password) = try credentials(try it.value(arg))
        case "--payload": c.payloadBytes = try it.number(arg)
        case "--lanes": c.lanes = try it.number(arg)
        case "--window": c.window = try it.number(arg)
        case "--batch": c.batch = try it.number(arg)
        case "--rate": c.rate = try it.number(arg)
        case "--warmup": c.warmupSeconds = try it.number(arg)
        case "--duration": c.durationSeconds = try it.number(arg)
        case "--no-gso": c.segmentation = false
        case "-h", "--help": throw FloodError(usage)
        default: throw FloodError("unknown argument \(arg)\n\(usage)")
        }
    }
    try c.validate()
    let report = try RelayFlood(configuration: c).run()
    let n = report.counts
    print("turn-flood relay target \(c.server) lanes \(c.lanes) payload \(c.payloadBytes) B window \(c.window) batch \(c.batch) "
        + "rate \(c.rate.map { "\(Int($0))/s" } ?? "max") warmup \(c.warmupSeconds)s duration \(c.durationSeconds)s")
    print("sent \(n.sent)  relayed \(n.received)  packets/s \(Int(report.packetsPerSecond.rounded()))  "
        + "Mbit/s \(FloodFormat.decimal2(report.megabitsPerSecond))  loss \(FloodFormat.percent(report.loss))  "
        + "invalid \(n.invalid)  stalls \(n.stalls)  client-cpu \(FloodFormat.percent(report.cpuShare))")
    print("RESULT packets_per_s=\(Int(report.packetsPerSecond.rounded())) mbit_per_s=\(FloodFormat.decimal2(report.megabitsPerSecond)) "
        + "sent=\(n.sent) relayed=\(n.received) sent_total=\(n.sentTotal) relayed_total=\(n.receivedTotal) "
        + "loss_pct=\(FloodFormat.decimal2(report.loss * 100)) invalid=\(n.invalid) stalls=\(n.stalls) "
        + "client_cpu_pct=\(Int((report.cpuShare * 100).rounded()))")
    return n.invalid == 0 && n.received > 0 ? 0 : 1
}

func allocate(_ arguments: [String]) async throws(FloodError) -> Int32 {
    var c = AllocationFloodConfiguration()
    var it = FloodArguments(arguments)
    while let arg = it.next() {
        switch arg {
        case "--target": c.server = try it.target(arg, defaultPort: 3478)
        case "--user": (c.username, c.password) = try credentials(try it.value(arg))
        case "--transport":
            let text = try it.value(arg)
            guard let t = AllocationFloodConfiguration.Transport(rawValue: text) else { throw FloodError("--transport: udp, tcp or tls") }
            c.transport = t
        case "--concurrency": c.concurrency = try it.number(arg)
        case "--warmup": c.warmupSeconds = try it.number(arg)
        case "--duration": c.durationSeconds = try it.number(arg)
        case "-h", "--help": throw FloodError(usage)
        default: throw FloodError("unknown argument \(arg)\n\(usage)")
        }
    }
    try c.validate()
    // One event loop: the generator is meant to own one core (the bench pins it).
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let report = try await AllocationFlood(configuration: c).run(group: group)
    try? await group.shutdownGracefully()
    let n = report.counts
    print("turn-flood allocate target \(c.server) transport \(c.transport.rawValue) concurrency \(c.concurrency) "
        + "warmup \(c.warmupSeconds)s duration \(c.durationSeconds)s")
    print("allocations \(n.succeeded)  allocations/s \(Int(report.allocationsPerSecond.rounded()))  failed \(n.failed)  "
        + "client-cpu \(FloodFormat.percent(report.cpuShare))")
    if let why = n.firstFailure { print("first failure: \(why)") }
    print("RESULT allocations_per_s=\(Int(report.allocationsPerSecond.rounded())) allocations=\(n.succeeded) "
        + "allocations_total=\(n.succeededTotal) failed=\(n.failed) client_cpu_pct=\(Int((report.cpuShare * 100).rounded()))")
    return n.succeeded > 0 ? 0 : 1
}

let arguments = Array(CommandLine.arguments.dropFirst())
do {
    switch arguments.first {
    case "relay": exit(try relay(Array(arguments.dropFirst())))
    case "allocate": exit(try await allocate(Array(arguments.dropFirst())))
    default: throw FloodError(usage)
    }
} catch {
    FloodFormat.printError("turn-flood: \(error)")
    exit(2)
}
