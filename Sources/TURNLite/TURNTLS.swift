import Foundation
#if canImport(Glibc)
import Glibc
#endif
import NIOSSL
import STUNLite

/// TLS settings for TURN over TLS (RFC 8656 §3.1, §5: port 5349).
public enum TURNTLS {
    /// How long `openssl` may take to make a certificate.
    public static let generationTimeout: TimeInterval = 20

    /// A server configuration with a fresh self-signed P-256 certificate naming `ipAddresses`, valid one year.
    ///
    /// Made with the system's `openssl` tool for now (a stand-in until certificates come from a real CA);
    /// clients must trust it explicitly or skip verification.
    public static func selfSignedServerConfiguration(commonName: String = "trav-relay",
                                                     ipAddresses: [IPAddress]) throws -> TLSConfiguration {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("trav-tls-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(at: dir) }
        let cert = dir.appendingPathComponent("cert.pem").path
        let key = dir.appendingPathComponent("key.pem").path
        let san = (ipAddresses.map { "IP:\($0)" } + ["DNS:\(commonName)"]).joined(separator: ",")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                       "-keyout", key, "-out", cert, "-days", "365", "-subj", "/CN=\(commonName)", "-addext", "subjectAltName=\(san)"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { throw TURNError(.socket, detail: "cannot run openssl: \(error)") }
        let deadline = Date().addingTimeInterval(generationTimeout)
        while p.isRunning, Date() < deadline { usleep(10_000) }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        guard p.terminationStatus == 0 else { throw TURNError(.socket, detail: "openssl failed (\(p.terminationStatus))") }
        return try serverConfiguration(certificatePEMFile: cert, privateKeyPEMFile: key)
    }

    /// A server configuration from PEM files: a certificate chain and its private key.
    public static func serverConfiguration(certificatePEMFile: String, privateKeyPEMFile: String) throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMFile(certificatePEMFile).map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(file: privateKeyPEMFile, format: .pem)
        return TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
    }
}
