import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Rendezvous
import Synchronization
import Testing
@testable import Traversal

/// Registration under load: keys verified once and remembered, unverified registrations limited
/// per source, work refused with a retry-after, room kept for viewers, a storm after a restart.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct RegistrationAdmissionTests {
    /// A signalling connection to `endpoint` from `sourceIP` (any 127/8 address), closed after `body`.
    func withConnection<T>(
        from sourceIP: String, to endpoint: CloudEndpoint,
        _ body: (_ channel: any Channel, _ inbound: inout NIOAsyncChannelInboundStream<CloudMessage>.AsyncIterator) async throws -> T
    ) async throws -> T {
        let context = try pinnedTLSContext(endpoint)
        let connection = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(to: try SocketAddress(ipAddress: sourceIP, port: 0))
            .connect(host: endpoint.host, port: Int(endpoint.port)) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        try NIOSSLClientHandler(context: context, serverHostname: nil),
                        ByteToMessageHandler(CloudFrameDecoder()), MessageToByteHandler(CloudFrameEncoder()))
                    return try NIOAsyncChannel<CloudMessage, Never>(wrappingChannelSynchronously: channel)
                }
            }
        return try await connection.executeThenClose { inbound in
            var iterator = inbound.makeAsyncIterator()
            return try await body(connection.channel, &iterator)
        }
    }

    /// Registers `identity` from `sourceIP` and returns the cloud's last answer.
    func register(_ identity: DeviceIdentity, from sourceIP: String, to endpoint: CloudEndpoint) async throws -> CloudMessage? {
        try await withConnection(from: sourceIP, to: endpoint) { channel, inbound in
            try await rawRegister(identity, endpoint: endpoint, channel: channel, inbound: &inbound)
        }
    }

    @Test func aKeyVerifiedOnceIsNotVerifiedAgainAfterARestart() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let identity = DeviceIdentity.generate()
        try await withCloud(directory: directory) { cloud, endpoint in
            let reply = try await register(identity, from: "127.0.0.1", to: endpoint)
            guard case .registered? = reply else { throw CloudError(code: .badRequest, detail: "\(String(describing: reply))") }
            #expect(cloud.rendezvous.verifications == 1, "the first registration pays the UID's scrypt")
        }
        try await withCloud(directory: directory) { cloud, endpoint in
            let reply = try await register(identity, from: "127.0.0.1", to: endpoint)
            guard case .registered? = reply else { throw CloudError(code: .badRequest, detail: "\(String(describing: reply))") }
            #expect(cloud.rendezvous.verifications == 0, "the restarted cloud remembers the binding")
            let record = try await cloud.rendezvous.store.record(for: identity.deviceID)
            #expect(record?.publicKey == identity.publicKey.rawRepresentation)
        }
    }

    @Test func unverifiedRegistrationsAreLimitedPerSourceWhileOtherSourcesAndKnownKeysRegister() async throws {
        let known = DeviceIdentity.generate()
        let newcomer = DeviceIdentity.generate()
        try await withCloud(tuning: { $0.registrationRateLimit = .init(capacity: 2, refillInterval: .seconds(3600)) }) { cloud, endpoint in
            guard case .registered? = try await register(known, from: "127.0.0.3", to: endpoint) else {
                Issue.record("the known camera did not register")
                return
            }
            // The flood: fresh keys claiming a UID (no scrypt for the sender), each costing the cloud one if proven.
            var answers: [String] = []
            for _ in 0..<5 {
                let attacker = DeviceIdentity.generate()
                let answer = try await withConnection(from: "127.0.0.2", to: endpoint) { channel, inbound in
                    try await channel.writeAndFlush(CloudMessage.register(
                        deviceID: known.deviceID.description, publicKey: attacker.publicKey.rawRepresentation.base64EncodedString()))
                    return try await inbound.next()
                }
                switch answer {
                case .challenge?: answers.append("challenge")
                case .error(_, let code, _)?: answers.append(code)
                default: answers.append(String(describing: answer))
                }
            }
            #expect(answers == ["challenge", "challenge", "rate-limited", "rate-limited", "rate-limited"])
            guard case .registered? = try await register(newcomer, from: "127.0.0.4", to: endpoint) else {
                Issue.record("another source could not register")
                return
            }
            guard case .registered? = try await register(known, from: "127.0.0.2", to: endpoint) else {
                Issue.record("a verified key needs no token, even from the flooding source")
                return
            }
            #expect(cloud.rendezvous.verifications == 2, "the known camera and the newcomer, nothing for the flood")
        }
    }

    @Test func registrationThatCannotBeVerifiedInTimeIsToldWhenToComeBack() async throws {
        // An estimated 30 s per scrypt cannot finish within the 10 s a client waits.
        let tuning: (inout RendezvousServer.Configuration) -> Void = {
            $0.verification = .init(workers: 1, maxQueued: 0, initialCost: .seconds(30))
        }
        try await withCloud(tuning: tuning) { cloud, endpoint in
            let reply = try await register(DeviceIdentity.generate(), from: "127.0.0.1", to: endpoint)
            guard case .busy(let milliseconds)? = reply else {
                Issue.record("expected busy, got \(String(describing: reply))")
                return
            }
            #expect(milliseconds >= 1000)
            #expect(cloud.rendezvous.verifications == 0, "no work spent on a client that would time out")
        }
    }

    @Test func camerasBeyondTheViewerReserveComeBackWhenThereIsRoomAndViewersStillGetIn() async throws {
        let tuning: (inout RendezvousServer.Configuration) -> Void = {
            $0.maxConnections = 4
            $0.viewerReserve = 3
            $0.fullRetryAfter = .milliseconds(300)
        }
        let first = DeviceIdentity.generate()
        let second = DeviceIdentity.generate()
        let secondID = second.deviceID
        try await withCloud(tuning: tuning) { cloud, endpoint in
            let firstCamera = try await CloudClient.camera(identity: first, endpoint: endpoint, logger: quietLogger)
            let waiting = Task { try await CloudClient.camera(identity: second, endpoint: endpoint, logger: quietLogger) }
            try await Task.sleep(for: .seconds(1))
            #expect(await cloud.rendezvous.registry.lookup(secondID) == nil, "one camera place only")
            // A viewer still reaches the registered camera: its place is kept.
            let viewer = CloudClient.viewer(endpoint: endpoint)
            let offered = Mutex(false)
            let decliner = Task {
                var incoming = firstCamera.introductions.makeAsyncIterator()
                guard let introduction = await incoming.next() else { return }
                offered.withLock { $0 = true }
                await introduction.decline()
            }
            await #expect(throws: CloudError.self) {
                try await viewer.introduce(to: first.deviceID, offer: sampleOffer(.ephemeral()))
            }
            decliner.cancel()
            #expect(offered.withLock { $0 }, "the camera received the viewer's offer")
            await firstCamera.stop()
            let registered = await eventually(within: .seconds(5)) { await cloud.rendezvous.registry.lookup(secondID) != nil }
            #expect(registered, "the waiting camera came back after its retry-after")
            waiting.cancel()
            if let camera = try? await waiting.value { await camera.stop() }
        }
    }

    /// A well-formed UID that no key derives to: with the store vouching for it, nothing runs a scrypt.
    static func madeUpDeviceID() throws -> DeviceID {
        let symbols = (0..<(DeviceID.symbolCount - 1)).map { _ in UInt8.random(in: 0..<32) }
        let all = symbols + [GF32.checkSymbol(for: symbols)]
        return try DeviceID(String(decoding: all.map { DeviceID.alphabet[Int($0)] }, as: UTF8.self))
    }

    @Test func stormOf200CamerasReRegistersAfterARestartWithoutAScrypt() async throws {
        let count = 200
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // The fleet as a store remembers it: 200 bindings verified before.
        let fleet = try (0..<count).map { _ in (identity: DeviceIdentity.generate(), deviceID: try Self.madeUpDeviceID()) }
        let store = try await SQLiteDeviceStore.open(path: directory + "/" + SQLiteDeviceStore.fileName)
        for camera in fleet {
            try await store.registered(camera.deviceID, publicKey: camera.identity.publicKey.rawRepresentation, node: "old", at: Date())
        }
        await store.close()

        let configuration = CloudService.Configuration(listenIP: "127.0.0.1", dataDirectory: directory, stunPort: 0, tlsPort: 0)
        let first = try await CloudService.start(configuration, logger: quietLogger)
        let port = first.rendezvous.address.port
        let cameraEndpoint = try endpoint(of: first)
        let registrations = Mutex([Int](repeating: 0, count: count))
        // Cameras losing the cloud is the point here: only errors are worth printing.
        var cameraLogger = quietLogger
        cameraLogger.logLevel = .error
        var sessions: [CloudCameraSession] = []
        do {
            for (index, camera) in fleet.enumerated() {
                sessions.append(CloudCameraSession(
                    identity: camera.identity, deviceID: camera.deviceID, endpoint: cameraEndpoint, logger: cameraLogger
                ) { _ in registrations.withLock { $0[index] += 1 } })
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for session in sessions { group.addTask { try await session.start() } }
                try await group.waitForAll()
            }
            #expect(first.rendezvous.verifications == 0)
        } catch {
            for session in sessions { await session.stop() }
            await first.stop()
            throw error
        }
        await first.stop()
        let restarted = ContinuousClock.now
        do {
            try await withCloud(directory: directory, tlsPort: port) { second, _ in
                let all = await eventually(within: .seconds(30)) {
                    registrations.withLock { $0.allSatisfy { $0 >= 2 } }
                }
                let again = registrations.withLock { $0.filter { $0 >= 2 }.count }
                #expect(all, "\(again) of \(count) registered again after \(ContinuousClock.now - restarted)")
                #expect(second.rendezvous.verifications == 0, "every binding was remembered")
            }
        } catch {
            for session in sessions { await session.stop() }
            throw error
        }
        for session in sessions { await session.stop() }
    }
}
