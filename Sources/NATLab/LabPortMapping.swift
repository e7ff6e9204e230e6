import Foundation

extension Lab {
    /// Starts Debian's miniupnpd (NAT-PMP, PCP, UPnP IGD) in `site`'s router (`natlab.sh upnpd`) and
    /// waits until it serves mappings; it is stopped at teardown like any spawned process.
    ///
    /// `stun` are the cloud's addresses: miniupnpd checks with STUN (RFC 5780) that nothing filters
    /// in front of it before it maps anything, so a cloud with an RFC 5780 STUN server on port 3478
    /// must run (this waits until it listens).
    public func startPortMapping(site: String, stun: [String], timeout: Duration = .seconds(30)) async throws -> LabProcess {
        let router = "\(site)-router"
        try await waitForListener(host: "cloud", port: 3478, timeout: timeout)
        let process = try spawnScript(host: router, ["upnpd", prefix, site] + stun, showing: ["miniupnpd"])
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let log = process.output
            if (log.stdout + log.stderr).contains("Port forwarding is now enabled") { return process }
            if (log.stdout + log.stderr).contains("Port forwarding is now disabled") || !process.isRunning {
                process.stop()
                throw NATLabError(.launchFailed, "miniupnpd in \(router) does not forward: \(log.stderr.suffix(2000))")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        process.stop()
        throw NATLabError(.timedOut, "miniupnpd in \(router) not ready within \(timeout): \(process.output.stderr.suffix(2000))")
    }

    /// The port forwards miniupnpd holds in `router` now: its `dnat` rules (`nft list chain inet
    /// miniupnpd prerouting_miniupnpd`), one line each; empty when it holds none.
    public func portMappings(on router: String) async throws -> [String] {
        let result = try await run(host: router, ["nft", "list", "chain", "inet", "miniupnpd", "prerouting_miniupnpd"], timeout: .seconds(10))
        guard result.succeeded else { throw NATLabError(.launchFailed, "nft list chain in \(router): \(result)") }
        return result.stdout.split(separator: "\n").filter { $0.contains("dnat") }.map { $0.trimmingCharacters(in: .whitespaces) }
    }
}
