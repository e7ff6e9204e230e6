import Foundation
import STUNLite
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A flood leaves no memory behind: `trav stun-server` and `trav relay` run as child processes on
/// loopback, `stun-flood` and `turn-flood` load them for a few seconds, and the server's resident set
/// (VmRSS) after the flood is back near where it was before, within a generous bound (allocators keep
/// some freed memory; a leak per request or per allocation would grow with the hundreds of thousands
/// of requests sent).
@Suite(.serialized, .timeLimit(.minutes(1)))
struct FloodMemoryTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let bin = root.appendingPathComponent(".build/debug")
    static let trav = bin.appendingPathComponent("trav").path
    static let stunFlood = bin.appendingPathComponent("stun-flood").path
    static let turnFlood = bin.appendingPathComponent("turn-flood").path
    static let binariesBuilt = [trav, stunFlood, turnFlood].allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }

    /// RSS may end at most this far above the baseline: 64 MiB or half the baseline, whichever is larger.
    static func allowedGrowth(baseline: Int) -> Int { max(64 << 20, baseline / 2) }

    @Test(.enabled(if: binariesBuilt, "needs .build/debug/trav, stun-flood and turn-flood (swift build)"))
    func stunServerMemoryReturnsNearBaselineAfterAFlood() async throws {
        let port = try Self.freePort()
        let server = try Self.launch(Self.trav, ["stun-server", "--listen", "127.0.0.1", "--port", "\(port)", "--no-tcp"])
        defer { Self.stop(server) }
        try await Self.waitUntilAnswering(port: port)
        let figures = try await Self.measure(server) {
            try Self.run(Self.stunFlood, ["--target", "127.0.0.1:\(port)", "--window", "256", "--warmup", "0.5", "--duration", "4"])
        }
        print("stun-server RSS: \(figures)")
        #expect(figures.after <= figures.baseline + Self.allowedGrowth(baseline: figures.baseline), "\(figures)")
    }

    @Test(.enabled(if: binariesBuilt, "needs .build/debug/trav, stun-flood and turn-flood (swift build)"))
    func relayMemoryReturnsNearBaselineAfterAFlood() async throws {
        let port = try Self.freePort()
        let server = try Self.launch(Self.trav, [
            "relay", "--listen", "127.0.0.1", "--port", "\(port)", "--tls-port", "0", "--user", "bench:bench",
            "--relay-allow-peers", "127.0.0.0/8", "--user-quota", "64", "--user-bandwidth", "0", "--challenge-rate", "100000",
        ])
        defer { Self.stop(server) }
        try await Self.waitUntilAnswering(port: port)
        let figures = try await Self.measure(server) {
            try Self.run(Self.turnFlood, ["relay", "--target", "127.0.0.1:\(port)", "--lanes", "4", "--warmup", "0.5", "--duration", "3"])
            try Self.run(Self.turnFlood, ["allocate", "--target", "127.0.0.1:\(port)", "--concurrency", "16", "--duration", "2"])
        }
        print("relay RSS: \(figures)")
        #expect(figures.after <= figures.baseline + Self.allowedGrowth(baseline: figures.baseline), "\(figures)")
    }

    /// Resident set sizes in bytes: before, the highest seen during, and after the flood.
    struct Figures: CustomStringConvertible {
        var baseline = 0
        var peak = 0
        var after = 0
        var description: String {
            "baseline \(baseline >> 20) MiB, peak during flood \(peak >> 20) MiB, after \(after >> 20) MiB"
        }
    }

    /// Samples the server's RSS before, every 200 ms while `flood` runs (on another thread), and 2 s after.
    static func measure(_ server: Process, flood: @escaping @Sendable () throws -> Void) async throws -> Figures {
        var figures = Figures()
        figures.baseline = try rss(server)
        let done = Flag()
        let task = Task.detached {
            defer { done.set() }
            try flood()
        }
        var samples = 0
        while !done.isSet, samples < 300 {
            samples += 1
            figures.peak = max(figures.peak, try rss(server))
            try await Task.sleep(for: .milliseconds(200))
        }
        try await task.value
        try await Task.sleep(for: .seconds(2))
        figures.after = try rss(server)
        figures.peak = max(figures.peak, figures.after)
        return figures
    }

    /// Set once, read from another task.
    final class Flag: Sendable {
        private let value = Mutex(false)
        var isSet: Bool { value.withLock { $0 } }
        func set() { value.withLock { $0 = true } }
    }

    /// VmRSS of a running process, in bytes.
    static func rss(_ process: Process) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else {
            throw FloodMemoryError("no VmRSS for process \(process.processIdentifier)")
        }
        return kib << 10
    }

    /// A UDP port that was free a moment ago (the server binds it for both UDP and TCP).
    static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw FloodMemoryError("socket failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw FloodMemoryError("bind failed") }
        return UInt16(bigEndian: address.sin_port)
    }

    static func launch(_ path: String, _ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Runs a load generator to completion (it bounds its own time; killed after 30 s regardless) and prints its report.
    static func run(_ path: String, _ arguments: [String]) throws {
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("flood-memory-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).txt")
        _ = FileManager.default.createFile(atPath: report.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: report) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = try FileHandle(forWritingTo: report)
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning, Date() < deadline { usleep(50_000) }
        if process.isRunning { stop(process) }
        process.waitUntilExit()
        print((try? String(contentsOf: report, encoding: .utf8)) ?? "")
        guard process.terminationStatus == 0 else {
            throw FloodMemoryError("\(path) \(arguments.joined(separator: " ")) exited with \(process.terminationStatus)")
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after 3 s.
    static func stop(_ process: Process) {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(3)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Polls with Binding requests until the server answers (at most about 10 s).
    static func waitUntilAnswering(port: UInt16) async throws {
        let client = try await STUNUDPClient.bind(to: TransportAddress(ip: .v4(0x7F00_0001), port: 0))
        defer { Task { await client.close() } }
        let server = TransportAddress(ip: .v4(0x7F00_0001), port: port)
        for _ in 0..<20 {
            if (try? await client.binding(to: server, policy: .quick)) != nil { return }
            try await Task.sleep(for: .milliseconds(300))
        }
        throw FloodMemoryError("the server on port \(port) never answered")
    }
}

struct FloodMemoryError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
