import SourceLimits
import Testing

@Suite struct ConnectionSlotsTests {
    let a = SourceAddressKey(ipv4: 0xC000_0201)
    let b = SourceAddressKey(ipv4: 0xC000_0202)

    @Test func oneSourceCannotTakeEverySlot() {
        var slots = ConnectionSlots(maxPerSource: 3, maxTotal: 5)
        for _ in 0..<3 { #expect(slots.admit(a) == nil) }
        #expect(slots.admit(a) == .sourceFull)
        #expect(slots.admit(b) == nil)
        #expect(slots.total == 4)
    }

    @Test func theTotalCapHoldsAcrossSources() {
        var slots = ConnectionSlots(maxPerSource: 10, maxTotal: 2)
        #expect(slots.admit(a) == nil)
        #expect(slots.admit(b) == nil)
        #expect(slots.admit(SourceAddressKey(ipv4: 3)) == .full)
    }

    @Test func releasedSlotsAreReusedAndForgotten() {
        var slots = ConnectionSlots(maxPerSource: 1, maxTotal: 2)
        #expect(slots.admit(a) == nil)
        slots.release(a)
        slots.release(a)
        #expect(slots.total == 0)
        #expect(slots.count(for: a) == 0)
        #expect(slots.admit(a) == nil)
    }
}
