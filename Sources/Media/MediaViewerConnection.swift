import Traversal

/// What ``MediaSender`` needs of a viewer's connection: channels to open and accept, and how much of what it
/// sent is still unacknowledged. A native `PeerConnection` is one; a browser's WebRTC session is another.
public protocol MediaViewerConnection: AnyObject, Sendable {
    /// Opens a channel to the viewer (RFC 8832) and returns once the viewer has acknowledged it.
    func openChannel(label: String, delivery: ChannelDelivery, priority: ChannelPriority) async throws -> PeerChannel
    /// Channels the viewer opens, in the order they arrive; finishes when the connection closes.
    var incomingChannels: AsyncStream<PeerChannel> { get }
    /// Bytes sent on the connection's channels that the viewer has not yet acknowledged.
    var channelBufferedAmount: Int { get }
}

extension PeerConnection: MediaViewerConnection {}
