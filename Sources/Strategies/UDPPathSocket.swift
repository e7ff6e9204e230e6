import Foundation
import Logging
import NIOCore
import STUNLite
import Synchronization
import Traversal

/// One UDP socket shared by STUN discovery, reachability probes and the peer session, so the NAT
/// mapping learned by STUN is the one the peer reaches.
///
/// Probe format (after `PeerWire/probe`): kind (1 = ping, 2 = pong, 3 = chosen: "this socket
/// carries the session", sent by the side that picked one of several) and the 8-byte session token.
/// Pings carrying our token are always answered, for the socket's whole life, so a peer whose
/// pong was lost still gets through. Session messages from addresses that proved the token are
/// buffered; from others (a peer whose NAT rebound, or anyone) at most ``strangerLimit`` at a time,
/// for the session to authenticate (RFC 9000 §9.3).
///
/// A socket the kernel fails (a send refused while the host changes networks: no route for a moment, which
/// NIO treats as fatal and closes the socket) is opened again on the same port, or on another if that is
/// taken, at most ``maxReopens`` times, ``reopenDelay`` apart: the session goes on, and to the peer a new port
/// is a NAT rebinding it follows.
public final class UDPPathSocket: Sendable {
    /// Largest peer message sent on a UDP path: fits a 1280-byte IPv6 minimum MTU with headers.
    public static let maxDatagram = 1200
    /// Largest datagram a session's path MTU probes try (RFC 8899): a 1500-byte link's IPv6 payload (1500 − 40 − 8).
    public static let maxProbeDatagram = 1452
    /// Probe events and session messages buffered before the oldest are dropped.
    public static let bufferLimit = 512
    /// Addresses that may send session messages on one socket (after proving the token), at most.
    public static let maxPeers = 16
    /// Session messages from addresses that did not prove the token, buffered at once at most: junk sent to
    /// the port takes at most this share of ``bufferLimit`` from the peer's messages.
    public static let strangerLimit = 32
    /// Times one socket is opened again after the kernel failed it, at most.
    public static let maxReopens = 32
    /// Wait before a failed socket is opened again (a route that went away while the host moved to another
    /// network is usually back by then).
    public static let reopenDelay = Duration.milliseconds(50)

    enum ProbeKind: UInt8 { case ping = 1, pong = 2, chosen = 3 }

    /// The STUN-capable socket (another one after ``reopened``).
    public var client: STUNUDPClient { current.client.withLock { $0 } }
    /// Times the socket was opened again after the kernel failed it.
    public var reopened: Int { current.reopened.load(ordering: .relaxed) }
    private let current: CurrentClient
    let token: [UInt8]
    /// What probes may be sent toward unvouched addresses (a camera's); `nil`: not limited.
    let budget: ProbeAllowance?
    private let probes: AsyncStream<(TransportAddress, ProbeKind)>
    private let probeSink: AsyncStream<(TransportAddress, ProbeKind)>.Continuation
    /// Session messages with their source and whether it had not proved the token.
    private let messages: AsyncStream<(TransportAddress, [UInt8], stranger: Bool)>
    private let messageSink: AsyncStream<(TransportAddress, [UInt8], stranger: Bool)>.Continuation
    private let verified = Mutex<Set<TransportAddress>>([])
    /// Messages from unverified addresses in the buffer now.
    private let strangers = Atomic<Int>(0)
    private let pump = Mutex<Task<Void, Never>?>(nil)

    /// Opens a socket on any address and port (or `local`).
    public static func open(local: TransportAddress = TransportAddress(ip: .v4(0), port: 0)) async throws -> UDPPathSocket {
        UDPPathSocket(client: try await STUNUDPClient.bind(to: local, dontFragment: true))
    }

    init(client: STUNUDPClient) {
        self.current = CurrentClient(client)
        self.token = []
        self.budget = nil
        (probes, probeSink) = AsyncStream.makeStream(of: (TransportAddress, ProbeKind).self, bufferingPolicy: .bufferingNewest(Self.bufferLimit))
        (messages, messageSink) = AsyncStream.makeStream(of: (TransportAddress, [UInt8], stranger: Bool).self,
                                                         bufferingPolicy: .bufferingNewest(Self.bufferLimit))
    }

    private init(current: CurrentClient, token: [UInt8], budget: ProbeAllowance?) {
        self.current = current
        self.token = token
        self.budget = budget
        (probes, probeSink) = AsyncStream.makeStream(of: (TransportAddress, ProbeKind).self, bufferingPolicy: .bufferingNewest(Self.bufferLimit))
        (messages, messageSink) = AsyncStream.makeStream(of: (TransportAddress, [UInt8], stranger: Bool).self,
                                                         bufferingPolicy: .bufferingNewest(Self.bufferLimit))
    }

    /// This socket bound to a session token, its probes charged to `budget`; starts the receive pump
    /// (call once per socket).
    func session(token: [UInt8], budget: ProbeAllowance?) -> UDPPathSocket {
        let s = UDPPathSocket(current: current, token: token, budget: budget)
        s.startPump()
        return s
    }

    private func startPump() {
        let task = Task { [self, current, token, probeSink, messageSink] in
            var client = current.client.withLock { $0 }
            while true {
                for await (source, bytes) in client.otherDatagrams {
                    guard let first = bytes.first else { continue }
                    if first == PeerWire.probe {
                        guard bytes.count == 2 + token.count, Array(bytes[2...]) == token,
                              let kind = ProbeKind(rawValue: bytes[1]) else { continue }
                        self.verified.withLock { v in if v.count < Self.maxPeers { v.insert(source) } }
                        if kind == .ping { try? await client.send([PeerWire.probe, ProbeKind.pong.rawValue] + token, to: source) }
                        probeSink.yield((source, kind))
                    } else if PeerWire.isSessionMessage(bytes) {
                        let stranger = !self.verified.withLock { $0.contains(source) }
                        if stranger {
                            guard self.strangers.add(1, ordering: .relaxed).newValue <= Self.strangerLimit else {
                                self.strangers.subtract(1, ordering: .relaxed)
                                continue
                            }
                        }
                        if case .dropped(let oldest) = messageSink.yield((source, bytes, stranger)), oldest.stranger {
                            self.strangers.subtract(1, ordering: .relaxed)
                        }
                    }
                }
                guard let next = await current.reopen(client) else { break }
                client = next
            }
            probeSink.finish()
            messageSink.finish()
        }
        pump.withLock { $0 = task }
    }

    /// Sends pings to `targets` every `interval` (when `active`) until a probe of a kind in
    /// `until` arrives, and returns its source: the peer's address.
    ///
    /// Either kind confirms a path both ways: a pong answers our ping; a ping from the peer shows
    /// its packets reach us, and our pong (and the session after it) goes back the way it came —
    /// through the mapping the peer's NAT just made toward us. So the side whose first pings the
    /// peer's NAT dropped does not wait a pacing interval for its next ping's pong. With
    /// `until: [.chosen]` the peer decides which of its addresses carries the session.
    func probe(_ targets: [TransportAddress], active: Bool, interval: Duration, maxPings: Int,
               until: Set<ProbeKind>? = nil) async throws -> TransportAddress {
        let accept = until ?? [.ping, .pong]
        let ping = [PeerWire.probe, ProbeKind.ping.rawValue] + token
        let sender: Task<Void, Never>? = active ? Task { [self] in
            for _ in 0..<maxPings where !Task.isCancelled {
                for t in targets { await sendProbe(ping, to: t) }
                try? await Task.sleep(for: interval)
            }
        } : nil
        defer { sender?.cancel() }
        for await (source, kind) in probes where accept.contains(kind) {
            return source
        }
        try Task.checkCancellation()
        throw StrategyError(code: .failed, detail: "socket closed while probing")
    }

    /// Sends one probe to `target` unless the budget refuses it.
    func sendProbe(_ probe: [UInt8], to target: TransportAddress) async {
        guard budget?.spend(probe.count, to: target.socketAddress) ?? true else { return }
        try? await client.send(probe, to: target)
    }

    /// Tells `peer` that this socket carries the session: `count` chosen-probes, `interval` apart.
    func announceChosen(to peer: TransportAddress, count: Int, interval: Duration) {
        let message = [PeerWire.probe, ProbeKind.chosen.rawValue] + token
        Task { [self] in
            for _ in 0..<count {
                try? await client.send(message, to: peer)
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// A message transport to `peer` over this socket.
    func transport(to peer: TransportAddress) -> UDPPeerTransport {
        UDPPeerTransport(socket: self, peer: peer)
    }

    /// The next session message from `peer`.
    func receive(from peer: TransportAddress) async throws -> [UInt8] {
        while true {
            let (source, bytes) = try await receiveFromAny()
            if source == peer { return bytes }
        }
    }

    /// The next session message from any source (one that did not prove the token only if the buffer had room).
    func receiveFromAny() async throws -> (TransportAddress, [UInt8]) {
        for await (source, bytes, stranger) in messages {
            if stranger { strangers.subtract(1, ordering: .relaxed) }
            return (source, bytes)
        }
        try Task.checkCancellation()
        throw StrategyError(code: .failed, detail: "socket closed")
    }

    /// Closes the socket.
    public func close() async {
        current.closed.store(true, ordering: .relaxed)
        pump.withLock { $0?.cancel() }
        await client.close()
    }
}

/// The socket a ``UDPPathSocket`` (and the session sockets made from it) uses now.
private final class CurrentClient: Sendable {
    let client: Mutex<STUNUDPClient>
    let closed = Atomic<Bool>(false)
    let reopened = Atomic<Int>(0)

    init(_ client: STUNUDPClient) { self.client = Mutex(client) }

    /// A new socket for `failed`, whose datagrams ended without ``UDPPathSocket/close()``: on its port if that is
    /// free, else on another; nil when closed, out of reopens, or no socket can be opened.
    func reopen(_ failed: STUNUDPClient) async -> STUNUDPClient? {
        guard !closed.load(ordering: .relaxed), reopened.load(ordering: .relaxed) < UDPPathSocket.maxReopens,
              (try? await Task.sleep(for: UDPPathSocket.reopenDelay)) != nil else { return nil }
        await failed.close()
        let local = failed.localAddress
        var next = try? await STUNUDPClient.bind(to: local, dontFragment: true)
        if next == nil { next = try? await STUNUDPClient.bind(to: TransportAddress(ip: local.ip, port: 0), dontFragment: true) }
        guard let next else { return nil }
        client.withLock { $0 = next }
        reopened.add(1, ordering: .relaxed)
        // Closed meanwhile: its close() closed the failed socket, so this one is closed here.
        if closed.load(ordering: .relaxed) {
            await next.close()
            return nil
        }
        return next
    }
}

/// A `PeerTransport` over a ``UDPPathSocket`` to one peer address, which moves when the session has
/// validated a new one (the peer's NAT rebound).
public final class UDPPeerTransport: RebindablePeerTransport {
    let socket: UDPPathSocket
    private let target: Mutex<TransportAddress>
    /// The peer's address.
    public var peer: TransportAddress { target.withLock { $0 } }

    init(socket: UDPPathSocket, peer: TransportAddress) {
        self.socket = socket
        self.target = Mutex(peer)
    }

    /// Datagrams: true.
    public var isDatagram: Bool { true }
    /// `udp LOCAL -> PEER`.
    public var pathDescription: String { "udp \(socket.client.localAddress) -> \(peer)" }
    /// The peer's address.
    public var remoteAddress: SocketAddress? { peer.socketAddress }
    /// ``UDPPathSocket/maxDatagram``.
    public var maxMessageSize: Int { UDPPathSocket.maxDatagram }
    /// ``UDPPathSocket/maxProbeDatagram``: the socket never fragments (DF set), so a probe that arrives proves the size.
    public var probeMessageSize: Int { UDPPathSocket.maxProbeDatagram }
    /// Sends one datagram to the peer.
    public func send(_ message: [UInt8]) async throws {
        try await socket.client.send(message, to: peer)
    }
    /// Receives the next session datagram from the peer.
    public func receive() async throws -> [UInt8] {
        try await socket.receive(from: peer)
    }
    /// Receives the next session datagram from any source, with the source.
    public func receiveFromAnyAddress() async throws -> (message: [UInt8], source: SocketAddress) {
        let (source, bytes) = try await socket.receiveFromAny()
        return (bytes, source.socketAddress)
    }
    /// Sends one datagram to `address`.
    public func send(_ message: [UInt8], to address: SocketAddress) async throws {
        guard let to = TransportAddress(address) else { throw StrategyError(code: .failed, detail: "no address in \(address)") }
        try await socket.client.send(message, to: to)
    }
    /// Sends to `address` from now on.
    public func rebind(to address: SocketAddress) {
        guard let to = TransportAddress(address) else { return }
        target.withLock { $0 = to }
    }
    /// Closes the socket.
    public func close() async {
        await socket.close()
    }
}
