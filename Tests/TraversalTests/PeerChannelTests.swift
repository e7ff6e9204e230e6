import Crypto
import Foundation
import Synchronization
import Testing
@testable import Traversal
import PeerTestSupport

/// Channels over the SCTP engine, between two connections joined by an in-memory link.
@Suite(.serialized, .timeLimit(.minutes(2))) struct PeerChannelTests {
    static func payload(_ size: Int, seed: UInt8) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        var x = UInt32(seed) &+ 0x9E37_79B9
        for i in 0..<size {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5
            out[i] = UInt8(truncatingIfNeeded: x)
        }
        return out
    }

    /// Opens a channel from the viewer and returns it with the camera's end.
    static func channelPair(_ viewer: PeerConnection, _ camera: PeerConnection, label: String = "data",
                            delivery: ChannelDelivery = .reliable) async throws -> (PeerChannel, PeerChannel) {
        async let incoming: PeerChannel? = {
            for await c in camera.incomingChannels { return c }
            return nil
        }()
        let opened = try await viewer.openChannel(label: label, delivery: delivery)
        let accepted = try #require(await incoming)
        return (opened, accepted)
    }

    /// Sends `sizes` messages one way and checks they arrive whole and in order.
    static func transfer(_ sizes: [Int], from sender: PeerChannel, to receiver: PeerChannel) async throws {
        let expected = sizes.enumerated().map { SHA256.hash(data: payload($0.element, seed: UInt8($0.offset & 0xFF))) }
        async let received: [SHA256Digest] = {
            var digests: [SHA256Digest] = []
            for try await m in receiver.messages {
                digests.append(SHA256.hash(data: m))
                if digests.count == sizes.count { break }
            }
            return digests
        }()
        for (i, size) in sizes.enumerated() { try await sender.send(payload(size, seed: UInt8(i & 0xFF))) }
        #expect(try await received == expected)
    }

    @Test func channelOpensWithItsLabelAndDelivery() async throws {
        let (viewer, camera, _) = connectedPair()
        let (a, b) = try await Self.channelPair(viewer, camera, label: "video", delivery: .partial(lifetime: .milliseconds(300)))
        #expect(b.label == "video")
        #expect(b.delivery == .partial(lifetime: .milliseconds(300)))
        #expect(a.streamID % 2 == 0)
        await viewer.close()
        await camera.close()
    }

    @Test func reliableChannelCarriesLargeMessagesByteIdentical() async throws {
        let (viewer, camera, _) = connectedPair()
        let (a, b) = try await Self.channelPair(viewer, camera)
        try await Self.transfer([1, 1000, 1 << 20, 5000, PeerChannel.maxMessageSize, 0, 70_000], from: a, to: b)
        try await Self.transfer([300_000, 12], from: b, to: a)
        #expect(viewer.largestChannelPacket <= 1200 - PeerWire.sealedOverhead)
        await viewer.close()
        await camera.close()
    }

    @Test func reliableChannelRecoversLossAndReorderingInOrder() async throws {
        let (viewer, camera, link) = connectedPair(.init(loss: 0.05, delay: .milliseconds(5), jitter: .milliseconds(10)))
        let (a, b) = try await Self.channelPair(viewer, camera)
        try await Self.transfer((0..<200).map { [100, 1100, 3000, 20_000][$0 % 4] }, from: a, to: b)
        #expect(link.dropped.load(ordering: .relaxed) > 0)
        await viewer.close()
        await camera.close()
    }

    @Test func streamPathCarriesChannels() async throws {
        let (viewer, camera, _) = connectedPair(datagram: false, maxMessageSize: 64 * 1024)
        let (a, b) = try await Self.channelPair(viewer, camera)
        try await Self.transfer([1 << 20, 10, 200_000], from: a, to: b)
        #expect(viewer.largestChannelPacket > 1200)
        await viewer.close()
        await camera.close()
    }

    @Test func bothSidesOpenChannelsAtOnce() async throws {
        let (viewer, camera, _) = connectedPair()
        async let fromCamera = camera.openChannel(label: "c")
        async let fromViewer = viewer.openChannel(label: "v")
        let (c, v) = try await (fromCamera, fromViewer)
        #expect(c.streamID % 2 == 1)
        #expect(v.streamID % 2 == 0)
        await viewer.close()
        await camera.close()
    }

    @Test func closingAChannelFinishesThePeersMessages() async throws {
        let (viewer, camera, _) = connectedPair()
        let (a, b) = try await Self.channelPair(viewer, camera)
        try await a.send([1, 2, 3])
        a.close()
        var got: [[UInt8]] = []
        for try await m in b.messages { got.append(m) }
        #expect(got == [[1, 2, 3]])
        #expect(!b.isOpen)
        await #expect(throws: ChannelError.self) { try await a.send([1]) }
        await viewer.close()
        await camera.close()
    }

    @Test func sendSuspendsWhenThePeerCannotAcknowledge() async throws {
        let (viewer, camera, link) = connectedPair()
        let (a, _) = try await Self.channelPair(viewer, camera)
        link.conditions.withLock { $0.loss = 1 }
        let sent = Atomic<Int>(0)
        let sender = Task {
            for i in 0..<8 {
                try await a.send(Self.payload(1 << 20, seed: UInt8(i)))
                sent.add(1, ordering: .relaxed)
            }
        }
        // Give the sender ample time: it must stop once the send buffer is full, never drop.
        try await Task.sleep(for: .seconds(1))
        #expect(sent.load(ordering: .relaxed) < 8)
        #expect(a.bufferedAmount <= PeerChannel.sendBufferLimit)
        sender.cancel()
        await viewer.close()
        await camera.close()
        _ = await sender.result
    }

    @Test func tooLargeMessageIsRefusedBeforeSending() async throws {
        let (viewer, camera, _) = connectedPair()
        let (a, _) = try await Self.channelPair(viewer, camera)
        let error = await #expect(throws: ChannelError.self) { try await a.send([UInt8](repeating: 0, count: PeerChannel.maxMessageSize + 1)) }
        #expect(error?.code == .tooLarge)
        await viewer.close()
        await camera.close()
    }

    @Test func closingTheConnectionReleasesItsAssociation() async throws {
        let before = SCTPStack.liveCount
        do {
            let (viewer, camera, _) = connectedPair()
            _ = try await Self.channelPair(viewer, camera)
            #expect(SCTPStack.liveCount == before + 2)
            await viewer.close()
            await camera.close()
        }
        // The engine's tasks let go of the association as they end, just after `close` returns: wait (bounded).
        for _ in 0..<100 where SCTPStack.liveCount != before { try await Task.sleep(for: .milliseconds(20)) }
        #expect(SCTPStack.liveCount == before)
    }

    @Test func droppedConnectionReleasesItsAssociation() async throws {
        let before = SCTPStack.liveCount
        do {
            let (viewer, camera, _) = connectedPair()
            _ = try await Self.channelPair(viewer, camera)
        }
        // Tasks holding the connections end asynchronously; wait (bounded) for the release.
        for _ in 0..<100 where SCTPStack.liveCount != before { try await Task.sleep(for: .milliseconds(20)) }
        #expect(SCTPStack.liveCount == before)
    }
}
