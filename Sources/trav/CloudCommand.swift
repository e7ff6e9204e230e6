import ArgumentParser
import Foundation
import NIOCore
import ServiceLifecycle
import Rendezvous
import SourceLimits
import Traversal
import STUNLite
import TURNLite
import WebRTC

extension Trav {
    /// `trav cloud`: STUN and TLS signalling in the foreground until SIGINT/SIGTERM.
    struct CloudCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cloud",
            abstract: "Run the cloud: STUN (RFC 5780 with --alternate-ip), TLS signalling and a TURN relay for cameras and viewers.",
            discussion: """
                Ports: STUN 3478 (UDP/TCP), TLS 5349 and relay 3479 (UDP/TCP). The one TLS port carries \
                signalling and TURN over TLS, told apart by ALPN ("trav/1": signalling; "stun.turn", RFC 7443: \
                the relay; none, as browsers' turns: sends: by the first bytes), and the viewer page ("http/1.1") \
                when --web-port is the same port, so --tls-port 443 alone serves networks that let only TCP 443 out; \
                --relay-tls-port adds a dedicated relay TLS port. Each introduction carries relay credentials \
                valid for --relay-grant-lifetime seconds, signed with a secret made fresh at every start.

                A camera's key is checked against its UID (a 16 MiB scrypt) once and remembered in \
                DATA/devices.sqlite, so after a restart cameras need only sign the challenge. Scrypt runs on \
                --verification-workers threads, and only work that can finish before the client gives up is \
                taken: the rest hears when to come back. The open-files limit is raised to its hard limit \
                at start, and --max-connections kept below it.

                A registered camera may keep its presence over UDP instead of TLS (--presence-port, the TLS \
                port's number by default): authenticated keepalive datagrams every --presence-keepalive seconds, \
                which also hold its NAT mapping open; the cloud wakes it over UDP when a viewer asks, and it \
                connects over TLS for the introduction. Cameras whose UDP is blocked keep TLS.

                Several nodes serve one fleet with --database postgres://USER:PASSWORD@HOST:PORT/DB (each with \
                its own --node-name and the same certificate: one --data directory or --tls-cert). The database \
                holds the verified devices, which node holds each camera's session, and each node's lease \
                (renewed every 2 s, valid 10 s); a viewer on any node reaches a camera on any other, its \
                introduction carried between the two by LISTEN/NOTIFY. A node that dies loses nothing: its \
                cameras reconnect to the next node in their list, and its lease runs out.
                """)

        @Option(help: "IP address to listen on.") var listen: String
        @Option(help: "Second IP address for RFC 5780 behaviour discovery.") var alternateIP: String?
        @Option(help: "Directory for the generated CA and server certificate.") var data: String = "./trav-cloud"
        @Option(help: "STUN port (UDP and TCP).") var stunPort: UInt16 = 3478
        @Option(help: "TLS signalling port.") var tlsPort: UInt16 = 5349
        @Option(help: "HTTPS port of the browser viewer page and its WebSocket signalling, with the cloud's certificate (0 picks a free one; default: none). The --tls-port's number serves it there, to browsers negotiating ALPN http/1.1, beside signalling and TURN over TLS.")
        var webPort: UInt16?
        @Option(help: "Server certificate (PEM) instead of the generated one.") var tlsCert: String?
        @Option(help: "Private key (PEM) of --tls-cert.") var tlsKey: String?
        @Option(help: "Extra DNS name cameras may dial (repeatable).") var name: [String] = []
        @Option(help: "IP address of the relay's UDP/TCP ports and allocations (default: --listen); repeat with one of the other family for dual stack.")
        var relayListen: [String] = []
        @Option(name: .customLong("relay-ip"),
                help: "IP address to allocate relayed addresses on, one per family (repeatable; default: --relay-listen's of that family). Clients that ask for no family, browsers among them, get IPv4 (RFC 8656 §7.1).")
        var relayIPs: [String] = []
        @Option(help: "Relay port (UDP and TCP).") var relayPort: UInt16 = CloudService.RelayConfiguration.defaultPort
        @Option(name: .customLong("relay-tls-port"),
                help: "A dedicated relay TLS port besides the shared TLS port, e.g. \(CloudService.RelayConfiguration.defaultTLSPort) (0: none).")
        var relayTLSPort: UInt16 = 0
        @Option(name: .customLong("relay-allow-peers"), parsing: .upToNextOption,
                help: "CIDRs of peers the relay reaches although special (loopback, private, documentation; labs).")
        var relayAllowPeers: [String] = []
        @Option(name: [.customLong("relay-grant-lifetime"), .customLong("relay-grant-seconds")],
                help: "How long relay credentials issued per introduction stay valid, in seconds.")
        var relayGrantSeconds: Int = Int(RelayGrantIssuer.defaultLifetime.components.seconds)
        @Flag(help: "Run no relay.") var noRelay = false
        @Option(help: "Relay shards, each on its own core, clients steered to one by source address (0: one per core).")
        var relayThreads: Int = 0
        @Option(help: "At SIGTERM the relay keeps existing allocations for up to this many seconds (new ones are refused).")
        var drainSeconds: Int = 30
        @Option(help: "TCP keepalive on the relay's client connections: first probe after this many silent seconds, 3 more a third of it apart; a vanished client's allocations go within twice this (0: off).")
        var relayKeepaliveSeconds: Int = 30
        @Option(help: "HOST:PORT to serve Prometheus metrics (the relay's among them) on, at /metrics (default: none).")
        var metricsListen: String?
        @Option(help: "Look-ups (introductions) one source IP may make at once before the rate limit applies.")
        var lookupBurst: Int = RendezvousServer.Configuration.defaultLookupRateLimit.capacity
        @Option(help: "Look-ups per second one source IP may sustain (labs driving many connections from one NAT raise it).")
        var lookupsPerSecond: Double = 2
        @Option(help: "Signalling connections open at once, cameras and viewers (lowered to fit the open-files limit).")
        var maxConnections: Int = 10_000
        @Option(help: "Connections kept for viewers: cameras hold at most --max-connections less this (default: 5 %).")
        var viewerReserve: Int?
        @Option(help: "Signalling connections one source IP (or IPv6 /64) may hold at once.")
        var maxConnectionsPerSource: Int = RendezvousServer.Configuration.defaultMaxConnectionsPerSource
        @Option(help: "Connections in their TLS handshake at once; more are closed on accept and retry later.")
        var maxPendingHandshakes: Int = RendezvousServer.Configuration.defaultMaxPendingHandshakes
        @Option(help: "Threads checking keys against UIDs (scrypt; default: all cores but one).")
        var verificationWorkers: Int = RendezvousServer.Configuration.defaultVerificationWorkers
        @Option(help: "Registrations of keys not yet verified one source IP may make at once before the rate limit applies.")
        var unverifiedRegistrationBurst: Int = 10
        @Option(help: "Registrations of keys not yet verified one source IP may sustain per second.")
        var unverifiedRegistrationsPerSecond: Double = 0.5
        @Option(help: "Where verified devices are remembered: sqlite (DATA/devices.sqlite) or memory (lost at exit).")
        var deviceStore: DeviceStoreKind = .sqlite
        @Option(help: "PostgreSQL shared by several nodes of one fleet (postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=disable|prefer|require]); replaces --device-store.")
        var database: String?
        @Option(help: "This node's name in the database (unique per node; default: the host name).")
        var nodeName: String?
        @Flag(help: "Offer no UDP presence: every camera keeps its TLS connection.") var noPresence = false
        @Option(help: "UDP port of presence (default: the TLS port's number).") var presencePort: UInt16?
        @Option(help: "Seconds between a camera's presence keepalives (under the NATs' UDP timeouts).")
        var presenceKeepalive: Int = PresenceProtocol.defaultKeepaliveSeconds
        @Option(help: "Cameras present over UDP at once, at most; more keep TLS.")
        var maxPresenceSessions: Int = PresenceStateMachine.Configuration.defaultMaxSessions
        @Option(help: "Presence datagrams one source IP (or IPv6 /64) may send per second, after a burst of 512 (a site of N cameras sends N / --presence-keepalive).")
        var presenceDatagramsPerSecond: Double = 100
        @Option(help: "Seconds between two returns of freed memory to the system (glibc malloc_trim; 0: never).")
        var heapTrimSeconds: Int = Int(HeapTrimService.defaultInterval / .seconds(1))
        @OptionGroup var common: CommonOptions

        func validate() throws {
            guard (0...3600).contains(heapTrimSeconds) else { throw ValidationError("--heap-trim-seconds must be 0…3600") }
            guard IPAddress(listen) != nil else { throw ValidationError("--listen must be an IP address") }
            if let a = alternateIP, IPAddress(a) == nil { throw ValidationError("--alternate-ip must be an IP address") }
            guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
            _ = try addressesPerFamily(relayListen, option: "--relay-listen")
            _ = try addressesPerFamily(relayIPs, option: "--relay-ip")
            for c in relayAllowPeers where IPPrefix(c) == nil { throw ValidationError("--relay-allow-peers: not a CIDR: \(c)") }
            guard drainSeconds >= 0 else { throw ValidationError("--drain-seconds must not be negative") }
            guard (0...86_400).contains(relayKeepaliveSeconds) else { throw ValidationError("--relay-keepalive-seconds must be 0…86400") }
            guard relayGrantSeconds > 0 else { throw ValidationError("--relay-grant-lifetime must be positive") }
            if let m = metricsListen, TransportAddress(m) == nil { throw ValidationError("--metrics-listen must be IP:PORT, got \(m)") }
            guard (1...100_000).contains(lookupBurst) else { throw ValidationError("--lookup-burst must be 1…100000") }
            guard lookupsPerSecond >= 0.01, lookupsPerSecond <= 100_000 else { throw ValidationError("--lookups-per-second must be 0.01…100000") }
            guard maxConnections >= 1 else { throw ValidationError("--max-connections must be positive") }
            if let r = viewerReserve, !(0..<maxConnections).contains(r) { throw ValidationError("--viewer-reserve must be 0…max-connections − 1") }
            guard maxConnectionsPerSource >= 1 else { throw ValidationError("--max-connections-per-source must be positive") }
            guard maxPendingHandshakes >= 1 else { throw ValidationError("--max-pending-handshakes must be positive") }
            guard (1...CloudProtocol.maxKeepaliveSeconds).contains(presenceKeepalive) else {
                throw ValidationError("--presence-keepalive must be 1…\(CloudProtocol.maxKeepaliveSeconds)")
            }
            guard maxPresenceSessions >= 1 else { throw ValidationError("--max-presence-sessions must be positive") }
            guard presenceDatagramsPerSecond >= 0.01, presenceDatagramsPerSecond <= 10_000_000 else {
                throw ValidationError("--presence-datagrams-per-second must be 0.01…10000000")
            }
            if let database { _ = try PostgresLocation(url: database) }
            if let nodeName, nodeName.isEmpty || nodeName.utf8.count > 200 { throw ValidationError("--node-name must be 1…200 bytes") }
            guard (1...256).contains(verificationWorkers) else { throw ValidationError("--verification-workers must be 1…256") }
            guard (1...1_000_000).contains(unverifiedRegistrationBurst) else { throw ValidationError("--unverified-registration-burst must be 1…1000000") }
            guard unverifiedRegistrationsPerSecond >= 0.01, unverifiedRegistrationsPerSecond <= 100_000 else {
                throw ValidationError("--unverified-registrations-per-second must be 0.01…100000")
            }
        }

        func run() async throws {
            let logger = common.logger("trav.cloud")
            let registry = metricsListen == nil ? nil : MetricsEndpoint.bootstrapPrometheus()
            let relayListenIPs = try addressesPerFamily(relayListen, option: "--relay-listen")
            var configuration = CloudService.Configuration(
                listenIP: listen, alternateIP: alternateIP, dataDirectory: data, stunPort: stunPort, tlsPort: tlsPort,
                tlsCertificatePath: tlsCert, tlsKeyPath: tlsKey, extraNames: name,
                relay: noRelay ? nil : .init(listenIP: relayListenIPs.first?.description, additionalListenIPs: Array(relayListenIPs.dropFirst()),
                                             relayIPs: try addressesPerFamily(relayIPs, option: "--relay-ip"),
                                             port: relayPort, tlsPort: relayTLSPort == 0 ? nil : relayTLSPort,
                                             allowedPeers: relayAllowPeers.compactMap { IPPrefix($0) },
                                             grantLifetime: .seconds(relayGrantSeconds)))
            configuration.relay?.drainGracePeriod = .seconds(drainSeconds)
            configuration.relay?.streamKeepalive = relayKeepaliveSeconds == 0 ? nil : .after(idle: .seconds(relayKeepaliveSeconds))
            configuration.relay?.shards = relayThreads > 0 ? relayThreads : System.coreCount
            configuration.lookupRateLimit = .init(capacity: lookupBurst, refillInterval: .nanoseconds(Int64(1e9 / lookupsPerSecond)))
            let openFiles = OpenFileLimit.raiseToHardLimit()
            // Left for STUN over TCP, the relay, the store and the process itself.
            let headroom = 2048
            var maxConnections = maxConnections
            if openFiles - headroom < maxConnections {
                maxConnections = max(1, openFiles - headroom)
                say("cloud open-files limit \(openFiles): --max-connections lowered to \(maxConnections)")
            }
            let registrationLimit = TokenBucketRateLimiter<SourceAddressKey>(
                capacity: unverifiedRegistrationBurst, refillInterval: .nanoseconds(Int64(1e9 / unverifiedRegistrationsPerSecond)))
            let viewerReserve = viewerReserve.map { min($0, maxConnections - 1) }
            let (perSource, handshakes, workers) = (maxConnectionsPerSource, maxPendingHandshakes, verificationWorkers)
            let presence = noPresence ? nil : PresenceStateMachine.Configuration(
                keepaliveSeconds: presenceKeepalive, maxSessions: maxPresenceSessions,
                perSource: .init(capacity: PresenceStateMachine.Configuration.defaultPerSource.capacity,
                                 refillInterval: .nanoseconds(Int64(1e9 / presenceDatagramsPerSecond)),
                                 maxTrackedKeys: PresenceStateMachine.Configuration.defaultPerSource.maxTrackedKeys))
            let presencePort = presencePort
            var postgres: PostgresDeviceStore?
            if let database { postgres = try await PostgresDeviceStore.open(try PostgresLocation(url: database), logger: logger) }
            let store: (any DeviceStore)? = postgres ?? (deviceStore == .memory ? InMemoryDeviceStore() : nil)
            let nodeName = nodeName
            // The page on the TLS port itself: one port (443) for the page, signalling and TURN over TLS.
            let pageOnTLSPort = webPort != nil && webPort == tlsPort && tlsPort != 0
            let started: CloudService
            do {
                started = try await CloudService.start(configuration, store: store, tuning: { server in
                    server.maxConnections = maxConnections
                    server.viewerReserve = viewerReserve ?? maxConnections / 20
                    server.maxConnectionsPerSource = perSource
                    server.maxPendingHandshakes = handshakes
                    server.verification.workers = workers
                    server.registrationRateLimit = registrationLimit
                    server.presence = presence
                    server.presencePort = presencePort
                    if let nodeName { server.nodeName = nodeName }
                    server.servesViewerPage = pageOnTLSPort
                }, logger: logger)
            } catch {
                await postgres?.close()
                throw error
            }
            let cloud = started
            let udp = STUNSocketRole.all.compactMap { cloud.stun.udpAddresses[$0]?.description }.joined(separator: " ")
            say("cloud stun udp \(udp) tcp \(cloud.stun.tcpAddresses.map(\.description).joined(separator: " "))")
            say("cloud signalling tls \(cloud.rendezvous.address)")
            if let presence = cloud.rendezvous.presenceAddress.flatMap(TransportAddress.init) { say("cloud presence udp \(presence)") }
            if let relay = cloud.relay {
                let udp = relay.udpAddresses.map(\.description).joined(separator: ",")
                let tcp = relay.tcpAddresses.isEmpty ? "-" : relay.tcpAddresses.map(\.description).joined(separator: ",")
                say("cloud relay udp \(udp) tcp \(tcp) tls \(cloud.rendezvous.address)" +
                    (relay.tlsAddresses.isEmpty ? "" : " and " + relay.tlsAddresses.map(\.description).joined(separator: ",")))
            }
            if let ca = cloud.caPath { say("cloud ca \(ca)") }
            var web: BrowserViewerServer?
            if pageOnTLSPort {
                web = cloud.serveBrowserViewerOnSignallingPort(
                    assets: .init(page: BrowserViewerPage.html, script: BrowserViewerPage.script), logger: logger)
                say("cloud web https://\(cloud.rendezvous.address)/")
            } else if let webPort {
                do {
                    web = try await cloud.startBrowserViewer(
                        listenIP: listen, port: webPort, assets: .init(page: BrowserViewerPage.html, script: BrowserViewerPage.script), logger: logger)
                } catch {
                    await cloud.stop()
                    await postgres?.close()
                    throw error
                }
                let address = TransportAddress(web!.address).map(\.description) ?? "\(web!.address)"
                say("cloud web https://\(address)/")
            }
            let reporting = Task { [web] in
                guard let web else { return }
                let encoder = JSONEncoder()
                encoder.outputFormatting = .sortedKeys
                for await report in web.reports {
                    say("browser report " + ((try? encoder.encode(report)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"))
                }
            }
            defer { reporting.cancel() }
            var metrics: MetricsEndpoint?
            if let metricsListen, let registry {
                do {
                    metrics = try await MetricsEndpoint.start(TransportAddress(metricsListen)!, registry: registry)
                } catch {
                    await cloud.stop()
                    await postgres?.close()
                    throw error
                }
                say("cloud metrics http://\(metrics!.address)/metrics")
            }
            let devices = postgres.map { "\($0.location.redacted) as node \(cloud.rendezvous.nodeName)" }
                ?? (deviceStore == .sqlite ? data + "/" + SQLiteDeviceStore.fileName : "in memory")
            say("cloud devices \(devices), " +
                "connections \(maxConnections) (viewers keep \(viewerReserve ?? maxConnections / 20)), open files \(openFiles)")
            // One group, shut down in reverse order on SIGTERM/SIGINT: signalling tells its clients when to come
            // back, the relay drains for --drain-seconds, STUN closes, and the metrics stay scrapeable until the end.
            let trim: [any Service] = heapTrimSeconds > 0 ? [HeapTrimService(interval: .seconds(heapTrimSeconds), logger: logger)] : []
            let group = ServiceGroup(
                services: (metrics.map { [$0 as any Service] } ?? []) + trim + cloud.services + (web.map { [$0 as any Service] } ?? []),
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            do {
                try await group.run()
            } catch {
                await cloud.stop()
                await postgres?.close()
                throw error
            }
            await cloud.closeStore()
            await postgres?.close()
            say("cloud stopped")
        }
    }
}

/// Where `trav cloud` remembers verified devices.
enum DeviceStoreKind: String, ExpressibleByArgument, CaseIterable {
    case sqlite, memory
}
