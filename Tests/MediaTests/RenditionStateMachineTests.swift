import Testing
@testable import Media

/// Choosing a viewer's rendition from its rate reports, with time moved by hand.
@Suite struct RenditionStateMachineTests {
    static let t0 = ContinuousClock.now
    static let main = Rendition(name: "main", bitsPerSecond: 3_000_000)
    static let sub = Rendition(name: "sub", bitsPerSecond: 400_000)

    static func at(_ seconds: Double) -> ContinuousClock.Instant { t0 + .milliseconds(Int64(seconds * 1000)) }

    static func congested(_ bps: Double) -> ViewerRate {
        ViewerRate(viewer: 1, acknowledgedBitsPerSecond: bps, congested: true, droppedFrames: 0)
    }

    static func clean(_ bps: Double) -> ViewerRate {
        ViewerRate(viewer: 1, acknowledgedBitsPerSecond: bps, congested: false, droppedFrames: 0)
    }

    /// A camera whose renditions each make a frame every 40 ms, a keyframe every 25 (rendition `r`'s offset by
    /// `keyOffsets[r]` frames), fed through the machine into a viewer queue that drains at once; every second
    /// the machine gets `report(current rendition, second)`.
    struct Simulation {
        var machine: RenditionStateMachine
        var queue = ViewerQueueStateMachine()
        var stats = MediaStatistics()
        /// (second, from, to) of each move.
        var moves: [(second: Double, from: Int, to: Int)] = []
        var delivered: [MediaPacket] = []
        var frame = 0
        let keyOffsets: [Int]

        init(_ renditions: [Rendition], policy: RenditionStateMachine.Policy = .init(), keyOffsets: [Int]? = nil) {
            machine = RenditionStateMachine(renditions: renditions, policy: policy)
            self.keyOffsets = keyOffsets ?? renditions.indices.map { $0 * 12 }
        }

        mutating func run(seconds: Int, report: (_ current: Int, _ second: Int) -> ViewerRate) {
            for _ in 0..<(seconds * 25) {
                let now = RenditionStateMachineTests.t0 + .milliseconds(40 * frame)
                for r in keyOffsets.indices {
                    let key = (frame + keyOffsets[r]) % 25 == 0
                    let data: [UInt8] = [UInt8(r), UInt8(truncatingIfNeeded: frame)]
                    let f = MediaFrame(timestamp: .milliseconds(40 * frame), isKeyframe: key, data: data)
                    switch machine.frame(of: r, isKeyframe: key, now: now) {
                    case .skip: continue
                    case .deliver: break
                    case .deliverSwitching(let from): moves.append((Double(frame) / 25, from, r))
                    }
                    _ = queue.push(f, rendition: UInt8(r), now: now)
                    while let p = queue.next(now: now, wallClockMicros: 0) {
                        delivered.append(p)
                        stats.record(p, latencyMs: 0, at: now)
                    }
                }
                frame += 1
                if frame % 25 == 0 {
                    _ = machine.report(report(machine.current, frame / 25), now: now + .milliseconds(40))
                }
            }
        }
    }

    @Test func startsAtTheHighestRenditionOrTheConfiguredOne() {
        #expect(RenditionStateMachine(renditions: [Self.main, Self.sub]).current == 0)
        // The ladder follows the rates, not the order given.
        #expect(RenditionStateMachine(renditions: [Self.sub, Self.main]).current == 1)
        var policy = RenditionStateMachine.Policy()
        policy.start = .fitting(bitsPerSecond: 1_000_000)
        #expect(RenditionStateMachine(renditions: [Self.main, Self.sub], policy: policy).current == 1)
        policy.start = .fitting(bitsPerSecond: 100)
        #expect(RenditionStateMachine(renditions: [Self.main, Self.sub], policy: policy).current == 1)
        policy.start = .rendition(1)
        #expect(RenditionStateMachine(renditions: [Self.main, Self.sub], policy: policy).current == 1)
        policy.start = .rendition(7)
        #expect(RenditionStateMachine(renditions: [Self.main, Self.sub], policy: policy).current == 0)
        // No renditions: one stream, which every frame of rendition 0 belongs to.
        var single = RenditionStateMachine(renditions: [])
        #expect(single.frame(of: 0, isKeyframe: false, now: Self.t0) == .deliver)
        #expect(single.report(Self.congested(1), now: Self.at(1)).isEmpty)
    }

    @Test func congestionBelowTheMarginMovesDownAtTheTargetRenditionsNextKeyframe() {
        var m = RenditionStateMachine(renditions: [Self.main, Self.sub])
        #expect(m.frame(of: 0, isKeyframe: true, now: Self.at(0)) == .deliver)
        #expect(m.frame(of: 1, isKeyframe: true, now: Self.at(0)) == .skip)
        #expect(m.report(Self.congested(900_000), now: Self.at(1)) == [.requestKeyframe(rendition: 1)])
        #expect(m.target == 1 && m.awaited == 1 && m.current == 0)
        // Until the sub stream's keyframe: the main stream's frames, its keyframes too.
        #expect(m.frame(of: 0, isKeyframe: false, now: Self.at(1.04)) == .deliver)
        #expect(m.frame(of: 1, isKeyframe: false, now: Self.at(1.04)) == .skip)
        #expect(m.frame(of: 0, isKeyframe: true, now: Self.at(1.08)) == .deliver)
        #expect(m.frame(of: 1, isKeyframe: true, now: Self.at(1.12)) == .deliverSwitching(from: 0))
        #expect(m.current == 1 && m.target == nil && m.switches == 1)
        #expect(m.frame(of: 0, isKeyframe: false, now: Self.at(1.16)) == .skip)
        #expect(m.frame(of: 1, isKeyframe: false, now: Self.at(1.16)) == .deliver)
    }

    @Test func aPathThatCarriesTheRenditionKeepsItEvenWhenBusy() {
        var m = RenditionStateMachine(renditions: [Self.main, Self.sub])
        // Congested, but still acknowledging more than the rendition × margin.
        #expect(m.report(Self.congested(2_700_000), now: Self.at(1)).isEmpty)
        // Not congested: the path carried what the stream offered, however little that was.
        #expect(m.report(Self.clean(200_000), now: Self.at(2)).isEmpty)
        #expect(m.target == nil && m.current == 0)
    }

    @Test func anOverflowingQueueMovesDownWhateverTheRate() {
        var m = RenditionStateMachine(renditions: [Self.main, Self.sub])
        let overflow = ViewerRate(viewer: 1, acknowledgedBitsPerSecond: 2_900_000, congested: false, overflowed: true, droppedFrames: 20)
        #expect(m.report(overflow, now: Self.at(1)) == [.requestKeyframe(rendition: 1)])
    }

    @Test func movesDownToTheHighestRenditionTheRateFits() {
        let ladder = [Rendition(name: "4k", bitsPerSecond: 8_000_000), Rendition(name: "hd", bitsPerSecond: 4_000_000),
                      Rendition(name: "sd", bitsPerSecond: 1_500_000), Rendition(name: "low", bitsPerSecond: 300_000)]
        var m = RenditionStateMachine(renditions: ladder)
        // 2 Mbit/s × 0.85 fits sd, not hd: two steps at once.
        #expect(m.report(Self.congested(2_000_000), now: Self.at(1)) == [.requestKeyframe(rendition: 2)])
        // Still waiting for sd's keyframe: a report that fits sd again changes nothing, a worse one goes lower.
        #expect(m.report(Self.congested(1_900_000), now: Self.at(2)).isEmpty)
        #expect(m.report(Self.congested(500_000), now: Self.at(3)) == [.requestKeyframe(rendition: 3)])
        #expect(m.frame(of: 2, isKeyframe: true, now: Self.at(3.5)) == .skip)
        #expect(m.frame(of: 3, isKeyframe: true, now: Self.at(3.6)) == .deliverSwitching(from: 0))
        // Nothing below the lowest.
        var n = RenditionStateMachine(renditions: [Self.main, Self.sub], policy: { var p = RenditionStateMachine.Policy(); p.start = .rendition(1); return p }())
        #expect(n.report(Self.congested(10_000), now: Self.at(1)).isEmpty)
    }

    @Test func movesUpOnlyAfterTheHoldOfCleanReports() {
        var sim = Simulation([Self.main, Self.sub])
        let policy = sim.machine.policy
        // A path that sustains 1 Mbit/s for 4 s, then 10 Mbit/s.
        sim.run(seconds: 40) { current, second in
            second <= 4 ? (current == 0 ? Self.congested(1_000_000) : Self.clean(400_000)) : Self.clean(current == 0 ? 3_000_000 : 400_000)
        }
        #expect(sim.moves.map(\.to) == [1, 0], "\(sim.moves)")
        let down = sim.moves[0].second, up = sim.moves[1].second
        // Down at the sub stream's first keyframe after the first report.
        #expect(down > 1 && down <= 2)
        // Up no sooner than the settling time plus the hold of clean reports after it.
        let hold = (policy.settleTime + policy.upHold).milliseconds / 1000
        #expect(up - down >= hold, "\(sim.moves)")
        #expect(sim.stats.brokenFrames == 0)
        #expect(sim.stats.renditions == [0, 1, 0])
        // The receiver's statistics: the first move, timed from the first frame.
        #expect(sim.stats.renditionSwitches == 2)
        #expect(abs((sim.stats.firstSwitchSeconds ?? -1) - down) < 0.001)
    }

    @Test func aRateOscillatingAroundTheBoundaryDoesNotMakeTheViewerFlap() {
        var sim = Simulation([Self.main, Self.sub])
        // Every other second the main stream's path falls just short of it, then just carries it.
        sim.run(seconds: 120) { current, second in
            guard current == 0 else { return Self.clean(400_000) }
            return second % 2 == 0 ? Self.congested(2_400_000) : Self.clean(3_100_000)
        }
        // On the sub stream every report is clean, so it moves up after each hold; each time the main stream
        // fails within the probe window and the hold doubles: a handful of moves in two minutes, not sixty.
        let ups = sim.moves.filter { $0.to == 0 }
        #expect(ups.count >= 2 && ups.count <= 4, "\(sim.moves)")
        let gaps = zip(ups.dropFirst(), ups).map { $0.second - $1.second }
        #expect(gaps == gaps.sorted() && (gaps.last ?? 0) > (gaps.first ?? 0), "\(sim.moves)")
        #expect(sim.machine.upHold(for: 0) > sim.machine.policy.upHold)
        #expect(sim.stats.brokenFrames == 0)
    }

    @Test func theUpHoldGrowsToItsCapOnAPathThatNeverCarriesTheHigherRendition() {
        var sim = Simulation([Self.main, Self.sub])
        sim.run(seconds: 900) { current, _ in current == 0 ? Self.congested(1_000_000) : Self.clean(400_000) }
        let policy = sim.machine.policy
        #expect(sim.machine.upHold(for: 0) == policy.maxUpHold)
        // Without the back-off it would try every settle + hold (~13 s): about 70 times in 15 minutes.
        let ups = sim.moves.filter { $0.to == 0 }.count
        #expect(ups >= 4 && ups <= 12, "\(sim.moves)")
        #expect(sim.stats.brokenFrames == 0)
    }

    @Test func aMoveThatHoldsResetsTheUpHold() {
        var sim = Simulation([Self.main, Self.sub])
        // Fails once, then the path clears: the move up that holds lasts past the probe window.
        sim.run(seconds: 60) { current, second in
            current == 0 && second < 20 ? Self.congested(1_000_000) : Self.clean(current == 0 ? 3_000_000 : 400_000)
        }
        #expect(sim.machine.current == 0)
        #expect(sim.machine.upHold(for: 0) > sim.machine.policy.upHold)  // doubled once, not reset until left again
        var m = sim.machine
        // Leaving it long after moving up is not a failed probe: the hold goes back to the base.
        _ = m.report(Self.congested(1_000_000), now: Self.at(200))
        #expect(m.upHold(for: 0) == m.policy.upHold)
    }

    @Test func aShortReportCancelsAPendingMoveUp() {
        var policy = RenditionStateMachine.Policy()
        policy.start = .rendition(1)
        var m = RenditionStateMachine(renditions: [Self.main, Self.sub], policy: policy)
        var actions: [RenditionStateMachine.Action] = []
        for s in 1...12 { actions += m.report(Self.clean(400_000), now: Self.at(Double(s))) }
        #expect(actions == [.requestKeyframe(rendition: 0)])
        #expect(m.target == 0)
        #expect(m.report(Self.congested(300_000), now: Self.at(13)).isEmpty)
        #expect(m.target == nil)
        #expect(m.frame(of: 0, isKeyframe: true, now: Self.at(13.1)) == .skip)
        #expect(m.frame(of: 1, isKeyframe: false, now: Self.at(13.1)) == .deliver)
    }

    @Test func everyMoveIsAtTheTargetsKeyframeSoNoGOPBreaks() {
        // Keyframes of the two renditions never coincide (offset by 12 frames): a move at the wrong one would
        // hand the viewer a GOP without its start.
        var sim = Simulation([Self.main, Self.sub], keyOffsets: [0, 12])
        sim.run(seconds: 120) { current, second in
            current == 0 ? (second % 7 < 3 ? Self.congested(900_000) : Self.clean(3_000_000)) : Self.clean(400_000)
        }
        #expect(sim.moves.count >= 2)
        for move in sim.moves {
            let f = Int((move.second * 25).rounded())
            #expect((f + sim.keyOffsets[move.to]) % 25 == 0, "\(move)")
        }
        // Each delivered run of one rendition starts with its keyframe, and the receiver finds nothing broken.
        for (p, previous) in zip(sim.delivered.dropFirst(), sim.delivered) where p.rendition != previous.rendition {
            #expect(p.frame.isKeyframe)
        }
        #expect(sim.stats.brokenFrames == 0)
        #expect(sim.stats.renditionSwitches == sim.moves.count)
        #expect(sim.stats.droppedFrames == 0)
    }
}
