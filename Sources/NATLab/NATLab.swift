import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Namespace for the NAT lab: real kernel NAT in Linux network namespaces (see `Scripts/natlab.sh`).
///
/// ```
/// try await NATLab.withLab(sites: [LabSite("cam", .fullCone), LabSite("viewer", .symmetric)]) { lab in
///     let server = try lab.spawn(host: "cloud", ["turnserver", ...])
///     let result = try await lab.run(host: "cam-h1", ["turnutils_stunclient", "203.0.113.10"])
/// }
///
/// // A site behind a mobile line (60 ms, 4 Mbit/s, 1 % loss), cut for two seconds mid-test:
/// try await NATLab.withLab(sites: [LabSite("cam", .fullCone, link: .profile(.mobile))]) { lab in
///     try await lab.outage(site: "cam", for: .seconds(2))
/// }
/// ```
public enum NATLab {
    /// The topology script: `$NATLAB_SCRIPT`, else `Scripts/natlab.sh` three levels above this file.
    public static var scriptPath: String {
        if let path = ProcessInfo.processInfo.environment["NATLAB_SCRIPT"], !path.isEmpty { return path }
        return URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Scripts/natlab.sh").path
    }

    /// Why the lab cannot run here (not root, `ip`/`nft` or the script missing); nil when it can.
    public static var skipReason: String? { skipReason(requiring: []) }

    /// Like `skipReason`, also requiring the named executables (e.g. `turnserver`) on the PATH.
    public static func skipReason(requiring tools: [String]) -> String? {
        #if os(Linux)
        guard geteuid() == 0 else { return "NAT lab needs root (network namespaces, nftables)" }
        guard FileManager.default.isReadableFile(atPath: scriptPath) else {
            return "NAT lab script not found at \(scriptPath)"
        }
        let missing = (["bash", "ip", "nft"] + tools).filter { findExecutable($0) == nil }
        guard missing.isEmpty else {
            return "NAT lab needs \(missing.joined(separator: ", ")) (apt-get install iproute2 nftables coturn)"
        }
        return nil
        #else
        return "NAT lab needs Linux network namespaces"
        #endif
    }

    /// The full path of an executable on the PATH (plus /usr/sbin and /sbin), or nil.
    public static func findExecutable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        return dirs.lazy.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Builds `topology` under a fresh unique prefix, owned by this process.
    public static func build(_ topology: LabTopology) async throws -> Lab {
        if let reason = skipReason { throw NATLabError(.unavailable, reason) }
        _ = try? await cleanupStale()          // leftovers of crashed runs, never live labs
        let prefix = "nl" + String((0..<6).map { _ in "abcdefghijklmnopqrstuvwxyz0123456789".randomElement()! })
        let result = try await script(["up", prefix] + topology.sites.map(\.spec),
                                      environment: ["NATLAB_UDP_TIMEOUT": String(topology.udpTimeout)],
                                      timeout: .seconds(60))
        guard result.succeeded else {
            _ = try? await script(["down", prefix], timeout: .seconds(30))
            throw NATLabError(.buildFailed, "natlab.sh up \(prefix): \(result)")
        }
        let hosts = result.stdout.split(separator: "\n").compactMap(LabHost.init(line:))
        return Lab(prefix: prefix, topology: topology, hosts: hosts)
    }

    /// Builds a lab of `sites` (plus the cloud and the internet).
    public static func build(sites: [LabSite]) async throws -> Lab {
        try await build(LabTopology(sites))
    }

    /// Builds a lab of `sites`, runs `body` with it and always tears it down, even when `body` throws.
    public static func withLab<T>(
        sites: [LabSite],
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Lab) async throws -> T
    ) async throws -> T {
        try await withLab(LabTopology(sites), body)
    }

    /// Builds `topology`, runs `body` with it and always tears it down, even when `body` throws.
    public static func withLab<T>(
        _ topology: LabTopology,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Lab) async throws -> T
    ) async throws -> T {
        let lab = try await build(topology)
        do {
            let value = try await body(lab)
            lab.tearDown()
            return value
        } catch {
            lab.tearDown()
            throw error
        }
    }

    /// Removes labs whose owner process is gone (`natlab.sh cleanup-stale`); returns its report.
    @discardableResult
    public static func cleanupStale() async throws -> String {
        let result = try await script(["cleanup-stale"], timeout: .seconds(60))
        guard result.succeeded else { throw NATLabError(.timedOut, "natlab.sh cleanup-stale: \(result)") }
        return result.stdout
    }

    /// Runs `natlab.sh ARGS…` with this process as the owner of anything it builds.
    public static func script(_ arguments: [String], environment: [String: String] = [:],
                              timeout: Duration = .seconds(30)) async throws -> LabCommandResult {
        try await ChildProcess.run(["/bin/bash", scriptPath] + arguments,
                                   environment: environment.merging(["NATLAB_OWNER_PID": String(getpid())]) { old, _ in old },
                                   timeout: timeout)
    }

    /// Blocking `natlab.sh ARGS…`, for teardown.
    static func scriptBlocking(_ arguments: [String], timeout: Duration) throws -> LabCommandResult {
        try ChildProcess.runBlocking(["/bin/bash", scriptPath] + arguments,
                                     environment: ["NATLAB_OWNER_PID": String(getpid())], timeout: timeout)
    }
}

/// A built lab: namespaces named `PREFIX-HOST`, processes started in them, and their teardown.
public final class Lab: @unchecked Sendable {
    // Immutable after init except `processes` and `tornDown`, which `lock` guards.
    /// The unique namespace prefix.
    public let prefix: String
    /// What was asked for.
    public let topology: LabTopology
    /// Every namespace, as the script reported it.
    public let hosts: [LabHost]
    private let lock = NSLock()
    private var processes: [LabProcess] = []
    private var tornDown = false

    init(prefix: String, topology: LabTopology, hosts: [LabHost]) {
        self.prefix = prefix
        self.topology = topology
        self.hosts = hosts
    }

    deinit { tearDown() }

    /// The cloud's two addresses (primary, alternate) for RFC 5780 servers.
    public var cloudAddresses: [String] { (try? addresses(of: "cloud")) ?? [] }

    /// The host called `name`, or nil.
    public func host(named name: String) -> LabHost? { hosts.first { $0.name == name } }

    /// All addresses of host `name`, primary first.
    public func addresses(of name: String) throws -> [String] {
        guard let host = host(named: name), !host.addresses.isEmpty else {
            throw NATLabError(.unknownHost, "no host '\(name)' in lab \(prefix) (hosts: \(hosts.map(\.name)))")
        }
        return host.addresses
    }

    /// The primary address of host `name` (a router's WAN address).
    public func address(of name: String) throws -> String { try addresses(of: name)[0] }

    /// The address the internet sees for end host `name`: its own when open, else its outermost NAT's.
    public func publicAddress(of name: String) throws -> String {
        let host = try addresses(of: name)
        guard let entry = self.host(named: name), let site = entry.site else { return host[0] }
        switch entry.kind {
        case .open?: return host[0]
        case .doubleNAT?: return try address(of: "\(site)-carrier")
        default: return try address(of: "\(site)-router")
        }
    }

    /// Runs `args` in `host`'s namespace, killed after `timeout`.
    public func run(host: String, _ args: [String], timeout: Duration = .seconds(20)) async throws -> LabCommandResult {
        try checkUsable(host)
        return try await NATLab.script(["exec", prefix, host] + args, timeout: timeout)
    }

    /// Moves `host` to `site`'s LAN, as a phone leaves one network for another (`natlab.sh roam`): a new
    /// interface there becomes its default route and its old one goes down; its sockets stay open.
    public func roam(host: String, to site: String) async throws {
        try checkUsable(host)
        let result = try await NATLab.script(["roam", prefix, host, site], timeout: .seconds(20))
        guard result.succeeded else { throw NATLabError(.unknownHost, "natlab.sh roam \(prefix) \(host) \(site): \(result)") }
    }

    /// Starts `args` in the background in `host`'s namespace; it is killed at teardown.
    public func spawn(host: String, _ args: [String]) throws -> LabProcess {
        // `natlab.sh exec` execs `ip netns exec`, which execs the command: the pid is the command's.
        try spawnScript(host: host, ["exec", prefix, host] + args, showing: args)
    }

    /// Starts `natlab.sh ARGS…` (a subcommand that ends by exec'ing its daemon in `host`) in the
    /// background; it is killed at teardown.
    func spawnScript(host: String, _ scriptArguments: [String], showing args: [String]) throws -> LabProcess {
        try checkUsable(host)
        let child = try ChildProcess(["/bin/bash", NATLab.scriptPath] + scriptArguments,
                                     environment: ["NATLAB_OWNER_PID": String(getpid())])
        let process = LabProcess(child: child, host: host, arguments: args)
        lock.lock()
        let late = tornDown
        if !late { processes.append(process) }
        lock.unlock()
        if late {
            process.stop()
            throw NATLabError(.tornDown, "lab \(prefix) was torn down")
        }
        return process
    }

    /// Waits until something in `host` listens on `port` (UDP or TCP), polling `ss` for at most `timeout`.
    public func waitForListener(host: String, port: Int, udp: Bool = true,
                                timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let result = try await run(host: host, ["ss", "-H", udp ? "-lnu" : "-lnt", "sport = :\(port)"],
                                       timeout: .seconds(5))
            if result.succeeded, !result.stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw NATLabError(.timedOut, "nothing listens on \(udp ? "udp" : "tcp") port \(port) in \(host)")
    }

    /// The router's live UDP conntrack entries (`natlab.sh conntrack`), one `conntrack -L` line each: its NAT mappings.
    public func udpConntrack(on router: String) async throws -> [String] {
        try checkUsable(router)
        let result = try await NATLab.script(["conntrack", prefix, router], timeout: .seconds(10))
        guard result.succeeded else { throw NATLabError(.launchFailed, "natlab.sh conntrack \(prefix) \(router): \(result)") }
        return result.stdout.split(separator: "\n").filter { $0.hasPrefix("udp") }.map(String.init)
    }

    /// Kills every spawned process and removes every namespace; idempotent, never throws.
    public func tearDown() {
        lock.lock()
        let first = !tornDown
        tornDown = true
        let toStop = processes
        processes = []
        lock.unlock()
        guard first else { return }
        for process in toStop { process.stop() }
        // `down` also kills anything still inside the namespaces (children of spawned processes).
        _ = try? NATLab.scriptBlocking(["down", prefix], timeout: .seconds(30))
    }

    func checkUsable(_ host: String) throws {
        lock.lock()
        let gone = tornDown
        lock.unlock()
        if gone { throw NATLabError(.tornDown, "lab \(prefix) was torn down") }
        guard self.host(named: host) != nil else {
            throw NATLabError(.unknownHost, "no host '\(host)' in lab \(prefix) (hosts: \(hosts.map(\.name)))")
        }
    }
}

/// A background process in a lab host; stopped at the latest when its lab is torn down.
public final class LabProcess: Sendable {
    private let child: ChildProcess
    /// The lab host it runs in.
    public let host: String
    /// The command line.
    public let arguments: [String]

    init(child: ChildProcess, host: String, arguments: [String]) {
        self.child = child
        self.host = host
        self.arguments = arguments
    }

    /// The process id (of the command itself: the script and `ip netns exec` exec it).
    public var pid: Int32 { child.pid }

    /// Whether it is still running.
    public var isRunning: Bool { child.isRunning }

    /// What it has written so far.
    public var output: (stdout: String, stderr: String) { child.output() }

    /// SIGTERM, then SIGKILL after a second; idempotent. Output stays readable until then.
    public func stop() {
        child.kill()
        child.removeFiles()
    }
}
