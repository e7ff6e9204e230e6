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

    /// Which end of the DTLS association the engine runs on: it decides the stream ids the engine opens.
    public enum DTLSSide: Sendable, Hashable {
        /// Sent the ClientHello (`a=setup:active`): opens even stream ids (RFC 8832 §6).
        case client
        /// Answered it (`a=setup:passive`): opens odd stream ids (RFC 8832 §6).
        case server
    }

    /// An association whose packets leave through `send`, opening the stream ids of `side` (RFC 8832 §6): the
    /// parity native sessions give the viewer (even) or the camera (odd). ``connect()`` starts it.
    public init(side: DTLSSide, pathMTU: Int, logger: Logger, send: @escaping @Sendable ([UInt8]) async -> Void) throws {
        session = try ChannelSession(role: side == .client ? .viewer : .camera, configuration: .datagram(pathMTU: pathMTU),
                                     logger: logger, send: send)
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
