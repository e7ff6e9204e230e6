import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The C `kill(2)`, under a name a method called `kill` cannot shadow.
func posixKill(_ pid: pid_t, _ signal: Int32) -> Int32 { kill(pid, signal) }

/// The outcome of a command run in the lab.
public struct LabCommandResult: Sendable, CustomStringConvertible {
    /// Exit status; 128 + signal number when killed by a signal.
    public var status: Int32
    /// Everything the command wrote to standard output.
    public var stdout: String
    /// Everything the command wrote to standard error.
    public var stderr: String
    /// Whether the time limit ran out and the command was killed.
    public var timedOut: Bool

    /// Exited with status 0 within the time limit.
    public var succeeded: Bool { status == 0 && !timedOut }

    /// One line for test failure messages.
    public var description: String {
        "status \(status)\(timedOut ? " (timed out)" : ""); stdout: \(stdout.suffix(600)); stderr: \(stderr.suffix(600))"
    }
}

/// A lab error with a stable code and a human-readable message.
public struct NATLabError: Error, Sendable, CustomStringConvertible {
    /// A stable error code; new codes do not break callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The code's name.
        public let rawValue: String
        /// The lab cannot run here (not root, tools missing).
        public static let unavailable = Code(rawValue: "unavailable")
        /// `natlab.sh up` failed.
        public static let buildFailed = Code(rawValue: "build-failed")
        /// No host of that name in the lab.
        public static let unknownHost = Code(rawValue: "unknown-host")
        /// A process could not be started.
        public static let launchFailed = Code(rawValue: "launch-failed")
        /// The lab was already torn down.
        public static let tornDown = Code(rawValue: "torn-down")
        /// Something did not happen within its time limit.
        public static let timedOut = Code(rawValue: "timed-out")
        /// The code's name.
        public var description: String { rawValue }
    }

    /// What went wrong, as a code.
    public var code: Code
    /// What went wrong, in words.
    public var message: String

    /// An error with `code` and `message`.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `code: message`.
    public var description: String { "\(code): \(message)" }
}

/// A child process whose output goes to temporary files (no pipes, so no deadlock on full buffers).
/// All waits are bounded; `kill` escalates from SIGTERM to SIGKILL.
public final class ChildProcess: @unchecked Sendable {
    // Foundation's Process is thread-safe for the calls used here (isRunning, terminate,
    // processIdentifier); `lock` guards our own mutable state.
    private let process = Process()
    private let lock = NSLock()
    private var filesRemoved = false
    private let stdoutURL: URL
    private let stderrURL: URL

    /// Starts `arguments` (the first is the executable path) with extra environment variables.
    public init(_ arguments: [String], environment: [String: String] = [:]) throws {
        precondition(!arguments.isEmpty, "ChildProcess needs an executable")
        let base = FileManager.default.temporaryDirectory
            .appendingPathComponent("natlab-\(UUID().uuidString.prefix(8))")
        stdoutURL = base.appendingPathExtension("out")
        stderrURL = base.appendingPathExtension("err")
        guard FileManager.default.createFile(atPath: stdoutURL.path, contents: nil),
              FileManager.default.createFile(atPath: stderrURL.path, contents: nil),
              let out = FileHandle(forWritingAtPath: stdoutURL.path),
              let err = FileHandle(forWritingAtPath: stderrURL.path)
        else { throw NATLabError(.launchFailed, "cannot create output files in \(base.path)") }
        defer { try? out.close(); try? err.close() }
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = (env["PATH"].map { $0 + ":" } ?? "") + "/usr/sbin:/sbin:/usr/bin:/bin"
        env.merge(environment) { _, new in new }
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.environment = env
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        do {
            try process.run()
        } catch {
            removeFiles()
            throw NATLabError(.launchFailed, "\(arguments.joined(separator: " ")): \(error)")
        }
    }

    /// The child's pid.
    public var pid: Int32 { process.processIdentifier }

    /// Whether the child has not exited yet.
    public var isRunning: Bool { process.isRunning }

    /// Waits up to `timeout` for exit, polling (bounded); true when the child exited.
    func waitBlocking(_ timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now >= deadline { return false }
            usleep(10_000)
        }
        return true
    }

    /// Waits up to `timeout` for exit without blocking a thread; true when the child exited.
    public func wait(_ timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once the child is gone (at most grace + 2 s).
    public func kill(grace: Duration = .seconds(1)) {
        guard process.isRunning else { return }
        process.terminate()
        if waitBlocking(grace) { return }
        _ = posixKill(process.processIdentifier, SIGKILL)
        _ = waitBlocking(.seconds(2))
    }

    /// Exit status (128 + signal when signalled); nil while running.
    public var status: Int32? {
        guard !process.isRunning else { return nil }
        return process.terminationReason == .uncaughtSignal
            ? 128 + process.terminationStatus : process.terminationStatus
    }

    /// Output written so far.
    public func output() -> (stdout: String, stderr: String) {
        func read(_ url: URL) -> String {
            (try? Data(contentsOf: url)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        }
        return (read(stdoutURL), read(stderrURL))
    }

    /// The result once exited (or killed).
    func result(timedOut: Bool) -> LabCommandResult {
        let (out, err) = output()
        return LabCommandResult(status: status ?? -1, stdout: out, stderr: err, timedOut: timedOut)
    }

    /// Deletes the output files (idempotent).
    public func removeFiles() {
        lock.lock()
        defer { lock.unlock() }
        guard !filesRemoved else { return }
        filesRemoved = true
        try? FileManager.default.removeItem(at: stdoutURL)
        try? FileManager.default.removeItem(at: stderrURL)
    }

    /// Runs to completion within `timeout` (killed after it), returning the output.
    public static func run(_ arguments: [String], environment: [String: String] = [:],
                           timeout: Duration) async throws -> LabCommandResult {
        let child = try ChildProcess(arguments, environment: environment)
        defer { child.removeFiles() }
        let exited = await child.wait(timeout)
        if !exited { child.kill() }
        return child.result(timedOut: !exited)
    }

    /// The body of `GET url` by curl, bounded (5 s for the transfer, 10 s in all): how tests scrape a metrics endpoint.
    ///
    /// - Throws: ``NATLabError`` `.launchFailed` when curl fails or is missing.
    static func scrape(_ url: String) async throws -> String {
        let result = try await run(["/usr/bin/curl", "-sS", "--max-time", "5", url], timeout: .seconds(10))
        guard result.succeeded else { throw NATLabError(.launchFailed, "curl \(url): \(result)") }
        return result.stdout
    }

    /// Blocking variant of `run`, for teardown paths that cannot be async.
    static func runBlocking(_ arguments: [String], environment: [String: String] = [:],
                            timeout: Duration) throws -> LabCommandResult {
        let child = try ChildProcess(arguments, environment: environment)
        defer { child.removeFiles() }
        let exited = child.waitBlocking(timeout)
        if !exited { child.kill() }
        return child.result(timedOut: !exited)
    }
}
