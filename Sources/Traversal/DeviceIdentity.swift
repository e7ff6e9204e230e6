import Crypto

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A device's Ed25519 identity key pair; its public key determines the device's ``DeviceID``.
///
/// A camera generates one once and keeps it in a key file (``save(to:)``, ``load(from:)``); a
/// viewer may use a throw-away ``ephemeral()`` identity instead.
///
/// Key file format (text, so it can be inspected; the file is created with mode 0600):
///
/// ```
/// trav-device-identity v1 ed25519
/// <base64 of the 32-byte Ed25519 seed>
/// ```
public struct DeviceIdentity: Sendable, CustomStringConvertible {
    /// First line of a key file.
    public static let fileHeader = "trav-device-identity v1 ed25519"
    /// Key files larger than this are rejected as corrupt without being read in full.
    public static let maximumFileSize = 1024

    /// The private signing key (never printed).
    let privateKey: Curve25519.Signing.PrivateKey
    /// Whether this identity was made for one session and must not be saved.
    public let isEphemeral: Bool

    init(privateKey: Curve25519.Signing.PrivateKey, isEphemeral: Bool) {
        self.privateKey = privateKey
        self.isEphemeral = isEphemeral
    }

    /// Rebuilds an identity from its 32-byte Ed25519 seed (RFC 8032 §5.1.5 private key).
    public init(seed: [UInt8]) throws {
        guard seed.count == 32, let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: seed) else {
            throw IdentityFileError(code: .corrupt, detail: "an Ed25519 seed is 32 bytes, got \(seed.count)")
        }
        self.init(privateKey: key, isEphemeral: false)
    }

    /// A new random long-term identity (for a camera, or a viewer that pairs).
    public static func generate() -> DeviceIdentity {
        DeviceIdentity(privateKey: Curve25519.Signing.PrivateKey(), isEphemeral: false)
    }

    /// A new random identity for one viewer session; ``save(to:)`` refuses it.
    public static func ephemeral() -> DeviceIdentity {
        DeviceIdentity(privateKey: Curve25519.Signing.PrivateKey(), isEphemeral: true)
    }

    /// The Ed25519 public key.
    public var publicKey: Curve25519.Signing.PublicKey { privateKey.publicKey }

    /// The UID derived from ``publicKey`` (computed on each access: one scrypt evaluation).
    public var deviceID: DeviceID { DeviceID(publicKey: publicKey) }

    /// An Ed25519 signature (RFC 8032) of `message` by this identity.
    public func signature(for message: some DataProtocol) throws -> Data {
        try privateKey.signature(for: message)
    }

    /// Public information only: the identity's public key in base64.
    public var description: String {
        "DeviceIdentity(\(isEphemeral ? "ephemeral, " : "")public key \(publicKey.rawRepresentation.base64EncodedString()))"
    }

    /// The key file's text.
    var fileContents: String {
        "\(DeviceIdentity.fileHeader)\n\(privateKey.rawRepresentation.base64EncodedString())\n"
    }

    /// Writes a new key file at `path`, created with mode 0600; refuses to overwrite a file.
    public func save(to path: String) throws {
        guard !isEphemeral else {
            throw IdentityFileError(code: .ephemeral, detail: "an ephemeral identity is not saved")
        }
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard descriptor >= 0 else {
            let code: IdentityFileError.Code = errno == EEXIST ? .alreadyExists : .io
            throw IdentityFileError(code: code, detail: "create \(path): \(String(cString: strerror(errno)))")
        }
        defer { _ = close(descriptor) }
        let bytes = Array(fileContents.utf8)
        var written = 0
        while written < bytes.count {
            let result = bytes[written...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            if result < 0 {
                if errno == EINTR { continue }
                throw IdentityFileError(code: .io, detail: "write \(path): \(String(cString: strerror(errno)))")
            }
            written += result
        }
        guard fsync(descriptor) == 0 else {
            throw IdentityFileError(code: .io, detail: "fsync \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Reads a key file, refusing one that group or others may access, or that is malformed.
    public static func load(from path: String) throws -> DeviceIdentity {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else {
            let code: IdentityFileError.Code = errno == ENOENT ? .notFound : .io
            throw IdentityFileError(code: code, detail: "open \(path): \(String(cString: strerror(errno)))")
        }
        defer { _ = close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            throw IdentityFileError(code: .io, detail: "stat \(path): \(String(cString: strerror(errno)))")
        }
        let fileTypeMask: UInt32 = 0o170000
        let regularFile: UInt32 = 0o100000
        guard UInt32(status.st_mode) & fileTypeMask == regularFile else {
            throw IdentityFileError(code: .corrupt, detail: "\(path) is not a regular file")
        }
        let permissions = UInt32(status.st_mode) & 0o777
        guard permissions & 0o077 == 0 else {
            throw IdentityFileError(
                code: .insecurePermissions,
                detail: "\(path) has mode \(String(permissions, radix: 8)); a key file must be 0600 or stricter")
        }
        guard Int(status.st_size) <= maximumFileSize else {
            throw IdentityFileError(code: .corrupt, detail: "\(path) is larger than \(maximumFileSize) bytes")
        }
        var buffer = [UInt8](repeating: 0, count: maximumFileSize + 1)
        var length = 0
        while length < buffer.count {
            let result = buffer[length...].withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if result < 0 {
                if errno == EINTR { continue }
                throw IdentityFileError(code: .io, detail: "read \(path): \(String(cString: strerror(errno)))")
            }
            if result == 0 { break }
            length += result
        }
        guard length <= maximumFileSize else {
            throw IdentityFileError(code: .corrupt, detail: "\(path) is larger than \(maximumFileSize) bytes")
        }
        return try parse(fileContents: buffer[..<length], path: path)
    }

    /// Parses the text of a key file.
    static func parse(fileContents bytes: ArraySlice<UInt8>, path: String) throws -> DeviceIdentity {
        guard let text = String(bytes: bytes, encoding: .utf8) else {
            throw IdentityFileError(code: .corrupt, detail: "\(path) is not UTF-8 text")
        }
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        guard lines.count == 2, lines[0] == fileHeader else {
            throw IdentityFileError(
                code: .corrupt, detail: "\(path) must be the line \"\(fileHeader)\" then one base64 line")
        }
        guard let seed = Data(base64Encoded: lines[1]), seed.count == 32 else {
            throw IdentityFileError(code: .corrupt, detail: "\(path) does not hold a base64 32-byte seed")
        }
        return try DeviceIdentity(seed: Array(seed))
    }
}

/// Why an identity could not be saved or loaded.
public struct IdentityFileError: CodedError, Hashable {
    /// A stable reason code.
    public struct Code: ErrorCode {
        /// The code's stable name.
        public let name: String
        /// No file at the path.
        public static let notFound = Code(name: "not-found")
        /// ``DeviceIdentity/save(to:)`` found a file already there.
        public static let alreadyExists = Code(name: "already-exists")
        /// The file is readable or writable by group or others.
        public static let insecurePermissions = Code(name: "insecure-permissions")
        /// The file is not a key file of this format.
        public static let corrupt = Code(name: "corrupt")
        /// An ephemeral identity cannot be saved.
        public static let ephemeral = Code(name: "ephemeral")
        /// The operating system reported an I/O error.
        public static let io = Code(name: "io")
    }

    /// What went wrong.
    public let code: Code
    /// Where and why (never the key).
    public let detail: String
}

extension Curve25519.Signing.PublicKey {
    /// True when the key encodes one of the eight small-order points of edwards25519, canonically or not.
    ///
    /// RFC 8032 §5.1.7 verification accepts such keys, and for them a "signature" needs no private key
    /// (with A the neutral element, R = A and S = 0 verify any message), so an identity must never be one.
    /// The list is the canonical and non-canonical y-coordinates of those points; the sign bit is ignored.
    public var hasSmallOrder: Bool {
        let key = Array(rawRepresentation)
        guard key.count == 32 else { return true }
        return Self.smallOrderEncodings.contains { point in
            (0..<31).allSatisfy { key[$0] == point[$0] } && key[31] & 0x7F == point[31]
        }
    }

    /// y-coordinates (little-endian, sign bit clear) of the small-order points, and of p − 1, p, p + 1.
    static let smallOrderEncodings: [[UInt8]] = [
        [UInt8](repeating: 0, count: 32),                                   // y = 0: order 4
        [1] + [UInt8](repeating: 0, count: 31),                             // y = 1: the neutral element
        [0x26, 0xE8, 0x95, 0x8F, 0xC2, 0xB2, 0x27, 0xB0, 0x45, 0xC3, 0xF4, 0x89, 0xF2, 0xEF, 0x98, 0xF0,
         0xD5, 0xDF, 0xAC, 0x05, 0xD3, 0xC6, 0x33, 0x39, 0xB1, 0x38, 0x02, 0x88, 0x6D, 0x53, 0xFC, 0x05],  // order 8
        [0xC7, 0x17, 0x6A, 0x70, 0x3D, 0x4D, 0xD8, 0x4F, 0xBA, 0x3C, 0x0B, 0x76, 0x0D, 0x10, 0x67, 0x0F,
         0x2A, 0x20, 0x53, 0xFA, 0x2C, 0x39, 0xCC, 0xC6, 0x4E, 0xC7, 0xFD, 0x77, 0x92, 0xAC, 0x03, 0x7A],  // order 8
        [0xEC] + [UInt8](repeating: 0xFF, count: 30) + [0x7F],             // y = p − 1: order 2
        [0xED] + [UInt8](repeating: 0xFF, count: 30) + [0x7F],             // y = p ≡ 0: order 4
        [0xEE] + [UInt8](repeating: 0xFF, count: 30) + [0x7F],             // y = p + 1 ≡ 1: the neutral element
    ]
}
