import Foundation
import Logging
import Metrics
import Synchronization
import Traversal

/// Labels of the channels a media session opens.
public enum MediaChannelLabel {
    /// Frames, camera → viewer (reliable, ordered, high priority: frames are dropped before sending, never in flight).
    public static let media = "trav.media"
    /// Control, viewer → camera (keyframe requests), extra-high priority.
    public static let control = "trav.control"
}

/// Control messages a viewer sends to the camera.
enum MediaControl: UInt8 {
    /// "Send me a keyframe."
    case keyframeRequest = 1
}

/// What a viewer's path sustains, for the application to pick its encoder's bitrate.
///
/// A camera with a live encoder uses these reports instead of renditions: it reads ``MediaSender/rates`` and,
/// when a viewer's report is congested or overflowed, sets its encoder to the acknowledged rate × a margin
/// (the same rule ``RenditionStateMachine`` applies to fixed renditions), raising it again only after a hold
/// of clean reports. With one encoder for several viewers it encodes for the slowest, or runs one encoder
/// per rate class and hands their frames in as renditions.
public struct ViewerRate: Sendable, Hashable {
    /// Which viewer (``MediaSender/Viewer/id``).
    public var viewer: Int
    /// Bits per second the peer acknowledged over the last interval.
    public var acknowledgedBitsPerSecond: Double
    /// True when the path held frames back for at least ``MediaSender/Configuration/congestedShare`` of the
    /// interval (so the figure is near the path's capacity, not the stream's rate).
    public var congested: Bool
    /// True when the viewer's queue dropped frames during the interval because the path could not carry them
    /// in time (``ViewerQueueStateMachine/overflows``).
    public var overflowed: Bool
    /// Frames dropped for this viewer so far.
    public var droppedFrames: Int
    /// The rendition the viewer receives (an index into ``MediaSender/Configuration/renditions``; 0 with none).
    public var rendition: Int

    /// A report.
    public init(viewer: Int, acknowledgedBitsPerSecond: Double, congested: Bool, overflowed: Bool = false, droppedFrames: Int,
                rendition: Int = 0) {
        self.viewer = viewer
        self.acknowledgedBitsPerSecond = acknowledgedBitsPerSecond
        self.congested = congested
        self.overflowed = overflowed
        self.droppedFrames = droppedFrames
        self.rendition = rendition
    }
}

/// The camera's side of the media plane: hands every frame to each viewer's own bounded queue
/// (``ViewerQueueStateMachine``), so one slow viewer never stalls another; each viewer's sender keeps
/// only about ``Configuration/targetDelay`` of data in flight on its path, so frames wait (and are
/// dropped by whole GOP tails) in the queue rather than in buffers where they could not be dropped.
///
/// A camera that offers several encodings of its picture (a main and a sub stream: ``Configuration/renditions``)
/// hands every rendition's frames in (``send(_:rendition:)``); each viewer receives one of them, chosen and
/// changed at keyframes by its own ``RenditionStateMachine`` from the viewer's rate reports. A camera with a
/// live encoder instead adapts the encoder to ``rates`` (see ``ViewerRate``).
public final class MediaSender: Sendable {
    /// Tunables.
    public struct Configuration: Sendable {
        /// Each viewer's queue limits.
        public var queue = ViewerQueueStateMachine.Limits()
        /// Data in flight a viewer's path is allowed, as time at its acknowledged rate.
        public var targetDelay: Duration = .milliseconds(200)
        /// Data in flight allowed whatever the rate (bytes). Small: what the channel holds can no longer be
        /// dropped, and on a slow path (1 Mbit/s) 64 KiB would be half a second of frames that cannot give way
        /// to a keyframe.
        public var minimumInFlight = 32 * 1024
        /// How often rates are reported.
        public var reportInterval: Duration = .seconds(1)
        /// The share of a report interval the sender must have waited for a viewer's path for the report to say
        /// ``ViewerRate/congested`` (a keyframe's burst on a path that keeps up waits far less).
        public var congestedShare = 0.5
        /// The encodings the camera offers of its picture, by index (``send(_:rendition:)``); empty for one stream.
        public var renditions: [Rendition] = []
        /// How each viewer's rendition is chosen and changed.
        public var renditionPolicy = RenditionStateMachine.Policy()
        /// What the sender keeps for viewers that start from a recent keyframe (``ViewerStart/recentGOP``).
        public var gopCache = GOPCache.Limits()

        /// Defaults.
        public init() {}
    }

    /// Where a new viewer's video starts.
    public enum ViewerStart: Sendable, Hashable {
        /// At the next keyframe the camera offers (up to a GOP later; the encoder is asked for one).
        case nextKeyframe
        /// At once, from the newest keyframe of its rendition and the frames since (``GOPCache``): the first
        /// picture without waiting, at the cost of a burst of up to a GOP of older frames. With no such
        /// keyframe kept, as ``nextKeyframe``.
        case recentGOP
    }

    /// One viewer being fed.
    public final class Viewer: Sendable {
        /// A number unique within its sender.
        public let id: Int
        /// The viewer's connection (a native `PeerConnection` or a browser's session).
        public let connection: any MediaViewerConnection
        let state: Mutex<ViewerQueueStateMachine>
        let choice: Mutex<RenditionStateMachine>
        let wake: AsyncStream<Void>.Continuation
        let wakes: AsyncStream<Void>
        let task = Mutex<Task<Void, Never>?>(nil)

        init(id: Int, connection: any MediaViewerConnection, configuration: Configuration) {
            self.id = id
            self.connection = connection
            state = Mutex(ViewerQueueStateMachine(limits: configuration.queue))
            choice = Mutex(RenditionStateMachine(renditions: configuration.renditions, policy: configuration.renditionPolicy))
            (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        }

        /// Frames dropped for this viewer so far.
        public var droppedFrames: Int { state.withLock { $0.droppedFrames } }
        /// The rendition this viewer receives now.
        public var rendition: Int { choice.withLock { $0.current } }
        /// The rendition whose keyframe this viewer waits for (the one it moves to, else its own): what a
        /// keyframe request for it asks of the encoders.
        public var awaitedRendition: Int { choice.withLock { $0.awaited } }
        /// Times this viewer moved to another rendition.
        public var renditionSwitches: Int { choice.withLock { $0.switches } }
    }

    /// Keyframe wishes (viewer ids): a viewer asked, its queue skipped to the next keyframe, or it is to move to
    /// another rendition; the rendition wanted is the viewer's ``Viewer/awaitedRendition`` (``viewer(_:)``).
    public let keyframeRequests: AsyncStream<Int>
    /// Per-viewer rate reports, every ``Configuration/reportInterval``.
    public let rates: AsyncStream<ViewerRate>

    private let configuration: Configuration
    private let viewers = Mutex<[Int: Viewer]>([:])
    /// Each rendition's newest GOP; its lock also orders a new viewer's start against ``send(_:rendition:)``.
    private let gops: Mutex<GOPCache>
    private let nextID = Atomic<Int>(1)
    private let keyframeSink: AsyncStream<Int>.Continuation
    private let rateSink: AsyncStream<ViewerRate>.Continuation
    private let logger: Logger
    private let switchesDown = Counter(label: "trav_media_rendition_switches_total", dimensions: [("direction", "down")])
    private let switchesUp = Counter(label: "trav_media_rendition_switches_total", dimensions: [("direction", "up")])

    /// A sender with no viewers yet.
    public init(configuration: Configuration = Configuration(), logger: Logger = Logger(label: "trav.media")) {
        self.configuration = configuration
        self.logger = logger
        gops = Mutex(GOPCache(limits: configuration.gopCache))
        (keyframeRequests, keyframeSink) = AsyncStream.makeStream(of: Int.self, bufferingPolicy: .bufferingNewest(16))
        (rates, rateSink) = AsyncStream.makeStream(of: ViewerRate.self, bufferingPolicy: .bufferingNewest(64))
    }

    /// Viewers being fed now.
    public var viewerCount: Int { viewers.withLock { $0.count } }

    /// The viewer with this id, while it is fed.
    public func viewer(_ id: Int) -> Viewer? { viewers.withLock { $0[id] } }

    /// Starts feeding a viewer: opens its channels and returns; the viewer starts where `start` says.
    /// Feeding stops when the connection or its channels close. With `acceptingChannels` the sender reads the
    /// connection's incoming channels for the viewer's control channel; an application that accepts other
    /// channels too passes false and hands the control channel over with ``attach(control:to:)``.
    @discardableResult
    public func add(_ connection: any MediaViewerConnection, acceptingChannels: Bool = true,
                    start: ViewerStart = .nextKeyframe) async throws -> Viewer {
        let media = try await connection.openChannel(label: MediaChannelLabel.media, delivery: .reliable, priority: .high)
        let viewer = Viewer(id: nextID.add(1, ordering: .relaxed).oldValue, connection: connection, configuration: configuration)
        // Under the cache's lock: every frame is either in the GOP the viewer starts from or offered to it after.
        let started = gops.withLock { cache in
            let now = ContinuousClock.now
            let rendition = viewer.rendition
            let began = start == .recentGOP && viewer.state.withLock {
                $0.start(from: cache.recentGOP(of: rendition, now: now), rendition: UInt8(truncatingIfNeeded: rendition), now: now)
            }
            viewers.withLock { $0[viewer.id] = viewer }
            return began
        }
        if started {
            viewer.wake.yield()
        } else {
            keyframeSink.yield(viewer.id)
        }
        let interval = configuration.reportInterval
        let task = Task { [weak self] in
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self?.feed(viewer, on: media) }
                if acceptingChannels { group.addTask { await self?.listen(viewer) } }
                group.addTask {
                    while (try? await Task.sleep(for: interval)) != nil { viewer.wake.yield() }
                }
                await group.next()
                group.cancelAll()
            }
            media.close()
            self?.remove(viewer)
        }
        viewer.task.withLock { $0 = task }
        return viewer
    }

    /// Offers a frame to every viewer (never blocks: each viewer's queue decides what to keep). A video frame
    /// goes to the viewers on its `rendition` (an index into ``Configuration/renditions``; 0 for a camera with
    /// one stream); audio goes to every viewer.
    public func send(_ frame: MediaFrame, rendition: Int = 0) {
        let now = ContinuousClock.now
        let fed = gops.withLock { cache in
            cache.record(frame, rendition: rendition, now: now)
            return viewers.withLock { Array($0.values) }
        }
        for viewer in fed {
            if frame.kind == .video {
                switch viewer.choice.withLock({ $0.frame(of: rendition, isKeyframe: frame.isKeyframe, now: now) }) {
                case .skip:
                    continue
                case .deliver:
                    break
                case .deliverSwitching(let from):
                    let down = configuration.renditions[rendition].bitsPerSecond < configuration.renditions[from].bitsPerSecond
                    (down ? switchesDown : switchesUp).increment()
                    logger.info("viewer moves to another rendition", metadata: [
                        "viewer": "\(viewer.id)", "from": "\(configuration.renditions[from].name)",
                        "to": "\(configuration.renditions[rendition].name)"])
                }
            }
            let actions = viewer.state.withLock { $0.push(frame, rendition: UInt8(truncatingIfNeeded: rendition), now: now) }
            if actions.contains(.requestKeyframe) { keyframeSink.yield(viewer.id) }
            viewer.wake.yield()
        }
    }

    /// Stops feeding every viewer (their connections stay open).
    public func stop() {
        for viewer in viewers.withLock({ Array($0.values) }) { viewer.task.withLock { $0 }?.cancel() }
        keyframeSink.finish()
        rateSink.finish()
    }

    private func remove(_ viewer: Viewer) {
        viewers.withLock { $0[viewer.id] = nil }
        viewer.wake.finish()
    }

    /// Sends the viewer's queued frames while the path has room; reports its rate.
    private func feed(_ viewer: Viewer, on channel: PeerChannel) async {
        let connection = viewer.connection
        var wakes = viewer.wakes.makeAsyncIterator()
        var sentBytes = 0
        var lastReport = ContinuousClock.now
        var ackedAtReport = 0
        var rate = 0.0  // acknowledged bytes/s
        var waitedForPath = Duration.zero
        var overflowsAtReport = 0
        while !Task.isCancelled {
            let now = ContinuousClock.now
            if now - lastReport >= configuration.reportInterval {
                let acked = sentBytes - connection.channelBufferedAmount
                let interval = now - lastReport
                let measured = Double(acked - ackedAtReport) / max(interval.milliseconds / 1000, 1e-3)
                rate = rate == 0 ? measured : 0.7 * rate + 0.3 * measured
                let (overflows, dropped) = viewer.state.withLock { ($0.overflows, $0.droppedFrames) }
                let report = ViewerRate(viewer: viewer.id, acknowledgedBitsPerSecond: measured * 8,
                                        congested: waitedForPath.milliseconds >= interval.milliseconds * configuration.congestedShare,
                                        overflowed: overflows > overflowsAtReport, droppedFrames: dropped, rendition: viewer.rendition)
                rateSink.yield(report)
                for case .requestKeyframe(let target) in viewer.choice.withLock({ $0.report(report, now: now) }) {
                    logger.debug("viewer to move to another rendition", metadata: [
                        "viewer": "\(viewer.id)", "to": "\(configuration.renditions[target].name)",
                        "acknowledged_bps": "\(Int(report.acknowledgedBitsPerSecond))"])
                    keyframeSink.yield(viewer.id)
                }
                lastReport = now
                ackedAtReport = acked
                overflowsAtReport = overflows
                waitedForPath = .zero
            }
            let allowed = max(configuration.minimumInFlight, Int(rate * Double(configuration.targetDelay.components.attoseconds) / 1e18
                                                                 + rate * Double(configuration.targetDelay.components.seconds)))
            if connection.channelBufferedAmount > allowed {
                try? await Task.sleep(for: .milliseconds(5))
                waitedForPath += ContinuousClock.now - now
                continue
            }
            guard let packet = viewer.state.withLock({ $0.next(now: now, wallClockMicros: wallClockMicros()) }) else {
                // Nothing queued: wait for a frame (or the ticker, so rates are still reported).
                guard await wakes.next() != nil else { return }
                continue
            }
            let bytes = packet.encoded()
            do {
                try await channel.send(bytes)
            } catch {
                logger.debug("viewer feed ended", metadata: ["viewer": "\(viewer.id)", "error": "\(error)"])
                return
            }
            sentBytes += bytes.count
        }
    }

    /// Reads a viewer's control channel (``MediaChannelLabel/control``, opened by its ``MediaReceiver``): keyframe
    /// requests. For applications that accept the connection's channels themselves.
    public func attach(control channel: PeerChannel, to viewer: Viewer) {
        Task { await self.control(channel, viewer) }
    }

    /// Waits for the viewer's control channel among the connection's incoming channels, then reads it.
    private func listen(_ viewer: Viewer) async {
        for await channel in viewer.connection.incomingChannels where channel.label == MediaChannelLabel.control {
            await control(channel, viewer)
            return
        }
        // The connection closed: end the feed too.
    }

    private func control(_ channel: PeerChannel, _ viewer: Viewer) async {
        do {
            for try await message in channel.messages where message.first == MediaControl.keyframeRequest.rawValue {
                viewer.state.withLock { $0.restartAtKeyframe() }
                keyframeSink.yield(viewer.id)
            }
        } catch {}
    }
}
