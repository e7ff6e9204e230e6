import Crypto
import Foundation
@_spi(Fuzzing) @testable import Strategies
import STUNLite
import Testing
import Traversal

/// A LAN impostor that knows the camera's public key (it is no secret) but not its private key: it
/// answers every `find` at once with the camera's key, its own address and a forged signature, and
/// answers every reachability ping, so a viewer that believed it would race toward it and fail the
/// handshake. The viewer must ignore it and connect to the real camera, on the LAN or through the cloud.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct LANImpostorTests {
    /// The impostor: a UDP socket on loopback.
    final class KeyReplayingImpostor: Sendable {
        let socket: STUNUDPClient
        let task: Task<Void, Never>
        /// Where it listens.
        var address: TransportAddress { socket.localAddress }

        init(replaying key: Data) async throws {
            let socket = try await STUNUDPClient.bind(to: TransportAddress(ip: IPAddress("127.0.0.1")!, port: 0),
                                                      maxDatagramSize: LANDiscovery.readSize)
            self.socket = socket
            task = Task {
                for await (source, bytes) in socket.otherDatagrams {
                    if let find = LANDiscovery.Message.decode(bytes, type: "find") {
                        let offer = PeerOffer(identityKey: key,
                                              candidates: [Candidate(strategy: "direct-lan", kind: .host, address: socket.localAddress.description)],
                                              strategies: ["direct-lan"])
                        let here = LANDiscovery.Message(type: "here", requestID: find.requestID, offer: offer,
                                                        signature: Data(repeating: 0x5A, count: 64).base64EncodedString())
                        if let data = try? JSONEncoder().encode(here) { try? await socket.send(Array(data), to: source) }
                    } else if bytes.count > 2, bytes[0] == PeerWire.probe, bytes[1] == 1 {
                        try? await socket.send([PeerWire.probe, 2] + bytes[2...], to: source)
                    }
                }
            }
        }

        func stop() async {
            task.cancel()
            await socket.close()
        }
    }

    static func loopback(_ port: UInt16) -> TransportAddress { TransportAddress(ip: IPAddress("127.0.0.1")!, port: port) }

    static func connector(_ identity: DeviceIdentity) -> Connector {
        Connector(configuration: .init(identity: identity, strategies: [DirectLAN(scope: .loopbackOnly)],
                                       connectTimeout: testConnectTimeout, gatherTimeout: testGatherTimeout))
    }

    /// Serves `sources` as `camera` with password "pw", echoing; returns the server task.
    static func serve(_ camera: DeviceIdentity, _ sources: [AsyncStream<any IncomingIntroduction>]) throws -> Task<Void, Never> {
        let admitted = connector(camera).serve(sources, access: try .password("pw", parameters: testCost))
        return Task {
            for await c in admitted {
                Task { for try await m in c.inbound { try await c.send(m) } }
            }
        }
    }

    @Test func anImpostorReplayingTheCamerasKeyFirstIsIgnoredAndTheRealCameraOnTheLANConnects() async throws {
        let camera = DeviceIdentity.generate()
        let impostor = try await KeyReplayingImpostor(replaying: camera.publicKey.rawRepresentation)
        let responder = try await LANDiscovery.Responder(device: camera.deviceID, identity: camera, port: 0)
        let server = try Self.serve(camera, [responder.introductions])
        defer {
            server.cancel()
            Task { await responder.stop(); await impostor.stop() }
        }
        // The impostor is asked first and answers at once; the camera gathers before it answers.
        let finder = LANDiscovery.Finder(destinations: [impostor.address, Self.loopback(responder.localAddress.port)], timeout: .seconds(15))
        let c = try await Self.connector(.ephemeral()).connect(to: camera.deviceID, via: finder, credential: .password("pw"))
        #expect(c.peerIdentityKey.rawRepresentation == camera.publicKey.rawRepresentation)
        #expect(!(c.report.route ?? "").contains(impostor.address.description), "the path leads to the camera: \(c.report.route)")
        #expect(try await ConnectorLoopbackTests.echo(c, bytes: 500))
        await c.close()
    }

    @Test func anImpostorReplayingTheCamerasKeyLeavesTheViewerToTheCloud() async throws {
        let camera = DeviceIdentity.generate()
        let impostor = try await KeyReplayingImpostor(replaying: camera.publicKey.rawRepresentation)
        let cloud = InMemoryIntroducer()
        let server = try Self.serve(camera, [cloud.introductions])
        defer {
            cloud.finish()
            server.cancel()
            Task { await impostor.stop() }
        }
        let finder = LANDiscovery.Finder(destinations: [impostor.address], timeout: .seconds(10))
        let via = FirstAnswering([finder, LANDiscoveryTests.Delayed(inner: cloud, delay: .milliseconds(300))])
        let c = try await Self.connector(.ephemeral()).connect(to: camera.deviceID, via: via, credential: .password("pw"))
        #expect(c.peerIdentityKey.rawRepresentation == camera.publicKey.rawRepresentation)
        #expect(c.report.requestID?.hasPrefix("req-") == true, "introduced by the cloud, not the impostor")
        #expect(try await ConnectorLoopbackTests.echo(c, bytes: 500))
        await c.close()
    }

    @Test func aHereSignatureFitsOnlyItsOwnQuestionAndAnswer() throws {
        let camera = DeviceIdentity.ephemeral()
        let device = DeviceID(publicKey: camera.publicKey)
        let answer = PeerOffer(identityKey: camera.publicKey.rawRepresentation,
                               candidates: [Candidate(strategy: "direct-lan", kind: .host, address: "192.0.2.5:4000")], strategies: ["direct-lan"])
        let signature = try camera.signature(for: LANDiscovery.hereSignedData(deviceID: device.description, requestID: "lan-a", answer: answer))
        let here = LANDiscovery.Message(type: "here", requestID: "lan-a", offer: answer, signature: signature.base64EncodedString())
        #expect(LANDiscovery.isSigned(here, for: device, requestID: "lan-a"))
        #expect(!LANDiscovery.isSigned(here, for: device, requestID: "lan-b"), "replayed to another question")
        var moved = here
        moved.offer.candidates[0].address = "192.0.2.66:4000"
        #expect(!LANDiscovery.isSigned(moved, for: device, requestID: "lan-a"), "candidates swapped by an impostor")
        var unsigned = here
        unsigned.signature = nil
        #expect(!LANDiscovery.isSigned(unsigned, for: device, requestID: "lan-a"))
    }
}
