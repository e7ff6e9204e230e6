import Crypto
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Camera identity keys a viewer has already checked against their UIDs, so the UID's memory-hard
/// scrypt is paid once per camera rather than once per connection (as SSH's `known_hosts` spares
/// a host-key prompt); in memory, or kept in a file.
///
/// A UID is derived from exactly one key, so an entry can only ever confirm the true key: a cloud
/// that announces another key for a known UID is checked the slow way, and fails.
///
/// File format (text, mode 0600, rewritten whole on each change):
///
/// ```
/// trav-known-devices v1
/// TRAV-XXXX-XXXX-XXXX-XXXX <base64 of the 32-byte Ed25519 public key>
/// ```
public final class KnownDevices: Sendable {
    /// First line of a known-devices file.
    public static let fileHeader = "trav-known-devices v1"
    /// Entries kept, at most; the oldest is forgotten first.
    public static let limit = 4096
    /// Files larger than this are rejected without being read in full (``limit`` lines of ~70 bytes fit).
    public static let maximumFileSize = 512 * 1024

    private struct State {
        var keys: [DeviceID: Data] = [:]
        var order: [DeviceID] = []
    }

    private let state = Mutex(State())
    /// The file kept up to date, if any.
    public let path: String?

    /// An empty store in memory only.
    public init() {
        path = nil
    }

    /// A store kept in `path`, loaded now if it exists (a missing file is an empty store).
    ///
    /// Throws ``KnownDevicesError`` `.corrupt` for a file that is too large or not in the format above.
    public init(file path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else { return }
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        if let size = attributes[.size] as? Int, size > Self.maximumFileSize {
            throw KnownDevicesError(code: .corrupt, detail: "\(path) is larger than \(Self.maximumFileSize) bytes")
        }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw KnownDevicesError(code: .io, detail: "read \(path): \(error)")
        }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        guard lines.first.map(String.init) == Self.fileHeader else {
            throw KnownDevicesError(code: .corrupt, detail: "\(path) does not start with \"\(Self.fileHeader)\"")
        }
        lines.removeFirst()
        var loaded = State()
        for (number, line) in lines.enumerated() {
            let fields = line.split(separator: " ")
            guard fields.count == 2, let device = try? DeviceID(String(fields[0])),
                  let key = Data(base64Encoded: String(fields[1])), key.count == 32 else {
                throw KnownDevicesError(code: .corrupt, detail: "\(path) line \(number + 2) is not \"UID base64-key\"")
            }
            Self.insert(key, for: device, into: &loaded)
        }
        state.withLock { $0 = loaded }
    }

    /// Whether `key` is the key already checked for `device`.
    public func contains(_ key: Curve25519.Signing.PublicKey, for device: DeviceID) -> Bool {
        state.withLock { $0.keys[device] } == key.rawRepresentation
    }

    /// Whether `key` is behind `device`: already known, or derived (one scrypt, off the cooperative pool,
    /// whose few threads the race needs) and then recorded. A key that derives but cannot be recorded
    /// still counts; `recordFailed` hears why.
    func check(_ key: Curve25519.Signing.PublicKey, for device: DeviceID,
               recordFailed: (any Error) -> Void = { _ in }) async -> Bool {
        if contains(key, for: device) { return true }
        guard await offCooperativePool({ device.matches(publicKey: key) }) else { return false }
        do {
            try remember(key, for: device)
        } catch {
            recordFailed(error)
        }
        return true
    }

    /// Records `key` as checked for `device` (the caller has verified ``DeviceID/matches(publicKey:)``)
    /// and rewrites the file, if there is one.
    public func remember(_ key: Curve25519.Signing.PublicKey, for device: DeviceID) throws {
        let contents: String? = state.withLock { s in
            guard s.keys[device] != key.rawRepresentation else { return nil }
            Self.insert(key.rawRepresentation, for: device, into: &s)
            return ([Self.fileHeader] + s.order.map { "\($0) \(s.keys[$0]!.base64EncodedString())" }).joined(separator: "\n") + "\n"
        }
        guard let contents, let path else { return }
        // Written beside the file and renamed over it, so a reader never sees half a file.
        let temporary = path + ".tmp-\(UInt32.random(in: .min ... .max))"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(contents.utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw KnownDevicesError(code: .io, detail: "cannot write \(temporary)")
        }
        guard rename(temporary, path) == 0 else {
            throw KnownDevicesError(code: .io, detail: "rename to \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// How many devices are known.
    public var count: Int { state.withLock { $0.keys.count } }

    private static func insert(_ key: Data, for device: DeviceID, into s: inout State) {
        if s.keys.updateValue(key, forKey: device) == nil { s.order.append(device) }
        if s.order.count > limit { s.keys[s.order.removeFirst()] = nil }
    }
}

/// Why a known-devices file could not be used.
public struct KnownDevicesError: CodedError {
    /// The class of failure.
    public struct Code: ErrorCode {
        /// The stable name.
        public let name: String
        /// The file is not in the known-devices format.
        public static let corrupt = Code(name: "corrupt")
        /// Reading or writing the file failed.
        public static let io = Code(name: "io")
    }

    /// What went wrong.
    public let code: Code
    /// Detail for people.
    public let detail: String
}
