import Foundation
import NATLab
import Testing

/// Where the C examples' pieces are, and building them.
enum CExample {
    static let root = TravLab.repoRoot
    static let libraryDirectory = root.appendingPathComponent(".build/debug").path
    static let header = root.appendingPathComponent("Sources/CTrav/include").path
    static let compiler = ["/usr/bin/cc", "/usr/bin/gcc"].first { FileManager.default.isExecutableFile(atPath: $0) }
    /// The Swift runtime libTravC links (the toolchain's).
    static let swiftRuntime = ["/opt/swift/usr/lib/swift/linux", "/usr/lib/swift/linux"]
        .first { FileManager.default.fileExists(atPath: "\($0)/libswiftCore.so") }

    /// Why the test cannot run here, or nil.
    static var skipReason: String? {
        if !FileManager.default.isExecutableFile(atPath: TravLab.debugTrav) { return "trav is not built (swift build --product trav)" }
        if !FileManager.default.fileExists(atPath: "\(libraryDirectory)/libTravC.so") { return "libTravC is not built (swift build --product TravC)" }
        if compiler == nil { return "no C compiler (cc)" }
        if swiftRuntime == nil { return "the Swift runtime libraries are not found" }
        return nil
    }

    /// Builds `Examples/c/NAME.c` into `dir` with warnings as errors.
    static func build(_ name: String, into dir: String) async throws -> String {
        let output = "\(dir)/\(name)"
        let built = try await ChildProcess.run([
            compiler!, "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror", "-o", output,
            root.appendingPathComponent("Examples/c/\(name).c").path, "-I", header, "-L", libraryDirectory, "-lTravC",
            "-Wl,-rpath,\(libraryDirectory)", "-Wl,-rpath,\(swiftRuntime!)",
        ], timeout: .seconds(60))
        try #require(built.succeeded, "cc \(name).c: \(built)")
        return output
    }

    /// A fresh directory, removed after `body` whatever happens.
    static func withDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
        let dir = NSTemporaryDirectory() + "trav-c-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        return try await body(dir)
    }

    /// The child's standard output once `ready` holds for it (polled, at most `timeout`).
    static func output(of child: ChildProcess, within timeout: Duration, until ready: (String) -> Bool) async -> String {
        let deadline = ContinuousClock.now + timeout
        var text = child.output().stdout
        while !ready(text), ContinuousClock.now < deadline, child.isRunning {
            try? await Task.sleep(for: .milliseconds(50))
            text = child.output().stdout
        }
        return text
    }

}

/// The C examples (Examples/c), built with `cc` against trav.h and libTravC, run against `trav cloud` on loopback:
/// the C camera registers, the C viewer connects by UID and receives intact frames.
@Suite(.serialized, .enabled(if: CExample.skipReason == nil, "needs trav and libTravC built (swift build --product trav, --product TravC) and cc"))
struct CExampleTests {
    /// Frames the viewer must receive, intact (two seconds of the camera's 25 per second).
    static let frames = 50

    @Test func cCameraStreamsFramesToACViewerThroughALocalCloud() async throws {
        try await CExample.withDirectory { dir in
            let cameraBinary = try await CExample.build("camera", into: dir)
            let viewerBinary = try await CExample.build("viewer", into: dir)
            let key = "\(dir)/camera.key"
            let identity = try await ChildProcess.run([TravLab.debugTrav, "identity", "new", "--out", key], timeout: .seconds(60))
            let uid = try #require(identity.stdout.split(whereSeparator: \.isWhitespace).first { $0.hasPrefix("TRAV-") }.map(String.init),
                                   "\(identity)")

            let cloud = try ChildProcess([TravLab.debugTrav, "cloud", "--listen", "127.0.0.1", "--data", dir,
                                          "--stun-port", "0", "--tls-port", "0", "--relay-port", "0"])
            defer { cloud.kill(); cloud.removeFiles() }
            let ready = await CExample.output(of: cloud, within: .seconds(30)) { $0.contains("signalling tls") && $0.contains("stun udp") }
            let lines = ready.split(separator: "\n")
            let stun = try #require(lines.first { $0.contains("stun udp") }?.split(separator: " ").first { $0.hasPrefix("127.0.0.1:") },
                                    "\(cloud.output())")
            let tls = try #require(lines.first { $0.contains("signalling tls") }?.split(separator: " ").last)
            let stunPort = String(try #require(stun.split(separator: ":").last))
            let tlsPort = String(try #require(tls.split(separator: ":").last))
            let ca = "\(dir)/ca.pem"

            let camera = try ChildProcess([cameraBinary, "127.0.0.1", tlsPort, stunPort, ca, key, "secret", "90"])
            defer { camera.kill(); camera.removeFiles() }
            let registered = await CExample.output(of: camera, within: .seconds(60)) { $0.contains("registered") }
            try #require(registered.contains("camera \(uid) registered"), "\(camera.output())")

            let viewer = try await ChildProcess.run([viewerBinary, "127.0.0.1", tlsPort, stunPort, ca, uid, "secret", "\(Self.frames)"],
                                                    timeout: .seconds(90))
            #expect(viewer.succeeded, "\(viewer)")
            #expect(viewer.stdout.contains("connected via "), "\(viewer)")
            #expect(viewer.stdout.contains("channel hello: hello from \(uid)"), "\(viewer)")
            #expect(viewer.stdout.contains("received \(Self.frames) frames"), "\(viewer)")
            #expect(viewer.stdout.contains(", 0 broken)"), "\(viewer)")
            // The camera saw the viewer come and go, then ended by itself (its viewers have left).
            let done = await CExample.output(of: camera, within: .seconds(30)) { $0.contains("camera sent") }
            #expect(done.contains("viewer 1 connected via "), "\(camera.output())")
            #expect(done.contains("viewer 1 left"), "\(camera.output())")
            #expect(await camera.wait(.seconds(20)) && camera.status == 0, "\(camera.output())")
        }
    }

    @Test func anUntrustworthyCloudIsReportedAsACodeWithAMessage() async throws {
        try await CExample.withDirectory { dir in
            let viewerBinary = try await CExample.build("viewer", into: dir)
            let pem = "\(dir)/not-a-ca.pem"
            try "not a certificate".write(toFile: pem, atomically: true, encoding: .utf8)
            let refused = try await ChildProcess.run([viewerBinary, "127.0.0.1", "1", "1", pem, "TRAV-AAAA-AAAA-AAAA-AAAA", "x", "1"],
                                                     timeout: .seconds(60))
            #expect(refused.status == 1, "\(refused)")
            #expect(refused.stderr.contains("connect: cloud: "), "\(refused)")
            #expect(refused.stderr.contains("holds no PEM certificate"), "\(refused)")
        }
    }
}
