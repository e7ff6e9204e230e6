import Crypto
import Foundation
import PeerTestSupport
import Testing
import Traversal
@testable import Media

/// The camera's media sender feeding viewers over in-memory links with real channels underneath.
@Suite(.serialized, .timeLimit(.minutes(2))) struct MediaSenderTests {
    static let clip: [AnnexB.AccessUnit] = {
        let data = (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: AnnexBTests.clipPath)))) ?? []
        return AnnexB.accessUnits(data)
    }()

    /// Plays the clip (looped) at `fps` for `frames` frames with inflated frames (`scale` copies of each unit's
    /// bytes, so a 4 Mbit/s stream comes from the small clip) into `sender`.
    static func play(_ sender: MediaSender, frames: Int, fps: Int = 25, scale: Int = 1) async {
        let start = ContinuousClock.now
        for n in 0..<frames {
            let unit = clip[n % clip.count]
            let data = scale == 1 ? unit.bytes : Array([[UInt8]](repeating: unit.bytes, count: scale).joined())
            sender.send(MediaFrame(timestamp: .milliseconds(1000 * n / fps), isKeyframe: unit.isKeyframe, data: data))
            try? await Task.sleep(until: start + .milliseconds(1000 * (n + 1) / fps), clock: .continuous)
        }
    }

    /// Collects what a receiver got until `count` frames or the channel ends.
    static func collect(_ receiver: MediaReceiver, until deadline: Duration) async -> [MediaPacket] {
        await withTaskGroup(of: [MediaPacket].self) { group in
            group.addTask {
                var got: [MediaPacket] = []
                do { for try await r in receiver.frames { got.append(r.packet) } } catch {}
                return got
            }
            group.addTask {
                try? await Task.sleep(for: deadline)
                receiver.stop()
                return []
            }
            var all: [MediaPacket] = []
            for await part in group { all += part }
            return all
        }
    }

    @Test func framesArriveByteIdenticalIncludingLargeOnes() async throws {
        let (viewer, camera, _) = connectedPair(.init(loss: 0.02, delay: .milliseconds(5), jitter: .milliseconds(5)))
        // Queue limits that hold the whole burst: this test is about integrity, not dropping.
        var configuration = MediaSender.Configuration()
        configuration.queue.maxBytes = 8 << 20
        configuration.queue.maxDelay = .seconds(60)
        let sender = MediaSender(configuration: configuration)
        async let receiver = MediaReceiver(connection: viewer)
        try await sender.add(camera)
        let r = try await receiver
        // A keyframe first, then frames up to 1 MiB.
        let sizes = [1 << 20, 5_000, 300_000, 1 << 20, 80]
        let sent = sizes.enumerated().map { i, size in
            MediaFrame(timestamp: .milliseconds(40 * i), isKeyframe: i == 0, data: (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) })
        }
        for f in sent { sender.send(f) }
        var got: [MediaFrame] = []
        for try await frame in r.frames {
            got.append(frame.packet.frame)
            if got.count == sent.count { break }
        }
        #expect(got.map { SHA256.hash(data: $0.data) } == sent.map { SHA256.hash(data: $0.data) })
        #expect(got.map(\.isKeyframe) == sent.map(\.isKeyframe))
        sender.stop()
        await viewer.close()
        await camera.close()
    }

    @Test func slowViewerGetsWholeGOPsWhileTheFastOneGetsEveryFrame() async throws {
        let (fastViewer, fastCamera, _) = connectedPair(.init(delay: .milliseconds(5)))
        // ~1 Mbit/s bottleneck for a stream of ~2.4 Mbit/s (the clip's frames, 8 copies each).
        let (slowViewer, slowCamera, slowLink) = connectedPair(.init(delay: .milliseconds(20), rateBitsPerSecond: 1_000_000))
        let sender = MediaSender()
        async let fastReceiver = MediaReceiver(connection: fastViewer)
        async let slowReceiver = MediaReceiver(connection: slowViewer)
        try await sender.add(fastCamera)
        try await sender.add(slowCamera)
        let (fast, slow) = try await (fastReceiver, slowReceiver)
        async let fastFrames = Self.collect(fast, until: .seconds(6))
        async let slowFrames = Self.collect(slow, until: .seconds(6))
        await Self.play(sender, frames: 100, scale: 8)
        let (f, s) = await (fastFrames, slowFrames)
        // The fast viewer: every frame, in order (it joined before the first keyframe).
        #expect(f.map(\.sequence) == (0..<100).map(UInt32.init))
        // The slow one: fewer frames, but never one whose reference it missed.
        #expect(s.count < f.count)
        #expect(s.contains { $0.frame.isKeyframe })
        #expect(slow.stats.brokenFrames == 0)
        #expect(fast.stats.brokenFrames == 0)
        #expect(slowLink.dropped.load(ordering: .relaxed) >= 0)
        sender.stop()
        for c in [fastViewer, fastCamera, slowViewer, slowCamera] { await c.close() }
    }

    @Test func aSlowViewerMovesToTheSubStreamWhileTheFastOneStaysOnTheMain() async throws {
        let (fastViewer, fastCamera, _) = connectedPair(.init(delay: .milliseconds(5)))
        let (slowViewer, slowCamera, _) = connectedPair(.init(delay: .milliseconds(20), rateBitsPerSecond: 1_000_000))
        // A main stream of ~2.6 Mbit/s (16 copies of each of the clip's units) and the clip itself as the sub stream.
        let main = Self.clip.map { AnnexB.AccessUnit(bytes: Array([[UInt8]](repeating: $0.bytes, count: 16).joined()), isKeyframe: $0.isKeyframe) }
        var configuration = MediaSender.Configuration()
        configuration.renditions = [Rendition(name: "main", bitsPerSecond: AnnexB.bitsPerSecond(of: main, fps: 25)),
                                    Rendition(name: "sub", bitsPerSecond: AnnexB.bitsPerSecond(of: Self.clip, fps: 25))]
        #expect(configuration.renditions[0].bitsPerSecond > 2_000_000 && configuration.renditions[1].bitsPerSecond < 500_000)
        let sender = MediaSender(configuration: configuration)
        async let fastReceiver = MediaReceiver(connection: fastViewer)
        async let slowReceiver = MediaReceiver(connection: slowViewer)
        let fastFeed = try await sender.add(fastCamera)
        let slowFeed = try await sender.add(slowCamera)
        let (fast, slow) = try await (fastReceiver, slowReceiver)
        async let fastFrames = Self.collect(fast, until: .seconds(9))
        async let slowFrames = Self.collect(slow, until: .seconds(9))
        await sender.play(renditions: [main, Self.clip], fps: 25, for: .seconds(7))
        let (f, s) = await (fastFrames, slowFrames)
        // The fast viewer: the main stream only, every frame of it.
        #expect(Set(f.map(\.rendition)) == [0])
        #expect(f.map(\.sequence) == (0..<UInt32(f.count)).map { $0 }, "\(fast.stats)")
        #expect(fastFeed.renditionSwitches == 0)
        // The slow one: down to the sub stream at one of its keyframes, no frame without its reference.
        #expect(slowFeed.rendition == 1 && slowFeed.renditionSwitches >= 1)
        #expect(slow.stats.renditions.last == 1, "\(slow.stats)")
        #expect(slow.stats.brokenFrames == 0, "\(slow.stats)")
        let firstSub = try #require(s.firstIndex { $0.rendition == 1 })
        #expect(s[firstSub].frame.isKeyframe)
        print("in memory, 1 Mbit/s: the slow viewer moved to the sub stream \(slow.stats.firstSwitchSeconds ?? -1) s after its first frame")
        sender.stop()
        for c in [fastViewer, fastCamera, slowViewer, slowCamera] { await c.close() }
    }

    @Test func aViewersKeyframeRequestRestartsItAtItsOwnRenditionsKeyframe() async throws {
        let (viewer, camera, _) = connectedPair()
        var configuration = MediaSender.Configuration()
        configuration.renditions = [Rendition(name: "main", bitsPerSecond: 3_000_000), Rendition(name: "sub", bitsPerSecond: 400_000)]
        configuration.renditionPolicy.start = .rendition(1)
        let sender = MediaSender(configuration: configuration)
        async let receiver = MediaReceiver(connection: viewer)
        let added = try await sender.add(camera)
        let r = try await receiver
        var requests = sender.keyframeRequests.makeAsyncIterator()
        #expect(await requests.next() == added.id)  // joining asks for one
        func frame(_ n: Int, key: Bool, rendition: Int) -> MediaFrame {
            MediaFrame(timestamp: .milliseconds(40 * n), isKeyframe: key, data: [UInt8(rendition), UInt8(n), key ? 1 : 0])
        }
        var frames = r.frames.makeAsyncIterator()
        sender.send(frame(0, key: true, rendition: 0), rendition: 0)
        sender.send(frame(0, key: true, rendition: 1), rendition: 1)
        sender.send(frame(1, key: false, rendition: 0), rendition: 0)
        sender.send(frame(1, key: false, rendition: 1), rendition: 1)
        var got = [try #require(try await frames.next()).packet, try #require(try await frames.next()).packet]
        try await r.requestKeyframe()
        #expect(await requests.next() == added.id)
        #expect(sender.viewer(added.id)?.awaitedRendition == 1)
        // Waiting for a keyframe: the sub stream's next frame is dropped, the main stream's keyframe is not this viewer's.
        sender.send(frame(2, key: false, rendition: 1), rendition: 1)
        sender.send(frame(3, key: true, rendition: 0), rendition: 0)
        sender.send(frame(3, key: true, rendition: 1), rendition: 1)
        sender.send(frame(4, key: false, rendition: 1), rendition: 1)
        got += [try #require(try await frames.next()).packet, try #require(try await frames.next()).packet]
        #expect(got.map(\.rendition) == [1, 1, 1, 1])
        #expect(got.map(\.frame.data) == [[1, 0, 1], [1, 1, 0], [1, 3, 1], [1, 4, 0]])
        #expect(r.stats.brokenFrames == 0)
        sender.stop()
        await viewer.close()
        await camera.close()
    }

    @Test func aViewerStartingFromTheRecentGOPGetsItAtOnceAndAsksForNoKeyframe() async throws {
        let (viewer, camera, _) = connectedPair()
        let sender = MediaSender()
        func frame(_ n: Int, key: Bool) -> MediaFrame {
            MediaFrame(timestamp: .milliseconds(40 * n), isKeyframe: key, data: [UInt8(n), key ? 1 : 0])
        }
        // Frames before anyone watches: the GOP that starts at frame 2 is kept.
        for n in 0..<5 { sender.send(frame(n, key: n == 2)) }
        async let receiver = MediaReceiver(connection: viewer)
        let added = try await sender.add(camera, start: .recentGOP)
        let r = try await receiver
        sender.send(frame(5, key: false))
        var frames = r.frames.makeAsyncIterator()
        var got: [[UInt8]] = []
        for _ in 0..<4 { got.append(try #require(try await frames.next()).packet.frame.data) }
        #expect(got == [[2, 1], [3, 0], [4, 0], [5, 0]])
        #expect(r.stats.brokenFrames == 0 && r.stats.droppedFrames == 0)
        // It asked for nothing; a viewer starting at the next keyframe asks for one.
        let (other, otherCamera, _) = connectedPair()
        async let otherReceiver = MediaReceiver(connection: other)
        let waiting = try await sender.add(otherCamera)
        _ = try await otherReceiver
        var requests = sender.keyframeRequests.makeAsyncIterator()
        #expect(await requests.next() == waiting.id)
        #expect(waiting.id != added.id)
        sender.stop()
        for c in [viewer, camera, other, otherCamera] { await c.close() }
    }

    @Test func viewerKeyframeRequestReachesTheApplication() async throws {
        let (viewer, camera, _) = connectedPair()
        let sender = MediaSender()
        async let receiver = MediaReceiver(connection: viewer)
        let added = try await sender.add(camera)
        let r = try await receiver
        var requests = sender.keyframeRequests.makeAsyncIterator()
        #expect(await requests.next() == added.id)  // joining asks for one
        try await r.requestKeyframe()
        #expect(await requests.next() == added.id)
        sender.stop()
        await viewer.close()
        await camera.close()
    }
}
