/// One direction of a lab link's delay: frames leave `delay ± jitter` after they arrive, never
/// before an earlier frame (jitter varies the delay but keeps the order), and at most `capacity`
/// frames wait; the line drops frames that arrive when it is full. A frame enqueued `heldBack`
/// leaves ``reorderGap`` later than it would have, and frames behind it overtake it (reordering;
/// it holds nothing else up). Time is passed in as
/// nanoseconds of a monotonic clock, and the jitter's draw as a number in -1...1, so the line is
/// a plain value that `trav lab-link` drives and tests drive by hand.
public struct LinkDelayLine<Frame> {
    /// The one-way delay every frame gets, in nanoseconds.
    public let delay: UInt64
    /// The most a frame's delay varies either way, in nanoseconds.
    public let jitter: UInt64
    /// The most frames that wait at once.
    public let capacity: Int
    /// Frames dropped because the line was full.
    public private(set) var dropped = 0
    /// How much longer a held-back frame waits than its place in line.
    public static var reorderGap: Duration { .milliseconds(5) }

    private var waiting: [(release: UInt64, frame: Frame)] = []
    private var head = 0
    private var lastRelease: UInt64 = 0
    /// Held-back frames, by release time (few: a share of what the line carries for 5 ms).
    private var held: [(release: UInt64, frame: Frame)] = []

    /// A line that delays frames by `delay` ± `jitter` and holds at most `capacity` of them.
    public init(delay: Duration, jitter: Duration = .zero, capacity: Int = 4096) {
        precondition(capacity > 0, "a delay line holds at least one frame")
        self.delay = Self.nanoseconds(delay)
        self.jitter = Self.nanoseconds(jitter)
        self.capacity = capacity
    }

    /// Frames waiting now.
    public var count: Int { waiting.count - head + held.count }

    /// When the next frame is due (nanoseconds), or nil when none waits.
    public var nextRelease: UInt64? {
        let inLine = head < waiting.count ? waiting[head].release : nil
        guard let first = held.first?.release else { return inLine }
        return min(first, inLine ?? first)
    }

    /// Queues `frame`, arrived at `now`; `draw` (-1...1) is its share of the jitter; `heldBack` lets the
    /// frames behind it overtake it. False when the line is full and the frame is dropped.
    @discardableResult
    public mutating func enqueue(_ frame: Frame, now: UInt64, draw: Double = 0, heldBack: Bool = false) -> Bool {
        guard count < capacity else {
            dropped += 1
            return false
        }
        let offset = Double(jitter) * min(max(draw, -1), 1)
        let due = offset < 0 ? Self.subtracting(UInt64(-offset), from: now + delay, floor: now)
                             : now + delay + UInt64(offset)
        if heldBack {
            let release = max(due, lastRelease) + Self.nanoseconds(Self.reorderGap)
            let at = held.firstIndex { $0.release > release } ?? held.count
            held.insert((release, frame), at: at)
            return true
        }
        lastRelease = max(due, lastRelease)
        waiting.append((lastRelease, frame))
        return true
    }

    /// The next frame if it is due at `now`, else nil.
    public mutating func dequeue(now: UInt64) -> Frame? {
        if let first = held.first, first.release <= now,
           head >= waiting.count || first.release < waiting[head].release {
            return held.removeFirst().frame
        }
        guard head < waiting.count, waiting[head].release <= now else { return nil }
        let frame = waiting[head].frame
        head += 1
        if head == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024, head * 2 >= waiting.count {
            waiting.removeFirst(head)
            head = 0
        }
        return frame
    }

    private static func subtracting(_ amount: UInt64, from value: UInt64, floor: UInt64) -> UInt64 {
        value >= floor + amount ? value - amount : floor
    }

    private static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        precondition(seconds >= 0 && attoseconds >= 0, "a delay is never negative")
        return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }
}
