import Foundation

/// Headless Chromium in a lab host, on a profile directory of its own that ``stop()`` removes with the process.
public struct LabBrowser: Sendable {
    /// The Chromium binary, if installed (Debian `chromium`).
    public static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// The flags every run gets: headless, no sandbox (the lab runs as root), no GPU, any certificate accepted (the
    /// lab cloud's own CA), and host candidates as IP addresses rather than mDNS names (nothing in a lab resolves them).
    public static let flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--ignore-certificate-errors",
                               "--disable-features=WebRtcHideLocalIpsWithMdns"]

    /// The browser's process.
    public let process: LabProcess
    /// Its profile directory (`--user-data-dir`).
    public let profile: String

    /// Starts Chromium in `host` on `url`.
    ///
    /// - Throws: ``NATLabError`` `.unavailable` without Chromium, `.launchFailed` when it cannot start.
    public static func start(in lab: Lab, host: String, url: String) throws -> LabBrowser {
        guard let chromium else { throw NATLabError(.unavailable, "chromium is not installed") }
        let profile = NSTemporaryDirectory() + "trav-lab-chromium-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: profile, withIntermediateDirectories: true)
        do {
            // Chromium's own temporary files (its singleton socket directory) go in the profile, removed with it.
            let process = try lab.spawn(host: host, ["/usr/bin/env", "TMPDIR=\(profile)", chromium] + flags + ["--user-data-dir=\(profile)", url])
            return LabBrowser(process: process, profile: profile)
        } catch {
            try? FileManager.default.removeItem(atPath: profile)
            throw error
        }
    }

    /// Stops the browser and removes its profile; idempotent.
    public func stop() {
        process.stop()
        try? FileManager.default.removeItem(atPath: profile)
    }
}
