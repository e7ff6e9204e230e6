import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import SourceLimits
import STUNLite
import TURNLite
import Traversal

/// The whole cloud in one start/stop object: TLS signalling (``RendezvousServer``), STUN
/// (`STUNLite/STUNServer`, with RFC 5780 behaviour discovery when given an alternate IP) and,
/// unless disabled, a TURN relay (`TURNLite/TURNServer`) whose per-introduction credentials the
/// signalling hands both sides (``RelayGrantIssuer``). TURN over TLS shares the signalling's TLS port
/// by default (chosen by ALPN), so one port — 443 where a network demands it — carries everything.
public final class CloudService: Sendable {
    /// How the cloud runs its relay.
    public struct RelayConfiguration: Sendable {
        /// Default relay port, UDP and TCP: next to STUN's 3478, which the cloud already holds.
        public static let defaultPort: UInt16 = 3479
        /// The usual port for a dedicated relay TLS port (``tlsPort``): next to the signalling's 5349.
        public static let defaultTLSPort: UInt16 = 5350

        /// IP address the relay listens and allocates on; `nil`: the cloud's listen IP.
        public var listenIP: String?
        /// More IP addresses the relay listens on, same ports: the other family's, for dual stack.
        public var additionalListenIPs: [IPAddress]
        /// Where relayed addresses are allocated, at most one per family; families not named use the
        /// listen IPs (`TURNLite/TURNServer/Configuration/relayIPs(listening:overrides:)`). Clients that
        /// ask for no family get IPv4 (RFC 8656 §7.1), so a relay listening on IPv6 alone wants an IPv4 one.
        public var relayIPs: [IPAddress]
        /// UDP and TCP port of the relay (0 picks a free one).
        public var port: UInt16
        /// Whether TURN over TLS is served on the signalling's TLS port, to clients negotiating ALPN
        /// `stun.turn` (RFC 7443 §2); grants then name that port first.
        public var sharesSignallingPort: Bool
        /// A dedicated TLS port of the relay as well, with the cloud's certificate (0 picks a free one; `nil`: none).
        public var tlsPort: UInt16?
        /// Peers allowed although in special ranges (loopback, private, documentation: labs and tests).
        public var allowedPeers: [IPPrefix]
        /// How long each grant is valid.
        public var grantLifetime: Duration
        /// At a graceful shutdown the relay refuses new allocations and keeps relaying existing ones for at most this long.
        public var drainGracePeriod: Duration = .seconds(30)
        /// Relay shards, each on its own event loop of the cloud's group (the relay's `Configuration.shards`).
        public var shards: Int = 1
        /// TCP keepalive on the relay's client connections (the relay's `Configuration.streamKeepalive`; nil: none).
        public var streamKeepalive: TURNStreamKeepalive? = .standard

        /// A relay on port 3479 (UDP/TCP) and on the signalling's TLS port, no dedicated TLS port, special
        /// ranges refused, grants valid for an hour.
        public init(listenIP: String? = nil, additionalListenIPs: [IPAddress] = [], relayIPs: [IPAddress] = [],
                    port: UInt16 = Self.defaultPort, sharesSignallingPort: Bool = true,
                    tlsPort: UInt16? = nil, allowedPeers: [IPPrefix] = [],
                    grantLifetime: Duration = RelayGrantIssuer.defaultLifetime) {
            self.listenIP = listenIP
            self.additionalListenIPs = additionalListenIPs
            self.relayIPs = relayIPs
            self.port = port
            self.sharesSignallingPort = sharesSignallingPort
            self.tlsPort = tlsPort
            self.allowedPeers = allowedPeers
            self.grantLifetime = grantLifetime
        }
    }

    /// How to run the cloud.
    public struct Configuration: Sendable {
        /// IP address to listen on.
        public var listenIP: String
        /// Second IP address for RFC 5780 behaviour discovery.
        public var alternateIP: String?
        /// Directory for the generated CA and server certificate.
        public var dataDirectory: String
        /// STUN port (UDP and TCP; 0 picks a free one).
        public var stunPort: UInt16
        /// Signalling TLS port (0 picks a free one).
        public var tlsPort: UInt16
        /// A certificate to use instead of the generated one (with ``tlsKeyPath``).
        public var tlsCertificatePath: String?
        /// The key of ``tlsCertificatePath``.
        public var tlsKeyPath: String?
        /// Extra names (DNS) the cloud answers to, besides the listen IPs and `localhost`.
        public var extraNames: [String]
        /// The relay; `nil` runs none (introductions then carry no relay grant).
        public var relay: RelayConfiguration?
        /// Introductions (look-ups) per source (IPv4 address or IPv6 /64): burst and refill (see ``RendezvousServer/Configuration``).
        public var lookupRateLimit = RendezvousServer.Configuration.defaultLookupRateLimit

        /// A configuration with ports 3478 (STUN) and 5349 (TLS); no relay unless `relay` is given
        /// (`trav cloud` runs one on 3479, its TLS on the signalling port, by default).
        public init(
            listenIP: String, alternateIP: String? = nil, dataDirectory: String, stunPort: UInt16 = 3478,
            tlsPort: UInt16 = CloudEndpoint.defaultPort, tlsCertificatePath: String? = nil, tlsKeyPath: String? = nil,
            extraNames: [String] = [], relay: RelayConfiguration? = nil
        ) {
            self.relay = relay
            self.listenIP = listenIP
            self.alternateIP = alternateIP
            self.dataDirectory = dataDirectory
            self.stunPort = stunPort
            self.tlsPort = tlsPort
            self.tlsCertificatePath = tlsCertificatePath
            self.tlsKeyPath = tlsKeyPath
            self.extraNames = extraNames
        }

        /// The names the cloud answers to: listen IPs, `localhost`, extra names.
        public var names: [String] {
            [listenIP] + (alternateIP.map { [$0] } ?? []) + ["localhost"] + extraNames
        }
    }

    /// The signalling server.
    public let rendezvous: RendezvousServer
    /// The STUN server.
    public let stun: STUNServer
    /// The relay, if configured.
    public let relay: TURNServer?
    /// The CA clients pin (`DIR/ca.pem`), or nil when a certificate was supplied.
    public let caPath: String?
    /// The device store the cloud opened itself (closed at ``stop()``), if any.
    private let ownedStore: (any DeviceStore)?
    /// What signs and renews relay grants, with the secret shared by every node on the same store: the signalling
    /// server's, whose URLs name its shared TLS port first when the relay serves TURN over TLS there.
    var relayGrants: RelayGrantIssuer? { rendezvous.relayGrants }
    /// The TLS certificate and key files (generated or given), for the viewer page's port.
    let tlsFiles: (certificate: String, key: String)
    /// The names the cloud answers to.
    let names: [String]

    private init(rendezvous: RendezvousServer, stun: STUNServer, relay: TURNServer?, caPath: String?, ownedStore: (any DeviceStore)?,
                 tlsFiles: (certificate: String, key: String), names: [String]) {
        self.tlsFiles = tlsFiles
        self.names = names
        self.rendezvous = rendezvous
        self.stun = stun
        self.relay = relay
        self.caPath = caPath
        self.ownedStore = ownedStore
    }

    /// Sets up certificates and starts STUN and signalling; on failure nothing is left running.
    /// Verified key ↔ UID bindings go to `store`, by default an SQLite file in the data directory
    /// (``SQLiteDeviceStore/fileName``), so a restart costs no scrypt per camera.
    public static func start(
        _ configuration: Configuration, registry: any DeviceRegistry = InMemoryDeviceRegistry(),
        store: (any DeviceStore)? = nil,
        tuning: (inout RendezvousServer.Configuration) -> Void = { _ in },
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger = Logger(label: "trav.cloud")
    ) async throws -> CloudService {
        guard let listenIP = IPAddress(configuration.listenIP) else {
            throw CertificateSetupError(code: .invalidName, detail: "\(configuration.listenIP) is not an IP address")
        }
        let alternateIP = try configuration.alternateIP.map { text in
            guard let ip = IPAddress(text) else {
                throw CertificateSetupError(code: .invalidName, detail: "\(text) is not an IP address")
            }
            return ip
        }
        let certificatePath: String
        let keyPath: String
        var caPath: String?
        if let certificate = configuration.tlsCertificatePath, let key = configuration.tlsKeyPath {
            (certificatePath, keyPath) = (certificate, key)
        } else {
            let files = try CloudCertificates.loadOrCreate(in: configuration.dataDirectory, names: configuration.names)
            (certificatePath, keyPath, caPath) = (files.certificatePath, files.privateKeyPath, files.caPath)
        }
        var rendezvousConfiguration = RendezvousServer.Configuration(
            listenIP: configuration.listenIP, port: configuration.tlsPort, certificatePath: certificatePath,
            privateKeyPath: keyPath, cloudNames: configuration.names, lookupRateLimit: configuration.lookupRateLimit)
        if store == nil { try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true) }
        let ownedStore: (any DeviceStore)? = store == nil
            ? try await SQLiteDeviceStore.open(path: configuration.dataDirectory + "/" + SQLiteDeviceStore.fileName, logger: logger)
            : nil
        let stun: STUNServer
        do {
            stun = try await STUNServer.start(
                .init(listenIP: listenIP, port: configuration.stunPort, alternateIP: alternateIP), group: group, logger: logger)
        } catch {
            await ownedStore?.close()
            throw error
        }
        var relay: TURNServer?
        do {
            if let relayConfiguration = configuration.relay {
                guard let relayIP = IPAddress(relayConfiguration.listenIP ?? configuration.listenIP) else {
                    throw CertificateSetupError(code: .invalidName, detail: "\(relayConfiguration.listenIP ?? "") is not an IP address")
                }
                let fresh = RelayGrantIssuer.randomSecret()
                let secret = try await (store ?? ownedStore)?.secret(.relayGrants, proposing: fresh) ?? fresh
                let (server, issuer) = try await startRelay(relayConfiguration, secret: secret, listenIP: relayIP,
                                                            certificatePath: certificatePath, keyPath: keyPath, group: group, logger: logger)
                relay = server
                rendezvousConfiguration.relayGrants = issuer
                if relayConfiguration.sharesSignallingPort { rendezvousConfiguration.sharedRelay = server }
            }
            tuning(&rendezvousConfiguration)
            let rendezvous = try await RendezvousServer.start(
                rendezvousConfiguration, registry: registry, store: store ?? ownedStore ?? InMemoryDeviceStore(), group: group, logger: logger)
            return CloudService(rendezvous: rendezvous, stun: stun, relay: relay, caPath: caPath, ownedStore: ownedStore,
                                tlsFiles: (certificatePath, keyPath),
                                names: configuration.names)
        } catch {
            await relay?.shutdown()
            await stun.shutdown()
            await ownedStore?.close()
            throw error
        }
    }

    /// Starts the TURN relay with the REST secret `secret` and the cloud's certificate; returns it and its grant issuer.
    private static func startRelay(
        _ configuration: RelayConfiguration, secret: String, listenIP: IPAddress, certificatePath: String, keyPath: String,
        group: any EventLoopGroup, logger: Logger
    ) async throws -> (TURNServer, RelayGrantIssuer) {
        var tls: (port: UInt16, context: NIOSSLContext)?
        if let port = configuration.tlsPort {
            let tlsConfiguration = try TURNTLS.serverConfiguration(certificatePEMFile: certificatePath, privateKeyPEMFile: keyPath)
            tls = (port, try NIOSSLContext(configuration: tlsConfiguration))
        }
        let settings = TURNServerConfiguration(
            credentials: TURNCredentials(realm: "trav", restSecret: secret),
            peerPolicy: TURNPeerPolicy(allowed: configuration.allowedPeers))
        let listenIPs = [listenIP] + configuration.additionalListenIPs
        var serverConfiguration = TURNServer.Configuration(
            listenIP: listenIP, additionalListenIPs: configuration.additionalListenIPs, port: configuration.port, tls: tls,
            relayIPs: TURNServer.Configuration.relayIPs(listening: listenIPs, overrides: configuration.relayIPs), server: settings)
        serverConfiguration.drainGracePeriod = configuration.drainGracePeriod
        serverConfiguration.shards = configuration.shards
        serverConfiguration.streamKeepalive = configuration.streamKeepalive
        let server = try await TURNServer.start(serverConfiguration, group: group, logger: logger)
        var urls = ["turn:\(server.udpAddress)?transport=udp"]
        if let tcp = server.tcpAddress { urls.append("turn:\(tcp)?transport=tcp") }
        if let t = server.tlsAddress { urls.append("turns:\(t)") }
        return (server, RelayGrantIssuer(secret: secret, urls: urls, lifetime: configuration.grantLifetime))
    }

    /// Stops signalling, the relay and STUN at once (no drain); returns when every socket is closed.
    public func stop() async {
        await rendezvous.stop()
        await relay?.shutdown()
        await stun.shutdown()
        await stun.waitUntilClosed()
        await ownedStore?.close()
    }

    /// What a browser page is told to use for introduction `requestID`: the cloud's STUN, and its relay
    /// over UDP, TCP and TLS with this request's REST credentials (the grant the camera gets for it too).
    public func browserIceServers(requestID: String) -> [BrowserSignallingStateMachine.IceServer] {
        let stunURLs = stun.udpAddresses[.primary].map { ["stun:\($0)"] } ?? []
        var servers = stunURLs.isEmpty ? [] : [BrowserSignallingStateMachine.IceServer(urls: stunURLs)]
        if let grant = relayGrants?.grant(label: requestID) {
            servers.append(.init(urls: grant.urls, username: grant.username, credential: grant.password))
        }
        return servers
    }

    /// Starts the viewer page (``BrowserViewerServer``) on `port` of the cloud's listen IP, with its certificate.
    public func startBrowserViewer(listenIP: String, port: UInt16, assets: BrowserViewerServer.Assets,
                                   limits: BrowserViewerServer.Limits = .init(), logger: Logger) async throws -> BrowserViewerServer {
        try await BrowserViewerServer.start(
            listenIP: listenIP, port: port, certificatePath: tlsFiles.certificate, keyPath: tlsFiles.key, names: names,
            assets: assets, rendezvous: rendezvous, iceServers: { [self] in browserIceServers(requestID: $0) }, limits: limits, logger: logger)
    }

    /// Serves the viewer page (``BrowserViewerServer``) on the signalling's TLS port, to browsers negotiating ALPN
    /// `http/1.1`; the cloud must have been started with `servesViewerPage` set in its tuning.
    public func serveBrowserViewerOnSignallingPort(assets: BrowserViewerServer.Assets, limits: BrowserViewerServer.Limits = .init(),
                                                   logger: Logger) -> BrowserViewerServer {
        BrowserViewerServer.onSignallingPort(of: rendezvous, names: names, assets: assets,
                                             iceServers: { [self] in browserIceServers(requestID: $0) }, limits: limits, logger: logger)
    }

    /// Closes the device store the cloud opened itself, after its ``services`` have run to their end.
    public func closeStore() async {
        await ownedStore?.close()
    }
}
