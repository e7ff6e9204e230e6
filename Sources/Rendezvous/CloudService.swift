import Foundation
import Logging
import NIOCore
import NIOPosix
import STUNLite
import Traversal

/// The whole cloud in one start/stop object: TLS signalling (``RendezvousServer``) and STUN
/// (``STUNLite/STUNServer``, with RFC 5780 behaviour discovery when given an alternate IP).
public final class CloudService: Sendable {
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

        /// A configuration with ports 3478 (STUN) and 5349 (TLS).
        public init(
            listenIP: String, alternateIP: String? = nil, dataDirectory: String, stunPort: UInt16 = 3478,
            tlsPort: UInt16 = CloudEndpoint.defaultPort, tlsCertificatePath: String? = nil, tlsKeyPath: String? = nil,
            extraNames: [String] = []
        ) {
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
    /// The CA clients pin (`DIR/ca.pem`), or nil when a certificate was supplied.
    public let caPath: String?

    private init(rendezvous: RendezvousServer, stun: STUNServer, caPath: String?) {
        self.rendezvous = rendezvous
        self.stun = stun
        self.caPath = caPath
    }

    /// Sets up certificates and starts STUN and signalling; on failure nothing is left running.
    public static func start(
        _ configuration: Configuration, registry: any DeviceRegistry = InMemoryDeviceRegistry(),
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
            privateKeyPath: keyPath, cloudNames: configuration.names)
        tuning(&rendezvousConfiguration)
        let stun = try await STUNServer.start(
            .init(listenIP: listenIP, port: configuration.stunPort, alternateIP: alternateIP), group: group, logger: logger)
        do {
            let rendezvous = try await RendezvousServer.start(
                rendezvousConfiguration, registry: registry, group: group, logger: logger)
            return CloudService(rendezvous: rendezvous, stun: stun, caPath: caPath)
        } catch {
            await stun.shutdown()
            throw error
        }
    }

    /// Stops signalling and STUN; returns when every socket is closed.
    public func stop() async {
        await rendezvous.stop()
        await stun.shutdown()
        await stun.waitUntilClosed()
    }
}
