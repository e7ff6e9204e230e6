import Foundation
import NATLab
import Testing

/// `trav probe --tls-port` reports whether TLS to the cloud gets through (loopback, real `trav` processes).
@Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: TravLab.debugTrav), "trav is not built (swift build)"))
struct ProbeTLSTests {
    static func run(_ args: [String], timeout: Double = 20) async throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TravLab.debugTrav)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning, Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        return String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    @Test func tlsToTheCloudIsReportedYesAndAClosedPortNo() async throws {
        let dir = NSTemporaryDirectory() + "trav-tls-" + UUID().uuidString.prefix(8)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cloud = Process()
        cloud.executableURL = URL(fileURLWithPath: TravLab.debugTrav)
        cloud.arguments = ["cloud", "--listen", "127.0.0.1", "--data", dir, "--stun-port", "0", "--tls-port", "0"]
        let out = Pipe()
        cloud.standardOutput = out
        cloud.standardError = FileHandle.nullDevice
        try cloud.run()
        defer { kill(cloud.processIdentifier, SIGKILL); cloud.waitUntilExit() }
        // The cloud prints its addresses once listening; read until both are known (bounded).
        var text = ""
        for _ in 0..<100 where !(text.contains("signalling tls") && text.contains("stun udp")) {
            text += String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
        }
        let stun = try #require(text.split(separator: "\n").first { $0.contains("stun udp") }?.split(separator: " ").first { $0.hasPrefix("127.0.0.1:") })
        let tls = try #require(text.split(separator: "\n").first { $0.contains("signalling tls") }?.split(separator: " ").last)
        let tlsPort = try #require(tls.split(separator: ":").last)
        let yes = try await Self.run(["probe", "--server", String(stun), "--no-tcp", "--tls-port", String(tlsPort), "--json"])
        #expect(yes.contains("\"tls\":true"), "\(yes)")
        let no = try await Self.run(["probe", "--server", String(stun), "--no-tcp", "--tls-port", "1", "--json"])
        #expect(no.contains("\"tls\":false"), "\(no)")
    }
}
