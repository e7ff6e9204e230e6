import ArgumentParser
import Foundation
import STUNLite
import Strategies

extension Trav {
    /// `trav probe`: NAT diagnostics against an RFC 5780 STUN server (mapping, filtering, hairpin, TCP, lifetime).
    struct ProbeCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "probe",
            abstract: "Diagnose the NAT between this host and a STUN server (RFC 5780 behaviour discovery).")

        @Option(help: "STUN server as HOST[:PORT] (default port 3478); RFC 5780 tests need one with --alternate-ip.")
        var server: String
        @Flag(help: "Print one JSON object.") var json = false
        @Option(name: .customLong("tcp-port"), help: "TCP port to try a Binding on (repeatable; default: the server's port).")
        var tcpPorts: [UInt16] = []
        @Flag(help: "Skip the TCP test.") var noTCP = false
        @Flag(help: "Skip asking the default gateway which port-mapping protocols (PCP, NAT-PMP, UPnP IGD) it speaks.")
        var noPortMapping = false
        @Option(help: "Also check that a TLS handshake with the server's host on this port works (e.g. the cloud's 5349 or 443).")
        var tlsPort: UInt16?
        @Flag(help: "Measure how long an idle UDP mapping lives, by bisection (slow: up to --lifetime-budget seconds).")
        var lifetime = false
        @Option(help: "Longest idle time the lifetime bisection tries, in seconds.")
        var lifetimeMax: Double = NATProbeOptions.defaultLifetimeMaxSeconds
        @Option(help: "Stop bisecting when the lifetime is known to within this many seconds.")
        var lifetimeResolution: Double = NATProbeOptions.defaultLifetimeResolutionSeconds
        @Option(help: "Most idle seconds all lifetime trials together may take.")
        var lifetimeBudget: Double = NATProbeOptions.defaultLifetimeBudgetSeconds
        @OptionGroup var common: CommonOptions

        /// The most idle time `--lifetime-budget` may ask for: 10 minutes.
        static let lifetimeBudgetLimit = 600.0

        func validate() throws {
            guard lifetimeMax > 0, lifetimeResolution > 0, lifetimeBudget > 0 else {
                throw ValidationError("--lifetime-max, --lifetime-resolution and --lifetime-budget must be positive")
            }
            guard lifetimeBudget <= Self.lifetimeBudgetLimit else {
                throw ValidationError("--lifetime-budget is at most \(Int(Self.lifetimeBudgetLimit)) seconds")
            }
            if noTCP && !tcpPorts.isEmpty { throw ValidationError("--no-tcp and --tcp-port contradict each other") }
        }

        func run() async throws {
            _ = common.logger("trav.probe")
            let target = try resolve(server, defaultPort: 3478)
            let options = NATProbeOptions(
                tcpPorts: noTCP ? [] : (tcpPorts.isEmpty ? nil : tcpPorts), lifetime: lifetime,
                lifetimeMaxSeconds: lifetimeMax, lifetimeResolutionSeconds: lifetimeResolution,
                lifetimeBudgetSeconds: lifetimeBudget)
            async let gateway: PortMappingProbeReport? = noPortMapping ? nil : await PortMappingProbeReport.run()
            var report = await NATProbe.run(server: target, options: options)
            if let tlsPort {
                report.tls = await tlsHandshakeWorks(TransportAddress(ip: target.ip, port: tlsPort)) ? .yes : .no
            }
            let portMapping = await gateway
            if json {
                try printJSON(ProbeOutput(report: report, portMapping: portMapping))
            } else {
                print(Self.table(report, portMapping: portMapping))
            }
        }

        /// The human output: a short table, the notes, the one-line summary and the advice.
        static func table(_ r: NATProbeReport, portMapping: PortMappingProbeReport? = nil) -> String {
            func ms(_ v: Double?) -> String { v.map { String(format: "%.1f ms", $0) } ?? "—" }
            var rows: [(String, String)] = [
                ("server", r.server),
                ("UDP", r.udp.description),
                ("local address", r.localAddress?.description ?? "—"),
                ("mapped address", r.mappedAddress?.description ?? "—"),
                ("mapping", r.mapping.description),
                ("filtering", r.filtering.description),
                ("NAT type", r.natType.description),
                ("port preserved", r.portPreservation.description),
                ("hairpinning", r.hairpinning.description),
                ("TCP", r.tcp.description + (r.tcpPorts.isEmpty ? "" : " (" + r.tcpPorts.map { "\($0.port) \($0.ok ? "ok" : "no")" }.joined(separator: ", ") + ")")),
                ("TLS", r.tls.description),
                ("latency", ms(r.latencyMs)),
                ("CHANGE-REQUEST", r.changeRequestSupported.description),
            ]
            if let p = portMapping {
                rows.append(("port mapping", p.summary + (p.gateway.map { " (gateway \($0))" } ?? " (no default gateway)")))
            }
            if r.bindingLifetimeSeconds != nil || r.bindingExpiredAfterSeconds != nil {
                let alive = r.bindingLifetimeSeconds.map { "alive after \($0) s" }
                let gone = r.bindingExpiredAfterSeconds.map { "gone after \($0) s" }
                rows.append(("mapping lifetime", [alive, gone].compactMap { $0 }.joined(separator: ", ")))
            }
            let width = rows.map(\.0.count).max() ?? 0
            var lines = rows.map { $0.0.padding(toLength: width + 2, withPad: " ", startingAt: 0) + $0.1 }
            lines += r.notes.map { "note: \($0)" }
            lines += (portMapping?.notes ?? []).map { "note: port mapping: \($0)" }
            lines.append("")
            lines.append(NATProbeAdvice.summary(r))
            lines.append("advice: \(r.advice)")
            return lines.joined(separator: "\n")
        }
    }

    /// `trav probe --json`: the NAT report's fields, plus `portMapping` when the gateway was asked.
    struct ProbeOutput: Encodable {
        var report: NATProbeReport
        var portMapping: PortMappingProbeReport?

        enum Keys: String, CodingKey { case portMapping }

        func encode(to encoder: any Encoder) throws {
            try report.encode(to: encoder)
            var c = encoder.container(keyedBy: Keys.self)
            try c.encodeIfPresent(portMapping, forKey: .portMapping)
        }
    }
}
