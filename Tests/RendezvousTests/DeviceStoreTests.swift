import Foundation
import Rendezvous
import Testing
import Traversal

/// The device store: verified key ↔ UID bindings, first and last seen, the node holding the session.
@Suite(.timeLimit(.minutes(1)))
struct DeviceStoreTests {
    /// Which store a test runs against.
    enum Kind: String, CaseIterable, Sendable {
        case memory, sqlite
    }

    /// Runs `body` with a fresh store of `kind`, closed and its file removed afterwards.
    func withStore(_ kind: Kind, _ body: (any DeviceStore) async throws -> Void) async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store: any DeviceStore = switch kind {
        case .memory: InMemoryDeviceStore()
        case .sqlite: try await SQLiteDeviceStore.open(path: directory + "/" + SQLiteDeviceStore.fileName)
        }
        do {
            try await body(store)
            await store.close()
        } catch {
            await store.close()
            throw error
        }
    }

    static let key = Data(repeating: 7, count: 32)
    static let otherKey = Data(repeating: 9, count: 32)
    /// Any well-formed UID serves: the store keeps what the cloud verified, it does not derive.
    static let deviceID = try! DeviceID("TRAV-0000-0000-0000-0000")

    @Test func sqliteStoreRoundTripsARecordAcrossReopening() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/" + SQLiteDeviceStore.fileName
        let seen = Date(timeIntervalSince1970: 1_800_000_000.25)
        let first = try await SQLiteDeviceStore.open(path: path)
        try await first.registered(Self.deviceID, publicKey: Self.key, node: "node-a", at: seen)
        await first.close()

        let second = try await SQLiteDeviceStore.open(path: path)
        let record = try await second.record(for: Self.deviceID)
        let count = try await second.count()
        await second.close()
        #expect(record?.deviceID == Self.deviceID)
        #expect(record?.publicKey == Self.key)
        #expect(record?.node == "node-a")
        #expect(abs((record?.firstSeen.timeIntervalSince1970 ?? 0) - seen.timeIntervalSince1970) < 0.001)
        #expect(abs((record?.lastSeen.timeIntervalSince1970 ?? 0) - seen.timeIntervalSince1970) < 0.001)
        #expect(count == 1)
    }

    @Test(arguments: Kind.allCases)
    func unknownDeviceHasNoRecordAndIsNotVerified(kind: Kind) async throws {
        try await withStore(kind) { store in
            let record = try await store.record(for: Self.deviceID)
            let verified = try await store.isVerified(Self.deviceID, publicKey: Self.key)
            #expect(record == nil)
            #expect(!verified)
        }
    }

    @Test(arguments: Kind.allCases)
    func onlyTheVerifiedKeyCountsAsVerified(kind: Kind) async throws {
        try await withStore(kind) { store in
            try await store.registered(Self.deviceID, publicKey: Self.key, node: "a", at: Date())
            let verified = try await store.isVerified(Self.deviceID, publicKey: Self.key)
            let otherVerified = try await store.isVerified(Self.deviceID, publicKey: Self.otherKey)
            #expect(verified)
            #expect(!otherVerified)
        }
    }

    @Test(arguments: Kind.allCases)
    func firstSeenStaysAndOnlyTheNodeHoldingTheSessionTakesItOffline(kind: Kind) async throws {
        let t1 = Date(timeIntervalSince1970: 1_000)
        let t2 = Date(timeIntervalSince1970: 2_000)
        let t3 = Date(timeIntervalSince1970: 3_000)
        try await withStore(kind) { store in
            try await store.registered(Self.deviceID, publicKey: Self.key, node: "a", at: t1)
            try await store.registered(Self.deviceID, publicKey: Self.key, node: "b", at: t2)
            try await store.wentOffline(Self.deviceID, node: "a", at: t3)
            var record = try #require(try await store.record(for: Self.deviceID))
            #expect(record.firstSeen == t1)
            #expect(record.lastSeen == t2)
            #expect(record.node == "b", "a stale node does not take a moved session offline")
            try await store.wentOffline(Self.deviceID, node: "b", at: t3)
            record = try #require(try await store.record(for: Self.deviceID))
            #expect(record.node == nil)
            #expect(record.lastSeen == t3)
            #expect(record.firstSeen == t1)
        }
    }

    @Test(arguments: Kind.allCases)
    func aStoppedNodeReleasesOnlyItsOwnSessions(kind: Kind) async throws {
        try await withStore(kind) { store in
            try await store.registered(Self.deviceID, publicKey: Self.key, node: "a", at: Date(timeIntervalSince1970: 1))
            try await store.releaseSessions(of: "b", at: Date(timeIntervalSince1970: 2))
            let kept = try await store.record(for: Self.deviceID)
            try await store.releaseSessions(of: "a", at: Date(timeIntervalSince1970: 3))
            let released = try await store.record(for: Self.deviceID)
            #expect(kept?.node == "a")
            #expect(released?.node == nil)
            #expect(released?.lastSeen == Date(timeIntervalSince1970: 3))
            #expect(released?.publicKey == Self.key, "the verified binding stays")
        }
    }
}
