import DatagramIO
import Foundation
import Logging
import NIOCore
import NIOPosix
import STUNLite

#if canImport(Glibc)
import Glibc
#endif

/// A shard's mutable heart: the state machine, the UDP sockets its actions name (listeners, relay
/// sockets, reserved ports) and the client connections; lives on its ``TURNShard``'s thread only.
///
/// The fast path, once a channel or permission exists (RFC 8656 §12.6, §11.3, §12.7): ChannelData from a
/// client is routed by its 4-byte header and its payload queued for the relay socket; a peer's datagram
/// is received behind four free bytes, so its ChannelData header is written in place in front of it and
/// the frame queued for the listener. Everything queued leaves in one ``SendBatch/flush()`` per round:
/// one `sendmmsg` per run of datagrams for one socket, from buffers reused round after round. All other
/// input goes to ``TURNServerStateMachine``, whose actions this core carries out.
final class TURNServerCore {
    var machine: TURNServerStateMachine
    /// What a watched descriptor is.
    private enum Endpoint {
        /// A UDP listener bound to this address.
        case listener(TransportAddress)
        /// An allocation's relay socket.
        case relay(TURNAllocationID)
        /// A port held for an EVEN-PORT reservation (RFC 8656 §7.2): its datagrams are dropped.
        case reserved
    }
    private var endpoints: [Int32: Endpoint] = [:]
    /// The UDP listeners by local address: a reply leaves from the one the client talks to.
    private var listeners: [TransportAddress: Int32] = [:]
    private var relays: [TURNAllocationID: Int32] = [:]
    /// Sockets held for EVEN-PORT reservations, by their address.
    private var reserved: [TransportAddress: Int32] = [:]
    private var streams: [TURNFiveTuple: any Channel] = [:]
    /// Descriptors to close once what was queued for them has left (at the end of the round).
    private var closing: [Int32] = []
    private let arrivals: ReceiveBatch
    private let departures: SendBatch
    private let poll: EventPoll
    private let metrics = TURNServerMetrics()
    private let ledger: TURNSharedLedger
    private var closed = false
    private let configuration: TURNServer.Configuration
    /// The time of the current round (``beginRound()``), seconds since 1970.
    private(set) var now: Double = TURNServerCore.now()
    let logger: Logger

    /// Datagrams queued for sending at most before a flush is forced.
    static let sendBatchCapacity = 1024
    /// Read calls per ready socket per round, before other sockets get their turn (level-triggered: the
    /// rest is read next round).
    static let readsPerSocket = 4

    init(configuration: TURNServer.Configuration, server: TURNServerConfiguration, ledger: TURNSharedLedger,
         poll: EventPoll, logger: Logger) {
        var server = server
        server.relayFamilies = server.relayFamilies.intersection(configuration.relayIPs.keys)
        server.relayHostAddresses.formUnion(Self.hostAddresses(configuration))
        self.machine = TURNServerStateMachine(configuration: server, ledger: ledger)
        self.ledger = ledger
        self.configuration = configuration
        self.poll = poll
        self.logger = logger
        arrivals = ReceiveBatch(count: max(1, configuration.vectorReadCount, configuration.relayVectorReadCount),
                                maxBytes: TURNServer.maxDatagramSize, headroom: ChannelData.headerSize)
        departures = SendBatch(capacity: Self.sendBatchCapacity, maxBytes: ChannelData.headerSize + TURNServer.maxDatagramSize)
    }

    static func now() -> Double { Date().timeIntervalSince1970 }

    /// The addresses peers must not reach on this host: the listen and relay addresses, and every
    /// interface address (a service bound to a wildcard answers on all of them).
    static func hostAddresses(_ configuration: TURNServer.Configuration) -> Set<IPAddress> {
        let bound = Set(configuration.relayIPs.values).union([configuration.listenIP])
        let interfaces = ((try? System.enumerateDevices()) ?? []).compactMap { $0.address.flatMap(TransportAddress.init)?.ip }
        return bound.union(interfaces)
    }

    /// Starts a round: one clock reading serves all of it.
    func beginRound() { now = Self.now() }

    /// Expires allocations, permissions, channels and unauthenticated connections (one sweep for the shard).
    func sweep() { perform(machine.expire(now: now)) }

    /// Serves UDP on `fd`, a listener socket bound to `local`; takes ownership of it.
    func addListener(_ fd: Int32, at local: TransportAddress) throws {
        guard !closed else {
            close(fd)
            throw TURNError(.socket, detail: "server shut down")
        }
        try watch(fd, as: .listener(local))
        listeners[local] = fd
    }

    /// Closes every socket and returns the client connections for the caller to close.
    func shutdown() -> [any Channel] {
        if !closed {
            closed = true
            flush()
            for fd in endpoints.keys { close(fd) }
            endpoints = [:]
            listeners = [:]
            relays = [:]
            reserved = [:]
            metrics.record(machine.takeStatistics(), allocations: 0)
        }
        let all = Array(streams.values)
        streams = [:]
        return all
    }

    private func watch(_ fd: Int32, as endpoint: Endpoint) throws {
        do {
            try poll.watch(fd, token: UInt64(fd))
        } catch {
            close(fd)
            throw TURNError(.socket, detail: "\(error)")
        }
        endpoints[fd] = endpoint
    }

    /// Forgets `fd` now and closes it at the end of the round, after what was queued for it has left.
    private func retire(_ fd: Int32) {
        endpoints[fd] = nil
        closing.append(fd)
    }

    // MARK: Streams

    func streamOpened(_ ft: TURNFiveTuple, _ channel: any Channel) {
        guard !closed else {
            channel.close(promise: nil)
            return
        }
        streams[ft] = channel
        machine.clientConnected(ft, now: Self.now())
    }

    func streamClosed(_ ft: TURNFiveTuple) {
        streams[ft] = nil
        perform(machine.clientDisconnected(ft))
    }

    // MARK: Input

    /// Reads what `fd` has queued (a few batches at most) and handles each datagram.
    func readable(_ fd: Int32) {
        guard let endpoint = endpoints[fd] else { return }
        let limit: Int
        switch endpoint {
        case .listener: limit = configuration.vectorReadCount
        case .relay, .reserved: limit = configuration.relayVectorReadCount
        }
        for _ in 0..<Self.readsPerSocket {
            let count: Int
            do { count = try arrivals.receive(from: fd, upTo: limit) } catch {
                logger.trace("udp receive failed", metadata: ["error": "\(error)"])
                return
            }
            for i in 0..<count where !arrivals.isTruncated(i) {
                guard let source = arrivals.source(i) else { continue }
                switch endpoint {
                case .listener(let local):
                    fromClient(arrivals.bytes(i), TURNFiveTuple(client: source, server: local, transport: .udp))
                case .relay(let id):
                    fromPeer(id, source, i)
                case .reserved:
                    break
                }
            }
            guard count == limit, endpoints[fd] != nil else { return }
        }
    }

    /// Stream frames from a client, in the order read (STUN or padded ChannelData, RFC 8656 §12.5).
    func fromClient(_ frames: [ByteBuffer], _ ft: TURNFiveTuple) {
        guard streams[ft] != nil else { return }
        now = Self.now()
        for frame in frames { frame.withUnsafeReadableBytes { fromClient($0, ft) } }
    }

    /// A datagram or stream frame from a client; ChannelData takes the fast path (RFC 8656 §12.6).
    private func fromClient(_ bytes: UnsafeRawBufferPointer, _ ft: TURNFiveTuple) {
        guard let first = bytes.first else { return }
        if ChannelData.looksLikeChannelData(first) {
            guard let header = ChannelData.header(bytes), bytes.count - ChannelData.headerSize >= header.length,
                  case let (id, peer)? = machine.routeChannelData(channel: header.channel, length: header.length, from: ft, now: now),
                  let relay = relays[id] else { return }
            let payload = UnsafeRawBufferPointer(rebasing: bytes[ChannelData.headerSize..<(ChannelData.headerSize + header.length)])
            departures.append(socket: relay, to: peer, payload)
            return
        }
        perform(machine.receiveFromClient(Array(bytes), from: ft, now: now))
    }

    /// Datagram `i` of the current batch, from `peer` to allocation `id`'s relay socket (RFC 8656 §11.3, §12.7).
    private func fromPeer(_ id: TURNAllocationID, _ peer: TransportAddress, _ i: Int) {
        let payload = arrivals.bytes(i)
        switch machine.routeFromPeer(id, peer: peer, length: payload.count, now: now) {
        case .channelData(let channel, let ft):
            if ft.transport == .udp {
                guard let listener = listeners[ft.server] else { return }
                // The header goes into the headroom in front of the payload: the frame is contiguous.
                let frame = arrivals.slot(i)
                frame.storeBytes(of: channel.bigEndian, toByteOffset: 0, as: UInt16.self)
                frame.storeBytes(of: UInt16(payload.count).bigEndian, toByteOffset: 2, as: UInt16.self)
                departures.append(socket: listener, to: ft.client, UnsafeRawBufferPointer(frame))
            } else if let stream = streams[ft] {
                let pad = ChannelData.streamPadding(length: payload.count)
                var out = stream.allocator.buffer(capacity: ChannelData.headerSize + payload.count + pad)
                out.writeInteger(channel)
                out.writeInteger(UInt16(payload.count))
                out.writeBytes(payload)
                out.writeRepeatingByte(0, count: pad)
                stream.writeAndFlush(out, promise: nil)
            }
        case .dataIndication(let ft):
            sendToClient(ft, TURNMessages.dataIndication(peer: peer, payload: Array(payload)))
        case nil:
            return
        }
    }

    // MARK: Actions

    func perform(_ actions: [TURNServerAction]) {
        for action in actions {
            switch action {
            case .sendToClient(let ft, let bytes):
                sendToClient(ft, bytes)
            case .sendToPeer(let id, let peer, let bytes):
                // Queued behind this relay's ChannelData of the round: order is kept.
                if let relay = relays[id] { bytes.withUnsafeBytes { departures.append(socket: relay, to: peer, $0) } }
            case .openRelay(let id, let family, let evenPort):
                openRelay(id, family: family, evenPort: evenPort, reserveNext: false)
            case .openRelayReservingNext(let id, let family):
                openRelay(id, family: family, evenPort: true, reserveNext: true)
            case .adoptReservedRelay(let id, let address):
                guard let held = reserved.removeValue(forKey: address), endpoints[held] != nil else {
                    perform(machine.relayFailed(id))
                    continue
                }
                endpoints[held] = .relay(id)
                relays[id] = held
                perform(machine.relayOpened(id, at: address, now: now))
            case .releaseReservation(let address):
                if let held = reserved.removeValue(forKey: address) { retire(held) }
            case .closeRelay(let id):
                // What the client relayed before it released the allocation still leaves (its last
                // datagrams, often a goodbye, share a read with the Refresh that deletes it).
                if let relay = relays.removeValue(forKey: id) { retire(relay) }
            case .closeClient(let ft):
                streams[ft]?.close(promise: nil)
            }
        }
    }

    private func sendToClient(_ ft: TURNFiveTuple, _ bytes: [UInt8]) {
        if ft.transport == .udp {
            guard let listener = listeners[ft.server] else { return }
            bytes.withUnsafeBytes { departures.append(socket: listener, to: ft.client, $0) }
        } else if let stream = streams[ft] {
            // Writes and closes hop to the connection's event loop in the order they are made.
            stream.writeAndFlush(stream.allocator.buffer(bytes: bytes), promise: nil)
        }
    }

    /// Sends what the round queued, closes what it retired, and hands what the state machine counted to
    /// the metrics.
    func flush() {
        departures.flush()
        for fd in closing { close(fd) }
        closing.removeAll(keepingCapacity: true)
        metrics.record(machine.takeStatistics(), allocations: ledger.allocationCount)
        metrics.recordSendDrops(total: departures.dropped)
    }

    /// Opens a relay socket on the family's relay IP: an even port when asked (up to
    /// ``TURNServer/evenPortAttempts`` tries), holding the next port too for `reserveNext` (RFC 8656 §7.2).
    private func openRelay(_ id: TURNAllocationID, family: TURNAddressFamily, evenPort: Bool, reserveNext: Bool) {
        guard !closed, let ip = configuration.relayIPs[family] else {
            perform(machine.relayFailed(id))
            return
        }
        for _ in 0..<(evenPort ? TURNServer.evenPortAttempts : 1) {
            let fd: Int32
            do { fd = try UDPSocket.open(bound: TransportAddress(ip: ip, port: 0)) } catch {
                logger.warning("relay socket failed", metadata: ["error": "\(error)"])
                break
            }
            guard let local = UDPSocket.localAddress(fd) else {
                close(fd)
                break
            }
            if evenPort, local.port % 2 != 0 {
                close(fd)
                continue
            }
            var next: (TransportAddress, Int32)?
            if reserveNext {
                let address = TransportAddress(ip: local.ip, port: local.port &+ 1)
                // The next port is taken: another even port, if attempts are left.
                guard local.port < UInt16.max, let held = try? UDPSocket.open(bound: address) else {
                    close(fd)
                    continue
                }
                next = (address, held)
            }
            do { try watch(fd, as: .relay(id)) } catch {
                logger.warning("relay socket not watched", metadata: ["error": "\(error)"])
                if let (_, held) = next { close(held) }
                break
            }
            var reservation: TransportAddress?
            if let (address, held) = next {
                do { try watch(held, as: .reserved) } catch {
                    logger.warning("reserved relay socket not watched", metadata: ["error": "\(error)"])
                    retire(fd)
                    break
                }
                reserved[address] = held
                reservation = address
            }
            relays[id] = fd
            perform(machine.relayOpened(id, at: local, reserving: reservation, now: now))
            return
        }
        logger.warning("no relay port", metadata: ["even": "\(evenPort)", "reserveNext": "\(reserveNext)"])
        perform(machine.relayFailed(id))
    }
}
