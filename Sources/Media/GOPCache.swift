/// The newest keyframe of each rendition and the video frames offered since, so a viewer that joins can start
/// from that keyframe at once (``MediaSender/ViewerStart/recentGOP``) instead of waiting up to a GOP for the
/// next one. Sans-I/O: frames come in with `now`.
///
/// ```
///  keyframe ─► [K]   delta ─► [K d1]   delta ─► [K d1 d2]   keyframe ─► [K']
///                    a GOP past a limit ─► []  (until the next keyframe: a viewer then waits, as without the cache)
/// ```
///
/// Bounded by ``Limits``: bytes and frames per rendition, renditions held, and the age of a keyframe worth
/// starting from (a viewer starting further back would replay a long burst of stale frames).
public struct GOPCache: Sendable {
    /// The bounds of what the cache holds and hands out.
    public struct Limits: Sendable, Hashable {
        /// Most bytes of one rendition's GOP (a few seconds of a camera's main stream).
        public var maxBytes = 1 << 20
        /// Most frames of one rendition's GOP.
        public var maxFrames = 300
        /// Renditions held (indices from 0); frames of others are not cached.
        public var maxRenditions = 16
        /// Oldest keyframe a viewer is started from.
        public var maxAge: Duration = .seconds(4)

        /// Default limits.
        public init() {}
    }

    /// A cached frame and when it was offered (its capture time, which the viewer's packets keep).
    public struct Entry: Sendable, Hashable {
        /// The frame.
        public var frame: MediaFrame
        /// When the camera offered it.
        public var capturedAt: ContinuousClock.Instant
    }

    /// The limits in force.
    public let limits: Limits
    private var gops: [[Entry]]
    private var bytes: [Int]

    /// An empty cache.
    public init(limits: Limits = Limits()) {
        self.limits = limits
        gops = Array(repeating: [], count: max(0, limits.maxRenditions))
        bytes = Array(repeating: 0, count: max(0, limits.maxRenditions))
    }

    /// Takes the camera's next frame of `rendition`; audio is not cached (each audio frame stands alone).
    public mutating func record(_ frame: MediaFrame, rendition: Int, now: ContinuousClock.Instant) {
        guard frame.kind == .video, gops.indices.contains(rendition) else { return }
        if frame.isKeyframe {
            gops[rendition] = []
            bytes[rendition] = 0
        } else if gops[rendition].isEmpty {
            return
        }
        guard gops[rendition].count < limits.maxFrames, bytes[rendition] + frame.data.count <= limits.maxBytes else {
            gops[rendition] = []
            bytes[rendition] = 0
            return
        }
        gops[rendition].append(Entry(frame: frame, capturedAt: now))
        bytes[rendition] += frame.data.count
    }

    /// The frames a viewer of `rendition` joining at `now` starts with: the newest keyframe and every frame
    /// since, or none (no keyframe held, or it is older than ``Limits/maxAge``).
    public func recentGOP(of rendition: Int, now: ContinuousClock.Instant) -> [Entry] {
        guard gops.indices.contains(rendition), let key = gops[rendition].first, now - key.capturedAt <= limits.maxAge else { return [] }
        return gops[rendition]
    }
}
