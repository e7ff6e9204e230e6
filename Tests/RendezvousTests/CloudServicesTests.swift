import Foundation
import NIOCore
import ServiceLifecycle
import Testing
@testable import Rendezvous
@testable import Traversal

/// The cloud's servers as services in one group: a graceful shutdown tells every client when to come back
/// before closing, and the group's run returns once every server stopped.
@Suite struct CloudServicesTests {
    @Test func gracefulShutdownTellsClientsToComeBackLaterThenEveryServiceStops() async throws {
        try await withCloud(tuning: { $0.restartRetryAfter = .seconds(3) }) { cloud, endpoint in
            let group = ServiceGroup(services: cloud.services, logger: quietLogger)
            let running = Task { try await group.run() }
            try await withRawConnection(endpoint) { channel, inbound in
                // A look-up answered by the hub: the connection is one of the server's clients now.
                let unknown = DeviceIdentity.generate()
                try await CloudClient.send(
                    .introduce(requestID: "r1", deviceID: unknown.deviceID.description, offer: sampleOffer(DeviceIdentity.ephemeral())),
                    on: channel)
                guard case .error("r1", _, _)? = try await inbound.next() else {
                    Issue.record("no answer to the look-up")
                    return
                }
                await group.triggerGracefulShutdown()
                var told: Int?
                do {
                    while let message = try await inbound.next() {
                        if case .busy(let milliseconds) = message { told = milliseconds }
                    }
                } catch {}  // an unclean TLS close is a close too
                let milliseconds = try #require(told, "no busy before the close")
                #expect(milliseconds >= 3000, "at least the restart retry-after: \(milliseconds) ms")
            }
            try await running.value
            await cloud.closeStore()
        }
    }
}
