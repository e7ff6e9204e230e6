import Foundation
import Logging
import NATLab
import NIOCore
import NIOPosix
import NIOSSL
import Rendezvous
import Testing
import TURNLite
import Traversal
import WebRTC

/// The whole browser path on loopback: the cloud (in process) serves the viewer page on its HTTPS port, `trav camera
/// --video default` (a child process) answers browsers, and headless Chromium opens the page with the UID and
/// password in the fragment, as a person would type them. The page reports to the cloud over its WebSocket.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct CloudBrowserTests {
    /// Frames the page must decode before it reports.
    static let framesWanted = 30
    static let password = "correct horse battery"

    /// A cloud with its viewer page and relay (in process), and what its pages reported so far; all stopped and removed after `body`.
    static func withCloud(_ body: (_ cloud: CloudService, _ web: BrowserViewerServer, _ reports: ReportBox, _ dir: String) async throws -> Void) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("trav-webcloud-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let logger = Logger(label: "test.cloud") { _ in SwiftLogNoOpLogHandler() }
        let cloud = try await CloudService.start(
            .init(listenIP: "127.0.0.1", dataDirectory: dir + "/cloud", stunPort: 0, tlsPort: 0,
                  relay: .init(listenIP: "127.0.0.1", port: 0, allowedPeers: [IPPrefix("127.0.0.0/8")!])),
            store: InMemoryDeviceStore(), logger: logger)
        let web: BrowserViewerServer
        do {
            web = try await cloud.startBrowserViewer(
                listenIP: "127.0.0.1", port: 0, assets: .init(page: BrowserViewerPage.html, script: BrowserViewerPage.script), logger: logger)
        } catch {
            await cloud.stop()
            throw error
        }
        let box = ReportBox()
        let collecting = Task { for await r in web.reports { await box.append(r) } }
        do {
            try await body(cloud, web, box, dir)
        } catch {
            await web.stop()
            await cloud.stop()
            collecting.cancel()
            throw error
        }
        await web.stop()
        await cloud.stop()
        collecting.cancel()
    }

    /// ``withCloud(_:)`` and a registered `trav camera --video default` (a child process, killed after `body`).
    static func withCloudAndCamera(_ body: (_ web: BrowserViewerServer, _ reports: ReportBox, _ uid: String, _ camera: ChildProcess) async throws -> Void) async throws {
        try await withCloud { cloud, web, reports, dir in
            let (identity, camera) = try await startCamera(cloud, dir: dir, name: "cam")
            defer {
                camera.kill()
                camera.removeFiles()
            }
            try await body(web, reports, identity.deviceID.description, camera)
        }
    }

    /// A new identity saved as `dir/name.key` and `trav camera --video default --password` ``password`` with it (a child
    /// process the caller kills), returned once the cloud counts one more registered camera (within 30 s).
    static func startCamera(_ cloud: CloudService, dir: String, name: String) async throws -> (DeviceIdentity, ChildProcess) {
        let identity = DeviceIdentity.generate()
        try identity.save(to: dir + "/\(name).key")
        let ca = try #require(cloud.caPath)
        let port = cloud.rendezvous.address.port
        let before = await cloud.rendezvous.registeredCameras.all
        let camera = try ChildProcess([TravLab.debugTrav, "camera", "--identity", dir + "/\(name).key", "--cloud", "127.0.0.1:\(port)",
                                       "--cloud-ca", ca, "--password", password, "--video", "default", "--browser-host", "127.0.0.1",
                                       "--no-presence", "--lan-port", "0"])
        // Registered within 30 s (bounded polling).
        var registered = false
        for _ in 0..<300 where !registered {
            registered = await cloud.rendezvous.registeredCameras.all > before
            if !registered { try? await Task.sleep(for: .milliseconds(100)) }
        }
        guard registered else {
            let output = camera.output()
            camera.kill()
            camera.removeFiles()
            throw NATLabError(.timedOut, "the camera did not register within 30 s: \(output.stdout.suffix(500)) \(output.stderr.suffix(500))")
        }
        return (identity, camera)
    }

    /// Opens `https://127.0.0.1:PORT/#fragment` in headless Chromium (the cloud's certificate accepted by flag) and
    /// returns the page's first report, or nil after `timeout`.
    static func visit(_ web: BrowserViewerServer, reports: ReportBox, fragment: String,
                      timeout: Duration = .seconds(60)) async throws -> (BrowserReport?, String) {
        let port = try #require(web.address.port)
        let before = await reports.count
        return try await visit(port: port, fragment: fragment, timeout: timeout) { await reports.report(after: before) }
    }

    /// Opens `https://127.0.0.1:port/#fragment` in headless Chromium (any certificate accepted by flag) until `report()`
    /// returns one (polled every 100 ms) or `timeout` passes; returns it, or nil, and the end of Chromium's log.
    static func visit(port: Int, fragment: String, timeout: Duration = .seconds(60),
                      report: () async -> BrowserReport?) async throws -> (BrowserReport?, String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("trav-chromium-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // Chromium's own temporary files (its singleton socket directory) go in the profile, removed with it.
        let browser = try ChildProcess(["/usr/bin/env", "TMPDIR=\(dir.path)", BrowserHarness.chromium!] + LabBrowser.flags
                                       + ["--allow-loopback-in-peer-connection", "--user-data-dir=\(dir.path)", "https://127.0.0.1:\(port)/#\(fragment)"])
        defer {
            browser.kill()
            browser.removeFiles()
        }
        var reported: BrowserReport?
        let deadline = ContinuousClock.now + timeout
        while reported == nil, ContinuousClock.now < deadline {
            reported = await report()
            if reported == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        return (reported, String(browser.output().stderr.suffix(600)))
    }

    @Test(.enabled(if: BrowserHarness.chromium != nil, "chromium is not installed"),
          .enabled(if: FileManager.default.isExecutableFile(atPath: TravLab.debugTrav), "needs `swift build` (.build/debug/trav)"))
    func chromiumWatchesTheCameraThroughTheCloudsPageAndAWrongPasswordIsRefused() async throws {
        try await Self.withCloudAndCamera { web, reports, uid, camera in
            // The UID as a person might type it: lower case.
            let (watched, log) = try await Self.visit(
                web, reports: reports, fragment: "uid=\(uid.lowercased())&password=\(Self.password.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)&report=\(Self.framesWanted)")
            let report = try #require(watched, "the page reports; chromium: \(log)")
            #expect(report.error == nil, "\(report)")
            #expect((report.decoded ?? 0) >= Self.framesWanted, "frames decoded: \(report)")
            // The test pattern has colour bars and a moving gradient: a blank or single-colour canvas fails.
            #expect((report.colours ?? 0) >= 8, "distinct colours on the canvas: \(report)")
            // What the canvas shows is the clip's test pattern, cell by cell.
            try await TestPattern.expectShown(in: report, "\(report)")
            #expect(report.path == "direct", "loopback: a direct pair, no relay: \(report)")
            #expect(report.firstFrameMs != nil)
            // Every step on the way was reached, in order, the last one the first decoded frame.
            let p = try #require(report.phases, "the page reports its steps: \(report)")
            // The page located the camera as it loaded, was handed a deposit, and its proof went with its watch: no challenge.
            #expect(report.deposited == true && p.challenge == nil, "the deposit path: \(report)")
            let steps = [p.signalling, p.servers, p.offer, p.proof, p.sealed, p.answer, p.checked, p.dtls, p.channel,
                         p.received, p.decoded]
            #expect(!steps.contains(nil) && p.ice != nil, "every step: \(p)")
            #expect(steps.compactMap { $0 } == steps.compactMap { $0 }.sorted(), "in order: \(p)")
            #expect(p.decoded == report.firstFrameMs)
            #expect(report.uid == uid, "the cloud names the UID the page watched")
            // The browser is gone (its process killed): the camera's session ends, at the latest when consent
            // expires (RFC 7675: 30 s), and releases its sockets with it.
            var ended = false
            for _ in 0..<450 where !ended {
                ended = camera.output().stdout.contains("browser \(report.requestID ?? "?") closed")
                if !ended { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(ended, "the camera ends the session of a browser that went away: \(camera.output().stdout.suffix(800))")

            let (refusedReport, refusedLog) = try await Self.visit(web, reports: reports, fragment: "uid=\(uid)&password=wrong")
            let refused = try #require(refusedReport, "the page reports the refusal; chromium: \(refusedLog)")
            #expect(refused.error == "refused: access-denied", "\(refused)")
            #expect(refused.shown == "refused: access-denied", "the page shows the refusal: \(refused)")
            #expect(refused.decoded == nil)
            #expect(refused.deposited == true, "the wrong password went with the watch, and was refused as a live proof is: \(refused)")
        }
    }

    /// Writes `request` over TLS to the page's port (the test cloud's certificate, not checked), then `more` once a
    /// response head came back, and returns every byte read until the server closed the connection (within 20 s).
    static func exchange(_ web: BrowserViewerServer, _ request: String, then more: [UInt8] = []) async throws -> [UInt8] {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        let context = try NIOSSLContext(configuration: tls)
        let port = try #require(web.address.port)
        let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
        return try await withDeadline(.seconds(20)) {
            try await client.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: request))
                var received: [UInt8] = []
                var sentMore = more.isEmpty
                do {
                    for try await chunk in inbound {
                        received += chunk.readableBytesView
                        if !sentMore, received.firstRange(of: Array("\r\n\r\n".utf8)) != nil {
                            sentMore = true
                            try await outbound.write(ByteBuffer(bytes: more))
                        }
                    }
                } catch {
                    // A close without close_notify ends the read as well.
                }
                return received
            }
        }
    }

    /// A WebSocket upgrade request for `/signal` from `origin`.
    static func upgrade(port: Int, origin: String) -> String {
        "GET /signal HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: \(origin)\r\n\r\n"
    }

    @Test func thePageIsServedUnderAStrictPolicyAndAnOversizedMessageClosesTheSocket() async throws {
        try await Self.withCloud { _, web, _, _ in
            let port = try #require(web.address.port)
            let page = String(decoding: try await Self.exchange(web, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), as: UTF8.self)
            #expect(page.hasPrefix("HTTP/1.1 200 OK"), "\(page.prefix(200))")
            #expect(page.contains("content-security-policy: default-src 'none'; script-src 'self'; connect-src 'self' wss://127.0.0.1:\(port)")
                    || page.contains("Content-Security-Policy: default-src 'none'; script-src 'self'; connect-src 'self' wss://127.0.0.1:\(port)"),
                    "\(page.prefix(600))")
            #expect(page.lowercased().contains("x-content-type-options: nosniff"))
            // One script, from the page's own origin; nothing inline.
            #expect(page.components(separatedBy: "<script").count == 2 && page.contains("<script src=\"/viewer.js\"></script>"))
            let script = String(decoding: try await Self.exchange(web, "GET /viewer.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), as: UTF8.self)
            #expect(script.hasPrefix("HTTP/1.1 200 OK") && script.contains("async function travCloudWatch"))
            let missing = String(decoding: try await Self.exchange(web, "GET /etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), as: UTF8.self)
            #expect(missing.hasPrefix("HTTP/1.1 404"))

            // Another site's page may not signal through the cloud.
            let foreign = String(decoding: try await Self.exchange(web, Self.upgrade(port: port, origin: "https://evil.example")), as: UTF8.self)
            #expect(!foreign.hasPrefix("HTTP/1.1 101"), "\(foreign.prefix(200))")

            // A text message one byte over the limit (masked, as a browser sends it): the server answers 1009 and closes.
            let size = BrowserViewerServer.Limits().maxMessageBytes + 1
            var frame: [UInt8] = [0x81, 0x80 | 127]
            frame += withUnsafeBytes(of: UInt64(size).bigEndian, Array.init)
            let mask: [UInt8] = [1, 2, 3, 4]
            frame += mask
            frame += (0..<size).map { UInt8(ascii: "a") ^ mask[$0 % 4] }
            let reply = try await Self.exchange(web, Self.upgrade(port: port, origin: "https://127.0.0.1:\(port)"), then: frame)
            let head = try #require(reply.firstRange(of: Array("\r\n\r\n".utf8)), "a response head")
            #expect(String(decoding: reply[..<head.lowerBound], as: UTF8.self).hasPrefix("HTTP/1.1 101"))
            let after = Array(reply[head.upperBound...])
            #expect(after.count >= 4 && after[0] == 0x88 && Int(after[2]) << 8 | Int(after[3]) == 1009,
                    "a close frame with 1009 (message too big): \(after.prefix(16))")
        }
    }
}

/// The reports the cloud's pages sent, in order.
actor ReportBox {
    private var reports: [BrowserReport] = []
    /// How many so far.
    var count: Int { reports.count }
    func append(_ report: BrowserReport) { reports.append(report) }
    /// The first report after the first `index`, if one came.
    func report(after index: Int) -> BrowserReport? { reports.count > index ? reports[index] : nil }
}
