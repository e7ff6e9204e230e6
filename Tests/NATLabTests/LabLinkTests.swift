import Foundation
@testable import NATLab
import Testing

private var linkLabSkipReason: String? { TravLab.skipReason() ?? NATLab.skipReason(requiring: ["tc", "timeout"]) }

/// A site's access line in the real lab: delay, jitter, loss and rate do to packets what they say,
/// and change on a live lab. Bounds are generous and one-sided: a loaded machine only adds time.
@Suite(.serialized, .disabled(if: linkLabSkipReason != nil, Comment(rawValue: linkLabSkipReason ?? "")))
struct LabLinkTests {
    /// The fastest of `count` answered round trips (a loaded machine adds time, never removes it), in at most twice as
    /// many probes: a lossy profile (`mobile` loses 1 % each way) or a loaded machine may leave a probe unanswered within
    /// its 2 s; nil if fewer than `count` were answered.
    private func fastestRoundTrip(_ lab: Lab, from host: String, count: Int = 3) async throws -> Duration? {
        var trips: [Duration] = []
        for _ in 0..<(2 * count) where trips.count < count {
            if let trip = try await lab.roundTrip(from: host, to: lab.cloudAddresses[0]) { trips.append(trip) }
        }
        return trips.count == count ? trips.min() : nil
    }

    @Test func delayAddsTwiceItselfToTheRoundTripAndGoesAwayLive() async throws {
        let site = LabSite("d", .portRestrictedCone, link: .ideal)
        try await NATLab.withLab(sites: [site]) { lab in
            let before = try #require(try await fastestRoundTrip(lab, from: site.host()))
            try await lab.setLink(LinkConditions(delayMs: 100), site: site.name)
            #expect(try await lab.link(of: site.name).delayMs == 100)
            let delayed = try #require(try await fastestRoundTrip(lab, from: site.host()))
            #expect(delayed >= .milliseconds(190) && delayed - before >= .milliseconds(150), "before \(before), delayed \(delayed)")
            try await lab.setLink(.ideal, site: site.name)
            let after = try #require(try await fastestRoundTrip(lab, from: site.host()))
            #expect(after < delayed - .milliseconds(100), "delayed \(delayed), after \(after)")
        }
    }

    @Test func aCutLinePassesNothingAndWorksAgainOnceRestored() async throws {
        // A delayed line: the cut must stop the forwarder's traffic too, and leave it running.
        let site = LabSite("o", .fullCone, link: LinkConditions(delayMs: 20))
        try await NATLab.withLab(sites: [site]) { lab in
            let cloud = lab.cloudAddresses[0]
            #expect(try await lab.roundTrip(from: site.host(), to: cloud) != nil)
            try await lab.setLink(LinkConditions(delayMs: 20).cut, site: site.name)
            #expect(try await lab.roundTrip(from: site.host(), to: cloud, timeout: .seconds(1)) == nil)
            try await lab.setLink(LinkConditions(delayMs: 20), site: site.name)
            #expect(try await lab.roundTrip(from: site.host(), to: cloud) != nil)

            try await lab.outage(site: site.name, for: .milliseconds(300))
            #expect(try await lab.link(of: site.name) == LinkConditions(delayMs: 20, jitterMs: 0, lossPercent: 0,
                                                                         downKbps: 0, upKbps: 0))
            #expect(try await lab.roundTrip(from: site.host(), to: cloud) != nil)
        }
    }

    @Test func aOneMegabitUplinkPassesOnlyWhatItsRateAllowsAndOnlyThatWay() async throws {
        let site = LabSite("r", .open, link: LinkConditions(upKbps: 1000))
        try await NATLab.withLab(sites: [site]) { lab in
            let (cloud, host) = (lab.cloudAddresses[0], try lab.address(of: site.host()))
            try await UDPSink.install(in: lab, host: "cloud")
            try await UDPSink.install(in: lab, host: site.host())

            let up = try await UDPSink.burst(in: lab, from: site.host(), to: cloud)
            let upBytes = try await UDPSink.bytes(in: lab, host: "cloud")
            // 1 Mbit/s for the burst's time, plus tbf's queue (100 ms) and burst, plus slack.
            let allowed = Int((up.seconds + 0.5) * 1_000_000 / 8) + 16_000
            #expect(upBytes > 0 && upBytes <= allowed, "up: \(upBytes) of \(up.bytes) bytes in \(up.seconds) s")
            #expect(upBytes < up.bytes, "up: the whole burst passed")

            let down = try await UDPSink.burst(in: lab, from: "cloud", to: host)
            let downBytes = try await UDPSink.bytes(in: lab, host: site.host())
            #expect(downBytes >= down.bytes * 9 / 10, "down (unlimited): \(downBytes) of \(down.bytes) bytes")
        }
    }

    @Test func randomLossDropsSomeButNotAll() async throws {
        let site = LabSite("l", .open, link: .ideal)
        try await NATLab.withLab(sites: [site]) { lab in
            try await UDPSink.install(in: lab, host: "cloud")
            // Neighbours resolved on a clean line first: a lost ARP reply would hold up the whole burst.
            #expect(try await lab.roundTrip(from: site.host(), to: lab.cloudAddresses[0]) != nil)
            try await lab.setLink(LinkConditions(lossPercent: 30), site: site.name)
            let sent = try await UDPSink.burst(in: lab, from: site.host(), to: lab.cloudAddresses[0], count: 400)
            let received = try await UDPSink.bytes(in: lab, host: "cloud")
            // 70 % of 400 is 280 (σ ≈ 9): far from both "nothing lost" and "everything lost".
            #expect(received >= sent.bytes / 2 && received <= sent.bytes * 9 / 10, "\(received) of \(sent.bytes) bytes")
        }
    }

    @Test func jitterVariesTheRoundTripWithinItsBounds() async throws {
        let site = LabSite("j", .portRestrictedCone, link: LinkConditions(delayMs: 20, jitterMs: 15))
        try await NATLab.withLab(sites: [site]) { lab in
            var trips: [Duration] = []
            for _ in 0..<10 {
                trips.append(try #require(try await lab.roundTrip(from: site.host(), to: lab.cloudAddresses[0])))
            }
            let (fastest, slowest) = (trips.min()!, trips.max()!)
            // Each way 5...35 ms: never under 10 ms there and back; ten draws are not all alike.
            #expect(fastest >= .milliseconds(10), "\(trips)")
            #expect(slowest - fastest >= .milliseconds(5), "\(trips)")
        }
    }

    @Test func reorderingLetsLaterPacketsOvertakeAndJitterAloneDoesNot() async throws {
        let site = LabSite("r", .portRestrictedCone, link: LinkConditions(delayMs: 5, jitterMs: 2))
        try await NATLab.withLab(sites: [site]) { lab in
            /// Echo replies' sequence numbers in the order they came back, and how many came after a later one.
            func inversions() async throws -> (replies: Int, inversions: Int) {
                let r = try await lab.run(host: site.host(), ["ping", "-n", "-i", "0.002", "-c", "300", "-W", "1", lab.cloudAddresses[0]],
                                          timeout: .seconds(20))
                let seqs = r.stdout.split(separator: "\n").compactMap { line in
                    line.split(separator: " ").first { $0.hasPrefix("icmp_seq=") }.flatMap { Int($0.dropFirst(9)) }
                }
                var highest = -1, late = 0
                for s in seqs { if s < highest { late += 1 } else { highest = s } }
                return (seqs.count, late)
            }
            let kept = try await inversions()
            #expect(kept.replies >= 250 && kept.inversions == 0, "\(kept)")
            try await lab.setLink(LinkConditions(delayMs: 5, jitterMs: 2, reorderPercent: 20), site: site.name)
            let mixed = try await inversions()
            #expect(mixed.replies >= 250 && mixed.inversions > 0, "\(mixed)")
            #expect(try await lab.link(of: site.name) == LinkConditions(delayMs: 5, jitterMs: 2, reorderPercent: 20, lossPercent: 0,
                                                                         downKbps: 0, upKbps: 0))
        }
    }

    @Test func aProfileOnASiteIsWhatTheLineDoes() async throws {
        let site = LabSite("m", .doubleNAT, link: .profile(.mobile))
        try await NATLab.withLab(sites: [site]) { lab in
            #expect(try await lab.link(of: site.name) == (try await NATLab.resolve(.profile(.mobile))))
            let trip = try #require(try await fastestRoundTrip(lab, from: site.host()))
            #expect(trip >= .milliseconds(120), "\(trip)")
        }
    }

    @Test func theForwarderBelongsToTheLab() async throws {
        let lab = try await NATLab.build(sites: [LabSite("f", .symmetric, link: LinkConditions(delayMs: 5))])
        defer { lab.tearDown() }
        let ip = try #require(NATLab.findExecutable("ip"))
        let pids = try await ChildProcess.run([ip, "netns", "pids", "\(lab.prefix)-f-link"], timeout: .seconds(10))
        let forwarders = pids.stdout.split(separator: "\n").compactMap { Int32($0) }
        #expect(forwarders.count == 1, "\(pids)")
        lab.tearDown()
        // A killed process takes a moment to go: wait for it, bounded.
        for _ in 0..<100 where forwarders.contains(where: Self.isAlive) { try await Task.sleep(for: .milliseconds(20)) }
        #expect(forwarders.allSatisfy { !Self.isAlive($0) })
        #expect(try await LabTestSupport.namespaces(withPrefix: lab.prefix).isEmpty)
        await #expect(throws: NATLabError.self) { try await lab.setLink(.ideal, site: "f") }
    }

    /// Whether `pid` runs (a zombie its new parent has not reaped yet does not).
    private static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(after: close)...].split(separator: " ").first
        return state != "Z" && state != "X"
    }

    @Test func aSiteWithoutALineRefusesLinkChanges() async throws {
        try await NATLab.withLab(sites: [LabSite("p", .open)]) { lab in
            await #expect(throws: NATLabError.self) { try await lab.setLink(.outage, site: "p") }
            let refused = try await NATLab.script(["link", lab.prefix, "p", "loss=100"])
            #expect(!refused.succeeded && refused.stderr.contains("no link line"), "\(refused)")
        }
    }
}

/// Counts UDP bytes arriving at port 9 of a lab host (an nft counter that drops them), and sends bursts there.
private enum UDPSink {
    static func install(in lab: Lab, host: String) async throws {
        for command in [["add", "table", "ip", "sink"],
                        ["add", "chain", "ip", "sink", "pre", "{ type filter hook prerouting priority -300; policy accept; }"],
                        ["add", "rule", "ip", "sink", "pre", "udp", "dport", "9", "counter", "drop"]] {
            let result = try await lab.run(host: host, ["nft"] + command)
            try #require(result.succeeded, "\(result)")
        }
    }

    /// The bytes (IP packets) counted so far, once the count has stopped growing (bounded: 3 s).
    static func bytes(in lab: Lab, host: String) async throws -> Int {
        var last = -1
        for _ in 0..<15 {
            let listed = try await lab.run(host: host, ["nft", "list", "chain", "ip", "sink", "pre"])
            let words = listed.stdout.split(whereSeparator: \.isWhitespace)
            let count = try #require(words.firstIndex(of: "bytes").flatMap { Int(words[$0 + 1]) }, "\(listed)")
            if count == last { return count }
            last = count
            try await Task.sleep(for: .milliseconds(200))
        }
        return last
    }

    /// Sends `count` 1200-byte datagrams (1228-byte IP packets) as fast as bash can; what went out and how long it took.
    static func burst(in lab: Lab, from host: String, to address: String, count: Int = 500) async throws -> (bytes: Int, seconds: Double) {
        let script = #"p=$(printf '%1200s' x); s=$EPOCHREALTIME; for ((i = 0; i < $1; i++)); do printf '%s' "$p" > "/dev/udp/$0/9"; done; echo "$s $EPOCHREALTIME""#
        let result = try await lab.run(host: host, ["env", "LC_ALL=C", "bash", "-c", script, address, String(count)])
        let times = result.stdout.split(whereSeparator: \.isWhitespace).compactMap { Double($0) }
        try #require(result.succeeded && times.count == 2, "\(result)")
        return (count * 1228, times[1] - times[0])
    }
}
