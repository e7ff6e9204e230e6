import NIOCore
import NIOPosix
import STUNLite
import Testing
import TURNLite
@testable import FloodKit

/// What a relay flood lane writes: ChannelData padded to 4 bytes over streams and unpadded over UDP
/// (RFC 8656 §12.5), laid back to back so that the server's framer finds each frame where it starts;
/// and a server whose bytes are not TURN ends a stream flood with an error.
@Suite(.timeLimit(.minutes(1)))
struct RelayFloodFramingTests {
    static let channel = RelayFloodConfiguration.channel

    /// Every padding a payload length can need (0–3 bytes), small and near the largest payload.
    static let payloadLengths = Array(1...9) + [1199, 1200, 1201, 1202, RelayFloodConfiguration.maxPayloadBytes]

    static func payload(_ length: Int) -> [UInt8] { (0..<length).map { UInt8(truncatingIfNeeded: 7 &+ $0) } }

    @Test(arguments: payloadLengths)
    func streamFramesArePaddedToFourBytesAndSplitBackIntoTheirPayloads(length: Int) throws {
        let payload = Self.payload(length)
        let count = 3
        let frames = RelayFloodLane.frames(channel: Self.channel, payload: payload, padded: true, count: count)
        let frameSize = 4 + length + (4 - length % 4) % 4
        #expect(frameSize % 4 == 0)
        #expect(frames.count == count * frameSize)
        // Walk the stream as the server's framer does: the length field counts the data, not the padding.
        var buffer = ByteBuffer(bytes: frames)
        var seen = 0
        while buffer.readableBytes > 0, seen <= count {
            let size = try #require(try STUNFrameDecoder.frameSize(buffer, allowsChannelData: true))
            #expect(size == frameSize)
            let read = buffer.readBytes(length: size)
            let frame = try #require(read)
            #expect(ChannelData.header(frame)?.channel == Self.channel)
            #expect(ChannelData.header(frame)?.length == length)
            #expect(try ChannelData.decode(frame).payload == payload)
            #expect(frame[(4 + length)...].allSatisfy { $0 == 0 }, "padding is zeros")
            seen += 1
        }
        #expect(seen == count)
    }

    @Test(arguments: payloadLengths)
    func datagramFramesCarryNoPadding(length: Int) throws {
        let payload = Self.payload(length)
        let frames = RelayFloodLane.frames(channel: Self.channel, payload: payload, padded: false, count: 2)
        #expect(frames.count == 2 * (4 + length))
        #expect(try ChannelData.decode(frames[0..<(4 + length)]).payload == payload)
        #expect(try ChannelData.decode(frames[(4 + length)...]).payload == payload)
    }

    /// A "server" that answers the first request with bytes that are neither STUN nor ChannelData (first
    /// two bits 11): the lane's framer drops the connection, and the flood fails with an error instead
    /// of waiting, crashing or buffering.
    @Test func aStreamFloodFailsWhenTheServerSendsBytesThatAreNotTURN() async throws {
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(GarbageWriter()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        var c = RelayFloodConfiguration()
        c.transport = .tcp
        c.server = try #require(listener.localAddress.flatMap(TransportAddress.init))
        c.lanes = 1
        c.warmupSeconds = 0
        c.durationSeconds = 0.2
        let error = await #expect(throws: FloodError.self) { _ = try await RelayFlood(configuration: c).run() }
        #expect(error?.description.contains("closed") == true, "\(error.map { "\($0)" } ?? "no error")")
        try await listener.close()
    }

    /// Answers whatever arrives with 64 bytes of 0xFF.
    final class GarbageWriter: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.writeAndFlush(NIOAny(ByteBuffer(repeating: 0xFF, count: 64)), promise: nil)
        }
    }
}
