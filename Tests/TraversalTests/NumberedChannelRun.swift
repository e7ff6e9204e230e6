import Synchronization
import Testing
@testable import Traversal

/// Numbered messages on a reliable channel from the viewer to the camera, 5 ms apart, while a test moves the
/// session's path: ``finish()`` stops sending and returns what arrived, for the test to check that every
/// message came once and in order.
final class NumberedChannelRun: Sendable {
    /// What the reading and the sending task share with the test.
    private final class Counts: Sendable {
        let received = Mutex<[Int]>([])
        let sent = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
    }

    private let counts = Counts()
    private let reader: Task<Void, any Error>
    private let sender: Task<Void, any Error>

    /// Opens the channel and starts sending.
    init(from viewer: PeerConnection, to camera: PeerConnection) async throws {
        let incoming = Task { () -> PeerChannel? in
            for await c in camera.incomingChannels { return c }
            return nil
        }
        let sending = try await viewer.openChannel(label: "numbers")
        let receiving = try #require(await incoming.value)
        let counts = self.counts
        reader = Task {
            for try await m in receiving.messages {
                counts.received.withLock { $0.append(Int(String(decoding: m, as: UTF8.self)) ?? -1) }
            }
        }
        sender = Task {
            // Bounded: at most 20 000 messages, 5 ms apart (≈ 100 s), stopped far earlier by the test.
            for i in 0..<20_000 where !counts.stop.load(ordering: .relaxed) {
                try await sending.send(Array("\(i)".utf8))
                counts.sent.store(i + 1, ordering: .relaxed)
                try await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    /// Messages received so far.
    var receivedCount: Int { counts.received.withLock { $0.count } }

    /// Stops sending, waits (at most 10 s) until every message sent has arrived, and returns the numbers
    /// received in their order and how many were sent.
    func finish() async throws -> (received: [Int], sent: Int) {
        counts.stop.store(true, ordering: .relaxed)
        _ = try? await sender.value
        let total = counts.sent.load(ordering: .relaxed)
        let deadline = ContinuousClock.now + .seconds(10)
        while receivedCount < total, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        reader.cancel()
        return (counts.received.withLock { $0 }, total)
    }
}
