import Foundation
import Testing

/// Every libFuzzer target (README "Fuzzing") builds and runs 10 s on its committed corpus without a
/// crash, hang, leak or out-of-memory: `Scripts/fuzz.sh 10`, whose output is printed.
///
/// Opt-in with `TRAV_FUZZ_RUN=1`: the AddressSanitizer build of the targets and everything under them
/// (two BoringSSL copies, SwiftNIO) is a second full build, about 9 CPU-minutes, far over the suite's
/// budget for fuzzing. The suite always runs ``FuzzCorpusTests`` instead (corpus replay and mutations),
/// and `Scripts/test.sh` ends with the bounded run without AddressSanitizer, `Scripts/fuzz.sh --quick 5`.
@Suite(.serialized, .timeLimit(.minutes(40)))
struct FuzzRunTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Why the fuzzers do not run here, or nil: opted in, and the toolchain ships libFuzzer's runtime.
    static let skipReason: String? = {
        guard ProcessInfo.processInfo.environment["TRAV_FUZZ_RUN"] == "1" else {
            return "libFuzzer run skipped: set TRAV_FUZZ_RUN=1 (its ASan build costs ~9 CPU-minutes) or run Scripts/fuzz.sh"
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        guard let swift = path.split(separator: ":").map({ "\($0)/swift" }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return "libFuzzer run skipped: no swift on PATH"
        }
        let resolved = URL(fileURLWithPath: swift).resolvingSymlinksInPath()
        let runtime = resolved.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("lib/swift/clang/lib/linux/libclang_rt.fuzzer-x86_64.a").path
        return FileManager.default.fileExists(atPath: runtime) ? nil : "libFuzzer run skipped: the toolchain has no \(runtime)"
    }()

    @Test(.enabled(if: skipReason == nil, Comment(rawValue: skipReason ?? "")))
    func everyFuzzTargetRunsTenSecondsWithoutFindings() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [Self.root.appendingPathComponent("Scripts/fuzz.sh").path, "10"]
        process.currentDirectoryURL = Self.root
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "Scripts/fuzz.sh 10 failed; its output above names the target and the input")
    }
}
