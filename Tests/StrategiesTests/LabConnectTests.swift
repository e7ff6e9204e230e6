import Foundation
import NATLab
import Testing

/// Camera and viewer as real processes in the NAT lab, the cloud in the lab's "internet".
@Suite(.serialized, .enabled(if: LabRun.skipReason == nil, Comment(rawValue: LabRun.skipReason ?? "")))
struct LabConnectTests {
    @Test func sameLANConnectsDirectlyAlsoWithTheCloudStopped() async throws {
        try await LabRun.with(sites: [LabSite("lan", .portRestrictedCone, hosts: 2)]) { run in
            let cloud = try run.startCloud()
            let uid = try await run.startCamera(on: "lan-h1")
            let first = try await run.connect(from: "lan-h2", to: uid)
            #expect(first.connected && first.echoVerified, "\(first)")
            #expect(first.path == "direct-lan", "\(first)")
            cloud.stop()
            try await Task.sleep(for: .milliseconds(300))
            let offline = try await run.connect(from: "lan-h2", to: uid)
            #expect(offline.connected && offline.echoVerified, "\(offline)")
            #expect(offline.path == "direct-lan", "\(offline)")
        }
    }

    @Test func fullConeCameraAndPortRestrictedViewerConnectByStunDiscovery() async throws {
        try await LabRun.with(sites: [LabSite("cam", .fullCone), LabSite("view", .portRestrictedCone)]) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: "cam-h1", strategies: "direct-lan,stun-discovery")
            let r = try await run.connect(from: "view-h1", to: uid, strategies: "direct-lan,stun-discovery")
            #expect(r.connected && r.echoVerified, "\(r)")
            #expect(r.path == "stun-discovery", "\(r)")
            #expect(r.attempts.first { $0.strategy == "direct-lan" }?.outcome != "connected")
        }
    }

    @Test func portRestrictedCameraIsNotReachedByStunDiscoveryAlone() async throws {
        // stun-discovery does not punch: a camera whose NAT filters is out of its reach, and the
        // report says why instead of hanging.
        try await LabRun.with(sites: [LabSite("cam", .portRestrictedCone), LabSite("view", .portRestrictedCone)]) { run in
            _ = try run.startCloud()
            let uid = try await run.startCamera(on: "cam-h1", strategies: "stun-discovery")
            let r = try await run.connect(from: "view-h1", to: uid, strategies: "stun-discovery", timeout: 4)
            #expect(!r.connected, "\(r)")
            #expect(r.attempts.first?.outcome == "failed", "\(r)")
        }
    }
}

/// One lab with a cloud, cameras and viewers as `trav` processes.
struct LabRun {
    static var repoRoot: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent() }
    static var trav: String { repoRoot.appendingPathComponent(".build/debug/trav").path }
    static var skipReason: String? {
        if let r = NATLab.skipReason { return r }
        return FileManager.default.isExecutableFile(atPath: trav) ? nil : "trav is not built (swift build)"
    }

    let lab: Lab
    let dir: String
    let password = "lab-password"
    /// The cloud's signalling TLS port (`trav cloud --tls-port`).
    var cloudPort: UInt16 = 5349
    /// `IP:PORT` of the cloud's signalling, for `--cloud`.
    var cloudTarget: String { "\(lab.cloudAddresses[0]):\(cloudPort)" }

    static func with(sites: [LabSite], _ body: (LabRun) async throws -> Void) async throws {
        let dir = NSTemporaryDirectory() + "trav-lab-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await NATLab.withLab(sites: sites) { lab in
            try await body(LabRun(lab: lab, dir: dir))
        }
    }

    /// The lab's "internet" (TEST-NET-3), where the cloud's relay allocates and must be allowed to send.
    static let internetPrefix = "203.0.113.0/24"

    /// Starts `trav cloud` on the lab's two cloud addresses (its relay allowed to reach the lab's
    /// internet) and waits until its TLS port listens.
    func startCloud(_ extra: [String] = []) throws -> LabProcess {
        let a = lab.cloudAddresses
        let p = try lab.spawn(host: "cloud", [Self.trav, "cloud", "--listen", a[0], "--alternate-ip", a[1], "--data", dir,
                                              "--relay-allow-peers", Self.internetPrefix] + extra)
        return p
    }

    /// Creates an identity, starts `trav camera` on `host`, and returns its UID once it is registered.
    func startCamera(on host: String, strategies: String? = nil) async throws -> String {
        try await lab.waitForListener(host: "cloud", port: Int(cloudPort), udp: false, timeout: .seconds(20))
        let key = "\(dir)/\(host).key"
        let made = try await lab.run(host: host, [Self.trav, "identity", "new", "--out", key])
        guard made.succeeded, let uid = made.stdout.split(whereSeparator: \.isWhitespace).first(where: { $0.hasPrefix("TRAV-") }) else {
            throw LabRunError("identity new failed: \(made)")
        }
        var args = [Self.trav, "camera", "--identity", key, "--cloud", cloudTarget, "--cloud-ca", "\(dir)/ca.pem",
                    "--password", password]
        if let strategies { args += ["--strategies", strategies] }
        let camera = try lab.spawn(host: host, args)
        for _ in 0..<100 {
            if camera.output.stdout.contains("serving") { return String(uid) }
            guard camera.isRunning else { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw LabRunError("camera did not register: \(camera.output)")
    }

    struct Result: Decodable, CustomStringConvertible {
        struct Attempt: Decodable { var strategy: String; var outcome: String; var ms: Double; var error: String? }
        var connected: Bool
        var path: String?
        var setupMs: Double?
        var echoVerified: Bool
        var error: String?
        var attempts: [Attempt]
        var description: String {
            "connected=\(connected) path=\(path ?? "-") setup=\(setupMs ?? -1)ms error=\(error ?? "-") attempts=" +
                attempts.map { "\($0.strategy):\($0.outcome):\($0.error ?? "")" }.joined(separator: " | ")
        }
    }

    /// Runs `trav connect --json` on `host` and decodes its report.
    func connect(from host: String, to uid: String, strategies: String? = nil, timeout: Double = 10) async throws -> Result {
        var args = [Self.trav, "connect", uid, "--cloud", cloudTarget, "--cloud-ca", "\(dir)/ca.pem",
                    "--password", password, "--json", "--echo-bytes", "4000", "--connect-timeout", "\(timeout)"]
        if let strategies { args += ["--strategies", strategies] }
        let r = try await lab.run(host: host, args, timeout: .seconds(Int64(timeout) + 30))
        guard let line = r.stdout.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else {
            throw LabRunError("no JSON from connect: \(r)")
        }
        return try JSONDecoder().decode(Result.self, from: Data(line.utf8))
    }
}

struct LabRunError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
