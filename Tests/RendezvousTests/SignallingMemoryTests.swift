#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOEmbedded
import Synchronization
import Testing
@testable import Rendezvous
@testable import Traversal

/// What an idle signalling connection holds: bounded socket reads, record-sized TLS buffers paid per page written,
/// and no task while no message waits (``SignallingInbox``).
@Suite(.timeLimit(.minutes(1)))
struct SignallingMemoryTests {
    /// Pages of `buffer`'s whole storage resident in memory now (`mincore`).
    func residentPages(_ buffer: ByteBuffer) -> Int {
        buffer.withVeryUnsafeBytes { storage in
            let page = SignallingMemory.pageSize
            let base = UInt(bitPattern: storage.baseAddress!)
            let first = base / UInt(page) * UInt(page)
            let length = Int(base - first) + storage.count
            var vector = [UInt8](repeating: 0, count: (length + page - 1) / page)
            let result = mincore(UnsafeMutableRawPointer(bitPattern: first)!, length, &vector)
            precondition(result == 0, "mincore failed")
            return vector.filter { $0 & 1 != 0 }.count
        }
    }

    @Test func aLargeBufferCostsOnlyThePagesWritten() {
        var buffer = SignallingMemory.lazyPagesAllocator.buffer(capacity: 32 * 1024)
        #expect(buffer.capacity >= 32 * 1024)
        #expect(residentPages(buffer) == 0, "nothing written yet")
        buffer.writeBytes(Array(repeating: 0xA5, count: 200))
        #expect(residentPages(buffer) == 1, "a small message touches the first page only")
        #expect(buffer.readBytes(length: 200) == Array(repeating: 0xA5, count: 200))
    }

    @Test func aLargeBufferGrowsWithItsContents() {
        var buffer = SignallingMemory.lazyPagesAllocator.buffer(capacity: 16 * 1024)
        let bytes = (0..<40_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        buffer.writeBytes(bytes)
        #expect(buffer.capacity >= 40_000)
        #expect(buffer.readBytes(length: bytes.count) == bytes)
    }

    @Test func signallingConnectionsReadTheSocketInBoundedBuffers() async throws {
        try await withCloud { cloud, endpoint in
            try await withCamera(DeviceIdentity.generate(), endpoint) { _ in
                let channels = await cloud.rendezvous.hub.connectionChannels
                #expect(channels.count == 1)
                for channel in channels {
                    let reads = try await channel.getOption(.recvAllocator).get()
                    #expect((reads as? FixedSizeRecvByteBufferAllocator)?.capacity == SignallingMemory.receiveBufferBytes)
                }
            }
        }
    }
}

/// A count shared with a drain starter.
final class Tally: Sendable {
    private let value = Atomic<Int>(0)
    /// Counts one.
    func add() { value.add(1, ordering: .relaxed) }
    /// The count so far.
    var count: Int { value.load(ordering: .relaxed) }
}

/// Counts the `read()`s that reach it from the handlers after it.
final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = NIOAny
    var reads = 0

    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
}

/// ``SignallingInbox``: events in order, one drain at a time, reads held while full.
@Suite struct SignallingInboxTests {
    /// Pops every event waiting, as a drain does.
    func drainAll(_ inbox: SignallingInbox) -> [SignallingInbox.Event] {
        var events: [SignallingInbox.Event] = []
        while let (event, _) = inbox.next(storing: nil) { events.append(event) }
        return events
    }

    @Test func eventsBeforeServingWaitAndFollowOpened() {
        let inbox = SignallingInbox(channel: EmbeddedChannel())
        let drains = Tally()
        inbox.push(.message(.ping))
        inbox.push(.message(.pong))
        #expect(drains.count == 0, "not served yet: nothing drains")
        inbox.start { _ in drains.add() }
        #expect(drains.count == 1)
        #expect(drainAll(inbox) == [.opened, .message(.ping), .message(.pong)])
    }

    @Test func oneDrainAtATimeAndANewOneOnlyAfterTheQueueEmptied() {
        let inbox = SignallingInbox(channel: EmbeddedChannel())
        let drains = Tally()
        inbox.start { _ in drains.add() }
        inbox.push(.message(.ping))
        #expect(drains.count == 1, "the running drain takes it")
        #expect(drainAll(inbox) == [.opened, .message(.ping)])
        inbox.push(.closed)
        #expect(drains.count == 2, "idle again: the next event starts a drain")
        #expect(drainAll(inbox) == [.closed])
    }

    @Test func whatADrainLearnedReachesTheNext() {
        let inbox = SignallingInbox(channel: EmbeddedChannel())
        inbox.start { _ in }
        var (_, connection) = inbox.next(storing: nil)!
        #expect(!connection.admitted)
        connection.admitted = true
        connection.state = .viewer
        #expect(inbox.next(storing: connection) == nil)
        inbox.push(.message(.ping))
        let (_, later) = inbox.next(storing: nil)!
        #expect(later.admitted)
        #expect(later.state.isAuthenticated, "still the viewer the first drain made it")
    }

    @Test func readsWaitWhileTheInboxIsFullAndResumeAsItDrains() throws {
        let channel = EmbeddedChannel()
        let inbox = SignallingInbox(channel: channel)
        let counter = ReadCounter()
        try channel.pipeline.syncOperations.addHandlers(counter, SignallingInboxHandler(inbox: inbox))
        for _ in 0..<SignallingInbox.maxQueuedEvents { try channel.writeInbound(CloudMessage.ping) }
        channel.read()
        #expect(counter.reads == 0, "full: the read waits")
        inbox.start { _ in }
        _ = inbox.next(storing: nil)  // .opened: still full
        #expect(counter.reads == 0)
        _ = inbox.next(storing: nil)
        #expect(counter.reads == 1, "below the limit: the held read goes on")
        channel.read()
        #expect(counter.reads == 2)
        _ = try channel.finish()
    }

    @Test func aFrameThatDoesNotDecodeAndTheCloseReachTheInbox() throws {
        let channel = EmbeddedChannel()
        let inbox = SignallingInbox(channel: channel)
        try channel.pipeline.syncOperations.addHandler(SignallingInboxHandler(inbox: inbox))
        let error = CloudProtocolError(code: .malformed, detail: "test")
        channel.pipeline.fireErrorCaught(error)
        _ = try channel.finish()
        inbox.start { _ in }
        #expect(drainAll(inbox) == [.opened, .badFrame(error), .closed])
    }

    @Test func aStoppingServerWaitsForEveryServedConnectionToClose() async {
        let connections = SignallingConnections()
        connections.opened()
        connections.opened()
        connections.stop()
        #expect(connections.isStopping)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await connections.allClosed() }
            connections.closed()
            connections.closed()
            await group.waitForAll()
        }
    }
}
