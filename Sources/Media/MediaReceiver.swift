import Foundation
import Synchronization
import Traversal

/// The viewer's side of the media plane: frames from the camera's media channel, checked for order and
/// GOP integrity, with the statistics `trav connect --stats` prints; keyframe requests go back on a
/// control channel.
public final class MediaReceiver: Sendable {
    /// A received frame with what the receiver learnt about it.
    public struct Received: Sendable {
        /// The frame.
        public var packet: MediaPacket
        /// Capture (sender's wall clock) to complete frame (receiver's wall clock), ms; meaningful where both
        /// clocks agree (same host, NTP).
        public var latencyMs: Double
    }

    /// How long a video gap must be to count as a stall.
    public static let stallThreshold: Duration = .milliseconds(500)

    /// Frames as they arrive; finishes when the media channel closes.
    public let frames: AsyncThrowingStream<Received, any Error>
    private let statistics = StatisticsBox()
    private let control: PeerChannel
    private let task: Task<Void, Never>

    /// Waits for the camera's media channel on `connection` and opens the control channel.
    public init(connection: PeerConnection, timeout: Duration = .seconds(10)) async throws {
        control = try await connection.openChannel(label: MediaChannelLabel.control, delivery: .reliable, priority: .extraHigh)
        let media: PeerChannel? = try await Self.firstChannel(labelled: MediaChannelLabel.media, on: connection, timeout: timeout)
        guard let media else { throw ChannelError(code: .timeout, detail: "no media channel from the camera within \(timeout)") }
        let (stream, sink) = AsyncThrowingStream.makeStream(of: Received.self, throwing: (any Error).self)
        frames = stream
        let statistics = self.statistics
        task = Task {
            do {
                for try await message in media.messages {
                    guard let packet = MediaPacket(decoding: message) else { continue }
                    let latency = Double(Int64(bitPattern: wallClockMicros() &- packet.capturedAtMicros)) / 1000
                    statistics.value.withLock { $0.record(packet, latencyMs: latency, at: .now) }
                    sink.yield(Received(packet: packet, latencyMs: latency))
                }
                sink.finish()
            } catch {
                sink.finish(throwing: error)
            }
        }
    }

    deinit { task.cancel() }

    /// Asks the camera for a keyframe.
    public func requestKeyframe() async throws {
        try await control.send([MediaControl.keyframeRequest.rawValue])
    }

    /// What has arrived so far.
    public var stats: MediaStatistics { statistics.value.withLock { $0 } }

    /// Stops receiving.
    public func stop() {
        task.cancel()
        control.close()
    }

    private static func firstChannel(labelled label: String, on connection: PeerConnection, timeout: Duration) async throws -> PeerChannel? {
        do {
            return try await withDeadline(timeout) {
                for await c in connection.incomingChannels where c.label == label { return c }
                return nil
            }
        } catch is DeadlineExceeded {
            return nil
        }
    }
}

/// The receiver's statistics, shared with its reading task.
final class StatisticsBox: Sendable {
    let value = Mutex(MediaStatistics())
}

/// Counts of a received media stream.
public struct MediaStatistics: Sendable, Codable, Hashable {
    /// Video frames received.
    public var videoFrames = 0
    /// Audio frames received.
    public var audioFrames = 0
    /// Keyframes received.
    public var keyframes = 0
    /// Bytes of frame data received.
    public var bytes = 0
    /// Frames the camera produced but this viewer never got (gaps in the sequence).
    public var droppedFrames = 0
    /// Frames whose reference frame was not received (must stay 0).
    public var brokenFrames = 0
    /// Gaps between video frames longer than ``MediaReceiver/stallThreshold``.
    public var stalls = 0
    /// The longest gap between two video frames (ms).
    public var longestGapMs = 0.0
    /// Latency of every video frame (ms), in arrival order (bounded: the most recent 100,000).
    public var latenciesMs: [Double] = []
    /// Seconds from the first to the last video frame.
    public var spanSeconds = 0.0
    /// When each latency in ``latenciesMs`` was measured, in seconds since the first video frame.
    public var arrivalSeconds: [Double] = []
    /// The renditions received, in order, each once per stay (`[0, 1]`: the main stream, then the sub stream);
    /// the most recent 64 stays.
    public var renditions: [Int] = []
    /// Times the stream moved to another rendition.
    public var renditionSwitches = 0
    /// Seconds from the first video frame to the first frame of another rendition (nil while there was none).
    public var firstSwitchSeconds: Double?

    private var lastSequence: UInt32?
    private var lastGop: UInt32?
    private var lastIndex: UInt32 = 0
    private var firstAt: ContinuousClock.Instant?
    private var lastAt: ContinuousClock.Instant?

    /// An empty record.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case videoFrames, audioFrames, keyframes, bytes, droppedFrames, brokenFrames, stalls, longestGapMs, spanSeconds, renditions,
             renditionSwitches, firstSwitchSeconds
    }

    mutating func record(_ packet: MediaPacket, latencyMs: Double, at now: ContinuousClock.Instant) {
        bytes += packet.frame.data.count
        guard packet.frame.kind == .video else {
            audioFrames += 1
            return
        }
        videoFrames += 1
        if packet.frame.isKeyframe { keyframes += 1 }
        if let last = lastSequence { droppedFrames += Int(packet.sequence &- last &- 1) }
        lastSequence = packet.sequence
        // A frame is decodable if it is a keyframe, or follows the previous frame of its own GOP.
        if !packet.frame.isKeyframe, !(packet.gop == lastGop && packet.index == lastIndex &+ 1) { brokenFrames += 1 }
        lastGop = packet.gop
        lastIndex = packet.index
        if latenciesMs.count >= 100_000 {
            latenciesMs.removeFirst(latenciesMs.count / 2)
            arrivalSeconds.removeFirst(arrivalSeconds.count / 2)
        }
        latenciesMs.append(latencyMs)
        if let lastAt {
            let gap = now - lastAt
            let ms = Double(gap.components.seconds) * 1000 + Double(gap.components.attoseconds) / 1e15
            longestGapMs = max(longestGapMs, ms)
            if gap > MediaReceiver.stallThreshold { stalls += 1 }
        }
        if firstAt == nil { firstAt = now }
        lastAt = now
        if let firstAt {
            let span = now - firstAt
            spanSeconds = Double(span.components.seconds) + Double(span.components.attoseconds) / 1e18
        }
        arrivalSeconds.append(spanSeconds)
        let rendition = Int(packet.rendition)
        if let last = renditions.last, last != rendition {
            renditionSwitches += 1
            if firstSwitchSeconds == nil { firstSwitchSeconds = spanSeconds }
        }
        if renditions.last != rendition {
            if renditions.count >= 64 { renditions.removeFirst() }
            renditions.append(rendition)
        }
    }

    /// The `p`-th percentile (0…100) of frame latency, in ms.
    public func latencyPercentile(_ p: Double) -> Double? {
        percentile(latenciesMs, p / 100)
    }

    /// The `p`-th latency percentile of each whole minute since the first frame (is latency flat over a long run?).
    public func latencyPercentilePerMinute(_ p: Double) -> [Double] {
        var minutes: [[Double]] = []
        for (latency, at) in zip(latenciesMs, arrivalSeconds) {
            let m = Int(at / 60)
            while minutes.count <= m { minutes.append([]) }
            minutes[m].append(latency)
        }
        return minutes.compactMap { percentile($0, p / 100) }
    }

    /// Average bits per second of frame data.
    public var bitsPerSecond: Double { spanSeconds > 0 ? Double(bytes * 8) / spanSeconds : 0 }
}
