import Foundation
import Testing
import STUNLite
@testable import TURNLite

/// A relay reached over IPv6 by clients that ask for no address family, as browsers do, allocates
/// IPv4 (RFC 8656 §7.1), when it has an IPv4 relay IP: in the library and through `trav relay`.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct TURNDualStackTests {
    static let v4 = IPAddress("127.0.0.1")!
    static let v6 = IPAddress("::1")!

    /// The built `trav` executable: `.build/debug/trav` at the repository root (`swift build` makes it).
    static let trav = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".build/debug/trav").path
    static let travMissing = !FileManager.default.isExecutableFile(atPath: trav)

    static func settings() -> TURNServerConfiguration {
        TURNServerConfiguration(credentials: TURNCredentials(realm: "trav.test", users: ["u": "p"]),
                                peerPolicy: TURNPeerPolicy(allowed: [IPPrefix("127.0.0.0/8")!, IPPrefix("::1/128")!]))
    }

    /// Allocates at `server` with no REQUESTED-ADDRESS-FAMILY (the client's default, IPv4, sends none).
    static func allocate(at server: TransportAddress, family: TURNAddressFamily = .ipv4) async throws -> (TURNClient, TURNAllocation) {
        try await TURNClient.allocate(.init(server: server, username: "u", password: "p", family: family, retransmission: .quick))
    }

    static func withServer(_ configuration: TURNServer.Configuration, _ body: (TURNServer) async throws -> Void) async throws {
        try await TURNInteropTests.withServer(configuration, body)
    }

    @Test func allocateOverIPv6WithoutAFamilyGetsAnIPv4RelayedAddress() async throws {
        let configuration = TURNServer.Configuration(listenIP: Self.v6, port: 0,
                                                     relayIPs: [.ipv4: Self.v4, .ipv6: Self.v6], server: Self.settings())
        try await Self.withServer(configuration) { server in
            #expect(server.udpAddress.ip == Self.v6)
            let (client, allocation) = try await Self.allocate(at: server.udpAddress)
            #expect(allocation.relayed.ip == Self.v4, "relayed \(allocation.relayed)")
            #expect(allocation.mapped?.ip == Self.v6)
            await client.close()
            // Asking for IPv6 explicitly still gets IPv6.
            let (client6, allocation6) = try await Self.allocate(at: server.udpAddress, family: .ipv6)
            #expect(allocation6.relayed.ip == Self.v6)
            await client6.close()
        }
    }

    @Test func relayListeningOnIPv6AloneAnswers440ToClientsAskingForNoFamily() async throws {
        // What browsers met before --relay-ip: no IPv4 relay IP, so the default family is refused.
        try await Self.withServer(.init(listenIP: Self.v6, port: 0, server: Self.settings())) { server in
            do {
                let (client, allocation) = try await Self.allocate(at: server.udpAddress)
                await client.close()
                Issue.record("allocated \(allocation.relayed)")
            } catch let e as TURNError {
                #expect(e.errorCode?.code == 440, "\(e)")
            }
        }
    }

    @Test func dualStackRelayAnswersEachFamilyOnItsOwnListener() async throws {
        let configuration = TURNServer.Configuration(listenIP: Self.v4, additionalListenIPs: [Self.v6], port: 0, server: Self.settings())
        #expect(configuration.relayIPs == [.ipv4: Self.v4, .ipv6: Self.v6], "each family relays on its own listen IP by default")
        try await Self.withServer(configuration) { server in
            #expect(server.udpAddresses.map(\.ip) == [Self.v4, Self.v6])
            #expect(server.tcpAddresses.map(\.ip) == [Self.v4, Self.v6])
            #expect(Set(server.udpAddresses.map(\.port)).count == 1, "one port on both addresses")
            for listener in server.udpAddresses {
                let (client, allocation) = try await Self.allocate(at: listener)
                #expect(allocation.relayed.ip == Self.v4, "over \(listener): \(allocation.relayed)")
                #expect(allocation.mapped?.ip == listener.ip)
                await client.close()
            }
            #expect(await server.allocationCount == 0)
        }
    }

    @Test func wildcardListenersOfBothFamiliesShareOnePort() async throws {
        // `::` alone would take IPv4 as well; beside `0.0.0.0` it takes IPv6 only, so both bind.
        let configuration = TURNServer.Configuration(listenIP: .v4(0), additionalListenIPs: [.v6(high: 0, low: 0)], port: 0,
                                                     relayIPs: [.ipv4: Self.v4, .ipv6: Self.v6], server: Self.settings())
        try await Self.withServer(configuration) { server in
            let port = server.udpAddress.port
            for ip in [Self.v4, Self.v6] {
                let (client, allocation) = try await Self.allocate(at: TransportAddress(ip: ip, port: port))
                #expect(allocation.relayed.ip == Self.v4)
                #expect(allocation.mapped?.ip == ip)
                await client.close()
            }
        }
    }

    @Test func relayIPsTakeOverridesPerFamilyAndListenAddressesForTheRest() {
        let v4b = IPAddress("192.0.2.1")!
        #expect(TURNServer.Configuration.relayIPs(listening: [Self.v6]) == [.ipv6: Self.v6])
        #expect(TURNServer.Configuration.relayIPs(listening: [Self.v6], overrides: [Self.v4]) == [.ipv4: Self.v4, .ipv6: Self.v6])
        #expect(TURNServer.Configuration.relayIPs(listening: [Self.v4, Self.v6], overrides: [v4b]) == [.ipv4: v4b, .ipv6: Self.v6])
    }

    // MARK: trav relay

    /// Runs `trav relay ARGS` until its status line, hands that line to `body`, and always kills it.
    static func withTravRelay(_ arguments: [String], _ body: (String) async throws -> Void) async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: trav)
        p.arguments = ["relay"] + arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        // The read below blocks; killing the process after 10 s ends it with EOF at the latest.
        let watchdog = Task {
            try? await Task.sleep(for: .seconds(10))
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        defer { watchdog.cancel() }
        var data = Data()
        let handle = out.fileHandleForReading
        while !data.contains(UInt8(ascii: "\n")) {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            data.append(chunk)
        }
        let line = try #require(String(decoding: data, as: UTF8.self).split(separator: "\n").first.map(String.init),
                                "trav relay printed no status line")
        try await body(line)
    }

    @Test(.disabled(if: travMissing, "trav is not built (swift build)"))
    func travRelayListeningOnIPv6WithAnIPv4RelayIPServesBrowsers() async throws {
        try await Self.withTravRelay(["--listen", "::1", "--relay-ip", "127.0.0.1", "--port", "0", "--tls-port", "0",
                                      "--user", "u:p", "--relay-allow-peers", "127.0.0.0/8"]) { line in
            // relay udp [::1]:PORT tcp [::1]:PORT relay-ip 127.0.0.1,::1 realm trav
            #expect(line.contains(" relay-ip 127.0.0.1,::1 "), "\(line)")
            let udp = try #require(line.split(separator: " ").dropFirst(2).first.flatMap { TransportAddress(String($0)) }, "\(line)")
            #expect(udp.ip == Self.v6)
            let (client, allocation) = try await Self.allocate(at: udp)
            #expect(allocation.relayed.ip == Self.v4, "relayed \(allocation.relayed)")
            await client.close()
        }
    }

    @Test(.disabled(if: travMissing, "trav is not built (swift build)"))
    func travRelayRefusesTwoAddressesOfOneFamily() async throws {
        for arguments in [["--listen", "::1", "--listen", "::2"], ["--listen", "::1", "--relay-ip", "127.0.0.1", "--relay-ip", "127.0.0.2"]] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Self.trav)
            p.arguments = ["relay"] + arguments + ["--user", "u:p"]
            let err = Pipe()
            p.standardOutput = FileHandle.nullDevice
            p.standardError = err
            try p.run()
            // Validation fails before anything binds; the read ends when the process does, killed after 10 s at the latest.
            let watchdog = Task {
                try? await Task.sleep(for: .seconds(10))
                if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            }
            defer { watchdog.cancel() }
            let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus != 0)
            #expect(message.contains("at most one IPv4 and one IPv6 address"), "\(message)")
        }
    }
}
