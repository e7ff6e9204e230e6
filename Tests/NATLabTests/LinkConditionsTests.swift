import NATLab
import Testing

/// Link conditions as `natlab.sh` reads and prints them; profiles are the script's.
struct LinkConditionsTests {
    @Test func conditionsBecomeTheScriptsLink() {
        #expect(LinkConditions.profile(.mobile).spec == "mobile")
        #expect(LinkConditions(profile: .dsl, lossPercent: 100).spec == "dsl,loss=100")
        #expect(LinkConditions(delayMs: 100, jitterMs: 5, lossPercent: 0.5, downKbps: 1500, upKbps: 0).spec
                == "delay=100ms,jitter=5ms,loss=0.5,down=1500kbit,up=unlimited")
        #expect(LinkConditions().spec == "ideal")
        #expect(LinkConditions(profile: .badWiFi, reorderPercent: 2.5).spec == "bad-wifi,reorder=2.5")
        #expect(LabSite("cam", .fullCone, link: .profile(.badWiFi)).spec == "cam:full-cone:1@bad-wifi")
        #expect(LabSite("cam", .fullCone).spec == "cam:full-cone:1")
    }

    @Test func aCutLineKeepsItsDelay() {
        let cut = LinkConditions(delayMs: 30, downKbps: 10_000).cut
        #expect(cut == LinkConditions(delayMs: 30, lossPercent: 100, downKbps: 10_000))
    }

    @Test func linksParseBackIntoConditions() {
        let parsed = LinkConditions(spec: "delay=60ms,jitter=0ms,loss=1,down=4mbit,up=512kbit")
        #expect(parsed == LinkConditions(delayMs: 60, jitterMs: 0, lossPercent: 1, downKbps: 4000, upKbps: 512))
        #expect(LinkConditions(spec: "down=unlimited")?.downKbps == 0)
        #expect(LinkConditions(spec: "delay=20ms,jitter=0ms,reorder=1.5,loss=0")
                == LinkConditions(delayMs: 20, jitterMs: 0, reorderPercent: 1.5, lossPercent: 0))
        #expect(LinkConditions(spec: "reorder=100.1") == nil)
        #expect(LinkConditions(spec: "mobile,loss=100") == LinkConditions(profile: .mobile, lossPercent: 100))
        #expect(LinkConditions(spec: "delay=5,mobile") == nil)
        #expect(LinkConditions(spec: "loss=101") == nil)
        #expect(LinkConditions(spec: "colour=blue") == nil)
    }

    @Test func profileNamesResolveToTheirNumbers() async throws {
        let profiles = try await NATLab.linkProfiles()
        #expect(profiles.map(\.profile) == [.ideal, .fibre, .dsl, .mobile, .badWiFi])
        let mobile = try #require(profiles.first { $0.profile == .mobile }?.conditions)
        #expect(mobile == LinkConditions(delayMs: 60, jitterMs: 0, lossPercent: 1, downKbps: 4000, upKbps: 4000))
        let dsl = try await NATLab.resolve(.profile(.dsl))
        #expect(dsl.downKbps == 10_000 && dsl.upKbps == 1000 && dsl.delayMs == 30)
        // Later items override earlier ones.
        #expect(try await NATLab.resolve(LinkConditions(profile: .badWiFi, jitterMs: 0)).jitterMs == 0)
        await #expect(throws: NATLabError.self) { try await NATLab.resolve(.profile(LinkProfile(rawValue: "carrier-pigeon"))) }
    }
}
