import NIOSSL
import STUNLite
import TURNLite

/// How a flood's clients reach the TURN server (RFC 8656 §3.1).
public enum FloodTransport: String, Sendable, CaseIterable {
    /// UDP (RFC 8656 §3.1).
    case udp
    /// TCP (RFC 8656 §3.1).
    case tcp
    /// TLS over TCP; the server's certificate is not checked (loopback benchmark).
    case tls

    /// Retransmission of the floods' ``TURNClient``s: RFC 8489's schedule from a 200 ms RTO, a request
    /// failing after 2.2 s (3 s over TCP/TLS), so a dropped request costs its cycle, not the run.
    public static let retransmission = STUNRetransmissionPolicy.quick

    /// True for TCP and TLS: one byte stream per client, ChannelData padded to 4 bytes (RFC 8656 §12.5).
    public var isStream: Bool { self != .udp }

    /// A ``TURNClient`` configuration for `server` over this transport: the one way the floods connect
    /// over UDP, TCP or TLS.
    func clientConfiguration(server: TransportAddress, username: String, password: String) -> TURNClient.Configuration {
        let transport: TURNClient.Transport
        switch self {
        case .udp: transport = .udp
        case .tcp: transport = .tcp
        case .tls:
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .none
            transport = .tls(tls, serverHostname: nil)
        }
        return TURNClient.Configuration(server: server, transport: transport, username: username, password: password,
                                        retransmission: Self.retransmission)
    }
}
