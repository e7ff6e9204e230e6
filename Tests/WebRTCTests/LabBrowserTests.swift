import Foundation
import NATLab
import Rendezvous
import Testing

/// Why the lab's browser tests cannot run here (no root or lab tools, no `trav` build, no Chromium); nil when they can.
private let labBrowserSkipReason: String? = TravLab.skipReason() ?? (LabBrowser.chromium == nil ? "chromium is not installed" : nil)

/// Headless Chromium watching `trav camera --video default` through real kernel NATs: the cloud (`trav cloud --tls-port
/// 443 --web-port 443`) serves signalling, TURN over TLS and the viewer page on its one port 443, so a network that
/// lets only TCP 443 out reaches all three; the page's report comes back in the cloud's output (`browser report {…}`).
/// One lab serves every case (two cameras, a browser started per case).
@Suite(.serialized, .timeLimit(.minutes(6)), .enabled(if: labBrowserSkipReason == nil, Comment(rawValue: labBrowserSkipReason ?? "")))
struct LabBrowserTests {

    /// A camera and a browser on one port-restricted LAN (two hosts); another port-restricted site; two symmetric
    /// sites; a site that lets only TCP to port 443 out.
    static let sites: [LabSite] = [
        LabSite("lan", .portRestrictedCone, hosts: 2), LabSite("prc", .portRestrictedCone),
        LabSite("syma", .symmetric), LabSite("symb", .symmetric), LabSite("t443", .tcp443Only),
    ]
    /// The only port a `tcp443-only` network lets out: the page's and the relay's TLS.
    static let httpsPort = 443
    /// Frames the page decodes before it reports.
    static let framesWanted = 30
    /// How long one browser may take from its start to its report.
    static let reportTimeout: Duration = .seconds(60)

    /// One browser visit: the camera's host, the browser's, and what the page must report.
    struct Case: CustomStringConvertible {
        var name: String
        var camera: String
        var browser: String
        /// `direct` or `relay`.
        var path: String
        /// The selected pair's candidate types, browser's end first (nil: not checked).
        var candidates: String? = nil
        /// How the browser reaches the relay when `path` is `relay` (nil: not checked).
        var relayProtocol: String? = nil
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(name: "one LAN", camera: "lan-h1", browser: "lan-h2", path: "direct", candidates: "host→host"),
        // Only the camera's server-reflexive candidate lets the browser's checks through the camera's NAT.
        Case(name: "port-restricted × port-restricted", camera: "lan-h1", browser: "prc-h1", path: "direct", candidates: "srflx→srflx"),
        // The camera's symmetric NAT maps its checks to the relay anew: the browser learns that address from them.
        Case(name: "symmetric × symmetric", camera: "syma-h1", browser: "symb-h1", path: "relay", candidates: "relay→prflx"),
        // The relay lets the camera's checks in because the browser permitted the camera's srflx address.
        Case(name: "port-restricted camera × tcp443-only browser", camera: "lan-h1", browser: "t443-h1", path: "relay",
             candidates: "relay→srflx", relayProtocol: "tls"),
    ]

    @Test func chromiumWatchesCamerasThroughTheNATGrid() async throws {
        // One port for everything: signalling, TURN over TLS (the browser's offers no ALPN: its first bytes tell) and the page
        // (ALPN http/1.1), on 443 of the cloud's first address.
        try await TravLab.with(sites: Self.sites, signallingPort: UInt16(Self.httpsPort)) { run in
            let addresses = run.lab.cloudAddresses
            let cloud = try run.startCloud(["--web-port", "\(Self.httpsPort)"])
            var cameras: [String: (uid: String, process: LabProcess)] = [:]
            for host in Set(Self.cases.map(\.camera)).sorted() {
                cameras[host] = try await run.startCameraProcess(on: host, extra: ["--video", "default"])
            }
            try await run.lab.waitForListener(host: "cloud", port: Self.httpsPort, udp: false, timeout: .seconds(20))
            for c in Self.cases {
                let camera = try #require(cameras[c.camera])
                let url = "https://\(addresses[0]):\(Self.httpsPort)/#uid=\(camera.uid)&password=\(run.password)&report=\(Self.framesWanted)"
                let (report, log) = try await Self.visit(run, cloud: cloud, browser: c.browser, url: url)
                let context = "\(c): \(report.map { "\($0)" } ?? "no report") — chromium: \(log.suffix(400)) — camera: \(camera.process.output.stdout.suffix(600)) — cloud: \(cloud.output.stderr.suffix(3000))"
                guard let report else {
                    Issue.record("the page reports: \(context)")
                    continue
                }
                #expect(report.error == nil, "\(context)")
                #expect((report.decoded ?? 0) >= Self.framesWanted, "frames decoded: \(context)")
                // The test pattern's bars and gradient: a blank or one-colour canvas fails.
                #expect((report.colours ?? 0) >= 8, "colours on the canvas: \(context)")
                try await TestPattern.expectShown(in: report, context)
                #expect(report.path == c.path, "path: \(context)")
                if let expected = c.candidates { #expect(report.candidates == expected, "candidate types: \(context)") }
                if let expected = c.relayProtocol { #expect(report.relayProtocol == expected, "relay protocol: \(context)") }
                #expect(report.uid == camera.uid)
                // The page located the camera as it loaded and its proof went with its watch: no challenge round trip.
                #expect(report.deposited == true && report.phases?.challenge == nil, "the deposit path: \(context)")
            }

            // Several viewers of one camera at once: two browsers (one on its LAN, one behind another NAT) and a
            // native `trav connect` watching the video, all joining while the others watch.
            let camera = try #require(cameras["lan-h1"])
            let url = "https://\(addresses[0]):\(Self.httpsPort)/#uid=\(camera.uid)&password=\(run.password)&report=\(Self.framesWanted)"
            let native = try run.startConnect(from: "prc-h1", to: camera.uid, timeout: 15, paired: true,
                                              extra: ["--stats", "--seconds", "12"])
            defer { native.stop() }
            let (together, logs) = try await Self.visitTogether(run, cloud: cloud, browsers: ["lan-h2", "prc-h1"], url: url)
            let context = "\(together) — chromium: \(logs.map { $0.suffix(300) }) — camera: \(camera.process.output.stdout.suffix(600))"
            #expect(together.count == 2, "both pages report: \(context)")
            for report in together {
                #expect(report.error == nil && (report.decoded ?? 0) >= Self.framesWanted, "\(context)")
                #expect(report.deposited == true, "each page took a deposit of its own: \(context)")
                try await TestPattern.expectShown(in: report, context)
            }
            let watched = try await run.finishedConnect(native, timeout: .seconds(60))
            let video = try #require(watched.video, "the native viewer watched: \(watched)")
            // Twelve seconds at 25 frames/s, less the wait for a keyframe: the browsers joining took nothing from it.
            #expect(video.frames >= 200 && video.brokenFrames == 0, "the native viewer's video while the browsers joined: \(video)")
        }
    }

    /// Opens `url` in Chromium on each of `browsers` at once and returns the page reports the cloud printed after (as
    /// many as browsers, or fewer after ``reportTimeout``), with each Chromium's log; every browser is stopped either way.
    static func visitTogether(_ run: TravLab, cloud: LabProcess, browsers hosts: [String], url: String) async throws
        -> ([BrowserReport], [String]) {
        let before = reports(cloud).count
        var browsers: [LabBrowser] = []
        defer { for b in browsers { b.stop() } }
        for host in hosts { browsers.append(try LabBrowser.start(in: run.lab, host: host, url: url)) }
        let deadline = ContinuousClock.now + reportTimeout
        while ContinuousClock.now < deadline, reports(cloud).count < before + hosts.count {
            try await Task.sleep(for: .milliseconds(100))
        }
        return (Array(reports(cloud).dropFirst(before)), browsers.map(\.process.output.stderr))
    }

    /// Opens `url` in Chromium on `browser` and returns the first page report the cloud printed after, or nil after
    /// ``reportTimeout``, with the end of Chromium's log; the browser is stopped (its profile removed) either way.
    static func visit(_ run: TravLab, cloud: LabProcess, browser host: String, url: String) async throws -> (BrowserReport?, String) {
        let before = reports(cloud).count
        let browser = try LabBrowser.start(in: run.lab, host: host, url: url)
        defer { browser.stop() }
        let deadline = ContinuousClock.now + reportTimeout
        while ContinuousClock.now < deadline {
            let all = reports(cloud)
            if all.count > before { return (all[before], browser.process.output.stderr) }
            guard browser.process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        return (nil, browser.process.output.stderr)
    }

    /// The page reports the cloud printed so far, in order.
    static func reports(_ cloud: LabProcess) -> [BrowserReport] {
        let prefix = "browser report "
        return cloud.output.stdout.split(separator: "\n").compactMap { line in
            guard line.hasPrefix(prefix) else { return nil }
            return try? JSONDecoder().decode(BrowserReport.self, from: Data(line.dropFirst(prefix.count).utf8))
        }
    }
}
