import Logging

/// The channel engine of native sessions (SCTP, RFC 9260, with the data channel establishment protocol,
/// RFC 8832) for a transport that lives outside this module: WebRTC's SCTP over DTLS (RFC 8261), where
/// the browser's peer connection is the other end.
///
/// System programming interface (`@_spi(WebRTC)`), not part of Traversal's public API: only the WebRTC
/// module drives an association over a transport it owns; applications see ``PeerChannel``s.
///
/// ```
///  DTLS application data ─► input(_:) ─► association ─► DCEP / messages ─► incoming ─► PeerChannel
///  PeerChannel.send ─► association ─► packets ─► send (the caller seals them in DTLS records)
/// ```
@_spi(WebRTC) public final class DataChannelEngine: Sendable {
    private let session: ChannelSession

    /// An association whose packets leave through `send`; `role` picks the stream-id parity: the DTLS server
    /// opens odd ids (RFC 8832 §6), as ``ConnectionRole/camera`` does. ``connect()`` starts it.
    public init(role: ConnectionRole, pathMTU: Int, logger: Logger, send: @escaping @Sendable ([UInt8]) async -> Void) throws {
        session = try ChannelSession(role: role, configuration: .datagram(pathMTU: pathMTU), logger: logger, send: send)
    }

    /// Channels the peer opened (DATA_CHANNEL_OPEN, RFC 8832 §5.1), acknowledged.
    public var incoming: AsyncStream<PeerChannel> { session.incoming }

    /// Bytes accepted and not yet acknowledged by the peer.
    public var bufferedAmount: Int { session.bufferedAmount }

    /// Starts the association (both ends send INIT, as WebRTC does: RFC 8841 §9.3).
    public func connect() { session.connect() }

    /// One SCTP packet from the peer (the payload of one DTLS record).
    public func input(_ packet: [UInt8]) { session.input(packet) }

    /// Opens a channel and waits for the peer's DATA_CHANNEL_ACK (RFC 8832 §6); with `early`, an ordered channel
    /// returns once its DATA_CHANNEL_OPEN is sent, so its first messages follow it in the same round trip.
    public func open(label: String, delivery: ChannelDelivery, priority: ChannelPriority, early: Bool = false) async throws -> PeerChannel {
        try await session.open(label: label, delivery: delivery, priority: priority, early: early)
    }

    /// Closes every channel and the association.
    public func close(reason: String) { session.close(reason: reason) }
}
