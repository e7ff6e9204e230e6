#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import Synchronization
import Testing
@testable import Traversal

/// `CloudClient.repeatingWhileUnresolved(until:enabled:_:)` and `isUnresolvedNextHop(_:)`: a viewer's connect to
/// the cloud is tried again when only address resolution of the next hop failed, and for nothing else.
struct CloudConnectRepeatTests {
    @Test func hostUnreachableIsUnresolvedAndOtherFailuresAreNot() {
        let unreachable = IOError(errnoCode: EHOSTUNREACH, reason: "connect")
        let refused = IOError(errnoCode: ECONNREFUSED, reason: "connect")
        #expect(CloudClient.isUnresolvedNextHop(unreachable))
        #expect(!CloudClient.isUnresolvedNextHop(refused))
        #expect(!CloudClient.isUnresolvedNextHop(IOError(errnoCode: ENETUNREACH, reason: "connect")))
        #expect(!CloudClient.isUnresolvedNextHop(CancellationError()))
        // NIO's connect by host name reports every attempt's failure: repeated only when all of them were unresolved.
        #expect(CloudClient.areUnresolvedNextHops([unreachable, unreachable]))
        #expect(!CloudClient.areUnresolvedNextHops([unreachable, refused]))
        #expect(!CloudClient.areUnresolvedNextHops([]))
    }

    @Test func aRoundThatFailedResolutionRunsAgainUntilItSucceeds() async throws {
        let rounds = Atomic<Int>(0)
        let value = try await CloudClient.repeatingWhileUnresolved(until: .now + .seconds(10), enabled: true) {
            if rounds.add(1, ordering: .relaxed).newValue < 3 { throw IOError(errnoCode: EHOSTUNREACH, reason: "connect") }
            return 7
        }
        #expect(value == 7)
        #expect(rounds.load(ordering: .relaxed) == 3)
    }

    @Test func otherFailuresAndDisabledRepeatsEndAfterOneRound() async {
        for (enabled, errno) in [(true, ECONNREFUSED), (false, EHOSTUNREACH)] {
            let rounds = Atomic<Int>(0)
            await #expect(throws: IOError.self) {
                try await CloudClient.repeatingWhileUnresolved(until: .now + .seconds(10), enabled: enabled) { () async throws -> Int in
                    rounds.add(1, ordering: .relaxed)
                    throw IOError(errnoCode: errno, reason: "connect")
                }
            }
            #expect(rounds.load(ordering: .relaxed) == 1)
        }
    }

    @Test func repeatsStopBeforeTheDeadline() async {
        let rounds = Atomic<Int>(0)
        let deadline = ContinuousClock.now + CloudClient.connectRepeatDelay * 3
        await #expect(throws: IOError.self) {
            try await CloudClient.repeatingWhileUnresolved(until: deadline, enabled: true) { () async throws -> Int in
                rounds.add(1, ordering: .relaxed)
                throw IOError(errnoCode: EHOSTUNREACH, reason: "connect")
            }
        }
        // Each further round starts only when its pause ends before the deadline: at most three rounds.
        #expect((1...3).contains(rounds.load(ordering: .relaxed)))
    }
}
