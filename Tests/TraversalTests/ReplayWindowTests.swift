import Testing
@testable import Traversal

@Suite struct ReplayWindowTests {
    @Test func freshCountersAreAcceptedOnce() {
        var window = ReplayWindow()
        #expect(window.accept(0) == .fresh)
        #expect(window.accept(0) == .replayed)
        #expect(window.accept(1) == .fresh)
        #expect(window.accept(1) == .replayed)
    }

    @Test func reorderedCountersInsideTheWindowAreAccepted() {
        var window = ReplayWindow()
        #expect(window.accept(100) == .fresh)
        #expect(window.accept(98) == .fresh)
        #expect(window.accept(99) == .fresh)
        #expect(window.accept(5) == .fresh)
        #expect(window.accept(98) == .replayed)
        #expect(window.highest == 100)
    }

    @Test func countersBelowTheWindowAreTooOld() {
        var window = ReplayWindow()
        window.accept(10_000)
        #expect(window.check(10_000 - ReplayWindow.windowSize) == .tooOld)
        #expect(window.check(10_000 - ReplayWindow.windowSize + 1) == .fresh)
        #expect(window.accept(3) == .tooOld)
    }

    @Test func checkDoesNotRecord() {
        let window = ReplayWindow()
        #expect(window.check(7) == .fresh)
        #expect(window.check(7) == .fresh)
    }

    @Test func bigJumpsClearStaleBitsFromTheRing() {
        var window = ReplayWindow()
        window.accept(1)
        // Same ring slot as 1, one full ring later: must not be mistaken for a replay.
        let sameSlot = 1 + UInt64(ReplayWindow.bitmapBits)
        #expect(window.accept(sameSlot) == .fresh)
        #expect(window.accept(sameSlot + 3 * UInt64(ReplayWindow.bitmapBits)) == .fresh)
        #expect(window.accept(sameSlot) == .tooOld)
    }

    @Test func everyCounterInAFullWindowIsTrackedAfterSmallSteps() {
        var window = ReplayWindow()
        let top = UInt64(5000)
        for counter in stride(from: top, through: top - ReplayWindow.windowSize + 1, by: -1) {
            #expect(window.accept(counter) == .fresh)
        }
        for counter in (top - ReplayWindow.windowSize + 1)...top {
            #expect(window.check(counter) == .replayed)
        }
        for step in 1...200 {
            #expect(window.accept(top + UInt64(step)) == .fresh)
            #expect(window.check(top + UInt64(step) - 100) == .replayed)
        }
    }
}
