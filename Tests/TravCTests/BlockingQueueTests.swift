import CTrav
import Foundation
import Testing
@testable import TravC

/// The pieces the C API's waiting calls stand on: a bounded queue a C thread waits on with a timeout,
/// and the per-thread last error.
struct BlockingQueueTests {
    @Test func itemsComeOutInOrderAndAPollOfAnEmptyQueueTimesOut() {
        let queue = BlockingQueue<Int>(limit: 4)
        queue.push(1)
        queue.push(2)
        guard case .item(1) = queue.pop(timeoutMs: 0), case .item(2) = queue.pop(timeoutMs: 0) else {
            Issue.record("items out of order")
            return
        }
        guard case .timedOut = queue.pop(timeoutMs: 0) else {
            Issue.record("an empty queue gave something")
            return
        }
    }

    @Test func beyondItsLimitTheOldestGoFirst() {
        let queue = BlockingQueue<Int>(limit: 3)
        for i in 1...5 { queue.push(i) }
        var out: [Int] = []
        while case .item(let i) = queue.pop(timeoutMs: 0) { out.append(i) }
        #expect(out == [3, 4, 5])
    }

    @Test func aWaiterIsWokenByAPushFromAnotherThread() {
        let queue = BlockingQueue<Int>(limit: 4)
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(50)) { queue.push(7) }
        guard case .item(7) = queue.pop(timeoutMs: 10_000) else {
            Issue.record("the pushed item did not arrive")
            return
        }
    }

    @Test func closingWakesEveryWaiterOnceTheQueueIsEmpty() {
        let queue = BlockingQueue<Int>(limit: 4)
        queue.push(1)
        queue.close()
        queue.push(2)   // ignored once closed
        guard case .item(1) = queue.pop(timeoutMs: 0) else {
            Issue.record("a queued item was lost at close")
            return
        }
        for _ in 0..<3 {
            guard case .closed = queue.pop(timeoutMs: -1) else {
                Issue.record("a closed queue did not say so")
                return
            }
        }
    }

    @Test func anItemPutBackComesOutFirst() {
        let queue = BlockingQueue<Int>(limit: 4)
        queue.push(2)
        queue.pushFront(1)
        #expect(queue.take(timeoutMs: 0, what: "number", ended: "closed") { Int32($0) } == 1)
        #expect(queue.take(timeoutMs: 0, what: "number", ended: "closed") { Int32($0) } == 2)
        #expect(queue.take(timeoutMs: 0, what: "number", ended: "closed") { Int32($0) } == TRAV_ERR_TIMEOUT.rawValue)
        #expect(String(cString: travLastError()) == "no number within 0 ms")
    }

    @Test func theLastErrorBelongsToItsThread() {
        _ = LastError.set(TRAV_ERR_CLOUD, "here")
        let other = DispatchSemaphore(value: 0)
        let seen = ResultBox<String>()
        Thread {
            seen.value.withLock { $0 = .success(String(cString: travLastError())) }
            other.signal()
        }.start()
        other.wait()
        #expect((try? seen.value.withLock { $0 }?.get()) == "")
        #expect(String(cString: travLastError()) == "here")
        #expect(String(cString: trav_status_name(TRAV_ERR_CLOUD.rawValue)) == "cloud")
    }

    @Test func aBlockingCallPastItsTimeoutIsCancelledAndReportedAsATimeout() {
        let result = blocking(timeoutMs: 50) { try await Task.sleep(for: .seconds(30)) }
        guard case .failure(let error) = result else {
            Issue.record("a 30 s sleep finished within 50 ms")
            return
        }
        #expect(LastError.status(of: error) == TRAV_ERR_TIMEOUT)
    }
}
