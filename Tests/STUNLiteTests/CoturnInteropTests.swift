import Foundation
import Testing
@testable import STUNLite

/// Interop with coturn (Debian package `coturn`), a STUN implementation nobody here wrote, both ways.
@Suite(.serialized, .enabled(if: Coturn.skipReason == nil, Comment(rawValue: Coturn.skipReason ?? "")))
struct CoturnInteropTests {
    @Test func coturnStunclientAgainstOurServer() async throws {
        try await STUNLoopbackTests.withServer { server in
            let port = server.udpAddresses[.primary]!.port
            let out = try await Coturn.run("turnutils_stunclient", ["-p", "\(port)", "127.0.0.1"], timeout: 10)
            #expect(out.status == 0, "\(out.output)")
            // It prints the reflexive address our server gave it.
            #expect(out.output.contains("UDP reflexive addr: 127.0.0.1:"), "\(out.output)")
        }
    }

    @Test func coturnRFC5780ClientAgainstOurBehaviourDiscoveryServer() async throws {
        try await STUNLoopbackTests.withServer { server in
            let port = server.udpAddresses[.primary]!.port
            // -f forces RFC 5780 processing: CHANGE-REQUEST answered from 127.0.0.2; coturn hangs without it.
            let out = try await Coturn.run("turnutils_stunclient", ["-f", "-p", "\(port)", "127.0.0.1"], timeout: 10)
            #expect(out.status == 0, "\(out.output)")
            #expect(out.output.contains("UDP reflexive addr: 127.0.0.1:"), "\(out.output)")
            #expect(out.output.contains("127.0.0.2"), "other address not reported: \(out.output)")
        }
    }

    @Test func coturnNATDiscoveryWithPaddingAgainstOurServer() async throws {
        try await STUNLoopbackTests.withServer { server in
            let port = server.udpAddresses[.primary]!.port
            // -P adds 1500 bytes of PADDING to every request (RFC 5780 §7.6); our server echoes it.
            let out = try await Coturn.run("turnutils_natdiscovery", ["-m", "-f", "-P", "-p", "\(port)", "127.0.0.1"], timeout: 20)
            #expect(out.status == 0, "\(out.output)")
            #expect(out.output.contains("NAT with Endpoint Independent Mapping"), "\(out.output)")
            #expect(out.output.contains("NAT with Endpoint Independent Filtering"), "\(out.output)")
            #expect(!out.output.contains("timeout"), "\(out.output)")
            // Even its bare 20-byte requests get MAPPED-ADDRESS beside XOR-MAPPED-ADDRESS, which it compares for an ALG.
            let bare = try await Coturn.run("turnutils_natdiscovery", ["-m", "-p", "\(port)", "127.0.0.1"], timeout: 20)
            #expect(bare.output.contains("No ALG: Mapped == XOR-Mapped"), "\(bare.output)")
            #expect(!bare.output.contains("Not received mapped address attribute"), "\(bare.output)")
        }
    }

    @Test func ourClientAgainstCoturnOverUDPAndTCP() async throws {
        try await Coturn.withTurnserver { port in
            let server = TransportAddress(ip: IPAddress("127.0.0.1")!, port: port)
            try await STUNLoopbackTests.withClient { client in
                let r = try await client.binding(to: server, policy: .quick)
                #expect(r.mappedAddress == client.localAddress)
            }
            let t = try await STUNTCPClient.binding(to: server, timeout: .seconds(5))
            #expect(t.mappedAddress == t.local)
        }
    }
}

/// Runs coturn's programs for tests, bounded in time, and always stops what it starts.
enum Coturn {
    static let tools = ["turnserver", "turnutils_stunclient", "turnutils_natdiscovery", "turnutils_uclient"]

    static func path(_ tool: String) -> String? {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(tool)") {
            return "\(dir)/\(tool)"
        }
        return nil
    }

    /// Non-nil when coturn is missing, with a one-line reason.
    static let skipReason: String? = tools.allSatisfy { path($0) != nil } ? nil
        : "coturn is not installed (apt-get install coturn; the test command does it when root)"

    /// Runs a tool to completion or kills it after `timeout` seconds.
    static func run(_ tool: String, _ args: [String], timeout: Double) async throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path(tool)!)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning, Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// A free UDP+TCP port on 127.0.0.1, found by binding one.
    static func freePort() async throws -> UInt16 {
        let probe = try await STUNUDPClient.bind(to: TransportAddress("127.0.0.1:0")!)
        let port = probe.localAddress.port
        await probe.close()
        return port
    }

    /// Starts `turnserver` in STUN-only mode on 127.0.0.1, runs `body`, and stops it even on failure.
    static func withTurnserver(_ body: (UInt16) async throws -> Void) async throws {
        let port = try await freePort()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path("turnserver")!)
        p.arguments = ["-n", "--stun-only", "--no-cli", "--listening-ip", "127.0.0.1", "--listening-port", "\(port)",
                       "--no-tls", "--no-dtls", "--log-file", "stdout", "--simple-log", "--pidfile", "/dev/null"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        // coturn ignores SIGTERM while it starts; SIGKILL always ends it.
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        // Wait (bounded) until it answers.
        let client = try await STUNUDPClient.bind(to: TransportAddress("127.0.0.1:0")!)
        var ready = false
        for _ in 0..<50 where !ready {
            ready = (try? await client.binding(to: TransportAddress(ip: IPAddress("127.0.0.1")!, port: port),
                                               policy: STUNRetransmissionPolicy(rto: .milliseconds(100), maxRequests: 1, finalWaitMultiplier: 1))) != nil
        }
        await client.close()
        guard ready else { throw STUNClientError(.timeout, detail: "turnserver did not start") }
        try await body(port)
    }
}
