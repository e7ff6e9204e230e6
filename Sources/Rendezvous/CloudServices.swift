import ServiceLifecycle
import STUNLite
import TURNLite

/// The signalling server as a swift-service-lifecycle service.
///
/// ```
///  running ──graceful shutdown (SIGTERM) or cancellation──► stop accepting; every connection gets
///          busy{retryAfter} (cameras: spread over the fleet's size, see Configuration.restartRetryAfter)
///          and is closed; UDP presence closes (cameras present over UDP learn it from their next
///          keepalive: unknownSession from the next cloud, or no ack) ──► run() returns
/// ```
extension RendezvousServer: Service {
    /// Serves until a graceful shutdown or cancellation, then tells every client when to come back and stops.
    public func run() async throws {
        try? await gracefulShutdown()
        await stop()
    }
}

/// The STUN server as a swift-service-lifecycle service: its sockets close at a graceful shutdown.
public struct STUNService: Service {
    /// The server.
    public let server: STUNServer

    /// A service for a started `server`.
    public init(_ server: STUNServer) { self.server = server }

    /// Serves until a graceful shutdown or cancellation, then closes every socket.
    public func run() async throws {
        try? await gracefulShutdown()
        await server.shutdown()
        await server.waitUntilClosed()
    }
}

extension CloudService {
    /// Every server of the cloud as a service, to run in one `ServiceGroup`: STUN, the relay (which drains
    /// for its grace period), signalling. A group shuts services down in reverse order, so signalling
    /// tells its clients to come back later first, the relay then lets running sessions finish, STUN last.
    public var services: [any Service] {
        [STUNService(stun)] + (relay.map { [$0] } ?? []) + [rendezvous]
    }
}
