#if canImport(Glibc)
import Glibc
#endif
import DatagramIO
import STUNLite
import TURNLite

/// Many allocations at media rates: how many, how fast each, how big, which way; every bound is named and checked in ``validate()``.
public struct MediaFloodConfiguration: Sendable {
    /// Which way media flows through each allocation.
    public enum Direction: String, Sendable, CaseIterable {
        /// Client → relay → peer (ChannelData in, plain UDP out; RFC 8656 §12.6).
        case toPeer = "to-peer"
        /// Peer → relay → client (plain UDP in at the relay socket, ChannelData out; RFC 8656 §12.7).
        case toClient = "to-client"
        /// Both at once, each at the full rate.
        case both
    }

    /// The TURN server (UDP); only loopback addresses are accepted.
    public var server = TransportAddress(ip: .v4(0x7F00_0001), port: 3478)
    /// Long-term user name.
    public var username = "bench"
    /// Long-term password.
    public var password = "bench"
    /// Allocations held at once, each from its own client socket, with one channel to a peer.
    public var allocations = 1000
    /// Packets per second each allocation carries in each direction it carries (audio ~50, video ~100).
    public var packetsPerSecond = 50.0
    /// Application bytes per packet (the first 16 carry the allocation, the direction and the send time).
    public var payloadBytes = 200
    /// Which way the packets go.
    public var direction = Direction.both
    /// Peer sockets the allocations' peers are spread over (allocation `i` talks to peer `i % peerSockets`).
    public var peerSockets = 64
    /// Loopback addresses the client sockets are spread over (allocation `i` sends from source `i % sourceAddresses`),
    /// 127.0.1.1 upwards: a fleet's clients come from many hosts, and a sharded relay steers each by its address.
    public var sourceAddresses = defaultSourceAddresses
    /// Default of ``sourceAddresses``.
    public static let defaultSourceAddresses = 64
    /// Upper bound of ``sourceAddresses`` (127.0.1.1 … 127.0.1.250).
    public static let maxSourceAddresses = 250
    /// Seconds of media before counting.
    public var warmupSeconds = 2.0
    /// Seconds counted: packets sent in this period are the loss and latency sample.
    public var durationSeconds = 5.0
    /// Seconds after the measured period spent collecting late arrivals, without sending.
    public var drainSeconds = 0.5
    /// No relay at all: each client socket talks straight to its peer socket, the same packets at the
    /// same rates — the loopback path the relay's added latency is measured against.
    public var direct = false
    /// Processes whose CPU time (from `/proc/PID/stat`) is counted over the measured period; the first
    /// one's resident memory is read before and after the allocations are made.
    public var watchedProcesses: [Int32] = []

    /// Creates the defaults: 1000 allocations, 50 packets/s of 200 bytes each way.
    public init() {}

    /// Upper bound of ``allocations`` (two sockets' worth of descriptors each, at most, in this process).
    public static let maxAllocations = 10_000
    /// Upper bound of ``packetsPerSecond``.
    public static let maxPacketsPerSecond = 1000.0
    /// Lower bound of ``payloadBytes``: room for the allocation, direction and send time.
    public static let minPayloadBytes = 16
    /// Upper bound of ``payloadBytes``: a typical MTU's worth.
    public static let maxPayloadBytes = 1400
    /// Upper bound of ``peerSockets``.
    public static let maxPeerSockets = 1024
    /// Upper bound of ``warmupSeconds`` + ``durationSeconds`` + ``drainSeconds``.
    public static let maxRunSeconds = 120.0
    /// Setting up every allocation (and freeing them afterwards) gives up after this long, seconds.
    public static let maxSetupSeconds = 180.0
    /// The channel each allocation binds (the first of RFC 8656 §12's range).
    public static let channel = ChannelNumber.validRange.lowerBound

    /// Rejects out-of-range settings and any server that is not a loopback address.
    public func validate() throws(FloodError) {
        try FloodTarget.check(server)
        guard server.ip.isIPv4 else { throw FloodError("--target must be an IPv4 loopback address") }
        guard (1...Self.maxAllocations).contains(allocations) else { throw FloodError("--allocations must be 1…\(Self.maxAllocations)") }
        guard packetsPerSecond > 0, packetsPerSecond <= Self.maxPacketsPerSecond else {
            throw FloodError("--pps must be in (0, \(Int(Self.maxPacketsPerSecond))]")
        }
        guard (Self.minPayloadBytes...Self.maxPayloadBytes).contains(payloadBytes) else {
            throw FloodError("--payload must be \(Self.minPayloadBytes)…\(Self.maxPayloadBytes)")
        }
        guard (1...Self.maxPeerSockets).contains(peerSockets) else { throw FloodError("--peers must be 1…\(Self.maxPeerSockets)") }
        guard (1...Self.maxSourceAddresses).contains(sourceAddresses) else {
            throw FloodError("--sources must be 1…\(Self.maxSourceAddresses)")
        }
        guard warmupSeconds >= 0, durationSeconds > 0, drainSeconds >= 0,
              warmupSeconds + durationSeconds + drainSeconds <= Self.maxRunSeconds else {
            throw FloodError("--warmup ≥ 0, --duration > 0, --drain ≥ 0, together at most \(Int(Self.maxRunSeconds)) s")
        }
    }
}

/// One-way latencies in whole microseconds, counted in one bucket per microsecond up to ``capMicroseconds``.
public struct LatencyHistogram: Sendable {
    /// Latencies at or above this land in the last bucket: 1 s.
    public static let capMicroseconds = 1_000_000
    private var buckets = [Int](repeating: 0, count: capMicroseconds + 1)
    /// Latencies counted.
    public private(set) var count = 0

    /// An empty histogram.
    public init() {}

    /// Counts one latency.
    public mutating func add(microseconds: Int) {
        buckets[min(max(0, microseconds), Self.capMicroseconds)] += 1
        count += 1
    }

    /// The smallest latency at or below which `fraction` (0…1) of those counted lie; `nil` when empty.
    public func percentile(_ fraction: Double) -> Int? {
        guard count > 0 else { return nil }
        let rank = max(1, Int((fraction * Double(count)).rounded(.up)))
        var seen = 0
        for (us, n) in buckets.enumerated() where n > 0 {
            seen += n
            if seen >= rank { return us }
        }
        return Self.capMicroseconds
    }
}

/// Reads what `/proc` says about another process: CPU time and resident memory (Linux).
public enum ProcessProbe {
    /// User plus system CPU seconds of process `pid` (all its threads), or `nil` when it is gone.
    public static func cpuSeconds(_ pid: Int32) -> Double? {
        guard let stat = read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        // After the command name: state is field 3, utime field 14, stime field 15 (proc(5)).
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Resident memory of process `pid` in bytes (`VmRSS`), or `nil` when it is gone.
    public static func residentBytes(_ pid: Int32) -> Int? {
        guard let status = read("/proc/\(pid)/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return nil }
        return kib * 1024
    }

    /// A small text file's contents (at most 64 KiB).
    private static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 65_536)
        let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        return String(decoding: bytes[0..<n], as: UTF8.self)
    }
}

/// What a media flood measured.
public struct MediaFloodReport: Sendable {
    /// Allocations held during the run.
    public var allocations: Int
    /// Packets sent in the measured period, all directions.
    public var sent = 0
    /// Of those, packets that arrived (by the end of the drain).
    public var received = 0
    /// Packets the generator's socket buffers refused (not counted as sent).
    public var sendRefused = 0
    /// Datagrams that were no packet of this flood (wrong length or header).
    public var invalid = 0
    /// One-way latency of the measured packets that arrived.
    public var latency = LatencyHistogram()
    /// Seconds spent allocating and binding before the media started.
    public var setupSeconds = 0.0
    /// The watched processes' CPU over the measured period, over its length (1.0 = one core busy).
    public var watchedCPUShare: Double?
    /// The first watched process's resident memory before the allocations, after them, and after the media, bytes.
    public var residentBytes: (beforeSetup: Int, afterSetup: Int, afterMedia: Int)?
    /// This process's CPU over the measured period, over its length.
    public var generatorCPUShare = 0.0
    /// How late the generator sent, at worst, in the measured period (seconds behind the schedule).
    public var maxLagSeconds = 0.0

    /// Share of the measured packets that never arrived, 0…1.
    public var loss: Double { sent == 0 ? 0 : Double(max(0, sent - received)) / Double(sent) }

    /// Resident memory per allocation with the media flowing, bytes: (after media − before setup) / allocations.
    public var bytesPerAllocation: Int? {
        residentBytes.map { ($0.afterMedia - $0.beforeSetup) / max(1, allocations) }
    }

    /// Resident memory per allocation right after setup, before any media, bytes.
    public var idleBytesPerAllocation: Int? {
        residentBytes.map { ($0.afterSetup - $0.beforeSetup) / max(1, allocations) }
    }
}

/// Holds thousands of allocations and relays media-rate traffic through each, paced evenly: loss,
/// one-way latency (p50/p99) and what the relay spent on it (CPU, resident memory per allocation).
///
/// ```
///  client socket i ──ChannelData 0x4000──► relay ──UDP from relayed address i──► peer socket i % P
///  client socket i ◄──ChannelData 0x4000── relay ◄──UDP to relayed address i──── peer socket i % P
/// ```
///
/// Packets go out in one round-robin schedule at allocations × rate slots per second, so each
/// allocation sends every 1/rate seconds and the allocations' sends are spread evenly over that
/// interval. Each payload carries its allocation, direction and monotonic send time; client sockets
/// are watched with `epoll`, peers send in `sendmmsg` batches.
public final class MediaFlood {
    /// Receive room per datagram; longer ones are truncated and counted invalid.
    static let maxDatagram = 2048
    /// Datagrams per `recvmmsg`/`sendmmsg`.
    static let batch = 32
    /// Longest wait for input when nothing is due, milliseconds.
    static let waitMilliseconds: Int32 = 1

    /// The settings.
    public let configuration: MediaFloodConfiguration
    private var clients: [MultiMessageSocket] = []
    private var sessions: [TURNFloodSession] = []
    private var peers: [MultiMessageSocket] = []
    /// Where peers send for allocation `i`: its relayed address (or, direct, its client socket), as a `sockaddr_in`.
    private var destinations: UnsafeMutablePointer<sockaddr_in>
    private let frameHeader: Int
    private var upFrame: UnsafeMutableRawBufferPointer
    private var peerFrames: UnsafeMutableRawBufferPointer
    private var peerHeaders: UnsafeMutablePointer<MultiMessageHeader>
    private var peerVectors: UnsafeMutablePointer<iovec>
    private var peerPending: [Int]
    private let arrivals = ReceiveBatch(count: MediaFlood.batch, maxBytes: MediaFlood.maxDatagram)
    private var report: MediaFloodReport
    private var measureFrom: UInt64 = 0
    private var measureUntil: UInt64 = 0

    /// A flood with `configuration` (checked again by ``run()``).
    public init(configuration: MediaFloodConfiguration) {
        self.configuration = configuration
        let p = configuration.peerSockets
        frameHeader = configuration.direct ? 0 : ChannelData.headerSize
        destinations = .allocate(capacity: configuration.allocations)
        destinations.initialize(repeating: sockaddr_in(), count: configuration.allocations)
        upFrame = .allocate(byteCount: frameHeader + configuration.payloadBytes, alignment: 16)
        upFrame.initializeMemory(as: UInt8.self, repeating: 0)
        peerFrames = .allocate(byteCount: p * Self.batch * configuration.payloadBytes, alignment: 16)
        peerFrames.initializeMemory(as: UInt8.self, repeating: 0)
        peerHeaders = .allocate(capacity: p * Self.batch)
        peerHeaders.initialize(repeating: MultiMessageHeader(), count: p * Self.batch)
        peerVectors = .allocate(capacity: p * Self.batch)
        peerVectors.initialize(repeating: iovec(), count: p * Self.batch)
        peerPending = Array(repeating: 0, count: p)
        report = MediaFloodReport(allocations: configuration.allocations)
    }

    deinit {
        destinations.deallocate()
        upFrame.deallocate()
        peerFrames.deallocate()
        peerHeaders.deallocate()
        peerVectors.deallocate()
    }

    /// Allocates and binds, runs warm-up + measured period + drain, frees the allocations, reports.
    public func run() throws(FloodError) -> MediaFloodReport {
        let c = configuration
        try c.validate()
        let watched = c.watchedProcesses.first
        let rssBefore = watched.flatMap(ProcessProbe.residentBytes)
        let setupStart = FloodClock.now()
        try setUp(deadline: setupStart + MediaFloodConfiguration.maxSetupSeconds)
        defer { free(deadline: FloodClock.now() + MediaFloodConfiguration.maxSetupSeconds) }
        report.setupSeconds = FloodClock.now() - setupStart
        let rssSetUp = watched.flatMap(ProcessProbe.residentBytes)

        let poll = try EventPoll(capacity: 256)
        for (i, s) in clients.enumerated() { try poll.watch(s.fd, token: UInt64(i)) }
        for (j, s) in peers.enumerated() { try poll.watch(s.fd, token: UInt64(clients.count + j)) }

        let slotsPerSecond = Double(c.allocations) * c.packetsPerSecond
        let start = FloodClock.now()
        let startNs = Self.nanoseconds(start)
        measureFrom = startNs + UInt64(c.warmupSeconds * 1e9)
        measureUntil = measureFrom + UInt64(c.durationSeconds * 1e9)
        let sendUntil = start + c.warmupSeconds + c.durationSeconds
        let stopAt = sendUntil + c.drainSeconds
        var slots = 0
        var cpuAtStart: (own: Double, watched: Double)?
        var cpuAtEnd: (own: Double, watched: Double)?
        func cpuNow() -> (own: Double, watched: Double) {
            (FloodClock.cpuSeconds(), c.watchedProcesses.compactMap(ProcessProbe.cpuSeconds).reduce(0, +))
        }
        while true {
            let now = FloodClock.now()
            if now >= stopAt { break }
            let measuring = now >= start + c.warmupSeconds && now < sendUntil
            if measuring, cpuAtStart == nil { cpuAtStart = cpuNow() }
            if now >= sendUntil, cpuAtEnd == nil { cpuAtEnd = cpuNow() }
            var sentSome = false
            if now < sendUntil {
                // Bounded per round: a generator that fell behind catches up over several rounds.
                let due = min(Int((now - start) * slotsPerSecond), slots + c.allocations)
                if slots < due, measuring {
                    report.maxLagSeconds = max(report.maxLagSeconds, now - (start + Double(slots) / slotsPerSecond))
                }
                while slots < due {
                    try send(slot: slots)
                    slots += 1
                    sentSome = true
                }
                try flushPeers()
            }
            let ready = poll.wait(milliseconds: sentSome ? 0 : Self.waitMilliseconds)
            for k in 0..<ready { try drain(token: Int(poll.token(k))) }
        }
        let end = cpuAtEnd ?? cpuNow()
        let begin = cpuAtStart ?? end
        report.generatorCPUShare = (end.own - begin.own) / c.durationSeconds
        if !c.watchedProcesses.isEmpty { report.watchedCPUShare = (end.watched - begin.watched) / c.durationSeconds }
        if let rssBefore, let rssSetUp, let rssAfter = watched.flatMap(ProcessProbe.residentBytes) {
            report.residentBytes = (rssBefore, rssSetUp, rssAfter)
        }
        return report
    }

    // MARK: Setup

    /// Opens the peer sockets, then per allocation a client socket, Allocate and ChannelBind to its peer (RFC 8656 §7, §12).
    private func setUp(deadline: Double) throws(FloodError) {
        let c = configuration
        for _ in 0..<c.peerSockets {
            peers.append(try MultiMessageSocket(unconnectedAt: TransportAddress(ip: Self.peerIP, port: 0)))
        }
        clients.reserveCapacity(c.allocations)
        for i in 0..<c.allocations {
            guard FloodClock.now() < deadline else { throw FloodError("setup took over \(Int(MediaFloodConfiguration.maxSetupSeconds)) s at allocation \(i)") }
            let peer = peers[i % peers.count].local
            if c.direct {
                let client = try MultiMessageSocket(target: peer, from: c.server.ip)
                clients.append(client)
                setDestination(i, client.local)
                continue
            }
            let client = try MultiMessageSocket(target: c.server, from: Self.sourceIP(i % c.sourceAddresses))
            var session = TURNFloodSession(socket: client, username: c.username, password: c.password)
            let allocated = try session.request(.allocate) { $0.append(RequestedTransport.udp) }
            guard let relayed = (try? allocated.attribute(XORRelayedAddress.self))?.address else {
                throw FloodError("Allocate success without XOR-RELAYED-ADDRESS")
            }
            // The network rule covers the relay's traffic too: the peers live on loopback, off the relay's address.
            guard FloodTarget.isLoopback(relayed.ip), relayed.ip.isIPv4, relayed.ip != Self.peerIP else {
                throw FloodError("relayed address \(relayed) is not an IPv4 loopback address other than \(Self.peerIP)")
            }
            _ = try session.request(.channelBind) {
                $0.append(ChannelNumber(MediaFloodConfiguration.channel))
                $0.append(XORPeerAddress(peer))
            }
            clients.append(client)
            sessions.append(session)
            setDestination(i, relayed)
        }
        if !c.direct {
            let length = UInt16(c.payloadBytes)
            upFrame.storeBytes(of: MediaFloodConfiguration.channel.bigEndian, toByteOffset: 0, as: UInt16.self)
            upFrame.storeBytes(of: length.bigEndian, toByteOffset: 2, as: UInt16.self)
        }
    }

    /// Client source `k`: 127.0.1.(k + 1).
    static func sourceIP(_ k: Int) -> IPAddress { .v4(0x7F00_0101 + UInt32(k)) }

    /// The peers' address: the relay refuses peers on its own address, which is 127.0.0.1 in the benchmarks.
    static let peerIP = IPAddress("127.0.0.2")!

    private func setDestination(_ i: Int, _ address: TransportAddress) {
        UDPSocket.withSockaddr(address) { pointer, _ in
            pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { destinations[i] = $0.pointee }
        }
    }

    /// Deletes the allocations (Refresh LIFETIME 0, RFC 8656 §8), best effort, until `deadline`.
    private func free(deadline: Double) {
        for i in sessions.indices where FloodClock.now() < deadline {
            _ = try? sessions[i].request(.refresh) { $0.append(Lifetime(seconds: 0)) }
        }
    }

    // MARK: Media

    private static func nanoseconds(_ seconds: Double) -> UInt64 { UInt64(seconds * 1e9) }

    private static func nowNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    private static func stamp(_ buffer: UnsafeMutableRawPointer, allocation: Int, direction: UInt32, at time: UInt64) {
        buffer.storeBytes(of: UInt32(allocation), toByteOffset: 0, as: UInt32.self)
        buffer.storeBytes(of: direction, toByteOffset: 4, as: UInt32.self)
        buffer.storeBytes(of: time, toByteOffset: 8, as: UInt64.self)
    }

    /// Sends slot `slot`'s packets: allocation `slot % allocations`, in each configured direction.
    private func send(slot: Int) throws(FloodError) {
        let c = configuration
        let i = slot % c.allocations
        let time = Self.nowNanoseconds()
        let counted = time >= measureFrom && time < measureUntil ? 1 : 0
        if c.direction != .toClient {
            Self.stamp(upFrame.baseAddress! + frameHeader, allocation: i, direction: 0, at: time)
            if try clients[i].send(UnsafeRawBufferPointer(upFrame)) { report.sent += counted } else { report.sendRefused += 1 }
        }
        if c.direction != .toPeer {
            let j = i % peers.count
            let k = j * Self.batch + peerPending[j]
            let payload = peerFrames.baseAddress! + k * c.payloadBytes
            Self.stamp(payload, allocation: i, direction: 1, at: time)
            peerVectors[k] = iovec(iov_base: payload, iov_len: c.payloadBytes)
            peerHeaders[k] = MultiMessageHeader()
            peerHeaders[k].header.msg_name = UnsafeMutableRawPointer(destinations + i)
            peerHeaders[k].header.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
            peerHeaders[k].header.msg_iov = peerVectors + k
            peerHeaders[k].header.msg_iovlen = 1
            peerPending[j] += 1
            report.sent += counted
            if peerPending[j] == Self.batch { try flushPeer(j) }
        }
    }

    private func flushPeers() throws(FloodError) {
        for j in peerPending.indices where peerPending[j] > 0 { try flushPeer(j) }
    }

    /// Sends peer `j`'s pending messages; what its buffer refuses is uncounted from the sent packets.
    private func flushPeer(_ j: Int) throws(FloodError) {
        let pending = peerPending[j]
        peerPending[j] = 0
        var done = 0
        while done < pending {
            let n = try peers[j].send(peerHeaders + j * Self.batch + done, count: pending - done)
            if n == 0 { break }
            done += n
        }
        guard done < pending else { return }
        for k in done..<pending {
            let time = peerFrames.baseAddress!.loadUnaligned(fromByteOffset: (j * Self.batch + k) * configuration.payloadBytes + 8,
                                                             as: UInt64.self)
            if time >= measureFrom && time < measureUntil { report.sent -= 1 }
            report.sendRefused += 1
        }
    }

    /// Reads what socket `token` (a client below the allocation count, else a peer) has queued and counts it.
    private func drain(token: Int) throws(FloodError) {
        let isClient = token < clients.count
        let socket = isClient ? clients[token] : peers[token - clients.count]
        let expected = configuration.payloadBytes + (isClient ? frameHeader : 0)
        while true {
            let n = try arrivals.receive(on: socket)
            let now = Self.nowNanoseconds()
            for d in 0..<n {
                let bytes = arrivals.bytes(d)
                guard !arrivals.isTruncated(d), bytes.count == expected else {
                    report.invalid += 1
                    continue
                }
                record(UnsafeRawBufferPointer(rebasing: bytes[(isClient ? frameHeader : 0)...]), toClient: isClient, now: now)
            }
            if n < arrivals.count { return }
        }
    }

    private func record(_ payload: UnsafeRawBufferPointer, toClient: Bool, now: UInt64) {
        let allocation = Int(payload.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        let direction = payload.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        let sent = payload.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        guard allocation < configuration.allocations, direction == (toClient ? 1 : 0), sent <= now else {
            report.invalid += 1
            return
        }
        guard sent >= measureFrom, sent < measureUntil else { return }
        report.received += 1
        report.latency.add(microseconds: Int((now - sent) / 1000))
    }
}
