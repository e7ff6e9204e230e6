import Foundation
import NIOCore
import PeerTestSupport
import Synchronization
import Testing
@testable import Traversal

/// A direct session whose peer's NAT rebinds (its datagrams come from a new address on the same path)
/// follows it after a sealed check, without losing a channel message; a forged or replayed datagram from
/// another address moves nothing and draws nothing toward that address.
@Suite(.serialized)
struct PeerRebindingTests {
    /// One end of a UDP-like path in memory: it sends from a public address the test can change (as a NAT
    /// that remaps the port), and receives what is sent to its current public address, with the source.
    final class NATedEnd: RebindablePeerTransport, @unchecked Sendable {
        let isDatagram = true
        let maxMessageSize = 1200
        let pathDescription: String
        /// Where its datagrams come from, and the only address that reaches it.
        let publicAddress: Mutex<SocketAddress>
        private let target: Mutex<SocketAddress>
        let peer = Mutex<NATedEnd?>(nil)
        /// Bytes sent to each destination address.
        let sentTo = Mutex<[SocketAddress: Int]>([:])
        /// Drops everything sent (the path went dark).
        let dark = Atomic<Bool>(false)
        /// Every frame delivered to this end, in order (for replays).
        let delivered = Mutex<[[UInt8]]>([])
        private let sink: AsyncStream<([UInt8], SocketAddress)>.Continuation
        private var iterator: AsyncStream<([UInt8], SocketAddress)>.AsyncIterator

        init(name: String, publicAddress: SocketAddress, target: SocketAddress) {
            pathDescription = "memory-nat \(name)"
            self.publicAddress = Mutex(publicAddress)
            self.target = Mutex(target)
            let (stream, sink) = AsyncStream.makeStream(of: ([UInt8], SocketAddress).self)
            self.sink = sink
            iterator = stream.makeAsyncIterator()
        }

        var remoteAddress: SocketAddress? { target.withLock { $0 } }

        func send(_ message: [UInt8]) async throws {
            try await send(message, to: target.withLock { $0 })
        }

        func send(_ message: [UInt8], to address: SocketAddress) async throws {
            sentTo.withLock { $0[address, default: 0] += message.count }
            guard !dark.load(ordering: .relaxed) else { return }
            // Only the peer's current mapping reaches it: the old one is gone.
            guard let peer = peer.withLock({ $0 }), peer.publicAddress.withLock({ $0 }) == address else { return }
            peer.deliver(message, from: publicAddress.withLock { $0 })
        }

        /// Hands `message` to the session as if it came from `source`.
        func deliver(_ message: [UInt8], from source: SocketAddress) {
            delivered.withLock { $0.append(message) }
            sink.yield((message, source))
        }

        func receive() async throws -> [UInt8] {
            while true {
                let (m, source) = try await receiveFromAnyAddress()
                if source == remoteAddress { return m }
            }
        }

        func receiveFromAnyAddress() async throws -> (message: [UInt8], source: SocketAddress) {
            guard let next = await iterator.next() else { throw StrategyError(code: .failed, detail: "closed") }
            return next
        }

        func rebind(to address: SocketAddress) {
            target.withLock { $0 = address }
        }

        func close() async {
            sink.finish()
        }
    }

    static let viewerAddress = try! SocketAddress(ipAddress: "203.0.113.10", port: 40_000)
    static let cameraAddress = try! SocketAddress(ipAddress: "198.51.100.20", port: 50_000)
    static let reboundAddress = try! SocketAddress(ipAddress: "203.0.113.10", port: 40_777)
    static let spoofedAddress = try! SocketAddress(ipAddress: "192.0.2.66", port: 6_666)

    /// A viewer and a camera on a direct memory path.
    static func directPair(addressChecks: AddressCheckLimiter = .shared)
        -> (viewer: PeerConnection, camera: PeerConnection, viewerEnd: NATedEnd, cameraEnd: NATedEnd) {
        let v = NATedEnd(name: "viewer", publicAddress: viewerAddress, target: cameraAddress)
        let c = NATedEnd(name: "camera", publicAddress: cameraAddress, target: viewerAddress)
        v.peer.withLock { $0 = c }
        c.peer.withLock { $0 = v }
        let (viewer, camera) = connectedPair(viewer: v, camera: c, path: "memory-direct", addressChecks: addressChecks)
        return (viewer, camera, v, c)
    }

    @Test func aSessionFollowsItsPeerToANewAddressWithoutLosingAMessage() async throws {
        let (viewer, camera, viewerEnd, cameraEnd) = Self.directPair()
        defer { Task { await viewer.close(); await camera.close() } }
        let cameraMoves = camera.pathMoves
        let numbers = try await NumberedChannelRun(from: viewer, to: camera)
        try await Task.sleep(for: .milliseconds(300))
        #expect(numbers.receivedCount > 10, "the channel runs before the rebinding")

        // The viewer's NAT remaps it: its datagrams now come from a new port, and the old one reaches nobody.
        viewerEnd.publicAddress.withLock { $0 = Self.reboundAddress }
        let rebound = ContinuousClock.now
        let move = try #require(await PathMigrationTests.nextMove(cameraMoves, within: .seconds(5)), "the camera never followed")
        print("the camera followed the viewer's new address \((ContinuousClock.now - rebound).milliseconds) ms after its NAT rebound")
        #expect(move.reason == .rebinding && move.route == "memory-nat camera" && move.from == move.to, "\(move)")
        #expect(cameraEnd.remoteAddress == Self.reboundAddress)
        #expect(viewer.report.moves.isEmpty, "the viewer's side of the path did not change")

        let (got, total) = try await numbers.finish()
        #expect(got == Array(0..<total), "\(got.count) of \(total) in order")
        #expect(cameraEnd.sentTo.withLock { $0[Self.spoofedAddress] } == nil)
    }

    @Test func aForgedOrReplayedDatagramFromAnotherAddressMovesNothing() async throws {
        let (viewer, camera, _, cameraEnd) = Self.directPair()
        defer { Task { await viewer.close(); await camera.close() } }
        let inbound = Task { () -> Int in
            var count = 0
            for try await _ in camera.inbound {
                count += 1
                if count == 3 { break }
            }
            return count
        }
        for i in 0..<3 { try await viewer.send([UInt8(i)]) }
        #expect(try await inbound.value == 3)
        let genuine = try #require(cameraEnd.delivered.withLock { $0.last })

        // A datagram with the session's wire type but not sealed with its keys, and a copy of a genuine one.
        var forged: [UInt8] = [PeerWire.sealed] + (1...8).map { _ in UInt8.random(in: 0 ... .max) }
        forged += [UInt8](repeating: 0, count: 40)
        cameraEnd.deliver(forged, from: Self.spoofedAddress)
        cameraEnd.deliver(genuine, from: Self.spoofedAddress)
        // A genuine datagram later still arrives and is used: the session did not move away from the viewer.
        let after = Task { () -> [UInt8]? in
            for try await m in camera.inbound { return m }
            return nil
        }
        try await Task.sleep(for: .milliseconds(300))
        try await viewer.send([42])
        #expect(try await after.value == [42])

        #expect(cameraEnd.sentTo.withLock { $0[Self.spoofedAddress] } == nil, "nothing was sent toward the spoofed address")
        #expect(cameraEnd.remoteAddress == Self.viewerAddress)
        #expect(camera.report.moves.isEmpty && viewer.report.moves.isEmpty)
    }
}
