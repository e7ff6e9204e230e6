import COpenSSL
import Crypto
import Foundation
import SwiftASN1
import X509

/// Why a DTLS endpoint failed.
public struct DTLSError: Error, Hashable, CustomStringConvertible {
    /// What kind of failure.
    public enum Code: String, Sendable, Hashable {
        /// OpenSSL could not be set up (context, certificate, key).
        case setup
        /// The handshake failed (alert, protocol error).
        case handshake
        /// The peer's certificate is not the one its session description named (RFC 8122 §5).
        case fingerprintMismatch = "fingerprint-mismatch"
        /// Sending before the handshake completed, or after the connection closed.
        case notConnected = "not-connected"
        /// A datagram or message larger than the endpoint takes.
        case tooLarge = "too-large"
    }

    /// The code.
    public var code: Code
    /// Details, with OpenSSL's error queue where it has one.
    public var detail: String

    /// An error with a code and detail.
    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    /// `code: detail`.
    public var description: String { "\(code.rawValue): \(detail)" }

    /// `detail` followed by OpenSSL's queued errors, which are cleared.
    static func openSSL(_ code: Code, _ detail: String) -> DTLSError {
        var reasons: [String] = []
        while case let e = ERR_get_error(), e != 0, reasons.count < 8 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(e, &buffer, buffer.count)
            reasons.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return DTLSError(code, reasons.isEmpty ? detail : detail + ": " + reasons.joined(separator: "; "))
    }
}

/// A self-signed ECDSA P-256 certificate for DTLS in WebRTC (RFC 8827 §6.5: the certificate is
/// authenticated by its fingerprint in the session description, not by a CA).
public struct DTLSCertificate: Sendable {
    /// How long a generated certificate is valid.
    public static let validity: TimeInterval = 30 * 24 * 3600
    /// The certificate, PEM.
    public let certificatePEM: String
    /// Its private key, PEM (PKCS #8).
    public let privateKeyPEM: String
    /// SHA-256 of the certificate's DER encoding (`a=fingerprint:sha-256`).
    public let fingerprint: [UInt8]

    /// A fresh key and certificate.
    public static func generate() throws -> DTLSCertificate {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName("trav") }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now - 3600, notValidAfter: now + validity, issuer: name, subject: name,
            signatureAlgorithm: .ecdsaWithSHA256, extensions: Certificate.Extensions(), issuerPrivateKey: .init(key))
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return DTLSCertificate(certificatePEM: try certificate.serializeAsPEM().pemString, privateKeyPEM: key.pemRepresentation,
                               fingerprint: Array(SHA256.hash(data: serializer.serializedBytes)))
    }
}

/// One side of a DTLS 1.2 association (RFC 6347) over datagrams the caller carries, sans I/O: it
/// takes the peer's datagrams and returns the datagrams to send and the application data received.
/// Both sides present self-signed certificates; the peer's is accepted only if its SHA-256 is the
/// fingerprint its session description named (RFC 8122 §5, RFC 8827 §6.5).
///
/// One task at a time: the endpoint owns OpenSSL state and is not `Sendable`.
public final class DTLSEndpoint {
    /// Who sends the ClientHello (`a=setup:active` is the client, RFC 8842 §3).
    public enum Role: Sendable, Hashable {
        /// Starts the handshake.
        case client
        /// Waits for it.
        case server
    }

    /// The largest datagram accepted from the peer.
    public static let maxDatagram = 65535
    /// The path MTU given to OpenSSL when none is: DTLS records (handshake fragments too) stay below it.
    public static let defaultMTU = 1200

    /// What one step produced.
    public struct Output: Sendable {
        /// Datagrams to send to the peer, in order.
        public var datagrams: [[UInt8]] = []
        /// Application data received, in order.
        public var data: [[UInt8]] = []
    }

    /// This side's role.
    public let role: Role
    private let expectedFingerprint: [UInt8]
    private let context: OpaquePointer
    private let ssl: OpaquePointer
    private let method: OpaquePointer
    private let inbound: OpaquePointer
    private let outbound: OpaquePointer
    /// Whether the handshake completed and the peer's fingerprint matched.
    public private(set) var isConnected = false
    /// Whether the peer closed (close_notify) or a fatal error ended the association.
    public private(set) var isClosed = false

    /// An endpoint presenting `certificate`, accepting only a peer whose certificate hashes to `peerFingerprint`.
    public init(role: Role, certificate: DTLSCertificate, peerFingerprint: [UInt8], mtu: Int = defaultMTU) throws {
        self.role = role
        self.expectedFingerprint = peerFingerprint
        guard let context = SSL_CTX_new(DTLS_method()) else { throw DTLSError.openSSL(.setup, "SSL_CTX_new") }
        self.context = context
        // DTLS 1.2 only (WebRTC, RFC 8827 §6.5); ECDHE with AES-GCM, as browsers offer.
        _ = trav_ssl_ctx_dtls12_only(context)
        _ = SSL_CTX_set_cipher_list(context, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305")
        trav_ssl_ctx_require_peer_certificate(context)
        guard let method = trav_datagram_queue_method() else {
            SSL_CTX_free(context)
            throw DTLSError.openSSL(.setup, "BIO_meth_new")
        }
        self.method = method
        guard Self.load(certificate, into: context) else {
            BIO_meth_free(method)
            SSL_CTX_free(context)
            throw DTLSError.openSSL(.setup, "certificate or key not usable")
        }
        guard let ssl = SSL_new(context), let inbound = trav_bio_new_datagram_mem(), let outbound = BIO_new(method) else {
            BIO_meth_free(method)
            SSL_CTX_free(context)
            throw DTLSError.openSSL(.setup, "SSL_new")
        }
        self.ssl = ssl
        self.inbound = inbound
        self.outbound = outbound
        SSL_set_bio(ssl, inbound, outbound)  // the SSL owns both BIOs from here
        trav_dtls_set_mtu(ssl, mtu)
        if role == .client { SSL_set_connect_state(ssl) } else { SSL_set_accept_state(ssl) }
    }

    deinit {
        SSL_free(ssl)
        SSL_CTX_free(context)
        BIO_meth_free(method)
    }

    private static func load(_ certificate: DTLSCertificate, into context: OpaquePointer) -> Bool {
        let certText = Array(certificate.certificatePEM.utf8)
        let keyText = Array(certificate.privateKeyPEM.utf8)
        return certText.withUnsafeBytes { certBytes in
            keyText.withUnsafeBytes { keyBytes in
                guard let certBIO = BIO_new_mem_buf(certBytes.baseAddress, Int32(certBytes.count)),
                      let keyBIO = BIO_new_mem_buf(keyBytes.baseAddress, Int32(keyBytes.count)) else { return false }
                defer {
                    BIO_free(certBIO)
                    BIO_free(keyBIO)
                }
                guard let x509 = PEM_read_bio_X509(certBIO, nil, nil, nil) else { return false }
                defer { X509_free(x509) }
                guard let key = PEM_read_bio_PrivateKey(keyBIO, nil, nil, nil) else { return false }
                defer { EVP_PKEY_free(key) }
                return SSL_CTX_use_certificate(context, x509) == 1 && SSL_CTX_use_PrivateKey(context, key) == 1
                    && SSL_CTX_check_private_key(context) == 1
            }
        }
    }

    /// Starts the handshake: the client's first flight (nothing for a server).
    public func start() throws -> Output {
        try step()
    }

    /// Takes one datagram from the peer.
    public func receive(_ datagram: [UInt8]) throws -> Output {
        guard !isClosed else { throw DTLSError(.notConnected, "closed") }
        guard datagram.count <= Self.maxDatagram else { throw DTLSError(.tooLarge, "\(datagram.count) bytes") }
        let written = datagram.withUnsafeBytes { BIO_write(inbound, $0.baseAddress, Int32($0.count)) }
        guard written == datagram.count else { throw DTLSError.openSSL(.setup, "BIO_write") }
        return try step()
    }

    /// Seals `data` as one application record.
    public func send(_ data: [UInt8]) throws -> Output {
        guard isConnected, !isClosed else { throw DTLSError(.notConnected, "handshake not complete") }
        let n = data.withUnsafeBytes { SSL_write(ssl, $0.baseAddress, Int32($0.count)) }
        guard n == data.count else { throw DTLSError.openSSL(.tooLarge, "SSL_write of \(data.count) bytes") }
        return Output(datagrams: drain())
    }

    /// When the handshake's retransmission timer fires, if it runs (RFC 6347 §4.2.4).
    public var retransmissionDelay: Duration? {
        var seconds = 0
        var microseconds = 0
        guard trav_dtls_get_timeout(ssl, &seconds, &microseconds) == 1 else { return nil }
        return .seconds(seconds) + .microseconds(microseconds)
    }

    /// Retransmits the current flight if its timer has expired.
    public func handleTimeout() -> Output {
        _ = trav_dtls_handle_timeout(ssl)
        return Output(datagrams: drain())
    }

    /// Sends close_notify.
    public func close() -> Output {
        guard !isClosed else { return Output() }
        isClosed = true
        _ = SSL_shutdown(ssl)
        return Output(datagrams: drain())
    }

    /// Runs the handshake or reads application data as far as the input allows.
    private func step() throws -> Output {
        var output = Output()
        if !isConnected {
            let r = SSL_do_handshake(ssl)
            if r == 1 {
                try checkFingerprint()
                isConnected = true
            } else {
                let error = SSL_get_error(ssl, r)
                guard error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE else {
                    isClosed = true
                    output.datagrams = drain()
                    throw DTLSError.openSSL(.handshake, "SSL_do_handshake (\(error))")
                }
            }
        }
        if isConnected {
            var buffer = [UInt8](repeating: 0, count: Self.maxDatagram)
            for _ in 0..<64 {
                let n = buffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
                if n > 0 {
                    output.data.append(Array(buffer[..<Int(n)]))
                    continue
                }
                let error = SSL_get_error(ssl, n)
                if error == SSL_ERROR_ZERO_RETURN { isClosed = true }
                break
            }
        }
        output.datagrams += drain()
        return output
    }

    /// The peer's certificate must hash to the fingerprint its description named.
    private func checkFingerprint() throws {
        guard let peer = trav_ssl_peer_certificate(ssl) else {
            isClosed = true
            throw DTLSError(.fingerprintMismatch, "the peer presented no certificate")
        }
        defer { X509_free(peer) }
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard X509_digest(peer, EVP_sha256(), &digest, &length) == 1,
              Array(digest.prefix(Int(length))) == expectedFingerprint else {
            isClosed = true
            throw DTLSError(.fingerprintMismatch, "the peer's certificate is not the one its description named")
        }
    }

    /// The datagrams OpenSSL wrote since the last call.
    private func drain() -> [[UInt8]] {
        var count = 0
        guard let bytes = trav_queue_bytes(outbound, &count), count > 0 else { return [] }
        let all = Array(UnsafeBufferPointer(start: bytes, count: count))
        trav_queue_clear(outbound)
        var datagrams: [[UInt8]] = []
        var i = 0
        while i + 2 <= all.count {
            let length = Int(all[i]) << 8 | Int(all[i + 1])
            guard i + 2 + length <= all.count else { break }
            datagrams.append(Array(all[(i + 2)..<(i + 2 + length)]))
            i += 2 + length
        }
        return datagrams
    }
}
