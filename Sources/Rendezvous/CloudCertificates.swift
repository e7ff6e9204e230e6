import Crypto
import Foundation
import NIOCore
import SwiftASN1
import Traversal
import X509

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The cloud's own small PKI: a P-256 CA and a server certificate it issues, kept in a data directory.
///
/// Files: `ca.pem` (clients pin this), `ca-key.pem` (0600), `server.pem`, `server-key.pem` (0600).
/// Made on first start, reused afterwards; a server certificate that no longer names every
/// listen address is reissued by the same CA, so clients keep trusting `ca.pem`.
public struct CloudCertificates: Sendable, Hashable {
    /// How long a new CA certificate is valid.
    public static let caValidity: TimeInterval = 10 * 365 * 24 * 3600
    /// How long a new server certificate is valid.
    public static let serverValidity: TimeInterval = 2 * 365 * 24 * 3600
    /// Backdating of `notValidBefore`, for clients whose clocks lag.
    public static let clockSkewAllowance: TimeInterval = 3600

    /// The CA certificate clients trust.
    public let caPath: String
    /// The server certificate.
    public let certificatePath: String
    /// The server certificate's private key.
    public let privateKeyPath: String

    /// Loads the certificates in `directory`, creating (or reissuing) what is missing so the server
    /// certificate names every entry of `names` (IP addresses or DNS names).
    public static func loadOrCreate(in directory: String, names: [String]) throws -> CloudCertificates {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let files = CloudCertificates(
            caPath: directory + "/ca.pem", certificatePath: directory + "/server.pem",
            privateKeyPath: directory + "/server-key.pem")
        let caKeyPath = directory + "/ca-key.pem"
        let fileManager = FileManager.default
        let caKey: P256.Signing.PrivateKey
        let ca: Certificate
        if fileManager.fileExists(atPath: files.caPath) {
            caKey = try P256.Signing.PrivateKey(pemRepresentation: try String(contentsOfFile: caKeyPath, encoding: .utf8))
            ca = try Certificate(pemEncoded: try String(contentsOfFile: files.caPath, encoding: .utf8))
        } else {
            caKey = P256.Signing.PrivateKey()
            ca = try makeCA(key: caKey)
            try write(caKey.pemRepresentation, to: caKeyPath, mode: 0o600)
            try write(try ca.serializeAsPEM().pemString, to: files.caPath, mode: 0o644)
        }
        if let existing = try? Certificate(pemEncoded: try String(contentsOfFile: files.certificatePath, encoding: .utf8)),
            fileManager.fileExists(atPath: files.privateKeyPath),
            existing.issuer == ca.subject, existing.notValidAfter > Date(),
            Set(try subjectAlternativeNames(of: existing)) == Set(try generalNames(for: names))
        {
            return files
        }
        let serverKey = P256.Signing.PrivateKey()
        let server = try makeServerCertificate(names: names, key: serverKey, ca: ca, caKey: caKey)
        try? fileManager.removeItem(atPath: files.privateKeyPath)
        try? fileManager.removeItem(atPath: files.certificatePath)
        try write(serverKey.pemRepresentation, to: files.privateKeyPath, mode: 0o600)
        try write(try server.serializeAsPEM().pemString, to: files.certificatePath, mode: 0o644)
        return files
    }

    /// A fresh CA and a server certificate it issues naming `names`, in memory only, for a server that
    /// keeps no files (`trav relay` without `--tls-cert`): the chain (server, then CA) and the server key, PEM.
    public static func ephemeral(names: [String]) throws -> (certificateChainPEM: String, privateKeyPEM: String) {
        let caKey = P256.Signing.PrivateKey()
        let ca = try makeCA(key: caKey)
        let serverKey = P256.Signing.PrivateKey()
        let server = try makeServerCertificate(names: names, key: serverKey, ca: ca, caKey: caKey)
        return (try server.serializeAsPEM().pemString + "\n" + ca.serializeAsPEM().pemString, serverKey.pemRepresentation)
    }

    static func makeCA(key: P256.Signing.PrivateKey) throws -> Certificate {
        let name = try DistinguishedName { CommonName("trav cloud CA") }
        let now = Date()
        return try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now - clockSkewAllowance, notValidAfter: now + caValidity,
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(key))
    }

    static func makeServerCertificate(
        names: [String], key: P256.Signing.PrivateKey, ca: Certificate, caKey: P256.Signing.PrivateKey
    ) throws -> Certificate {
        let now = Date()
        return try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now - clockSkewAllowance, notValidAfter: now + serverValidity,
            issuer: ca.subject, subject: try DistinguishedName { CommonName("trav cloud") },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(try generalNames(for: names))
            },
            issuerPrivateKey: .init(caKey))
    }

    /// Each name as an IP-address or DNS subject alternative name.
    static func generalNames(for names: [String]) throws -> [GeneralName] {
        try names.map { name in
            if let address = try? SocketAddress(ipAddress: name, port: 0) {
                switch address {
                case .v4(let v4):
                    return .ipAddress(ASN1OctetString(contentBytes: ArraySlice(withUnsafeBytes(of: v4.address.sin_addr) { Array($0) })))
                case .v6(let v6):
                    return .ipAddress(ASN1OctetString(contentBytes: ArraySlice(withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) })))
                default:
                    throw CertificateSetupError(code: .invalidName, detail: "\(name) is not a usable address")
                }
            }
            return .dnsName(name)
        }
    }

    static func subjectAlternativeNames(of certificate: Certificate) throws -> [GeneralName] {
        guard let names = try certificate.extensions.subjectAlternativeNames else { return [] }
        return Array(names)
    }

    /// Writes a new file with `mode` (created exclusively, so a key is never readable by others even briefly).
    static func write(_ text: String, to path: String, mode: mode_t) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard descriptor >= 0 else {
            throw CertificateSetupError(code: .io, detail: "create \(path): \(String(cString: strerror(errno)))")
        }
        let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        do {
            try handle.write(contentsOf: Data(text.utf8))
            try handle.synchronize()
        } catch {
            throw CertificateSetupError(code: .io, detail: "write \(path): \(error)")
        }
    }
}

/// Why the cloud's certificates could not be set up.
public struct CertificateSetupError: CodedError, Hashable {
    /// A stable reason code.
    public struct Code: ErrorCode {
        /// The code's stable name.
        public let name: String
        /// A name cannot go into a certificate.
        public static let invalidName = Code(name: "invalid-name")
        /// Reading or writing a file failed.
        public static let io = Code(name: "io")
    }

    /// What went wrong.
    public let code: Code
    /// Which file or name, and why.
    public let detail: String
}
