import Crypto
import Foundation
import Strategies
import Synchronization
import Testing
import Traversal

/// A camera gets ready for a browser (its answerer's `prepare`) while the browser proves access, and releases what it
/// prepared when access is refused: the answer does not wait for sockets after the proof, and a refused browser holds
/// nothing.
@Suite(.timeLimit(.minutes(1)))
struct BrowserPreparationTests {
    /// What the answerer was asked, in order.
    final class Recorder: BrowserViewerAnswering {
        let calls = Mutex<[String]>([])
        func prepare(requestID: String) async { calls.withLock { $0.append("prepare \(requestID)") } }
        func cancel(requestID: String) async { calls.withLock { $0.append("cancel \(requestID)") } }
        func answer(_ offer: BrowserOffer) async throws -> String {
            calls.withLock { $0.append("answer \(offer.requestID)") }
            return "v=0\r\n"
        }
    }

    /// How an introduction ended.
    final class Outcome: Sendable {
        let value = Mutex<String?>(nil)
    }

    /// A browser's introduction whose proof carries `password`; it records whether it was accepted or refused.
    struct Browser: IncomingIntroduction {
        let requestID: String
        let offer = PeerOffer(identityKey: Data(count: 32), candidates: [], strategies: [], sessionDescription: "v=0\r\n")
        var relay: RelayGrant? { nil }
        let password: String
        let outcome = Outcome()
        func accept(answer: PeerOffer) async throws { outcome.value.withLock { $0 = "accepted" } }
        func decline() async { outcome.value.withLock { $0 = "declined" } }
        func refuse(_ reason: AccessRefusal) async { outcome.value.withLock { $0 = "refused" } }
        func requestAccess() async throws -> ViewerAccessClaim? {
            ViewerAccessClaim(viewerKey: Curve25519.Signing.PrivateKey().publicKey, credential: .password(password))
        }
    }

    @Test func socketsArePreparedBeforeTheProofAndReleasedWhenItIsRefused() async throws {
        let recorder = Recorder()
        var configuration = ConnectorConfiguration(identity: .generate(), strategies: [DirectLAN(scope: .loopbackOnly)],
                                                   gatherTimeout: testGatherTimeout)
        configuration.browserViewers = recorder
        let camera = Connector(configuration: configuration)
        let (introductions, feed) = AsyncStream.makeStream(of: (any IncomingIntroduction).self)
        let served = camera.serve([introductions], access: try .password("pw", parameters: testCost))
        let drain = Task { for await _ in served {} }
        defer { drain.cancel() }
        let wrong = Browser(requestID: "wrong", password: "guess")
        let right = Browser(requestID: "right", password: "pw")
        feed.yield(wrong)
        feed.yield(right)
        // Bounded: 100 × 20 ms for both to end.
        for _ in 0..<100 where wrong.outcome.value.withLock({ $0 }) == nil || right.outcome.value.withLock({ $0 }) == nil {
            try await Task.sleep(for: .milliseconds(20))
        }
        feed.finish()
        #expect(wrong.outcome.value.withLock { $0 } == "refused" && right.outcome.value.withLock { $0 } == "accepted")
        let calls = recorder.calls.withLock { $0 }
        #expect(calls.filter { $0.hasSuffix(" wrong") } == ["prepare wrong", "cancel wrong"], "\(calls)")
        #expect(calls.filter { $0.hasSuffix(" right") } == ["prepare right", "answer right"], "\(calls)")
    }
}
