import Foundation

/// A named set of link conditions; its numbers live in `natlab.sh` alone (`natlab.sh profiles`).
public struct LinkProfile: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The name `natlab.sh` knows it by.
    public let rawValue: String

    /// The profile called `rawValue` (checked by the script when used).
    public init(rawValue: String) { self.rawValue = rawValue }

    /// No conditions: a line that a test can change later.
    public static let ideal = LinkProfile(rawValue: "ideal")
    /// 100 Mbit/s each way, 10 ms.
    public static let fibre = LinkProfile(rawValue: "fibre")
    /// 10 Mbit/s down, 1 Mbit/s up, 30 ms.
    public static let dsl = LinkProfile(rawValue: "dsl")
    /// 4 Mbit/s, 60 ms, 1 % loss.
    public static let mobile = LinkProfile(rawValue: "mobile")
    /// 10 Mbit/s, 20 ms ± 15 ms, 5 % loss.
    public static let badWiFi = LinkProfile(rawValue: "bad-wifi")

    /// The name.
    public var description: String { rawValue }
}

/// What a site's access line does to packets, each direction: a profile's conditions with any of
/// them overridden; nil fields leave the profile's (none without a profile). `spec` is the LINK
/// that `natlab.sh` takes, e.g. `mobile,loss=100`.
public struct LinkConditions: Sendable, Hashable, CustomStringConvertible {
    /// The profile the conditions start from.
    public var profile: LinkProfile?
    /// One-way delay in milliseconds, each direction (the RTT grows by twice this).
    public var delayMs: Int?
    /// The most the delay varies either way per packet, in milliseconds; packets keep their order.
    public var jitterMs: Int?
    /// Share of packets held back 5 ms more so later ones overtake them, in percent (0...100, tenths),
    /// each direction: real reordering (jitter keeps the order).
    public var reorderPercent: Double?
    /// Random loss in percent (0...100, tenths), each direction.
    public var lossPercent: Double?
    /// The rate towards the site in kbit/s; 0 is unlimited.
    public var downKbps: Int?
    /// The rate from the site in kbit/s; 0 is unlimited.
    public var upKbps: Int?

    /// `profile`'s conditions (none without one) with the given ones overriding them.
    public init(profile: LinkProfile? = nil, delayMs: Int? = nil, jitterMs: Int? = nil, reorderPercent: Double? = nil,
                lossPercent: Double? = nil, downKbps: Int? = nil, upKbps: Int? = nil) {
        self.profile = profile
        self.delayMs = delayMs
        self.jitterMs = jitterMs
        self.reorderPercent = reorderPercent
        self.lossPercent = lossPercent
        self.downKbps = downKbps
        self.upKbps = upKbps
    }

    /// Exactly `profile`'s conditions.
    public static func profile(_ profile: LinkProfile) -> LinkConditions { LinkConditions(profile: profile) }

    /// No conditions.
    public static let ideal = LinkConditions.profile(.ideal)

    /// Every packet lost, both ways: the line is cut.
    public static let outage = LinkConditions(lossPercent: 100)

    /// These conditions with every packet lost, both ways (the delay stays, so a forwarder keeps running).
    public var cut: LinkConditions {
        var cut = self
        cut.lossPercent = 100
        return cut
    }

    /// The `natlab.sh` LINK: the profile, then each condition set here.
    public var spec: String {
        var items = profile.map { [$0.rawValue] } ?? []
        if let delayMs { items.append("delay=\(delayMs)ms") }
        if let jitterMs { items.append("jitter=\(jitterMs)ms") }
        if let reorderPercent { items.append("reorder=\(Self.tenths(reorderPercent))") }
        if let lossPercent { items.append("loss=\(Self.tenths(lossPercent))") }
        if let downKbps { items.append("down=\(Self.rate(downKbps))") }
        if let upKbps { items.append("up=\(Self.rate(upKbps))") }
        return items.isEmpty ? LinkProfile.ideal.rawValue : items.joined(separator: ",")
    }

    /// The LINK.
    public var description: String { spec }

    /// Parses a LINK: an optional profile name first, then KEY=VALUE items (`mobile,loss=100`; also
    /// what `natlab.sh resolve`, `links` and `profiles` print: `delay=60ms,jitter=0ms,loss=1,…`);
    /// nil when malformed. Whether the profile exists is the script's to say.
    public init?(spec: String) {
        self.init()
        for (index, item) in spec.split(separator: ",").enumerated() {
            if index == 0, !item.contains("="), item.allSatisfy({ $0.isLowercase || $0.isNumber || $0 == "-" }) {
                profile = LinkProfile(rawValue: String(item))
                continue
            }
            let pair = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { return nil }
            let (key, value) = (pair[0], pair[1])
            switch key {
            case "delay", "jitter":
                guard let ms = Int(value.hasSuffix("ms") ? String(value.dropLast(2)) : value), ms >= 0 else { return nil }
                if key == "delay" { delayMs = ms } else { jitterMs = ms }
            case "loss", "reorder":
                guard let percent = Double(value.hasSuffix("%") ? String(value.dropLast()) : value),
                      (0...100).contains(percent) else { return nil }
                if key == "loss" { lossPercent = percent } else { reorderPercent = percent }
            case "down", "up":
                guard let kbps = Self.kbps(value) else { return nil }
                if key == "down" { downKbps = kbps } else { upKbps = kbps }
            default:
                return nil
            }
        }
    }

    private static func kbps(_ text: String) -> Int? {
        if text == "unlimited" { return 0 }
        if text.hasSuffix("mbit") { return Int(text.dropLast(4)).map { $0 * 1000 } }
        return Int(text.hasSuffix("kbit") ? String(text.dropLast(4)) : text)
    }

    private static func rate(_ kbps: Int) -> String {
        kbps == 0 ? "unlimited" : kbps % 1000 == 0 ? "\(kbps / 1000)mbit" : "\(kbps)kbit"
    }

    private static func tenths(_ percent: Double) -> String {
        let tenths = Int((percent * 10).rounded())
        return tenths % 10 == 0 ? "\(tenths / 10)" : "\(tenths / 10).\(tenths % 10)"
    }
}
