internal import CUsrsctp

/// The channel engine's loss-recovery counters, summed over every association in this process (SCTP's
/// retransmission timer, RFC 9260 §6.3.3, and fast retransmit, §7.2.4): what a transfer over a lossy path
/// cost. Take ``current`` before and after and subtract for one transfer.
public struct ChannelEngineCounters: Sendable, Hashable, Codable {
    /// Retransmission timer (T3-rtx) expiries: each one collapses the congestion window to one packet.
    public var retransmissionTimeouts: Int
    /// DATA chunks sent again by fast retransmit (after three miss indications).
    public var fastRetransmissions: Int
    /// DATA chunks sent again for any reason.
    public var retransmittedChunks: Int
    /// DATA chunks received more than once (a spurious retransmission by the peer).
    public var duplicatesReceived: Int

    /// Creates counters from their values.
    public init(retransmissionTimeouts: Int = 0, fastRetransmissions: Int = 0, retransmittedChunks: Int = 0,
                duplicatesReceived: Int = 0) {
        self.retransmissionTimeouts = retransmissionTimeouts
        self.fastRetransmissions = fastRetransmissions
        self.retransmittedChunks = retransmittedChunks
        self.duplicatesReceived = duplicatesReceived
    }

    /// The process's counters now (all zero before the engine first starts).
    public static var current: ChannelEngineCounters {
        var t3: UInt32 = 0, fast: UInt32 = 0, retransmitted: UInt32 = 0, duplicates: UInt32 = 0
        trav_sctp_counters(&t3, &fast, &retransmitted, &duplicates)
        return ChannelEngineCounters(retransmissionTimeouts: Int(t3), fastRetransmissions: Int(fast),
                                     retransmittedChunks: Int(retransmitted), duplicatesReceived: Int(duplicates))
    }

    /// What happened between `earlier` and `self` (the counters are 32-bit and wrap).
    public func since(_ earlier: ChannelEngineCounters) -> ChannelEngineCounters {
        func delta(_ a: Int, _ b: Int) -> Int { Int(UInt32(truncatingIfNeeded: a) &- UInt32(truncatingIfNeeded: b)) }
        return ChannelEngineCounters(retransmissionTimeouts: delta(retransmissionTimeouts, earlier.retransmissionTimeouts),
                                     fastRetransmissions: delta(fastRetransmissions, earlier.fastRetransmissions),
                                     retransmittedChunks: delta(retransmittedChunks, earlier.retransmittedChunks),
                                     duplicatesReceived: delta(duplicatesReceived, earlier.duplicatesReceived))
    }
}
