import FloodKit
import DatagramIO
import STUNLite

/// What to flood, for how long and how hard; every bound is named and checked in ``validate()``.
struct FloodConfiguration {
    /// The server to flood; only loopback addresses are accepted.
    var target = TransportAddress(ip: .v4(0x7F00_0001), port: 3478)
    /// Sockets to send from, each with its own window.
    var sockets = 1
    /// Requests in flight per socket, at most: the bounded window.
    var window = 256
    /// Datagrams per `sendmmsg`/`recvmmsg` call.
    var batch = 32
    /// Seconds of flooding before counting starts (lets the server's caches and allocators settle).
    var warmupSeconds = 1.0
    /// Seconds during which requests and answers are counted.
    var durationSeconds = 5.0
    /// Seconds after the measured period spent collecting late answers, without sending.
    var drainSeconds = 0.2
    /// Requests sent over the whole run, at most (warm-up included).
    var maxRequests = 20_000_000
    /// Whether the requests carry FINGERPRINT (the reply must then carry a valid one too).
    var fingerprint = false
    /// Whether to send with UDP GSO when the kernel allows it (see ``MultiMessageSocket/enableSegmentation(segmentSize:)``).
    var segmentation = true
    /// An in-flight request counts as lost when its socket has had no answer for this long.
    var stallSeconds = 0.05

    /// Upper bound of ``sockets``.
    static let maxSockets = 8
    /// Upper bound of ``window``.
    static let maxWindow = 4096
    /// Upper bound of ``batch``.
    static let maxBatch = 256
    /// Upper bound of ``warmupSeconds`` + ``durationSeconds``.
    static let maxRunSeconds = 60.0
    /// Upper bound of ``maxRequests``.
    static let maxRequestsLimit = 200_000_000

    /// Rejects out-of-range settings and any target that is not a loopback address.
    func validate() throws(FloodError) {
        try FloodTarget.check(target)
        guard (1...Self.maxSockets).contains(sockets) else { throw FloodError("--sockets must be 1…\(Self.maxSockets)") }
        guard (1...Self.maxWindow).contains(window) else { throw FloodError("--window must be 1…\(Self.maxWindow)") }
        guard (1...Self.maxBatch).contains(batch) else { throw FloodError("--batch must be 1…\(Self.maxBatch)") }
        guard warmupSeconds >= 0, durationSeconds > 0, warmupSeconds + durationSeconds <= Self.maxRunSeconds else {
            throw FloodError("--warmup ≥ 0, --duration > 0, together at most \(Int(Self.maxRunSeconds)) s")
        }
        guard (1...Self.maxRequestsLimit).contains(maxRequests) else {
            throw FloodError("--max-requests must be 1…\(Self.maxRequestsLimit)")
        }
    }

    /// The usage text.
    static let usage = """
        usage: stun-flood [--target IP:PORT] [--sockets N] [--window N] [--batch N] [--warmup S]
                          [--duration S] [--max-requests N] [--fingerprint] [--no-gso]

        Floods a STUN server on loopback with Binding requests and prints answers per second.
          --target        server, loopback only (default 127.0.0.1:3478)
          --sockets       sending sockets, 1…\(maxSockets) (default 1)
          --window        requests in flight per socket, 1…\(maxWindow) (default 256)
          --batch         datagrams per sendmmsg/recvmmsg, 1…\(maxBatch) (default 32)
          --warmup        seconds before counting (default 1)
          --duration      seconds counted (default 5)
          --max-requests  requests sent at most, warm-up included (default 20000000)
          --fingerprint   requests carry FINGERPRINT (28 bytes instead of 20)
          --no-gso        one sendmmsg message per request instead of UDP GSO runs
        """

    /// Parses `--name value` arguments.
    static func parse(_ arguments: [String]) throws(FloodError) -> FloodConfiguration {
        var c = FloodConfiguration()
        var it = FloodArguments(arguments)
        while let arg = it.next() {
            switch arg {
            case "--target": c.target = try it.target(arg, defaultPort: 3478)
            case "--sockets": c.sockets = try it.number(arg)
            case "--window": c.window = try it.number(arg)
            case "--batch": c.batch = try it.number(arg)
            case "--warmup": c.warmupSeconds = try it.number(arg)
            case "--duration": c.durationSeconds = try it.number(arg)
            case "--max-requests": c.maxRequests = try it.number(arg)
            case "--fingerprint": c.fingerprint = true
            case "--no-gso": c.segmentation = false
            case "-h", "--help": throw FloodError(usage)
            default: throw FloodError("unknown argument \(arg)\n\(usage)")
            }
        }
        try c.validate()
        return c
    }
}
