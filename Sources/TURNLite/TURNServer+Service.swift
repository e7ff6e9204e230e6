import ServiceLifecycle

/// The relay as a swift-service-lifecycle service.
///
/// ```
///  running ──graceful shutdown (SIGTERM)──► draining: new Allocates get 508, existing allocations
///                                           keep relaying, refreshing and binding
///          ──no allocation left, or Configuration.drainGracePeriod passed──► shut down, run() returns
///  cancelled ──────────────────────────────► shut down at once
/// ```
extension TURNServer: Service {
    /// Serves until a graceful shutdown, then drains for up to the configured grace period and stops.
    public func run() async throws {
        try? await gracefulShutdown()
        if Task.isCancelled {
            await shutdown()
        } else {
            await drainAndShutdown(gracePeriod: drainGracePeriod)
        }
    }
}
