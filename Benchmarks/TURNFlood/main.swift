#if canImport(Glibc)
import Glibc
#endif
import FloodKit
import NIOPosix

// turn-flood: bounded, loopback-only load for benchmarking TURN servers (ChannelData relay throughput
// and allocation rate). See `turn-flood --help` and Scripts/bench-relay.sh.

let usage = """
    usage: turn-flood relay    [--target IP:PORT] [--user NAME:PASSWORD] [--transport udp|tcp|tls] [--payload BYTES]
                               [--lanes N] [--window N] [--batch N] [--rate PPS] [--warmup S] [--duration S] [--no-gso]
           turn-flood media    [--target IP:PORT] [--user NAME:PASSWORD] [--allocations N] [--pps N] [--payload BYTES]
                               [--direction to-peer|to-client|both] [--peers N] [--sources N] [--warmup S]
                               [--duration S] [--drain S] [--direct] [--watch-pid PID]...
           turn-flood allocate [--target IP:PORT] [--user NAME:PASSWORD] [--transport udp|tcp|tls]
                               [--concurrency N] [--warmup S] [--duration S]

    relay: allocates (long-term credentials), permits and binds a channel to a peer socket per lane, sends
    ChannelData and counts the payloads the peers receive: packets/s, Mbit/s, loss.
      --transport    udp (each lane its own socket, sendmmsg), tcp or tls (each lane its own connection,
                     ChannelData padded to 4 bytes; tls does not check the certificate) (default udp)
      --payload      application bytes per packet, 1…\(RelayFloodConfiguration.maxPayloadBytes) (default 100)
      --lanes        allocations at once, 1…\(RelayFloodConfiguration.maxLanes) (default 4)
      --window       packets in flight per lane, 1…\(RelayFloodConfiguration.maxWindow) (default 128)
      --batch        datagrams per sendmmsg (udp) and per recvmmsg at the peers, 1…\(RelayFloodConfiguration.maxBatch) (default 32)
      --rate         packets per second over all lanes (default: as fast as the windows allow)
      --no-gso       one sendmmsg message per packet instead of UDP GSO runs (udp)
    media: holds N allocations over UDP, each with a channel to one of --peers peer sockets, and sends
    --pps packets/s of --payload bytes through each (each way with --direction both), evenly spread;
    counts loss and one-way latency (p50, p99) of the packets sent in the measured period.
      --allocations  allocations at once, 1…\(MediaFloodConfiguration.maxAllocations) (default 1000)
      --pps          packets/s per allocation and direction (default 50)
      --payload      bytes per packet, \(MediaFloodConfiguration.minPayloadBytes)…\(MediaFloodConfiguration.maxPayloadBytes) (default 200)
      --sources      client source addresses, 127.0.1.1 upwards, allocation i on source i % N, 1…\(MediaFloodConfiguration.maxSourceAddresses)
                     (default \(MediaFloodConfiguration.defaultSourceAddresses): a fleet's clients come from many hosts, and a sharded relay
                     steers by source address)
      --direct       no relay: client sockets talk straight to the peers (the loopback anchor)
      --watch-pid    a process whose CPU over the measured period is reported (repeatable; the first
                     one's resident memory is read before and after the allocations)
    allocate: completes Allocate (401 challenge, then signed) + Refresh LIFETIME 0 cycles, each on a new
    socket or connection, and counts completed cycles per second.
      --transport    udp, tcp or tls (default udp; tls does not check the certificate)
      --concurrency  cycles at once, 1…\(AllocationFloodConfiguration.maxConcurrency) (default 16)
    all:
      --target       the server's port for the transport, loopback only (default 127.0.0.1:3478)
      --user         long-term credentials (default bench:bench)
      --warmup       seconds before counting (relay 1, media 2, allocate 0.5)
      --duration     seconds counted (relay 5, media 5, allocate 3)
    """

/// Splits `NAME:PASSWORD`.
func credentials(_ text: String) throws(FloodError) -> (String, String) {
    guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else { throw FloodError("--user must be NAME:PASSWORD") }
    return (String(text[..<colon]), String(text[text.index(after: colon)...]))
}

/// The value of `--transport`.
func transport(_ it: inout FloodArguments, _ name: String) throws(FloodError) -> FloodTransport {
    let text = try it.value(name)
    guard let t = FloodTransport(rawValue: text) else { throw FloodError("\(name): udp, tcp or tls") }
    return t
}

func relay(_ arguments: [String]) async throws(FloodError) -> Int32 {
    var c = RelayFloodConfiguration()
    var it = FloodArguments(arguments)
    while let arg = it.next() {
        switch arg {
        case "--target": c.server = try it.target(arg, defaultPort: 3478)
        case "--user": (c.username, c.password) = try credentials(try it.value(arg))
        case "--transport": c.transport = try transport(&it, arg)
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
    // One event loop for the stream lanes' writes: the generator is meant to own one core (the bench pins it).
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let report = try await RelayFlood(configuration: c).run(group: group)
    try? await group.shutdownGracefully()
    let n = report.counts
    print("turn-flood relay target \(c.server) transport \(c.transport.rawValue) lanes \(c.lanes) payload \(c.payloadBytes) B "
        + "window \(c.window) batch \(c.batch) rate \(c.rate.map { "\(Int($0))/s" } ?? "max") warmup \(c.warmupSeconds)s duration \(c.durationSeconds)s")
    print("sent \(n.sent)  relayed \(n.received)  packets/s \(Int(report.packetsPerSecond.rounded()))  "
        + "Mbit/s \(FloodFormat.decimal2(report.megabitsPerSecond))  loss \(FloodFormat.percent(report.loss))  "
        + "invalid \(n.invalid)  stalls \(n.stalls)  client-cpu \(FloodFormat.percent(report.cpuShare))")
    print("RESULT packets_per_s=\(Int(report.packetsPerSecond.rounded())) mbit_per_s=\(FloodFormat.decimal2(report.megabitsPerSecond)) "
        + "sent=\(n.sent) relayed=\(n.received) sent_total=\(n.sentTotal) relayed_total=\(n.receivedTotal) "
        + "loss_pct=\(FloodFormat.decimal2(report.loss * 100)) invalid=\(n.invalid) stalls=\(n.stalls) "
        + "client_cpu_pct=\(Int((report.cpuShare * 100).rounded()))")
    return n.invalid == 0 && n.received > 0 ? 0 : 1
}

func media(_ arguments: [String]) throws(FloodError) -> Int32 {
    var c = MediaFloodConfiguration()
    var it = FloodArguments(arguments)
    while let arg = it.next() {
        switch arg {
        case "--target": c.server = try it.target(arg, defaultPort: 3478)
        case "--user": (c.username, c.password) = try credentials(try it.value(arg))
        case "--allocations": c.allocations = try it.number(arg)
        case "--pps": c.packetsPerSecond = try it.number(arg)
        case "--payload": c.payloadBytes = try it.number(arg)
        case "--direction":
            let text = try it.value(arg)
            guard let d = MediaFloodConfiguration.Direction(rawValue: text) else { throw FloodError("--direction: to-peer, to-client or both") }
            c.direction = d
        case "--peers": c.peerSockets = try it.number(arg)
        case "--sources": c.sourceAddresses = try it.number(arg)
        case "--warmup": c.warmupSeconds = try it.number(arg)
        case "--duration": c.durationSeconds = try it.number(arg)
        case "--drain": c.drainSeconds = try it.number(arg)
        case "--direct": c.direct = true
        case "--watch-pid": c.watchedProcesses.append(try it.number(arg))
        case "-h", "--help": throw FloodError(usage)
        default: throw FloodError("unknown argument \(arg)\n\(usage)")
        }
    }
    try c.validate()
    let r = try MediaFlood(configuration: c).run()
    func figure(_ x: Int?) -> String { x.map(String.init) ?? "n/a" }
    let p50 = r.latency.percentile(0.5), p99 = r.latency.percentile(0.99), worst = r.latency.percentile(1)
    let cpu = r.watchedCPUShare.map { "\(Int(($0 * 100).rounded()))" } ?? "n/a"
    print("turn-flood media target \(c.direct ? "none (direct)" : "\(c.server)") allocations \(c.allocations) "
        + "\(Int(c.packetsPerSecond)) packets/s × \(c.payloadBytes) B \(c.direction.rawValue) warmup \(c.warmupSeconds)s duration \(c.durationSeconds)s")
    print("setup \(FloodFormat.decimal2(r.setupSeconds)) s  sent \(r.sent)  received \(r.received)  loss \(FloodFormat.percent(r.loss))  "
        + "latency p50 \(figure(p50)) µs p99 \(figure(p99)) µs max \(figure(worst)) µs  watched-cpu \(cpu)%  "
        + "memory/allocation \(figure(r.bytesPerAllocation)) B  client-cpu \(FloodFormat.percent(r.generatorCPUShare))  "
        + "lag \(FloodFormat.decimal2(r.maxLagSeconds * 1000)) ms")
    print("RESULT allocations=\(c.allocations) pps=\(Int(c.packetsPerSecond)) payload=\(c.payloadBytes) sent=\(r.sent) received=\(r.received) "
        + "loss_pct=\(FloodFormat.decimal2(r.loss * 100)) p50_us=\(figure(p50)) p99_us=\(figure(p99)) max_us=\(figure(worst)) "
        + "server_cpu_pct=\(cpu) bytes_per_allocation=\(figure(r.bytesPerAllocation)) "
        + "idle_bytes_per_allocation=\(figure(r.idleBytesPerAllocation)) setup_s=\(FloodFormat.decimal2(r.setupSeconds)) "
        + "invalid=\(r.invalid) send_refused=\(r.sendRefused) lag_ms=\(FloodFormat.decimal2(r.maxLagSeconds * 1000)) "
        + "client_cpu_pct=\(Int((r.generatorCPUShare * 100).rounded()))")
    return r.invalid == 0 && r.received > 0 ? 0 : 1
}

func allocate(_ arguments: [String]) async throws(FloodError) -> Int32 {
    var c = AllocationFloodConfiguration()
    var it = FloodArguments(arguments)
    while let arg = it.next() {
        switch arg {
        case "--target": c.server = try it.target(arg, defaultPort: 3478)
        case "--user": (c.username, c.password) = try credentials(try it.value(arg))
        case "--transport": c.transport = try transport(&it, arg)
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
    case "relay": exit(try await relay(Array(arguments.dropFirst())))
    case "media": exit(try media(Array(arguments.dropFirst())))
    case "allocate": exit(try await allocate(Array(arguments.dropFirst())))
    default: throw FloodError(usage)
    }
} catch {
    FloodFormat.printError("turn-flood: \(error)")
    exit(2)
}
