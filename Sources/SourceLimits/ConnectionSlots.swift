import Synchronization

/// Counts open connections per source and in all, refusing one more past either limit.
///
/// A server admits each accepted connection here before giving it any buffer or timer, and
/// releases it on close. With a per-source limit below the total, one host (or one IPv6 /64, see
/// ``SourceAddressKey``) cannot take every slot and lock everybody else out. Memory is bounded by
/// ``maxTotal``: only sources with open connections are tracked.
public struct ConnectionSlots: Sendable {
    /// Why a connection was not admitted.
    public enum Refusal: Sendable, Hashable {
        /// Its source already holds ``ConnectionSlots/maxPerSource`` connections.
        case sourceFull
        /// ``ConnectionSlots/maxTotal`` connections are open.
        case full
    }

    /// Connections one source may hold at once.
    public let maxPerSource: Int
    /// Connections open at once, at most.
    public let maxTotal: Int
    /// Connections open now.
    public private(set) var total = 0
    private var perSource: [SourceAddressKey: Int] = [:]

    /// Slots for `maxTotal` connections, at most `maxPerSource` of them from one source.
    public init(maxPerSource: Int, maxTotal: Int) {
        precondition(maxPerSource >= 1 && maxTotal >= 1, "invalid connection limits")
        self.maxPerSource = maxPerSource
        self.maxTotal = maxTotal
    }

    /// Connections `source` holds now.
    public func count(for source: SourceAddressKey) -> Int { perSource[source, default: 0] }

    /// Takes a slot for a connection from `source`; `nil` when admitted, else why not.
    public mutating func admit(_ source: SourceAddressKey) -> Refusal? {
        guard total < maxTotal else { return .full }
        let held = perSource[source, default: 0]
        guard held < maxPerSource else { return .sourceFull }
        perSource[source] = held + 1
        total += 1
        return nil
    }

    /// Gives back the slot of a closed connection from `source` (admitted before).
    public mutating func release(_ source: SourceAddressKey) {
        guard let held = perSource[source] else { return }
        perSource[source] = held > 1 ? held - 1 : nil
        total -= 1
    }
}

/// ``ConnectionSlots`` shared across threads: a server's accept path and its close callbacks on any event loop.
public final class SharedConnectionSlots: Sendable {
    private let slots: Mutex<ConnectionSlots>

    /// Slots for `maxTotal` connections, at most `maxPerSource` of them from one source.
    public init(maxPerSource: Int, maxTotal: Int) {
        slots = Mutex(ConnectionSlots(maxPerSource: maxPerSource, maxTotal: maxTotal))
    }

    /// Takes a slot for a connection from `source`; `nil` when admitted, else why not.
    public func admit(_ source: SourceAddressKey) -> ConnectionSlots.Refusal? {
        slots.withLock { $0.admit(source) }
    }

    /// Gives back the slot of a closed connection from `source`.
    public func release(_ source: SourceAddressKey) {
        slots.withLock { $0.release(source) }
    }

    /// Connections open now.
    public var total: Int { slots.withLock { $0.total } }
}
