import Foundation

/// A NAT lab running trav itself: the cloud in the lab's internet, cameras and viewers as `trav`
/// processes in their hosts. Shared by the lab tests and `trav compare`.
public struct TravLab: Sendable {
    /// The repository root (three levels above this file).
    public static var repoRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
    /// The debug build of `trav`, which `swift test` runs.
    public static var debugTrav: String { repoRoot.appendingPathComponent(".build/debug/trav").path }

    /// Non-nil when the lab or the `trav` binary is missing, with a one-line reason.
    public static func skipReason(trav: String = debugTrav) -> String? {
        if let r = NATLab.skipReason { return r }
        return FileManager.default.isExecutableFile(atPath: trav) ? nil : "trav is not built at \(trav) (swift build)"
    }

    /// The lab.
    public let lab: Lab
    /// A directory for the cloud's CA and the identity files, removed afterwards.
    public let dir: String
    /// The `trav` executable run in the hosts.
    public let trav: String
    /// The password every camera here uses.
    public let password = "lab-password"
    /// The cloud's TLS port, signalling and the relay's TLS (443 lets a TCP-443-only network reach both).
    public var signallingPort: UInt16 = 5349

    /// Builds a lab of `sites`, runs `body`, and always tears down the lab and the directory.
    public static func with<T>(sites: [LabSite], trav: String = debugTrav, signallingPort: UInt16 = 5349,
                               _ body: (TravLab) async throws -> T) async throws -> T {
        let dir = NSTemporaryDirectory() + "trav-lab-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        return try await NATLab.withLab(sites: sites) { lab in
            var run = TravLab(lab: lab, dir: dir, trav: trav)
            run.signallingPort = signallingPort
            return try await body(run)
        }
    }

    /// The lab's "internet" (TEST-NET-3), where the cloud's relay allocates and which it must be allowed to reach.
    public static let internetPrefix = "203.0.113.0/24"

    /// Starts `trav cloud` on the lab's two cloud addresses (RFC 5780 STUN, TLS signalling, a relay
    /// allowed to reach the lab's internet), with `extra` arguments.
    public func startCloud(_ extra: [String] = []) throws -> LabProcess {
        let a = lab.cloudAddresses
        return try lab.spawn(host: "cloud", [trav, "cloud", "--listen", a[0], "--alternate-ip", a[1], "--data", dir,
                                           "--tls-port", "\(signallingPort)", "--relay-allow-peers", Self.internetPrefix,
                                           // Every lab viewer shares its site's one NAT address, and a grid connects
                                           // many times a second from it: far above a household's rate.
                                           "--lookup-burst", "1000", "--lookups-per-second", "100"] + extra)
    }

    /// Creates an identity, starts `trav camera` on `host` (with `extra` arguments), and returns its UID once it is registered.
    public func startCamera(on host: String, strategies: String? = nil, extra: [String] = []) async throws -> String {
        try await startCameraProcess(on: host, strategies: strategies, extra: extra).uid
    }

    /// ``startCamera(on:strategies:extra:)``, also returning the camera's process (to stop it mid-session).
    public func startCameraProcess(on host: String, strategies: String? = nil, extra: [String] = []) async throws -> (uid: String, process: LabProcess) {
        try await lab.waitForListener(host: "cloud", port: Int(signallingPort), udp: false, timeout: .seconds(20))
        // One identity per camera started, so a host can run one camera after another (or several at once).
        let key = "\(dir)/\(host)-\(UUID().uuidString.prefix(8)).key"
        let made = try await lab.run(host: host, [trav, "identity", "new", "--out", key])
        guard made.succeeded, let uid = made.stdout.split(whereSeparator: \.isWhitespace).first(where: { $0.hasPrefix("TRAV-") }) else {
            throw NATLabError(.launchFailed, "identity new failed: \(made)")
        }
        var args = [trav, "camera", "--identity", key, "--cloud", cloudSignalling, "--cloud-ca", "\(dir)/ca.pem",
                    "--password", password, "--paired-viewers", try await viewerPublicKey(host: host)]
        if let strategies { args += ["--strategies", strategies] }
        let camera = try lab.spawn(host: host, args + extra)
        for _ in 0..<150 {
            if camera.output.stdout.contains("serving") { return (String(uid), camera) }
            guard camera.isRunning else { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw NATLabError(.launchFailed, "camera did not register: \(camera.output)")
    }

    /// The lab viewer's identity file, paired with every camera (``connect(from:to:strategies:timeout:lasting:echoBytes:paired:extra:)``).
    var viewerKey: String { "\(dir)/viewer.key" }

    /// Creates the lab viewer's identity if needed and returns its public key (base64).
    func viewerPublicKey(host: String) async throws -> String {
        if !FileManager.default.fileExists(atPath: viewerKey) {
            let made = try await lab.run(host: host, [trav, "identity", "new", "--out", viewerKey])
            guard made.succeeded else { throw NATLabError(.launchFailed, "identity new failed: \(made)") }
        }
        let shown = try await lab.run(host: host, [trav, "identity", "show", "--public-key", viewerKey])
        guard shown.succeeded, let key = shown.stdout.split(whereSeparator: \.isWhitespace).first else {
            throw NATLabError(.launchFailed, "identity show failed: \(shown)")
        }
        return String(key)
    }

    /// `ip:port` of the cloud's signalling.
    var cloudSignalling: String { "\(lab.cloudAddresses[0]):\(signallingPort)" }

    /// What `trav connect --json` reports.
    public struct ConnectResult: Codable, Sendable, CustomStringConvertible {
        /// One strategy's outcome.
        public struct Attempt: Codable, Sendable {
            /// The strategy id.
            public var strategy: String
            /// connected, lost-race, failed, cancelled or skipped.
            public var outcome: String
            /// Milliseconds from the start signal.
            public var ms: Double
            /// Why it failed.
            public var error: String?
        }
        /// Whether a session was established.
        public var connected: Bool
        /// The winning strategy.
        public var path: String?
        /// The winning transport's description (`udp A -> B`, and what it went through).
        public var route: String?
        /// Milliseconds from the start of `connect` to an authorised session.
        public var setupMs: Double?
        /// Where the setup time went.
        public var phases: Phases?
        /// The round trip the secure handshake measured (ms).
        public var roundTripMs: Double?
        /// Whether the echo came back intact.
        public var echoVerified: Bool
        /// Milliseconds from the start of `connect` to the end of each phase (`trav connect --json`'s `phases`).
        public struct Phases: Codable, Sendable {
            /// Gathering done.
            public var gatheredMs: Double
            /// The camera's answer in hand.
            public var introducedMs: Double
            /// The secure handshake done.
            public var securedMs: Double
        }
        /// Seconds idle before the second echo (`--idle`), nil without one.
        public var idleSeconds: Int?
        /// Whether the echo after the idle came back intact, nil without one.
        public var idleEchoVerified: Bool?
        /// The error, when not connected.
        public var error: String?
        /// Every strategy's outcome.
        public var attempts: [Attempt]
        /// What `--stats`/`--save` received.
        public var video: Video?
        /// What `--channel-send` measured.
        public var channelSend: ChannelSend?
        /// Each move of the session to another path (relay → direct, dead path → relay).
        public var moves: [Move]?

        /// One move of a session (`trav connect --json`'s `moves`).
        public struct Move: Codable, Sendable {
            /// The strategy id of the path left.
            public var from: String
            /// The strategy id of the path taken.
            public var to: String
            /// The route of the path taken.
            public var route: String
            /// `upgrade`, `path-dead`, `peer-moved`, `rebinding` or `standby-replaced`.
            public var reason: String
            /// Milliseconds after the session was established.
            public var atMs: Double
            /// When, in milliseconds since 1970.
            public var unixMs: Double
        }

        /// Video statistics of `trav connect --stats`.
        public struct Video: Codable, Sendable {
            /// Video frames received.
            public var frames: Int
            /// Keyframes received.
            public var keyframes: Int
            /// Seconds from first to last frame.
            public var seconds: Double
            /// Average kbit/s.
            public var kbps: Double
            /// Frame latency percentiles (ms).
            public var latencyP50Ms: Double?
            /// See ``latencyP50Ms``.
            public var latencyP99Ms: Double?
            /// Frames the camera produced that never arrived.
            public var droppedFrames: Int
            /// Frames whose reference never arrived (must be 0).
            public var brokenFrames: Int
            /// Gaps over 500 ms.
            public var stalls: Int
            /// The longest gap between frames (ms).
            public var longestGapMs: Double
            /// Latency p99 of each whole minute.
            public var latencyP99PerMinuteMs: [Double]?
            /// Latency p50 of each whole minute.
            public var latencyP50PerMinuteMs: [Double]?
            /// The camera's renditions received, in order, each once per stay.
            public var renditions: [Int]?
            /// Moves to another rendition.
            public var renditionSwitches: Int?
            /// Seconds from the first frame to the first of another rendition.
            public var firstSwitchSeconds: Double?
        }

        /// A reliable channel transfer of `trav connect --channel-send`.
        public struct ChannelSend: Codable, Sendable {
            /// Milliseconds the channel took to open.
            public var openMs: Double?
            /// Bytes sent.
            public var bytes: Int
            /// The camera's digest matched.
            public var verified: Bool
            /// Seconds taken.
            public var seconds: Double
            /// Goodput.
            public var mbps: Double
            /// The sender's loss recovery during the transfer.
            public var engine: Recovery?
            /// The engine's smoothed round trip during the transfer (ms, mean of samples).
            public var srttMs: Double?
            /// The engine's congestion window during the transfer (bytes, mean of samples).
            public var congestionWindow: Double?
        }

        /// The channel engine's loss recovery during a transfer (`trav connect --json`'s `channelSend.engine`).
        public struct Recovery: Codable, Sendable {
            /// Retransmission timer expiries.
            public var retransmissionTimeouts: Int
            /// Chunks sent again by fast retransmit.
            public var fastRetransmissions: Int
            /// Chunks sent again for any reason.
            public var retransmittedChunks: Int
        }

        /// A one-line summary for test messages.
        public var description: String {
            "connected=\(connected) path=\(path ?? "-") setup=\(setupMs ?? -1)ms echo=\(echoVerified)" +
                (idleSeconds.map { " idle=\($0)s echo-after-idle=\(idleEchoVerified ?? false)" } ?? "") + " error=\(error ?? "-") attempts=" +
                attempts.map { "\($0.strategy):\($0.outcome):\($0.error ?? "")" }.joined(separator: " | ")
        }
    }

    /// Runs `trav connect --json` on `host` (with `extra` arguments) and decodes its report: with the cameras'
    /// password, or `paired` with the lab viewer's key. Each host keeps the camera keys it has checked (as an
    /// app would), so only its first connection to a camera pays for the UID's scrypt. `lasting` is how long the
    /// connection is meant to run once up (`--seconds`): the process gets that on top of `timeout`.
    public func connect(from host: String, to uid: String, strategies: String? = nil, timeout: Double = 10,
                        lasting: Double = 0, echoBytes: Int = 4000, paired: Bool = false,
                        extra: [String] = []) async throws -> ConnectResult {
        let args = connectArguments(from: host, to: uid, strategies: strategies, timeout: timeout, echoBytes: echoBytes, paired: paired)
        let r = try await lab.run(host: host, args + extra, timeout: .seconds(Int64(timeout + lasting) + 30))
        return try Self.connectResult(stdout: r.stdout, context: "\(r)")
    }

    /// Starts ``connect(from:to:strategies:timeout:lasting:echoBytes:paired:extra:)`` in the background, to watch the lab
    /// while it runs; ``finishedConnect(_:timeout:)`` waits for its report.
    public func startConnect(from host: String, to uid: String, strategies: String? = nil, timeout: Double = 10,
                             echoBytes: Int = 4000, paired: Bool = false, extra: [String] = []) throws -> LabProcess {
        let args = connectArguments(from: host, to: uid, strategies: strategies, timeout: timeout, echoBytes: echoBytes, paired: paired)
        return try lab.spawn(host: host, args + extra)
    }

    /// Waits (at most `timeout`) for a connect from ``startConnect(from:to:strategies:timeout:echoBytes:paired:extra:)``
    /// to exit and decodes its report.
    public func finishedConnect(_ process: LabProcess, timeout: Duration) async throws -> ConnectResult {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < deadline else {
                throw NATLabError(.timedOut, "connect still running after \(timeout): \(process.output)")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        return try Self.connectResult(stdout: process.output.stdout, context: "\(process.output)")
    }

    private func connectArguments(from host: String, to uid: String, strategies: String?, timeout: Double, echoBytes: Int,
                                  paired: Bool) -> [String] {
        var args = [trav, "connect", uid, "--cloud", cloudSignalling, "--cloud-ca", "\(dir)/ca.pem",
                    "--known-cameras", "\(dir)/known-\(host)",
                    "--json", "--echo-bytes", "\(echoBytes)", "--connect-timeout", "\(timeout)"]
        args += paired ? ["--paired", "--identity", viewerKey] : ["--password", password]
        if let strategies { args += ["--strategies", strategies] }
        return args
    }

    private static func connectResult(stdout: String, context: String) throws -> ConnectResult {
        guard let line = stdout.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else {
            throw NATLabError(.launchFailed, "no JSON from connect: \(context)")
        }
        return try JSONDecoder().decode(ConnectResult.self, from: Data(line.utf8))
    }

    /// Runs `trav probe --json` on `host` against the lab's cloud and returns the decoded object.
    public func probe(from host: String) async throws -> [String: JSONValue] {
        let r = try await lab.run(host: host, [trav, "probe", "--server", lab.cloudAddresses[0], "--json"], timeout: .seconds(30))
        guard let line = r.stdout.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else {
            throw NATLabError(.launchFailed, "no JSON from probe: \(r)")
        }
        return try JSONDecoder().decode([String: JSONValue].self, from: Data(line.utf8))
    }
}

/// A JSON value, for reading reports loosely.
public enum JSONValue: Codable, Sendable, Hashable {
    /// A string.
    case string(String)
    /// A number.
    case number(Double)
    /// A boolean.
    case bool(Bool)
    /// null.
    case null
    /// Anything nested (kept as text).
    case other

    /// Decodes any JSON value.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else { self = .other }
    }

    /// Encodes the value (nested values as null).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .number(let n): try c.encode(n)
        case .bool(let b): try c.encode(b)
        case .null, .other: try c.encodeNil()
        }
    }

    /// The string, if this is one.
    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
}
