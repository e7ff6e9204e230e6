import NIOCore
import Synchronization

/// The paths of one session: the one sends go on, the standby relay, candidates being tried; each read
/// by its own task. It owns every transport in it and closes them (``closeAll()``), and it holds the
/// session's ``PathMigrationStateMachine`` (nil when the session never moves).
final class SessionPaths: Sendable {
    private struct Entry {
        var transport: any PeerTransport
        var strategy: String
        var reader: Task<Void, Never>?
    }

    private struct State {
        var entries: [SessionPathID: Entry]
        var active = SessionPathID.initial
        var nextID = 1
        var closed = false
        var machine: PathMigrationStateMachine?
        var moves: [PathMove] = []
        /// The highest session counter opened on each path (RFC 9000 §9.3 asks for the newest packet *on the path*:
        /// another path's traffic, arriving sooner, says nothing about this one's order).
        var highest: [SessionPathID: UInt64] = [:]

        /// Appends `move` to the record and returns it.
        mutating func record(_ move: PathMove) -> PathMove {
            moves.append(move)
            return move
        }
    }

    private let state: Mutex<State>
    private let established = ContinuousClock.now
    /// Moves as they happen, for ``PeerConnection/pathMoves``.
    let moveEvents: AsyncStream<PathMove>
    private let moveSink: AsyncStream<PathMove>.Continuation
    /// Moves kept for a consumer that reads late, at most.
    static let moveEventLimit = 64

    init(initial: any PeerTransport, strategy: String, machine: PathMigrationStateMachine?) {
        state = Mutex(State(entries: [.initial: Entry(transport: initial, strategy: strategy)], machine: machine))
        (moveEvents, moveSink) = AsyncStream.makeStream(of: PathMove.self, bufferingPolicy: .bufferingNewest(Self.moveEventLimit))
    }

    /// The strategy id of the active path.
    var activeStrategy: String { state.withLock { $0.entries[$0.active]?.strategy ?? "" } }

    /// Every move so far.
    var moves: [PathMove] { state.withLock { $0.moves } }

    /// Whether the session has migration rules (it moves between paths or follows the peer's address).
    var hasMachine: Bool { state.withLock { $0.machine != nil } }

    /// Whether `path` is the one sends go on.
    func isActive(_ path: SessionPathID) -> Bool { state.withLock { $0.active == path } }

    /// The transport of `path`, while it is in the set.
    func transport(of path: SessionPathID) -> (any PeerTransport)? { state.withLock { $0.entries[path]?.transport } }

    /// Runs `body` on the migration state machine (nil result when the session never moves).
    func withMachine<R: Sendable>(_ body: (inout PathMigrationStateMachine) -> R) -> R? {
        state.withLock { s in
            guard s.machine != nil else { return nil }
            return body(&s.machine!)
        }
    }

    /// Adds a connected candidate path; nil once the session is closed (the transport is then the caller's to close).
    func add(_ transport: any PeerTransport, strategy: String) -> SessionPathID? {
        state.withLock { s in
            guard !s.closed else { return nil }
            let id = SessionPathID(s.nextID)
            s.nextID += 1
            s.entries[id] = Entry(transport: transport, strategy: strategy)
            return id
        }
    }

    /// Starts reading `path`: each frame (or the path's end) goes to `deliver` with the address it came from
    /// when that is not the one the path sends to (a rebindable path only), until `deliver` returns false.
    func startReader(for path: SessionPathID,
                     deliver: @escaping @Sendable (SessionPathID, Result<[UInt8], any Error>, SocketAddress?) async -> Bool) {
        guard let transport = state.withLock({ $0.entries[path]?.transport }) else { return }
        let reader = Task {
            while !Task.isCancelled {
                let result: Result<[UInt8], any Error>
                var newSource: SocketAddress?
                do {
                    if let rebindable = transport as? any RebindablePeerTransport {
                        let (message, source) = try await rebindable.receiveFromAnyAddress()
                        result = .success(message)
                        newSource = source == rebindable.remoteAddress ? nil : source
                    } else {
                        result = .success(try await transport.receive())
                    }
                } catch { result = .failure(error) }
                if Task.isCancelled { return }
                guard await deliver(path, result, newSource) else { return }
            }
        }
        let kept = state.withLock { s -> Bool in
            guard !s.closed, s.entries[path] != nil else { return false }
            s.entries[path]?.reader = reader
            return true
        }
        if !kept { reader.cancel() }
    }

    /// Makes `path` the one sends go on and records the move; nil if it is not in the set or already active.
    func activate(_ path: SessionPathID, reason: PathMoveReason) -> PathMove? {
        let move = state.withLock { s -> PathMove? in
            guard !s.closed, path != s.active, let to = s.entries[path] else { return nil }
            let from = s.entries[s.active]?.strategy ?? ""
            s.active = path
            return s.record(PathMove(from: from, to: to.strategy, route: to.transport.pathDescription, reason: reason,
                                     atMs: (ContinuousClock.now - established).milliseconds))
        }
        if let move { moveSink.yield(move) }
        return move
    }

    /// Makes `path` send to `address`, the peer's new address after its NAT rebound, and records the move (on the
    /// active path a rebinding; on the `standby`, the peer's replacement of it); nil if `path` is not a rebindable
    /// path in the set, or neither.
    func rebind(_ path: SessionPathID, to address: SocketAddress, standby: Bool = false) -> PathMove? {
        let move = state.withLock { s -> PathMove? in
            guard !s.closed, let entry = s.entries[path], let transport = entry.transport as? any RebindablePeerTransport else { return nil }
            transport.rebind(to: address)
            let reason: PathMoveReason
            if path == s.active { reason = .rebinding } else if standby { reason = .standbyReplaced } else { return nil }
            return s.record(PathMove(from: entry.strategy, to: entry.strategy, route: transport.pathDescription, reason: reason,
                                     atMs: (ContinuousClock.now - established).milliseconds))
        }
        if let move { moveSink.yield(move) }
        return move
    }

    /// Records that `path` joined as the standby in place of a dead one; nil if it is not in the set.
    func standbyReplaced(by path: SessionPathID) -> PathMove? {
        let move = state.withLock { s -> PathMove? in
            guard !s.closed, let entry = s.entries[path] else { return nil }
            return s.record(PathMove(from: entry.strategy, to: entry.strategy, route: entry.transport.pathDescription,
                                     reason: .standbyReplaced, atMs: (ContinuousClock.now - established).milliseconds))
        }
        if let move { moveSink.yield(move) }
        return move
    }

    /// Notes that a datagram with session counter `counter` opened on `path`: true if it is the highest there so far.
    func isNewest(_ counter: UInt64, on path: SessionPathID) -> Bool {
        state.withLock { s in
            guard s.highest[path].map({ counter > $0 }) ?? true else { return false }
            s.highest[path] = counter
            return true
        }
    }

    /// Closes `path` and removes it from the set (never the active one). `waiting` false: the close runs on its own
    /// (a dead relay connection's close may wait out a deallocation that never gets an answer).
    func remove(_ path: SessionPathID, waiting: Bool = true) async {
        let entry = state.withLock { s -> Entry? in
            guard path != s.active else { return nil }
            s.highest[path] = nil
            return s.entries.removeValue(forKey: path)
        }
        entry?.reader?.cancel()
        guard let transport = entry?.transport else { return }
        if waiting { await transport.close() } else { Task { await transport.close() } }
    }

    /// Sends on the active path; `counts`: the machine is told (silence after sending means trouble).
    func send(_ message: [UInt8], counts: Bool) async throws {
        let transport = state.withLock { s -> (any PeerTransport)? in
            if counts { s.machine?.sent(now: .now) }
            return s.entries[s.active]?.transport
        }
        guard let transport else { throw TraversalError(code: .closed, detail: "no path") }
        try await transport.send(message)
    }

    /// Sends on `path`.
    func send(_ message: [UInt8], on path: SessionPathID) async throws {
        guard let transport = state.withLock({ $0.entries[path]?.transport }) else {
            throw TraversalError(code: .closed, detail: "\(path) is not in the session's set")
        }
        try await transport.send(message)
    }

    /// Sends on `path`'s socket to `address` (a new address of the peer, being checked).
    func send(_ message: [UInt8], on path: SessionPathID, to address: SocketAddress) async throws {
        guard let transport = state.withLock({ $0.entries[path]?.transport as? any RebindablePeerTransport }) else {
            throw TraversalError(code: .closed, detail: "\(path) cannot send to another address")
        }
        try await transport.send(message, to: address)
    }

    /// An authenticated datagram arrived on `path`.
    func heard(on path: SessionPathID) {
        state.withLock { $0.machine?.heard(on: path, now: .now) }
    }

    /// Stops every reader (the session is shutting down).
    func stopReading() {
        let readers = state.withLock { s -> [Task<Void, Never>] in
            s.closed = true
            return s.entries.values.compactMap(\.reader)
        }
        for r in readers { r.cancel() }
        moveSink.finish()
    }

    /// Stops reading and closes every path.
    func closeAll() async {
        stopReading()
        // The entries stay (closed), so the session still names the path it ended on.
        let all = state.withLock { $0.entries.values.map(\.transport) }
        for t in all { await t.close() }
    }
}

extension SessionMessageType {
    /// Whether sending it should draw traffic back from the peer soon (so silence after it means trouble).
    var expectsTraffic: Bool {
        switch self {
        case .application, .sctp, .keepalive: true
        default: false
        }
    }
}
