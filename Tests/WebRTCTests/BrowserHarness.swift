import Foundation
import NATLab
import NIOCore
import NIOPosix
import Testing
import Traversal
import WebRTC

/// Headless Chromium on a page served from loopback: `GET /` the page, `GET /viewer.js` the
/// ``BrowserViewerScript``, `GET /test.js` the test's glue, `POST /offer` the camera's answer, `POST /result`
/// the page's report (the first one is returned). Everything it starts is stopped, and its files removed, on return.
enum BrowserHarness {
    /// The Chromium binary, if installed.
    static let chromium = LabBrowser.chromium

    /// The page: a canvas, the viewer script and the glue, no inline script.
    static let page = #"""
        <!doctype html><meta charset="utf-8"><title>trav</title><canvas width="16" height="16"></canvas>
        <script src="/viewer.js"></script><script src="/test.js"></script>
        """#

    /// Opens the page at `/?<query>` and returns the page's first report, or nil after `timeout`.
    static func run(glue: String, query: String, timeout: Duration = .seconds(45),
                    answer: @escaping @Sendable (String) async throws -> String) async throws -> (report: String?, chromiumLog: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("trav-browser-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let (results, resultSink) = AsyncStream.makeStream(of: String.self)
        let http = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        let port = try #require(http.channel.localAddress?.port)
        let httpChannel = http.channel
        let server = Task {
            try await http.executeThenClose { connections in
                for try await connection in connections {
                    Task { try? await serve(connection, glue: glue, answer: answer, results: resultSink) }
                }
            }
        }
        // Chromium's own temporary files (its singleton socket directory) go in the profile, removed with it.
        let browser = try ChildProcess(["/usr/bin/env", "TMPDIR=\(dir.path)", chromium!, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                        "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
                                        "--user-data-dir=\(dir.path)", "http://127.0.0.1:\(port)/?\(query)"])
        defer {
            browser.kill()
            browser.removeFiles()
            server.cancel()
            httpChannel.close(promise: nil)
        }
        let report = try? await withDeadline(timeout) { () -> String? in
            for await r in results { return r }
            return nil
        }
        return (report, String(browser.output().stderr.suffix(600)))
    }

    /// One HTTP/1.1 exchange.
    private static func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, glue: String,
                              answer: @Sendable (String) async throws -> String, results: AsyncStream<String>.Continuation) async throws {
        try await connection.executeThenClose { inbound, outbound in
            var request: [UInt8] = []
            for try await chunk in inbound {
                request += chunk.readableBytesView
                guard request.count < 256 * 1024 else { return }
                guard let end = request.firstRange(of: Array("\r\n\r\n".utf8)) else { continue }
                let head = String(decoding: request[..<end.lowerBound], as: UTF8.self)
                let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                guard request.count >= end.upperBound + length else { continue }
                let body = String(decoding: request[end.upperBound..<(end.upperBound + length)], as: UTF8.self)
                let (status, type, reply): (String, String, String)
                if head.hasPrefix("GET / ") || head.hasPrefix("GET /?") {
                    (status, type, reply) = ("200 OK", "text/html", page)
                } else if head.hasPrefix("GET /viewer.js ") {
                    (status, type, reply) = ("200 OK", "text/javascript", BrowserViewerScript.source)
                } else if head.hasPrefix("GET /test.js ") {
                    (status, type, reply) = ("200 OK", "text/javascript", glue)
                } else if head.hasPrefix("POST /offer ") {
                    do {
                        (status, type, reply) = ("200 OK", "application/sdp", try await answer(body))
                    } catch {
                        (status, type, reply) = ("400 Bad Request", "text/plain", "\(error)")
                        results.yield("our side refused the offer: \(error)\n\(body)")
                    }
                } else if head.hasPrefix("POST /result ") {
                    results.yield(body)
                    (status, type, reply) = ("204 No Content", "text/plain", "")
                } else {
                    (status, type, reply) = ("404 Not Found", "text/plain", "")
                }
                let bytes = Array(reply.utf8)
                try await outbound.write(ByteBuffer(string: "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(bytes.count)\r\nConnection: close\r\n\r\n"))
                try await outbound.write(ByteBuffer(bytes: bytes))
                return
            }
        }
    }
}
