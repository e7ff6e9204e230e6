import Foundation
import Strategies
import Synchronization
import Testing
import Traversal

/// A camera holds sockets for every introduction it answers: past its bound, more are declined at once.
@Suite(.timeLimit(.minutes(1)))
struct CameraIntroductionBoundTests {
    /// The request IDs a camera declined.
    final class Declines: Sendable {
        let ids = Mutex<[String]>([])
    }

    /// An introduction whose answer is never started (the cloud holds it), recording a decline.
    struct Held: IncomingIntroduction {
        let requestID: String
        let offer: PeerOffer
        var relay: RelayGrant? { nil }
        let declined: Declines
        func accept(answer: PeerOffer) async throws {
            try await Task.sleep(for: .seconds(30))
        }
        func decline() async { declined.ids.withLock { $0.append(requestID) } }
    }

    @Test func introductionsPastTheBoundAreDeclinedWhileTheFirstAreStillAnswered() async throws {
        var configuration = ConnectorConfiguration(identity: .generate(), strategies: [DirectLAN(scope: .loopbackOnly)],
                                                   gatherTimeout: testGatherTimeout)
        configuration.maxConcurrentIntroductions = 3
        let camera = Connector(configuration: configuration)
        let declined = Declines()
        let (introductions, feed) = AsyncStream.makeStream(of: (any IncomingIntroduction).self)
        let served = camera.serve([introductions], access: try .password("pw", parameters: testCost))
        let drain = Task { for await _ in served {} }
        let offer = PeerOffer(identityKey: DeviceIdentity.ephemeral().publicKey.rawRepresentation, candidates: [], strategies: ["direct-lan"])
        for i in 0..<8 { feed.yield(Held(requestID: "held-\(i)", offer: offer, declined: declined)) }
        let deadline = ContinuousClock.now + .seconds(10)
        while declined.ids.withLock({ $0.count }) < 5, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        feed.finish()
        drain.cancel()
        #expect(declined.ids.withLock { $0.sorted() } == (3..<8).map { "held-\($0)" })
    }
}
