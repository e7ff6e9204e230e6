import Foundation
import NATLab
import NIOCore
import NIOPosix
import SourceLimits
import STUNLite
import Testing
import TURNLite
@testable import Rendezvous
@testable import Traversal

/// A throwaway PostgreSQL server (Debian's `postgresql`) for a test: `postgres` itself run in the foreground as user
/// `postgres` (it refuses root), data under a temporary directory, listening on 127.0.0.1 at a free port;
/// ``stop()`` ends it and removes everything.
struct PostgresFixture {
    /// The directory of `initdb` and `postgres`, if PostgreSQL is installed.
    static let binaries: String? = {
        let root = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return versions.sorted().reversed().map { "\(root)/\($0)/bin" }
            .first { FileManager.default.isExecutableFile(atPath: "\($0)/initdb") }
    }()
    /// Why the fixture cannot run here, if it cannot.
    static var unavailable: String? {
        if getuid() != 0 { return "needs root (to run PostgreSQL as user postgres)" }
        if binaries == nil { return "needs Debian's postgresql (Scripts/test.sh installs it)" }
        return nil
    }

    let directory: String
    let port: Int
    let server: ChildProcess
    /// The URL `trav cloud --database` takes.
    var url: String { "postgres://postgres@127.0.0.1:\(port)/postgres?sslmode=disable" }

    /// Creates a cluster and starts its server, ready for connections (30 s at most); on failure nothing is left.
    static func start() async throws -> PostgresFixture {
        let bin = try #require(binaries)
        let directory = NSTemporaryDirectory() + "trav-pg-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        do {
            try FileManager.default.setAttributes([.ownerAccountName: "postgres"], ofItemAtPath: directory)
            let initdb = try await ChildProcess.run(
                ["/usr/sbin/runuser", "-u", "postgres", "--", "\(bin)/initdb", "-D", "\(directory)/data", "-U", "postgres",
                 "-A", "trust", "--no-sync"], timeout: .seconds(60))
            guard initdb.succeeded else { throw CloudError(code: .connectionFailed, detail: "initdb: \(initdb)") }
            let port = try await freePort()
            let server = try ChildProcess([
                "/usr/sbin/runuser", "-u", "postgres", "--", "\(bin)/postgres", "-D", "\(directory)/data", "-p", "\(port)",
                "-k", directory, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            let fixture = PostgresFixture(directory: directory, port: port, server: server)
            for _ in 0..<150 {
                let ready = try await ChildProcess.run(
                    ["\(bin)/pg_isready", "-q", "-h", "127.0.0.1", "-p", "\(port)"], timeout: .seconds(5))
                if ready.succeeded { return fixture }
                guard server.isRunning else { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            await fixture.stop()
            throw CloudError(code: .connectionFailed, detail: "postgres did not start: \(server.output())")
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    /// Stops the server at once (SIGQUIT to the postmaster: immediate shutdown), then removes its directory.
    func stop() async {
        let pidFile = "\(directory)/data/postmaster.pid"
        if let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
            let pid = text.split(separator: "\n").first.flatMap({ Int32($0) }) {
            _ = kill(pid, SIGQUIT)
        }
        if await !server.wait(.seconds(10)) { server.kill() }
        server.removeFiles()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A TCP port free on 127.0.0.1 now.
    private static func freePort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress?.port ?? 0
        try await channel.close()
        return port
    }
}

/// Runs `body` with a fresh PostgreSQL cluster, removed afterwards, also when `body` throws.
func withPostgres<T>(_ body: (PostgresFixture) async throws -> T) async throws -> T {
    let fixture = try await PostgresFixture.start()
    do {
        let result = try await body(fixture)
        await fixture.stop()
        return result
    } catch {
        await fixture.stop()
        throw error
    }
}

/// Several cloud nodes on one PostgreSQL: the store, the leases, and a fleet that survives a node killed with SIGKILL.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct MultiNodeTests {
    /// The built `trav` executable: `.build/debug/trav` at the repository root (`swift build` makes it).
    static let trav = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".build/debug/trav").path

    @Test(.disabled(if: PostgresFixture.unavailable != nil, "\(PostgresFixture.unavailable ?? "")"))
    func nodesOnOneDatabaseRenewEachOthersRelayGrants() async throws {
        try await withPostgres { postgres in
            let location = try PostgresLocation(url: postgres.url)
            let directory = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            var stores: [PostgresDeviceStore] = []
            var clouds: [CloudService] = []
            do {
                // Two nodes of one fleet, and a cloud of its own (its store in its data directory).
                for (name, shared) in [("a", true), ("b", true), ("alone", false)] {
                    let store: PostgresDeviceStore? = shared ? try await PostgresDeviceStore.open(location, logger: quietLogger) : nil
                    if let store { stores.append(store) }
                    clouds.append(try await CloudService.start(
                        .init(listenIP: "127.0.0.1", dataDirectory: "\(directory)/\(name)", stunPort: 0, tlsPort: 0,
                              relay: .init(listenIP: "127.0.0.1", port: 0, allowedPeers: [IPPrefix("127.0.0.0/8")!])),
                        store: store, logger: quietLogger))
                }
                let (a, b, alone) = (try #require(clouds[0].relayGrants), try #require(clouds[1].relayGrants), try #require(clouds[2].relayGrants))
                #expect(a.secret == b.secret, "nodes on one database sign grants with one secret")
                #expect(a.secret != alone.secret)
                let issued = a.grant(label: "introduction-1")
                #expect(alone.renew(issued) == nil, "a cloud with another secret renews nothing")
                // Node b renews node a's grant (the side it serves asked it), and node a's relay takes the renewal.
                let renewed = try #require(b.renew(issued, now: Date().addingTimeInterval(60)))
                #expect(renewed.expires > issued.expires)
                let relay = try #require(clouds[0].relay)
                let client = try await TURNClient.connect(.init(server: relay.udpAddress, username: renewed.username, password: renewed.password))
                let allocation = try await client.allocate()
                #expect(allocation.relayed.ip == IPAddress("127.0.0.1"))
                await client.close()
                // A grant signed by the lone cloud is refused by the fleet's relay (401 after the challenge).
                let stranger = alone.grant(label: "introduction-2")
                let refused = try await TURNClient.connect(.init(server: relay.udpAddress, username: stranger.username, password: stranger.password))
                await #expect(throws: TURNError.self) { _ = try await refused.allocate() }
                await refused.close()
            } catch {
                for c in clouds { await c.stop() }
                for s in stores { await s.close() }
                throw error
            }
            for c in clouds { await c.stop() }
            for s in stores { await s.close() }
        }
    }

    @Test(.disabled(if: PostgresFixture.unavailable != nil, "\(PostgresFixture.unavailable ?? "")"))
    func anIntroductionServedByItsOwnNodeTakesOneLookUpToken() async throws {
        try await withPostgres { postgres in
            let store = try await PostgresDeviceStore.open(try PostgresLocation(url: postgres.url), logger: quietLogger)
            let directory = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            do {
                // Four look-ups per source and no refill in the test's time: four introductions, then a refusal.
                let tokens = 4
                let cloud = try await CloudService.start(
                    .init(listenIP: "127.0.0.1", dataDirectory: directory, stunPort: 0, tlsPort: 0), store: store,
                    tuning: { $0.lookupRateLimit = TokenBucketRateLimiter(capacity: tokens, refillInterval: .seconds(3600)) },
                    logger: quietLogger)
                do {
                    // Unknown UIDs: the node router asks the database (no live node holds them), then this node's hub answers.
                    let replies = try await withRawConnection(try endpoint(of: cloud)) { channel, inbound in
                        var codes: [String] = []
                        for i in 0...tokens {
                            try await channel.writeAndFlush(CloudMessage.introduce(
                                requestID: "r\(i)", deviceID: DeviceIdentity.ephemeral().deviceID.description,
                                offer: sampleOffer(.ephemeral()), answerKey: sampleAnswerKey()))
                            if case .error(_, let code, _)? = try await inbound.next() { codes.append(code) }
                        }
                        return codes
                    }
                    #expect(replies == Array(repeating: CloudError.Code.unavailable.name, count: tokens) + [CloudError.Code.rateLimited.name],
                            "each introduction takes one token, not one in the router and another in the hub")
                } catch {
                    await cloud.stop()
                    throw error
                }
                await cloud.stop()
            } catch {
                await store.close()
                throw error
            }
            await store.close()
        }
    }

    @Test(.disabled(if: PostgresFixture.unavailable != nil, "\(PostgresFixture.unavailable ?? "")"))
    func theStoreRemembersDevicesAndReleasesTheSessionsOfADeadNode() async throws {
        try await withPostgres { postgres in
            let store = try await PostgresDeviceStore.open(try PostgresLocation(url: postgres.url), logger: quietLogger)
            do {
                let identity = DeviceIdentity.ephemeral()
                let key = identity.publicKey.rawRepresentation
                let now = Date()
                #expect(try await store.record(for: identity.deviceID) == nil)
                try await store.registered(identity.deviceID, publicKey: key, node: "a", at: now)
                try await store.registered(identity.deviceID, publicKey: key, node: "a", at: now.addingTimeInterval(5))
                let record = try #require(try await store.record(for: identity.deviceID))
                #expect(record.publicKey == key && record.node == "a")
                #expect(record.firstSeen.timeIntervalSince1970 == now.timeIntervalSince1970, "the first sighting stays")
                #expect(try await store.isVerified(identity.deviceID, publicKey: key))

                #expect(try await store.liveNode(of: identity.deviceID, now: now) == nil, "a node without a lease holds nothing")
                try await store.heartbeat(node: "a", leaseUntil: now.addingTimeInterval(10))
                #expect(try await store.liveNode(of: identity.deviceID, now: now) == "a")
                #expect(try await store.liveNode(of: identity.deviceID, now: now.addingTimeInterval(11)) == nil, "a lapsed lease holds nothing")
                #expect(try await store.expiredNodes(now: now.addingTimeInterval(11)) == ["a"])

                try await store.forget(node: "a", at: now.addingTimeInterval(5))
                #expect(try await store.record(for: identity.deviceID)?.node == "a", "a node whose lease runs is not forgotten")
                try await store.forget(node: "a", at: now.addingTimeInterval(11))
                #expect(try await store.record(for: identity.deviceID)?.node == nil)
                #expect(try await store.expiredNodes(now: now.addingTimeInterval(3600)).isEmpty)
                #expect(try await store.record(for: identity.deviceID)?.publicKey == key, "the verified binding stays")

                // NOTIFY reaches the node listening on its channel (sent every 100 ms until the listener is in place).
                let channel = NodeChannel.name(of: "a")
                let (payloads, sink) = AsyncStream.makeStream(of: String.self)
                let listener = Task { try await store.listen(channel: channel) { sink.yield($0) } }
                let sender = Task {
                    for _ in 0..<50 {
                        try await store.notify(channel: channel, payload: "hello")
                        try await Task.sleep(for: .milliseconds(100))
                    }
                    sink.finish()
                }
                var iterator = payloads.makeAsyncIterator()
                let received = await iterator.next()
                sender.cancel()
                listener.cancel()
                _ = await (sender.result, listener.result)
                #expect(received == "hello")
            } catch {
                await store.close()
                throw error
            }
            await store.close()
        }
    }

    /// A `trav cloud` node in its own process (output in files: no pipe to fill).
    struct Node {
        let name: String
        let child: ChildProcess
        let endpoint: TransportAddress

        /// Starts `trav cloud --database URL --node-name NAME` on free ports with its certificates in `data`, and
        /// waits (20 s at most) for its signalling address.
        init(name: String, database: String, data: String) async throws {
            self.name = name
            let child = try ChildProcess([
                MultiNodeTests.trav, "cloud", "--listen", "127.0.0.1", "--tls-port", "0", "--stun-port", "0", "--no-relay",
                "--data", data, "--database", database, "--node-name", name])
            let prefix = "cloud signalling tls "
            var address: TransportAddress?
            for _ in 0..<200 where address == nil && child.isRunning {
                let line = child.output().stdout.split(separator: "\n").first { $0.hasPrefix(prefix) }
                address = line.flatMap { TransportAddress(String($0.dropFirst(prefix.count))) }
                if address == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            guard let address else {
                child.kill(grace: .zero)
                defer { child.removeFiles() }
                throw CloudError(code: .connectionFailed, detail: "node \(name) printed no signalling address: \(child.output())")
            }
            self.child = child
            self.endpoint = address
        }

        /// Kills the node at once (SIGKILL), as a crash does.
        func crash() async {
            if child.isRunning { _ = kill(child.pid, SIGKILL) }
            _ = await child.wait(.seconds(10))
        }

        /// Stops the node if still running and removes its output files.
        func remove() {
            child.kill(grace: .zero)
            child.removeFiles()
        }
    }

    /// Three nodes, six cameras registered across them, each reached by a viewer on another node; node 0 is
    /// killed (SIGKILL), its cameras move to the next node in their lists, and every camera is reachable again
    /// from each surviving node; the dead node's lease runs out and its sessions are released.
    @Test(.disabled(if: PostgresFixture.unavailable != nil || !FileManager.default.isExecutableFile(atPath: trav),
                    "\(PostgresFixture.unavailable ?? "trav is not built (swift build)")"))
    func everyCameraIsReachableFromEveryNodeAndAgainAfterANodeIsKilled() async throws {
        try await withPostgres { postgres in
            let data = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: data) }
            var nodes: [Node] = []
            defer { for node in nodes { node.remove() } }
            // One after the other: the first makes the certificates in `data`, the others use them.
            for index in 0..<3 { nodes.append(try await Node(name: "node-\(index)", database: postgres.url, data: data)) }
            let ca = try String(contentsOfFile: data + "/ca.pem", encoding: .utf8)
            let endpoints = nodes.map { CloudEndpoint(host: "127.0.0.1", port: $0.endpoint.port, trust: .pinnedCA(ca)) }

            // Camera i starts on node i % 3 and knows the others, in order, to move to.
            let identities = (0..<6).map { _ in DeviceIdentity.generate() }
            var cameras: [any CameraSignalling] = []
            var answering: [Task<Void, Never>] = []
            defer {
                for task in answering { task.cancel() }
            }
            do {
                for (index, identity) in identities.enumerated() {
                    let home = index % 3
                    let order = (0..<3).map { endpoints[(home + $0) % 3] }
                    let camera = try await CloudClient.camera(
                        identity: identity, endpoint: order[0], fallbacks: Array(order.dropFirst()), logger: quietLogger,
                        usePresence: false)
                    cameras.append(camera)
                    answering.append(Task {
                        for await introduction in camera.introductions {
                            try? await introduction.acceptAnyViewer(answer: sampleOffer(identity, address: "203.0.113.9:6000"))
                        }
                    })
                }

                /// Whether a viewer on node `via` reaches camera `index` (its answer carries the camera's key).
                func reaches(_ index: Int, via node: Int) async -> Bool {
                    let viewer = CloudClient.viewer(endpoint: endpoints[node], logger: quietLogger)
                    let result = try? await viewer.introduce(to: identities[index].deviceID, offer: sampleOffer(DeviceIdentity.ephemeral()))
                    return result?.answer.identityKey == identities[index].publicKey.rawRepresentation
                }

                for index in identities.indices {
                    let viewerNode = (index % 3 + 1) % 3
                    #expect(await reaches(index, via: viewerNode), "camera \(index) on node \(index % 3) from node \(viewerNode)")
                }

                await nodes[0].crash()
                for index in identities.indices {
                    for viewerNode in [1, 2] {
                        let reached = await eventually(within: .seconds(60)) { await reaches(index, via: viewerNode) }
                        #expect(reached, "camera \(index) from node \(viewerNode) after node 0 was killed")
                    }
                }

                // The dead node's lease runs out (10 s) and a surviving node releases what it held.
                let store = try await PostgresDeviceStore.open(try PostgresLocation(url: postgres.url), logger: quietLogger)
                let forgotten = await eventually(within: .seconds(30)) {
                    let nodes = (try? await store.expiredNodes(now: Date().addingTimeInterval(3600))) ?? ["node-0"]
                    return !nodes.contains("node-0")
                }
                var heldByDead = 0
                for identity in identities {
                    if try await store.record(for: identity.deviceID)?.node == "node-0" { heldByDead += 1 }
                }
                await store.close()
                #expect(forgotten, "node-0's lease is removed once it ran out")
                #expect(heldByDead == 0, "no camera is recorded on the dead node")
            } catch {
                for camera in cameras { await camera.stop() }
                throw error
            }
            for camera in cameras { await camera.stop() }
        }
    }
}
