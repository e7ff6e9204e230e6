import Foundation
import Logging
import NIOCore
import NIOPosix
import SQLiteNIO
import Traversal

/// What the cloud remembers of a device across restarts: the key its UID was verified against
/// (one scrypt, paid once), when it was first and last seen, and which cloud node holds its session.
public struct DeviceRecord: Sendable, Hashable {
    /// The device's UID.
    public var deviceID: DeviceID
    /// The raw Ed25519 public key the UID was verified against (32 bytes).
    public var publicKey: Data
    /// When the binding was first verified.
    public var firstSeen: Date
    /// When the device last registered or went offline.
    public var lastSeen: Date
    /// The cloud node holding the device's live session; `nil` while it is offline.
    public var node: String?

    /// Creates a record.
    public init(deviceID: DeviceID, publicKey: Data, firstSeen: Date, lastSeen: Date, node: String?) {
        self.deviceID = deviceID
        self.publicKey = publicKey
        self.firstSeen = firstSeen
        self.lastSeen = lastSeen
        self.node = node
    }
}

/// A secret the cloud keeps in its ``DeviceStore``, shared by the nodes of a fleet and kept across restarts.
public enum StoredSecret: String, Sendable, CaseIterable {
    /// Relay grants are signed with it (``RelayGrantIssuer``): a grant issued by one node is renewed by any node
    /// and accepted by any node's relay, also after a restart.
    case relayGrants = "relay_secret"
    /// Presence sessions are issued under it (``PresenceTickets``): a restarted node takes its cameras' UDP
    /// presence back from their keepalives, without a TLS registration each.
    case presenceSessions = "presence_secret"
}

/// Why a device store failed.
public struct DeviceStoreError: CodedError, Hashable {
    /// A stable reason code.
    public struct Code: ErrorCode {
        /// The code's stable name.
        public let name: String
        /// A ``StoredSecret`` is missing right after it was stored.
        public static let missingSetting = Code(name: "missing-setting")
    }

    /// What went wrong.
    public let code: Code
    /// Why.
    public let detail: String
}

/// Where the cloud keeps verified key ↔ UID bindings: in memory, or SQLite under `--data` (``SQLiteDeviceStore``).
///
/// Only bindings already proven by the UID's scrypt are stored, so a key found here for its UID
/// needs only the challenge signature when it registers again.
public protocol DeviceStore: Sendable {
    /// The record of `deviceID`, if its binding was ever verified.
    func record(for deviceID: DeviceID) async throws -> DeviceRecord?
    /// Records that `publicKey` (verified against `deviceID`) registered at `date` with its session on `node`;
    /// keeps the first-seen date of an existing record.
    func registered(_ deviceID: DeviceID, publicKey: Data, node: String, at date: Date) async throws
    /// Records that the session of `deviceID` on `node` ended at `date` (a session since taken by another node stays).
    func wentOffline(_ deviceID: DeviceID, node: String, at date: Date) async throws
    /// Records that `node` holds no sessions any more (it stopped, or starts after a crash).
    func releaseSessions(of node: String, at date: Date) async throws
    /// The stored value of `secret`, or `proposed`, stored now, when there is none: every node sharing the store,
    /// and the same node after a restart, then uses one value. Stores of one process only answer `proposed`.
    func secret(_ secret: StoredSecret, proposing proposed: String) async throws -> String
    /// Releases the store's resources.
    func close() async
}

extension DeviceStore {
    /// `proposed`: a store that does not outlive its process keeps no secret.
    public func secret(_ secret: StoredSecret, proposing proposed: String) async throws -> String { proposed }

    /// Whether `publicKey` is the key already verified for `deviceID` (no scrypt needed).
    public func isVerified(_ deviceID: DeviceID, publicKey: Data) async throws -> Bool {
        try await record(for: deviceID)?.publicKey == publicKey
    }
}

/// A ``DeviceStore`` in this process's memory, lost on restart (every camera then pays one scrypt again).
public actor InMemoryDeviceStore: DeviceStore {
    private var records: [DeviceID: DeviceRecord] = [:]

    /// An empty store.
    public init() {}

    /// The record of `deviceID`, if any.
    public func record(for deviceID: DeviceID) -> DeviceRecord? { records[deviceID] }

    /// Inserts or refreshes the record of `deviceID`.
    public func registered(_ deviceID: DeviceID, publicKey: Data, node: String, at date: Date) {
        let firstSeen = records[deviceID].flatMap { $0.publicKey == publicKey ? $0.firstSeen : nil } ?? date
        records[deviceID] = DeviceRecord(deviceID: deviceID, publicKey: publicKey, firstSeen: firstSeen, lastSeen: date, node: node)
    }

    /// Marks `deviceID` offline if `node` still holds it.
    public func wentOffline(_ deviceID: DeviceID, node: String, at date: Date) {
        guard var record = records[deviceID], record.node == node else { return }
        record.node = nil
        record.lastSeen = date
        records[deviceID] = record
    }

    /// Marks every device `node` holds offline.
    public func releaseSessions(of node: String, at date: Date) {
        for (deviceID, record) in records where record.node == node {
            records[deviceID]?.node = nil
            records[deviceID]?.lastSeen = date
        }
    }

    /// Nothing to release.
    public func close() {}

    /// Number of devices known.
    public var count: Int { records.count }
}

/// A ``DeviceStore`` in an SQLite file (WAL mode), so verified bindings survive a restart.
///
/// Schema (one row per UID):
///
/// ```
/// devices(uid TEXT PRIMARY KEY, public_key BLOB, first_seen REAL, last_seen REAL, node TEXT NULL)
/// settings(name TEXT PRIMARY KEY, value TEXT)        -- ``StoredSecret``s
/// ```
/// Dates are seconds since 1970.
public final class SQLiteDeviceStore: DeviceStore {
    /// The usual file name under the cloud's data directory.
    public static let fileName = "devices.sqlite"

    private let connection: SQLiteConnection
    /// The database file.
    public let path: String

    private init(connection: SQLiteConnection, path: String) {
        self.connection = connection
        self.path = path
    }

    /// Opens (creating if needed) the database at `path`.
    public static func open(path: String, logger: Logger = Logger(label: "trav.device-store")) async throws -> SQLiteDeviceStore {
        let connection = try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
        do {
            // WAL: readers never wait for the writer; NORMAL: a commit is durable once checkpointed,
            // and a crash loses at most the last moments of last-seen updates, never a verified binding's integrity.
            _ = try await connection.query("PRAGMA journal_mode=WAL", [])
            _ = try await connection.query("PRAGMA synchronous=NORMAL", [])
            _ = try await connection.query("PRAGMA busy_timeout=5000", [])
            _ = try await connection.query("""
                CREATE TABLE IF NOT EXISTS devices (
                    uid TEXT PRIMARY KEY NOT NULL,
                    public_key BLOB NOT NULL,
                    first_seen REAL NOT NULL,
                    last_seen REAL NOT NULL,
                    node TEXT
                ) WITHOUT ROWID
                """, [])
            _ = try await connection.query(
                "CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID", [])
        } catch {
            try? await connection.close()
            throw error
        }
        return SQLiteDeviceStore(connection: connection, path: path)
    }

    /// The record of `deviceID`, if any.
    public func record(for deviceID: DeviceID) async throws -> DeviceRecord? {
        let rows = try await connection.query(
            "SELECT public_key, first_seen, last_seen, node FROM devices WHERE uid = ?", [.text(deviceID.description)])
        guard let row = rows.first, case .blob(let key)? = row.column("public_key"),
            let firstSeen = row.column("first_seen")?.double, let lastSeen = row.column("last_seen")?.double
        else { return nil }
        return DeviceRecord(
            deviceID: deviceID, publicKey: Data(key.readableBytesView), firstSeen: Date(timeIntervalSince1970: firstSeen),
            lastSeen: Date(timeIntervalSince1970: lastSeen), node: row.column("node")?.string)
    }

    /// Inserts or refreshes the record of `deviceID` (a new key restarts its first-seen date).
    public func registered(_ deviceID: DeviceID, publicKey: Data, node: String, at date: Date) async throws {
        let seconds = date.timeIntervalSince1970
        _ = try await connection.query("""
            INSERT INTO devices (uid, public_key, first_seen, last_seen, node) VALUES (?1, ?2, ?3, ?3, ?4)
            ON CONFLICT(uid) DO UPDATE SET
                first_seen = CASE WHEN public_key = excluded.public_key THEN first_seen ELSE excluded.first_seen END,
                public_key = excluded.public_key, last_seen = excluded.last_seen, node = excluded.node
            """, [.text(deviceID.description), .blob(ByteBuffer(bytes: publicKey)), .float(seconds), .text(node)])
    }

    /// Marks `deviceID` offline if `node` still holds it.
    public func wentOffline(_ deviceID: DeviceID, node: String, at date: Date) async throws {
        _ = try await connection.query(
            "UPDATE devices SET node = NULL, last_seen = ?1 WHERE uid = ?2 AND node = ?3",
            [.float(date.timeIntervalSince1970), .text(deviceID.description), .text(node)])
    }

    /// Marks every device `node` holds offline.
    public func releaseSessions(of node: String, at date: Date) async throws {
        _ = try await connection.query(
            "UPDATE devices SET node = NULL, last_seen = ?1 WHERE node = ?2", [.float(date.timeIntervalSince1970), .text(node)])
    }

    /// The stored value of `secret`, or `proposed`, stored now.
    public func secret(_ secret: StoredSecret, proposing proposed: String) async throws -> String {
        _ = try await connection.query(
            "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING", [.text(secret.rawValue), .text(proposed)])
        let rows = try await connection.query("SELECT value FROM settings WHERE name = ?1", [.text(secret.rawValue)])
        guard let value = rows.first?.column("value")?.string else {
            throw DeviceStoreError(code: .missingSetting, detail: secret.rawValue)
        }
        return value
    }

    /// Number of devices known.
    public func count() async throws -> Int {
        let rows = try await connection.query("SELECT COUNT(*) AS n FROM devices", [])
        return rows.first?.column("n")?.integer.map { Int($0) } ?? 0
    }

    /// Closes the database.
    public func close() async {
        try? await connection.close()
    }
}
