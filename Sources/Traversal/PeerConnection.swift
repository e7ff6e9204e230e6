import Crypto
import Foundation
import Synchronization

/// An authenticated, end-to-end encrypted connection between a viewer and a camera, on whatever
/// path won the race. Messages are delivered whole; on datagram paths they may be lost or
/// reordered (as video tolerates), never replayed or forged.
public final class PeerConnection: Sendable {
    /// Keepalives are sent this often by default, well under a NAT's UDP timeout (30 s in the lab, RFC 4787 §4.3 asks ≥ 2 min).
    public static let keepaliveInterval: Duration = .seconds(10)
    /// With nothing received for this long the connection is considered dead.
    public static let idleTimeout: Duration = .seconds(45)
    /// Keepalive intervals a connection accepts, others are clamped (at the top, the peer's ``idleTimeout`` still spans two).
    public static let keepaliveRange: ClosedRange<Duration> = .seconds(1) ... .seconds(20)
    /// Messages buffered in ``inbound`` before the oldest are dropped.
    public static let inboundBufferLimit = 1024

    /// Which side we are.
    public let role: ConnectionRole
    /// How the connection came to be.
    public let report: ConnectionReport
    /// The winning strategy's id.
    public var path: String { report.path ?? "" }
    /// The peer's Ed25519 identity key (on a viewer: the key behind the UID it asked for).
    public let peerIdentityKey: Curve25519.Signing.PublicKey
    /// The largest application message `send` accepts on this path.
    public let maxMessageSize: Int
    /// Application messages from the peer; finishes when the connection closes.
    public let inbound: AsyncThrowingStream<[UInt8], any Error>
    /// How often this side sends keepalives; nil when it sends none (and so does not time out an idle peer either).
    public let keepalive: Duration?

    private let transport: any PeerTransport
    private let sendChannel: Mutex<SecureDatagramChannel>
    private let continuation: AsyncThrowingStream<[UInt8], any Error>.Continuation
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let lastHeard = Mutex(ContinuousClock.now)

    /// Takes over a channel already used for the hello exchange: its send counter and replay window carry on
    /// (one copy only seals, the other only opens), so no nonce is ever reused.
    /// `keepalive` (clamped to ``keepaliveRange``) nil sends none: a NAT then forgets an idle path after its UDP timeout (for tests that show it).
    init(role: ConnectionRole, report: ConnectionReport, peerIdentity: Curve25519.Signing.PublicKey, transport: any PeerTransport,
         channel: SecureDatagramChannel, replayOnHello: [UInt8]?, keepalive: Duration? = PeerConnection.keepaliveInterval) {
        self.role = role
        self.keepalive = keepalive.map { min(max($0, Self.keepaliveRange.lowerBound), Self.keepaliveRange.upperBound) }
        self.report = report
        self.peerIdentityKey = peerIdentity
        self.transport = transport
        self.maxMessageSize = transport.maxMessageSize - PeerWire.sealedOverhead
        self.sendChannel = Mutex(channel)
        let receiveChannel = channel
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: [UInt8].self, throwing: (any Error).self,
                                                                    bufferingPolicy: .bufferingNewest(Self.inboundBufferLimit))
        self.inbound = stream
        self.continuation = continuation
        startTasks(receiveChannel: receiveChannel, replayOnHello: replayOnHello)
    }

    /// Sends one application message (at most ``maxMessageSize`` bytes).
    public func send(_ message: [UInt8]) async throws {
        guard message.count <= maxMessageSize else {
            throw TraversalError(code: .messageTooLarge, detail: "\(message.count) bytes, at most \(maxMessageSize) on \(path)")
        }
        try await sendSealed(.application, message)
    }

    /// Closes the connection and tells the peer.
    public func close() async {
        try? await sendSealed(.close, [])
        shutdown(error: nil)
        await transport.close()
    }

    func sendSealed(_ type: SessionMessageType, _ body: [UInt8]) async throws {
        let packet = try sendChannel.withLock { try $0.seal([type.rawValue] + body) }
        try await transport.send([PeerWire.sealed] + packet)
    }

    private func shutdown(error: (any Error)?) {
        if let error { continuation.finish(throwing: error) } else { continuation.finish() }
        let all = tasks.withLock { t -> [Task<Void, Never>] in
            let copy = t
            t = []
            return copy
        }
        for t in all { t.cancel() }
    }

    private func startTasks(receiveChannel: SecureDatagramChannel, replayOnHello: [UInt8]?) {
        let receiver = Task { [weak self, transport] in
            var channel = receiveChannel
            while !Task.isCancelled {
                let frame: [UInt8]
                do {
                    frame = try await transport.receive()
                } catch {
                    self?.shutdown(error: Task.isCancelled ? nil : TraversalError(code: .closed, detail: "\(error)"))
                    return
                }
                guard let self else { return }
                guard frame.first == PeerWire.sealed, let plain = try? channel.open(Array(frame.dropFirst())),
                      let type = plain.first.flatMap(SessionMessageType.init(rawValue:)) else { continue }
                self.lastHeard.withLock { $0 = .now }
                switch type {
                case .application:
                    self.continuation.yield(Array(plain.dropFirst()))
                case .close:
                    self.shutdown(error: nil)
                    await transport.close()
                    return
                case .hello:
                    // The viewer repeats its hello until our welcome arrives: answer again.
                    if let replayOnHello { try? await self.sendSealed(.welcome, replayOnHello) }
                case .keepalive, .welcome, .denied:
                    continue
                }
            }
        }
        guard let interval = keepalive else {
            // No keepalives: a peer configured alike is silent while idle, so silence proves nothing.
            tasks.withLock { $0 = [receiver] }
            return
        }
        let keeper = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self, !Task.isCancelled else { return }
                if ContinuousClock.now - self.lastHeard.withLock({ $0 }) > Self.idleTimeout {
                    self.shutdown(error: TraversalError(code: .closed, detail: "nothing heard for \(Self.idleTimeout)"))
                    await self.transport.close()
                    return
                }
                try? await self.sendSealed(.keepalive, [])
            }
        }
        tasks.withLock { $0 = [receiver, keeper] }
    }
}
