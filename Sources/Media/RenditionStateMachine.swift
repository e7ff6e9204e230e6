/// Which ``Rendition`` one viewer receives, and when it moves to another. Sans-I/O: the sender hands in the
/// viewer's rate reports and every video frame with `now`; decisions come out.
///
/// ```
///                 short report (path congested below the margin, or the queue overflowed)
///   on R ──────────────────────────────────────────────────────────► on R, moving down to R'
///    ▲  ╲  clean reports for the up hold                                     │
///    │   ╲──────────────────────────► on R, moving up to R'' ─┐               │ keyframe of R'
///    │                                                        │ keyframe      ▼
///    └───────────── (short report cancels a move up) ◄────────┘ of R''   on R' (settling)
/// ```
///
/// - A new viewer starts at ``Policy/start`` (the highest rendition unless configured otherwise).
/// - A report is *short* when the queue overflowed (frames were dropped because the path could not carry
///   them in time), or when the path held frames back (``ViewerRate/congested``) and still acknowledged less
///   than the rendition's rate × ``Policy/margin``. A congested path that carries the rendition all the same
///   has little room, but keeps the rendition; an uncongested one only carried what the stream offered,
///   which says nothing against it.
/// - A short report moves the viewer down to the highest rendition whose rate fits the acknowledged rate ×
///   ``Policy/margin`` (one step at least, the lowest at most). After a move down, reports are ignored for
///   ``Policy/settleTime``: the old rendition's queued frames still drain.
/// - Clean reports for the up hold move it one step up. The up hold of a rendition starts at
///   ``Policy/upHold`` and doubles (up to ``Policy/maxUpHold``) each time the viewer has to leave it again
///   within ``Policy/probeWindow`` of moving up to it; leaving it later resets it. So a rate that oscillates
///   around a rendition's boundary does not make the viewer flap.
/// - A move happens only at a keyframe of the target rendition: frames of the old rendition go on until then,
///   so the viewer never receives a GOP without its start, and its decoder gets the new rendition's
///   parameter sets (SPS/PPS) with that keyframe.
public struct RenditionStateMachine: Sendable {
    /// Where a new viewer starts.
    public enum Start: Sendable, Hashable {
        /// The highest rendition.
        case highest
        /// The highest rendition whose rate is at most this (bits per second); the lowest if none is.
        case fitting(bitsPerSecond: Int)
        /// This rendition (an index into the renditions); the highest if there is no such index.
        case rendition(Int)
    }

    /// The rules' constants.
    public struct Policy: Sendable, Hashable {
        /// The share of a rendition's rate a congested path must still acknowledge for the viewer to stay on it,
        /// and the share of the acknowledged rate a lower rendition must fit in to be the one moved to.
        public var margin = 0.85
        /// Clean reports in a row, as time, before the viewer moves one rendition up.
        public var upHold: Duration = .seconds(10)
        /// The longest up hold, after failed moves up.
        public var maxUpHold: Duration = .seconds(120)
        /// A move down within this time of moving up to a rendition counts as a failed move up (its up hold doubles).
        public var probeWindow: Duration = .seconds(10)
        /// Reports ignored after a move down, while the old rendition's queued frames drain.
        public var settleTime: Duration = .seconds(2)
        /// Where a new viewer starts.
        public var start: Start = .highest

        /// The defaults.
        public init() {}
    }

    /// What the caller must do after a report.
    public enum Action: Sendable, Hashable {
        /// The viewer will move to `rendition` at its next keyframe: ask that rendition's encoder for one
        /// (a clip's next one simply comes in its time).
        case requestKeyframe(rendition: Int)
    }

    /// What to do with one video frame for this viewer.
    public enum FrameDecision: Sendable, Hashable {
        /// Queue it: the viewer's rendition.
        case deliver
        /// Queue it: the keyframe the viewer moves at, from rendition `from` to the frame's.
        case deliverSwitching(from: Int)
        /// Not for this viewer (another rendition).
        case skip
    }

    /// The renditions, by index.
    public let renditions: [Rendition]
    /// The rules.
    public let policy: Policy
    /// The rendition the viewer receives now.
    public private(set) var current: Int
    /// The rendition it moves to at that rendition's next keyframe, if a move is decided.
    public private(set) var target: Int?
    /// Moves so far.
    public private(set) var switches = 0

    /// Rendition indices from the highest rate to the lowest.
    private let ladder: [Int]
    private var upHolds: [Duration]
    private var cleanSince: ContinuousClock.Instant?
    private var settledAt: ContinuousClock.Instant?
    /// When the viewer moved up to ``current`` (nil when it came down to it, or started there).
    private var movedUpAt: ContinuousClock.Instant?

    /// A viewer about to start; `renditions` empty stands for one rendition of unknown rate.
    public init(renditions: [Rendition], policy: Policy = Policy()) {
        let renditions = renditions.isEmpty ? [Rendition(name: "main", bitsPerSecond: 0)] : renditions
        self.renditions = renditions
        self.policy = policy
        ladder = renditions.indices.sorted { renditions[$0].bitsPerSecond > renditions[$1].bitsPerSecond }
        upHolds = Array(repeating: policy.upHold, count: renditions.count)
        switch policy.start {
        case .highest:
            current = ladder[0]
        case .fitting(let bitsPerSecond):
            current = ladder.first { renditions[$0].bitsPerSecond <= bitsPerSecond } ?? ladder[ladder.count - 1]
        case .rendition(let index):
            current = renditions.indices.contains(index) ? index : ladder[0]
        }
    }

    /// The rendition whose keyframe the viewer waits for: the target of a decided move, else its own.
    public var awaited: Int { target ?? current }

    /// The up hold now in force for moving up to `rendition`.
    public func upHold(for rendition: Int) -> Duration { upHolds[rendition] }

    /// Takes the viewer's rate report for the interval that ended at `now`.
    public mutating func report(_ rate: ViewerRate, now: ContinuousClock.Instant) -> [Action] {
        let short = rate.overflowed
            || (rate.congested && rate.acknowledgedBitsPerSecond < Double(renditions[current].bitsPerSecond) * policy.margin)
        if let settledAt, now < settledAt { return [] }
        guard short else { return clean(now: now) }
        cleanSince = nil
        // The shortfall was measured on the current rendition: a move up is off.
        if let target, rank(target) < rank(current) { self.target = nil }
        let budget = rate.acknowledgedBitsPerSecond * policy.margin
        let below = ladder[(rank(current) + 1)...]
        guard let lowest = below.last else { return [] }
        let next = below.first { Double(renditions[$0].bitsPerSecond) <= budget } ?? lowest
        if let target {
            // Already moving down: lower still only if this report's rate says so.
            guard rank(next) > rank(target) else { return [] }
        } else {
            // Leaving the rendition the viewer is on: a failed move up if it came up to it only just now.
            let failed = movedUpAt.map { now - $0 < policy.probeWindow } ?? false
            upHolds[current] = failed ? min(upHolds[current] * 2, policy.maxUpHold) : policy.upHold
        }
        target = next
        return [.requestKeyframe(rendition: next)]
    }

    /// A clean report: counts toward the up hold, and moves the viewer up once it is over.
    private mutating func clean(now: ContinuousClock.Instant) -> [Action] {
        guard target == nil else { return [] }
        let since = cleanSince ?? now
        cleanSince = since
        let position = rank(current)
        guard position > 0 else { return [] }
        let higher = ladder[position - 1]
        guard now - since >= upHolds[higher] else { return [] }
        target = higher
        return [.requestKeyframe(rendition: higher)]
    }

    /// Decides about one video frame of `rendition` offered at `now`.
    public mutating func frame(of rendition: Int, isKeyframe: Bool, now: ContinuousClock.Instant) -> FrameDecision {
        if isKeyframe, rendition == target {
            let from = current
            current = rendition
            target = nil
            switches += 1
            cleanSince = nil
            if rank(rendition) > rank(from) {
                settledAt = now + policy.settleTime
                movedUpAt = nil
            } else {
                settledAt = nil
                movedUpAt = now
            }
            return .deliverSwitching(from: from)
        }
        return rendition == current ? .deliver : .skip
    }

    /// A rendition's position on the ladder (0: the highest rate).
    private func rank(_ rendition: Int) -> Int { ladder.firstIndex(of: rendition) ?? 0 }
}
