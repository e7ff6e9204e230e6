import NATLab
import Testing

/// The delay line `trav lab-link` runs per direction, driven by hand: time and the jitter's draw passed in.
struct LinkDelayLineTests {
    private let ms: UInt64 = 1_000_000

    /// Everything due at `now`, in the order the line lets it out.
    private func drain(_ line: inout LinkDelayLine<Int>, now: UInt64) -> [Int] {
        var out: [Int] = []
        for _ in 0..<10_000 {
            guard let frame = line.dequeue(now: now) else { break }
            out.append(frame)
        }
        return out
    }

    @Test func aFrameLeavesOnlyOnceItsDelayHasPassed() {
        var line = LinkDelayLine<Int>(delay: .milliseconds(100))
        let queued = line.enqueue(1, now: 5 * ms)
        #expect(queued && line.nextRelease == 105 * ms)
        let early = drain(&line, now: 104 * ms), onTime = drain(&line, now: 105 * ms), later = drain(&line, now: 500 * ms)
        #expect(early.isEmpty && onTime == [1] && later.isEmpty)
        #expect(line.count == 0 && line.nextRelease == nil)
    }

    @Test func jitterVariesTheDelayEitherWay() {
        var line = LinkDelayLine<Int>(delay: .milliseconds(20), jitter: .milliseconds(15))
        line.enqueue(1, now: 0, draw: 1)
        #expect(line.nextRelease == 35 * ms)
        _ = drain(&line, now: 35 * ms)
        line.enqueue(2, now: 100 * ms, draw: -1)
        #expect(line.nextRelease == 105 * ms)
    }

    @Test func jitterNeverReordersFrames() {
        // The second frame draws a much shorter delay, but leaves after the first, as on a wire.
        var line = LinkDelayLine<Int>(delay: .milliseconds(20), jitter: .milliseconds(15))
        line.enqueue(1, now: 0, draw: 1)            // due at 35 ms
        line.enqueue(2, now: 1 * ms, draw: -1)      // would be due at 6 ms
        let early = drain(&line, now: 10 * ms), due = drain(&line, now: 35 * ms)
        #expect(early.isEmpty && due == [1, 2])
    }

    @Test func jitterLargerThanTheDelayNeverSendsAFrameBeforeItArrived() {
        var line = LinkDelayLine<Int>(delay: .milliseconds(5), jitter: .milliseconds(50))
        line.enqueue(1, now: 1_000 * ms, draw: -1)
        #expect(line.nextRelease == 1_000 * ms)
    }

    @Test func aFullLineDropsArrivingFramesAndCountsThem() {
        var line = LinkDelayLine<Int>(delay: .milliseconds(10), capacity: 2)
        let accepted = [line.enqueue(1, now: 0), line.enqueue(2, now: 0), line.enqueue(3, now: 0)]
        #expect(accepted == [true, true, false] && line.dropped == 1 && line.count == 2)
        let first = line.dequeue(now: 10 * ms)
        let room = line.enqueue(4, now: 10 * ms)
        let rest = drain(&line, now: 20 * ms)
        #expect(first == 1 && room && rest == [2, 4])
    }

    @Test func manyFramesComeOutInOrder() {
        var line = LinkDelayLine<Int>(delay: .milliseconds(1), capacity: 5000)
        for i in 0..<3000 { line.enqueue(i, now: UInt64(i)) }
        let out = drain(&line, now: 10 * ms)
        #expect(out == Array(0..<3000))
    }

    @Test func aHeldBackFrameIsOvertakenAndHoldsNothingUp() {
        var line = LinkDelayLine<Int>(delay: .milliseconds(10))
        line.enqueue(1, now: 0)
        line.enqueue(2, now: 1 * ms, heldBack: true)
        line.enqueue(3, now: 2 * ms)
        line.enqueue(4, now: 3 * ms)
        #expect(line.count == 4)
        // 2 is due 5 ms after its place in line (11 ms): 1, 3 and 4 leave first, on time.
        #expect(drain(&line, now: 13 * ms) == [1, 3, 4])
        #expect(line.nextRelease == 16 * ms)
        #expect(drain(&line, now: 15 * ms).isEmpty)
        #expect(drain(&line, now: 16 * ms) == [2])
        #expect(line.count == 0 && line.nextRelease == nil)
    }

    @Test func heldBackFramesCountAgainstTheCapacity() {
        var line = LinkDelayLine<Int>(delay: .milliseconds(10), capacity: 2)
        let first = line.enqueue(1, now: 0, heldBack: true), second = line.enqueue(2, now: 0)
        let third = line.enqueue(3, now: 0, heldBack: true)
        #expect(first && second && !third)
        #expect(line.dropped == 1)
    }
}
