/// One viewer's queue of frames waiting for its path, and the rule for what to drop when the path
/// cannot keep up. Sans-I/O: time comes in as `now`, decisions come out.
///
/// - Frames wait at most ``Limits/maxDelay`` and the queue holds at most ``Limits/maxBytes``.
/// - When a video frame would exceed either, every queued non-key video frame is dropped (whole frames,
///   each the tail of its GOP) and so is every later one until the next keyframe: a viewer never
///   receives a frame whose reference it did not get. The application is asked for a keyframe.
/// - A keyframe supersedes the older GOP's frames still waiting once the oldest has waited
///   ``Limits/supersedeDelay``: a live viewer is better served by the new picture than by a late tail of the
///   old one, and a slow path goes straight on to the keyframe instead of idling until it comes.
/// - A new viewer starts at a keyframe: the next one, or a recent one the camera kept with the frames since
///   (``start(from:rendition:now:)``), which it receives at once with their capture times.
/// - Audio frames stand alone: a stale one is dropped by itself.
/// - Each packet carries the frame's capture time (when the camera offered it), so latency measured at the
///   viewer includes the time a frame waited here.
public struct ViewerQueueStateMachine: Sendable {
    /// The bounds of one viewer's queue.
    public struct Limits: Sendable, Hashable {
        /// Longest a frame may wait before the queue counts as backed up. About a GOP: on a slow path a
        /// keyframe takes long to send, and the frames behind it must not all expire while it goes (a viewer
        /// that gets keyframes alone sees a stall of a whole GOP).
        public var maxDelay: Duration = .seconds(1)
        /// How long the oldest waiting frame must have waited for a new keyframe to drop the older GOP's
        /// waiting frames (shorter waits are a busy machine or a burst on a path that keeps up).
        public var supersedeDelay: Duration = .milliseconds(400)
        /// Most bytes the queue holds (a few keyframes).
        public var maxBytes: Int = 2 << 20

        /// Default limits.
        public init() {}
    }

    /// What the caller must do after an input.
    public enum Action: Sendable, Hashable {
        /// Ask the encoder for a keyframe (the viewer is waiting for one).
        case requestKeyframe
    }

    private struct Entry: Sendable {
        var frame: MediaFrame
        var sequence: UInt32
        var gop: UInt32
        var index: UInt32
        var rendition: UInt8
        var queuedAt: ContinuousClock.Instant
        /// When the camera offered the frame (``queuedAt`` but for a recent GOP a new viewer starts from).
        var capturedAt: ContinuousClock.Instant
    }

    /// The limits in force.
    public let limits: Limits
    private var queue: [Entry] = []
    private var head = 0
    private var bytes = 0
    /// True while non-key video frames are dropped until a keyframe comes.
    public private(set) var awaitingKeyframe = true
    /// Frames dropped so far (video and audio).
    public private(set) var droppedFrames = 0
    /// Times queued frames were dropped because the path could not carry them in time (a backed-up queue, or
    /// a keyframe superseding a late GOP tail); drops while waiting for a keyframe do not count.
    public private(set) var overflows = 0
    /// Video frames produced, keyframes produced, and the position in the current GOP (the camera's count).
    private var videoSequence: UInt32 = 0, audioSequence: UInt32 = 0, gop: UInt32 = 0, index: UInt32 = 0

    /// An empty queue that waits for a keyframe.
    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Frames waiting.
    public var count: Int { queue.count - head }
    /// Bytes waiting.
    public var queuedBytes: Int { bytes }

    /// Offers the camera's next frame, of `rendition` (an index the packet carries; see ``Rendition``).
    public mutating func push(_ frame: MediaFrame, rendition: UInt8 = 0, now: ContinuousClock.Instant) -> [Action] {
        push(frame, rendition: rendition, now: now, capturedAt: now)
    }

    /// Starts a viewer that has received nothing yet from a recent keyframe and the frames after it (a
    /// ``GOPCache``'s GOP), instead of waiting for the next keyframe: they are queued as if offered `now` (the
    /// delay limits count from now) but keep their capture times. Returns false, changing nothing, when the
    /// viewer is not waiting for its first keyframe or `gop` does not start with one.
    public mutating func start(from gop: [GOPCache.Entry], rendition: UInt8 = 0, now: ContinuousClock.Instant) -> Bool {
        guard awaitingKeyframe, videoSequence == 0, count == 0, let first = gop.first, first.frame.isKeyframe else { return false }
        for e in gop { _ = push(e.frame, rendition: rendition, now: now, capturedAt: min(e.capturedAt, now)) }
        return true
    }

    private mutating func push(_ frame: MediaFrame, rendition: UInt8, now: ContinuousClock.Instant,
                               capturedAt: ContinuousClock.Instant) -> [Action] {
        let sequence: UInt32
        switch frame.kind {
        case .audio:
            sequence = audioSequence
            audioSequence &+= 1
            append(Entry(frame: frame, sequence: sequence, gop: 0, index: 0, rendition: rendition, queuedAt: now, capturedAt: capturedAt))
            return []
        case .video:
            sequence = videoSequence
            videoSequence &+= 1
            if frame.isKeyframe {
                gop &+= 1
                index = 0
            } else {
                index &+= 1
            }
        }
        let entry = Entry(frame: frame, sequence: sequence, gop: gop, index: index, rendition: rendition, queuedAt: now,
                          capturedAt: capturedAt)
        if frame.isKeyframe {
            if awaitingKeyframe {
                dropQueuedVideo(keepKeyframes: false)
            } else if backedUp(adding: frame.data.count, now: now, after: limits.supersedeDelay), dropQueuedVideo(keepKeyframes: false) > 0 {
                overflows += 1
            }
            awaitingKeyframe = false
            append(entry)
            return []
        }
        if awaitingKeyframe {
            droppedFrames += 1
            return []
        }
        if backedUp(adding: frame.data.count, now: now, after: limits.maxDelay) {
            dropQueuedVideo(keepKeyframes: true)
            droppedFrames += 1
            overflows += 1
            awaitingKeyframe = true
            return [.requestKeyframe]
        }
        append(entry)
        return []
    }

    /// The next frame to send, as a packet stamped with its capture time on the wall clock (`wallClockMicros` is
    /// the wall clock at `now`); stale audio is dropped on the way.
    public mutating func next(now: ContinuousClock.Instant, wallClockMicros: UInt64) -> MediaPacket? {
        while head < queue.count {
            let e = queue[head]
            head += 1
            bytes -= e.frame.data.count
            if head > 64, head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
            if e.frame.kind == .audio, now - e.queuedAt > limits.maxDelay {
                droppedFrames += 1
                continue
            }
            let waited = UInt64(max(0, (now - e.capturedAt).microseconds))
            return MediaPacket(frame: e.frame, sequence: e.sequence, gop: e.gop, index: e.index,
                               capturedAtMicros: wallClockMicros > waited ? wallClockMicros - waited : 0, rendition: e.rendition)
        }
        return nil
    }

    /// Marks the viewer as needing a keyframe (it asked for one, or it just joined).
    public mutating func restartAtKeyframe() {
        dropQueuedVideo(keepKeyframes: false)
        awaitingKeyframe = true
    }

    /// True when the oldest waiting frame has waited longer than `delay`, or `size` more bytes would not fit.
    private func backedUp(adding size: Int, now: ContinuousClock.Instant, after delay: Duration) -> Bool {
        guard head < queue.count else { return false }
        return now - queue[head].queuedAt > delay || bytes + size > limits.maxBytes
    }

    private mutating func append(_ e: Entry) {
        queue.append(e)
        bytes += e.frame.data.count
    }

    /// Drops the waiting video frames (all, or all but the latest keyframe); returns how many.
    @discardableResult
    private mutating func dropQueuedVideo(keepKeyframes: Bool) -> Int {
        let pending = queue[head...]
        // Keep audio, and at most the latest queued keyframe (with the frames after it, dropped below).
        let lastKey = keepKeyframes ? pending.lastIndex(where: { $0.frame.isKeyframe }) : nil
        var kept: [Entry] = []
        var dropped = 0
        for i in pending.indices {
            let e = queue[i]
            if e.frame.kind == .audio || i == lastKey {
                kept.append(e)
            } else {
                dropped += 1
            }
        }
        droppedFrames += dropped
        queue = kept
        head = 0
        bytes = kept.reduce(0) { $0 + $1.frame.data.count }
        return dropped
    }
}
