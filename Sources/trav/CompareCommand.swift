import ArgumentParser
import Foundation
import Media
import NATLab
import Strategies
import Traversal

extension Trav {
    /// `trav compare`: the strategy comparison grid over real kernel NAT.
    struct CompareCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "compare",
            abstract: "Build the NAT lab and measure, per camera × viewer pair, which strategy connects, how fast, and why not.",
            discussion: """
                Needs root (network namespaces). Every pair is connected --runs times with all strategies raced \
                (the viewer's key paired with the camera; the first run also checks the camera's UID, later \
                ones know its key), once with the password (the camera's scrypt check), and once with each strategy alone.
                """)

        @Option(help: "Raced connections per pair (median and p99 over these).") var runs: Int = 5
        @Flag(help: "Skip the per-strategy runs (only the race).") var raceOnly = false
        @Option(help: "standard: the pairs that show each strategy; full: every ordered pair of the lab's NAT kinds (64, two sites per kind) and the LAN.")
        var grid: CompareGrid.Kind = .standard
        @Flag(help: "Print one JSON object.") var json = false
        @Option(help: "Write a self-contained HTML page with the grid and a chart.") var html: String?
        @Option(help: "Put every site behind a line with these conditions (natlab.sh LINK: mobile, dsl,loss=5, delay=50ms…).")
        var link: String?
        @OptionGroup var common: CommonOptions

        func validate() throws {
            guard (1...50).contains(runs) else { throw ValidationError("--runs must be 1…50") }
            if let link, LinkConditions(spec: link) == nil { throw ValidationError("--link: cannot read '\(link)' (see natlab.sh help)") }
        }

        struct StrategyResult: Codable {
            var strategy: String
            var connected: Bool
            var ms: Double?
            var reason: String?
        }

        struct PairResult: Codable {
            var camera: String
            var viewer: String
            var cameraNAT: String
            var viewerNAT: String
            var predicted: String
            var predictedDirect: Bool
            var outcome: String
            var winner: String?
            var connectedRuns: Int
            var runs: Int
            var medianMs: Double?
            var p99Ms: Double?
            /// Setup with the password instead of the paired key (adds the camera's scrypt check).
            var passwordMs: Double?
            var mismatch: Bool
            var strategies: [StrategyResult]
        }

        func run() async throws {
            _ = common.logger("trav.compare")
            let trav = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
            if let reason = TravLab.skipReason(trav: FileManager.default.isExecutableFile(atPath: trav) ? trav : TravLab.debugTrav) {
                throw CLIError("cannot build the NAT lab: \(reason)")
            }
            // The full grid needs more sites than one lab holds: it runs in parts, one lab after the other.
            let parts = (self.grid == .full ? CompareGrid.full : [CompareGrid.standard]).map { $0.behind(link.flatMap(LinkConditions.init(spec:))) }
            let all = StrategyCatalog.ids
            var results: [PairResult] = []
            var done = 0
            let total = parts.reduce(0) { $0 + $1.pairs.count }
            for grid in parts {
            results += try await TravLab.with(sites: grid.sites, trav: trav, signallingPort: 443) { lab in
                // Signalling and the relay's TLS share port 443 (ALPN), so a network that only lets TCP 443 out reaches both.
                _ = try lab.startCloud()
                progress("cloud up; probing each site")
                var nat: [String: (type: String, tcp: Bool)] = [:]
                for host in Set(grid.pairs.flatMap { [$0.camera, $0.viewer] }).sorted() {
                    let p = try await lab.probe(from: host)
                    nat[host] = (p["natType"]?.string ?? "unknown", p["tcp"] == .bool(true))
                }
                var uids: [String: String] = [:]
                for camera in Set(grid.pairs.map(\.camera)).sorted() {
                    uids[camera] = try await lab.startCamera(on: camera)
                }
                var out: [PairResult] = []
                for pair in grid.pairs {
                    done += 1
                    progress("[\(done)/\(total)] \(pair.label)")
                    let c = nat[pair.camera]!, v = nat[pair.viewer]!
                    let prediction = PathPrediction.predict(camera: c.type, viewer: v.type, sameLAN: pair.sameLAN,
                                                            cameraTCP: c.tcp, viewerTCP: v.tcp)
                    var times: [Double] = []
                    var winners: [String] = []
                    for _ in 0..<runs {
                        let r = try await lab.connect(from: pair.viewer, to: uids[pair.camera]!, echoBytes: 1000, paired: true)
                        if r.connected && r.echoVerified, let ms = r.setupMs, let path = r.path {
                            times.append(ms)
                            winners.append(path)
                        }
                    }
                    let withPassword = try await lab.connect(from: pair.viewer, to: uids[pair.camera]!, echoBytes: 1000)
                    var alone: [StrategyResult] = []
                    if !raceOnly {
                        for s in all {
                            let r = try await lab.connect(from: pair.viewer, to: uids[pair.camera]!, strategies: s, timeout: 8, echoBytes: 500)
                            let attempt = r.attempts.first { $0.strategy == s }
                            alone.append(StrategyResult(strategy: s, connected: r.connected && r.echoVerified,
                                                        ms: r.connected ? attempt?.ms : nil,
                                                        reason: r.connected ? nil : (attempt?.error ?? r.error)))
                        }
                    }
                    let winner = mostCommon(winners)
                    let outcome = winner == nil ? "failed" : (winner == "tls-relay" ? "relayed" : "direct")
                    out.append(PairResult(camera: pair.camera, viewer: pair.viewer, cameraNAT: c.type, viewerNAT: v.type,
                                          predicted: prediction.description, predictedDirect: prediction.direct,
                                          outcome: outcome, winner: winner, connectedRuns: times.count, runs: runs,
                                          medianMs: percentile(times, 0.5), p99Ms: percentile(times, 0.99),
                                          passwordMs: withPassword.connected && withPassword.echoVerified ? withPassword.setupMs : nil,
                                          mismatch: prediction.direct != (outcome == "direct"), strategies: alone))
                }
                return out
            }
            }
            if json {
                try printJSON(results)
            } else {
                printTable(results, strategies: raceOnly ? [] : all)
            }
            if let html {
                try CompareHTML.page(results.map(CompareHTML.Row.init), strategies: raceOnly ? [] : all, runs: runs)
                    .write(toFile: html, atomically: true, encoding: .utf8)
                progress("wrote \(html)")
            }
        }

        func printTable(_ results: [PairResult], strategies: [String]) {
            let short = strategies.map { String($0.split(separator: "-").map { $0.prefix(4) }.joined(separator: "-")) }
            print("camera × viewer".padding(toLength: 44, withPad: " ", startingAt: 0) + "outcome  winner                  median    p99 passwd  runs  predicted" +
                  (short.isEmpty ? "" : "   " + short.map { $0.padding(toLength: 12, withPad: " ", startingAt: 0) }.joined()))
            for r in results {
                let name = "\(r.camera) (\(r.cameraNAT)) × \(r.viewer) (\(r.viewerNAT))"
                let cells = r.strategies.map { ($0.connected ? String(format: "ok %.0fms", $0.ms ?? 0) : "—").padding(toLength: 12, withPad: " ", startingAt: 0) }.joined()
                var line = name.padding(toLength: 44, withPad: " ", startingAt: 0)
                line += r.outcome.padding(toLength: 9, withPad: " ", startingAt: 0)
                line += (r.winner ?? "-").padding(toLength: 22, withPad: " ", startingAt: 0)
                line += String(format: "%8.1f %6.1f %6.1f", r.medianMs ?? Double.nan, r.p99Ms ?? Double.nan, r.passwordMs ?? Double.nan)
                line += "  \(r.connectedRuns)/\(r.runs)".padding(toLength: 7, withPad: " ", startingAt: 0)
                line += (r.mismatch ? "MISMATCH " : "") + String(r.predicted.prefix(40))
                if !cells.isEmpty { line += "   " + cells }
                print(line)
            }
        }
    }
}

/// The lab sites and pairs the comparison grid measures.
struct CompareGrid {
    /// Which grid `trav compare --grid` runs.
    enum Kind: String, ExpressibleByArgument, CaseIterable {
        /// ``CompareGrid/standard``.
        case standard
        /// ``CompareGrid/full``.
        case full
    }

    struct Pair {
        var camera: String
        var viewer: String
        var sameLAN = false
        var label: String { "\(camera) camera × \(viewer) viewer" }
    }
    var sites: [LabSite]
    var pairs: [Pair]

    /// The same grid with every site behind a line with `link` conditions (unchanged for nil).
    func behind(_ link: LinkConditions?) -> CompareGrid {
        var grid = self
        for index in grid.sites.indices { grid.sites[index].link = link }
        return grid
    }

    static let standard = CompareGrid(
        sites: [LabSite("lan", .portRestrictedCone, hosts: 2), LabSite("pub", .open), LabSite("fc", .fullCone),
                LabSite("rc", .restrictedCone), LabSite("prc", .portRestrictedCone), LabSite("sym", .symmetric),
                LabSite("symb", .symmetric), LabSite("udpb", .udpBlocked), LabSite("dbl", .doubleNAT), LabSite("t443", .tcp443Only)],
        pairs: [
            Pair(camera: "lan-h1", viewer: "lan-h2", sameLAN: true),
            Pair(camera: "pub-h1", viewer: "prc-h1"), Pair(camera: "fc-h1", viewer: "prc-h1"),
            Pair(camera: "rc-h1", viewer: "prc-h1"), Pair(camera: "prc-h1", viewer: "dbl-h1"),
            Pair(camera: "dbl-h1", viewer: "prc-h1"), Pair(camera: "sym-h1", viewer: "fc-h1"),
            Pair(camera: "sym-h1", viewer: "rc-h1"), Pair(camera: "sym-h1", viewer: "prc-h1"),
            Pair(camera: "udpb-h1", viewer: "prc-h1"), Pair(camera: "sym-h1", viewer: "symb-h1"),
            Pair(camera: "t443-h1", viewer: "prc-h1"),
        ])

    /// The lab's NAT kinds (not the LAN), each with its short site name.
    static let kinds: [(name: String, kind: NATKind)] = [
        ("pub", .open), ("fc", .fullCone), ("rc", .restrictedCone), ("prc", .portRestrictedCone), ("sym", .symmetric),
        ("dbl", .doubleNAT), ("udpb", .udpBlocked), ("t443", .tcp443Only),
    ]

    /// Every ordered pair of ``kinds`` and two hosts on one LAN, in three labs (one holds at most 15 sites): one
    /// site per kind with a camera (h1) and a viewer (h2) for the pairs of two kinds, then two sites per kind
    /// (`c…`, `v…`), half the kinds at a time, so that a kind meets itself across two NATs.
    static let full: [CompareGrid] = {
        let mixed = CompareGrid(
            sites: [LabSite("lan", .portRestrictedCone, hosts: 2)] + kinds.map { LabSite($0.name, $0.kind, hosts: 2) },
            pairs: [Pair(camera: "lan-h1", viewer: "lan-h2", sameLAN: true)]
                + kinds.flatMap { c in kinds.filter { $0.name != c.name }.map { v in Pair(camera: "\(c.name)-h1", viewer: "\(v.name)-h2") } })
        let same = stride(from: 0, to: kinds.count, by: 4).map { start in
            let half = kinds[start..<min(start + 4, kinds.count)]
            return CompareGrid(sites: half.flatMap { [LabSite("c" + $0.name, $0.kind), LabSite("v" + $0.name, $0.kind)] },
                               pairs: half.map { Pair(camera: "c\($0.name)-h1", viewer: "v\($0.name)-h1") })
        }
        return [mixed] + same
    }()
}

/// The most frequent element (first on ties); nil when empty.
func mostCommon(_ items: [String]) -> String? {
    var counts: [String: Int] = [:]
    for i in items { counts[i, default: 0] += 1 }
    return items.first { counts[$0] == counts.values.max() }
}

/// A progress line on standard error, so `--json` stays clean.
func progress(_ line: String) {
    FileHandle.standardError.write(Data((RemoteText.printable(line) + "\n").utf8))
}
