import Foundation
import Media
import PeerTestSupport
import Testing
import Traversal
import WebRTC

/// The camera's `MediaSender` feeds a browser's `BrowserViewerSession` as it feeds native viewers, both at once:
/// the committed test clip's H.264 frames on `trav.media`, decoded by WebCodecs in headless Chromium into a canvas
/// (`BrowserViewerScript.travWatch`), and a native viewer's `MediaReceiver` on the same sender. The page reports
/// frames decoded and how many colours the canvas shows.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct BrowserVideoTests {
    /// Frames the page must decode before it reports.
    static let framesWanted = 30

    /// A page's glue: watch the camera, then `body` (with `report`, `params`, `wanted` (the `frames` parameter),
    /// `canvas` and `stats` in scope); an exception is reported as `{error}`.
    static func page(_ body: String) -> String {
        #"""
        (async () => {
          const report = text => fetch('/result', {method: 'POST', body: text});
          const params = new URLSearchParams(location.search), wanted = Number(params.get('frames'));
          const canvas = document.querySelector('canvas');
          try {
            const stats = await travWatch({
              uid: params.get('uid'), canvas,
              signal: async offer => (await fetch('/offer', {method: 'POST', body: offer})).text(),
            });
        """# + "\n" + body + "\n" + #"""
          } catch (e) { report(JSON.stringify({error: e.message})); }
        })();
        """#
    }

    /// The glue: watch, wait for frames (bounded), report the statistics and the canvas's colours.
    static let glue = page(#"""
            for (let i = 0; i < 300 && stats.decoded < wanted; i++) await new Promise(r => setTimeout(r, 100));
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            const colours = new Set();
            for (let i = 0; i < pixels.length; i += 4 * 61) colours.add(pixels[i] << 16 | pixels[i + 1] << 8 | pixels[i + 2]);
            report(JSON.stringify({decoded: stats.decoded, received: stats.received, colours: colours.size,
                                   width: canvas.width, height: canvas.height, path: stats.path, firstFrameMs: stats.firstFrameMs}));
        """#)

    /// What a page reports.
    struct Report: Decodable {
        var decoded: Int?
        var received: Int?
        var colours: Int?
        var width: Int?
        var height: Int?
        var path: String?
        var firstFrameMs: Int?
        /// ``movingGlue``: frames decoded when the canvas took the main stream's size.
        var decodedBefore: Int?
        /// ``movingGlue``: keyframes the page asked for (one per decoder error).
        var keyframeRequests: Int?
        var error: String?
    }

    /// The clip `trav camera --video default` plays (Sources/trav/Resources/testsrc.h264), or with `name` another
    /// bundled one (`testsrc-low`: `--video default-low`).
    static func clip(_ name: String = "testsrc") throws -> [AnnexB.AccessUnit] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/trav/Resources/\(name).h264")
        return AnnexB.accessUnits([UInt8](try Data(contentsOf: url)))
    }

    /// The glue for a move between renditions: watch until the canvas is `width` wide (the main stream's picture),
    /// then until `frames` more are decoded (bounded), and report.
    static let movingGlue = page(#"""
            const wide = Number(params.get('width'));
            for (let i = 0; i < 300 && canvas.width < wide; i++) await new Promise(r => setTimeout(r, 100));
            const before = stats.decoded;
            for (let i = 0; i < 300 && stats.decoded < before + wanted; i++) await new Promise(r => setTimeout(r, 100));
            report(JSON.stringify({decodedBefore: before, decoded: stats.decoded, width: canvas.width, height: canvas.height,
                                   keyframeRequests: stats.keyframeRequests}));
        """#)

    /// Runs Chromium on `glue` with `query`, answering its offer with a session of the camera `identity` that
    /// `sender` feeds; closes the sessions and returns the page's report, Chromium's log and what the camera noted.
    static func watch(glue: String, query: String, identity: DeviceIdentity, sender: MediaSender) async throws
        -> (text: String?, chromiumLog: String, notes: [String]) {
        let certificate = try DTLSCertificate.generate()
        let sessions = SessionList()
        let (text, chromiumLog) = try await BrowserHarness.run(glue: glue, query: query) { offer in
            let session = try await BrowserViewerSession.start(offer: try SessionDescription(parsing: offer), identity: identity,
                                                               certificate: certificate, hosts: ["127.0.0.1"])
            await sessions.append(session)
            Task {
                do {
                    _ = try await sender.add(session)
                    await sessions.note("feeding")
                } catch {
                    await sessions.note("not fed: \(error)")
                }
            }
            return session.answer.text
        }
        let notes = await sessions.notes
        await sessions.closeAll()
        return (text, chromiumLog, notes)
    }

    @Test(.enabled(if: BrowserHarness.chromium != nil, "chromium is not installed"))
    func chromiumFollowsAMoveToAnotherRendition() async throws {
        let (main, low) = (try Self.clip(), try Self.clip("testsrc-low"))
        let identity = DeviceIdentity.generate()
        var configuration = MediaSender.Configuration()
        configuration.renditions = [Rendition(name: "main", bitsPerSecond: AnnexB.bitsPerSecond(of: main, fps: 25)),
                                    Rendition(name: "sub", bitsPerSecond: AnnexB.bitsPerSecond(of: low, fps: 25))]
        // The browser starts on the sub stream (160x120) and, its loopback path clean, moves up to the main stream
        // (320x240) after a one-second hold, at a main stream keyframe.
        configuration.renditionPolicy.start = .rendition(1)
        configuration.renditionPolicy.upHold = .seconds(1)
        let sender = MediaSender(configuration: configuration)
        let player = Task { await sender.play(renditions: [main, low], fps: 25) }
        defer {
            player.cancel()
            sender.stop()
        }
        let (text, chromiumLog, notes) = try await Self.watch(
            glue: Self.movingGlue, query: "uid=\(identity.deviceID.description)&frames=\(Self.framesWanted)&width=320",
            identity: identity, sender: sender)
        let report = try #require(text.flatMap { try? JSONDecoder().decode(Report.self, from: Data($0.utf8)) },
                                  "the page: \(String(describing: text)); chromium: \(chromiumLog)")
        #expect(report.error == nil, "camera: \(notes)")
        // It decoded the sub stream first, then the main stream's picture took the canvas and frames kept decoding.
        #expect((report.decodedBefore ?? 0) > 0, "\(String(describing: text))")
        #expect(report.width == 320 && report.height == 240, "\(String(describing: text))")
        #expect((report.decoded ?? 0) >= (report.decodedBefore ?? 0) + Self.framesWanted, "\(String(describing: text))")
        // No decoder error on the way (each asks the camera for a keyframe).
        #expect(report.keyframeRequests == 0, "\(String(describing: text))")
    }

    @Test(.enabled(if: BrowserHarness.chromium != nil, "chromium is not installed"))
    func chromiumDecodesTheCamerasFramesWhileANativeViewerWatches() async throws {
        let clip = try Self.clip()
        #expect(clip.contains { $0.isKeyframe }, "the clip has a keyframe")
        let identity = DeviceIdentity.generate()
        let sender = MediaSender()
        // A native viewer on the same sender, over an in-memory link: it keeps getting frames while the browser joins.
        let (viewer, camera, _) = connectedPair()
        async let receiving = MediaReceiver(connection: viewer)
        try await sender.add(camera)
        let receiver = try await receiving
        let nativeFrames = Task { () -> Int in
            var n = 0
            do { for try await _ in receiver.frames { n += 1 } } catch {}
            return n
        }
        let player = Task { await sender.play(clip, fps: 25) }
        defer {
            player.cancel()
            sender.stop()
            receiver.stop()
            nativeFrames.cancel()
        }
        let (text, chromiumLog, notes) = try await Self.watch(
            // The UID as a person might type it: lower case.
            glue: Self.glue, query: "uid=\(identity.deviceID.description.lowercased())&frames=\(Self.framesWanted)",
            identity: identity, sender: sender)
        receiver.stop()
        let native = await nativeFrames.value
        #expect(native >= Self.framesWanted, "the native viewer's frames while the browser watched: \(native)")
        let report = try #require(text.flatMap { try? JSONDecoder().decode(Report.self, from: Data($0.utf8)) },
                                  "the page: \(String(describing: text)); chromium: \(chromiumLog)")
        #expect(report.error == nil)
        #expect((report.decoded ?? 0) >= Self.framesWanted, "frames decoded: \(String(describing: text)); camera: \(notes)")
        #expect((report.width ?? 0) > 16 && (report.height ?? 0) > 16, "the canvas took the video's size")
        // The test pattern has colour bars and a moving gradient: a blank or single-colour canvas fails.
        #expect((report.colours ?? 0) >= 8, "distinct colours on the canvas: \(String(describing: text))")
        #expect(report.path == "direct", "loopback: a direct pair, no relay")
        #expect(report.firstFrameMs != nil, "the page timed its first frame")
    }
}

/// The sessions a test opened, closed at its end.
actor SessionList {
    private var sessions: [BrowserViewerSession] = []
    /// What the test noted about them.
    private(set) var notes: [String] = []

    func note(_ text: String) { notes.append(text) }

    func append(_ session: BrowserViewerSession) { sessions.append(session) }

    func closeAll() async {
        for session in sessions { await session.close() }
        sessions = []
    }
}
