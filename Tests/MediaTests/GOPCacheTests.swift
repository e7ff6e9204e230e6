import Testing
@testable import Media

/// What the sender keeps for a viewer that starts from a recent keyframe, with time moved by hand.
@Suite struct GOPCacheTests {
    static let t0 = ContinuousClock.now
    static func video(_ n: Int, key: Bool, size: Int = 100) -> MediaFrame {
        MediaFrame(timestamp: .milliseconds(40 * n), isKeyframe: key, data: [UInt8](repeating: UInt8(n & 0xFF), count: size))
    }

    @Test func holdsTheNewestKeyframeAndTheFramesSinceForEachRendition() {
        var cache = GOPCache()
        for n in 0..<8 { cache.record(Self.video(n, key: n % 5 == 0), rendition: 0, now: Self.t0 + .milliseconds(40 * n)) }
        cache.record(Self.video(100, key: true), rendition: 1, now: Self.t0)
        let now = Self.t0 + .milliseconds(320)
        #expect(cache.recentGOP(of: 0, now: now).map(\.frame) == (5..<8).map { Self.video($0, key: $0 == 5) })
        #expect(cache.recentGOP(of: 0, now: now).map(\.capturedAt) == (5..<8).map { Self.t0 + .milliseconds(40 * $0) })
        #expect(cache.recentGOP(of: 1, now: now).map(\.frame) == [Self.video(100, key: true)])
        #expect(cache.recentGOP(of: 2, now: now).isEmpty)
    }

    @Test func framesBeforeTheFirstKeyframeAndAudioAreNotKept() {
        var cache = GOPCache()
        cache.record(Self.video(0, key: false), rendition: 0, now: Self.t0)
        cache.record(MediaFrame(kind: .audio, timestamp: .zero, isKeyframe: false, data: [1]), rendition: 0, now: Self.t0)
        #expect(cache.recentGOP(of: 0, now: Self.t0).isEmpty)
        cache.record(Self.video(1, key: true), rendition: 0, now: Self.t0)
        cache.record(MediaFrame(kind: .audio, timestamp: .zero, isKeyframe: false, data: [1]), rendition: 0, now: Self.t0)
        #expect(cache.recentGOP(of: 0, now: Self.t0).map(\.frame) == [Self.video(1, key: true)])
    }

    @Test func aGOPPastItsLimitsIsForgottenUntilTheNextKeyframe() {
        var limits = GOPCache.Limits()
        limits.maxFrames = 3
        limits.maxBytes = 1_000
        var cache = GOPCache(limits: limits)
        for n in 0..<4 { cache.record(Self.video(n, key: n == 0), rendition: 0, now: Self.t0) }
        #expect(cache.recentGOP(of: 0, now: Self.t0).isEmpty, "a fourth frame is past maxFrames")
        cache.record(Self.video(4, key: false), rendition: 0, now: Self.t0)
        #expect(cache.recentGOP(of: 0, now: Self.t0).isEmpty, "nothing but a keyframe starts it again")
        cache.record(Self.video(5, key: true, size: 600), rendition: 0, now: Self.t0)
        cache.record(Self.video(6, key: false, size: 600), rendition: 0, now: Self.t0)
        #expect(cache.recentGOP(of: 0, now: Self.t0).isEmpty, "1,200 bytes are past maxBytes")
        cache.record(Self.video(7, key: true, size: 2_000), rendition: 0, now: Self.t0)
        #expect(cache.recentGOP(of: 0, now: Self.t0).isEmpty, "a keyframe alone past maxBytes")
        cache.record(Self.video(8, key: false), rendition: limits.maxRenditions, now: Self.t0)
        cache.record(Self.video(9, key: true), rendition: limits.maxRenditions, now: Self.t0)
        #expect(cache.recentGOP(of: limits.maxRenditions, now: Self.t0).isEmpty, "renditions past maxRenditions are not kept")
    }

    @Test func aKeyframeOlderThanMaxAgeStartsNobody() {
        var cache = GOPCache()
        cache.record(Self.video(0, key: true), rendition: 0, now: Self.t0)
        #expect(cache.recentGOP(of: 0, now: Self.t0 + cache.limits.maxAge).count == 1)
        #expect(cache.recentGOP(of: 0, now: Self.t0 + cache.limits.maxAge + .milliseconds(1)).isEmpty)
    }
}
