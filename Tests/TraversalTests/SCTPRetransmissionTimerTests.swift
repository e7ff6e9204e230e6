import Foundation
import Synchronization
import Testing
@testable import Traversal

/// The channel engine's retransmission timer on a lossless line: RFC 9260 §6.3.2 rule R3 restarts T3-rtx
/// whenever the cumulative TSN ack advances, so while acknowledgements flow it never expires and nothing is
/// sent twice. usrsctp's fast SACK path skips that restart; ``SCTPAssociation`` keeps every message off
/// that path (see ``SCTPAssociation/send(_:stream:ppid:delivery:)``).
@Suite(.serialized, .timeLimit(.minutes(2))) struct SCTPRetransmissionTimerTests {
    /// One direction of an emulated access line: a first-in first-out bottleneck of `rate` bit/s, then a
    /// fixed delay. It never loses nor reorders a packet, and its queue has no limit (SCTP's receive
    /// window, a few MiB here, bounds what can stand in it), so any DATA chunk that reaches the far end
    /// twice was retransmitted without cause.
    final class Line: Sendable {
        private let sink: AsyncStream<(ContinuousClock.Instant, [UInt8])>.Continuation
        private let free = Mutex<ContinuousClock.Instant>(.now)
        private let rate: Int
        private let delay: Duration
        private let task: Task<Void, Never>

        /// A line that hands each packet to `deliver` once it has crossed.
        init(rate: Int, delay: Duration, deliver: @escaping @Sendable ([UInt8]) -> Void) {
            self.rate = rate
            self.delay = delay
            let (stream, sink) = AsyncStream.makeStream(of: (ContinuousClock.Instant, [UInt8]).self)
            self.sink = sink
            task = Task {
                for await (due, packet) in stream {
                    try? await Task.sleep(until: due, clock: .continuous)
                    deliver(packet)
                }
            }
        }

        /// Queues a packet at the bottleneck.
        func send(_ packet: [UInt8]) {
            let now = ContinuousClock.now
            let transmit = Duration.nanoseconds(Int64(packet.count) * 8_000_000_000 / Int64(rate))
            let departs = free.withLock { f in
                f = max(f, now) + transmit
                return f
            }
            sink.yield((departs + delay, packet))
        }

        /// Stops the line; packets still on it are dropped.
        func close() {
            sink.finish()
            task.cancel()
        }
    }

    /// What the far end of the sender's line saw.
    final class Arrivals: Sendable {
        private let state = Mutex<(chunks: Int, duplicates: Int, seen: Set<UInt32>)>((0, 0, []))

        /// DATA chunks received, and those whose TSN had arrived before.
        var counts: (chunks: Int, duplicates: Int) { state.withLock { ($0.chunks, $0.duplicates) } }

        /// Counts the DATA chunks (RFC 9260 §3.3.1, type 0) in one SCTP packet: 12-byte common header, then
        /// chunks of type, flags, length, padded to 4 bytes; a DATA chunk's TSN follows its length.
        func record(_ packet: [UInt8]) {
            var i = 12
            while i + 4 <= packet.count {
                let length = Int(packet[i + 2]) << 8 | Int(packet[i + 3])
                guard length >= 4 else { return }
                if packet[i] == 0, i + 8 <= packet.count {
                    let tsn = packet[i + 4..<i + 8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                    state.withLock { s in
                        s.chunks += 1
                        if !s.seen.insert(tsn).inserted { s.duplicates += 1 }
                    }
                }
                i += (length + 3) & ~3
            }
        }
    }

    /// Two channel sessions over a line of `rate` bit/s and `delay` each way; `arrivals` sees what reaches the camera.
    static func sessions(rate: Int, delay: Duration, configuration: SCTPAssociation.Configuration, arrivals: Arrivals)
        throws -> (viewer: ChannelSession, camera: ChannelSession, lines: [Line]) {
        let viewerBox = Mutex<ChannelSession?>(nil)
        let cameraBox = Mutex<ChannelSession?>(nil)
        let toCamera = Line(rate: rate, delay: delay) { packet in
            arrivals.record(packet)
            cameraBox.withLock { $0 }?.input(packet)
        }
        let toViewer = Line(rate: rate, delay: delay) { packet in viewerBox.withLock { $0 }?.input(packet) }
        let viewer = try ChannelSession(role: .viewer, configuration: configuration, logger: .init(label: "viewer")) { toCamera.send($0) }
        let camera = try ChannelSession(role: .camera, configuration: configuration, logger: .init(label: "camera")) { toViewer.send($0) }
        viewerBox.withLock { $0 = viewer }
        cameraBox.withLock { $0 = camera }
        viewer.connect()
        camera.connect()
        return (viewer, camera, [toCamera, toViewer])
    }

    /// 4 MiB over a reliable channel on a 10 Mbit/s, 20 ms line: the sender fills the bottleneck's queue
    /// (seconds of standing queue, as a keyframe burst does on a slow line), acknowledgements arrive all
    /// the time, and no chunk arrives twice. Without the restart, T3 expires about once per RTO from the
    /// first send and marks every chunk older than the smoothed RTT (those standing in the queue) for
    /// retransmission: hundreds of duplicates.
    ///
    /// RTO.min is RFC 9260's recommended 1 s (§16) here, not the 200 ms a datagram path uses, so that only
    /// a stall of the whole test process longer than a second could expire the timer for a good reason;
    /// the bug still expires it during a transfer of 3.5 s or more.
    @Test func aLosslessLineNeverRetransmitsAReliableChannel() async throws {
        var configuration = SCTPAssociation.Configuration.datagram(pathMTU: 1200)
        configuration.rtoInitial = 1000
        configuration.rtoMin = 1000
        let arrivals = Arrivals()
        let (viewer, camera, lines) = try Self.sessions(rate: 10_000_000, delay: .milliseconds(20),
                                                        configuration: configuration, arrivals: arrivals)
        defer {
            viewer.close(reason: "test over")
            camera.close(reason: "test over")
            for line in lines { line.close() }
        }
        async let incoming: PeerChannel? = { for await c in camera.incoming { return c }; return nil }()
        let channel = try await viewer.open(label: "bulk", delivery: .reliable, priority: .normal)
        let received = try #require(await incoming)
        let message = [UInt8](repeating: 0x5A, count: PeerChannel.maxMessageSize)
        try await channel.send(message)
        var messages = received.messages.makeAsyncIterator()
        let got = try await messages.next()
        #expect(got == message)
        let seen = arrivals.counts
        // 4 MiB in chunks of at most 1200 bytes: the transfer really crossed the line.
        #expect(seen.chunks >= PeerChannel.maxMessageSize / 1200)
        #expect(seen.duplicates == 0, "DATA chunks retransmitted on a lossless line: \(seen.duplicates) of \(seen.chunks)")
    }

    /// The engine's counters see a loss being repaired: one DATA packet toward the camera is dropped, the
    /// message still arrives whole, and the process's counters moved by at least that one retransmission.
    @Test func theEngineCountersRecordTheRepairOfALostPacket() async throws {
        let before = ChannelEngineCounters.current
        let dataPackets = Atomic(0)
        let arrivals = Arrivals()
        let viewerBox = Mutex<ChannelSession?>(nil)
        let cameraBox = Mutex<ChannelSession?>(nil)
        let toCamera = Line(rate: 20_000_000, delay: .milliseconds(5)) { packet in
            // The 20th packet carrying a full-size DATA chunk never arrives (later ones do: fast retransmit).
            if packet.count > 1000, dataPackets.add(1, ordering: .relaxed).newValue == 20 { return }
            arrivals.record(packet)
            cameraBox.withLock { $0 }?.input(packet)
        }
        let toViewer = Line(rate: 20_000_000, delay: .milliseconds(5)) { packet in viewerBox.withLock { $0 }?.input(packet) }
        let configuration = SCTPAssociation.Configuration.datagram(pathMTU: 1200)
        let viewer = try ChannelSession(role: .viewer, configuration: configuration, logger: .init(label: "viewer")) { toCamera.send($0) }
        let camera = try ChannelSession(role: .camera, configuration: configuration, logger: .init(label: "camera")) { toViewer.send($0) }
        viewerBox.withLock { $0 = viewer }
        cameraBox.withLock { $0 = camera }
        defer {
            viewer.close(reason: "test over")
            camera.close(reason: "test over")
            toCamera.close()
            toViewer.close()
        }
        viewer.connect()
        camera.connect()
        async let incoming: PeerChannel? = { for await c in camera.incoming { return c }; return nil }()
        let channel = try await viewer.open(label: "bulk", delivery: .reliable, priority: .normal)
        let received = try #require(await incoming)
        let message = (0..<(256 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try await channel.send(message)
        var messages = received.messages.makeAsyncIterator()
        #expect(try await messages.next() == message)
        #expect(dataPackets.load(ordering: .relaxed) > 20, "the transfer never reached the dropped packet")
        let spent = ChannelEngineCounters.current.since(before)
        #expect(spent.retransmittedChunks >= 1, "\(spent)")
        #expect(spent.fastRetransmissions + spent.retransmissionTimeouts >= 1, "\(spent)")
    }

    /// The counters are 32-bit in the engine: a difference across a wrap is still the number of events.
    @Test func countersSubtractAcrossAWrap() {
        let earlier = ChannelEngineCounters(retransmissionTimeouts: Int(UInt32.max), fastRetransmissions: 5)
        let later = ChannelEngineCounters(retransmissionTimeouts: 2, fastRetransmissions: 9)
        #expect(later.since(earlier) == ChannelEngineCounters(retransmissionTimeouts: 3, fastRetransmissions: 4))
    }

    /// PR-SCTP is negotiated on the association (RFC 3758 §3.3), so partial channels really are partial and a
    /// browser's SCTP, which must offer it (RFC 8831 §6.1), meets the same engine; the policy on reliable
    /// messages does not need it (usrsctp counts the chunk in `pr_sctp_cnt` either way).
    @Test func bothEndsNegotiatePartialReliability() async throws {
        let arrivals = Arrivals()
        let (viewer, camera, lines) = try Self.sessions(rate: 100_000_000, delay: .milliseconds(1),
                                                        configuration: .datagram(pathMTU: 1200), arrivals: arrivals)
        defer {
            viewer.close(reason: "test over")
            camera.close(reason: "test over")
            for line in lines { line.close() }
        }
        async let incoming: PeerChannel? = { for await c in camera.incoming { return c }; return nil }()
        _ = try await viewer.open(label: "video", delivery: .partial(maxRetransmits: 0), priority: ChannelPriority.normal)
        _ = try #require(await incoming)
        #expect(viewer.partialReliability == true)
        #expect(camera.partialReliability == true)
    }
}
