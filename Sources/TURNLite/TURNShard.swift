import DatagramIO
import Foundation
import Logging
import NIOCore
import SourceLimits
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One shard of a relay: a thread of its own that owns the shard's ``TURNServerCore`` and runs its UDP
/// data plane — the shard's UDP listeners and every relay socket of its allocations in one `epoll` set,
/// read with `recvmmsg`, answered with `sendmmsg` once per round — and the timer sweep.
///
/// ```
///  loop: epoll_wait (until the next sweep) ─► per ready socket: recvmmsg ─► core (fast path or state machine)
///        ─► inbox tasks (stream frames, server calls) ─► sweep when due ─► flush: sendmmsg, closes
/// ```
///
/// Everything else reaches the core through the inbox (``run(_:)``): TCP/TLS connections live on NIO
/// event loops and hand their frames over, the server's queries and shutdown too. A task posted before
/// the thread ends always runs, with the core closed if it came late.
final class TURNShard: Sendable {
    /// The event loop of the shard's TCP/TLS listeners and their connections.
    let streamLoop: any EventLoop
    /// Whether the shard refuses new connections (shut down).
    private let closed = Atomic<Bool>(false)
    private let inbox = Mutex<Inbox>(Inbox())
    private let wake: (read: Int32, write: Int32)
    private let ledger: TURNSharedLedger
    /// Only touched on the shard's thread (and by tasks it runs).
    private nonisolated(unsafe) let core: TURNServerCore
    private nonisolated(unsafe) let poll: EventPoll
    private let sweepMilliseconds: Int

    private struct Inbox: ~Copyable {
        var tasks: [@Sendable (TURNServerCore) -> Void] = []
        /// A byte was written to the wake pipe and not read yet.
        var wakePending = false
        var stopping = false
        /// The thread has ended: tasks now run at once on the caller's thread.
        var ended = false
        var ending: [CheckedContinuation<Void, Never>] = []
    }

    /// Ready sockets one wait reports at most.
    static let eventsPerWait = 256
    /// The epoll token of the wake pipe (socket tokens are their descriptors, never negative).
    private static let wakeToken = UInt64.max

    /// Makes the shard's core and starts its thread.
    init(index: Int, configuration: TURNServer.Configuration, server: TURNServerConfiguration, ledger: TURNSharedLedger,
         streamLoop: any EventLoop, logger: Logger) throws {
        let poll: EventPoll
        do { poll = try EventPoll(capacity: Self.eventsPerWait) } catch { throw TURNError(.socket, detail: "\(error)") }
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw TURNError(.socket, detail: "pipe: \(String(cString: strerror(errno)))") }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        do { try poll.watch(fds[0], token: Self.wakeToken) } catch {
            close(fds[0])
            close(fds[1])
            throw TURNError(.socket, detail: "\(error)")
        }
        self.poll = poll
        self.wake = (fds[0], fds[1])
        self.ledger = ledger
        self.streamLoop = streamLoop
        self.sweepMilliseconds = max(1, Int(configuration.sweepInterval.nanoseconds / 1_000_000))
        self.core = TURNServerCore(configuration: configuration, server: server, ledger: ledger, poll: poll, logger: logger)
        let thread = Thread { [self] in self.serve() }
        thread.name = "turn-shard-\(index)"
        thread.start()
    }

    deinit {
        close(wake.read)
        close(wake.write)
    }

    /// Runs `body` with the core on the shard's thread, after what was posted before; at once (with the
    /// core closed, one caller at a time) once the thread has ended.
    func run(_ body: @escaping @Sendable (TURNServerCore) -> Void) {
        let core = self.core
        let post: Bool = inbox.withLock { inbox in
            if inbox.ended {
                // Under the lock: callers on several threads still take turns with the core.
                body(core)
                return false
            }
            inbox.tasks.append(body)
            defer { inbox.wakePending = true }
            return !inbox.wakePending
        }
        if post { wakeUp() }
    }

    /// `body`'s result, computed on the shard's thread.
    func submit<T: Sendable>(_ body: @escaping @Sendable (TURNServerCore) -> T) async -> T {
        await withCheckedContinuation { continuation in
            run { continuation.resume(returning: body($0)) }
        }
    }

    /// Takes a stream slot for `source`: false when the shard is shut down or the server or source is full.
    func admitStream(from source: SourceAddressKey) -> Bool {
        guard !closed.load(ordering: .acquiring) else { return false }
        return ledger.admitStream(from: source)
    }

    /// Closes the shard's sockets and returns its client connections for the caller to close; new
    /// connections are refused from now on.
    func shutdown() async -> [any Channel] {
        closed.store(true, ordering: .releasing)
        return await submit { $0.shutdown() }
    }

    /// Ends the thread (after ``shutdown()``): returns once it has.
    func stop() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done: Bool = inbox.withLock { inbox in
                if inbox.ended { return true }
                inbox.stopping = true
                inbox.ending.append(continuation)
                return false
            }
            if done { continuation.resume() } else { wakeUp() }
        }
    }

    private func wakeUp() {
        var byte: UInt8 = 1
        _ = write(wake.write, &byte, 1)
    }

    /// The thread: rounds of wait, read, tasks, sweep and flush until ``stop()``.
    private func serve() {
        var nextSweep = TURNServerCore.now() + Double(sweepMilliseconds) / 1000
        var stopping = false
        while !stopping {
            let untilSweep = Int32(clamping: max(0, Int((nextSweep - TURNServerCore.now()) * 1000)))
            let ready = poll.wait(milliseconds: untilSweep)
            core.beginRound()
            for i in 0..<ready {
                let token = poll.token(i)
                if token == Self.wakeToken {
                    stopping = runTasks()
                } else {
                    core.readable(Int32(truncatingIfNeeded: token))
                }
            }
            if core.now >= nextSweep {
                core.sweep()
                nextSweep = core.now + Double(sweepMilliseconds) / 1000
            }
            core.flush()
        }
        _ = core.shutdown()
        let (tasks, ending) = inbox.withLock { inbox in
            inbox.ended = true
            defer { inbox.tasks = []; inbox.ending = [] }
            return (inbox.tasks, inbox.ending)
        }
        for task in tasks { task(core) }
        for continuation in ending { continuation.resume() }
    }

    /// Runs what the inbox holds; true when the thread should end.
    private func runTasks() -> Bool {
        var drain = [UInt8](repeating: 0, count: 64)
        while read(wake.read, &drain, drain.count) > 0 {}
        let (tasks, stopping) = inbox.withLock { inbox in
            inbox.wakePending = false
            defer { inbox.tasks.removeAll(keepingCapacity: true) }
            return (inbox.tasks, inbox.stopping)
        }
        for task in tasks { task(core) }
        return stopping
    }
}
