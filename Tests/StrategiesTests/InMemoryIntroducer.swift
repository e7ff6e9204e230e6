import Foundation
import Synchronization
import Traversal

/// An in-process stand-in for the cloud's introduction step, so the Connector and strategies are
/// tested over real sockets without the TLS cloud. It can lie about the camera's key, as a
/// compromised cloud would.
final class InMemoryIntroducer: ViewerSignalling, Sendable {
    let introductions: AsyncStream<any IncomingIntroduction>
    private let sink: AsyncStream<any IncomingIntroduction>.Continuation
    private let counter = Mutex(0)
    /// When set, the answer's identity key is replaced (a malicious cloud).
    let forgedKey: Data?

    init(forgedKey: Data? = nil) {
        (introductions, sink) = AsyncStream.makeStream(of: (any IncomingIntroduction).self)
        self.forgedKey = forgedKey
    }

    func finish() { sink.finish() }

    func introduce(to device: DeviceID, offer: PeerOffer) async throws -> Introduction {
        let id = counter.withLock { n -> String in n += 1; return "req-\(n)" }
        let answer: PeerOffer = try await withCheckedThrowingContinuation { c in
            sink.yield(Intro(requestID: id, offer: offer, continuation: OnceContinuation(c)))
        }
        var a = answer
        if let forgedKey { a.identityKey = forgedKey }
        return Introduction(requestID: id, answer: a)
    }

    struct Intro: IncomingIntroduction {
        let requestID: String
        let offer: PeerOffer
        var relay: RelayGrant? { nil }
        let continuation: OnceContinuation
        func accept(answer: PeerOffer) async throws { continuation.resume(.success(answer)) }
        func decline() async { continuation.resume(.failure(TraversalError(code: .unavailable, detail: "declined"))) }
    }

    final class OnceContinuation: Sendable {
        private let c: Mutex<CheckedContinuation<PeerOffer, any Error>?>
        init(_ c: CheckedContinuation<PeerOffer, any Error>) { self.c = Mutex(c) }
        func resume(_ r: Result<PeerOffer, any Error>) {
            let taken = c.withLock { v -> CheckedContinuation<PeerOffer, any Error>? in let t = v; v = nil; return t }
            taken?.resume(with: r)
        }
    }
}
