#if canImport(Glibc)
import Glibc
#endif
import DatagramIO
import NIOCore
import NIOPosix
import STUNLite
import TURNLite

/// What to relay, through which server, for how long and how hard; every bound is named and checked in ``validate()``.
public struct RelayFloodConfiguration: Sendable {
    /// The TURN server's port for ``transport``; only loopback addresses are accepted.
    public var server = TransportAddress(ip: .v4(0x7F00_0001), port: 3478)
    /// How each lane reaches the server: its own UDP socket, TCP connection or TLS session (RFC 8656 §3.1).
    public var transport = FloodTransport.udp
    /// Long-term user name.
    public var username = "bench"
    /// Long-term password.
    public var password = "bench"
    /// Allocations flooded at once, each from its own client socket or connection to its own peer socket.
    public var lanes = 4
    /// Application data per ChannelData message, bytes (the peer receives exactly this).
    public var payloadBytes = 100
    /// Packets per second over all lanes; `nil` sends as fast as the windows allow.
    public var rate: Double?
    /// Packets sent but not yet seen at the peer, per lane, at most: the bounded window.
    public var window = 128
    /// Datagrams per `sendmmsg` call (UDP) and per `recvmmsg` call at the peers.
    public var batch = 32
    /// Seconds of relaying before counting starts.
    public var warmupSeconds = 1.0
    /// Seconds during which arrivals are counted.
    public var durationSeconds = 5.0
    /// Seconds after the measured period spent collecting late arrivals, without sending.
    public var drainSeconds = 0.2
    /// Whether to send with UDP GSO when the kernel allows it (the server still receives single datagrams); UDP only.
    public var segmentation = true
    /// A lane whose peer has seen nothing for this long forgets its in-flight packets (the server dropped them).
    public var stallSeconds = 0.05

    /// Creates the defaults: 4 lanes of 100-byte payloads, as fast as a 128-packet window per lane allows.
    public init() {}

    /// Upper bound of ``lanes`` (one allocation each: keep under the server's per-user quota).
    public static let maxLanes = 64
    /// Upper bound of ``payloadBytes``: a typical MTU's worth, well inside the servers' datagram limits.
    public static let maxPayloadBytes = 1400
    /// Upper bound of ``window``.
    public static let maxWindow = 4096
    /// Upper bound of ``batch``.
    public static let maxBatch = 256
    /// Upper bound of ``rate``, packets per second.
    public static let maxRate = 10_000_000.0
    /// Upper bound of ``warmupSeconds`` + ``durationSeconds``.
    public static let maxRunSeconds = 60.0
    /// The channel each lane binds (the first of RFC 8656 §12's range).
    public static let channel = ChannelNumber.validRange.lowerBound

    /// Rejects out-of-range settings and any server that is not a loopback address.
    public func validate() throws(FloodError) {
        try FloodTarget.check(server)
        guard (1...Self.maxLanes).contains(lanes) else { throw FloodError("--lanes must be 1…\(Self.maxLanes)") }
        guard (1...Self.maxPayloadBytes).contains(payloadBytes) else { throw FloodError("--payload must be 1…\(Self.maxPayloadBytes)") }
        guard (1...Self.maxWindow).contains(window) else { throw FloodError("--window must be 1…\(Self.maxWindow)") }
        guard (1...Self.maxBatch).contains(batch) else { throw FloodError("--batch must be 1…\(Self.maxBatch)") }
        if let rate { guard rate > 0, rate <= Self.maxRate else { throw FloodError("--rate must be in (0, \(Int(Self.maxRate))]") } }
        guard warmupSeconds >= 0, durationSeconds > 0, drainSeconds >= 0, warmupSeconds + durationSeconds <= Self.maxRunSeconds else {
            throw FloodError("--warmup ≥ 0, --duration > 0, together at most \(Int(Self.maxRunSeconds)) s")
        }
    }
}

/// What a relay flood counted, summed over lanes.
public struct RelayFloodCounts: Sendable, Equatable {
    /// ChannelData messages sent over the whole run.
    public var sentTotal = 0
    /// Payloads that reached a peer over the whole run, drain included.
    public var receivedTotal = 0
    /// ChannelData messages sent during the measured period.
    public var sent = 0
    /// Payloads that reached a peer during the measured period (the rate's numerator).
    public var received = 0
    /// Datagrams at a peer that were not a lane's payload (wrong length, truncated).
    public var invalid = 0
    /// Times a lane gave up waiting for its in-flight packets.
    public var stalls = 0

    /// Creates zero counts.
    public init() {}
}

/// The result of a relay flood.
public struct RelayFloodReport: Sendable {
    /// The counters.
    public var counts: RelayFloodCounts
    /// Payload bytes per packet.
    public var payloadBytes: Int
    /// Length of the measured period, seconds.
    public var seconds: Double
    /// CPU time this process used during the measured period, over its length (1.0 = one core busy).
    public var cpuShare: Double

    /// Relayed packets per second during the measured period.
    public var packetsPerSecond: Double { Double(counts.received) / seconds }
    /// Relayed payload megabits per second during the measured period.
    public var megabitsPerSecond: Double { packetsPerSecond * Double(payloadBytes) * 8 / 1e6 }
    /// Share of all packets sent that never reached a peer, 0…1.
    public var loss: Double {
        counts.sentTotal == 0 ? 0 : Double(max(0, counts.sentTotal - counts.receivedTotal)) / Double(counts.sentTotal)
    }
}

/// Relays ChannelData through a TURN server at full speed (or a paced rate) and counts what reaches the peers.
///
/// ```
///  lane ──ChannelData 0x4000──► server ──UDP from the relayed address──► peer socket
///  (a UDP socket: datagrams; a TCP or TLS connection: padded frames, RFC 8656 §12.5)
///  (allocated with long-term credentials; CreatePermission + ChannelBind to the peer)
/// ```
public struct RelayFlood {
    /// The settings.
    public let configuration: RelayFloodConfiguration

    /// A flood with `configuration`.
    public init(configuration: RelayFloodConfiguration) { self.configuration = configuration }

    /// Sets up the lanes (TCP and TLS connections on `group`), relays for warm-up + measured period +
    /// drain, frees the allocations, reports.
    ///
    /// The relaying itself is a blocking loop on the calling thread; stream lanes' writes go to `group`.
    public func run(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws(FloodError) -> RelayFloodReport {
        try configuration.validate()
        var lanes: [RelayFloodLane] = []
        let report: RelayFloodReport
        do {
            for i in 0..<configuration.lanes { lanes.append(try await RelayFloodLane.open(lane: i, configuration: configuration, group: group)) }
            report = try relay(lanes)
        } catch {
            for lane in lanes { await lane.sender.free() }
            throw error
        }
        for lane in lanes { await lane.sender.free() }
        return report
    }

    private func relay(_ lanes: [RelayFloodLane]) throws(FloodError) -> RelayFloodReport {
        let start = FloodClock.now()
        for lane in lanes { lane.lastProgress = start }
        var counts = RelayFloodCounts()
        let perLaneRate = configuration.rate.map { $0 / Double(configuration.lanes) }
        let timeline = FloodTimeline(warmupSeconds: configuration.warmupSeconds, durationSeconds: configuration.durationSeconds,
                                     drainSeconds: configuration.drainSeconds)
        let cpuShare = try timeline.run(from: start, pollingOn: lanes.map(\.peer.fd)) { now, sending, measuring throws(FloodError) in
            if sending {
                for lane in lanes {
                    let allowance = perLaneRate.map { Int(($0 * (now - start)).rounded(.down)) - lane.sent } ?? Int.max
                    try lane.fill(allowance: allowance, now: now, measured: measuring, counts: &counts)
                }
            }
            var received = 0
            for lane in lanes { received += try lane.receive(now: now, measured: measuring, counts: &counts) }
            return received
        }
        return RelayFloodReport(counts: counts, payloadBytes: configuration.payloadBytes,
                                seconds: configuration.durationSeconds, cpuShare: cpuShare)
    }
}

/// How a lane's ChannelData reaches the server: allocated and bound before the lane exists, then sent
/// by the lane's loop.
protocol RelayFloodSender: AnyObject {
    /// Sends up to `limit` of the lane's messages without blocking; returns how many went (0: full for now).
    func send(upTo limit: Int) throws(FloodError) -> Int
    /// Deletes the allocation (Refresh with LIFETIME 0, RFC 8656 §8) and closes; best effort.
    func free() async
}

/// One allocation's share of a relay flood: its sender, its peer socket, its window and the peer's batches.
final class RelayFloodLane {
    /// Receive room per datagram at the peer; longer ones are truncated by the kernel and counted invalid.
    static let maxPeerDatagram = 2048

    /// The way to the server.
    let sender: any RelayFloodSender
    /// The peer socket, connected to the lane's relayed address.
    let peer: MultiMessageSocket
    /// ChannelData messages sent over the whole run.
    private(set) var sent = 0
    /// When the peer last received something (or the window was last empty).
    var lastProgress = 0.0
    private let configuration: RelayFloodConfiguration
    private var inFlight = 0
    private let arrivals: ReceiveBatch

    private init(sender: any RelayFloodSender, peer: MultiMessageSocket, configuration: RelayFloodConfiguration) {
        self.sender = sender
        self.peer = peer
        self.configuration = configuration
        arrivals = ReceiveBatch(count: configuration.batch, maxBytes: Self.maxPeerDatagram)
    }

    /// Allocates over the configured transport, opens the peer socket, permits and binds it (RFC 8656 §7, §10, §12).
    static func open(lane: Int, configuration: RelayFloodConfiguration, group: any EventLoopGroup) async throws(FloodError) -> RelayFloodLane {
        let payload = (0..<configuration.payloadBytes).map { UInt8(truncatingIfNeeded: lane &+ $0) }
        let (sender, peer): (any RelayFloodSender, MultiMessageSocket)
        if configuration.transport.isStream {
            (sender, peer) = try await StreamRelaySender.open(payload: payload, configuration: configuration, group: group)
        } else {
            (sender, peer) = try DatagramRelaySender.open(payload: payload, configuration: configuration)
        }
        return RelayFloodLane(sender: sender, peer: peer, configuration: configuration)
    }

    /// A socket for the peer of an allocation relayed at `relayed`, connected to it; refuses anything
    /// but loopback (the floods' network rule covers the relay's traffic too).
    static func openPeer(toward relayed: TransportAddress) throws(FloodError) -> MultiMessageSocket {
        guard FloodTarget.isLoopback(relayed.ip) else { throw FloodError("relayed address \(relayed) is not loopback") }
        // The relay refuses peers on its own address: an IPv4 peer sits on another loopback address.
        let elsewhere = relayed.ip == IPAddress("127.0.0.2") ? IPAddress("127.0.0.1") : IPAddress("127.0.0.2")
        return try MultiMessageSocket(target: relayed, from: relayed.ip.isIPv4 ? elsewhere : nil)
    }

    /// `count` copies of the lane's ChannelData message back to back, padded to 4 bytes for a stream
    /// (RFC 8656 §12.5) and unpadded for UDP: every message of a lane is the same bytes, so one buffer
    /// serves every send (a prefix of it).
    static func frames(channel: UInt16, payload: [UInt8], padded: Bool, count: Int) -> [UInt8] {
        let frame = ChannelData(channel: channel, payload: payload).encode(padded: padded)
        return Array([[UInt8]](repeating: frame, count: count).joined())
    }

    /// Sends up to `allowance` messages while the window has room and the sender takes them.
    func fill(allowance: Int, now: Double, measured: Bool, counts: inout RelayFloodCounts) throws(FloodError) {
        var left = min(allowance, configuration.window - inFlight)
        while left > 0 {
            if inFlight == 0 { lastProgress = now }
            let n = try sender.send(upTo: left)
            if n == 0 { return }
            sent += n
            inFlight += n
            left -= n
            counts.sentTotal += n
            if measured { counts.sent += n }
        }
    }

    /// Reads one batch at the peer without blocking and counts it; returns how many datagrams arrived.
    func receive(now: Double, measured: Bool, counts: inout RelayFloodCounts) throws(FloodError) -> Int {
        let n = try arrivals.receive(on: peer)
        var valid = 0
        for i in 0..<n {
            if !arrivals.isTruncated(i), arrivals.length(i) == configuration.payloadBytes { valid += 1 } else { counts.invalid += 1 }
        }
        counts.receivedTotal += valid
        if measured { counts.received += valid }
        if n > 0 {
            inFlight = max(0, inFlight - n)
            lastProgress = now
        } else if inFlight > 0, now - lastProgress > configuration.stallSeconds {
            inFlight = 0
            counts.stalls += 1
            lastProgress = now
        }
        return n
    }
}

/// A lane's own UDP socket: allocates on it with blocking requests (``TURNFloodSession``), then sends
/// its ChannelData with `sendmmsg`, in UDP GSO runs when the kernel allows.
///
/// With GSO one message carries a run of ``segmentsPerSend`` copies from the lane's buffer; without it
/// each message points at the first.
final class DatagramRelaySender: RelayFloodSender {
    /// Bytes one UDP GSO send may carry, at most (a UDP datagram's payload limit, rounded down).
    static let maxSegmentedBytes = 65_000

    private let client: MultiMessageSocket
    private var session: TURNFloodSession
    private let batch: Int
    private let frameSize: Int
    private let segmentsPerSend: Int
    private var segmentation = false
    private let frames: UnsafeMutableRawBufferPointer
    private let sendHeaders: UnsafeMutablePointer<MultiMessageHeader>
    private let sendVectors: UnsafeMutablePointer<iovec>
    private var runLengths: [Int]

    private init(client: MultiMessageSocket, session: TURNFloodSession, payload: [UInt8], configuration: RelayFloodConfiguration) {
        self.client = client
        self.session = session
        batch = configuration.batch
        frameSize = ChannelData.headerSize + payload.count
        segmentsPerSend = max(1, min(MultiMessageSocket.maxSegmentsPerSend, Self.maxSegmentedBytes / frameSize))
        frames = .allocate(byteCount: segmentsPerSend * frameSize, alignment: 16)
        frames.copyBytes(from: RelayFloodLane.frames(channel: RelayFloodConfiguration.channel, payload: payload,
                                                padded: false, count: segmentsPerSend))
        sendHeaders = .allocate(capacity: batch)
        sendHeaders.initialize(repeating: MultiMessageHeader(), count: batch)
        sendVectors = .allocate(capacity: batch)
        sendVectors.initialize(repeating: iovec(), count: batch)
        runLengths = Array(repeating: 0, count: batch)
    }

    deinit {
        frames.deallocate()
        sendHeaders.deallocate()
        sendVectors.deallocate()
    }

    /// Allocates from a new socket, opens the peer socket, permits and binds it (RFC 8656 §7, §10, §12).
    static func open(payload: [UInt8], configuration: RelayFloodConfiguration) throws(FloodError) -> (DatagramRelaySender, MultiMessageSocket) {
        let client = try MultiMessageSocket(target: configuration.server)
        var session = TURNFloodSession(socket: client, username: configuration.username, password: configuration.password)
        let allocated = try session.request(.allocate) { $0.append(RequestedTransport.udp) }
        guard let relayed = (try? allocated.attribute(XORRelayedAddress.self))?.address else {
            throw FloodError("Allocate success without XOR-RELAYED-ADDRESS")
        }
        let peer = try RelayFloodLane.openPeer(toward: relayed)
        let peerAddress = peer.local
        _ = try session.request(.createPermission) { $0.append(XORPeerAddress(peerAddress)) }
        _ = try session.request(.channelBind) {
            $0.append(ChannelNumber(RelayFloodConfiguration.channel))
            $0.append(XORPeerAddress(peerAddress))
        }
        let sender = DatagramRelaySender(client: client, session: session, payload: payload, configuration: configuration)
        sender.segmentation = configuration.segmentation && client.enableSegmentation(segmentSize: sender.frameSize)
        return (sender, peer)
    }

    /// One `sendmmsg` of up to ``RelayFloodConfiguration/batch`` messages.
    func send(upTo limit: Int) throws(FloodError) -> Int {
        var messages = 0
        var planned = 0
        while messages < batch, planned < limit {
            let run = segmentation ? min(limit - planned, segmentsPerSend) : 1
            sendVectors[messages] = iovec(iov_base: frames.baseAddress!, iov_len: run * frameSize)
            sendHeaders[messages] = MultiMessageHeader()
            sendHeaders[messages].header.msg_iov = sendVectors + messages
            sendHeaders[messages].header.msg_iovlen = 1
            runLengths[messages] = run
            messages += 1
            planned += run
        }
        let sentMessages = try client.send(sendHeaders, count: messages)
        return runLengths[0..<sentMessages].reduce(0, +)
    }

    func free() async {
        // With GSO on, a request longer than one ChannelData message would leave cut in segments.
        if segmentation { client.disableSegmentation() }
        _ = try? session.request(.refresh) { $0.append(Lifetime(seconds: 0)) }
    }
}
