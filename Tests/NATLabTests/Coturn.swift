import Foundation
import Testing
@testable import NATLab

/// coturn as the independent judge of what the lab built: `turnserver` in STUN-only mode on both
/// cloud addresses (RFC 5780 behaviour discovery) and `turnutils_natdiscovery` behind the NAT.
enum Coturn {
    /// Why coturn-based lab tests cannot run here; nil when they can.
    static let skipReason = NATLab.skipReason(requiring: ["turnserver", "turnutils_natdiscovery", "turnutils_stunclient"])

    /// The STUN port on both cloud addresses (RFC 5780 alternate port: 3479).
    static let stunPort = 3478

    /// `turnserver` arguments: STUN only, no auth, no CLI/TLS, state files in `directory`.
    static func serverArguments(listening addresses: [String], port: Int, rfc5780: Bool,
                                directory: String) -> [String] {
        ["turnserver", "-n", "--stun-only", "--no-auth", "--no-cli", "--no-tls", "--no-dtls",
         "--listening-port", String(port), "--log-file", "stdout", "--simple-log",
         // Without --db, coturn opens the system's /var/lib/turn/turndb; keep it to ourselves.
         "--db", "\(directory)/turndb-\(port)", "--pidfile", "\(directory)/turnserver-\(port).pid"]
            + addresses.flatMap { ["--listening-ip", $0] }
            + (rfc5780 ? [] : ["--no-rfc5780"])
    }

    /// Starts the cloud's servers: RFC 5780 STUN on both addresses at 3478 (UDP and TCP), and a
    /// second STUN server on TCP/UDP 443 of the primary address; returns once both listen.
    static func startCloud(in lab: Lab) async throws -> TemporaryDirectory {
        let directory = try TemporaryDirectory()
        let cloud = lab.cloudAddresses
        _ = try lab.spawn(host: "cloud", serverArguments(listening: cloud, port: stunPort, rfc5780: true,
                                                         directory: directory.path))
        _ = try lab.spawn(host: "cloud", serverArguments(listening: [cloud[0]], port: 443, rfc5780: false,
                                                         directory: directory.path))
        try await lab.waitForListener(host: "cloud", port: stunPort + 1, udp: true)   // alternate port last
        try await lab.waitForListener(host: "cloud", port: 443, udp: false)
        return directory
    }
}

/// What `turnutils_natdiscovery` concluded.
struct NATDiscoveryReport: Equatable {
    /// "NAT with … Mapping!", nil when no conclusion was printed.
    var mapping: LabDependency?
    /// "NAT with … Filtering!", nil when no conclusion was printed.
    var filtering: LabDependency?
    /// Every "UDP reflexive addr" IP seen.
    var reflexiveAddresses: [String]
    /// "STUN receive timeout" was printed.
    var timedOut: Bool

    init(parsing output: String) {
        func dependency(_ noun: String) -> LabDependency? {
            // Longest phrase first: "Address and Port Dependent" contains "Address Dependent"'s words.
            if output.contains("NAT with Address and Port Dependent \(noun)") { return .addressAndPortDependent }
            if output.contains("NAT with Address Dependent \(noun)") { return .addressDependent }
            if output.contains("NAT with Endpoint Independent \(noun)") { return .endpointIndependent }
            return nil
        }
        mapping = dependency("Mapping")
        filtering = dependency("Filtering")
        reflexiveAddresses = output.split(separator: "\n").compactMap { line in
            guard let range = line.range(of: "UDP reflexive addr: ") else { return nil }
            let endpoint = line[range.upperBound...].trimmingCharacters(in: .whitespaces)
            return endpoint.split(separator: ":").first.map(String.init)
        }
        timedOut = output.contains("STUN receive timeout")
    }
}

/// A directory under the system temporary directory, removed on `remove()`.
final class TemporaryDirectory: Sendable {
    /// Its path.
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory
            .appendingPathComponent("natlab-test-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// Deletes it and everything in it.
    func remove() { try? FileManager.default.removeItem(atPath: path) }

    deinit { remove() }
}

extension Lab {
    /// Whether a STUN Binding over TCP from `host` to `address:port` gets its success response
    /// within `seconds` — a real round trip, not just a handshake the client believes in.
    func stunOverTCPWorks(from host: String, to address: String, port: Int, seconds: Int = 3) async throws -> Bool {
        // Binding request: type 0x0001, length 0, magic cookie, transaction ID "natlabprobe1".
        let script = #"exec 3<>/dev/tcp/\#(address)/\#(port) && "#
            + #"printf '\x00\x01\x00\x00\x21\x12\xa4\x42natlabprobe1' >&3 && "#
            + #"head -c 20 <&3 | od -An -tx1 | tr -d ' \n'"#
        let result = try await run(host: host, ["timeout", String(seconds), "bash", "-c", script],
                                   timeout: .seconds(seconds + 5))
        // Binding success (0x0101) echoing our transaction ID.
        return result.stdout.hasPrefix("0101") && result.stdout.hasSuffix("6e61746c616270726f626531")
    }

    /// `ip netns list` names that belong to this lab.
    func namespacesLeft() async throws -> [String] {
        try await LabTestSupport.namespaces(withPrefix: prefix)
    }
}

enum LabTestSupport {
    /// Namespaces on this machine named `PREFIX-…` (reads only; changes nothing).
    static func namespaces(withPrefix prefix: String) async throws -> [String] {
        let ip = try #require(NATLab.findExecutable("ip"))
        let result = try await ChildProcess.run([ip, "netns", "list"], timeout: .seconds(10))
        // Lines look like "nlab12cd-cloud (id: 3)" or just "nlab12cd-cloud".
        return result.stdout.split(separator: "\n")
            .compactMap { $0.split(separator: " ").first.map(String.init) }
            .filter { $0.hasPrefix(prefix + "-") }
    }
}
