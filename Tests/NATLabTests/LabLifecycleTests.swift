import Foundation
@testable import NATLab
import Testing

/// Labs leave nothing behind: not after teardown, not after a throwing test, not after a crash.
@Suite(.disabled(if: NATLab.skipReason != nil, Comment(rawValue: NATLab.skipReason ?? "")))
struct LabLifecycleTests {
    struct Boom: Error {}

    @Test func tearDownRemovesEveryNamespaceAndProcess() async throws {
        let lab = try await NATLab.build(sites: [LabSite("t", .symmetric, hosts: 2)])
        let sleeper = try lab.spawn(host: "t-h1", ["sleep", "300"])
        #expect(try await lab.namespacesLeft().count == 5)   // inet, cloud, router, 2 hosts
        #expect(sleeper.isRunning)
        lab.tearDown()
        #expect(try await lab.namespacesLeft().isEmpty)
        #expect(!sleeper.isRunning)
        lab.tearDown()                                       // idempotent
        await #expect(throws: NATLabError.self) { try await lab.run(host: "t-h1", ["true"]) }
    }

    @Test func withLabTearsDownWhenTheBodyThrows() async throws {
        let box = PrefixBox()
        await #expect(throws: Boom.self) {
            try await NATLab.withLab(sites: [LabSite("x", .fullCone)]) { lab in
                box.prefix = lab.prefix
                _ = try lab.spawn(host: "x-h1", ["sleep", "300"])
                throw Boom()
            }
        }
        let prefix = try #require(box.prefix)
        #expect(try await LabTestSupport.namespaces(withPrefix: prefix).isEmpty)
    }

    @Test func runIsKilledAtItsTimeLimit() async throws {
        try await NATLab.withLab(sites: [LabSite("k", .open)]) { lab in
            let start = ContinuousClock.now
            let result = try await lab.run(host: "k-h1", ["sleep", "30"], timeout: .milliseconds(500))
            #expect(result.timedOut && !result.succeeded)
            #expect(ContinuousClock.now - start < .seconds(5))
        }
    }

    @Test func cleanupStaleRemovesACrashedRunButNotALiveOne() async throws {
        // A "crashed run": a lab owned by a process that then dies without tearing down.
        let owner = try ChildProcess(["/bin/sleep", "60"])
        let prefix = "nlstale" + String(Int.random(in: 10000...99999))
        let up = try await ChildProcess.run(["/bin/bash", NATLab.scriptPath, "up", prefix, "full-cone"],
                                            environment: ["NATLAB_OWNER_PID": String(owner.pid)],
                                            timeout: .seconds(60))
        #expect(up.succeeded, "\(up)")
        let live = try await NATLab.build(sites: [LabSite("l", .open)])
        defer { live.tearDown() }
        #expect(try await LabTestSupport.namespaces(withPrefix: prefix).count == 4)

        owner.kill()
        owner.removeFiles()
        // Another test's build() may get there first (it cleans up stale labs too): either is fine.
        try await NATLab.cleanupStale()
        let listed = try await NATLab.script(["list"])
        #expect(!listed.stdout.contains(prefix))
        #expect(try await LabTestSupport.namespaces(withPrefix: prefix).isEmpty)
        #expect(try await live.namespacesLeft().count == 4)   // live owner (us): untouched
        _ = try? await NATLab.script(["down", prefix])         // in case an expectation failed
    }
}

/// A mutable slot a test body fills in, read after the lab is gone.
final class PrefixBox: @unchecked Sendable {
    var prefix: String?
}
