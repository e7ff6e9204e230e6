import STUNLite
import SourceLimits
import Synchronization

/// What the shards of one relay share: every limit keyed by user or by the whole server, so spreading a
/// user's allocations (or a flood) over several cores sidesteps none of them (RFC 8656 §21.1.4).
///
/// Each shard (``TURNServer/Configuration/shards``) runs its own ``TURNServerStateMachine`` on its own
/// thread. Limits keyed by the client's source address stay in the shard, because the kernel steers every
/// packet and connection from one IPv4 address or IPv6 /64 to the same shard (``TURNShardSteering``); the
/// rest lives here, behind one lock:
///
/// | kept here | limit |
/// |---|---|
/// | allocations per user, allocations in all | ``TURNServerConfiguration/maxAllocationsPerUser``, ``TURNServerConfiguration/maxAllocations`` |
/// | each user's byte bucket and last cut | ``TURNServerConfiguration/bandwidthPerUser``, ``TURNServerConfiguration/bandwidthCutHoldSeconds`` |
/// | relayed addresses of live allocations | the only peers allowed on the relay's own host |
/// | client TCP/TLS connections, per source and in all | ``TURNServer/Configuration/maxStreamConnectionsPerSource``, ``TURNServer/Configuration/maxStreamConnections`` |
///
/// The per-packet cost is one uncontended lock only where a packet needs it: a user with a bandwidth
/// quota, or a peer on the relay's own host.
public final class TURNSharedLedger: Sendable {
    private struct State {
        var perUser: [String: Int] = [:]
        var total = 0
        var bandwidth: [String: TURNByteBucket] = [:]
        var lastBandwidthCut: [String: Double] = [:]
        var relayed: Set<TransportAddress> = []
        var streams: ConnectionSlots
    }

    private let state: Mutex<State>

    /// A ledger admitting `maxStreamConnections` client connections, `maxStreamConnectionsPerSource` from one source.
    public init(maxStreamConnections: Int = 1024,
                maxStreamConnectionsPerSource: Int = TURNServer.Configuration.defaultMaxStreamConnectionsPerSource) {
        state = Mutex(State(streams: ConnectionSlots(maxPerSource: maxStreamConnectionsPerSource, maxTotal: maxStreamConnections)))
    }

    /// Allocations held by every shard.
    public var allocationCount: Int { state.withLock { $0.total } }

    /// Client TCP/TLS connections held by every shard.
    public var streamCount: Int { state.withLock { $0.streams.total } }

    /// Takes an allocation for `user`, or says which limit refuses it: the user's quota, a bandwidth cut
    /// within the hold time, or the server's capacity. The first allocation of a user starts its byte bucket.
    func admitAllocation(user: String, configuration: TURNServerConfiguration, now: Double) -> TURNRefusal? {
        state.withLock { s in
            guard s.perUser[user, default: 0] < configuration.maxAllocationsPerUser else { return .allocationQuota }
            if let cut = s.lastBandwidthCut[user], now - cut < configuration.bandwidthCutHoldSeconds { return .bandwidth }
            guard s.total < configuration.maxAllocations else { return .capacity }
            s.total += 1
            s.perUser[user, default: 0] += 1
            if s.perUser[user] == 1, let rate = configuration.bandwidthPerUser {
                s.bandwidth[user] = TURNByteBucket(bytesPerSecond: rate, now: now)
            }
            return nil
        }
    }

    /// Gives back an allocation of `user` (and its relayed address); the user's bucket goes with its last one.
    func releaseAllocation(user: String, relayed: TransportAddress?) {
        state.withLock { s in
            s.total -= 1
            if let relayed { s.relayed.remove(relayed) }
            let left = s.perUser[user, default: 1] - 1
            s.perUser[user] = left > 0 ? left : nil
            if left <= 0 {
                s.bandwidth[user] = nil
                s.lastBandwidthCut[user] = nil
            }
        }
    }

    /// Takes `bytes` from `user`'s bucket; false (and the cut remembered) when it holds too few.
    func takeBandwidth(user: String, bytes: Int, now: Double) -> Bool {
        state.withLock { s in
            guard s.bandwidth[user]?.take(bytes, now: now) == true else {
                s.lastBandwidthCut[user] = now
                return false
            }
            return true
        }
    }

    /// Records a live allocation's relayed address.
    func insertRelayed(_ address: TransportAddress) { _ = state.withLock { $0.relayed.insert(address) } }

    /// Whether `address` is a live allocation's relayed address, on any shard.
    func isRelayed(_ address: TransportAddress) -> Bool { state.withLock { $0.relayed.contains(address) } }

    /// Takes a client connection slot for `source`: false when the source or the server is full.
    func admitStream(from source: SourceAddressKey) -> Bool { state.withLock { $0.streams.admit(source) == nil } }

    /// Gives back `source`'s connection slot.
    func releaseStream(from source: SourceAddressKey) { state.withLock { $0.streams.release(source) } }
}
