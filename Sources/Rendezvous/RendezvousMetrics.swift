import Metrics
import Traversal

/// The signalling server's metrics, read off the messages it sends (so every path that answers a client
/// is counted, whichever code path produced the answer):
///
/// | metric | labels | counts |
/// |---|---|---|
/// | `cloud_registrations_total` | | cameras registered (over TLS) |
/// | `cloud_rejections_total` | `reason`: an error code, or `busy` | connections refused or told to come back later |
/// | `cloud_introductions_total` | `outcome`: `started`, or the error code the viewer got | introductions, by how they ended |
/// | `cloud_rate_limit_hits_total` | `limit`: `lookup`, `registration`, `presence` | requests refused by a rate limit |
/// | `cloud_relay_grants_total` | `kind`: `issued`, `renewed` | relay credentials handed out |
/// | `cloud_registered_cameras` | `presence`: `tls`, `udp` | cameras registered now (gauge) |
/// | `cloud_presence_datagrams_total` | `outcome`: `answered`, or a `Traversal/PresenceError` code | UDP presence datagrams |
/// | `cloud_presence_wakes_total` | | cameras woken over UDP for a viewer |
/// | `cloud_presence_restored_total` | | UDP presence sessions restored from their tickets after a restart (no TLS registration) |
/// | `cloud_presence_sessions` | | UDP presence sessions held (gauge) |
/// | `cloud_node_messages_total` | `kind`: `hub`, `viewer`, `closed`; `outcome`: `sent`, `failed`, `dropped`, `received`, `bad` | messages between the nodes of a fleet (`NodeRouter`) |
enum RendezvousMetrics {
    static let registrations = Counter(label: "cloud_registrations_total")
    static let grantsIssued = Counter(label: "cloud_relay_grants_total", dimensions: [("kind", "issued")])
    static let grantsRenewed = Counter(label: "cloud_relay_grants_total", dimensions: [("kind", "renewed")])
    static let introductionsStarted = Counter(label: "cloud_introductions_total", dimensions: [("outcome", "started")])
    static let camerasOverTLS = Gauge(label: "cloud_registered_cameras", dimensions: [("presence", "tls")])
    static let camerasOverUDP = Gauge(label: "cloud_registered_cameras", dimensions: [("presence", "udp")])

    /// Counts what sending `message` means.
    static func sent(_ message: CloudMessage) {
        switch message {
        case .registered:
            registrations.increment()
        case .offer(_, _, .some, _, _, _):
            grantsIssued.increment()
        case .relayRenewed:
            grantsRenewed.increment()
        case .start(_, _, _, .some):
            introductionsStarted.increment()
        case .error(.some, let code, _):
            Counter(label: "cloud_introductions_total", dimensions: [("outcome", code)]).increment()
            if code == CloudError.Code.rateLimited.name { rateLimitHit("lookup") }
        case .error(nil, let code, _):
            Counter(label: "cloud_rejections_total", dimensions: [("reason", code)]).increment()
            if code == CloudError.Code.rateLimited.name { rateLimitHit("registration") }
        case .busy:
            Counter(label: "cloud_rejections_total", dimensions: [("reason", "busy")]).increment()
        default:
            break
        }
    }

    /// Counts one request refused by the named rate limit.
    static func rateLimitHit(_ limit: String) {
        Counter(label: "cloud_rate_limit_hits_total", dimensions: [("limit", limit)]).increment()
    }

    /// Records the registered cameras now.
    static func cameras(_ counts: (all: Int, overUDP: Int)) {
        camerasOverTLS.record(counts.all - counts.overUDP)
        camerasOverUDP.record(counts.overUDP)
    }
}
