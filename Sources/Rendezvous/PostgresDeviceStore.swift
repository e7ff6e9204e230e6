import Foundation
import Logging
import NIOCore
import PostgresNIO
import Traversal

/// Where a `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require]` URL points.
public struct PostgresLocation: Sendable, Hashable {
    /// How the connection uses TLS (libpq's `sslmode` names).
    public enum TLSMode: String, Sendable, Hashable {
        /// Plain TCP (a database on loopback or a private network).
        case disable
        /// TLS when the server offers it (libpq's default).
        case prefer
        /// TLS or no connection.
        case require
    }

    /// Server host name or IP address.
    public var host: String
    /// Server TCP port (5432 by default).
    public var port: Int
    /// Role to log in as.
    public var username: String
    /// Password, if the server asks for one.
    public var password: String?
    /// Database name (the user name by default, as with libpq).
    public var database: String
    /// TLS use.
    public var tls: TLSMode

    /// Parses a `postgres://` (or `postgresql://`) URL.
    ///
    /// - Throws: `NodeRouteError` `.badDatabaseURL` when it is not one.
    public init(url text: String) throws {
        guard let url = URLComponents(string: text), let scheme = url.scheme, ["postgres", "postgresql"].contains(scheme),
            let host = url.host, !host.isEmpty, let user = url.user, !user.isEmpty
        else {
            throw NodeRouteError(code: .badDatabaseURL, detail: "expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
        }
        let mode = url.queryItems?.first { $0.name == "sslmode" }?.value ?? TLSMode.prefer.rawValue
        guard let tls = TLSMode(rawValue: mode) else {
            throw NodeRouteError(code: .badDatabaseURL, detail: "sslmode must be disable, prefer or require")
        }
        let path = url.path.hasPrefix("/") ? String(url.path.dropFirst()) : url.path
        self.host = host
        self.port = url.port ?? 5432
        self.username = user
        self.password = url.password
        self.database = path.isEmpty ? user : path
        self.tls = tls
    }

    /// The URL with the password left out (for logs).
    public var redacted: String { "postgres://\(username)@\(host):\(port)/\(database)?sslmode=\(tls.rawValue)" }

    /// The client configuration postgres-nio wants.
    var clientConfiguration: PostgresClient.Configuration {
        let tlsSetting: PostgresClient.Configuration.TLS = switch tls {
        case .disable: .disable
        case .prefer: .prefer(.makeClientConfiguration())
        case .require: .require(.makeClientConfiguration())
        }
        return PostgresClient.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: tlsSetting)
    }
}

/// A ``DeviceStore`` in PostgreSQL, shared by every cloud node of a fleet, that also holds the nodes' leases
/// and carries the messages between them (`NodeDirectory`).
///
/// Schema (created at open if missing; dates are seconds since 1970):
///
/// ```
/// trav_devices(uid TEXT PRIMARY KEY, public_key BYTEA, first_seen FLOAT8, last_seen FLOAT8, node TEXT NULL)
/// trav_nodes(name TEXT PRIMARY KEY, lease_until FLOAT8)      -- a node's heartbeat: alive until lease_until
/// ```
///
/// A device's `node` names the node holding its live session; it counts only while that node's lease runs
/// (``liveNode(of:now:)``), and a node whose lease ran out has its sessions released by the first node that
/// sees it (``expiredNodes(now:)``, ``forget(node:at:)``). Messages between nodes are `NOTIFY`s on one channel per
/// node (`NodeChannel`).
public final class PostgresDeviceStore: DeviceStore, NodeDirectory {
    /// The pool of connections for queries (and `pg_notify`).
    let client: PostgresClient
    /// Runs ``client`` until ``close()``.
    private let runner: Task<Void, Never>
    /// Where the database is.
    public let location: PostgresLocation
    private let logger: Logger

    private init(client: PostgresClient, runner: Task<Void, Never>, location: PostgresLocation, logger: Logger) {
        self.client = client
        self.runner = runner
        self.location = location
        self.logger = logger
    }

    /// Connects to the database at `location` and creates the tables if missing.
    public static func open(_ location: PostgresLocation, logger: Logger = Logger(label: "trav.device-store")) async throws -> PostgresDeviceStore {
        var configuration = location.clientConfiguration
        configuration.options.maximumConnections = 8
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let runner = Task { await client.run() }
        // Lets the runner start before the first lease (postgres-nio warns about a lease before `run()`).
        await Task.yield()
        let store = PostgresDeviceStore(client: client, runner: runner, location: location, logger: logger)
        do {
            try await store.createTables()
        } catch {
            await store.close()
            throw error
        }
        return store
    }

    /// Creates the tables; nodes starting together take turns (an advisory lock), as concurrent `CREATE TABLE IF NOT
    /// EXISTS` can collide.
    private func createTables() async throws {
        try await client.withConnection { connection in
            try await connection.query("SELECT pg_advisory_lock(\(Self.schemaLock))", logger: logger)
            do {
                try await connection.query("""
                    CREATE TABLE IF NOT EXISTS trav_devices (
                        uid TEXT PRIMARY KEY,
                        public_key BYTEA NOT NULL,
                        first_seen DOUBLE PRECISION NOT NULL,
                        last_seen DOUBLE PRECISION NOT NULL,
                        node TEXT)
                    """, logger: logger)
                try await connection.query("CREATE INDEX IF NOT EXISTS trav_devices_node ON trav_devices (node)", logger: logger)
                try await connection.query("""
                    CREATE TABLE IF NOT EXISTS trav_nodes (name TEXT PRIMARY KEY, lease_until DOUBLE PRECISION NOT NULL)
                    """, logger: logger)
                try await connection.query("""
                    CREATE TABLE IF NOT EXISTS trav_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)
                    """, logger: logger)
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.schemaLock))", logger: logger)
                throw error
            }
            try await connection.query("SELECT pg_advisory_unlock(\(Self.schemaLock))", logger: logger)
        }
    }

    /// The advisory lock key of schema creation (any fixed number; "trav" in ASCII).
    private static let schemaLock: Int64 = 0x7472_6176

    /// The fleet's value of `secret`: the first node to start stores its proposal, every later one reads it.
    public func secret(_ secret: StoredSecret, proposing proposed: String) async throws -> String {
        let name = secret.rawValue
        try await client.query("""
            INSERT INTO trav_settings (name, value) VALUES (\(name), \(proposed)) ON CONFLICT (name) DO NOTHING
            """, logger: logger)
        let rows = try await client.query("SELECT value FROM trav_settings WHERE name = \(name)", logger: logger)
        for try await value in rows.decode(String.self) { return value }
        throw DeviceStoreError(code: .missingSetting, detail: name)
    }

    /// The record of `deviceID`, if any.
    public func record(for deviceID: DeviceID) async throws -> DeviceRecord? {
        let rows = try await client.query(
            "SELECT public_key, first_seen, last_seen, node FROM trav_devices WHERE uid = \(deviceID.description)", logger: logger)
        for try await (key, firstSeen, lastSeen, node) in rows.decode((Data, Double, Double, String?).self) {
            return DeviceRecord(
                deviceID: deviceID, publicKey: key, firstSeen: Date(timeIntervalSince1970: firstSeen),
                lastSeen: Date(timeIntervalSince1970: lastSeen), node: node)
        }
        return nil
    }

    /// Inserts or refreshes the record of `deviceID`, now held by `node` (a new key restarts its first-seen date).
    public func registered(_ deviceID: DeviceID, publicKey: Data, node: String, at date: Date) async throws {
        let seconds = date.timeIntervalSince1970
        try await client.query("""
            INSERT INTO trav_devices (uid, public_key, first_seen, last_seen, node)
            VALUES (\(deviceID.description), \(publicKey), \(seconds), \(seconds), \(node))
            ON CONFLICT (uid) DO UPDATE SET
                first_seen = CASE WHEN trav_devices.public_key = excluded.public_key
                    THEN trav_devices.first_seen ELSE excluded.first_seen END,
                public_key = excluded.public_key, last_seen = excluded.last_seen, node = excluded.node
            """, logger: logger)
    }

    /// Marks `deviceID` offline if `node` still holds it.
    public func wentOffline(_ deviceID: DeviceID, node: String, at date: Date) async throws {
        try await client.query(
            "UPDATE trav_devices SET node = NULL, last_seen = \(date.timeIntervalSince1970) WHERE uid = \(deviceID.description) AND node = \(node)",
            logger: logger)
    }

    /// Marks every device `node` holds offline.
    public func releaseSessions(of node: String, at date: Date) async throws {
        try await client.query(
            "UPDATE trav_devices SET node = NULL, last_seen = \(date.timeIntervalSince1970) WHERE node = \(node)", logger: logger)
    }

    /// Number of devices known.
    public func count() async throws -> Int {
        let rows = try await client.query("SELECT COUNT(*) FROM trav_devices", logger: logger)
        for try await n in rows.decode(Int.self) { return n }
        return 0
    }

    // MARK: NodeDirectory

    /// Extends `node`'s lease to `leaseUntil` (creating its row).
    public func heartbeat(node: String, leaseUntil: Date) async throws {
        try await client.query("""
            INSERT INTO trav_nodes (name, lease_until) VALUES (\(node), \(leaseUntil.timeIntervalSince1970))
            ON CONFLICT (name) DO UPDATE SET lease_until = excluded.lease_until
            """, logger: logger)
    }

    /// The node holding `deviceID`'s session, if that node's lease runs at `now`.
    public func liveNode(of deviceID: DeviceID, now: Date) async throws -> String? {
        let rows = try await client.query("""
            SELECT d.node FROM trav_devices d JOIN trav_nodes n ON n.name = d.node
            WHERE d.uid = \(deviceID.description) AND n.lease_until > \(now.timeIntervalSince1970)
            """, logger: logger)
        for try await node in rows.decode(String.self) { return node }
        return nil
    }

    /// Nodes whose lease ran out before `now`.
    public func expiredNodes(now: Date) async throws -> [String] {
        let rows = try await client.query(
            "SELECT name FROM trav_nodes WHERE lease_until <= \(now.timeIntervalSince1970)", logger: logger)
        var names: [String] = []
        for try await name in rows.decode(String.self) { names.append(name) }
        return names
    }

    /// Releases the sessions of `node` and removes its lease, unless it renewed the lease meanwhile; one transaction.
    public func forget(node: String, at date: Date) async throws {
        let seconds = date.timeIntervalSince1970
        try await client.withConnection { connection in
            try await connection.query("BEGIN", logger: logger)
            do {
                let rows = try await connection.query(
                    "DELETE FROM trav_nodes WHERE name = \(node) AND lease_until <= \(seconds) RETURNING name", logger: logger)
                var gone = false
                for try await _ in rows.decode(String.self) { gone = true }
                if gone {
                    try await connection.query(
                        "UPDATE trav_devices SET node = NULL, last_seen = \(seconds) WHERE node = \(node)", logger: logger)
                }
                try await connection.query("COMMIT", logger: logger)
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    /// Sends `payload` to whoever listens on `channel` (`pg_notify`, delivered when the sending transaction commits).
    public func notify(channel: String, payload: String) async throws {
        try await client.query("SELECT pg_notify(\(channel), \(payload))", logger: logger)
    }

    /// Hands every notification on `channel` to `receive`, on a pooled connection kept for it, until the
    /// connection fails or the task is cancelled.
    public func listen(channel: String, _ receive: @Sendable (String) async -> Void) async throws {
        try await client.withConnection { connection in
            try await connection.listen(on: channel) { notifications in
                for try await notification in notifications { await receive(notification.payload) }
            }
        }
    }

    /// Stops the connection pool.
    public func close() async {
        runner.cancel()
        await runner.value
    }
}
