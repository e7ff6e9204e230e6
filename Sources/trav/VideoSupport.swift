import Crypto
import Foundation
import Media
import Traversal

/// The H.264 clip `trav camera --video` plays: a file's access units, or a bundled 4 s test pattern (`default`, and
/// `default-low`: the same picture at a quarter of the size and rate, for a sub stream).
func loadClip(_ path: String) throws -> [AnnexB.AccessUnit] {
    let bundled = ["default": "testsrc", "default-low": "testsrc-low"]
    let url: URL
    if let name = bundled[path] {
        guard let resource = Bundle.module.url(forResource: name, withExtension: "h264") else { throw CLIError("the bundled clip \(name) is missing") }
        url = resource
    } else {
        url = URL(fileURLWithPath: path)
    }
    let units = AnnexB.accessUnits([UInt8](try Data(contentsOf: url)))
    guard units.contains(where: \.isKeyframe) else { throw CLIError("\(url.path): no H.264 keyframe (IDR access unit) found") }
    return units
}

/// What `trav connect --stats` prints about the video it received.
struct VideoOutput: Encodable {
    var frames: Int
    var keyframes: Int
    var bytes: Int
    var seconds: Double
    var kbps: Double
    var latencyP50Ms: Double?
    var latencyP99Ms: Double?
    var droppedFrames: Int
    var brokenFrames: Int
    var stalls: Int
    var longestGapMs: Double
    /// Latency p99 of each whole minute (flat over a long run, or growing?).
    var latencyP99PerMinuteMs: [Double]
    /// Latency p50 of each whole minute.
    var latencyP50PerMinuteMs: [Double]
    /// The camera's renditions received, in order (0: its first `--video`), each once per stay.
    var renditions: [Int]
    var renditionSwitches: Int
    /// Seconds from the first frame to the first of another rendition (the time to step down, for a slow path).
    var firstSwitchSeconds: Double?
    var savedTo: String?

    init(_ s: MediaStatistics, savedTo: String?) {
        frames = s.videoFrames
        keyframes = s.keyframes
        bytes = s.bytes
        seconds = s.spanSeconds
        kbps = s.bitsPerSecond / 1000
        latencyP50Ms = s.latencyPercentile(50)
        latencyP99Ms = s.latencyPercentile(99)
        droppedFrames = s.droppedFrames
        brokenFrames = s.brokenFrames
        stalls = s.stalls
        longestGapMs = s.longestGapMs
        latencyP99PerMinuteMs = s.latencyPercentilePerMinute(99)
        latencyP50PerMinuteMs = s.latencyPercentilePerMinute(50)
        renditions = s.renditions
        renditionSwitches = s.renditionSwitches
        firstSwitchSeconds = s.firstSwitchSeconds
        self.savedTo = savedTo
    }

    /// One line for people.
    var line: String {
        String(format: "%d frames (%d key) in %.1f s, %.0f kbit/s, latency p50 %@ p99 %@ ms, %d dropped, %d broken, %d stalls (longest gap %.0f ms)",
               frames, keyframes, seconds, kbps, latencyP50Ms.map { String(format: "%.1f", $0) } ?? "-",
               latencyP99Ms.map { String(format: "%.1f", $0) } ?? "-", droppedFrames, brokenFrames, stalls, longestGapMs)
            + ", rendition " + renditions.map(String.init).joined(separator: " -> ")
            + " (\(renditionSwitches) switch\(renditionSwitches == 1 ? "" : "es")\(firstSwitchSeconds.map { String(format: ", first at %.1f s", $0) } ?? ""))"
    }
}

/// Receives the camera's video on `connection` for `seconds`, appending every frame to `save` (an Annex B
/// file, playable and checkable with ffprobe), and returns the statistics.
func receiveVideo(_ connection: PeerConnection, seconds: Double, save: String?) async throws -> VideoOutput {
    let receiver = try await MediaReceiver(connection: connection)
    var file: FileHandle?
    if let save {
        guard FileManager.default.createFile(atPath: save, contents: nil) else { throw CLIError("cannot create \(save)") }
        file = try FileHandle(forWritingTo: URL(fileURLWithPath: save))
    }
    defer { try? file?.close() }
    let limit = Duration.milliseconds(Int64(seconds * 1000))
    let stopper = Task {
        try? await Task.sleep(for: limit)
        receiver.stop()
    }
    defer { stopper.cancel() }
    do {
        for try await received in receiver.frames where received.packet.frame.kind == .video {
            try file?.write(contentsOf: received.packet.frame.data)
        }
    } catch let e as ChannelError where e.code == .closed {
        // The camera went away: what arrived is still reported.
    }
    return VideoOutput(receiver.stats, savedTo: save)
}

/// The label of the channel `trav connect --channel-send` streams into, and the camera drains.
let sinkChannelLabel = "trav.sink"

/// What `trav connect --channel-send` reports: a reliable channel's one-way goodput and whether every byte
/// arrived in order (the camera answers with the SHA-256 of all it received).
struct ChannelSendOutput: Encodable {
    /// Milliseconds the channel took to open (the channel engine's association up, then the camera's acknowledgement).
    var openMs: Double
    var bytes: Int
    var verified: Bool
    var seconds: Double
    var mbps: Double
    /// The engine's loss recovery during the transfer (this process's counters: the sender's retransmissions).
    var engine: ChannelEngineCounters
    /// The engine's smoothed round trip (ms) and congestion window (bytes), averaged over samples taken every
    /// ``windowSampleInterval`` until the digest came back (nil before the engine reports them).
    var srttMs: Double?
    var congestionWindow: Double?
}

/// How often `--channel-send` samples the engine's round trip and congestion window.
let windowSampleInterval = Duration.milliseconds(20)

/// Sends `bytes` of pseudo-random data on a new reliable channel in 64 KiB messages and waits for the camera's digest.
func sendOnChannel(_ c: PeerConnection, bytes: Int, timeout: Duration = .seconds(120)) async throws -> ChannelSendOutput {
    let opening = ContinuousClock.now
    let channel = try await c.openChannel(label: sinkChannelLabel, delivery: .reliable, priority: .normal)
    defer { channel.close() }
    let started = ContinuousClock.now
    let before = ChannelEngineCounters.current
    var hasher = SHA256()
    try await channel.send(withUnsafeBytes(of: UInt64(bytes).bigEndian) { Array($0) })
    var generator = SystemRandomNumberGenerator()
    var left = bytes
    let chunk = 64 * 1024
    let block = (0..<chunk).map { _ in UInt8.random(in: 0...255, using: &generator) }
    var n = 0
    // Sampled on a timer: the send buffer may take a whole transfer at once, so sends say nothing of when.
    let sampler = Task { () -> [(srttMs: Int, congestionWindow: Int)] in
        var samples: [(srttMs: Int, congestionWindow: Int)] = []
        while !Task.isCancelled, samples.count < 60_000 {
            if let status = c.channelPathStatus { samples.append(status) }
            try? await Task.sleep(for: windowSampleInterval)
        }
        return samples
    }
    defer { sampler.cancel() }
    while left > 0 {
        var message = Array(block.prefix(min(chunk, left)))
        message[0] = UInt8(truncatingIfNeeded: n)  // no two messages alike, so a reorder would show
        n += 1
        hasher.update(data: message)
        try await channel.send(message)
        left -= message.count
    }
    let expected = Array(hasher.finalize())
    let answer: [UInt8]?
    do {
        answer = try await withDeadline(timeout) {
            for try await m in channel.messages { return m }
            return nil
        }
    } catch is DeadlineExceeded {
        answer = nil
    }
    let seconds = (ContinuousClock.now - started).milliseconds / 1000
    sampler.cancel()
    let samples = await sampler.value
    func mean(_ values: [Int]) -> Double? { values.isEmpty ? nil : Double(values.reduce(0, +)) / Double(values.count) }
    return ChannelSendOutput(openMs: (started - opening).milliseconds, bytes: bytes, verified: answer == expected, seconds: seconds,
                             mbps: Double(bytes) * 8 / 1e6 / max(seconds, 1e-6), engine: ChannelEngineCounters.current.since(before),
                             srttMs: mean(samples.map(\.srttMs)), congestionWindow: mean(samples.map(\.congestionWindow)))
}

/// The camera's side of `--channel-send`: reads the announced byte count, hashes what follows, answers the digest.
func drainSink(_ channel: PeerChannel) async {
    var hasher = SHA256()
    var expected: Int?
    var received = 0
    do {
        for try await m in channel.messages {
            guard let total = expected else {
                guard m.count == 8 else { return }
                expected = Int(clamping: m.reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
                if expected == 0 { try await channel.send(Array(hasher.finalize())) }
                continue
            }
            hasher.update(data: m)
            received += m.count
            if received >= total {
                try await channel.send(Array(hasher.finalize()))
                return
            }
        }
    } catch {}
}

/// The camera's one reader of a connection's incoming channels: sinks are drained, a viewer's media control
/// channel goes to `media` (when it feeds this viewer), anything else is closed.
func acceptChannels(_ c: PeerConnection, media: MediaSender?, viewer: MediaSender.Viewer?) async {
    for await channel in c.incomingChannels {
        switch channel.label {
        case sinkChannelLabel:
            Task { await drainSink(channel) }
        case MediaChannelLabel.control:
            if let media, let viewer { media.attach(control: channel, to: viewer) } else { channel.close() }
        default:
            channel.close()
        }
    }
}
