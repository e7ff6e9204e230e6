import ArgumentParser
import Foundation
import Rendezvous
import STUNLite

extension Trav {
    /// `trav cloud`: STUN and TLS signalling in the foreground until SIGINT/SIGTERM.
    struct CloudCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cloud",
            abstract: "Run the cloud: STUN (RFC 5780 with --alternate-ip) and TLS signalling for cameras and viewers.")

        @Option(help: "IP address to listen on.") var listen: String
        @Option(help: "Second IP address for RFC 5780 behaviour discovery.") var alternateIP: String?
        @Option(help: "Directory for the generated CA and server certificate.") var data: String = "./trav-cloud"
        @Option(help: "STUN port (UDP and TCP).") var stunPort: UInt16 = 3478
        @Option(help: "TLS signalling port.") var tlsPort: UInt16 = 5349
        @Option(help: "Server certificate (PEM) instead of the generated one.") var tlsCert: String?
        @Option(help: "Private key (PEM) of --tls-cert.") var tlsKey: String?
        @Option(help: "Extra DNS name cameras may dial (repeatable).") var name: [String] = []
        @OptionGroup var common: CommonOptions

        func validate() throws {
            guard IPAddress(listen) != nil else { throw ValidationError("--listen must be an IP address") }
            if let a = alternateIP, IPAddress(a) == nil { throw ValidationError("--alternate-ip must be an IP address") }
            guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        }

        func run() async throws {
            let logger = common.logger("trav.cloud")
            let cloud = try await CloudService.start(
                .init(listenIP: listen, alternateIP: alternateIP, dataDirectory: data, stunPort: stunPort, tlsPort: tlsPort,
                      tlsCertificatePath: tlsCert, tlsKeyPath: tlsKey, extraNames: name),
                logger: logger)
            let udp = STUNSocketRole.all.compactMap { cloud.stun.udpAddresses[$0]?.description }.joined(separator: " ")
            say("cloud stun udp \(udp) tcp \(cloud.stun.tcpAddresses.map(\.description).joined(separator: " "))")
            say("cloud signalling tls \(cloud.rendezvous.address)")
            if let ca = cloud.caPath { say("cloud ca \(ca)") }
            await waitForTermination()
            await cloud.stop()
        }
    }
}
