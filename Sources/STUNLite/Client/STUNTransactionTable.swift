import NIOCore

/// The pending request/response transactions of one socket or connection; its event loop only.
///
/// Over UDP a request goes out again on RFC 8489 §6.2.1's schedule (``STUNRetransmissionStateMachine``);
/// over TCP or TLS it goes once and waits Ti (§6.2.2). Responses are matched by transaction ID alone
/// and checked by ``STUNResponseCheck``. ``STUNUDPClient`` and TURNLite's client both run on it.
package final class STUNTransactionTable {
    private struct Pending {
        var promise: EventLoopPromise<STUNResponse>
        var bytes: [UInt8]
        var local: TransportAddress
        var send: ([UInt8]) -> Void
        var machine: STUNRetransmissionStateMachine
        var started: NIODeadline
        var timer: Scheduled<Void>?
    }

    private var pending: [STUNTransactionID: Pending] = [:]
    private let eventLoop: any EventLoop

    /// A table whose timers run on `eventLoop`, the loop of the channel it serves.
    package init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Starts transaction `tid`: `send` gets `bytes` now and, unless `reliable`, again on `policy`'s schedule.
    /// `promise` gets the response, or a ``STUNClientError`` (`timeout`, `errorResponse`) — `local` is
    /// the address the response reports it ran on.
    package func start(_ tid: STUNTransactionID, bytes: [UInt8], local: TransportAddress, policy: STUNRetransmissionPolicy,
                       reliable: Bool, promise: EventLoopPromise<STUNResponse>, send: @escaping ([UInt8]) -> Void) {
        let now = NIODeadline.now()
        var machine = STUNRetransmissionStateMachine(policy: policy)
        let action = machine.start(now: now)
        pending[tid] = Pending(promise: promise, bytes: bytes, local: local, send: send, machine: machine,
                               started: now, timer: nil)
        guard reliable else {
            perform(action, tid: tid)
            return
        }
        let timeout = policy.reliableTimeout
        pending[tid]?.timer = eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
            guard let p = self?.pending.removeValue(forKey: tid) else { return }
            p.promise.fail(STUNClientError(.timeout, detail: "no response within \(timeout)"))
        }
        send(bytes)
    }

    /// Drops transaction `tid` without completing its promise (its caller gave up).
    package func forget(_ tid: STUNTransactionID) {
        pending.removeValue(forKey: tid)?.timer?.cancel()
    }

    /// Completes the pending transaction `message` answers, if any (RFC 8489 §6.3); false when the message
    /// is no response to a pending transaction, so the caller may use it otherwise.
    package func complete(_ message: STUNMessage, from source: TransportAddress) -> Bool {
        guard let p = pending[message.transactionID], let verdict = STUNResponseCheck.accept(message) else { return false }
        pending[message.transactionID] = nil
        p.timer?.cancel()
        switch verdict {
        case .success:
            p.promise.succeed(STUNResponse(message: message, source: source, local: p.local,
                                           elapsed: .now() - p.started, requestsSent: p.machine.requestsSent))
        case .failure(let error):
            p.promise.fail(error)
        }
        return true
    }

    /// Fails every pending transaction with `error` (the socket or connection closed).
    package func failAll(_ error: STUNClientError) {
        let all = pending
        pending = [:]
        for p in all.values {
            p.timer?.cancel()
            p.promise.fail(error)
        }
    }

    private func perform(_ action: STUNRetransmissionStateMachine.Action, tid: STUNTransactionID) {
        guard var p = pending[tid] else { return }
        switch action {
        case .send(let deadline):
            p.send(p.bytes)
            p.timer = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
                self?.deadlineReached(tid)
            }
            pending[tid] = p
        case .fail:
            pending[tid] = nil
            p.promise.fail(STUNClientError(.timeout, detail: "no response after \(p.machine.requestsSent) requests"))
        }
    }

    private func deadlineReached(_ tid: STUNTransactionID) {
        guard var p = pending[tid] else { return }
        let action = p.machine.deadlineReached(now: .now())
        pending[tid] = p
        perform(action, tid: tid)
    }
}
