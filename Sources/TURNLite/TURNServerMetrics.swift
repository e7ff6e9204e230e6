import Metrics

/// The relay's swift-metrics: what ``TURNServerStateMachine`` counted, handed over once per read batch.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `turn_allocations` | gauge | |
/// | `turn_allocations_created_total` | counter | |
/// | `turn_relayed_packets_total`, `turn_relayed_bytes_total` | counter | `direction`: `to-peer`, `to-client` |
/// | `turn_refusals_total` | counter | `reason`: ``TURNRefusal/name`` |
/// | `turn_bandwidth_cuts_total`, `turn_bandwidth_cut_bytes_total` | counter | |
///
/// The executable picks the backend (`MetricsSystem.bootstrap`); without one these cost next to nothing.
final class TURNServerMetrics {
    private let allocations = Gauge(label: "turn_allocations")
    private let created = Counter(label: "turn_allocations_created_total")
    private let packetsToPeers = Counter(label: "turn_relayed_packets_total", dimensions: [("direction", "to-peer")])
    private let bytesToPeers = Counter(label: "turn_relayed_bytes_total", dimensions: [("direction", "to-peer")])
    private let packetsToClients = Counter(label: "turn_relayed_packets_total", dimensions: [("direction", "to-client")])
    private let bytesToClients = Counter(label: "turn_relayed_bytes_total", dimensions: [("direction", "to-client")])
    private let cuts = Counter(label: "turn_bandwidth_cuts_total")
    private let cutBytes = Counter(label: "turn_bandwidth_cut_bytes_total")
    private var refusals: [String: Counter] = [:]
    private var lastAllocationCount: Int?

    /// Adds what was counted, and sets the allocation gauge when the count changed.
    func record(_ s: TURNServerStatistics, allocations count: Int) {
        if count != lastAllocationCount {
            allocations.record(count)
            lastAllocationCount = count
        }
        guard !s.isEmpty else { return }
        for (counter, value) in [(created, s.allocationsCreated), (packetsToPeers, s.packetsToPeers), (bytesToPeers, s.bytesToPeers),
                                 (packetsToClients, s.packetsToClients), (bytesToClients, s.bytesToClients),
                                 (cuts, s.bandwidthCuts), (cutBytes, s.bandwidthCutBytes)] where value > 0 {
            counter.increment(by: Int64(value))
        }
        for (reason, value) in s.refusals {
            let counter = refusals[reason] ?? Counter(label: "turn_refusals_total", dimensions: [("reason", reason)])
            refusals[reason] = counter
            counter.increment(by: Int64(value))
        }
    }
}
