import Testing
import PeerTestSupport
import Traversal

/// The camera's reconnect waits: full jitter below a doubling, capped ceiling; a cloud's retry-after obeyed.
struct ReconnectBackoffTests {
    @Test func eachWaitStaysBelowADoublingCeilingCappedAtTheMaximum() {
        var backoff = ReconnectBackoff(initialDelay: .milliseconds(250), maxDelay: .seconds(10))
        var generator = SplitMix64(seed: 1)
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
        var generator = SplitMix64(seed: 42)
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
        var generator = SplitMix64(seed: 7)
        for _ in 0..<5 { _ = backoff.nextDelay(using: &generator) }
        #expect(backoff.ceiling == .milliseconds(3200))
        backoff.reset()
        #expect(backoff.ceiling == .milliseconds(100))
    }

    @Test func aRetryAfterIsWaitedAtLeastAndAtMostAQuarterLonger() {
        var generator = SplitMix64(seed: 3)
        for _ in 0..<200 {
            let wait = ReconnectBackoff.obeying(retryAfter: .seconds(4), using: &generator)
            #expect(wait >= .seconds(4) && wait <= .seconds(5))
        }
    }
}
