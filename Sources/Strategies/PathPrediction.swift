/// What `trav probe`'s NAT types predict for a camera × viewer pair: a direct path and by which
/// strategy, or none (a relay must carry it). Pure: the comparison grid prints it beside what happened.
public enum PathPrediction {
    /// A prediction.
    public struct Outcome: Sendable, Hashable, CustomStringConvertible {
        /// The strategy expected to win, or nil when no direct path should exist.
        public var strategy: String?
        /// Why.
        public var reason: String
        /// True when a direct path is expected.
        public var direct: Bool { strategy != nil }
        /// `udp-hole-punch (both map endpoint-independently)` or `relay (…)`.
        public var description: String { "\(strategy ?? "relay") (\(reason))" }
    }

    /// NAT types as `trav probe` names them (RFC 4787 behaviour words; `firewalled`: no NAT, filtered).
    static let cones: Set<String> = ["open", "full-cone", "restricted-cone", "port-restricted-cone", "firewalled"]

    /// Predicts the pair; `tcpWorks` says whether each side reaches the cloud over TCP on a non-443 port.
    public static func predict(camera: String, viewer: String, sameLAN: Bool = false,
                               cameraTCP: Bool = true, viewerTCP: Bool = true) -> Outcome {
        if sameLAN { return Outcome(strategy: "direct-lan", reason: "same LAN") }
        let udpBlocked = camera == "udp-blocked" || viewer == "udp-blocked"
        if udpBlocked {
            guard cameraTCP, viewerTCP else { return Outcome(strategy: nil, reason: "UDP blocked and TCP restricted") }
            if camera == "symmetric" || viewer == "symmetric" {
                return Outcome(strategy: nil, reason: "UDP blocked on one side, symmetric mapping on the other")
            }
            return Outcome(strategy: "tcp-simultaneous-open", reason: "UDP blocked, TCP open")
        }
        let cameraOpen = camera == "open" || camera == "full-cone"
        switch (camera == "symmetric", viewer == "symmetric") {
        case (true, true):
            return Outcome(strategy: nil, reason: "both symmetric")
        case (false, false):
            if cameraOpen { return Outcome(strategy: "stun-discovery", reason: "the camera's NAT filters nothing") }
            guard cones.contains(camera), cones.contains(viewer) else { return Outcome(strategy: nil, reason: "unknown NAT type") }
            return Outcome(strategy: "udp-hole-punch", reason: "both map endpoint-independently")
        default:
            let easy = camera == "symmetric" ? viewer : camera
            guard cones.contains(easy) else { return Outcome(strategy: nil, reason: "unknown NAT type") }
            if cameraOpen { return Outcome(strategy: "stun-discovery", reason: "the camera's NAT filters nothing") }
            let how = easy == "port-restricted-cone" || easy == "firewalled" ? "birthday method" : "the easy side's filter admits the new mapping"
            return Outcome(strategy: "udp-hole-punch", reason: "one symmetric side: \(how)")
        }
    }
}
