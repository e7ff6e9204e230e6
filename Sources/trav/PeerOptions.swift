import ArgumentParser
import Foundation
import Logging
import STUNLite
import Strategies
import Traversal

/// Options shared by `trav camera` and `trav connect`: where the cloud is and which strategies to use.
struct PeerOptions: ParsableArguments {
    @Option(help: "The cloud's signalling address, HOST[:PORT] (default port 5349).") var cloud: String?
    @Option(help: "The cloud's CA certificate (the ca.pem `trav cloud` writes).") var cloudCA: String?
    @Option(help: "The cloud's STUN port.") var stunPort: UInt16 = 3478
    @Option(help: "Comma-separated strategy ids (default: all: \(StrategyCatalog.ids.joined(separator: ","))).")
    var strategies: String?
    @Option(help: "UDP port for cloud-less discovery on the LAN (0 disables).") var lanPort: UInt16 = LANDiscovery.defaultPort
    @Option(help: "Seconds a connection attempt may take.") var connectTimeout: Double = 10
    @Option(help: "Comma-separated strategy ids a relayed session runs again in the background to move to a direct path (default: the chosen strategies that can; `none`: sessions stay where they start).")
    var upgrade: String?
    @Flag(help: "A session that wins on a direct path also connects the relay and keeps it as standby (an allocation, refreshed) to fall back to within about 1.3 s when the direct path dies, and replaces it when it dies (e.g. after the viewer changes networks); both sides need it. Off by default: a direct session holds no relay allocation.")
    var relayStandby = false
    @Option(help: "Seconds between keepalives on a peer connection (0: none, so NATs forget an idle path; for tests that show it).")
    var keepalive: Int = Int(PeerConnection.keepaliveInterval.components.seconds)

    func validate() throws {
        if cloud != nil, cloudCA == nil { throw ValidationError("--cloud needs --cloud-ca (the cloud's ca.pem)") }
        let range = PeerConnection.keepaliveRange
        if keepalive != 0, !range.contains(.seconds(keepalive)) {
            throw ValidationError("--keepalive must be 0 or \(range.lowerBound.components.seconds)...\(range.upperBound.components.seconds)")
        }
        _ = try chosenStrategies()
        _ = try upgradeStrategies()
    }

    /// The strategies of `--upgrade`; nil: the default (those of the chosen ones that can).
    func upgradeStrategies() throws -> [any TraversalStrategy]? {
        guard let upgrade else { return nil }
        if upgrade == "none" { return [] }
        return try StrategyCatalog.named(upgrade.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) })
    }

    /// The strategies chosen; the relay's trust comes from the cloud (``TravCloud``).
    func chosenStrategies() throws -> [any TraversalStrategy] {
        try strategies.map {
            try StrategyCatalog.named($0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) })
        } ?? StrategyCatalog.all
    }

    /// The cloud endpoint, if one was given.
    func endpoint() throws -> CloudEndpoint? {
        guard let cloud, let cloudCA else { return nil }
        let (host, port) = splitHostPort(cloud, defaultPort: CloudEndpoint.defaultPort)
        return CloudEndpoint(host: host, port: port, trust: try .pinnedCA(file: cloudCA))
    }

    /// The cloud (signalling, its STUN server on --stun-port, its CA), if one was given.
    func travCloud() throws -> TravCloud? {
        guard let endpoint = try endpoint() else { return nil }
        return TravCloud(host: endpoint.host, port: endpoint.port, stunPort: stunPort, trust: endpoint.trust)
    }

    func connector(identity: DeviceIdentity, knownDevices: KnownDevices = KnownDevices(), logger: Logger,
                   browserViewers: (any BrowserViewerAnswering)? = nil) throws -> Connector {
        var configuration = ConnectorConfiguration(identity: identity, cloud: try travCloud(), strategies: try chosenStrategies(),
                                                   connectTimeout: .milliseconds(Int64(connectTimeout * 1000)),
                                                   knownDevices: knownDevices, logger: logger)
        configuration.keepaliveInterval = keepalive == 0 ? nil : .seconds(keepalive)
        configuration.upgradeStrategies = try upgradeStrategies()
        configuration.relayStandby = relayStandby
        configuration.browserViewers = browserViewers
        return Connector(configuration: configuration)
    }
}

/// Splits `host:port`, `[v6]:port` or a bare host; a port that is not a number gives `defaultPort`.
func splitHostPort(_ text: String, defaultPort: UInt16) -> (String, UInt16) {
    ServerName.split(text, defaultPort: defaultPort).map { ($0.host, $0.port) } ?? (text, defaultPort)
}

/// A connection report as `trav connect --json` prints it.
struct ConnectOutput: Encodable {
    struct Attempt: Encodable {
        var strategy: String
        var outcome: String
        var ms: Double
        var error: String?
    }
    var uid: String
    var connected: Bool
    var path: String?
    var route: String?
    var setupMs: Double?
    var phases: ConnectionPhases?
    /// The round trip the secure handshake measured (ms).
    var roundTripMs: Double?
    var echoBytes: Int
    var echoVerified: Bool
    var echoMs: Double?
    /// Seconds idle after the first echo before the second (`--idle`); nil without one.
    var idleSeconds: Int?
    /// Whether the echo after the idle came back intact: the path outlived it.
    var idleEchoVerified: Bool?
    /// How long the echo after the idle took, when it came back.
    var idleEchoMs: Double?
    /// The video received (`--save`, `--stats`).
    var video: VideoOutput?
    /// The reliable channel transfer (`--channel-send`).
    var channelSend: ChannelSendOutput?
    /// Each move of the session to another path while it ran.
    var moves: [MoveOutput]?
    var error: String?
    var attempts: [Attempt]

    init(uid: String, report: ConnectionReport?, attempts: [StrategyAttempt], echoBytes: Int, echoVerified: Bool,
         echoMs: Double?, error: String?) {
        self.uid = uid
        self.connected = report != nil
        self.path = report?.path
        self.route = report?.route
        self.setupMs = report?.setupMs
        self.phases = report?.phases
        self.roundTripMs = report?.roundTripMs
        self.echoBytes = echoBytes
        self.echoVerified = echoVerified
        self.echoMs = echoMs
        self.error = error
        self.attempts = attempts.map { Attempt(strategy: $0.strategy, outcome: $0.outcome.rawValue, ms: $0.ms, error: $0.error) }
    }
}

/// One move of a session to another path, as `trav connect --json` prints it.
struct MoveOutput: Encodable {
    var from: String
    var to: String
    var route: String
    var reason: String
    /// Milliseconds after the session was established.
    var atMs: Double
    /// When, in milliseconds since 1970 (to line up with what a watcher did meanwhile).
    var unixMs: Double

    /// `move` of a session established at `established`.
    init(_ move: PathMove, established: Date) {
        from = move.from
        to = move.to
        route = move.route
        reason = move.reason.rawValue
        atMs = move.atMs
        unixMs = (established.timeIntervalSince1970 * 1000 + move.atMs).rounded()
    }
}

/// Prints a report as a short table.
func printReport(_ report: ConnectionReport, prefix: String = "") {
    print("\(prefix)path      \(report.path ?? "none")  \(RemoteText.printable(report.route ?? ""))")
    print("\(prefix)setup     \(String(format: "%.1f", report.setupMs)) ms\(report.phases.map { " (\($0), then the access check)" } ?? "")")
    for a in report.attempts {
        let err = a.error.map { "  (\(RemoteText.printable($0.prefix(100))))" } ?? ""
        print("\(prefix)  \(a.strategy.padding(toLength: 22, withPad: " ", startingAt: 0)) \(a.outcome.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)) \(String(format: "%7.1f", a.ms)) ms\(err)")
    }
}

/// How long the echo waits for a chunk's reply before sending the chunk again: a datagram lost on a full line
/// (a video burst through a shallow router queue) is sent again instead of failing the check.
let echoResendInterval = Duration.milliseconds(250)
/// How many times the echo sends one chunk again before it waits out `echoCheck`'s timeout.
let echoResends = 8

/// Sends `bytes` of random data in path-sized chunks and checks every byte comes back within `timeout`
/// (a chunk whose reply is lost is sent again, `echoResends` times at most; a reply that matches no chunk sent fails
/// the check; when the time is up the wait is cancelled, which finishes the connection's inbound stream); returns (verified, ms).
func echoCheck(_ c: PeerConnection, bytes: Int, timeout: Duration = .seconds(10)) async -> (Bool, Double) {
    await withTaskGroup(of: (Bool, Double).self) { group in
        group.addTask { await echoRoundTrips(c, bytes: bytes) }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return (false, 0)
        }
        let first = await group.next() ?? (false, 0)
        group.cancelAll()
        return first
    }
}

/// The echo itself, unbounded: stop-and-wait, one chunk in flight and sent again until its reply comes back, so a
/// datagram path needs no retransmission layer here. Late replies to an earlier chunk's copies are skipped.
private func echoRoundTrips(_ c: PeerConnection, bytes: Int) async -> (Bool, Double) {
    let started = ContinuousClock.now
    let chunk = min(c.maxMessageSize, 1000)
    var answered: Set<[UInt8]> = []
    var iterator = c.inbound.makeAsyncIterator()
    var remaining = bytes
    do {
        while remaining > 0 {
            let part = (0..<min(remaining, chunk)).map { _ in UInt8.random(in: 0...255) }
            remaining -= part.count
            try await c.send(part)
            let again = Task {
                for _ in 0..<echoResends {
                    try await Task.sleep(for: echoResendInterval)
                    try await c.send(part)
                }
            }
            defer { again.cancel() }
            while true {
                guard let back = try await iterator.next() else { return (false, 0) }
                if back == part { break }
                if !answered.contains(back) { return (false, 0) }
            }
            answered.insert(part)
        }
    } catch {
        return (false, 0)
    }
    let d = ContinuousClock.now - started
    return (true, d.milliseconds)
}
