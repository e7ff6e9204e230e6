import NIOSSL

/// TLS settings for TURN over TLS (RFC 8656 §3.1, §5: port 5349).
public enum TURNTLS {
    /// The ALPN protocol ID of TURN (RFC 7443 §2): our client offers it, and a TLS port shared with other
    /// protocols hands connections that negotiate it to the TURN server.
    public static let alpnProtocol = "stun.turn"

    /// A server configuration from PEM files: a certificate chain and its private key; advertises ``alpnProtocol``.
    public static func serverConfiguration(certificatePEMFile: String, privateKeyPEMFile: String) throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMFile(certificatePEMFile).map { NIOSSLCertificateSource.certificate($0) }
        return serverConfiguration(chain: chain, key: try NIOSSLPrivateKey(file: privateKeyPEMFile, format: .pem))
    }

    /// A server configuration from PEM text: a certificate chain and its private key; advertises ``alpnProtocol``.
    public static func serverConfiguration(certificatePEM: String, privateKeyPEM: String) throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8)).map { NIOSSLCertificateSource.certificate($0) }
        return serverConfiguration(chain: chain, key: try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem))
    }

    private static func serverConfiguration(chain: [NIOSSLCertificateSource], key: NIOSSLPrivateKey) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        // A client offering other protocols only still gets TURN here: NIOSSL does not refuse them (RFC 7301 §3.2 allows either).
        configuration.applicationProtocols = [alpnProtocol]
        return configuration
    }

    /// `configuration` offering ``alpnProtocol`` (RFC 7443 §2), unless it already offers protocols of its own.
    public static func clientConfiguration(_ configuration: TLSConfiguration) -> TLSConfiguration {
        var configuration = configuration
        if configuration.applicationProtocols.isEmpty { configuration.applicationProtocols = [alpnProtocol] }
        return configuration
    }
}
