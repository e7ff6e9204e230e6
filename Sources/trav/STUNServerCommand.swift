import ArgumentParser
import STUNLite

extension Trav {
    /// `trav stun-server`: a STUN server in the foreground until SIGINT/SIGTERM.
    struct STUNServerCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "stun-server",
            abstract: "Run a STUN server (UDP and TCP; RFC 5780 behaviour discovery with --alternate-ip).")

        @Option(help: "IP address to listen on.") var listen: String
        @Option(help: "Second IP address for RFC 5780 behaviour discovery.") var alternateIP: String?
        @Option(help: "Port (UDP and TCP).") var port: UInt16 = 3478
        @Option(help: "Alternate port for RFC 5780 (default: any free port).") var alternatePort: UInt16?
        @Option(help: "SOFTWARE attribute to include in responses (off by default).") var software: String?
        @Flag(help: "Do not listen on TCP.") var noTCP = false
        @Option(help: "UDP sockets per address sharing it with SO_REUSEPORT, each on its own event loop (up to one per core).") var threads = 1
        @OptionGroup var common: CommonOptions

        func validate() throws {
            guard IPAddress(listen) != nil else { throw ValidationError("--listen must be an IP address") }
            if let a = alternateIP, IPAddress(a) == nil { throw ValidationError("--alternate-ip must be an IP address") }
            guard (1...STUNServer.maxUDPSocketsPerAddress).contains(threads) else {
                throw ValidationError("--threads must be 1…\(STUNServer.maxUDPSocketsPerAddress)")
            }
        }

        func run() async throws {
            let logger = common.logger("trav.stun-server")
            let server = try await STUNServer.start(.init(
                listenIP: IPAddress(listen)!, port: port, alternateIP: alternateIP.flatMap { IPAddress($0) },
                alternatePort: alternatePort, software: software, tcp: !noTCP, udpSocketsPerAddress: threads), logger: logger)
            let udp = STUNSocketRole.all.compactMap { server.udpAddresses[$0]?.description }.joined(separator: " ")
            say("stun-server udp \(udp)" + (server.tcpAddresses.isEmpty ? "" : " tcp \(server.tcpAddresses.map(\.description).joined(separator: " "))"))
            await waitForTermination()
            await server.shutdown()
        }
    }

    /// `trav stun`: one Binding transaction, printing the mapped address.
    struct STUNCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "stun",
            abstract: "Ask a STUN server for this host's mapped (public) address.")

        @Argument(help: "Server as HOST[:PORT] (default port 3478).") var server: String
        @Flag(help: "Use TCP instead of UDP.") var tcp = false
        @Flag(help: "Print one JSON object.") var json = false
        @Option(help: "Give up after this many seconds (UDP: RFC 8489 retransmissions within it).") var timeout: Double = 39.5
        @OptionGroup var common: CommonOptions

        struct Output: Encodable {
            var server: String
            var transport: String
            var local: String
            var mappedAddress: String?
            var responseOrigin: String?
            var otherAddress: String?
            var rttMs: Double
            var requestsSent: Int
        }

        func run() async throws {
            _ = common.logger("trav.stun")
            let target = try resolve(server, defaultPort: 3478)
            let response: STUNResponse
            if tcp {
                response = try await STUNTCPClient.binding(to: target, timeout: .milliseconds(Int64(timeout * 1000)))
            } else {
                let client = try await STUNUDPClient.bind(to: TransportAddress(ip: target.ip.isIPv4 ? .v4(0) : .v6(high: 0, low: 0), port: 0))
                defer { Task { await client.close() } }
                response = try await client.binding(to: target, policy: .fitting(seconds: timeout))
            }
            let out = Output(server: target.description, transport: tcp ? "tcp" : "udp", local: response.local.description,
                             mappedAddress: response.mappedAddress?.description, responseOrigin: response.responseOrigin?.description,
                             otherAddress: response.otherAddress?.description, rttMs: response.elapsed.milliseconds,
                             requestsSent: response.requestsSent)
            if json {
                try printJSON(out)
            } else {
                print("mapped address  \(out.mappedAddress ?? "none")")
                print("local address   \(out.local)")
                print("server          \(out.server) over \(out.transport)")
                if let o = out.otherAddress { print("other address   \(o) (RFC 5780 behaviour discovery available)") }
                print(String(format: "round trip      %.2f ms (%d request%@)", out.rttMs, out.requestsSent, out.requestsSent == 1 ? "" : "s"))
            }
        }
    }
}

extension STUNRetransmissionPolicy {
    /// The RFC 8489 schedule cut to fit within `seconds`: the most requests whose total timeout fits.
    static func fitting(seconds: Double) -> STUNRetransmissionPolicy {
        var p = STUNRetransmissionPolicy.rfc8489
        while p.maxRequests > 1, Double(p.totalTimeout.nanoseconds) / 1e9 > seconds { p.maxRequests -= 1 }
        if Double(p.totalTimeout.nanoseconds) / 1e9 > seconds {
            p.finalWaitMultiplier = max(1, Int(seconds * 1000 / Double(p.rto.nanoseconds / 1_000_000)))
        }
        return p
    }
}
