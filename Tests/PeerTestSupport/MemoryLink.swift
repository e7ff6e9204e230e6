import Foundation
import Synchronization
@testable import Traversal

/// Two in-memory ``PeerTransport`` ends joined by a link that can lose, delay and reorder messages.
public final class MemoryLink: Sendable {
    /// What the link does to each message.
    public struct Conditions: Sendable {
        /// Fraction of messages dropped (0…1).
        public var loss = 0.0
        /// Fixed one-way delay.
        public var delay: Duration = .zero
        /// Extra random delay 0…jitter (reorders messages).
        public var jitter: Duration = .zero
        /// Bottleneck rate in bits per second (nil: unlimited); a packet waits for the ones before it.
        public var rateBitsPerSecond: Int?
        /// Longest a packet may wait at the bottleneck before it is dropped (a router's buffer).
        public var queueLimit: Duration = .milliseconds(200)
        /// Largest message the link carries; longer ones vanish (a smaller MTU on the way). nil: no limit.
        public var pathMTU: Int?

        /// A link with these conditions.
        public init(loss: Double = 0, delay: Duration = .zero, jitter: Duration = .zero, rateBitsPerSecond: Int? = nil) {
            self.loss = loss
            self.delay = delay
            self.jitter = jitter
            self.rateBitsPerSecond = rateBitsPerSecond
        }
    }

    /// What the link does now (tests change it mid-run).
    public let conditions: Mutex<Conditions>
    /// Messages offered to the link.
    public let sent = Atomic<Int>(0)
    /// Messages it dropped.
    public let dropped = Atomic<Int>(0)

    init(_ conditions: Conditions) {
        self.conditions = Mutex(conditions)
    }

    /// A joined pair of ends.
    /// `probeMessageSize` above `maxMessageSize` lets sessions probe for larger messages (RFC 8899).
    /// `relayed`: the ends say a relay carries them (a session on them then looks for a direct path).
    public static func pair(_ conditions: Conditions = .init(), datagram: Bool = true, maxMessageSize: Int = 1200,
                            probeMessageSize: Int? = nil, relayed: Bool = false) -> (End, End, MemoryLink) {
        let link = MemoryLink(conditions)
        let probe = probeMessageSize ?? maxMessageSize
        let a = End(link: link, datagram: datagram, maxMessageSize: maxMessageSize, probeMessageSize: probe, name: "a", relayed: relayed)
        let b = End(link: link, datagram: datagram, maxMessageSize: maxMessageSize, probeMessageSize: probe, name: "b", relayed: relayed)
        a.peer.withLock { $0 = b }
        b.peer.withLock { $0 = a }
        return (a, b, link)
    }

    /// One end.
    public final class End: PeerTransport, @unchecked Sendable {
        let link: MemoryLink
        public let isDatagram: Bool
        public let maxMessageSize: Int
        public let probeMessageSize: Int
        public let pathDescription: String
        public let isRelayed: Bool
        let peer = Mutex<End?>(nil)
        private let stream: AsyncStream<[UInt8]>
        private let sink: AsyncStream<[UInt8]>.Continuation
        private var iterator: AsyncStream<[UInt8]>.AsyncIterator
        /// Serialises deliveries on a stream link so the order holds.
        private let ordered = Mutex<ContinuousClock.Instant>(.now)
        /// When the bottleneck is next free.
        private let bottleneck = Mutex<ContinuousClock.Instant>(.now)

        init(link: MemoryLink, datagram: Bool, maxMessageSize: Int, probeMessageSize: Int, name: String, relayed: Bool) {
            self.link = link
            self.isRelayed = relayed
            self.isDatagram = datagram
            self.maxMessageSize = maxMessageSize
            self.probeMessageSize = probeMessageSize
            self.pathDescription = "memory \(relayed ? "relay " : "")\(name)"
            (stream, sink) = AsyncStream.makeStream(of: [UInt8].self)
            iterator = stream.makeAsyncIterator()
        }

        public func send(_ message: [UInt8]) async throws {
            guard message.count <= probeMessageSize else { throw StrategyError(code: .failed, detail: "too large: \(message.count)") }
            guard let peer = peer.withLock({ $0 }) else { throw StrategyError(code: .failed, detail: "closed") }
            link.sent.add(1, ordering: .relaxed)
            let c = link.conditions.withLock { $0 }
            if let mtu = c.pathMTU, message.count > mtu {
                link.dropped.add(1, ordering: .relaxed)
                return
            }
            if isDatagram, c.loss > 0, Double.random(in: 0..<1) < c.loss {
                link.dropped.add(1, ordering: .relaxed)
                return
            }
            if !isDatagram, c.loss >= 1 { return }  // an outage on a stream path: nothing moves
            var wait = c.delay
            if let rate = c.rateBitsPerSecond {
                // Serialise through the bottleneck; drop when its queue is full (tail drop).
                let now = ContinuousClock.now
                let transmit = Duration.nanoseconds(Int64(message.count) * 8 * 1_000_000_000 / Int64(max(1, rate)))
                let departs: ContinuousClock.Instant? = bottleneck.withLock { free in
                    let start = max(free, now)
                    guard start - now <= c.queueLimit else { return nil }
                    free = start + transmit
                    return free
                }
                guard let departs else {
                    link.dropped.add(1, ordering: .relaxed)
                    return
                }
                wait += departs - now
            }
            if c.jitter > .zero, isDatagram {
                wait += .nanoseconds(Int64.random(in: 0...c.jitter.components.attoseconds / 1_000_000_000 + c.jitter.components.seconds * 1_000_000_000))
            }
            if wait == .zero {
                peer.sink.yield(message)
                return
            }
            var due = ContinuousClock.now + wait
            if !isDatagram {
                due = ordered.withLock { last in
                    last = max(last, due)
                    return last
                }
            }
            Task {
                try? await Task.sleep(until: due, clock: .continuous)
                peer.sink.yield(message)
            }
        }

        public func receive() async throws -> [UInt8] {
            guard let m = await iterator.next() else { throw StrategyError(code: .failed, detail: "closed") }
            return m
        }

        public func close() async {
            sink.finish()
        }
    }
}

/// Two connected ``PeerConnection``s (viewer, camera) over a memory link.
/// `keepalive` as ``PeerConnection``'s (nil: none, so no path MTU probing either); `probeMessageSize` lets the
/// sessions probe for larger messages than `maxMessageSize`.
public func connectedPair(_ conditions: MemoryLink.Conditions = .init(), datagram: Bool = true, maxMessageSize: Int = 1200,
                          probeMessageSize: Int? = nil, keepalive: Duration? = nil)
    -> (viewer: PeerConnection, camera: PeerConnection, link: MemoryLink) {
    let (a, b, link) = MemoryLink.pair(conditions, datagram: datagram, maxMessageSize: maxMessageSize, probeMessageSize: probeMessageSize)
    let (viewer, camera) = connectedPair(viewer: a, camera: b, path: "memory", keepalive: keepalive)
    return (viewer, camera, link)
}

/// A viewer and a camera ``PeerConnection`` over two transports that reach each other, keyed alike, the
/// report naming `path`; both bound their checks of unvalidated addresses with `addressChecks`.
public func connectedPair(viewer a: any PeerTransport, camera b: any PeerTransport, path: String,
                          keepalive: Duration? = nil, addressChecks: AddressCheckLimiter = .shared)
    -> (viewer: PeerConnection, camera: PeerConnection) {
    let k1 = NoiseCipherState(key: [UInt8](repeating: 1, count: 32))
    let k2 = NoiseCipherState(key: [UInt8](repeating: 2, count: 32))
    let identity = DeviceIdentity.generate()
    let report = ConnectionReport(path: path, route: nil, setupMs: 0, requestID: nil, attempts: [])
    let viewer = PeerConnection(role: .viewer, report: report, peerIdentity: identity.publicKey, transport: a,
                                channel: SecureDatagramChannel(send: k1, receive: k2), replayOnHello: nil, keepalive: keepalive,
                                addressChecks: addressChecks)
    let camera = PeerConnection(role: .camera, report: report, peerIdentity: identity.publicKey, transport: b,
                                channel: SecureDatagramChannel(send: k2, receive: k1), replayOnHello: nil, keepalive: keepalive,
                                addressChecks: addressChecks)
    return (viewer, camera)
}
