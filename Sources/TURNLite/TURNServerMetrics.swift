import Metrics

/// The relay's swift-metrics: what ``TURNServerStateMachine`` counted, handed over once per read batch.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `turn_allocations` | gauge | |
/// | `turn_allocations_created_total` | counter | |
/// | `turn_relayed_packets_total`, `turn_relayed_bytes_total` | counter | `direction`: `to-peer`, `to-client` |
/// | `turn_refusals_total` | counter | `reason`: ``TURNRefusal/name`` |
/// | `turn_bandwidth_cuts_total`, `turn_bandwidth_cut_bytes_total` | counter | `reason`: ``TURNBandwidthCut/name`` |
/// | `turn_send_dropped_total` | counter | |
///
/// `turn_send_dropped_total` counts datagrams the kernel refused to send (a full socket buffer, an
/// address it will not send to, an error a peer's ICMP left on the socket): UDP loses them silently, so
/// a rising count is the operator's sign that the relay sends faster than the host lets it.
///
/// The executable picks the backend (`MetricsSystem.bootstrap`); without one these cost next to nothing.
final class TURNServerMetrics {
    private let allocations = Gauge(label: "turn_allocations")
    private let created = Counter(label: "turn_allocations_created_total")
    private let packetsToPeers = Counter(label: "turn_relayed_packets_total", dimensions: [("direction", "to-peer")])
    private let bytesToPeers = Counter(label: "turn_relayed_bytes_total", dimensions: [("direction", "to-peer")])
    private let packetsToClients = Counter(label: "turn_relayed_packets_total", dimensions: [("direction", "to-client")])
    private let bytesToClients = Counter(label: "turn_relayed_bytes_total", dimensions: [("direction", "to-client")])
    private var refusals: [String: Counter] = [:]
    private var cuts: [String: Counter] = [:]
    private var cutBytes: [String: Counter] = [:]
    private var lastAllocationCount: Int?
    private let sendDropped = Counter(label: "turn_send_dropped_total")
    private var lastSendDropped = 0

    /// Adds the datagrams the kernel refused since the last call; `total` is the send batch's running count.
    func recordSendDrops(total: Int) {
        guard total > lastSendDropped else { return }
        sendDropped.increment(by: Int64(total - lastSendDropped))
        lastSendDropped = total
    }

    /// Adds what was counted, and sets the allocation gauge when the count changed.
    func record(_ s: TURNServerStatistics, allocations count: Int) {
        if count != lastAllocationCount {
            allocations.record(count)
            lastAllocationCount = count
        }
        guard !s.isEmpty else { return }
        for (counter, value) in [(created, s.allocationsCreated), (packetsToPeers, s.packetsToPeers), (bytesToPeers, s.bytesToPeers),
                                 (packetsToClients, s.packetsToClients), (bytesToClients, s.bytesToClients)] where value > 0 {
            counter.increment(by: Int64(value))
        }
        Self.add(s.refusals, to: &refusals, label: "turn_refusals_total")
        Self.add(s.bandwidthCuts, to: &cuts, label: "turn_bandwidth_cuts_total")
        Self.add(s.bandwidthCutBytes, to: &cutBytes, label: "turn_bandwidth_cut_bytes_total")
    }

    /// Adds counts by reason to counters labelled `label` with a `reason` dimension, made on first use.
    private static func add(_ counts: [String: Int], to counters: inout [String: Counter], label: String) {
        for (reason, value) in counts {
            let counter = counters[reason] ?? Counter(label: label, dimensions: [("reason", reason)])
            counters[reason] = counter
            counter.increment(by: Int64(value))
        }
    }
}
