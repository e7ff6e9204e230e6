import Foundation
import Logging
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
public struct ViewerRate: Sendable, Hashable {
    /// Which viewer (``MediaSender/Viewer/id``).
    public var viewer: Int
    /// Bits per second the peer acknowledged over the last interval.
    public var acknowledgedBitsPerSecond: Double
    /// True when frames waited for the path (so the figure is the path's capacity, not the stream's rate).
    public var congested: Bool
    /// Frames dropped for this viewer so far.
    public var droppedFrames: Int
}

/// The camera's side of the media plane: hands every frame to each viewer's own bounded queue
/// (``ViewerQueueStateMachine``), so one slow viewer never stalls another; each viewer's sender keeps
/// only about ``Configuration/targetDelay`` of data in flight on its path, so frames wait (and are
/// dropped by whole GOP tails) in the queue rather than in buffers where they could not be dropped.
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

        /// Defaults.
        public init() {}
    }

    /// One viewer being fed.
    public final class Viewer: Sendable {
        /// A number unique within its sender.
        public let id: Int
        /// The viewer's connection (a native `PeerConnection` or a browser's session).
        public let connection: any MediaViewerConnection
        let state: Mutex<ViewerQueueStateMachine>
        let wake: AsyncStream<Void>.Continuation
        let wakes: AsyncStream<Void>
        let task = Mutex<Task<Void, Never>?>(nil)

        init(id: Int, connection: any MediaViewerConnection, limits: ViewerQueueStateMachine.Limits) {
            self.id = id
            self.connection = connection
            state = Mutex(ViewerQueueStateMachine(limits: limits))
            (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        }

        /// Frames dropped for this viewer so far.
        public var droppedFrames: Int { state.withLock { $0.droppedFrames } }
    }

    /// Keyframe wishes: a viewer asked, or a viewer's queue skipped to the next keyframe.
    public let keyframeRequests: AsyncStream<Int>
    /// Per-viewer rate reports, every ``Configuration/reportInterval``.
    public let rates: AsyncStream<ViewerRate>

    private let configuration: Configuration
    private let viewers = Mutex<[Int: Viewer]>([:])
    private let nextID = Atomic<Int>(1)
    private let keyframeSink: AsyncStream<Int>.Continuation
    private let rateSink: AsyncStream<ViewerRate>.Continuation
    private let logger: Logger

    /// A sender with no viewers yet.
    public init(configuration: Configuration = Configuration(), logger: Logger = Logger(label: "trav.media")) {
        self.configuration = configuration
        self.logger = logger
        (keyframeRequests, keyframeSink) = AsyncStream.makeStream(of: Int.self, bufferingPolicy: .bufferingNewest(16))
        (rates, rateSink) = AsyncStream.makeStream(of: ViewerRate.self, bufferingPolicy: .bufferingNewest(64))
    }

    /// Viewers being fed now.
    public var viewerCount: Int { viewers.withLock { $0.count } }

    /// Starts feeding a viewer: opens its channels and returns; the viewer starts at the next keyframe.
    /// Feeding stops when the connection or its channels close. With `acceptingChannels` the sender reads the
    /// connection's incoming channels for the viewer's control channel; an application that accepts other
    /// channels too passes false and hands the control channel over with ``attach(control:to:)``.
    @discardableResult
    public func add(_ connection: any MediaViewerConnection, acceptingChannels: Bool = true) async throws -> Viewer {
        let media = try await connection.openChannel(label: MediaChannelLabel.media, delivery: .reliable, priority: .high)
        let viewer = Viewer(id: nextID.add(1, ordering: .relaxed).oldValue, connection: connection, limits: configuration.queue)
        viewers.withLock { $0[viewer.id] = viewer }
        keyframeSink.yield(viewer.id)
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

    /// Offers a frame to every viewer (never blocks: each viewer's queue decides what to keep).
    public func send(_ frame: MediaFrame) {
        let now = ContinuousClock.now
        for viewer in viewers.withLock({ Array($0.values) }) {
            let actions = viewer.state.withLock { $0.push(frame, now: now) }
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
        var waitedForPath = false
        while !Task.isCancelled {
            let now = ContinuousClock.now
            if now - lastReport >= configuration.reportInterval {
                let acked = sentBytes - connection.channelBufferedAmount
                let seconds = Double((now - lastReport).components.attoseconds) / 1e18 + Double((now - lastReport).components.seconds)
                let measured = Double(acked - ackedAtReport) / max(seconds, 1e-3)
                rate = rate == 0 ? measured : 0.7 * rate + 0.3 * measured
                rateSink.yield(ViewerRate(viewer: viewer.id, acknowledgedBitsPerSecond: measured * 8, congested: waitedForPath,
                                          droppedFrames: viewer.droppedFrames))
                lastReport = now
                ackedAtReport = acked
                waitedForPath = false
            }
            let allowed = max(configuration.minimumInFlight, Int(rate * Double(configuration.targetDelay.components.attoseconds) / 1e18
                                                                 + rate * Double(configuration.targetDelay.components.seconds)))
            if connection.channelBufferedAmount > allowed {
                waitedForPath = true
                try? await Task.sleep(for: .milliseconds(5))
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
