import DatagramIO
import NIOCore
import STUNLite
import TURNLite

/// A lane's own TCP connection or TLS session: allocates, permits and binds with a ``TURNClient`` (the
/// allocation flood's client and connect code), then writes its ChannelData padded to 4 bytes as
/// streams require (RFC 8656 §12.5), many frames per write.
///
/// ```
///  connect (TCP, or TLS over TCP)  Allocate (401, then signed)  CreatePermission  ChannelBind
///  write [frame|pad][frame|pad]…   (at most ``maxWriteBytes``, never past the window or the connection's high-water mark)
/// ```
///
/// The client's own framer reads what the server sends (STUN and ChannelData, a frame at most
/// STUNLite's message size): bytes that break the framing close the connection, and the next send
/// fails the flood.
final class StreamRelaySender: RelayFloodSender {
    /// Bytes one write carries at most: a TLS record's plaintext (RFC 8446 §5.1), so a write costs the
    /// server one record to open.
    static let maxWriteBytes = 16_384

    private let client: TURNClient
    private let frames: ByteBuffer
    private let frameSize: Int
    private let framesPerWrite: Int

    private init(client: TURNClient, channel: UInt16, payload: [UInt8]) {
        self.client = client
        frameSize = ChannelData.headerSize + payload.count + ChannelData.streamPadding(length: payload.count)
        framesPerWrite = max(1, Self.maxWriteBytes / frameSize)
        frames = ByteBuffer(bytes: RelayFloodLane.frames(channel: channel, payload: payload, padded: true, count: framesPerWrite))
    }

    /// Connects over TCP or TLS, allocates, opens the peer socket, permits and binds it (RFC 8656 §7, §10, §12);
    /// closes the connection (and frees the allocation) when a step fails.
    static func open(payload: [UInt8], configuration c: RelayFloodConfiguration,
                     group: any EventLoopGroup) async throws(FloodError) -> (StreamRelaySender, MultiMessageSocket) {
        let client: TURNClient
        do {
            client = try await TURNClient.connect(c.transport.clientConfiguration(server: c.server, username: c.username, password: c.password),
                                                  group: group)
        } catch {
            throw FloodError("\(c.transport.rawValue) connect to \(c.server): \(error)")
        }
        do {
            let relayed = try await client.allocate().relayed
            let peer = try RelayFloodLane.openPeer(toward: relayed)
            try await client.createPermission(for: [peer.local])
            let channel = try await client.bindChannel(to: peer.local)
            return (StreamRelaySender(client: client, channel: channel, payload: payload), peer)
        } catch {
            await client.close()
            throw error as? FloodError ?? FloodError("\(c.transport.rawValue) setup with \(c.server): \(error)")
        }
    }

    /// One write of up to ``maxWriteBytes`` worth of frames; none while the connection's buffer is full.
    func send(upTo limit: Int) throws(FloodError) -> Int {
        let n = min(limit, framesPerWrite)
        do {
            return try client.sendFramed(frames.getSlice(at: frames.readerIndex, length: n * frameSize)!) ? n : 0
        } catch {
            throw FloodError("\(error) (the server closed it, or sent bytes that are neither STUN nor padded ChannelData)")
        }
    }

    func free() async { await client.close() }
}
