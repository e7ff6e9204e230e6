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
        var actions: [ViewerQueueStateMachine.Action] = []
        for n in 1..<20 { actions += q.push(Self.video(n, key: false), now: Self.t0 + .milliseconds(40 * n)) }
        #expect(actions.contains(.requestKeyframe))
        #expect(q.awaitingKeyframe)
        // Every frame still queued, and every one sent later, must follow its predecessor in the GOP.
        var sent = Self.drain(&q, at: Self.t0 + .seconds(1))
        _ = q.push(Self.video(20, key: false), now: Self.t0 + .seconds(1))
        _ = q.push(Self.video(21, key: true), now: Self.t0 + .seconds(1))
        _ = q.push(Self.video(22, key: false), now: Self.t0 + .seconds(1))
        sent += Self.drain(&q, at: Self.t0 + .seconds(1))
        var previous: (gop: UInt32, index: UInt32) = (1, 0)
        for p in sent {
            #expect(p.frame.isKeyframe || (p.gop == previous.gop && p.index == previous.index + 1))
            previous = (p.gop, p.index)
        }
        #expect(sent.last?.gop == 2 && sent.last?.index == 1)
        #expect(q.droppedFrames > 0)
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
        _ = q.push(MediaFrame(kind: .audio, timestamp: .zero, isKeyframe: false, data: [2]), now: Self.t0 + .seconds(1))
        let sent = Self.drain(&q, at: Self.t0 + .seconds(1))
        #expect(sent.map(\.frame.kind) == [.video, .audio])
        #expect(sent.last?.frame.data == [2])
    }

    @Test func packetRoundTripsOnTheWire() throws {
        let p = MediaPacket(frame: Self.video(7, key: true), sequence: 9, gop: 2, index: 0, sentAtMicros: 123_456_789)
        #expect(MediaPacket(decoding: p.encoded()) == p)
        #expect(MediaPacket(decoding: [1, 2, 3]) == nil)
    }
}
