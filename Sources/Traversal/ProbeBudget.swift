import NIOCore
import SourceLimits
import Synchronization

/// What a camera may send toward the addresses a viewer's offer lists before anyone there has
/// answered: a bounded reflection, never an amplifier.
///
/// An offer names addresses nobody has proven to own; probing them all at full rate let one
/// introduction aim thousands of packets at a third party. Per introduction:
///
/// ```
///  offer of N bytes ──► budget: amplification × N bytes, maxProbes probes, maxAddresses addresses
///  probe to an address ── the requester's own address, as the cloud saw it (vouched)? ──► free
///                      └─ otherwise: charged; refused once the budget is spent
/// ```
///
/// Probing stops at the first answer, so what follows (the handshake) is one reply per message,
/// never charged. The birthday method (thousands of probes) needs a vouched address.
///
/// Sans-I/O: the strategies ask before each send (``ProbeAllowance`` shares one budget between them).
public struct ProbeBudget: Sendable, Hashable {
    /// The bounds of one introduction's unverified traffic.
    public struct Limits: Sendable, Hashable {
        /// Bytes sent toward unverified addresses per byte of the offer that listed them.
        public var amplification: Int
        /// Probes (datagrams or connection attempts) toward unverified addresses, at most.
        public var maxProbes: Int
        /// Distinct unverified addresses probed, at most.
        public var maxAddresses: Int

        /// Limits; by default ``ProbeBudget/defaultAmplification``, ``ProbeBudget/defaultMaxProbes``
        /// and ``ProbeBudget/defaultMaxAddresses``.
        public init(amplification: Int = ProbeBudget.defaultAmplification, maxProbes: Int = ProbeBudget.defaultMaxProbes,
                    maxAddresses: Int = ProbeBudget.defaultMaxAddresses) {
            self.amplification = amplification
            self.maxProbes = maxProbes
            self.maxAddresses = maxAddresses
        }
    }

    /// Default of ``Limits/amplification``: 3 bytes per byte of the offer.
    public static let defaultAmplification = 3
    /// Default of ``Limits/maxProbes``: 400 (a LAN path needs a handful; a hole punch answered late a few hundred).
    public static let defaultMaxProbes = 400
    /// Default of ``Limits/maxAddresses``: 16.
    public static let defaultMaxAddresses = 16
    /// Bytes charged for a TCP connection attempt (a SYN and its retransmissions, headers included).
    public static let connectionAttemptBytes = 180

    /// The source the cloud saw the requester connect from, if a cloud vouches for it.
    public let vouched: SourceAddressKey?
    /// Bytes still allowed toward unverified addresses.
    public private(set) var bytesLeft: Int
    /// Probes still allowed toward unverified addresses.
    public private(set) var probesLeft: Int
    private let maxAddresses: Int
    private var probed: Set<SocketAddress> = []

    /// The budget of an offer of `offerBytes` bytes; traffic toward `vouched` is not charged.
    public init(offerBytes: Int, vouched: SourceAddressKey?, limits: Limits = Limits()) {
        self.vouched = vouched
        self.bytesLeft = max(0, offerBytes) * limits.amplification
        self.probesLeft = limits.maxProbes
        self.maxAddresses = limits.maxAddresses
    }

    /// Whether `address` is the vouched requester's.
    public func isVouched(_ address: SocketAddress) -> Bool {
        vouched != nil && vouched != .unidentified && SourceAddressKey(address) == vouched
    }

    /// Takes `bytes` for one probe to `address`; false (nothing taken) when it must not be sent.
    public mutating func spend(_ bytes: Int, to address: SocketAddress) -> Bool {
        if isVouched(address) { return true }
        guard probesLeft > 0, bytes <= bytesLeft else { return false }
        if !probed.contains(address) {
            guard probed.count < maxAddresses else { return false }
            probed.insert(address)
        }
        probesLeft -= 1
        bytesLeft -= bytes
        return true
    }

}

/// One ``ProbeBudget`` shared by every strategy of an introduction.
public final class ProbeAllowance: Sendable {
    private let budget: Mutex<ProbeBudget>

    /// Shares `budget`.
    public init(_ budget: ProbeBudget) { self.budget = Mutex(budget) }

    /// Takes `bytes` for one probe to `address`; false when it must not be sent.
    public func spend(_ bytes: Int, to address: SocketAddress) -> Bool {
        budget.withLock { $0.spend(bytes, to: address) }
    }

    /// Whether `address` is the vouched requester's.
    public func isVouched(_ address: SocketAddress) -> Bool {
        budget.withLock { $0.isVouched(address) }
    }

    /// The budget now.
    public var snapshot: ProbeBudget { budget.withLock { $0 } }
}
