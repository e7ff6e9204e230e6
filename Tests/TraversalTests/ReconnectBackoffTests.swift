import Testing
import Traversal

/// The camera's reconnect waits: full jitter below a doubling, capped ceiling; a cloud's retry-after obeyed.
struct ReconnectBackoffTests {
    /// A seeded generator (SplitMix64), so draws repeat.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test func eachWaitStaysBelowADoublingCeilingCappedAtTheMaximum() {
        var backoff = ReconnectBackoff(initialDelay: .milliseconds(250), maxDelay: .seconds(10))
        var generator = SeededGenerator(state: 1)
        var ceilings: [Duration] = []
        for _ in 0..<12 {
            let ceiling = backoff.ceiling
            ceilings.append(ceiling)
            let delay = backoff.nextDelay(using: &generator)
            #expect(delay >= .zero && delay <= ceiling)
        }
        #expect(ceilings.prefix(7) == [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(10)])
        #expect(ceilings.dropFirst(6).allSatisfy { $0 == .seconds(10) })
    }

    @Test func waitsSpreadOverTheWholeRangeSoAFleetDoesNotReturnInLockstep() {
        var generator = SeededGenerator(state: 42)
        var delays: [Duration] = []
        for _ in 0..<1000 {
            var backoff = ReconnectBackoff(initialDelay: .seconds(1), maxDelay: .seconds(1))
            delays.append(backoff.nextDelay(using: &generator))
        }
        #expect(delays.min()! < .milliseconds(20))
        #expect(delays.max()! > .milliseconds(980))
        let inFirstTenth = delays.filter { $0 < .milliseconds(100) }.count
        #expect((50...150).contains(inFirstTenth), "uniform: about 100 of 1000 in the first tenth, got \(inFirstTenth)")
    }

    @Test func resetStartsOverFromTheFirstCeiling() {
        var backoff = ReconnectBackoff(initialDelay: .milliseconds(100), maxDelay: .seconds(5))
        var generator = SeededGenerator(state: 7)
        for _ in 0..<5 { _ = backoff.nextDelay(using: &generator) }
        #expect(backoff.ceiling == .milliseconds(3200))
        backoff.reset()
        #expect(backoff.ceiling == .milliseconds(100))
    }

    @Test func aRetryAfterIsWaitedAtLeastAndAtMostAQuarterLonger() {
        var generator = SeededGenerator(state: 3)
        for _ in 0..<200 {
            let wait = ReconnectBackoff.obeying(retryAfter: .seconds(4), using: &generator)
            #expect(wait >= .seconds(4) && wait <= .seconds(5))
        }
    }
}
