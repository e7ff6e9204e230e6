import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import Testing
import STUNLite
import Rendezvous
@testable import NATLab
@testable import TURNLite

/// Our relay and client over real loopback sockets, against each other and against coturn, both ways (RFC 8656).
@Suite(.serialized, .timeLimit(.minutes(2)))
struct TURNInteropTests {
    static let loopback = IPAddress("127.0.0.1")!
    static let tools = ["turnserver", "turnutils_uclient", "turnutils_peer"]
    static let coturnMissing: String? = tools.allSatisfy { path($0) != nil } ? nil
        : "coturn is not installed (apt-get install coturn)"

    static func path(_ tool: String) -> String? {
        ["/usr/bin", "/usr/local/bin", "/usr/sbin"].map { "\($0)/\(tool)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// A port free on 127.0.0.1 for UDP and TCP right now (found by binding UDP).
    static func freePort() async throws -> UInt16 {
        let probe = try await STUNUDPClient.bind(to: TransportAddress(ip: loopback, port: 0))
        defer { Task { await probe.close() } }
        return probe.localAddress.port
    }

    /// Runs our relay on 127.0.0.1 (UDP, TCP, TLS) with user u:p, realm trav.test, and loopback peers allowed.
    static func withOurServer(allowLoopback: Bool = true, _ configure: (inout TURNServerConfiguration) -> Void = { _ in },
                              _ body: (TURNServer) async throws -> Void) async throws {
        var c = TURNServerConfiguration(credentials: TURNCredentials(realm: "trav.test", users: ["u": "p"]),
                                        peerPolicy: TURNPeerPolicy(allowed: allowLoopback ? [IPPrefix("127.0.0.0/8")!] : []))
        configure(&c)
        let generated = try CloudCertificates.ephemeral(names: ["\(loopback)"])
        let tls = try NIOSSLContext(configuration: TURNTLS.serverConfiguration(
            certificatePEM: generated.certificateChainPEM, privateKeyPEM: generated.privateKeyPEM))
        try await withServer(.init(listenIP: loopback, port: 0, tls: (0, tls), server: c), body)
    }

    /// Runs a relay with `configuration` for `body`, and shuts it down even when `body` throws.
    static func withServer(_ configuration: TURNServer.Configuration, _ body: (TURNServer) async throws -> Void) async throws {
        let server = try await TURNServer.start(configuration)
        do {
            try await body(server)
        } catch {
            await server.shutdown()
            throw error
        }
        await server.shutdown()
    }

    /// Where peers live: a loopback address the relay does not listen on (it refuses peers on its own address).
    static let peerIP = IPAddress("127.0.0.2")!

    /// A UDP echo peer on ``peerIP``: every datagram goes back to its sender.
    static func withEchoPeer(_ body: (TransportAddress) async throws -> Void) async throws {
        let echo = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { ch in ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(EchoHandler()) } }
            .bind(to: TransportAddress(ip: peerIP, port: 0).socketAddress).get()
        let address = TransportAddress(echo.localAddress!)!
        do {
            try await body(address)
        } catch {
            try? await echo.close()
            throw error
        }
        try? await echo.close()
    }

    /// Starts a coturn tool; the caller must `stop` it (SIGKILL: coturn ignores SIGTERM while starting).
    static func spawn(_ tool: String, _ args: [String]) throws -> ChildProcess {
        try ChildProcess([path(tool)!] + args)
    }

    static func stop(_ p: ChildProcess) {
        if p.isRunning { _ = posixKill(p.pid, SIGKILL); _ = p.waitBlocking(.seconds(3)) }
        p.removeFiles()
    }

    /// Our client: allocate, Send indication to the echo peer, then a channel, and read both echoes back.
    static func exchange(_ config: TURNClient.Configuration, echo: TransportAddress) async throws {
        let (client, allocation) = try await TURNClient.allocate(config)
        do {
            #expect(allocation.relayed.ip == loopback)
            try await client.createPermission(for: [echo])
            var inbound = client.received.makeAsyncIterator()
            try await client.send(Array("via-send-indication".utf8), to: echo)
            let first = await inbound.next()
            #expect(first?.peer == echo)
            #expect(first.map { String(decoding: $0.payload, as: UTF8.self) } == "via-send-indication")
            let number = try await client.bindChannel(to: echo)
            #expect(ChannelNumber.validRange.contains(number))
            for i in 0..<20 {
                let payload = Array("via-channel-\(i)".utf8) + [UInt8](repeating: UInt8(i), count: i)
                try await client.send(payload, to: echo)
                let got = await inbound.next()
                #expect(got?.payload == payload, "message \(i)")
            }
            #expect(try await client.refresh(lifetime: 900) == 900)
        } catch {
            await client.close()
            throw error
        }
        await client.close()
    }

    static func clientTLS() -> TURNClient.Transport {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        return .tls(tls, serverHostname: nil)
    }

    // MARK: Ours against ours

    @Test(arguments: ["udp", "tcp", "tls"]) func ourClientRelaysThroughOurServer(_ transport: String) async throws {
        try await Self.withOurServer { server in
            try await Self.withEchoPeer { echo in
                let (address, t): (TransportAddress, TURNClient.Transport) = switch transport {
                case "udp": (server.udpAddress, .udp)
                case "tcp": (server.tcpAddress!, .tcp)
                default: (server.tlsAddress!, Self.clientTLS())
                }
                try await Self.exchange(.init(server: address, transport: t, username: "u", password: "p",
                                              retransmission: .quick), echo: echo)
            }
            // close() deleted the allocation with Refresh(0).
            #expect(await server.allocationCount == 0)
        }
    }

    @Test func loopbackPeerIsRefusedWithoutTheAllowList() async throws {
        try await Self.withOurServer(allowLoopback: false) { server in
            let (client, _) = try await TURNClient.allocate(.init(server: server.udpAddress, username: "u", password: "p",
                                                                  retransmission: .quick))
            do {
                try await client.createPermission(for: [TransportAddress(ip: Self.peerIP, port: 9)])
                Issue.record("loopback peer accepted")
            } catch let e as TURNError {
                #expect(e.errorCode?.code == 403)
            }
            await client.close()
        }
    }

    @Test func wrongPasswordAndQuotaAreTypedErrors() async throws {
        try await Self.withOurServer({ $0.maxAllocationsPerUser = 1 }) { server in
            do {
                _ = try await TURNClient.allocate(.init(server: server.udpAddress, username: "u", password: "bad", retransmission: .quick))
                Issue.record("bad password accepted")
            } catch let e as TURNError {
                #expect(e.code == .unauthenticated)
            }
            let (first, _) = try await TURNClient.allocate(.init(server: server.udpAddress, username: "u", password: "p",
                                                                 retransmission: .quick))
            do {
                _ = try await TURNClient.allocate(.init(server: server.tcpAddress!, transport: .tcp, username: "u", password: "p",
                                                        retransmission: .quick))
                Issue.record("quota not enforced")
            } catch let e as TURNError {
                #expect(e.errorCode?.code == 486)
            }
            await first.close()
        }
    }

    // MARK: coturn's client against our server

    /// uclient's modes: channels (it draws numbers from RFC 5766's 0x4000–0x7FFF, so the server admits that
    /// range here) or Send/Data indications (`-s`, the server as configured by default).
    static let uclientCases: [(String, Bool)] = [("udp", true), ("tcp", true), ("tls", true), ("udp", false), ("tcp", false), ("tls", false)]

    /// Waits (at most 5 s) until a UDP echo service on ``peerIP``:`port` echoes a datagram.
    static func waitForEcho(on port: UInt16) async throws {
        let probe = try await STUNUDPClient.bind(to: TransportAddress("127.0.0.1:0")!)
        defer { Task { await probe.close() } }
        let target = TransportAddress(ip: peerIP, port: port)
        let heard = Mutex(false)
        let reader = Task {
            for await (source, _) in probe.otherDatagrams where source == target {
                heard.withLock { $0 = true }
                return
            }
        }
        defer { reader.cancel() }
        for _ in 0..<50 {
            try await probe.send(Array("ready?".utf8), to: target)
            try await Task.sleep(for: .milliseconds(100))
            if heard.withLock({ $0 }) { return }
        }
        throw NATLabError(.timedOut, "echo peer on port \(port) never answered")
    }

    @Test(.enabled(if: coturnMissing == nil, Comment(rawValue: coturnMissing ?? "")),
          arguments: uclientCases)
    func coturnUClientRelaysThroughOurServerWithoutLoss(_ transport: String, _ channels: Bool) async throws {
        try await Self.withOurServer({ if channels { $0.channelNumbers = TURNServerConfiguration.rfc5766ChannelNumbers } }) { server in
            // The echo peer must answer before uclient starts, or every packet is "lost"; a port
            // found free can be taken before turnutils_peer binds it, so up to three ports are tried.
            var started: (ChildProcess, UInt16)?
            for _ in 0..<3 where started == nil {
                let port = try await Self.freePort()
                let candidate = try Self.spawn("turnutils_peer", ["-L", "\(Self.peerIP)", "-p", "\(port)"])
                if (try? await Self.waitForEcho(on: port)) != nil { started = (candidate, port) } else { Self.stop(candidate) }
            }
            let (peer, peerPort) = try #require(started, "turnutils_peer never echoed")
            defer { Self.stop(peer) }
            var args = (channels ? [] : ["-s"]) + ["-c", "-n", "100", "-m", "2", "-l", "200", "-z", "5", "-u", "u", "-w", "p",
                        "-e", "\(Self.peerIP)", "-r", "\(peerPort)"]
            switch transport {
            case "udp": args += ["-p", "\(server.udpAddress.port)"]
            case "tcp": args += ["-t", "-p", "\(server.tcpAddress!.port)"]
            default: args += ["-t", "-S", "-p", "\(server.tlsAddress!.port)"]
            }
            let result = try await ChildProcess.run([Self.path("turnutils_uclient")!] + args + ["127.0.0.1"], timeout: .seconds(30))
            let out = result.stdout + result.stderr
            #expect(!result.timedOut, "uclient hung: \(out.suffix(2000))")
            #expect(result.status == 0, "\(out.suffix(2000))")
            #expect(out.contains("Total lost packets 0 (0.000000%)"), "\(out.suffix(2000))")
            #expect(out.contains("Total transmit time"), "\(out.suffix(2000))")
        }
    }

    @Test(.enabled(if: coturnMissing == nil, Comment(rawValue: coturnMissing ?? "")))
    func coturnUClientClientToClientThroughOurServer() async throws {
        try await Self.withOurServer({ $0.channelNumbers = TURNServerConfiguration.rfc5766ChannelNumbers }) { server in
            _ = try await Self.uclientLosesNothing(["-y", "-c", "-n", "100", "-m", "2", "-l", "160", "-z", "5", "-u", "u", "-w", "p",
                                                    "-p", "\(server.udpAddress.port)", "127.0.0.1"])
        }
    }

    /// Runs `turnutils_uclient ARGS` (30 s at most), expects it to succeed without losing a packet; returns its output.
    static func uclientLosesNothing(_ args: [String]) async throws -> String {
        let result = try await ChildProcess.run([path("turnutils_uclient")!] + args, timeout: .seconds(30))
        let out = result.stdout + result.stderr
        #expect(result.status == 0 && !result.timedOut, "\(out.suffix(2000))")
        #expect(out.contains("Total lost packets 0 (0.000000%)"), "\(out.suffix(2000))")
        return out
    }

    // MARK: Our client against coturn's server

    @Test(.enabled(if: coturnMissing == nil, Comment(rawValue: coturnMissing ?? "")),
          arguments: ["udp", "tcp"])
    func ourClientRelaysThroughCoturn(_ transport: String) async throws {
        let port = try await Self.freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("trav-turn-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let server = try Self.spawn("turnserver", [
            "-n", "--no-cli", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "--listening-port", "\(port)",
            "--lt-cred-mech", "--user", "u:p", "--realm", "r", "--allow-loopback-peers", "--no-tls", "--no-dtls",
            "--log-file", "stdout", "--simple-log", "--db", dir.appendingPathComponent("turndb").path,
            "--pidfile", dir.appendingPathComponent("turnserver.pid").path])
        defer { Self.stop(server) }
        try await Self.withEchoPeer { echo in
            let address = TransportAddress(ip: Self.loopback, port: port)
            let config = TURNClient.Configuration(server: address, transport: transport == "tcp" ? .tcp : .udp,
                                                  username: "u", password: "p", retransmission: .quick)
            // Bounded wait for coturn to listen: allocate until it answers.
            var ready = false
            for _ in 0..<40 where !ready {
                if let (c, _) = try? await TURNClient.allocate(config) { await c.close(); ready = true } else {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            #expect(ready, "turnserver did not answer: \(server.output().stdout.suffix(1500))")
            guard ready else { return }
            try await Self.exchange(config, echo: echo)
        }
    }
}

/// Sends every datagram back where it came from.
final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }
}
