internal import CUsrsctp
import Foundation
import Synchronization

/// One SCTP association (RFC 9260) driven by usrsctp over a callback "wire": the packets it wants sent
/// appear on ``packets``; packets from the peer go in through ``input(_:)``. Whole messages, stream
/// resets and state changes appear on ``events``. Both ends connect at once (simultaneous open, as WebRTC
/// does); the association has one path whose MTU the transport dictates.
///
/// Bounds: a message larger than ``Configuration/maxMessageSize`` is never reassembled (the stream is
/// reported ``Event/oversized(stream:)`` and the rest of that message discarded); the send buffer holds
/// ``Configuration/sendBuffer`` bytes, and ``send(_:stream:ppid:delivery:)`` says `wouldBlock` when a
/// message does not fit.
final class SCTPAssociation: Sendable {
    /// Tunables of an association.
    struct Configuration: Sendable {
        /// The SCTP port both ends use (AF_CONN: one association per address, so any fixed port works).
        static let port: UInt16 = 5000
        /// Chunks an association may hold queued (usrsctp's default 512 is too few for a 4 MiB message).
        static let maxChunksOnQueue = 16_384

        /// Largest SCTP packet handed to the transport (its message limit less the session's overhead).
        var pathMTU: Int
        /// Largest message sent or reassembled.
        var maxMessageSize: Int = PeerChannel.maxMessageSize
        /// Bytes the send buffer holds (messages accepted but not yet acknowledged).
        var sendBuffer: Int = PeerChannel.maxMessageSize + 1 << 20
        /// Bytes the receive window offers the peer; also the partial delivery point, so every message up to
        /// ``maxMessageSize`` is reassembled by SCTP and handed over whole. The bound on what one peer can
        /// make this side hold for reassembly.
        var receiveBuffer: Int = PeerChannel.maxMessageSize + 1 << 20
        /// Streams in each direction (stream ids 0 ..< streams).
        var streams: UInt16 = 1024
        /// Retransmission timeout: initial, minimum, maximum (RFC 9260 §6.3.1; ms).
        var rtoInitial: UInt32 = 1000, rtoMin: UInt32 = 200, rtoMax: UInt32 = 10_000
        /// INIT attempts before the association gives up (RFC 9260 §5.1: Max.Init.Retransmits).
        var maxInitAttempts: UInt16 = 8
        /// SCTP heartbeats (RFC 9260 §8.3); off for a session that sends no keepalives, so an idle path
        /// really goes quiet (and a NAT forgets it, as such a session asks for).
        var heartbeats = true

        /// The tuning for a datagram path (UDP, relay): SCTP recovers losses quickly. With `roundTripMs`, a
        /// round trip the session's handshake measured on this path, the initial RTO is what RFC 9260 §6.3.1
        /// rule C2 makes of a first measurement R (SRTT = R, RTTVAR = R/2, RTO = SRTT + 4·RTTVAR = 3R), within
        /// ``rtoMin`` and the 1 s default: a lost INIT, COOKIE-ECHO or first DATA chunk is then sent again after
        /// a few round trips, not after a second (and 2 s, 4 s for the next losses), before the association
        /// has a measurement of its own.
        static func datagram(pathMTU: Int, roundTripMs: Double? = nil) -> Configuration {
            var c = Configuration(pathMTU: pathMTU)
            if let r = roundTripMs, r.isFinite, r >= 0 {
                c.rtoInitial = UInt32(min(Double(c.rtoInitial), max(Double(c.rtoMin), (3 * r).rounded(.up))))
            }
            return c
        }

        /// The tuning for a stream path (TCP): the transport never loses a packet and retransmits on its own,
        /// so SCTP's timer is kept far above TCP's recovery time (minimum RTO 3 s) and never fires while
        /// TCP is still repairing a loss; the path MTU is larger (fewer packets, less overhead).
        static func stream(pathMTU: Int) -> Configuration {
            var c = Configuration(pathMTU: pathMTU)
            c.rtoInitial = 3000
            c.rtoMin = 3000
            c.rtoMax = 60_000
            return c
        }
    }

    /// How a message is delivered (the engine's view of a channel's ``ChannelDelivery``).
    struct Delivery: Sendable, Hashable {
        /// Delivered in order of sending.
        var ordered: Bool
        /// 0: fully reliable; else a PR-SCTP policy (RFC 3758): `SCTP_PR_SCTP_TTL` or `SCTP_PR_SCTP_RTX`.
        var policy: UInt16
        /// Lifetime in ms (TTL) or retransmissions (RTX).
        var value: UInt32
        /// PR-SCTP timed reliability.
        static let ttl = UInt16(SCTP_PR_SCTP_TTL)
        /// PR-SCTP limited retransmissions.
        static let rtx = UInt16(SCTP_PR_SCTP_RTX)
        /// A retransmission limit no chunk reaches: usrsctp counts a chunk's transmissions in a 16-bit
        /// `snd_count` and abandons it only once that count exceeds the limit (`sctp_mark_all_for_resend`,
        /// `sctp_strike_gap_ack_chunks`).
        static let unreachableRetransmissions = UInt32.max

        /// The PR-SCTP policy and value handed to usrsctp. A fully reliable message leaves as `SCTP_PR_SCTP_RTX`
        /// with ``unreachableRetransmissions``: never abandoned, so just as reliable, but counted in usrsctp's
        /// `pr_sctp_cnt`, which keeps every SACK on the path that restarts the retransmission timer (see
        /// ``SCTPAssociation/send(_:stream:ppid:delivery:)``). Partial deliveries keep their own policy.
        var engineSendPolicy: (policy: UInt16, value: UInt32) {
            policy == 0 ? (Self.rtx, Self.unreachableRetransmissions) : (policy, value)
        }
    }

    /// Something the association reports.
    enum Event: Sendable, Equatable {
        /// The association is established (RFC 9260 §5.1: COOKIE-ACK seen or sent).
        case up
        /// A whole message arrived.
        case message(stream: UInt16, ppid: UInt32, payload: [UInt8])
        /// The peer reset these incoming streams (RFC 6525): their channels are closed.
        case streamsReset([UInt16])
        /// A message on `stream` exceeded the size limit and was discarded.
        case oversized(stream: UInt16)
        /// The association ended (peer abort, shutdown, or failure).
        case down(String)
    }

    /// Result of a send attempt.
    enum SendResult: Sendable, Equatable {
        /// Accepted whole.
        case sent
        /// No room in the send buffer now; try again after ``writable`` fires.
        case wouldBlock
        /// Refused for good.
        case failed(Int32)
    }

    /// Packets to carry to the peer.
    let packets: AsyncStream<[UInt8]>
    /// What the association reports; finishes when it is closed.
    let events: AsyncStream<Event>
    /// Fires whenever acknowledged data frees send buffer room (at most one pending signal).
    let writable: AsyncStream<Void>
    /// The configuration in force.
    let configuration: Configuration

    private let packetSink: AsyncStream<[UInt8]>.Continuation
    private let eventSink: AsyncStream<Event>.Continuation
    private let writableSink: AsyncStream<Void>.Continuation
    private let key: UInt
    private let socket = Mutex<SocketHandle?>(nil)
    /// Whether ``connect()`` has run (guarded by `socket`'s lock).
    private nonisolated(unsafe) var connecting = false
    /// Partly delivered messages by stream (usrsctp's partial delivery hands large messages in pieces).
    private let partial = Mutex<(pieces: [UInt16: [UInt8]], discarding: Set<UInt16>)>(([:], []))
    /// Bytes accepted by the send buffer and not yet acknowledged (refreshed on every SACK).
    private let buffered = Atomic<Int>(0)
    /// Largest packet handed out so far (tests check it against the path MTU).
    private let largestPacket = Atomic<Int>(0)
    /// The packet size in force: ``Configuration/pathMTU`` until the session's path MTU search raises it.
    private let pathMTU: Atomic<Int>

    /// Bytes by which usrsctp's packets may exceed the path MTU it was given: for AF_CONN it adds the SCTP
    /// common header (12 bytes, RFC 9260 §3.1) to the MTU set through SCTP_PEER_ADDR_PARAMS: subtract this from
    /// a transport's limit.
    static let mtuOverrun = 12

    /// Packets waiting for the transport before the oldest are dropped (SCTP retransmits them).
    static let packetQueueLimit = 4096

    /// Creates the association and starts connecting; throws if usrsctp refuses the socket.
    init(configuration: Configuration) throws {
        self.configuration = configuration
        pathMTU = Atomic(configuration.pathMTU)
        (packets, packetSink) = AsyncStream.makeStream(of: [UInt8].self, bufferingPolicy: .bufferingNewest(Self.packetQueueLimit))
        (events, eventSink) = AsyncStream.makeStream(of: Event.self)
        (writable, writableSink) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        key = SCTPStack.newKey()
        SCTPStack.insert(self, key: key)
        let address = UnsafeMutableRawPointer(bitPattern: key)
        guard let so = usrsctp_socket(Int32(trav_af_conn), Int32(SOCK_STREAM.rawValue), Int32(IPPROTO_SCTP), { _, _, data, length, info, flags, ulp in
            defer { trav_sctp_free(data) }
            guard let ulp, let association = SCTPStack.lookup(UInt(bitPattern: ulp)) else { return 1 }
            association.received(data: data, length: length, info: info, flags: flags)
            return 1
        }, { _, free, ulp in
            guard let ulp, let association = SCTPStack.lookup(UInt(bitPattern: ulp)) else { return 0 }
            association.acknowledged(free: Int(free))
            return 0
        }, 0, address) else {
            SCTPStack.unregister(key)
            throw ChannelError(code: .engineFailed, detail: "usrsctp refused a socket (errno \(trav_errno()))")
        }
        let c = configuration
        let failedOption = trav_sctp_configure(so, address, UInt32(c.pathMTU), Int32(c.sendBuffer), Int32(c.receiveBuffer),
                                               c.rtoInitial, c.rtoMin, c.rtoMax, c.streams, c.maxInitAttempts,
                                               c.heartbeats ? 1 : 0)
        guard failedOption == 0,
              trav_sctp_bind(so, address, Configuration.port) == 0 else {
            let e = trav_errno()
            usrsctp_close(so)
            SCTPStack.unregister(key)
            throw ChannelError(code: .engineFailed, detail: "SCTP setup failed (option \(failedOption), errno \(e))")
        }
        let handle = SocketHandle(pointer: so)
        socket.withLock { $0 = handle }
    }

    /// Starts connecting (both sides connect at once; RFC 9260 §5.2 resolves the collision), with the packet
    /// size in force now: usrsctp fixes an association's largest packet when it connects and can only lower it
    /// later. Idempotent; a packet from the peer connects first (``input(_:)``).
    func connect() {
        socket.withLock { handle in
            guard let so = handle?.pointer, !connecting else { return }
            connecting = true
            let address = UnsafeMutableRawPointer(bitPattern: key)
            _ = trav_sctp_set_mtu(so, address, UInt32(pathMTU.load(ordering: .relaxed)), configuration.heartbeats ? 1 : 0)
            // Non-blocking: EINPROGRESS is the expected answer; the association comes up with `.up`.
            _ = trav_sctp_connect(so, address, Configuration.port)
        }
    }

    deinit {
        close()
    }

    /// Feeds one packet from the peer.
    func input(_ packet: [UInt8]) {
        connect()
        socket.withLock { handle in
            guard handle != nil else { return }
            packet.withUnsafeBytes { raw in
                usrsctp_conninput(UnsafeMutableRawPointer(bitPattern: key), raw.baseAddress, raw.count, 0)
            }
        }
    }

    /// Offers one whole message to the send buffer.
    ///
    /// Every message carries a PR-SCTP policy (RFC 3758), reliable ones too (``Delivery/engineSendPolicy``), to
    /// get around usrsctp's fast SACK path. RFC 9260 §6.3.2 rule R3 restarts the T3-rtx timer whenever a SACK
    /// advances the cumulative TSN ack. usrsctp 0.9.5 takes a SACK without gap reports through
    /// `sctp_express_handle_sack`, which never restarts it, so T3 expires every RTO while data is in flight;
    /// at each expiry `sctp_mark_all_for_resend` retransmits the chunks older than about one smoothed RTT (those
    /// standing in a bottleneck's queue behind a keyframe) and the congestion window falls to one packet. The
    /// fast path is taken only while `pr_sctp_cnt` (chunks with a PR policy on the send and sent queues) is 0
    /// (`sctp_process_control`); with a policy on every chunk each SACK goes through `sctp_handle_sack`, which
    /// stops the timer when the ack advances and restarts it for what is still outstanding, as R3 asks. The
    /// count does not depend on the peer supporting PR-SCTP, and a chunk is abandoned only when the peer does
    /// and its limit is reached, which ``Delivery/unreachableRetransmissions`` never is, so nothing changes on
    /// the wire or at the receiver (no FORWARD-TSN is ever sent for a reliable message).
    /// `SCTPRetransmissionTimerTests` shows it.
    func send(_ message: [UInt8], stream: UInt16, ppid: UInt32, delivery: Delivery) -> SendResult {
        guard message.count <= configuration.maxMessageSize else { return .failed(EMSGSIZE) }
        return socket.withLock { handle in
            guard let so = handle?.pointer else { return .failed(ENOTCONN) }
            // usrsctp takes no empty message: a one-byte body with the "empty" PPID stands for it (RFC 8831 §6.6).
            let body = message.isEmpty ? [0] : message
            let (policy, value) = delivery.engineSendPolicy
            let n = body.withUnsafeBytes { raw in
                trav_sctp_send(so, raw.baseAddress, raw.count, stream, ppid, delivery.ordered ? 0 : 1, policy, value)
            }
            if n >= 0 {
                buffered.add(body.count, ordering: .relaxed)
                return .sent
            }
            let e = trav_errno()
            return e == EWOULDBLOCK || e == EAGAIN ? .wouldBlock : .failed(e)
        }
    }

    /// Resets the outgoing side of `stream` (closes a channel, RFC 8831 §6.7).
    func resetStream(_ stream: UInt16) {
        socket.withLock { handle in
            guard let so = handle?.pointer else { return }
            _ = trav_sctp_reset_stream(so, stream)
        }
    }

    /// Applies the path parameters (MTU, PMTU discovery off, heartbeats as configured) to the established association:
    /// usrsctp takes them for the peer's address only once that address exists.
    func applyPathParameters() {
        socket.withLock { handle in
            guard let so = handle?.pointer else { return }
            _ = trav_sctp_set_mtu(so, UnsafeMutableRawPointer(bitPattern: key), UInt32(pathMTU.load(ordering: .relaxed)),
                                  configuration.heartbeats ? 1 : 0)
        }
    }

    /// Changes the packet size (the session's path MTU search found another): applied at once when the
    /// association is up, else when it comes up. Chunks already cut to a larger size are sent as they are.
    func setPathMTU(_ size: Int) {
        pathMTU.store(size, ordering: .relaxed)
        applyPathParameters()
    }

    /// Sets the retransmission timer's bounds to `timing`'s (RFC 9260 §6.3.1: RTO.Initial, RTO.Min, RTO.Max): the
    /// session moved between a stream path, whose transport repairs losses itself, and a datagram path. The next
    /// round-trip measurement brings the timer within the new bounds.
    func setRetransmissionTiming(_ timing: Configuration) {
        socket.withLock { handle in
            guard let so = handle?.pointer else { return }
            _ = trav_sctp_set_rto(so, timing.rtoInitial, timing.rtoMin, timing.rtoMax)
        }
    }

    /// The retransmission timer's bounds in force (ms): RTO.Initial, RTO.Min, RTO.Max; nil if unreadable.
    var retransmissionBounds: (initial: UInt32, min: UInt32, max: UInt32)? {
        socket.withLock { handle -> (UInt32, UInt32, UInt32)? in
            guard let so = handle?.pointer else { return nil }
            var initial: UInt32 = 0, low: UInt32 = 0, high: UInt32 = 0
            guard trav_sctp_get_rto(so, &initial, &low, &high) == 0 else { return nil }
            return (initial, low, high)
        }
    }

    /// Sets the scheduling priority of `stream` (lower first).
    func setPriority(_ value: UInt16, stream: UInt16) {
        socket.withLock { handle in
            guard let so = handle?.pointer else { return }
            _ = trav_sctp_set_stream_priority(so, stream, value)
        }
    }

    /// Bytes accepted for sending and not yet acknowledged by the peer.
    var bufferedAmount: Int { max(0, buffered.load(ordering: .relaxed)) }

    /// The largest packet the association has emitted.
    var largestPacketSize: Int { largestPacket.load(ordering: .relaxed) }

    /// Smoothed RTT (ms) and congestion window (bytes), when established.
    var status: (srttMs: Int, cwnd: Int, mtu: Int)? {
        socket.withLock { handle -> (Int, Int, Int)? in
            guard let so = handle?.pointer else { return nil }
            var srtt: UInt32 = 0, cwnd: UInt32 = 0, mtu: UInt32 = 0, rwnd: UInt32 = 0
            guard trav_sctp_status(so, &srtt, &cwnd, &mtu, &rwnd) == 0 else { return nil }
            return (Int(srtt), Int(cwnd), Int(mtu))
        }
    }

    /// Whether the association negotiated PR-SCTP (RFC 3758 §3.3: both ends listed it at setup), which
    /// partial channels need and WebRTC peers must offer (RFC 8831 §6.1); nil before the association exists.
    var partialReliability: Bool? {
        socket.withLock { handle -> Bool? in
            guard let so = handle?.pointer else { return nil }
            let value = trav_sctp_pr_supported(so)
            return value < 0 ? nil : value == 1
        }
    }

    /// The CRC32c an SCTP packet carries (RFC 9260 Appendix B), for tests that forge packets.
    static func checksum(_ packet: [UInt8]) -> UInt32 {
        var copy = packet
        return copy.withUnsafeMutableBytes { usrsctp_crc32c($0.baseAddress, $0.count) }
    }

    /// Aborts the association and releases it; idempotent.
    func close() {
        let handle = socket.withLock { s -> SocketHandle? in
            let old = s
            s = nil
            return old
        }
        guard let so = handle?.pointer else { return }
        usrsctp_close(so)
        SCTPStack.unregister(key)
        eventSink.yield(.down("closed"))
        eventSink.finish()
        packetSink.finish()
        writableSink.finish()
    }

    // MARK: callbacks (usrsctp's threads; hand on, never call usrsctp)

    func emit(packet: [UInt8]) {
        if packet.count > largestPacket.load(ordering: .relaxed) { largestPacket.store(packet.count, ordering: .relaxed) }
        packetSink.yield(packet)
    }

    func acknowledged(free: Int) {
        buffered.store(configuration.sendBuffer - free, ordering: .relaxed)
        writableSink.yield()
    }

    func received(data: UnsafeMutableRawPointer?, length: Int, info: sctp_rcvinfo, flags: Int32) {
        guard let data else {
            eventSink.yield(.down("association ended"))
            return
        }
        if flags & Int32(MSG_NOTIFICATION) != 0 {
            notification(data, length: length)
            return
        }
        let stream = info.rcv_sid
        let ppid = UInt32(bigEndian: info.rcv_ppid)
        let piece = UnsafeRawBufferPointer(start: data, count: length)
        let complete = flags & Int32(MSG_EOR) != 0
        let result: Event? = partial.withLock { state in
            if state.discarding.contains(stream) {
                if complete { state.discarding.remove(stream) }
                return nil
            }
            var pieces = state.pieces.removeValue(forKey: stream) ?? []
            guard pieces.count + piece.count <= configuration.maxMessageSize else {
                if !complete { state.discarding.insert(stream) }
                return .oversized(stream: stream)
            }
            pieces.append(contentsOf: piece)
            guard complete else {
                state.pieces[stream] = pieces
                return nil
            }
            return .message(stream: stream, ppid: ppid, payload: pieces)
        }
        if let result { eventSink.yield(result) }
    }

    private func notification(_ data: UnsafeMutableRawPointer, length: Int) {
        guard length >= 8 else { return }
        switch Int32(trav_sctp_notification_type(data)) {
        case Int32(SCTP_ASSOC_CHANGE):
            switch Int32(trav_sctp_assoc_change_state(data)) {
            case Int32(SCTP_COMM_UP): eventSink.yield(.up)
            case Int32(SCTP_COMM_LOST): eventSink.yield(.down("association lost (peer unreachable or aborted)"))
            case Int32(SCTP_SHUTDOWN_COMP): eventSink.yield(.down("association shut down"))
            case Int32(SCTP_CANT_STR_ASSOC): eventSink.yield(.down("association could not be established"))
            default: break
            }
        case Int32(SCTP_STREAM_RESET_EVENT):
            let flags = Int32(trav_sctp_stream_reset_flags(data))
            guard flags & Int32(SCTP_STREAM_RESET_INCOMING_SSN) != 0,
                  flags & Int32(SCTP_STREAM_RESET_DENIED | SCTP_STREAM_RESET_FAILED) == 0 else { return }
            let count = trav_sctp_stream_reset_count(data)
            eventSink.yield(.streamsReset((0..<count).map { trav_sctp_stream_reset_stream(data, $0) }))
        default:
            break
        }
    }
}

/// A usrsctp socket pointer; usrsctp locks internally, and ``SCTPAssociation`` guards its lifetime.
struct SocketHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}
