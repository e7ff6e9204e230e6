import ArgumentParser
import NIOCore
import NIOSSL
import Rendezvous
import STUNLite
import ServiceLifecycle
import TURNLite

extension Trav {
    /// `trav relay`: a TURN relay (RFC 8656) in the foreground; SIGTERM or SIGINT drains it, then it exits.
    struct RelayCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "relay",
            abstract: "Run a TURN relay (RFC 8656) over UDP, TCP and TLS with long-term credentials.")

        @Option(help: "IP address to listen on (and to relay from); repeat with one of the other family for dual stack.")
        var listen: [String] = []
        @Option(name: .customLong("relay-ip"),
                help: "IP address to allocate relayed addresses on, one per family (repeatable; default: --listen's of that family). Clients that ask for no family get IPv4 (RFC 8656 §7.1), browsers among them, so a relay listening only on IPv6 needs an IPv4 --relay-ip.")
        var relayIPs: [String] = []
        @Option(help: "UDP and TCP port.") var port: UInt16 = 3478
        @Option(help: "TLS port (0: no TLS).") var tlsPort: UInt16 = 5349
        @Option(help: "TLS certificate chain (PEM); without it one is made in memory (a throwaway CA's, naming --listen).")
        var tlsCert: String?
        @Option(help: "TLS private key (PEM), with --tls-cert.") var tlsKey: String?
        @Option(name: .customLong("user"), help: "A static user as NAME:PASSWORD (repeatable).") var users: [String] = []
        @Option(help: "REALM for long-term credentials.") var realm: String = "trav"
        @Option(help: "Shared secret for TURN REST credentials (username EXPIRY:LABEL).") var secret: String?
        @Option(name: .customLong("relay-allow-peers"), parsing: .upToNextOption,
                help: "CIDRs of peers allowed despite being special (loopback, private, ...).")
        var allowPeers: [String] = []
        @Option(help: "Allocations one user may hold at once.") var userQuota: Int = 10
        @Option(help: "Shards, each on its own core, clients steered to one by source address (0: one per core).")
        var threads: Int = 0
        @Option(help: "Relayed bytes per second per user (0: unlimited).") var userBandwidth: Double = 10_000_000
        @Option(help: "401/438 challenges per second one source IP may draw; the burst is the larger of this and 32 (RFC 8656 §21.1.4).")
        var challengeRate: Double = 8
        @Flag(help: "Accept RFC 5766 channel numbers 0x4000-0x7FFF (coturn's turnutils_uclient draws from them).")
        var legacyChannelRange = false
        @Option(help: "After SIGTERM or SIGINT, seconds existing allocations keep relaying while new ones are refused (0: stop at once).")
        var drainSeconds: Int = Int(TURNServer.Configuration.defaultDrainGracePeriod.components.seconds)
        @Option(help: "TCP keepalive on client TCP/TLS connections: first probe after this many silent seconds, 3 more a third of it apart; a vanished client's allocations go within twice this (0: off).")
        var keepaliveSeconds: Int = 30
        @Option(help: "HOST:PORT to serve Prometheus metrics on, at /metrics (default: none).")
        var metricsListen: String?
        @OptionGroup var common: CommonOptions

        func validate() throws {
            guard !listen.isEmpty else { throw ValidationError("give --listen IP (twice for dual stack: an IPv4 and an IPv6 address)") }
            _ = try addressesPerFamily(listen, option: "--listen")
            _ = try addressesPerFamily(relayIPs, option: "--relay-ip")
            guard !users.isEmpty || secret != nil else { throw ValidationError("give at least one --user NAME:PASSWORD or --secret") }
            for u in users where !u.contains(":") || u.hasPrefix(":") {
                throw ValidationError("--user must be NAME:PASSWORD, got \(u)")
            }
            guard challengeRate > 0 else { throw ValidationError("--challenge-rate must be positive") }
            guard (0...86_400).contains(keepaliveSeconds) else { throw ValidationError("--keepalive-seconds must be 0…86400") }
            for c in allowPeers where IPPrefix(c) == nil { throw ValidationError("--relay-allow-peers: not a CIDR: \(c)") }
            if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
            guard drainSeconds >= 0 else { throw ValidationError("--drain-seconds must not be negative") }
            if let m = metricsListen, TransportAddress(m) == nil {
                throw ValidationError("--metrics-listen must be IP:PORT, got \(m)")
            }
        }

        func run() async throws {
            let logger = common.logger("trav.relay")
            let ips = try addressesPerFamily(listen, option: "--listen")
            var userMap: [String: String] = [:]
            for u in users {
                let parts = u.split(separator: ":", maxSplits: 1)
                userMap[String(parts[0])] = String(parts[1])
            }
            var tls: (port: UInt16, context: NIOSSLContext)?
            if tlsPort != 0 {
                let config = if let tlsCert, let tlsKey {
                    try TURNTLS.serverConfiguration(certificatePEMFile: tlsCert, privateKeyPEMFile: tlsKey)
                } else {
                    try Self.generatedTLS(names: listen + ["localhost"])
                }
                tls = (tlsPort, try NIOSSLContext(configuration: config))
            }
            var settings = TURNServerConfiguration(
                credentials: TURNCredentials(realm: realm, users: userMap, restSecret: secret),
                peerPolicy: TURNPeerPolicy(allowed: allowPeers.compactMap { IPPrefix($0) }),
                maxAllocationsPerUser: userQuota, bandwidthPerUser: userBandwidth > 0 ? userBandwidth : nil,
                challengeBurst: max(TURNServerConfiguration.defaultChallengeBurst, challengeRate), challengeRatePerSecond: challengeRate)
            if legacyChannelRange { settings.channelNumbers = TURNServerConfiguration.rfc5766ChannelNumbers }
            let relayIPs = TURNServer.Configuration.relayIPs(listening: ips, overrides: try addressesPerFamily(relayIPs, option: "--relay-ip"))
            let registry = metricsListen == nil ? nil : MetricsEndpoint.bootstrapPrometheus()
            var configuration = TURNServer.Configuration(listenIP: ips[0], additionalListenIPs: Array(ips.dropFirst()), port: port, tls: tls,
                                                         relayIPs: relayIPs, server: settings)
            configuration.drainGracePeriod = .seconds(drainSeconds)
            configuration.streamKeepalive = keepaliveSeconds == 0 ? nil : .after(idle: .seconds(keepaliveSeconds))
            configuration.shards = threads > 0 ? threads : System.coreCount
            let server = try await TURNServer.start(configuration, logger: logger)
            var services: [any Service] = []
            if let metricsListen, let registry {
                do {
                    let endpoint = try await MetricsEndpoint.start(TransportAddress(metricsListen)!, registry: registry)
                    say("relay metrics http://\(endpoint.address)/metrics")
                    services.append(endpoint)
                } catch {
                    await server.shutdown()
                    throw error
                }
            }
            say(Self.statusLine(server, relayIPs: relayIPs) + " realm \(realm)")
            // Shut down in reverse order: the relay drains first, the metrics stay scrapeable meanwhile.
            let group = ServiceGroup(services: services + [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            try await group.run()
            say("relay stopped")
        }

        /// `relay udp A[,B] tcp A[,B] tls A[,B] relay-ip IPv4[,IPv6]`: where the relay answers and where it allocates.
        static func statusLine(_ server: TURNServer, relayIPs: [TURNAddressFamily: IPAddress]) -> String {
            func list(_ addresses: [TransportAddress]) -> String { addresses.map(\.description).joined(separator: ",") }
            var line = "relay udp \(list(server.udpAddresses))"
            if !server.tcpAddresses.isEmpty { line += " tcp \(list(server.tcpAddresses))" }
            if !server.tlsAddresses.isEmpty { line += " tls \(list(server.tlsAddresses))" }
            let relay = [TURNAddressFamily.ipv4, .ipv6].compactMap { relayIPs[$0]?.description }
            return line + " relay-ip \(relay.joined(separator: ","))"
        }

        /// A TLS configuration with a certificate made in memory by the cloud's generator (no files, no `openssl`).
        static func generatedTLS(names: [String]) throws -> TLSConfiguration {
            let generated = try CloudCertificates.ephemeral(names: names)
            return try TURNTLS.serverConfiguration(certificatePEM: generated.certificateChainPEM, privateKeyPEM: generated.privateKeyPEM)
        }
    }
}
