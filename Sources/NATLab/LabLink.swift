import Foundation

extension NATLab {
    /// The named profiles and what they stand for (`natlab.sh profiles`), in the script's order.
    public static func linkProfiles() async throws -> [(profile: LinkProfile, conditions: LinkConditions)] {
        let result = try await script(["profiles"], timeout: .seconds(10))
        guard result.succeeded else { throw NATLabError(.launchFailed, "natlab.sh profiles: \(result)") }
        return try result.stdout.split(separator: "\n").map { line in
            let fields = line.split(separator: " ")
            guard fields.count == 2, let conditions = LinkConditions(spec: String(fields[1])) else {
                throw NATLabError(.launchFailed, "natlab.sh profiles: unexpected line '\(line)'")
            }
            return (LinkProfile(rawValue: String(fields[0])), conditions)
        }
    }

    /// `conditions` with its profile's numbers filled in (`natlab.sh resolve`); fails on an unknown profile.
    public static func resolve(_ conditions: LinkConditions) async throws -> LinkConditions {
        let result = try await script(["resolve", conditions.spec], timeout: .seconds(10))
        guard result.succeeded,
              let resolved = LinkConditions(spec: result.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        else { throw NATLabError(.badLink, "natlab.sh resolve \(conditions.spec): \(result)") }
        return resolved
    }
}

extension Lab {
    /// Gives `site`'s line `conditions` now (`natlab.sh link`); the site must have been built with a link.
    public func setLink(_ conditions: LinkConditions, site: String) async throws {
        try checkUsable("\(site)-link")
        let result = try await NATLab.script(["link", prefix, site, conditions.spec], timeout: .seconds(20))
        guard result.succeeded else { throw NATLabError(.badLink, "natlab.sh link \(prefix) \(site) \(conditions.spec): \(result)") }
    }

    /// The conditions on `site`'s line now, resolved to numbers (`natlab.sh links`).
    public func link(of site: String) async throws -> LinkConditions {
        try checkUsable("\(site)-link")
        let result = try await NATLab.script(["links", prefix], timeout: .seconds(10))
        guard result.succeeded,
              let line = result.stdout.split(separator: "\n").first(where: { $0.hasPrefix("\(site) ") }),
              let conditions = LinkConditions(spec: String(line.dropFirst(site.count + 1)))
        else { throw NATLabError(.badLink, "natlab.sh links \(prefix): no conditions for \(site): \(result)") }
        return conditions
    }

    /// One round trip from `host` to `address`, timed inside `host`: a TCP connect to `port`, where
    /// nothing listens, is answered by a reset after exactly one round trip (bash's `/dev/tcp`, no
    /// tools needed). Nil when no answer came within `timeout`: the path is down. (SIGKILL at the
    /// limit: a test process may leave SIGTERM ignored for its children.)
    public func roundTrip(from host: String, to address: String, port: Int = 9,
                          timeout: Duration = .seconds(2)) async throws -> Duration? {
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        let probe = #"s=$EPOCHREALTIME; { : 3<>"/dev/tcp/$0/$1"; } 2>/dev/null; e=$EPOCHREALTIME; echo "$s $e""#
        let result = try await run(host: host, ["env", "LC_ALL=C", "timeout", "-s", "KILL", String(format: "%.3f", seconds),
                                                "bash", "-c", probe, address, String(port)],
                                   timeout: timeout + .seconds(5))
        guard result.succeeded else { return nil }
        let times = result.stdout.split(whereSeparator: \.isWhitespace).compactMap { Double($0) }
        guard times.count == 2 else { throw NATLabError(.launchFailed, "round-trip probe from \(host): \(result)") }
        return .microseconds(Int64(((times[1] - times[0]) * 1e6).rounded()))
    }

    /// Cuts `site`'s line for `duration` (every packet lost, both ways), then restores what it had.
    public func outage(site: String, for duration: Duration) async throws {
        let before = try await link(of: site)
        try await setLink(before.cut, site: site)
        do {
            try await Task.sleep(for: duration)
        } catch {
            try? await setLink(before, site: site)
            throw error
        }
        try await setLink(before, site: site)
    }
}

extension NATLabError.Code {
    /// Link conditions the script refused, or a site without a link line.
    public static let badLink = Self(rawValue: "bad-link")
}
