import Testing
@testable import Media

/// The per-viewer queue's drop rules, with time moved by hand.
@Suite struct ViewerQueueStateMachineTests {
    static let t0 = ContinuousClock.now
    static func video(_ n: Int, key: Bool, size: Int = 100) -> MediaFrame {
        MediaFrame(timestamp: .milliseconds(40 * n), isKeyframe: key, data: [UInt8](repeating: UInt8(n & 0xFF), count: size))
    }

    /// Drains the queue and returns (gop, index) of every frame sent.
    static func drain(_ q: inout ViewerQueueStateMachine, at now: ContinuousClock.Instant) -> [MediaPacket] {
        var out: [MediaPacket] = []
        while let p = q.next(now: now, wallClockMicros: 0) { out.append(p) }
        return out
    }

    @Test func newViewerStartsAtAKeyframe() {
        var q = ViewerQueueStateMachine()
        _ = q.push(Self.video(0, key: false), now: Self.t0)
        _ = q.push(Self.video(1, key: false), now: Self.t0)
        _ = q.push(Self.video(2, key: true), now: Self.t0)
        _ = q.push(Self.video(3, key: false), now: Self.t0)
        let sent = Self.drain(&q, at: Self.t0)
        #expect(sent.map(\.frame.isKeyframe) == [true, false])
        #expect(sent.map(\.index) == [0, 1])
        #expect(q.droppedFrames == 2)
        // Waiting for the first keyframe is no sign of a slow path.
        #expect(q.overflows == 0)
    }

    @Test func aNewViewerStartsFromARecentGOPWithItsCaptureTimes() {
        var cache = GOPCache()
        for n in 0..<4 { cache.record(Self.video(n, key: n == 0), rendition: 0, now: Self.t0 + .milliseconds(40 * n)) }
        let now = Self.t0 + .milliseconds(200)
        var q = ViewerQueueStateMachine()
        let started = q.start(from: cache.recentGOP(of: 0, now: now), rendition: 0, now: now)
        #expect(started)
        #expect(!q.awaitingKeyframe)
        _ = q.push(Self.video(4, key: false), now: now)
        // The wall clock at `now` is 1 s; each packet is stamped with its frame's own capture time.
        var sent: [MediaPacket] = []
        while let p = q.next(now: now, wallClockMicros: 1_000_000) { sent.append(p) }
        #expect(sent.map(\.index) == [0, 1, 2, 3, 4])
        #expect(sent.map(\.sequence) == [0, 1, 2, 3, 4])
        #expect(sent.map(\.capturedAtMicros) == [800_000, 840_000, 880_000, 920_000, 1_000_000])
        #expect(q.droppedFrames == 0 && q.overflows == 0)
    }

    @Test func onlyAViewerThatHasReceivedNothingStartsFromARecentGOP() {
        var cache = GOPCache()
        cache.record(Self.video(0, key: true), rendition: 0, now: Self.t0)
        var q = ViewerQueueStateMachine()
        let withoutGOP = q.start(from: [], now: Self.t0)
        #expect(!withoutGOP, "no GOP: it waits for the next keyframe")
        let withoutKeyframe = q.start(from: [GOPCache.Entry(frame: Self.video(1, key: false), capturedAt: Self.t0)], now: Self.t0)
        #expect(!withoutKeyframe, "a GOP must begin with its keyframe")
        #expect(q.awaitingKeyframe && q.count == 0)
        _ = q.push(Self.video(2, key: true), now: Self.t0)
        let underWay = q.start(from: cache.recentGOP(of: 0, now: Self.t0), now: Self.t0)
        #expect(!underWay, "it is already under way")
        #expect(q.count == 1)
    }

    @Test func fastViewerGetsEveryFrameInOrder() {
        var q = ViewerQueueStateMachine()
        var sent: [MediaPacket] = []
        for n in 0..<60 {
            _ = q.push(Self.video(n, key: n % 25 == 0), now: Self.t0 + .milliseconds(40 * n))
            sent += Self.drain(&q, at: Self.t0 + .milliseconds(40 * n))
        }
        #expect(sent.map(\.sequence) == (0..<60).map(UInt32.init))
        #expect(q.droppedFrames == 0)
    }

    @Test func backedUpQueueDropsWholeGOPTailsAndAsksForAKeyframe() {
        var q = ViewerQueueStateMachine()
        _ = q.push(Self.video(0, key: true), now: Self.t0)
        #expect(Self.drain(&q, at: Self.t0).count == 1)
        // The path stalls: frames pile up for longer than maxDelay.
        let frames = Int((q.limits.maxDelay / .milliseconds(40)).rounded(.up)) + 3
        var actions: [ViewerQueueStateMachine.Action] = []
        for n in 1..<frames { actions += q.push(Self.video(n, key: false), now: Self.t0 + .milliseconds(40 * n)) }
        #expect(actions.contains(.requestKeyframe))
        #expect(q.awaitingKeyframe)
        // Every frame still queued, and every one sent later, must follow its predecessor in the GOP.
        let later = Self.t0 + .milliseconds(40 * frames)
        var sent = Self.drain(&q, at: later)
        _ = q.push(Self.video(frames, key: false), now: later)
        _ = q.push(Self.video(frames + 1, key: true), now: later)
        _ = q.push(Self.video(frames + 2, key: false), now: later)
        sent += Self.drain(&q, at: later)
        var previous: (gop: UInt32, index: UInt32) = (1, 0)
        for p in sent {
            #expect(p.frame.isKeyframe || (p.gop == previous.gop && p.index == previous.index + 1))
            previous = (p.gop, p.index)
        }
        #expect(sent.last?.gop == 2 && sent.last?.index == 1)
        #expect(q.droppedFrames > 0)
        // One overflow: the frames dropped while waiting for the keyframe after it do not count again.
        #expect(q.overflows == 1)
    }

    @Test func keyframeSupersedesTheLateTailOfTheOlderGOP() {
        var q = ViewerQueueStateMachine()
        _ = q.push(Self.video(0, key: true), now: Self.t0)
        #expect(Self.drain(&q, at: Self.t0).count == 1)
        // A slow path: four frames wait (well within maxDelay) while the keyframe goes, then the next keyframe comes.
        for n in 1...4 { #expect(q.push(Self.video(n, key: false), now: Self.t0 + .milliseconds(40 * n)).isEmpty) }
        let keyAt = Self.t0 + .milliseconds(40) + q.limits.supersedeDelay + .milliseconds(1)
        #expect(keyAt - Self.t0 < q.limits.maxDelay)
        #expect(q.push(Self.video(5, key: true), now: keyAt).isEmpty)
        _ = q.push(Self.video(6, key: false), now: keyAt)
        let sent = Self.drain(&q, at: keyAt)
        // The waiting tail is gone whole; the new GOP goes at once, and nothing asks the encoder for more.
        #expect(sent.map(\.sequence) == [5, 6])
        #expect(sent.map(\.index) == [0, 1])
        #expect(q.droppedFrames == 4)
        #expect(q.overflows == 1)
        #expect(!q.awaitingKeyframe)
    }

    @Test func keyframeKeepsFramesThatWaitedBriefly() {
        var q = ViewerQueueStateMachine()
        _ = q.push(Self.video(0, key: true), now: Self.t0)
        _ = q.push(Self.video(1, key: false), now: Self.t0)
        // The feed has not run yet (scheduling), far less than supersedeDelay: a path that keeps up loses nothing.
        _ = q.push(Self.video(2, key: true), now: Self.t0 + q.limits.supersedeDelay / 2)
        let sent = Self.drain(&q, at: Self.t0 + q.limits.supersedeDelay / 2)
        #expect(sent.map(\.sequence) == [0, 1, 2])
        #expect(q.droppedFrames == 0)
        #expect(q.overflows == 0)
    }

    @Test func packetsCarryTheCaptureTimeNotTheSendTime() {
        var q = ViewerQueueStateMachine()
        _ = q.push(Self.video(0, key: true), now: Self.t0)
        // Sent 300 ms after the camera offered it: latency at the viewer must include those 300 ms.
        let p = q.next(now: Self.t0 + .milliseconds(300), wallClockMicros: 10_000_000)
        #expect(p?.capturedAtMicros == 10_000_000 - 300_000)
    }

    @Test func queueNeverHoldsMoreThanItsByteLimit() {
        var limits = ViewerQueueStateMachine.Limits()
        limits.maxBytes = 10_000
        var q = ViewerQueueStateMachine(limits: limits)
        for n in 0..<500 { _ = q.push(Self.video(n, key: n % 50 == 0, size: 900), now: Self.t0) }
        #expect(q.queuedBytes <= 10_000)
    }

    @Test func keyframeRequestDropsQueuedVideoUntilTheNextKeyframe() {
        var q = ViewerQueueStateMachine()
        _ = q.push(Self.video(0, key: true), now: Self.t0)
        _ = q.push(Self.video(1, key: false), now: Self.t0)
        q.restartAtKeyframe()
        _ = q.push(Self.video(2, key: false), now: Self.t0)
        #expect(Self.drain(&q, at: Self.t0).isEmpty)
        _ = q.push(Self.video(3, key: true), now: Self.t0)
        #expect(Self.drain(&q, at: Self.t0).map(\.frame.isKeyframe) == [true])
    }

    @Test func staleAudioIsDroppedAlone() {
        var q = ViewerQueueStateMachine()
        _ = q.push(Self.video(0, key: true), now: Self.t0)
        _ = q.push(MediaFrame(kind: .audio, timestamp: .zero, isKeyframe: false, data: [1]), now: Self.t0)
        let stale = Self.t0 + q.limits.maxDelay + .milliseconds(1)
        _ = q.push(MediaFrame(kind: .audio, timestamp: .zero, isKeyframe: false, data: [2]), now: stale)
        let sent = Self.drain(&q, at: stale)
        #expect(sent.map(\.frame.kind) == [.video, .audio])
        #expect(sent.last?.frame.data == [2])
    }

    @Test func packetRoundTripsOnTheWire() throws {
        let p = MediaPacket(frame: Self.video(7, key: true), sequence: 9, gop: 2, index: 0, capturedAtMicros: 123_456_789, rendition: 3)
        #expect(MediaPacket(decoding: p.encoded()) == p)
        #expect(MediaPacket(decoding: [1, 2, 3]) == nil)
    }
}
